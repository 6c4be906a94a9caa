"""The findings reader: what a free-text report or model answer says about each of the 14 CheXpert observations.

``read_findings(text)`` gives, per observation, ``positive``, ``negative``, ``uncertain`` or None (not mentioned),
after the CheXpert labeler's conventions; ``explain(text)`` gives the same calls with the cue and the span that
decided each. docs/readers.md states the conventions and where this reader departs from the labeler; the words
come from the vocabulary (``vocabulary.yaml``, extended with ``FindingsReader(load_vocabulary(path))``).

Order of work:

1. Text. ``None``, bytes that are not UTF-8 (decoded with replacement characters) and empty text read as nothing
   mentioned. Markdown emphasis, backticks and underscores become spaces (JSON keys "pleural_effusion").
2. Reasoning. When a ``</think>`` or ``◁/think▷`` closes a reasoning block and the text after it names a finding,
   only that conclusion is read: a tentative mention the model then ruled out must not stay positive.
3. Structure, line by line: a table row's cell under a header that is itself a value ("| | Present | Absent |"
   with a ✓), or a cell that is only a value, gives the finding in the row's first cell that value; a line that
   starts with a mark ("✅ effusion", "- [ ] Pneumothorax") gives the line's findings its value; the list items
   after a differential header ("Differential diagnosis:") are uncertain; a heading or a key alone on its line
   is a topic, not a finding (it takes the value that starts the next line, if any). Report sections that are
   not about the image (indication, history, comparison) are not read.
4. Sentences (at ``. ; ! ?`` and new lines), each with its mentions: statements ("the heart is enlarged",
   "mediastinum: not widened"), finding phrases (an unmention phrase such as "pericardial effusion" hides the
   finding inside it), other findings (emphysema...), cues.
5. Key and value: a finding followed by a separator (``: | = – —``, or nothing before a mark) and a value word
   ("none", "absent", "✗", "yes", "possible", JSON ``false``) takes the value's call; so does a finding in an
   echoed question ("Is there a pneumothorax? No.") followed by such a value. A question without one is no
   mention.
6. Clauses (cut at the terminators: "but", "however"...), for the remaining mentions: a generic cue (textbook
   talk, refusals: "typically", "refers to", "cannot view") drops its sentence's findings between contrasts, a
   hypothetical cue ("whether", "if", "the question", "consult your doctor") those of its comma-part; negation,
   resolution and uncertainty cues act before ("no ...", "possible ...") or after ("... is not seen",
   "... cannot be excluded") on the nearest finding within the negation window and the findings listed with it
   ("clear of consolidation, effusion or pneumothorax"); a pre-uncertainty cue reaches to the end of the clause;
   "versus" makes both sides uncertain; two findings joined by a bare "or" are uncertain ("atelectasis or
   pneumonia"); pseudo-negations ("no significant change in") are not cues; "vascular congestion" is uncertain
   Edema by itself.
7. Aggregation over the text: positive beats uncertain beats negative. No Finding is negative when another
   observation (Support Devices aside) is positive or uncertain, or an other finding is named; else positive.
"""
import itertools
import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from .scope import INDETERMINATE, PhraseTable, alternation, listed, sentence_bounds, terminators, words
from .vocabulary import (CALLS, NEGATIVE, OBSERVATIONS, POSITIVE, UNCERTAIN, Vocabulary, default_vocabulary,
                         norm)

NO_FINDING = 'No Finding'
DEVICES = 'Support Devices'
RANK = {POSITIVE: 3, UNCERTAIN: 2, NEGATIVE: 1}
_THINK_END = re.compile(r'</think>|◁/think▷', re.I)
_THINK_START = re.compile(r'<think>|◁think▷', re.I)
# (not '#': it marks a markdown heading, see _TOPIC)
_EMPHASIS = (('*', ' '), ('_', ' '), ('`', ' '), ('\u2019', "'"), ('\u2018', "'"), ('\u201c', '"'), ('\u201d', '"'))
# A list mark, numbered steps included ("Step 2:", "Finding 3 -": what follows is the item, key and all).
_BULLET = re.compile(r'[ \t]*(?:[-*+•·▪◦>]|\d{1,2}[.)]|\([a-h]\)|'
                     r'(?:step|finding|point|item)[ \t]*\d{1,2}[ \t]*[:.)–—-])?[ \t]*')
# A line that is a heading and nothing else ("**Not seen**", "Possible findings:", "## Absent").
_HEADING_LINE = re.compile(r'[#\s]*[\w][\w\s/&\'-]{0,50}:?')
_CLAUSE_PART = re.compile(r'[,:]')
# A conclusion that calls the whole study normal: the reasoning before it keeps only its denials.
_NORMAL_STUDY = re.compile(r'\b(?:normal|unremarkable|negative)\s+'
                           r'(?:study|chest|film|radiograph|x-ray|exam|examination|cxr)\b|'
                           r'\bno (?:other )?(?:acute )?(?:abnormalit|findings?\b)')
_SHORT_SECTIONS = frozenset({'comparison', 'comparisons', 'technique', 'procedure', 'examination', 'exam'})
_SENTENCE_END = re.compile(r'\.(?=\s)|\n')
_INLINE_SENTENCE = re.compile(r'[.;!?][ \t]+(?=\S)')
_SECTION_END = re.compile(r'\n[ \t]*(?:\n|[-*•]?[ \t]*[a-z][\w /&-]{0,30}:)')
_QUESTION_MARK = re.compile(r'[ \t]*(?:\[\?\]|\?)(?=[ \t]+\w)')
# A line that starts with a short key and a colon: "Effusion: costophrenic angles crisp; no effusion".
_LINE_KEY = re.compile(r'[ \t]*((?:(?!is\b|are\b)[^\s:]+[ \t]+){0,3}[^\s:]+)[ \t]*:[ \t]+\S')
_EMPHASIZED_KEY = re.compile(r'(^[ \t]*(?:[-*•][ \t]+)?(?:\*\*|__|\*|_)[^*_\n.]{1,40})\.((?:\*\*|__|\*|_))', re.M)
_BOLD_LINE = re.compile(r'^[ \t]*\*\*[^*\n]{1,80}\*\*[ \t]*:?[ \t]*$', re.M)
# Between a key and its value: ":", "|", "=", a dash ("Effusion - none", "Atelectasis — likely"); the separator's span
# takes in the blanks around it and a closing / opening quote ('"edema": false').
_SEPARATOR = re.compile(r'[:|=–—]|(?<=\s)-(?=\s)')
_BLANKS = frozenset(' \t\n\r\f\v')
_QUESTION_PREFIX = re.compile(r'\W*(?:a|answer|response|i)?\s*[:\-–—]?\s*')
# A line that is only a key ("pleural effusion:"), or a markdown heading ("# pleural effusion").
# JSON fields that hold the call of their object's finding: {"finding": "edema", "status": "absent"}
_STATUS_FIELD = re.compile(r'"(?:status|presence|present|result|assessment|verdict|call|label|value|state)"\s*:\s*"?')
# A sub-line that gives its topic's value: "- **Presence:** Yes", "Status: absent".
_PRESENCE_KEY = re.compile(r'\s*(?:presence|present|status|result|assessment|conclusion|finding|answer|seen|'
                           r'detected|evidence)\s*[:=\-–—]\s*')
_TOPIC_LENGTH = 70     # a topic line is no longer than this (what _TOPIC can match, with marks and blanks)
_TOPIC = re.compile(r'[#\s\d.)]*[\w][\w\s/,&()\'-]{0,60}?\s*(:)?\s*$')
_TABLE_RULE = re.compile(r'^\s*\|?\s*:?-{2,}')
_OR = re.compile(r'^\W*or\W*(?:[\w-]+\W+){0,2}$')
_WORD_CHAR = re.compile(r'[\w-]')
_PARALLEL = ('while', 'whereas')
_INNER_NOT = re.compile(r"\b(?:not|no)\b|n't\b")
_NT = ('cue', ('negation', 'both', "a word ending in n't"), None)
# A list item with a predicate of its own is not under the negation before the list: "no pneumothorax, small
# left effusion is present".
_AFFIRMED = re.compile(r'\s*(?:(?!(?:and|or|nor)\b)[\w-]+\s+){0,2}?(?:is|are)\s+(?:now\s+|again\s+)?'
                       r'(?:present|seen|noted|identified|'
                       r'demonstrated|evident|visible|appreciated)\b')
# A key that is a value ("negative findings: ...") reaches its list up to one of these.
_VALUE_END = re.compile(r'[\]}\n;]')
_KEY_NOISE = re.compile(r'[\W_]+')
_SEPARATOR_AFTER = re.compile(r'\s*[—–,:;-]')
_KEY_LEAD = re.compile(r'(?:checked|reviewed|assessed|evaluated|looked for|examined|seen)(?: and| but)? ')
_KEY_NOUNS = re.compile(r'(?:(?:radiographic|imaging|chest|x-ray|cxr)\s+)?(?:findings?|observations?|diagnos[ie]s|'
                        r'conditions?|items?|abnormalities|pathology|pathologies)?')
