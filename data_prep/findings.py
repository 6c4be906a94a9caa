"""The findings reader: what a free-text teacher trace says about each of the 14 CheXpert observations.

For each observation: ``positive``, ``negative``, ``uncertain`` or None (not mentioned), after the CheXpert
labeler's rules (mention, then negation and uncertainty, then aggregation). The scope machinery is the answer
reader's (``evaluation/scope.py``). A text is cut into sentences and each sentence into clauses at "but /
however / although / though / whereas / while / yet / except". In a clause:

- Mentions: the observation's words ("effusion", "opacity", "ET tube", "sternotomy wires"...). A few are whole
  statements with their own polarity: "the heart is (not) enlarged", "heart size is normal", "the
  cardiomediastinal silhouette is within normal limits", "no acute cardiopulmonary process" (No Finding).
- Negation: a cue ("no", "without", "negative for", "n't"...) denies the first mention within six words after it
  and every mention listed with that one ("no effusion, pneumothorax or consolidation"). After a mention, "is not
  seen / no longer seen / absent / ruled out", "has resolved / cleared / been removed", "is gone" deny it and the
  mentions listed before it ("pneumonia, effusion and pneumothorax are absent"). "Resolution of", "removal of"
  and "resolved X" deny the mention after them; "nearly / partially resolved" and "resolving" deny nothing.
- Uncertainty: a cue before mentions ("possible", "likely", "may represent", "concerning for", "cannot
  exclude", "differential", "rule out", "borderline"...) makes every later mention of the clause uncertain; after
  a mention ("cannot be excluded", "is suspected", "is possible") it makes that mention and its list uncertain;
  "versus" makes the mentions on both sides uncertain; an indeterminate cue ("difficult to assess") makes the
  clause's mentions uncertain. An uncertainty cue inside a negation's window is denied with it ("no findings to
  suggest pneumonia", "does not appear to be an effusion").
- Aggregation over the text: positive beats uncertain beats negative. No Finding is positive when no other
  observation except Support Devices is positive or uncertain, else negative (the CheXpert rule).
"""
import re
from dataclasses import dataclass
from typing import Dict, List, Optional

from evaluation.scope import (HEDGES, INDETERMINATE, NEGATION_CUES, POST_NEGATION, listed, norm, sentence_bounds,
                              words)

from .text import OBSERVATIONS

POSITIVE, NEGATIVE, UNCERTAIN = 'positive', 'negative', 'uncertain'
CALLS = (POSITIVE, NEGATIVE, UNCERTAIN)
NO_FINDING = 'No Finding'
NEGATION_WINDOW = 6

MENTIONS: Dict[str, tuple] = {
    'Atelectasis': ('atelectasis', 'atelectatic', 'collapse', 'collapsed'),
    'Cardiomegaly': ('cardiomegaly', 'enlarged heart', 'enlarged cardiac silhouette', 'cardiac enlargement',
                     'enlargement of the cardiac silhouette', 'enlargement of the heart'),
    'Consolidation': ('consolidation', 'consolidations', 'consolidative opacity', 'consolidative opacities'),
    'Edema': ('edema', 'oedema', 'vascular congestion', 'pulmonary congestion', 'congestion', 'heart failure',
              'congestive heart failure', 'chf', 'fluid overload'),
    'Enlarged Cardiomediastinum': ('enlarged cardiomediastinum', 'widened mediastinum', 'mediastinal widening',
                                   'widening of the mediastinum'),
    'Fracture': ('fracture', 'fractures', 'fractured'),
    'Lung Lesion': ('nodule', 'nodules', 'mass', 'masses', 'lung lesion', 'lesion', 'lesions', 'tumor', 'tumour',
                    'neoplasm', 'metastasis', 'metastases', 'metastatic disease'),
    'Lung Opacity': ('opacity', 'opacities', 'opacification', 'infiltrate', 'infiltrates', 'infiltration',
                     'airspace disease', 'air space disease', 'density', 'densities', 'haziness'),
    'Pleural Effusion': ('pleural effusion', 'pleural effusions', 'effusion', 'effusions', 'pleural fluid',
                         'hydrothorax'),
    'Pleural Other': ('pleural thickening', 'pleural plaque', 'pleural plaques', 'pleural scarring', 'fibrothorax'),
    'Pneumonia': ('pneumonia', 'pneumonias', 'infection', 'infectious process', 'bronchopneumonia'),
    'Pneumothorax': ('pneumothorax', 'pneumothoraces', 'ptx'),
    'Support Devices': ('tube', 'tubes', 'catheter', 'catheters', 'picc', 'picc line', 'central line', 'central lines',
                        'lines or tubes', 'lines and tubes', 'pacemaker', 'pacer', 'defibrillator', 'icd', 'wires',
                        'sternotomy wires', 'clips', 'port', 'port-a-cath', 'stent', 'drain', 'support device',
                        'support devices', 'leads', 'valve replacement'),
}
SHARED = {'pleural abnormality': ('Pleural Effusion', 'Pleural Other'),
          'pleural abnormalities': ('Pleural Effusion', 'Pleural Other')}
