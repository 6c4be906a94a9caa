"""Finding mentions and the modifiers attached to them: the machinery of the answer reader (``parser.py``).

The words come from the clinical vocabulary (``clinical_text/vocabulary.yaml``; a label set's observations that
name a CheXpert observation take its mention and sign phrases). A text is cut into sentences (at ``. ; ! ?`` and
new lines) and each sentence into segments: at ``, ( )``, at the vocabulary's terminators ("but / however /
although / ...") and "with", and at "and / or" only when the words after it carry a change term of their own
("no effusion | and enlarging pneumothorax", but "decrease in congestion and edema" stays one). In a segment:

- A negation cue (the clinical vocabulary's ``pre_negation``: "no", "not", "without", "n't", "rather than"...)
  negates the change terms within its negation window (``negation_window`` words); a finding met first is what
  it negates ("no effusion"), and its scope ends there. A term followed by
  "is not seen / absent / ruled out" is negated; "cannot be excluded" is a hedge, not a negation. A negated
  "change / difference" means stable ("not significantly changed", "no appreciable difference").
- A change term attaches forward to the finding it precedes (at most seven words on, no verb between:
  "worsening of the consolidation", "stable cardiomegaly") and to the findings listed after that one; else
  backward to the nearest finding before it ("the effusion has increased") and the findings listed with it; in a
  segment without a finding, to the sentence's subject so far ("small effusions, not significantly changed");
  with none of these it is unattached (it answers the question as asked: "slightly worse").
- "more" and "less" are terms only before a finding ("less interstitial edema", not "more supine").
- "new" that names the image ("on the new film") is no term. A stable term followed by "to" and a direction
  gives way to it ("unchanged to slightly worse" is worsening).
- An indeterminate cue ("cannot determine", "unable to assess", "not certain") drops its segment's terms.

Grades: a sentence that gives the finding's grade before and now ("moderate effusion, previously small",
"previously subtle, now dense") adds a worsening or improving term on its first finding.
"""
import re
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, List, Optional, Tuple

from clinical_text.scope import (INDETERMINATE, VERBS, PhraseTable, alternation, listed, norm, post_negation,
                                 sentence_bounds, words)
from clinical_text.vocabulary import OBSERVATIONS, Vocabulary, default_vocabulary

from .labels import CHANGE_WORDS, OTHER_FINDINGS, SHARED_MENTIONS, WEAK_TERMS, LabelSet

ATTACH_WINDOW = 7
FORWARD_ONLY = ('more', 'less')     # terms only as a quantity of the finding after them ("less edema")
_COORDINATOR = re.compile(r'\b(?:and|or|as well as)\b')
_NEW_IMAGE = re.compile(r"\s+(?:[\w-]+\s+){0,2}?(?:film|films|image|images|radiograph|radiographs|study|exam|"
                        r"examination|x-ray|view|projection|one|chest radiograph|comparison)\b")
_RANGE = re.compile(r'^\s+to\s+(?:[\w-]+\s+){0,2}?$')
_GRADES = {'tiny': 1, 'trace': 1, 'minimal': 1, 'faint': 1, 'faintly': 1, 'subtle': 1, 'barely': 1, 'small': 2,
           'mild': 2, 'moderate': 3, 'large': 4, 'severe': 4, 'dense': 4, 'extensive': 4, 'massive': 5}
_GRADE = '(' + '|'.join(_GRADES) + r')\b'
_PREVIOUS_GRADE = re.compile(r'\b(?:previously|formerly|up from|down from|where previously there was|which was|'
                             r'that was)\s+(?:only\s+)?(?:a\s+)?' + _GRADE)
_PREVIOUS_ADJECTIVE = re.compile(r'\bthe previously\s+' + _GRADE)
_CURRENT_GRADE = re.compile(r'\b(?:now|become|has become)\s+(?:only\s+)?(?:a\s+)?(?:[\w-]+\s+)?' + _GRADE)
_ANY_GRADE = re.compile(r'\b' + _GRADE)