_COMMA_ONLY = re.compile(r'^[^\w]*,[^\w]*(?:[\w-]+\W+){0,3}$')
# Multiple-choice options: "A) ", "(b) ", "(3) ", and "C. " at the start of a line.
_OPTION_LABEL = re.compile(r"([a-e1-6])[).](?=[ \t])")
_OPTION_END = re.compile(r'[.?!\n]')
# How far after a question (in characters) its options may still be found.
_OPTIONS_REACH = 1500
# How a question starts (an echoed question, not a hedged statement that ends with "?").
_QUESTION_START = re.compile(r"\W*(?:\w+\W+){0,2}?(?:is|are|was|were|does|do|did|could|can|should|would|will|may|might|"
                             r"has|have|any|what|which|how|why|where|when|who)\b")
# What asks a multiple-choice question.
_QUESTION_WORDS = ('?', 'which of the following', 'except', 'question', 'option')
_EXCEPT = re.compile(r"\bexcept\b|\bnot\s+(?:seen|present|shown|supported|a feature)\b|\bleast likely\b")
_ANSWER = re.compile(r"(?<![\w-])(answer|answer is|pick|choose|chose|select|go with|correct option|correct answer|"
                     r"leaning toward|lean toward|leaning towards|lean towards|it's|it is)\W{0,4}(?:is\s+)?"
                     r"(?:option\s+)?(?:\(([a-e1-6])\)|([a-e1-6])(?=[).,;:!]|\s*$))", re.M)
# Hedge words inside a statement's words ("the mediastinum may be widened").
_HEDGE = re.compile(r'\b(?:may|might|could|possibly|probably|likely|perhaps|questionably|presumably|borderline|'
                    r'appears? to be)\b')
# "for" within six words after a search verb: "looked [carefully at both costophrenic angles] for".
_FOR_AFTER = re.compile(r"(?:\s+[\w'-]+){0,6}?\s+for(?![\w-])")
# Where a hedge's reach ends: the evidence it cites.
_REASON = re.compile(r':|\b(?:given|because|since)\b')
# Where a differential item's explanation starts: "1. Pneumonia - most likely, given ...".
_ITEM_EXPLANATION = re.compile(r'\s[—–-]\s|[—–]|:')
# Kinds of mention that name something (structure, textbook talk and echoed questions decide their calls).
_NAMING = ('finding', 'statement', 'other', 'subject', 'normal')
# How far (characters) before and after a subject its predicate may be: "new prominence of the [superior
# mediastinum]", "[the heart], XXXX and lungs are within normal limits".
_PREDICATE_BEFORE, _PREDICATE_AFTER = 40, 120
# Between a predicate and the subject after it: "stable [cardiac silhouette]", "prominence of the [mediastinum]",
# "normal [heart size and] mediastinal contours".
_BEFORE_SUBJECT = re.compile(r"\s*(?:(?:of|in|the|a|an|and|mildly|slightly|moderately|markedly|overall|left|right)"
                             r"\s+){0,3}")
# Before a value word: a probability ("~70% likely", "~0%, none"), a label in Chinese ("无 (none)"), a bracket.
_VALUE_LEAD = re.compile(r"(?:[\u3000-\u9fff\uff00-\uffef]+|\(|[~<>≈]?\s*\d+(?:\.\d+)?\s*%\s*[,;]?|\s+)*")
# A verdict on what was looked for: "and found none", "- nothing", "there is a small one".
_FOUND = re.compile(r"(?<![\w-])(?:(nothing|none|negative|neither)|(?:there\s+(?:is|are|was|were)|found|see|saw|shows?|"
                    r"showed)\s+(?:[\w-]+\s+){0,3}?(?:one|ones|it|some))(?![\w-])")
# "a small one cannot be excluded": a cue in a clause without a finding speaks of the last finding before it.
_ANAPHOR = re.compile(r'\b(?:one|ones|it|this|these|that)\b')


@dataclass(slots=True)
class Mention:
    start: int
    end: int
    kind: str                   # finding, statement, other, unmention, cue
    value: tuple = ()           # finding/statement/other: observations; cue: (kind, direction, vocabulary section)
    call: Optional[str] = None  # decided call; None: dropped (hypothetical, echoed question)
    cue: Optional[Tuple[int, int, str]] = None      # (start, end, why) of what decided the call
    forced: bool = False        # the call came from a structure (value, table cell, question answer)


@dataclass(frozen=True)
class Decision:
    call: Optional[str]
    span: str = ''              # the words that named the observation
    cue: str = ''               # the cue or value that decided the call ('' for a plain mention)
    rule: str = ''              # which rule the cue belongs to
    sentence: str = ''


@dataclass(frozen=True)
class _Label:
    """A multiple-choice option's label: "b)" is key "b"."""
    start: int
    end: int
    key: str


@dataclass(frozen=True)
class _ListHeading:
    """A line over a list whose items take its call: a differential's header, "Not seen:", "Possible findings"."""
    call: str
    cue: Tuple[int, int, str]
    indent: int
    nested: bool            # the heading is a list item itself: its items are the deeper ones
    lead_only: bool         # an item's call reaches up to its explanation (a dash or a colon)


@dataclass
class _Forced:
    start: int
    end: int
    call: str
    cue: Tuple[int, int, str]


