"""Text heuristics shared by the subcommands: refusals, whitespace, observations, similarity.

All are documented here because their results are reported (and drop rows when asked):

* A trace is a *refusal* when one of ``REFUSAL_PATTERNS`` matches within its first
  ``REFUSAL_WINDOW`` characters: teachers that decline do so up front ("I'm sorry, but I can't
  provide a diagnosis..."), while a real answer that ends with "consult a radiologist" is kept.
* Two texts are *the same answer* when they are equal after collapsing every run of whitespace to
  one space and stripping the ends.
* Teacher agreement is the Jaccard similarity of the two traces' sets of content words (lower case
  letters/digits, stop words removed): |A & B| / |A | B|, 1 for identical vocabularies, 0 for
  disjoint ones. A word after a one-word negation cue of the vocabulary ("no", "not", "without", "n't"...)
  up to the end of its clause (punctuation, a terminator such as "but") is a different word, marked ``neg_``:
  "no large effusion" gives {neg_large, neg_effusion}, which shares nothing with "large effusion". It is cheap
  enough for every pair of every study and ignores order and length, which is what drift between teachers'
  wording and findings looks like at dataset scale.
* A question's *observations* are the CheXpert observations it names: the observation's name or one of its
  mention phrases in the clinical vocabulary (clinical_text/vocabulary.yaml).
"""
import re
from typing import FrozenSet, List, Tuple

from clinical_text.scope import alternation
from clinical_text.vocabulary import OBSERVATIONS, default_vocabulary

_VOCABULARY = default_vocabulary()
_OBSERVATION_PATTERNS = [
    (name, re.compile(rf"(?<![\w-])(?:{alternation({name.lower(), *_VOCABULARY.terms(name)})})(?![\w-])", re.I))
    for name in OBSERVATIONS]

REFUSAL_WINDOW = 200
REFUSAL_PATTERNS = (
    r"\bI(?:'m| am) sorry\b", r"\bI (?:cannot|can't|can not|am unable to|'m unable to|am not able to)\b",
    r"\bI'm not able to\b", r'\bunable to (?:provide|interpret|view|analy[sz]e|assess|access|see)\b',
    r'\bas an AI\b', r'\bnot (?:able|qualified) to (?:provide|give|make) (?:a )?(?:medical|diagnos)',
    r'\bI (?:do not|don\'t) have (?:access to|the ability to)\b', r'\bno image (?:was|is|has been) (?:provided|attached)',
)
_REFUSAL = re.compile('|'.join(REFUSAL_PATTERNS), re.I)
_WORD = re.compile(r'[a-z0-9]+')
_TOKEN = re.compile(r"[a-z0-9]*n't|[a-z0-9]+|[.,;:!?()]")
# The vocabulary's one-word negation cues and terminators, as tokens.
_NEGATORS = frozenset(c for c in _VOCABULARY['pre_negation'] if _TOKEN.fullmatch(c))
_CLAUSE_ENDS = frozenset(('.', ',', ';', ':', '!', '?', '(', ')', *(t for t in _VOCABULARY['terminators']
                                                                       if _TOKEN.fullmatch(t))))
STOP_WORDS = frozenset(
    'a an and are as at be been but by can could do does for from has have if in into is it its may might no not of '
    'on or such that the their there these this to was were which with without would'.split())


def normalise_name(name: str) -> str:
    return re.sub(r'[\s_.\-]+', '', str(name)).lower()


def normalise_whitespace(text: str) -> str:
    return ' '.join(text.split())


def is_empty(text: str) -> bool:
    return not text.strip()


def is_refusal(text: str) -> bool:
    return bool(_REFUSAL.search(text[:REFUSAL_WINDOW]))


def observations_in(text: str) -> List[str]:
    return [name for name, pattern in _OBSERVATION_PATTERNS if pattern.search(text)]


def content_words(text: str) -> FrozenSet[str]:
    """Content words, those in a negation's clause marked ``neg_``."""
    found = set()
    negated = False
    for token in _TOKEN.findall(text.lower().replace('\u2019', "'")):
        if token in _CLAUSE_ENDS:
            negated = False
        elif token in _NEGATORS or token.endswith("n't"):
            negated = True
        elif token not in STOP_WORDS:
            found.add('neg_' + token if negated else token)
    return frozenset(found)


def jaccard(a: FrozenSet[str], b: FrozenSet[str]) -> float:
    union = len(a | b)
    return len(a & b) / union if union else 1.0


def drop_reason(text: str, drop_refusals: bool) -> Tuple[bool, str]:
    """(drop?, reason) for one teacher trace: empty traces always go, refusals when asked."""
    if is_empty(text):
        return True, 'empty trace'
    if drop_refusals and is_refusal(text):
        return True, 'refusal'
    return False, ''