@dataclass
class Mention:
    start: int
    end: int
    kind: str                           # finding, term, change, cue, hedge, indeterminate
    value: object = None                # term: its class; finding: the observations it may name (empty: other)
    weak: bool = False
    negated: bool = False
    attached: Tuple['Mention', ...] = ()


@dataclass(frozen=True)
class Statement:
    """A change term as read: its class, whether it is weak, and what it is about (None: unattached)."""
    label: str
    weak: bool
    about: Optional[FrozenSet[str]]
    position: int


@dataclass
class Reading:
    statements: List[Statement] = field(default_factory=list)
    findings: List[Mention] = field(default_factory=list)       # every finding mention, with its negation
    indeterminate: List[int] = field(default_factory=list)      # positions of indeterminate cues


@dataclass(frozen=True)
class Lexicon:
    pattern: re.Pattern
    entries: PhraseTable                                # phrase -> (kind, value, weak)
    window: int                                         # the vocabulary's negation window
    post_negation: re.Pattern                           # "... is not seen" after a mention
    contrast: re.Pattern                                # a segment that starts with a terminator ("but")
    breaks: re.Pattern                                  # where segments end


_CACHE: Dict[Tuple, Tuple[LabelSet, Vocabulary, Lexicon]] = {}


def _vocabulary_terms(observation: str, vocabulary: Vocabulary) -> Tuple[str, ...]:
    """The vocabulary's mention and sign phrases of the CheXpert observation that ``observation`` names."""
    chexpert = next((o for o in OBSERVATIONS if norm(o) == norm(observation)), None)
    if chexpert is None:
        return ()
    return (*vocabulary.terms(chexpert), *vocabulary.terms(chexpert, 'uncertain'),
            *vocabulary.terms(chexpert, 'signs'))


def lexicon(label_set: LabelSet, classes: Tuple[str, ...], vocabulary: Optional[Vocabulary] = None) -> Lexicon:
    vocabulary = vocabulary or default_vocabulary()
    key = (id(label_set), classes, id(vocabulary))
    if key not in _CACHE:
        entries: Dict[str, Tuple[str, object, bool]] = {}
        for word in OTHER_FINDINGS:
            entries[norm(word)] = ('finding', frozenset(), False)
        for word, observations in SHARED_MENTIONS.items():
            entries[norm(word)] = ('finding', frozenset(o for o in observations if o in label_set.observations), False)
        for observation in label_set.observations:
            for word in (observation, *_vocabulary_terms(observation, vocabulary),
                         *label_set.observation_synonyms.get(observation, ())):
                entries[norm(word)] = ('finding', frozenset([observation]), False)
        for cue in vocabulary['pre_negation']:
            entries[cue] = ('cue', None, False)
        for hedge in vocabulary['post_uncertainty']:
            entries[hedge] = ('hedge', None, False)
        if {'improving', 'worsening'} <= set(classes):
            entries['more'], entries['less'] = ('term', 'worsening', False), ('term', 'improving', False)
        if 'stable' in classes:
            for word in CHANGE_WORDS:
                entries[word] = ('change', 'stable', False)
            for word in WEAK_TERMS:
                entries[norm(word)] = ('term', 'stable', True)
        synonyms = {norm(k): v for k, v in label_set.synonyms.items()}
        for cls in classes:
            for word in (cls, *synonyms.get(norm(cls), ())):
                entries[norm(word)] = ('term', cls, False)      # a class word wins over any other meaning
        ends = alternation(vocabulary['terminators'])
        _CACHE[key] = (label_set, vocabulary, Lexicon(
            re.compile(rf"(?<![\w-])(?:{alternation(entries)}|\w+n't)(?![\w-])"), PhraseTable(entries),
            vocabulary.negation_window, post_negation(vocabulary), re.compile(rf'\W*(?:{ends})(?![\w-])'),
            re.compile(rf'[,()]|(?<![\w-])(?:{ends}|with)(?![\w-])')))    # "with": "stable X with new Y"
    return _CACHE[key][2]


