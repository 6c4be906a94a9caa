"""Free-text answer -> one class of the item's label set, or None (counted wrong and listed).

The reader works on finding mentions and what modifies each (``mentions.py`` has the scoping rules):

1. Text. Markdown emphasis and curly quotes are removed. An empty answer is ``None`` ("empty answer").
2. Terms. Each class is matched by its own name and its synonyms (``labels.py``; for MS-CXR-T e.g.
   *worsening*: worse, increased, new, interval development, has spread...; *improving*: improved, decreased,
   resolved, no longer seen, smaller...; *stable*: unchanged, no interval change, similar, as before...), longest
   phrase first; a negated "change" or "difference" is *stable* ("not significantly changed", "little change");
   "again seen", "persistent", "redemonstrated" are weak *stable* and give way to a change term on the same finding.
3. Findings. The item's observation and its synonyms, the other observations, words that may name several
   ("opacity": consolidation, pneumonia or edema) and other findings (heart, lung volumes, tubes...).
4. Scope. Each term attaches to the finding it modifies ("stable cardiomegaly, progressing effusion"); negation
   and indeterminate cues act within their segment ("no effusion and enlarging pneumothorax"); "new" naming the
   image is no term; a graded range goes to its direction ("unchanged to slightly worse"); "previously small, now
   moderate" is a change.
5. Hedges ("likely", "probably", "possibly", "cannot be excluded") do not matter: top-1 accuracy asks for the
   model's best guess.
6. Decision. If the answer has an answer marker ("answer:", "final answer is", "conclusion:", "impression:"),
   the text after the last one is tried first ("answer marker"). Otherwise the terms about the item's observation
   decide ("finding"); if there are none, the terms attached to no finding ("unattached": "slightly worse");
   terms about other findings never do. Several classes -> ``None`` ("ambiguous: ..."). An indeterminate
   statement ("cannot determine", "not possible to say") with no term after it -> ``None`` ("indeterminate").
   No term -> ``None`` ("no label found", or "only about other findings").
7. The observation itself. For label sets that declare ``negated_observation`` / ``affirmed_observation``
   (e.g. present / absent), a negated mention of the observation ("no pleural effusion") counts as the
   negated class and a plain mention ("small pleural effusion") as the affirmed one. MS-CXR-T declares
   neither: "no pleural effusion" alone says nothing about progression and stays unparsed.
"""
import re
from dataclasses import dataclass
from typing import Optional, Sequence

from clinical_text.vocabulary import Vocabulary

from .labels import MS_CXR_T, LabelSet
from .mentions import Reading, read

_MARKER = re.compile(r'\b(?:final answer|answer|conclusion|impression)\s*(?:is\s*[:\-=]?|[:\-=])')
_EMPHASIS = re.compile(r'[*_`#]+')


@dataclass(frozen=True)
class Parsed:
    label: Optional[str]
    rule: str           # how the label was found, or why there is none


def _clean(text: str) -> str:
    text = text.replace('\u2019', "'").replace('\u2018', "'").replace('\u201c', '"').replace('\u201d', '"')
    return _EMPHASIS.sub(' ', text).lower()


def _decide(reading: Reading, observation: Optional[str], label_set: LabelSet) -> Parsed:
    about = [s for s in reading.statements if s.about is not None and (observation is None or observation in s.about)]
    chosen, rule = (about, 'finding') if about else ([s for s in reading.statements if s.about is None], 'unattached')
    if reading.indeterminate and not any(s.position > max(reading.indeterminate) for s in chosen):
        return Parsed(None, 'indeterminate')
    strong = [s for s in chosen if not s.weak] or chosen
    labels = sorted({s.label for s in strong})
    if len(labels) == 1:
        return Parsed(labels[0], rule)
    if labels:
        return Parsed(None, 'ambiguous: ' + ', '.join(labels))
    if observation and (label_set.negated_observation or label_set.affirmed_observation):
        named = {label_set.negated_observation if f.negated else label_set.affirmed_observation
                 for f in reading.findings if observation in f.value} - {None}
        if len(named) == 1:
            return Parsed(named.pop(), 'observation')
    return Parsed(None, 'only about other findings' if reading.statements else 'no label found')


def parse_answer(answer: Optional[str], classes: Sequence[str], observation: Optional[str] = None,
                 label_set: LabelSet = MS_CXR_T, vocabulary: Optional[Vocabulary] = None) -> Parsed:
    """The class of ``classes`` that ``answer`` gives for ``observation`` (see the module's rules), with the
    built-in clinical vocabulary or ``vocabulary``."""
    if answer is None or not str(answer).strip():
        return Parsed(None, 'empty answer')
    text = _clean(str(answer))
    classes = tuple(classes)
    markers = list(_MARKER.finditer(text))
    if markers:
        parsed = _decide(read(text[markers[-1].end():], label_set, classes, vocabulary), observation, label_set)
        if parsed.label:
            return Parsed(parsed.label, 'answer marker')
    return _decide(read(text, label_set, classes, vocabulary), observation, label_set)