# Whole statements: (pattern, observation, call). "not" inside a positive one denies it.
_HEART = r'(?:heart|heart size|cardiac silhouette|cardiac size)'
_MEDIASTINUM = r'(?:cardiomediastinal silhouette|cardiomediastinal contours?|mediastinal contours?|mediastinum)'
_NORMAL = r'(?:[\w-]+\s+){0,2}?(?:normal|within normal limits|unremarkable|upper limits of normal)'
STATEMENTS = [
    (rf'\b{_HEART}\W+(?:is\s+|are\s+|remains\s+|appears\s+)?(?:[\w-]+\s+){{0,2}}?(?:enlarged|enlargement)\b',
     'Cardiomegaly', POSITIVE),
    (rf'\b{_HEART}\s+(?:is|remains|appears)\s+{_NORMAL}|\bnormal(?:-sized)?\s+(?:heart|heart size|cardiac '
     rf'silhouette)\b', 'Cardiomegaly', NEGATIVE),
    (r'\bmediastinum\s+(?:is\s+|appears\s+)?(?:[\w-]+\s+){0,2}?widened\b', 'Enlarged Cardiomediastinum', POSITIVE),
    (rf'\b{_MEDIASTINUM}\s+(?:is|are|remains|appears|appear)\s+{_NORMAL}|\bnormal\s+{_MEDIASTINUM}',
     'Enlarged Cardiomediastinum', NEGATIVE),
    (r'\bno\s+acute\s+(?:cardiopulmonary\s+|intrathoracic\s+|cardiothoracic\s+)?(?:process|abnormality|'
     r'abnormalities|disease|findings?)\b|\bno\s+(?:radiographic\s+)?abnormalit(?:y|ies)\b|\bnormal chest\b|'
     r'\b(?:chest|study|radiograph|examination|exam)\s+is\s+(?:normal|unremarkable)\b|\bunremarkable\s+'
     r'(?:chest|study|radiograph|examination|exam)\b|\blungs\s+are\s+clear\b|\bclear lungs\b', NO_FINDING, POSITIVE),
]
_STATEMENTS = [(re.compile(p), o, c) for p, o, c in STATEMENTS]
_INNER_NOT = re.compile(r"\b(?:not|no)\b|n't\b")