class FindingsReader:
    """The reader for one vocabulary (its regular expressions are built once)."""

    def __init__(self, vocabulary: Optional[Vocabulary] = None):
        self.vocabulary = vocabulary = vocabulary or default_vocabulary()
        entries: Dict[str, tuple] = {}
        directions: Dict[Tuple[str, str], Dict[str, str]] = {}     # (phrase, kind) -> direction -> section
        for section, kind, direction in (
                ('pre_negation', 'negation', 'pre'), ('post_negation', 'negation', 'post'),
                ('pre_resolution', 'negation', 'pre'), ('post_resolution', 'negation', 'post'),
                ('pre_uncertainty', 'uncertain', 'pre'), ('post_uncertainty', 'uncertain', 'post'),
                ('around_uncertainty', 'uncertain', 'around'), ('pseudo_negation', 'none', 'pre'),
                ('hypothetical', 'hypothetical', 'clause'), ('generic', 'generic', 'sentence'),
                ('refusal', 'generic', 'refusal')):
            for phrase in vocabulary[section]:
                directions.setdefault((phrase, kind), {})[direction] = section
        for (phrase, kind), found in directions.items():
            # a cue listed both before and after acts on what follows it, else on what precedes it ("resolved")
            direction = 'both' if {'pre', 'post'} <= set(found) else 'refusal' if 'refusal' in found else \
                next(iter(found))
            entries[phrase] = ('cue', (kind, direction, ' + '.join(found.values())), None)
        for phrase in vocabulary['other_findings']:
            entries[phrase] = ('other', (), POSITIVE)
        for observation in OBSERVATIONS:
            for kind, call in (('mention', POSITIVE), ('uncertain', UNCERTAIN)):
                for phrase in vocabulary.terms(observation, kind):
                    named = entries[phrase][1] if entries.get(phrase, ('',))[0] == 'finding' else ()
                    entries[phrase] = ('finding', named + (observation,), call)    # "pleural abnormality": two
        for observation in OBSERVATIONS:
            for phrase in vocabulary.terms(observation, 'subject'):
                if entries.get(phrase, ('',))[0] != 'finding':
                    named = entries[phrase][1] if entries.get(phrase, ('',))[0] == 'subject' else ()
                    entries[phrase] = ('subject', named + (observation,), None)
        for observation in OBSERVATIONS:
            for phrase in vocabulary.terms(observation, 'unmention'):
                # a phrase named elsewhere keeps that meaning and hides this one: "calcified nodule" (a granuloma,
                # no lesion), "pleural scar" (Pleural Other, no Lung Opacity)
                if entries.get(phrase, ('',))[0] not in ('other', 'finding'):
                    entries[phrase] = ('unmention', (), None)
        # search cues: the phrase before "for" is read by the lexicon ("reviewed"), "for" is looked for after it
        search_verbs = {}
        for phrase in vocabulary['search']:
            verb, needs_for = (phrase[:-4], True) if phrase.endswith(' for') and ' ' in phrase else (phrase, False)
            search_verbs[verb] = needs_for
            entries.setdefault(verb, ('search', (), None))
        self._search_verbs = search_verbs
        self._entries = PhraseTable(entries)
        self._exact = entries
        self._lexicon = re.compile(rf"(?<![\w-])(?:{alternation(entries)}|\w+n't)(?![\w-])")
        # "heart failure" present or possible makes Cardiomegaly uncertain (the labeler's rule)
        self._implies = PhraseTable({phrase: observation for observation in OBSERVATIONS
                                     for phrase in vocabulary.terms(observation, 'uncertain_from')})
        self._implying = frozenset(o for phrase in self._implies.entries for o in entries.get(phrase, ('', ()))[1])
        predicates = {phrase: cls for cls in (POSITIVE, UNCERTAIN, NEGATIVE) for phrase in vocabulary.predicates[cls]}
        self._predicates = PhraseTable(predicates)
        self._predicate = re.compile(rf"(?<![\w-])(?:{alternation(predicates)})(?![\w-])")
        self._refusal = re.compile(rf"(?<![\w-])(?:{alternation(vocabulary['refusal'])})(?![\w-])")
        self._image_reference = re.compile(rf"(?<![\w-])(?:{alternation(vocabulary['image_reference'])})(?![\w-])")
        self._normal_study = re.compile(rf"(?<![\w-])(?:{alternation(vocabulary['normal_study'])})(?![\w-])")
        self._statements = vocabulary.statements
        self._values: Dict[str, str] = {}
        for cls in (POSITIVE, NEGATIVE, UNCERTAIN):     # a word listed under two classes keeps the later one
            for phrase in vocabulary.values[cls]:
                self._values[phrase] = cls
        self._value = re.compile(rf'(?:{alternation(self._values)})(?![\w])')
        # values that are marks (✓, ❌, [x]) also count with no separator before them ("Consolidation ✗")
        self._marks = {p: c for p, c in self._values.items() if re.search(r'[^\w\s\-–—?+]', p) and p[0] != '{'}
        self._mark = re.compile(rf'[ \t]*(?:{alternation(self._marks)})')
        self._pseudo = re.compile(rf"(?:{alternation(vocabulary['pseudo_negation'])})(?![\w-])")
        self._differential_word = re.compile(alternation(vocabulary['differential_headers']))
        self._generic = re.compile(rf"(?<![\w-])(?:{alternation(vocabulary['generic'])})(?![\w-])")
        self._inline_differential = re.compile(rf"(?<![\w-])(?:{alternation(vocabulary['differential_headers'])})"
                                               rf"[^:—–\n]{{0,50}}?(?:\"?:|\s[—–-]\s)\W*(?=\w)")
        # "Differential diagnosis:", "My ranked differential for the left basal opacity:", "**Possibilities**"
        headers = alternation(vocabulary['differential_headers'])
        self._differential = re.compile(rf"^\W*(?:[\w'-]+\W+){{0,3}}?(?:{headers})"
                                        rf"\b[^:.?!\n]{{0,70}}?(:)?[\s*#_]*$")
        self._terminators = terminators(vocabulary)
        self._negated_key = re.compile(rf"(?<![\w-])(?:{alternation(vocabulary['pre_negation'])}|\w+n't)(?![\w-])")
        self._window = vocabulary.negation_window
        headers = alternation(vocabulary['skipped_sections'] + vocabulary['sections'])
        # "INDICATION:", or a heading alone on its line ("## Comparison")
        self._section = re.compile(rf'(?<![\w-])({headers})[ \t]*(?:(:)|(?=[ \t*_#]*(?:\n|$)))')
        self._skipped = set(vocabulary['skipped_sections'])

    # ---- public
    def read(self, text) -> Dict[str, Optional[str]]:
        """observation -> positive / negative / uncertain / None, for each of the 14 observations."""
        text = _as_text(text)
        deciding, mentions = self._decide(text)
        calls = {o: (m.call if m else None) for o, m in deciding.items()}
        if text.strip():
            calls[NO_FINDING] = NEGATIVE if _ruling_out(deciding, mentions) else \
                POSITIVE if _says_something(deciding, mentions) else None
        return calls

    def explain(self, text) -> Dict[str, Decision]:
        """observation -> Decision (the call and the cue and span that decided it)."""
        text = _as_text(text)
        deciding, mentions = self._decide(text)
        bounds = sentence_bounds(text)
        decisions = {o: _decision(text, bounds, m) if m else Decision(None) for o, m in deciding.items()}
        ends = list(_THINK_END.finditer(text))
        if ends:        # say where a reasoning trace's call was read
            for o, m in deciding.items():
                if m is not None:
                    where = 'the conclusion after' if m.start >= ends[-1].end() else 'the reasoning (the conclusion ' \
                        'does not name it) of'
                    d = decisions[o]
                    decisions[o] = Decision(d.call, d.span, d.cue, f'{d.rule}; read in {where} the reasoning block',
                                            d.sentence)
        if text.strip():
            decisions[NO_FINDING] = _no_finding(text, bounds, deciding, mentions)
        return decisions

    def _decide(self, text: str) -> Tuple[Dict[str, Optional[Mention]], List[Mention]]:
        """observation -> the mention that decides its call (positive beats uncertain beats negative; the first
        of equals), and every mention read."""
        deciding: Dict[str, Optional[Mention]] = dict.fromkeys(OBSERVATIONS)
        if not text.strip():
            return deciding, []
        low = self._skip_sections(_prepare(text))
        bold = frozenset(m.start() for m in _BOLD_LINE.finditer(text))
        mentions: List[Mention] = []
        start, end = len(low), len(low)
        normal = False
        for region in self._regions(low):       # the conclusion first: it decides what it names
            before = {o for o, m in deciding.items() if m is not None}
            if before and not self._may_add(low, region, before):
                continue        # the reasoning names nothing the conclusion left open
            read = self._read_region(low, *region, bold)
            mentions += read
            start = min(start, region[0])
            for m in read:
                if m.kind not in ('finding', 'statement', 'subject') or m.call is None or \
                        (normal and m.call != NEGATIVE):    # "... </think> Normal study.": no finding stays
                    continue
                for observation in m.value:
                    current = deciding[observation]
                    if observation not in before and (current is None or RANK[m.call] > RANK[current.call]):
                        deciding[observation] = m
            if normal:
                for m in read:
                    if m.kind == 'other' and m.call != NEGATIVE:
                        m.call = None
            normal = normal or bool(_NORMAL_STUDY.search(low, *region))
        deciding[NO_FINDING] = None
        if not any(deciding.values()):      # whether the text says anything of the image (No Finding)
            mentions += self._normal_words(low, start, end, mentions)
        return deciding, mentions

    def _normal_words(self, low: str, start: int, end: int, mentions: List[Mention]) -> List[Mention]:
        """Words of a normal study ("clear", "unremarkable") outside textbook talk, refusals and questions."""
        dropped = [m for m in mentions if m.kind == 'dropped']
        return [Mention(m.start(), m.end(), 'normal', (), POSITIVE)
                for m in self._normal_study.finditer(low, start, end)
                if not any(d.start <= m.start() < d.end for d in dropped)]

    # ---- text regions
    def _skip_sections(self, low: str) -> str:
        """``low`` with the text of skipped sections (indication, history, comparison...) blanked out, so that
        positions still point into the original. A skipped section ends at the next header, a blank line or a line
        that starts with a key of its own ("Lungs: ...")."""
        # a header starts a line or follows a sentence ("... prior. COMPARISON: ..."), not "Step 1 - Technique:"
        if ':' not in low and '\n' not in low.rstrip():
            return low      # no header without a colon or a line of its own
        headers = [h for h in self._section.finditer(low) if _starts_a_sentence(low, h.start())]
        parts, kept = [], 0
        for header, following in zip(headers, headers[1:] + [None]):
            name = norm(header.group(1))
            if name in self._skipped:
                stop = following.start() if following else len(low)
                # a comparison or technique says its piece in a sentence; an indication or history in its line
                end_of_section = _SENTENCE_END if name in _SHORT_SECTIONS and header.group(2) else _SECTION_END
                ends = end_of_section.search(low, header.end(), stop)
                stop = ends.start() if ends else stop
                parts += [low[kept:header.start()], ' ' * (stop - header.start())]
                kept = stop
        return ''.join(parts) + low[kept:] if parts else low

    def _may_add(self, low: str, region: Tuple[int, int], decided: set) -> bool:
        """Whether ``region`` names an observation outside ``decided``, or an other finding (No Finding)."""
        for m in self._lexicon.finditer(low, *region):
            kind, value, _ = self._exact.get(m.group()) or self._entries.lookup(m.group(), _NT)
            if kind == 'other' or (kind in ('finding', 'subject') and not decided.issuperset(value)):
                return True
        return False

    def _regions(self, low: str) -> List[Tuple[int, int]]:
        """The parts of the text to read, in order of authority: after a reasoning block, its conclusion (which
        decides what it names), then the reasoning (which decides the rest); else the whole text."""
        ends = list(_THINK_END.finditer(low))
        if ends:
            opening = _THINK_START.search(low, 0, ends[-1].start())
            return [(ends[-1].end(), len(low)), (opening.end() if opening else 0, ends[-1].start())]
        opening = _THINK_START.search(low)
        return [((opening.end() if opening else 0), len(low))]

    def _read_region(self, low: str, start: int, end: int, bold: frozenset = frozenset()) -> List[Mention]:
        forced = sorted(self._structure(low, start, end, bold) + self._options(low, start, end) +
                        self._json_status(low, start, end), key=lambda f: f.start)
        forced_starts = [f.start for f in forced]
        status_values = [f.cue[:2] for f in forced if f.cue[2] == 'status field']
        bounds = sentence_bounds(low, start, end)
        found, generic = self._mentions(low, bounds)
        # a refusal phrase is also a generic cue: look for one only where a generic cue was read
        refusal = generic and self._refusal.search(low, start, end)
        out: List[Mention] = []
        for i, mentions in enumerate(found):
            a, b = bounds[i], bounds[i + 1]
            if not mentions:
                continue
            for m in mentions:      # the structure span that holds the mention, if any (one per line or row)
                if status_values and m.kind == 'cue' and any(a <= m.start < b for a, b in status_values):
                    m.kind = 'spent'        # '"status": "absent"' gave its object's finding its call, denies no more
                    continue
                at = bisect_right(forced_starts, m.start) - 1
                if at >= 0 and m.kind in _NAMING and m.end <= forced[at].end and \
                        not (m.kind in ('subject', 'statement') and forced[at].cue[2] == 'mark'):
                    m.call, m.cue, m.forced = forced[at].call, forced[at].cue, True      # ("[x] Heart size normal":
                    # the mark ticks the statement, which decides)
            if refusal and refusal.end() <= a and not self._image_reference.search(low, a, b):
                # after "I cannot view images", what is not said of this image is textbook talk
                _drop(mentions, a, b, (refusal.start(), refusal.end(), 'after a refusal: not a mention'))
            generics = [m for m in mentions if m.kind == 'cue' and m.value[0] == 'generic'] if generic else None
            if generics and (any(g.value[1] == 'refusal' for g in generics) or not any(
                    m.kind == 'cue' and m.value[1] == 'clause' and m.value[0] == 'uncertain' for m in mentions)):
                # Textbook talk and refusals say nothing of this image, between the contrasts around them ("I
                # cannot view images, but the findings suggest edema"); a parallel contrast ("while",
                # "whereas") goes on with the same talk.
                contrasts = [t.start() for t in self._terminators.finditer(low, a, b) if t.group() not in _PARALLEL]
                for generic in generics:
                    relative = low.rfind(' which ', a, generic.start)
                    lo = max([c for c in contrasts if c <= generic.start] + [a, relative])
                    hi = min([c for c in contrasts if c > generic.start] + [b])
                    _drop(mentions, lo, hi, (generic.start, generic.end, 'generic: not a mention'))
            self._key_values(low, a, b, mentions)
            if low[a:b].rstrip().endswith('?') and not _tentative(low, a, mentions):
                following = next((bounds[j] for j in range(i + 1, len(bounds) - 1)
                                  if low[bounds[j]:bounds[j + 1]].strip()), b)
                answer = self._answer(low, following)
                if answer is None:
                    mentions.append(Mention(a, b, 'dropped'))
                elif _SEPARATOR_AFTER.match(low, answer[1][1]):
                    # "Is there pneumonia? Possibly - there's a faint opacity": the answer hedges no opacity
                    for j in range(i + 1, len(found)):
                        for c in found[j]:
                            if c.kind == 'cue' and answer[1][0] <= c.start < answer[1][1]:
                                c.kind = 'spent'
                        if bounds[j + 1] > answer[1][1]:
                            break
                for m in mentions:
                    if m.kind in _NAMING and not m.forced:
                        m.forced = True
                        m.call, m.cue = (answer[0], answer[1]) if answer else (None, (a, b, 'echoed question'))
            cuts = [a] + [t.start() for t in self._terminators.finditer(low, a, b)] + [b]
            kinds = {m.kind for m in mentions}
            previous = None
            for lo, hi in zip(cuts, cuts[1:]):
                clause = [m for m in mentions if lo <= m.start < hi]
                if 'search' in kinds:
                    self._searched(low, clause, lo, hi)
                if 'statement' in kinds:
                    self._hedge_statements(low, clause, lo)
                anaphor = self._clause(low, clause, lo, hi, previous)
                if anaphor:
                    out.append(anaphor)
                if 'subject' in kinds:
                    self._subjects(low, clause, lo, hi)
                previous = next((m for m in reversed(clause) if m.kind == 'finding' and m.call), previous)
            out += mentions
        out += self._implied(low, out)
        return out

    def _hedge_statements(self, low: str, clause: List[Mention], start: int) -> None:
        """A positive statement under a hedge is uncertain: "the mediastinum may be widened", "possible
        cardiomegaly"; the hedge may sit inside it or before it in its clause."""
        for m in clause:
            if m.kind != 'statement' or m.call != POSITIVE or m.forced:
                continue
            inside = _HEDGE.search(low, m.start, m.end)
            before = next((c for c in clause if c.kind == 'cue' and c.value[0] == 'uncertain' and
                           start <= c.start < m.start and c.value[1] in ('pre', 'both', 'clause') and
                           ':' not in low[c.end:m.start]), None)
            if inside or before:
                cue = (inside.start(), inside.end()) if inside else (before.start, before.end)
                m.call, m.cue = UNCERTAIN, (*cue, 'a hedge on the statement')

    def _implied(self, low: str, mentions: List[Mention]) -> List[Mention]:
        """Heart failure present or possible makes Cardiomegaly uncertain (the labeler's rule)."""
        implied = []
        if not any(phrase in low for phrase in self._implies.entries):
            return implied
        for m in mentions:
            if m.kind == 'finding' and m.call in (POSITIVE, UNCERTAIN) and not self._implying.isdisjoint(m.value):
                observation = self._implies.lookup(low[m.start:m.end])
                if observation:
                    implied.append(Mention(m.start, m.end, 'finding', (observation,), UNCERTAIN,
                                           (m.start, m.end, f'implies uncertain {observation} (the labeler\'s rule)')))
        return implied

    def _searched(self, low: str, clause: List[Mention], start: int, end: int) -> None:
        """What the writer looked for is no assertion: the findings after a search cue ("I reviewed both bases for
        an effusion") take the verdict the rest of the clause gives (a denial, a hedge, "there is a small one"),
        else no call."""
        free = [m for m in clause if m.kind in ('finding', 'other') and not m.forced]
        cues = [m for m in clause if m.kind == 'cue']
        for cue in (m for m in clause if m.kind == 'search'):
            if any(c.start < cue.end and cue.start < c.end for c in cues):
                continue        # "cannot rule out": a hedge, not a search
            after = [i for i, f in enumerate(free) if f.start >= cue.end]
            if not after or len(words(low[cue.end:free[after[0]].start])) >= self._window:
                continue
            colon = low.find(':', cue.end, end)      # "for the asked findings of X and Y: there's no Y"
            group = [f for f in listed(low, free, after[0], 1) if colon < 0 or f.start < colon]
            if not group:
                continue
            rest_end = next((f.start for f in free if f.start > group[-1].end and f not in group), end)
            verdict = self._verdict(low, clause, group[-1].end, rest_end)
            if verdict is None and rest_end == end:     # "Apices checked for a pneumothorax; none."
                verdict = self._answer(low, end) or self._found(low, end)
                if verdict:
                    verdict = verdict[0], (*verdict[1][:2], 'verdict on what was looked for')
            for f in group:
                f.forced = True
                f.call = verdict[0] if verdict else None
                f.cue = verdict[1] if verdict else (cue.start, cue.end, 'looked for: not a statement')

    def _verdict(self, low: str, clause: List[Mention], start: int, end: int
                 ) -> Optional[Tuple[str, Tuple[int, int, str]]]:
        """The writer's verdict on what they looked for, from ``low[start:end]``."""
        for m in clause:
            if m.kind == 'cue' and start <= m.start < end and m.value[0] in ('negation', 'uncertain'):
                call = NEGATIVE if m.value[0] == 'negation' else UNCERTAIN
                return call, (m.start, m.end, f'verdict on what was looked for ({m.value[2]})')
        found = _FOUND.search(low, start, end)
        if found:
            call = NEGATIVE if found.group(1) else POSITIVE
            return call, (found.start(), found.end(), 'verdict on what was looked for')
        return None

    def _found(self, low: str, at: int) -> Optional[Tuple[str, Tuple[int, int, str]]]:
        """A verdict in the sentence that starts at ``at`` ("... effusion; they're sharp, so there is none")."""
        stop = _SENTENCE_END.search(low, at)
        found = _FOUND.search(low, at, stop.start() if stop else len(low))
        if found is None:
            return None
        return NEGATIVE if found.group(1) else POSITIVE, (found.start(), found.end(), 'verdict on what was looked for')

    def _subjects(self, low: str, clause: List[Mention], start: int, end: int) -> None:
        """A subject (the heart, the mediastinum, the pleura) takes what its clause says of it: a predicate after
        it or just before it ("heart size is normal", "stable cardiac silhouette"); a negation between them denies
        a positive predicate ("the heart does not appear big"), a hedge makes it uncertain; nothing said, no
        call."""
        subjects = [m for m in clause if m.kind == 'subject' and not m.forced]
        if not subjects:
            return
        # a predicate inside a finding's name ("enlarged heart") is the finding's; one inside an other finding
        # ("thickened") or a statement about the next subject ("[heart,] XXXX and mediastinum are normal") counts
        named = [m for m in clause if m.kind in ('finding', 'other')]
        inside = _covered([m for m in clause if m.kind == 'finding'])
        finding_starts = [m.start for m in clause if m.kind == 'finding']
        predicates = [p for p in clause if p.kind == 'predicate' and not inside(p) and
                      not _leads(low, p, finding_starts)]
        starts = [p.start for p in predicates]
        for m in subjects:
            at = bisect_right(starts, m.start)
            before = [p for p in predicates[max(0, at - 2):at]
                      if p.end <= m.start and _BEFORE_SUBJECT.fullmatch(low, p.end, m.start)]
            after = next((p for p in predicates[at:] if p.start >= m.end), None)
            if after is not None and ((':' in low[m.end:after.start] and
                                       any(m.end <= o.start < after.start for o in clause
                                           if o.kind in ('subject', 'statement'))) or
                                      any(m.end <= n.start and n.end <= after.start for n in named) or
                                      len(words(low[m.end:after.start])) >= self._window + 2):
                after = None
            predicate = before[-1] if before else after
            if predicate is None:
                m.call, m.cue = None, (m.start, m.end, 'subject with nothing said of it')
                continue
            call, said = predicate.call, low[predicate.start:predicate.end]
            lo, hi = (predicate.end, m.start) if predicate.end <= m.start else (m.end, predicate.start)
            between = [c for c in clause if c.kind == 'cue' and (lo <= c.start < hi or
                       (start <= c.start < min(m.start, predicate.start) and c.value[0] == 'uncertain'))]
            why = f'said of it: "{said}"'
            if call == POSITIVE and any(c.value[0] == 'negation' and lo <= c.start < hi for c in between):
                call, why = NEGATIVE, why + ', denied'
            elif call == POSITIVE and any(c.value[0] == 'uncertain' for c in between):
                call, why = UNCERTAIN, why + ', hedged'
            m.call, m.cue = call, (predicate.start, predicate.end, why)

    def _json_status(self, low: str, start: int, end: int) -> List[_Forced]:
        """{"finding": "edema", "status": "absent"}: the status field gives the call of its object's finding."""
        forced = []
        if '{' not in low[start:end]:
            return forced
        for field in _STATUS_FIELD.finditer(low, start, end):
            value = self._value_at(low, field.end(), end)
            opening = low.rfind('{', start, field.start())
            if value and opening >= 0 and '}' not in low[opening:field.start()]:
                forced.append(_Forced(opening, field.start(), value[0], (*value[1][:2], 'status field')))
        return forced

    def _options(self, low: str, start: int, end: int) -> List[_Forced]:
        """The options of a multiple-choice question ("A) Effusion B) Pneumothorax", "(1) edema, (2) ...") are no
        statements: an option's findings take the writer's answer ("Answer: B": positive; negative when the
        question asks for the exception; uncertain when hedged: "leaning toward C"), a verdict written in the
        option itself ("C) Effusion - no"), or no call. Options are labels in order (a, b, c... or (1), (2)...)
        after a question, or three or more on one line."""
        forced = []
        question = min((at for at in (low.find(word, start, end) for word in _QUESTION_WORDS) if at >= 0),
                       default=None)
        if question is None and ')' not in low[start:end]:
            return forced
        first = start if question is None else question      # options follow their question closely
        for run in _option_runs(_option_labels(low, first, min(end, first + _OPTIONS_REACH))):
            one_line = '\n' not in low[run[0].start:run[-1].start]
            if not ((question is not None and question < run[0].start) or (one_line and len(run) >= 3)):
                continue
            except_ = _EXCEPT.search(low, start, run[-1].start) is not None
            answers = {}
            for answer in _ANSWER.finditer(low, run[-1].end, end):
                hedged = answer.group(1).startswith('lean')
                verdict = (UNCERTAIN if hedged else NEGATIVE if except_ else POSITIVE,
                           (answer.start(), answer.end(), 'the option the writer answers with'))
                answers.setdefault(answer.group(2) or answer.group(3), verdict)
                restated = _OPTION_END.search(low, answer.end(), end)      # "Answer: C) Pneumothorax."
                forced.append(_Forced(answer.end(), restated.start() if restated else end, *verdict))
            for n, label in enumerate(run):
                stop = _OPTION_END.search(low, label.end, run[n + 1].start if n + 1 < len(run) else end)
                stop = stop.start() if stop else run[n + 1].start if n + 1 < len(run) else end
                separator = _separators(low, label.end, stop)
                if separator and self._value_at(low, separator[0][1], stop):
                    continue        # "C) Effusion - no": the option's own verdict
                call, cue = answers.get(label.key, (None, (label.start, label.end, 'an option: not a statement')))
                forced.append(_Forced(label.end, stop, call, cue))
        return forced

    def _structure(self, low: str, start: int, end: int, bold: frozenset) -> List[_Forced]:
        """Calls that a line's layout decides: table columns, leading marks, differential lists, headings (``bold``:
        where lines that were wholly bold start)."""
        forced: List[_Forced] = []
        header: Optional[List[Tuple[int, int]]] = None
        differential: Optional[_ListHeading] = None     # the heading the list items that follow are under
        lines, pos = [], start
        for line in low[start:end].split('\n'):
            lines.append((pos, pos + len(line)))
            pos += len(line) + 1
        for n, (a, b) in enumerate(lines):
            stripped = low[a:b].strip()
            if not stripped:
                differential = None
                continue
            if stripped.startswith('|'):
                cells = _cells(low, a, b)
                if _TABLE_RULE.match(stripped):
                    continue
                if header is None:
                    header = cells
                    continue
                forced += self._table_row(low, header, cells)
                continue
            header = None
            forced += self._inline_topic_keys(low, a, b)
            bullet = _BULLET.match(low, a, b)
            indent = b - a - len(low[a:b].lstrip())
            if differential and bullet.end() > a and bullet.group().strip() and (
                    not differential.nested or indent > differential.indent):
                # a differential's item is uncertain up to its explanation ("1. Pneumonia - most likely, given
                # the dense consolidation"); an item under a value heading takes the value, all of it
                lead = _ITEM_EXPLANATION.search(low, bullet.end(), b) if differential.lead_only else None
                forced.append(_Forced(bullet.end(), lead.start() if lead else b, differential.call, differential.cue))
                continue
            differential = None
            if self._differential_word.search(stripped):
                if stripped[-1] not in '.!?' and self._differential.match(_last_sentence(stripped)):
                    differential = _ListHeading(UNCERTAIN, (a, b, 'item of a differential list'), indent,
                                                bool(bullet.group().strip()), True)
                    continue
                inline = self._inline_differential.search(low, a, b)
                if inline:      # "Differential: pneumonia, atelectasis or edema", "Differential - (1) ...; (2) ..."
                    stop = _SENTENCE_END.search(low, inline.end(), b)
                    forced.append(_Forced(inline.end(), stop.start() if stop else b, UNCERTAIN,
                                          (inline.start(), inline.end(), 'a differential, inline')))
                    continue
            heading = len(stripped) <= 52 and _HEADING_LINE.fullmatch(stripped) and _is_list_next(low, lines, n)
            if heading and self._generic.search(stripped):
                differential = _ListHeading(None, (a, b, 'item under a heading of textbook talk'), indent,
                                            bool(bullet.group().strip()), False)
                continue        # "Typical findings:" over "1. Pneumonia: lobar consolidation"
            label = self._key_label(low, a, b) if heading else None
            if label:
                differential = _ListHeading(label[0], (label[1][0], label[1][1], 'item under a heading naming the '
                                                       'value'), indent, bool(bullet.group().strip()), False)
                continue        # "**Not seen**" over "- Pneumothorax", "Possible findings:" over a list
            topic = (b - bullet.end() <= _TOPIC_LENGTH and self._topic(low, lines, n, bullet.end(), a in bold)) or (
                0 < stripped.find(':') < 45 and self._topic_key(low, bullet.end(), b))
            if topic:
                forced.append(topic)
                continue
            question_mark = low[bullet.end():bullet.end() + 1] in '?[' and _QUESTION_MARK.match(low, bullet.end(), b)
            if question_mark:      # "? Small left effusion" in a checklist whose legend says "? possible"
                forced.append(_Forced(question_mark.end(), _key_end(low, question_mark.end(), b), UNCERTAIN,
                                      (question_mark.start(), question_mark.end(), 'mark')))
                continue
            mark = self._mark.match(low, bullet.end(), b)
            if mark and mark.group().strip():
                key_end = _key_end(low, mark.end(), b)
                if self._negated_key.search(low, mark.end(), key_end) or low[key_end:key_end + 1] in (':', ' '):
                    continue        # "✓ No pneumothorax", "☑ Effusion: none": the mark ticks a statement
                phrase = norm(mark.group())
                forced.append(_Forced(mark.end(), key_end, self._marks[phrase], (mark.start(), mark.end(), 'mark')))
        return forced

    def _topic(self, low: str, lines: List[Tuple[int, int]], n: int, at: int, bold: bool) -> Optional[_Forced]:
        """A heading ("## Pleural effusion"), a key alone on its line ("**2. Pleural Effusion:**") or a bullet with
        sub-bullets ("- Pneumothorax" over "  - Present: no") names a topic, not a finding. It takes the value that
        starts the next line ("- None") or that a sub-line gives ("- **Presence:** Yes"); a heading or key without
        one is dropped, a bullet without one stays a plain mention ("- Pleural effusion" over "  - small, left")."""
        a, b = lines[n]
        key = _TOPIC.match(low, at, b)
        if not key:
            return None
        heading = low[a:b].lstrip()[:1] == '#' or key.group(1) or (bold and _is_list_next(low, lines, n))
        indent = len(low[a:b]) - len(low[a:b].lstrip())
        children = []
        for c, d in itertools.islice(lines, n + 1, None):
            if not low[c:d].strip():
                continue
            if children and len(low[c:d]) - len(low[c:d].lstrip()) <= indent:
                break
            children.append((c, d))
            if len(children) == 6:
                break
        first = low[children[0][0]:children[0][1]] if children else ''
        if not heading and len(first) - len(first.lstrip()) <= indent:
            return None         # a bullet without sub-bullets is a plain mention ("Findings:" / "- Effusion")
        for i, (c, d) in enumerate(children):
            start = _BULLET.match(low, c, d).end()
            label = _PRESENCE_KEY.match(low, start, d)
            value = self._value_at(low, label.end() if label else start, d)
            if value and (label or i == 0):
                return _Forced(at, b, value[0], (value[1][0], value[1][1], 'value under its topic'))
        return _Forced(at, b, None, (a, b, 'heading: a topic, not a statement')) if heading else None

    def _inline_topic_keys(self, low: str, start: int, end: int) -> List[_Forced]:
        """Topic keys that start a later sentence of the line ("Consolidation: none. Pleural effusion: no
        effusion."); the line's first sentence is the line's own (see _structure)."""
        if low.find(':', start, end) < 0:
            return []
        forced = []
        bounds = [m.end() for m in _INLINE_SENTENCE.finditer(low, start, end)] + [end]
        for s, e in zip(bounds, bounds[1:]):
            colon = low.find(':', s, e)
            topic = 0 < colon - s < 45 and self._topic_key(low, _BULLET.match(low, s, e).end(), e)
            if topic:
                forced.append(topic)
        return forced

    def _topic_key(self, low: str, start: int, end: int) -> Optional[_Forced]:
        """A key that names what its line then says of it is a topic, no statement: "Effusion: angles crisp; no
        effusion", "Pneumothorax: looked at both apices - no pleural edge, so no pneumothorax"."""
        key = _LINE_KEY.match(low, start, end)
        if key is None or not self._lexicon.search(low, key.start(1), key.end(1)):
            return None
        named = {}
        for m in self._lexicon.finditer(low, start, end):
            kind, value, _ = self._exact.get(m.group()) or self._entries.lookup(m.group(), _NT)
            if kind == 'cue' and m.start() < key.end(1):
                return None     # "Possible early heart failure: ..." is a statement, no topic
            if kind == 'finding':
                named.setdefault(m.start() < key.end(1), set()).update(value)
        if named.get(True, set()) & named.get(False, set()):
            return _Forced(start, key.end(1), None, (start, key.end(1), 'a key naming the topic of its line'))
        return None

    def _table_row(self, low: str, header: List[Tuple[int, int]], cells: List[Tuple[int, int]]) -> List[_Forced]:
        """The row's first cell takes the call of a cell that holds only a mark under a header that is a value
        ("| | Present | Absent |" with a ✓), or of a cell that holds only a value ("| Effusion | angles sharp |
        Absent |": the value column need not follow the key)."""
        if len(cells) < 2:
            return []
        key = cells[0]
        out = []
        for (a, b), (ha, hb) in zip(cells[1:], header[1:] + [(0, 0)] * len(cells)):     # rows may outrun it
            cell, head = norm(low[a:b]).strip(' ?'), norm(low[ha:hb]).strip(' ?')
            if cell and head in self._values and (cell in self._marks or cell == 'x' or
                                                  self._values.get(cell) == POSITIVE):
                call = self._values[head]
                if self._values.get(cell) == NEGATIVE:     # a ✗ under "Present"
                    call = NEGATIVE
                out.append(_Forced(key[0], key[1], call, (ha, hb, f'table column "{low[ha:hb].strip()}"')))
            else:       # "| No |", "| Yes (1 cm, upper zone) |", "| 否 No |"
                value = self._value_at(low, a, b)
                if value and not _WORD_CHAR.match(low, value[1][1]) and \
                        not any(c.isalnum() for c in low[value[1][1]:b].split('(')[0]):
                    out.append(_Forced(key[0], key[1], value[0], (a, b, 'table cell')))
        # several cells of one row ("| Effusion | Yes (right) | No (left) |"): the highest call, as across a text
        return [max(out, key=lambda f: RANK[f.call])] if out else []

    # ---- mentions
    def _mentions(self, low: str, bounds: List[int]) -> Tuple[List[List[Mention]], bool]:
        """The mentions of each sentence (``bounds`` as from sentence_bounds), in order, and whether a generic cue
        is among them. Each pattern runs once over the whole region (far fewer calls than once per sentence); a
        statement match that runs across two sentences is none, and the sentences it touched are searched again one
        by one."""
        start, end = bounds[0], bounds[-1]
        found: List[List[Mention]] = [[] for _ in bounds[:-1]]

        def sentence(at: int) -> int:
            return min(bisect_right(bounds, at) - 1, len(found) - 1)
        for statement in self._statements:
            again = set()
            matches = []
            for m in statement.pattern.finditer(low, start, end):
                if m.start() and _WORD_CHAR.match(low, m.start() - 1):
                    continue        # inside a word: "abnormal heart" is no "normal heart"
                i = sentence(m.start())
                if m.end() <= bounds[i + 1]:
                    matches.append((i, m))
                else:
                    again.update(range(i, sentence(m.end() - 1) + 1))
            for i in sorted(again):
                matches += [(i, m) for m in statement.pattern.finditer(low, bounds[i], bounds[i + 1])
                            if not (m.start() and _WORD_CHAR.match(low, m.start() - 1))]
            for i, m in matches:
                call = statement.call
                if call == POSITIVE and _INNER_NOT.search(m.group(0)):
                    call = NEGATIVE
                found[i].append(Mention(m.start(), m.end(), 'statement', statement.observations, call,
                                        (m.start(), m.end(), 'statement')))
        for m in INDETERMINATE.finditer(low, start, end):
            i = sentence(m.start())
            if m.end() <= bounds[i + 1]:
                found[i].append(Mention(m.start(), m.end(), 'cue', ('uncertain', 'clause', 'indeterminate')))
        claimed = [list(f) for f in found]      # statements and indeterminate cues win over the words inside them
        subjects, generic = [], False
        last, exact, search_verbs = len(found) - 1, self._exact, self._search_verbs
        for m in self._lexicon.finditer(low, start, end):
            a, b = m.span()
            i = min(bisect_right(bounds, a) - 1, last) if last else 0
            if claimed[i] and any(f.start < b and a < f.end for f in claimed[i]):
                continue
            phrase = m.group()
            kind, value, call = exact.get(phrase) or self._entries.lookup(phrase, _NT)
            needs_for = search_verbs.get(phrase) if kind == 'search' or kind == 'cue' else None
            if needs_for is not None:       # "looked for", "reviewed both bases for", "rule out"
                then_for = _FOR_AFTER.match(low, b) if needs_for else None
                if not needs_for or then_for:
                    found[i].append(Mention(a, then_for.end() if then_for else b, 'search'))
                if kind == 'search':
                    continue
            found[i].append(Mention(a, b, kind, value, call))
            if kind == 'subject':
                subjects.append((i, a, b))
            elif kind == 'cue' and value[0] == 'generic':
                generic = True
        seen = set()
        for i, a, b in subjects:    # what is said of a subject, near it: read beside the lexicon, claiming nothing
            for m in self._predicate.finditer(low, max(bounds[i], a - _PREDICATE_BEFORE),
                                              min(bounds[i + 1], b + _PREDICATE_AFTER)):
                if m.start() not in seen:
                    seen.add(m.start())
                    found[i].append(Mention(m.start(), m.end(), 'predicate', (), self._predicates.lookup(m.group())))
        for f in found:
            f.sort(key=lambda m: m.start)
        return found, generic

    def _value_at(self, low: str, at: int, end: int) -> Optional[Tuple[str, Tuple[int, int, str]]]:
        """(call, cue) of a value word that starts at ``at`` ("none", "✗", "yes", "possible"), else None."""
        if at < end and not low[at].isalpha() or low[at:at + 1] > '\u3000':     # "~70% likely", "无 (none)"
            at = _VALUE_LEAD.match(low, at, end).end()
        if self._pseudo.match(low, at, end):
            return None
        m = self._value.match(low, at, end)
        if not m:
            return None
        return self._values[norm(m.group())], (m.start(), m.end(), 'value')

    def _key_values(self, low: str, start: int, end: int, mentions: List[Mention]) -> None:
        """"Pleural effusion: none", "| Cardiomegaly | No |", '"edema": false', "Consolidation ✗"."""
        findings = [m for m in mentions if m.kind in ('finding', 'other', 'subject') and not m.forced]
        if not findings:
            return
        key_start = start
        separators = _separators(low, start, end)
        for n, sep in enumerate(separators):
            if low[sep[0]] == '"':     # a JSON key is the quoted string before its colon
                key_start = max(key_start, low.rfind('"', key_start, sep[0]) + 1)
            value = self._value_at(low, sep[1], end)
            keys = [m for m in findings if key_start <= m.start and m.end <= sep[0] + 1]
            if value and any(f.start > sep[1] for f in findings if f.kind == 'finding'):
                keys = [m for m in keys if m.kind != 'subject']      # "Pleura: no effusion" denies the effusion
            if value and keys and len(words(low[key_start:sep[0]])) <= 8:
                for m in keys:
                    m.call, m.cue, m.forced = value[0], value[1], True
                for c in mentions:      # the value's words are spent: "Pneumonia: likely (patchy opacity)",
                    if value[1][0] <= c.start < value[1][1]:        # "Pleura: not thickened"
                        if c.kind == 'cue':
                            c.kind = 'spent'
                        elif c.kind == 'other':
                            c.call, c.forced = None, True
            label = self._key_label(low, key_start, sep[0])
            if label and not keys:      # "Negative findings: pneumothorax, effusion", '"absent": ["edema"]'
                stop = _VALUE_END.search(low, sep[1], separators[n + 1][0] if n + 1 < len(separators) else end)
                for m in findings:
                    if sep[1] <= m.start and (stop is None or m.end <= stop.start()) and not m.forced:
                        m.call, m.cue, m.forced = label[0], label[1], True
            key_start = sep[1]
        for m in findings:
            if m.forced:
                continue
            mark = self._mark.match(low, m.end, end)
            if mark:
                for f in listed(low, findings, findings.index(m), -1):
                    f.call, f.cue, f.forced = self._marks[norm(mark.group())], (mark.start(), mark.end(), 'mark'), True

    def _key_label(self, low: str, start: int, end: int) -> Optional[Tuple[str, Tuple[int, int, str]]]:
        """(call, cue) when the key ``low[start:end]`` is itself a value ("Absent", "negative_findings",
        "Possible diagnoses"), else None."""
        key = _KEY_NOISE.sub(' ', low[start:end]).strip()
        if not key or len(key) > 40:
            return None
        m = self._value.match(key)
        if m is None:       # "checked and absent", "reviewed and not present": the value closes the key
            lead = _KEY_LEAD.match(key)
            m = self._value.match(key, lead.end()) if lead else None
        if not m or _KEY_NOUNS.fullmatch(key[m.end():].strip()) is None:
            return None
        at = low.index(m.group(), start, end) if m.group() in low[start:end] else start
        return self._values[norm(m.group())], (at, at + len(m.group()), 'key naming the value')

    def _answer(self, low: str, at: int) -> Optional[Tuple[str, Tuple[int, int, str]]]:
        """The value that answers an echoed question ("Is there a pneumothorax? No."), if any."""
        prefix = _QUESTION_PREFIX.match(low, at)
        value = self._value_at(low, prefix.end(), min(len(low), prefix.end() + 80))
        return (value[0], (value[1][0], value[1][1], 'answer to the question')) if value else None

    # ---- scope within a clause
    def _clause(self, low: str, mentions: List[Mention], start: int, end: int,
                previous: Optional[Mention]) -> Optional[Mention]:
        """Decide the call of each finding mention of one clause that no structure decided; a clause with a cue
        and an anaphor but no finding gives a mention of ``previous`` (the last finding before it)."""
        free = [m for m in mentions if m.kind in ('finding', 'other') and not m.forced]
        cues = [m for m in mentions if m.kind == 'cue']
        if not free:
            cue = next((c for c in cues if c.value[0] in ('negation', 'uncertain')), None)
            anaphor = _ANAPHOR.search(low, start, end)
            if cue is None or anaphor is None or previous is None or any(m.kind == 'statement' for m in mentions):
                return None
            return Mention(anaphor.start(), anaphor.end(), 'finding', previous.value,
                           NEGATIVE if cue.value[0] == 'negation' else UNCERTAIN,
                           (cue.start, cue.end, f'{cue.value[2]}, on "{low[anaphor.start():anaphor.end()]}"'))
        hypotheticals = [c for c in cues if c.value[0] == 'hypothetical']
        if hypotheticals and not any(c.value[1] == 'clause' and c.value[0] == 'uncertain' for c in cues):
            # ("cannot tell whether" is indeterminate, not hypothetical.) A hypothetical reaches the findings of
            # its part of the clause, between commas: "although the question mentions pneumonia, I don't see
            # consolidation" still denies the consolidation; a key before a colon is in the part ("Pneumothorax:
            # look for a pleural line").
            for cue in hypotheticals:
                lo = max(low.rfind(',', start, cue.start), start)
                stop = _CLAUSE_PART.search(low, cue.end, end)     # "So for your question: there is no ..."
                hi = stop.start() if stop else end
                if low[cue.end:cue.end + 4].lstrip(' *_').startswith(':'):
                    hi = end        # "What's asked: edema and a big heart": the question's own words
                hedges = [c.end for c in cues if c.value[0] == 'uncertain' and lo <= c.start and c.end <= cue.start]
                for f in free:      # "correlation for pneumonia is recommended": the hedge stays
                    if lo <= f.start < hi and not any(h <= f.start for h in hedges):
                        f.call, f.cue = None, (cue.start, cue.end, 'hypothetical: not a mention')
            free = [f for f in free if f.cue is None or f.cue[2] != 'hypothetical: not a mention']
            if not free:
                return None
        decided: Dict[int, Tuple[str, Tuple[int, int, str]]] = {}      # finding -> (call, cue)

        def mark(indices, call, why):
            for i in indices:
                if i not in decided or call == NEGATIVE:        # a denial wins over a hedge in its window
                    decided[i] = (call, (cue.start, cue.end, why))
        scoped = [c for c in cues if c.value[0] in ('negation', 'uncertain')]
        if scoped:
            starts, ends = [f.start for f in free], [f.end for f in free]
            index = {id(f): i for i, f in enumerate(free)}
            negations = [c for c in cues if c.value[:2] == ('negation', 'pre')]
            negation_ends = [c.end for c in negations]
            denials = [c.start for c in cues if c.value[0] == 'negation']
        for cue in scoped:      # (pseudo-negations do nothing; hypotheticals and generics are done)
            kind, direction, why = cue.value
            after = range(bisect_left(starts, cue.end), len(free))
            before = range(0, bisect_right(ends, cue.start))
            if direction == 'both' or (direction == 'post' and not before):
                direction = 'pre' if after else 'post'      # "there is not any pneumothorax", "is likely a"
            call = NEGATIVE if kind == 'negation' else UNCERTAIN
            if kind == 'uncertain' and self._denied(low, cue, negations, negation_ends):
                call, why = NEGATIVE, why + ' inside a negation'     # "no findings to suggest pneumonia"
            if direction == 'clause':       # "I can't separate X from Y": from its comma-part on
                part = max(low.rfind(',', start, cue.start), low.rfind(':', start, cue.start), start)
                mark([i for i in range(len(free)) if free[i].start >= part], call, why)
            elif direction == 'around':     # the finding on each side of "versus"
                mark(([before[-1]] if before else []) + ([after[0]] if after else []), call, why)
            elif direction == 'pre' and after:
                if kind == 'negation':
                    at = free[after[0]].start
                    gloss = 4 if low[max(0, at - 3):at].rstrip().endswith('(') else 0
                    if len(words(low[cue.end:at])) < self._window + gloss:
                        mark([index[id(f)] for f in _own_predicates(low, listed(low, free, after[0], 1))], call,
                             why)
                else:
                    at = bisect_left(denials, cue.end)
                    stop = denials[at] if at < len(denials) else end
                    reason = _REASON.search(low, cue.end, stop)     # "more like edema than pneumonia: the
                    stop = reason.start() if reason else stop       # opacities", "possible, given the opacity"
                    mark([i for i in after if free[i].start < stop], call, why)
            elif direction == 'post' and before:
                last = free[before[-1]]
                if len(words(low[last.end:cue.start])) < self._window and ' with ' not in low[last.end:cue.start]:
                    if kind == 'negation' and any(c.value[0] == 'negation' and last.end <= c.start < cue.start
                                                  for c in cues):
                        call, why = UNCERTAIN, why + ' after a negation: a hedge'   # "cannot be ... ruled out"
                    mark([index[id(f)] for f in listed(low, free, before[-1], -1)], call, why)
        for i, (a, b) in enumerate(zip(free, free[1:])):
            if _OR.match(low[a.end:b.start]) and i not in decided and i + 1 not in decided:
                decided[i] = decided[i + 1] = (UNCERTAIN, (a.end, b.start, '"or" between two findings'))
        for i, f in enumerate(free):
            if i in decided:
                f.call, f.cue = decided[i]
            elif f.call == UNCERTAIN:
                f.cue = (f.start, f.end, 'uncertain by itself (vocabulary "uncertain" list)')

    def _denied(self, low: str, cue: Mention, negations: Sequence[Mention], ends: Sequence[int]) -> bool:
        """An uncertainty cue inside a pre-negation's window is denied with it ("does not appear to be ...");
        ``negations``: the clause's pre-negation cues, in order, and their ``ends`` (the nearest one decides)."""
        at = bisect_right(ends, cue.start) - 1
        return at >= 0 and len(words(low[negations[at].end:cue.start])) < self._window


