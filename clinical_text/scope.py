"""Scope machinery shared by the two readers of free text: the answer reader (``evaluation/mentions.py``: change
terms on MS-CXR-T findings) and the findings reader (``findings.py``: CheXpert observations). Both cut a text into
sentences, negate with the vocabulary's cues within its one negation window, read "cannot be excluded" as a hedge
rather than a negation, read "X is not seen / absent / ruled out" as negating X, and let a modifier reach every
finding of a list ("no effusion or pneumothorax", "pneumonia, effusion and pneumothorax are absent").
"""
import re
from typing import Dict, Iterable, List, Sequence

from .vocabulary import Vocabulary

INDETERMINATE = re.compile(
    r"\b(?:cannot|can ?not|can't|could not|unable to|impossible to|not possible to|difficult to|hard to)\s+"
    r"(?:be\s+)?(?:reliably\s+|confidently\s+|accurately\s+|truly\s+|clearly\s+)?(?:determine[ds]?|assess(?:ed)?|"
    r"tell|say|evaluate[ds]?|compare[ds]?|establish(?:ed)?|judge[ds]?|be sure|be certain|know|separate[ds]?|"
    r"distinguish(?:ed)?|differentiate[ds]?)\b|\bindeterminate\b|"
    r"\bundetermined\b|\bnot enough information\b|\binsufficient information\b|\bnot (?:certain|sure)\b|"
    r"\buncertain\b|\bunclear\b")
SENTENCE_SPLIT = re.compile(r'[;!?\n]|\.(?!\d)')
# A sentence longer than this is cut at the next space: a 200,000-character trace without punctuation must not
# make the per-clause work quadratic.
MAX_SENTENCE = 2000
WORD = re.compile(r"[\w'-]+")
# Words that end a noun phrase: a modifier before one of them does not reach the finding after it.
VERBS = frozenset({
    'is', 'are', 'was', 'were', 'has', 'have', 'had', 'be', 'been', 'being', 'remains', 'remain', 'remained',
    'appears', 'appear', 'seems', 'shows', 'show', 'showed', 'demonstrates', 'demonstrated', 'there', 'which',
    'that', 'since', 'than', 'now', 'indicating', 'consistent', 'representing', 'compatible', 'suggesting',
    'concerning', 'compared', 'from', 'to', 'on', 'at', 'after', 'before', 'due'})
_LIST_JOIN = re.compile(r"^\W*(?:and|or|and/or|as well as)?\W*(?:[\w'-]+\W+){0,3}$")


def norm(text: str) -> str:
    return ' '.join(text.lower().split())


def words(text: str) -> List[str]:
    return WORD.findall(text)


def sentence_bounds(text: str, start: int = 0, end: int = None) -> List[int]:
    """start, the end of each sentence, end: consecutive pairs are the sentences of ``text[start:end]``."""
    end = len(text) if end is None else end
    bounds = [start]
    for m in SENTENCE_SPLIT.finditer(text, start, end):
        while m.end() - bounds[-1] > MAX_SENTENCE:
            cut = text.find(' ', bounds[-1] + MAX_SENTENCE, m.end())
            if cut < 0:
                break
            bounds.append(cut)
        bounds.append(m.end())
    while end - bounds[-1] > MAX_SENTENCE:
        cut = text.find(' ', bounds[-1] + MAX_SENTENCE, end)
        if cut < 0:
            break
        bounds.append(cut)
    return bounds + [end] if bounds[-1] != end else bounds


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


STEM = '*'


def alternation(phrases: Iterable[str]) -> str:
    """One regex for all phrases, longest first, factored as a trie (the engine then tries a handful of branches
    at each word instead of every phrase); a space matches any run of white space, and a phrase that ends in
    ``*`` is a stem: it matches the rest of the word too ("atelecta*": atelectasis, atelectatic)."""
    trie: Dict = {}
    for phrase in phrases:
        node = trie
        for char in phrase:
            node = node.setdefault(char, {})
        node[''] = {}

    def pattern(node: Dict) -> str:
        branches = [(r'\s+' if char == ' ' else r'[\w-]*' if char == STEM and not child.keys() - {''} else
                     re.escape(char)) + pattern(child)
                    for char, child in sorted(node.items(), reverse=True) if char]
        if not branches:
            return ''
        body = branches[0] if len(branches) == 1 else '(?:' + '|'.join(branches) + ')'
        return f'(?:{body})?' if '' in node else body
    return pattern(trie)


class PhraseTable:
    """What each phrase of an alternation stands for: ``lookup`` takes the text a match covered and finds its
    phrase, exactly or as the longest stem it starts with."""

    def __init__(self, entries: Dict[str, object]):
        self.entries = entries
        self._stems = sorted(((p[:-1], v) for p, v in entries.items() if p.endswith(STEM)),
                             key=lambda item: len(item[0]), reverse=True)
        self._seen: Dict[str, object] = {}

    def lookup(self, matched: str, default=None):
        found = self.entries.get(matched)
        if found is None:
            if matched not in self._seen:       # a stem's word or odd spacing: worked out once per text seen
                phrase = norm(matched)
                found = self.entries.get(phrase)
                if found is None:
                    found = next((v for stem, v in self._stems if phrase.startswith(stem)), None)
                self._seen[matched] = found
            found = self._seen[matched]
        return default if found is None else found


def post_negation(vocabulary: Vocabulary) -> re.Pattern:
    """After a finding, within three words: it is denied ("is not seen", "no longer visible", "absent")."""
    return re.compile(rf"^\W*(?:[\w'-]+\s+){{0,3}}?(?:{alternation(vocabulary['post_negation'])})(?![\w-])")


def terminators(vocabulary: Vocabulary) -> re.Pattern:
    """The words where a cue's reach ends ("but", "however"...)."""
    return re.compile(rf"(?<![\w-])(?:{alternation(vocabulary['terminators'])})(?![\w-])")