# cue -> (kind, direction): direction pre (mentions after it), post (the mention before it), both (after it when
# a mention follows in the clause, else before it), around ("versus").
CUES: Dict[str, tuple] = {
    **{c: ('negation', 'pre') for c in NEGATION_CUES},
    **{c: ('uncertain', 'post') for c in HEDGES},
    **{c: ('uncertain', 'post') for c in (
        'cannot be entirely excluded', 'cannot be completely excluded', 'not entirely ruled out', 'is suspected',
        'are suspected', 'is questioned', 'is questionable', 'is possible', 'are possible', 'is not excluded')},
    **{c: ('uncertain', 'pre') for c in (
        'possibly', 'probable', 'probably', 'likely', 'may', 'might', 'could', 'could be', 'may be', 'may represent',
        'suggest', 'suggests', 'suggestive of', 'suggesting', 'concerning for', 'concern for', 'suspicious for',
        'worrisome for', 'questionable', 'question of', 'cannot exclude', 'can not exclude', 'cannot rule out',
        'can not rule out', "can't exclude", "can't rule out", 'differential', 'consider', 'considered',
        'rule out', 'r/o', 'evaluate for', 'borderline', 'appears to be', 'appear to be', 'presumed', 'equivocal',
        'may reflect', 'could reflect', 'could represent', 'might represent')},
    **{c: ('uncertain', 'both') for c in ('possible', 'suspected')},
    **{c: ('uncertain', 'around') for c in ('versus', 'vs', 'vs.')},
    **{c: ('negation', 'post') for c in (
        'has resolved', 'have resolved', 'has cleared', 'have cleared', 'cleared', 'is gone', 'are gone',
        'has been removed', 'have been removed', 'removed', 'removal', 'no longer seen', 'no longer visible',
        'no longer evident', 'no longer present', 'no longer identified')},
    **{c: ('negation', 'pre') for c in ('resolution of', 'removal of', 'interval removal of', 'no evidence of',
                                        'no longer')},
    **{c: ('negation', 'both') for c in ('resolved',)},
    **{c: ('none', 'pre') for c in ('nearly resolved', 'almost resolved', 'partially resolved', 'partly resolved',
                                    'largely resolved', 'mostly resolved', 'incompletely resolved', 'resolving',
                                    'no longer than', 'not only')},
}
_CLAUSE = re.compile(r'\b(?:but|however|although|though|whereas|while|yet|except)\b')


def _alternation(phrases) -> str:
    """One regex for all phrases, longest first, factored as a trie (the engine then tries a handful of branches
    at each word instead of every phrase)."""
    trie: Dict = {}
    for phrase in phrases:
        node = trie
        for char in phrase:
            node = node.setdefault(char, {})
        node[''] = {}

    def pattern(node: Dict) -> str:
        branches = [(r'\s+' if char == ' ' else re.escape(char)) + pattern(child)
                    for char, child in sorted(node.items(), reverse=True) if char]
        if not branches:
            return ''
        body = branches[0] if len(branches) == 1 else '(?:' + '|'.join(branches) + ')'
        return f'(?:{body})?' if '' in node else body
    return pattern(trie)


_ENTRIES: Dict[str, tuple] = {}
for _observation, _words in MENTIONS.items():
    for _w in _words:
        _ENTRIES[_w] = ('finding', (_observation,))
for _w, _observations in SHARED.items():
    _ENTRIES[_w] = ('finding', _observations)
for _w, _cue in CUES.items():
    _ENTRIES[_w] = ('cue', _cue)
_LEXICON = re.compile(rf"(?<![\w-])(?:{_alternation(_ENTRIES)}|\w+n't)(?![\w-])")


@dataclass
class _Mention:
    start: int
    end: int
    kind: str                   # finding, statement, cue
    value: tuple                # finding/statement: observations; cue: (kind, direction)
    call: Optional[str] = None  # finding: decided call; statement: its own


def _mentions(text: str, start: int, end: int) -> List[_Mention]:
    found = []
    for pattern, observation, call in _STATEMENTS:
        for m in pattern.finditer(text, start, end):
            denied = call == POSITIVE and observation != NO_FINDING and _INNER_NOT.search(m.group(0))
            found.append(_Mention(m.start(), m.end(), 'statement', (observation,), NEGATIVE if denied else call))
    for m in INDETERMINATE.finditer(text, start, end):
        found.append(_Mention(m.start(), m.end(), 'cue', ('uncertain', 'clause')))
    claimed = list(found)       # statements and indeterminate cues win over the words inside them
    for m in _LEXICON.finditer(text, start, end):
        if claimed and any(f.start < m.end() and m.start() < f.end for f in claimed):
            continue
        phrase = norm(m.group(0))
        kind, value = _ENTRIES.get(phrase, ('cue', ('negation', 'pre')))      # else: a word ending in n't
        found.append(_Mention(m.start(), m.end(), kind, value))
    return sorted(found, key=lambda m: m.start)