def _last_sentence(line: str) -> str:
    """The last sentence of a line ("... in the right lower zone. My ranked differential:")."""
    body = line.rstrip('.!? \t')
    return line[max(body.rfind('. '), body.rfind('! '), body.rfind('? ')) + 1:]


def _separators(low: str, start: int, end: int) -> List[Tuple[int, int]]:
    """(start, end) of each key-value separator of ``low[start:end]``, with the blanks around it and a quote before
    and after."""
    out, taken = [], start
    for core in _SEPARATOR.finditer(low, start, end):
        a, b = core.span()
        if a < taken:
            continue
        while a > taken and low[a - 1] in _BLANKS:
            a -= 1
        if a > taken and low[a - 1] == '"':
            a -= 1
        while b < end and low[b] in _BLANKS:
            b += 1
        if b < end and low[b] == '"':
            b += 1
        taken = b
        out.append((a, b))
    return out


def _starts_a_sentence(low: str, at: int) -> bool:
    """Whether only blanks stand between ``at`` and the start of the text, a new line or a sentence's end."""
    before = low[max(0, at - 40):at].rstrip(' \t#*_')
    return not before or before[-1] in '.!?\n'


def _tentative(low: str, start: int, mentions: List[Mention]) -> bool:
    """A sentence that ends with "?" but is a hedged statement, not a question: "maybe a tiny pneumothorax?"."""
    return not _QUESTION_START.match(low, start) and any(
        m.kind == 'cue' and m.value[0] == 'uncertain' and m.value[1] != 'clause' for m in mentions)


