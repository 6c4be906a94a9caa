"""Scope machinery shared by the two readers of free text: the answer reader (``mentions.py``: change terms on
MS-CXR-T findings) and the trace findings reader (``data_prep/findings.py``: CheXpert observations in teacher
traces). Both cut a text into sentences, negate with the same cues, read "cannot be excluded" as a hedge rather
than a negation, read "X is not seen / absent / ruled out" as negating X, and let a modifier reach every finding of
a list ("no effusion or pneumothorax", "pneumonia, effusion and pneumothorax are absent").
"""
import re
from typing import List, Sequence

NEGATION_CUES = ('no', 'not', 'without', 'never', 'neither', 'nor', 'none', 'cannot', 'rather than', 'instead of',
                 'free of', 'negative for', 'absence of')
HEDGES = ('cannot be excluded', 'can not be excluded', 'cannot be ruled out', 'can not be ruled out',
          'could not be excluded', 'not be excluded', 'not be ruled out', 'not excluded', 'not ruled out',
          'not entirely excluded')
INDETERMINATE = re.compile(
    r"\b(?:cannot|can ?not|can't|could not|unable to|impossible to|not possible to|difficult to|hard to)\s+"
    r"(?:be\s+)?(?:reliably\s+|confidently\s+|accurately\s+|truly\s+)?(?:determine[ds]?|assess(?:ed)?|tell|say|"
    r"evaluate[ds]?|compare[ds]?|establish(?:ed)?|judge[ds]?|be sure|know)\b|\bindeterminate\b|\bundetermined\b|"
    r"\bnot enough information\b|\binsufficient information\b|\bnot (?:certain|sure)\b|\buncertain\b|\bunclear\b")
SENTENCE_SPLIT = re.compile(r'[;!?\n]|\.(?!\d)')
CONTRAST = re.compile(r'\W*(?:but|however|although|though|yet)\b')
WORD = re.compile(r"[\w'-]+")
# Words that end a noun phrase: a modifier before one of them does not reach the finding after it.
VERBS = frozenset({
    'is', 'are', 'was', 'were', 'has', 'have', 'had', 'be', 'been', 'being', 'remains', 'remain', 'remained',
    'appears', 'appear', 'seems', 'shows', 'show', 'showed', 'demonstrates', 'demonstrated', 'there', 'which',
    'that', 'since', 'than', 'now', 'indicating', 'consistent', 'representing', 'compatible', 'suggesting',
    'concerning', 'compared', 'from', 'to', 'on', 'at', 'after', 'before', 'due'})
_LIST_JOIN = re.compile(r"^\W*(?:and|or|and/or|as well as)?\W*(?:[\w'-]+\W+){0,3}$")
# After a finding: it is denied ("is not seen", "no longer", "absent", "ruled out").
POST_NEGATION = re.compile(r'^\W*(?:(?:is|are|was|were|has|have|had|be)\s+(?:not|no longer)\b|'
                           r'not\s+(?:seen|present|identified|evident|visible|appreciated|demonstrated)\b|'
                           r'(?:\w+\s+){0,3}?(?:absent|ruled out|excluded)\b)')


def norm(text: str) -> str:
    return ' '.join(text.lower().split())


def words(text: str) -> List[str]:
    return WORD.findall(text)


def sentence_bounds(text: str) -> List[int]:
    """0, the end of each sentence, len(text): consecutive pairs are the sentences."""
    return [0] + [m.end() for m in SENTENCE_SPLIT.finditer(text)] + [len(text)]


def listed(text: str, findings: Sequence, first: int, step: int) -> List:
    """findings[first] and the findings listed with it ("congestion and edema"), walking by ``step``.

    ``findings`` are in text order and have ``start`` and ``end``."""
    chosen = [findings[first]]
    i = first
    while 0 <= i + step < len(findings):
        a, b = (findings[i], findings[i + step]) if step > 0 else (findings[i + step], findings[i])
        between = text[a.end:b.start]
        if not _LIST_JOIN.match(between) or set(words(between)) & VERBS:
            break
        chosen.append(findings[i + step])
        i += step
    return chosen