def _clause(text: str, mentions: List[_Mention], end: int) -> None:
    """Decide the call of each finding mention of one clause."""
    findings = [m for m in mentions if m.kind == 'finding']
    negated, uncertain = set(), set()
    cues = [m for m in mentions if m.kind == 'cue']
    denied_cues = set()
    for cue in cues:
        if cue.value[0] == 'negation' and cue.value[1] == 'pre':
            for other in cues:
                if other is not cue and other.start >= cue.end and other.value[0] == 'uncertain' \
                        and len(words(text[cue.end:other.start])) < NEGATION_WINDOW:
                    denied_cues.add(id(other))
    for cue in cues:
        kind, direction = cue.value
        if kind == 'none':
            continue
        after = [i for i, f in enumerate(findings) if f.start >= cue.end]
        before = [i for i, f in enumerate(findings) if f.end <= cue.start]
        if direction == 'both':
            direction = 'pre' if after else 'post'
        target = negated if kind == 'negation' or id(cue) in denied_cues else uncertain
        chosen: List[int] = []
        if direction == 'clause':
            chosen = list(range(len(findings)))
        elif direction == 'around':
            chosen = before + after
        elif direction == 'pre' and after:
            if kind == 'negation':
                if len(words(text[cue.end:findings[after[0]].start])) < NEGATION_WINDOW:
                    chosen = [findings.index(f) for f in listed(text, findings, after[0], 1)]
            else:
                stop = next((c.start for c in cues if c.start >= cue.end and c.value[0] == 'negation'), end)
                chosen = [i for i in after if findings[i].start < stop]
        elif direction == 'post' and before:
            if len(words(text[findings[before[-1]].end:cue.start])) < NEGATION_WINDOW:
                chosen = [findings.index(f) for f in listed(text, findings, before[-1], -1)]
        target.update(chosen)
    for i, f in enumerate(findings):
        if i not in negated and i not in uncertain:
            following = findings[i + 1].start if i + 1 < len(findings) else end
            if POST_NEGATION.match(text[f.end:following]):
                negated.update(findings.index(g) for g in listed(text, findings, i, -1))
    for i, f in enumerate(findings):
        f.call = NEGATIVE if i in negated else UNCERTAIN if i in uncertain else POSITIVE


_RANK = {POSITIVE: 3, UNCERTAIN: 2, NEGATIVE: 1}


def read_findings(text: str) -> Dict[str, Optional[str]]:
    """observation -> positive / negative / uncertain / None, for each of the 14 observations."""
    text = text.lower()
    calls: Dict[str, Optional[str]] = dict.fromkeys(OBSERVATIONS)
    bounds = sentence_bounds(text)
    for start, end in zip(bounds, bounds[1:]):
        mentions = _mentions(text, start, end)
        if not any(m.kind in ('finding', 'statement') for m in mentions):
            continue
        cuts = [start] + [m.start() for m in _CLAUSE.finditer(text, start, end)] + [end]
        for lo, hi in zip(cuts, cuts[1:]):
            _clause(text, [m for m in mentions if lo <= m.start < hi], hi)
        for m in mentions:
            if m.kind in ('finding', 'statement'):
                for observation in m.value:
                    if calls[observation] is None or _RANK[m.call] > _RANK[calls[observation]]:
                        calls[observation] = m.call
    others = [c for o, c in calls.items() if o not in (NO_FINDING, 'Support Devices')]
    calls[NO_FINDING] = NEGATIVE if any(c in (POSITIVE, UNCERTAIN) for c in others) else POSITIVE
    return calls