def _option_labels(low: str, start: int, end: int) -> Iterator[_Label]:
    """Option labels: "a) " or "(a) " not inside a word, "(1) ", and "a. " at the start of a line."""
    for m in _OPTION_LABEL.finditer(low, start, end):
        key, closing, at = m.group(1), low[m.end() - 1], m.start()
        before = low[at - 1] if at else '\n'
        if closing == ')':
            if before == '(':
                yield _Label(at - 1, m.end(), key)
            elif key.isalpha() and not (before.isalnum() or before == '_'):
                yield _Label(at, m.end(), key)
        elif key.isalpha() and not low[low.rfind('\n', 0, at) + 1:at].strip(' \t'):
            yield _Label(at, m.end(), key)


def _option_runs(labels: Iterable[_Label]) -> List[List[_Label]]:
    """Runs of at least two option labels in order: a, b, c... or 1, 2, 3..."""
    runs, run = [], []
    for label in labels:
        if run and ord(label.key) == ord(run[-1].key) + 1:
            run.append(label)
            continue
        if len(run) >= 2:
            runs.append(run)
        run = [label] if label.key in ('a', '1') else []
    return runs + [run] if len(run) >= 2 else runs


def _is_list_next(low: str, lines: List[Tuple[int, int]], n: int) -> bool:
    """Whether the next non-blank line after line ``n`` is a list item."""
    for i in range(n + 1, len(lines)):
        c, d = lines[i]
        if low[c:d].strip():
            return bool(_BULLET.match(low, c, d).group().strip())
    return False