def _mentions(text: str, start: int, end: int, lex: Lexicon) -> List[Mention]:
    """The mentions of ``text[start:end]``, in order (the lexicon's alternation is longest phrase first)."""
    found = []
    for match in INDETERMINATE.finditer(text, start, end):
        found.append(Mention(match.start(), match.end(), 'indeterminate'))
    for match in lex.pattern.finditer(text, start, end):
        if any(m.start < match.end() and match.start() < m.end for m in found):
            continue
        phrase = norm(match.group(0))
        entry = lex.entries.lookup(phrase)
        if entry is None:           # a word ending in n't
            found.append(Mention(match.start(), match.end(), 'cue', "n't"))
            continue
        kind, value, weak = entry
        if phrase == 'new' and _NEW_IMAGE.match(text, match.end(), end):
            continue
        found.append(Mention(match.start(), match.end(), kind, phrase if kind == 'cue' else value, weak))
    return sorted(found, key=lambda m: m.start)


def _segments(text: str, start: int, end: int, mentions: List[Mention],
              lex: Lexicon) -> List[Tuple[int, int, List[Mention]]]:
    """(start, end, mentions) of each segment."""
    cuts = [m.start() for m in lex.breaks.finditer(text, start, end)]
    coordinators = [m.start() for m in _COORDINATOR.finditer(text, start, end)]
    for i, at in enumerate(coordinators):
        following = min([c for c in cuts + coordinators[i + 1:] if c > at] + [end])
        left = [m for m in mentions if m.end <= at]
        right = [m for m in mentions if at < m.start < following]
        if any(m.kind in ('term', 'cue') for m in right) and not (   # "no new or worsening": one scope
                left and left[-1].kind == 'term' and right[0].kind == 'term'
                and _COORDINATOR.fullmatch(text[left[-1].end:right[0].start].strip())):
            cuts.append(at)
    cuts = sorted(set(cuts))
    bounds = list(zip([start] + cuts, cuts + [end]))
    return [(lo, hi, [m for m in mentions if lo <= m.start < hi]) for lo, hi in bounds]


def _negate(text: str, segment: List[Mention], end: int, lex: Lexicon) -> None:
    for i, cue in enumerate(segment):
        if cue.kind != 'cue':
            continue
        for m in segment[i + 1:]:
            if len(words(text[cue.end:m.start])) >= lex.window or m.kind in ('cue', 'hedge', 'indeterminate'):
                break
            m.negated = True
            if m.kind == 'finding':
                break
    for i, m in enumerate(segment):
        if m.kind in ('term', 'finding', 'change') and lex.post_negation.match(text, m.end, end) \
                and not any(h.kind == 'hedge' for h in segment[i + 1:]):
            m.negated = True


def _neither_nor(segment: List[Mention]) -> None:
    """"neither better nor worse": two opposite directions both denied is stable."""
    cues = [i for i, m in enumerate(segment) if m.kind == 'cue' and m.value in ('neither', 'nor')]
    denied = [next((m for m in segment[i + 1:] if m.kind == 'term'), None) for i in cues]
    if len(cues) == 2 and all(m is not None and m.negated for m in denied) and denied[0].value != denied[1].value:
        denied[0].value, denied[0].negated = 'stable', False


