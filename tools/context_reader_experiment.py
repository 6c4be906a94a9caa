"""The answer reader with medspacy's ConText doing the scoping, measured against evaluation/parser.py (issue 12).

Not used by the project: medspacy is not a dependency (FIELD-NOTES.md: it needs spacy 3.8 with --no-deps under
numpy 2.4). Same vocabulary (labels.py, mentions.py's lexicon) and same decision (parser._decide); only the
attachment of change terms and negations to findings is ConText's: each change term is a ConText modifier
(category = its class), each finding a target, plus ConText's 102 default rules (negation, uncertainty...).

    pip install --target /tmp/medspacy -c constraints "spacy>=3.8,<3.9" pysbd jsonschema loguru unidecode six
    pip install --target /tmp/medspacy --no-deps medspacy PyRuSH PyFastNER quicksectx pysimstring \\
        medspacy_unqlite medspacy_quickumls
    PYTHONPATH=/tmp/medspacy:. python tools/context_reader_experiment.py [--split dev] [--max-scope N]
"""
import argparse
import json
import re
import time
from collections import Counter
from pathlib import Path

import spacy
from medspacy.context import ConTextRule
from medspacy.target_matcher import TargetRule

from evaluation.labels import MS_CXR_T, TEMPORAL_CLASSES
from evaluation.mentions import Reading, Statement, lexicon
from clinical_text.scope import INDETERMINATE
from evaluation.parser import _MARKER, Parsed, _clean, _decide

SUITE = Path(__file__).resolve().parent.parent / 'tests' / 'data' / 'answer_suite.jsonl'
TERMINATORS = (',', ';', 'but', 'however', 'although', 'though', 'whereas', 'while', 'with', 'yet')
_CONTRAST = re.compile(r'\b(?:but|however|although|though|yet)\b')


def build(max_scope):
    lex = lexicon(MS_CXR_T, TEMPORAL_CLASSES)
    nlp = spacy.blank('en')
    nlp.add_pipe('sentencizer')
    targets = nlp.add_pipe('medspacy_target_matcher')
    context = nlp.add_pipe('medspacy_context', config={'rules': 'default'})
    labels = {}
    target_rules, modifier_rules = [], []
    for phrase, (kind, value, weak) in lex.entries.items():
        if kind == 'finding':
            label = 'F_' + '_'.join(sorted(o.replace(' ', '') for o in value)) if value else 'F_OTHER'
            labels[label] = value
            target_rules.append(TargetRule(phrase, label))
        elif kind == 'term':
            modifier_rules.append(ConTextRule(phrase, ('WEAK_' if weak else '') + value.upper(),
                                              direction='BIDIRECTIONAL', max_scope=max_scope))
    for image in ('film', 'image', 'radiograph', 'study', 'exam', 'x-ray'):
        modifier_rules.append(ConTextRule(f'new {image}', 'PSEUDO', direction='PSEUDO'))
    for word in TERMINATORS:
        modifier_rules.append(ConTextRule(word, 'TERMINATE', direction='TERMINATE'))
    targets.add(target_rules)
    context.add(modifier_rules)
    return nlp, labels


def reading(nlp, labels, text):
    doc = nlp(text)
    out = Reading()
    cues = [m.start() for m in INDETERMINATE.finditer(text)]
    out.indeterminate = cues
    attached = set()

    def dropped(modifier):    # after an indeterminate cue of its sentence, with no "but" between
        start = modifier.modifier_span[0]
        char = doc[start].idx
        sentence = doc[start].sent
        return any(sentence.start_char <= cue < char and not _CONTRAST.search(text[cue:char]) for cue in cues)

    for ent in doc.ents:
        ent_mods = ent._.modifiers
        negated = any(m.category == 'NEGATED_EXISTENCE' for m in ent_mods)
        for m in ent_mods:
            attached.add(id(m))
            category = m.category.replace('WEAK_', '')
            if category.lower() not in TEMPORAL_CLASSES or dropped(m):
                continue
            if negated and category != 'STABLE':       # "no new consolidation"
                continue
            out.statements.append(Statement(category.lower(), m.category.startswith('WEAK_'), labels[ent.label_],
                                            doc[m.modifier_span[0]].idx))
    for m in doc._.context_graph.modifiers:
        category = m.category.replace('WEAK_', '')
        if id(m) not in attached and not m._targets and category.lower() in TEMPORAL_CLASSES and not dropped(m):
            out.statements.append(Statement(category.lower(), m.category.startswith('WEAK_'), None,
                                            doc[m.modifier_span[0]].idx))
    return out


def parse(nlp, labels, answer, observation):
    text = _clean(answer)
    markers = list(_MARKER.finditer(text))
    if markers:
        parsed = _decide(reading(nlp, labels, text[markers[-1].end():]), observation, MS_CXR_T)
        if parsed.label:
            return Parsed(parsed.label, 'answer marker')
    return _decide(reading(nlp, labels, text), observation, MS_CXR_T)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--split', default='dev')
    ap.add_argument('--max-scope', type=int, default=None)
    ap.add_argument('-v', action='store_true')
    args = ap.parse_args()
    nlp, labels = build(args.max_scope)
    rows = [r for r in map(json.loads, SUITE.open()) if r['split'] == args.split]
    conf = Counter()
    start = time.perf_counter()
    for r in rows:
        p = parse(nlp, labels, r['answer'], r['observation'])
        conf[r['label'], p.label] += 1
        if args.v and p.label != r['label']:
            print('MISS', r['label'], p, r['observation'], r['answer'])
    seconds = time.perf_counter() - start
    clear = sum(v for (g, _), v in conf.items() if g)
    right = sum(conf[c, c] for c in TEMPORAL_CLASSES)
    wrong = sum(v for (g, p), v in conf.items() if g and p and g != p)
    guessed = sum(v for (g, p), v in conf.items() if g is None and p)
    print(f'{args.split}: right {right}/{clear} = {right / clear:.3f}, wrong {wrong}, null answers labelled {guessed}, '
          f'{len(rows) / seconds:.0f} answers/s')


if __name__ == '__main__':
    main()