def _leads(low: str, predicate: Mention, finding_starts: List[int]) -> bool:
    """Whether a finding follows the predicate within three words: "large [left pleural] effusion"."""
    at = bisect_left(finding_starts, predicate.end)
    if at == len(finding_starts):
        return False
    between = low[predicate.end:finding_starts[at]]
    return len(words(between)) < 3 and ',' not in between


def _covered(spans: List[Mention]):
    """A test of whether a mention overlaps one of ``spans`` (in text order, not overlapping each other)."""
    starts = [s.start for s in spans]

    def inside(m: Mention) -> bool:
        at = bisect_right(starts, m.start) - 1
        return (at >= 0 and spans[at].end > m.start) or (at + 1 < len(spans) and spans[at + 1].start < m.end)
    return inside


def _drop(mentions: List[Mention], start: int, end: int, cue: Tuple[int, int, str]) -> None:
    """The naming mentions in ``start:end`` say nothing of this image."""
    for m in mentions:
        if m.kind in _NAMING and not m.forced and start <= m.start < end:
            m.call, m.forced, m.cue = None, True, cue
    mentions.append(Mention(start, end, 'dropped'))


def _decision(text: str, bounds: List[int], m: Mention) -> Decision:
    """The Decision that mention ``m`` makes, in the words of the original ``text``."""
    at = min(max(bisect_right(bounds, m.start) - 1, 0), len(bounds) - 2)
    sentence = text[bounds[at]:bounds[at + 1]]
    cue, rule = ('', 'plain mention') if m.cue is None else (text[m.cue[0]:m.cue[1]], m.cue[2])
    return Decision(m.call, text[m.start:m.end], cue, rule, ' '.join(sentence.split()))


