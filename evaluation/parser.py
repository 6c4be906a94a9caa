"""Free-text answer -> one class of the item's label set, or None (counted wrong and listed).

The rules, in order (all matching is case-insensitive, on whole words and phrases):

1. Text. Markdown emphasis and curly quotes are removed. An empty answer is ``None`` ("empty answer").
2. Terms. Each class is matched by its own name and its synonyms (``labels.py``; for MS-CXR-T e.g.
   *worsening*: worse, progressed, increased, new, enlarging...; *improving*: improved, decreased, resolved,
   no longer seen...; *stable*: unchanged, no change, no interval change, similar...). Longer phrases win
   over the words inside them, so "no change" means *stable* and is not a negated "change".
3. Clauses. The answer is cut into clauses at ``. , ; : ! ?``, new lines and "but / however / although /
   whereas / while". Negation and uncertainty only act inside a clause.
4. Negation. A term is dropped when one of "no, not, without, never, neither, nor, none, cannot" or a word
   ending in "n't" stands among the four words before it in its clause, or "rather than / instead of /
   free of / negative for" stands right before it, or its clause goes on with "is not / was not / not seen /
   absent / ruled out / excluded" ("worsening is not seen"). "cannot be excluded", "not ruled out" are
   hedges, not negations: the term is kept.
5. Hedges ("likely", "probably", "possibly", "may", "suggests", "slight") do not matter: "possibly slightly
   worse" is *worsening* (top-1 accuracy asks for the model's best guess).
6. Indeterminate. A clause that says "cannot determine / unable to assess / impossible to tell /
   indeterminate / not enough information" drops its terms ("I cannot determine whether it is improving").
7. The observation itself. For label sets that declare ``negated_observation`` / ``affirmed_observation``
   (e.g. present / absent), a negated mention of the observation ("no pleural effusion") counts as the
   negated class and a plain mention ("small pleural effusion") as the affirmed one. MS-CXR-T declares
   neither: "no pleural effusion" alone says nothing about progression and stays unparsed.
8. Decision. If the answer has an answer marker ("answer:", "final answer is", "conclusion:",
   "impression:"), the text after the last one is tried first; one class there decides
   ("answer marker"). Otherwise, one class in the whole answer decides ("single label"). Several classes:
   the sentences that name the item's observation are tried alone ("observation sentence"); still several
   -> ``None`` ("ambiguous: ..."). No class -> ``None`` ("no label found", or "indeterminate").
"""
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from .labels import MS_CXR_T, LabelSet

NEGATION_WORDS = {'no', 'not', 'without', 'never', 'neither', 'nor', 'none', 'cannot'}
NEGATION_WINDOW = 4
NEGATION_BIGRAMS = ('rather than', 'instead of', 'free of', 'negative for')
_CLAUSE_SPLIT = re.compile(r'[.,;:!?\n]|\b(?:but|however|although|whereas|while)\b')
_SENTENCE_SPLIT = re.compile(r'[.;!?\n]')
_POST_NEGATION = re.compile(r'^\W*(?:(?:is|are|was|were|has|have|had|be)\s+(?:not|no longer)\b|not\s+(?:seen|present|'
                            r'identified|evident|visible|appreciated|demonstrated)\b|(?:\w+\s+){0,3}?(?:absent|ruled out|'
                            r'excluded)\b)')
_HEDGED_NEGATION = re.compile(r'\b(?:cannot|can ?not|can\'t|could not|not)\s+(?:be\s+)?(?:excluded|ruled out)\b')
_INDETERMINATE = re.compile(r'\b(?:cannot|can ?not|can\'t|could not|unable to|impossible to|not possible to|difficult to|'
                            r'hard to)\s+(?:be\s+)?(?:reliably\s+|confidently\s+|accurately\s+)?(?:determine[ds]?|'
                            r'assess(?:ed)?|tell|say|evaluate[ds]?|compare[ds]?|establish(?:ed)?|judge[ds]?)\b|'
                            r'\bindeterminate\b|\bundetermined\b|\bnot enough information\b|\binsufficient information\b')
_MARKER = re.compile(r'\b(?:final answer|answer|conclusion|impression)\s*(?:is\s*[:\-=]?|[:\-=])')
_EMPHASIS = re.compile(r'[*_`#]+')


@dataclass(frozen=True)
class Parsed:
    label: Optional[str]
    rule: str           # how the label was found, or why there is none