def _attach(text: str, segment: List[Mention], subject: Optional[Mention]) -> None:
    findings = [m for m in segment if m.kind == 'finding']
    for m in segment:
        if m.kind != 'term':
            continue
        after = [i for i, f in enumerate(findings) if f.start >= m.end]
        if after:
            between = text[m.end:findings[after[0]].start]
            gap = words(between)
            no_term = not any(t.kind == 'term' and m.end <= t.start < findings[after[0]].start for t in segment)
            if len(gap) <= ATTACH_WINDOW and not set(gap) & VERBS and no_term:
                m.attached = tuple(listed(text, findings, after[0], 1))
                continue
        if norm(text[m.start:m.end]) in FORWARD_ONLY:     # "more supine", "less than": not about a finding
            m.negated = True
            continue
        before = [i for i, f in enumerate(findings) if f.end <= m.start]
        if before:
            m.attached = tuple(listed(text, findings, before[-1], -1))
        elif not findings and subject is not None:
            m.attached = (subject,)


def _drop_ranges(text: str, segment: List[Mention]) -> None:
    """"unchanged to slightly worse": the stable end of a graded range gives way to its direction."""
    terms = [m for m in segment if m.kind == 'term' and not m.negated]
    for a, b in zip(terms, terms[1:]):
        if a.value == 'stable' and b.value != 'stable' and _RANGE.match(text[a.end:b.start]):
            a.negated = True


def _grade_statement(text: str, start: int, end: int, findings: List[Mention]) -> Optional[Mention]:
    sentence = text[start:end]
    previous = _PREVIOUS_GRADE.search(sentence) or _PREVIOUS_ADJECTIVE.search(sentence)
    if not previous:
        return None
    current = _CURRENT_GRADE.search(sentence)
    if not current:
        current = next((g for g in _ANY_GRADE.finditer(sentence)
                        if g.start() < previous.start(1) or g.start() >= previous.end(1)), None)
    if not current or current.start(1) == previous.start(1):
        return None
    before, now = _GRADES[previous.group(1)], _GRADES[current.group(1)]
    if before == now:
        return None
    subject = next((f for f in findings if not f.negated), None)
    return Mention(start + current.start(1), start + current.end(1), 'term',
                   'worsening' if now > before else 'improving', attached=(subject,) if subject else ())


def read(text: str, label_set: LabelSet, classes: Tuple[str, ...],
         vocabulary: Optional[Vocabulary] = None) -> Reading:
    """Every change term of ``text`` (lower-cased), with what it is about."""
    lex = lexicon(label_set, classes, vocabulary)
    reading = Reading()
    bounds = sentence_bounds(text)
    temporal = {'improving', 'worsening', 'stable'} <= set(classes)
    for start, end in zip(bounds, bounds[1:]):
        mentions = _mentions(text, start, end, lex)
        if not mentions:
            continue
        subject = None
        sentence_findings = []
        undecided = False       # an indeterminate cue holds to the end of its sentence or to a "but"
        for seg_start, seg_end, segment in _segments(text, start, end, mentions, lex):
            undecided = undecided and not lex.contrast.match(text, seg_start)
            _negate(text, segment, seg_end, lex)
            _neither_nor(segment)
            for m in segment:
                if m.kind == 'change' and m.negated:      # "not significantly changed", "no difference"
                    m.kind, m.negated = 'term', False
            _drop_ranges(text, segment)
            if undecided or any(m.kind == 'indeterminate' for m in segment):
                undecided = True
                reading.indeterminate += [m.start for m in segment if m.kind == 'indeterminate']
                segment = [m for m in segment if m.kind == 'finding']
            _attach(text, segment, subject)
            findings = [m for m in segment if m.kind == 'finding']
            sentence_findings += findings
            if subject is None and findings:
                subject = findings[0]
            for m in segment:
                if m.kind == 'term' and not m.negated:
                    reading.statements += _statements(m)
        reading.findings += sentence_findings
        if temporal:
            grade = _grade_statement(text, start, end, sentence_findings)
            if grade:
                reading.statements += _statements(grade)
    return reading


def _statements(term: Mention) -> List[Statement]:
    if not term.attached:
        return [Statement(term.value, term.weak, None, term.start)]
    about = frozenset().union(*(f.value for f in term.attached))
    return [Statement(term.value, term.weak, about, term.start)]