def _ruling_out(deciding: Dict[str, Optional[Mention]], mentions: List[Mention]) -> Optional[Tuple[str, Mention]]:
    """(observation, mention) that makes No Finding negative: another observation than Support Devices positive
    or uncertain, else an other finding named (observation ''); None when there is none."""
    for observation, m in deciding.items():
        if observation not in (NO_FINDING, DEVICES) and m is not None and m.call in (POSITIVE, UNCERTAIN):
            return observation, m
    other = next((m for m in mentions if m.kind == 'other' and m.call in (POSITIVE, UNCERTAIN)), None)
    return ('', other) if other else None


def _says_something(deciding: Dict[str, Optional[Mention]], mentions: List[Mention]) -> bool:
    """Whether the text says anything about this image: an observation called, or a word of a normal study
    ("clear", "unremarkable") outside textbook talk, refusals and questions."""
    return any(m is not None for m in deciding.values()) or any(m.kind == 'normal' and m.call for m in mentions)


def _no_finding(text: str, bounds: List[int], deciding: Dict[str, Optional[Mention]],
                mentions: List[Mention]) -> Decision:
    found = _ruling_out(deciding, mentions)
    if found is None:
        if not _says_something(deciding, mentions):
            return Decision(None, '', '', 'nothing said about the image (refusal, textbook talk, a question)')
        return Decision(POSITIVE, '', '', 'no observation but Support Devices is positive or uncertain')
    observation, m = found
    d = _decision(text, bounds, m)
    if observation:
        return Decision(NEGATIVE, d.span, observation, 'another observation is positive or uncertain', d.sentence)
    return Decision(NEGATIVE, d.span, d.span, 'an other finding is named', d.sentence)