@dataclass(frozen=True)
class _Terms:
    pattern: re.Pattern
    meaning: Dict[str, str]         # normalised term -> class, or '<observation>'


_CACHE: Dict[Tuple, _Terms] = {}
OBSERVATION = '<observation>'


def _norm(term: str) -> str:
    return ' '.join(term.lower().split())


def _terms(label_set: LabelSet, classes: Tuple[str, ...], observation: Optional[str]) -> _Terms:
    key = (id(label_set), classes, observation)
    if key not in _CACHE:
        synonyms = {_norm(k): v for k, v in label_set.synonyms.items()}
        meaning: Dict[str, str] = {}
        if observation:
            for word in (observation, *label_set.observation_synonyms.get(observation, ())):
                meaning[_norm(word)] = OBSERVATION
        for cls in classes:
            for word in (cls, *synonyms.get(_norm(cls), ())):
                meaning[_norm(word)] = cls     # a class word wins over an observation word
        alternatives = sorted(meaning, key=len, reverse=True)
        body = '|'.join(re.escape(t).replace(r'\ ', r'\s+') for t in alternatives)
        _CACHE[key] = _Terms(re.compile(rf'(?<![\w-])(?:{body})(?![\w-])'), meaning)
    return _CACHE[key]


def _clean(text: str) -> str:
    text = text.replace('\u2019', "'").replace('\u2018', "'").replace('\u201c', '"').replace('\u201d', '"')
    return _EMPHASIS.sub(' ', text).lower()


def _pieces(text: str, splitter: re.Pattern) -> List[str]:
    return [piece for piece in splitter.split(text) if piece and piece.strip()]


def _negated(before: str, after: str) -> bool:
    words = re.findall(r"[\w']+", before)[-NEGATION_WINDOW:]
    if any(w in NEGATION_WORDS or w.endswith("n't") for w in words):
        return True
    tail = ' '.join(re.findall(r"[\w']+", before)[-2:])
    if tail in NEGATION_BIGRAMS:
        return True
    return bool(_POST_NEGATION.search(after)) and not _HEDGED_NEGATION.search(after)


def _clause_labels(clause: str, terms: _Terms, label_set: LabelSet) -> List[str]:
    """The classes a clause affirms, in order of mention."""
    if _INDETERMINATE.search(clause):
        return []
    found = []
    for match in terms.pattern.finditer(clause):
        meaning = terms.meaning[_norm(match.group(0))]
        negated = _negated(clause[:match.start()], clause[match.end():])
        if meaning == OBSERVATION:
            meaning = label_set.negated_observation if negated else label_set.affirmed_observation
            if meaning:
                found.append(meaning)
        elif not negated:
            found.append(meaning)
    return found


def _labels(text: str, terms: _Terms, label_set: LabelSet) -> List[str]:
    return [label for clause in _pieces(text, _CLAUSE_SPLIT) for label in _clause_labels(clause, terms, label_set)]


def _single(labels: Sequence[str]) -> Optional[str]:
    distinct = set(labels)
    return labels[0] if len(distinct) == 1 else None


def parse_answer(answer: Optional[str], classes: Sequence[str], observation: Optional[str] = None,
                 label_set: LabelSet = MS_CXR_T) -> Parsed:
    """The class of ``classes`` that ``answer`` gives for ``observation`` (see the module's rules)."""
    if answer is None or not str(answer).strip():
        return Parsed(None, 'empty answer')
    text = _clean(str(answer))
    terms = _terms(label_set, tuple(classes), observation)

    markers = list(_MARKER.finditer(text))
    if markers:
        label = _single(_labels(text[markers[-1].end():], terms, label_set))
        if label:
            return Parsed(label, 'answer marker')

    labels = _labels(text, terms, label_set)
    if not labels:
        return Parsed(None, 'indeterminate' if _INDETERMINATE.search(text) else 'no label found')
    if _single(labels):
        return Parsed(labels[0], 'single label')
    if observation:
        mentions = [s for s in _pieces(text, _SENTENCE_SPLIT)
                    if any(terms.meaning[_norm(m.group(0))] == OBSERVATION for m in terms.pattern.finditer(s))]
        label = _single([lab for sentence in mentions for lab in _labels(sentence, terms, label_set)])
        if label:
            return Parsed(label, 'observation sentence')
    return Parsed(None, 'ambiguous: ' + ', '.join(sorted(set(labels))))