def _own_predicates(low: str, group: List[Mention]) -> List[Mention]:
    """The list ``group`` up to an item joined by a bare comma that has its own affirmed predicate."""
    for i in range(1, len(group)):
        if _COMMA_ONLY.match(low[group[i - 1].end:group[i].start]) and _AFFIRMED.match(low, group[i].end):
            return group[:i]
    return group


def _as_text(text) -> str:
    if text is None:
        return ''
    if isinstance(text, (bytes, bytearray)):
        return bytes(text).decode('utf-8', errors='replace')
    return str(text)


def _prepare(text: str) -> str:
    """Lower case, emphasis and underscores as spaces, straight quotes; the same length as ``text`` so that
    spans found here point into the original."""
    low = text.lower()
    if len(low) != len(text):       # a few characters lower-case to two ("İ"): keep those as they are
        low = ''.join(c if len(c.lower()) != 1 else c.lower() for c in text)
    if '.*' in low or '._' in low:      # "**Heart.** Normal size.", "_Tubes/lines._ None.": the dot is a colon
        low = _EMPHASIZED_KEY.sub(lambda m: m.group(1) + ':' + m.group(2), low)
    for char, replacement in _EMPHASIS:     # str.replace per character: far faster than str.translate
        if char in low:
            low = low.replace(char, replacement)
    return low


def _cells(low: str, start: int, end: int) -> List[Tuple[int, int]]:
    """(start, end) of each cell of a markdown table row; the outer pipes open and close the row."""
    bars = [i for i in range(start, end) if low[i] == '|']
    edges = ([start - 1] if low[start:bars[0]].strip() else []) + bars
    if low[bars[-1] + 1:end].strip():
        edges.append(end)
    return [(a + 1, b) for a, b in zip(edges, edges[1:])]


def _key_end(low: str, start: int, end: int) -> int:
    """Where the key after a leading mark ends: at a parenthesis, a separator or the end of the line."""
    m = re.compile(r'[(:\[]|\s[-–—]\s').search(low, start, end)
    return m.start() if m else end


def read_findings(text, vocabulary: Optional[Vocabulary] = None) -> Dict[str, Optional[str]]:
    """observation -> positive / negative / uncertain / None with the built-in vocabulary or ``vocabulary``."""
    return reader(vocabulary).read(text)


def explain(text, vocabulary: Optional[Vocabulary] = None) -> Dict[str, Decision]:
    return reader(vocabulary).explain(text)


_READERS: Dict[int, Tuple[Vocabulary, FindingsReader]] = {}


def reader(vocabulary: Optional[Vocabulary] = None) -> FindingsReader:
    """The reader of ``vocabulary`` (default: the built-in one), built once per vocabulary (kept alive with it,
    so that its id is not reused)."""
    vocabulary = vocabulary or default_vocabulary()
    if id(vocabulary) not in _READERS:
        _READERS[id(vocabulary)] = (vocabulary, FindingsReader(vocabulary))
    return _READERS[id(vocabulary)][1]


__all__ = ['CALLS', 'Decision', 'FindingsReader', 'NO_FINDING', 'explain', 'read_findings', 'reader']
