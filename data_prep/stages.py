"""Normalised study -> the rows of the three stages. Pure functions; the CLI does the I/O.

* SFT:       one row per (study, teacher trace).
* Consensus: one ``swift infer`` request per study: the image, the question and every teacher's
             trace, anonymised as Source 1..N in a seeded random order, inside a prompt template.
* APO:       chosen = the consensus answer, rejected_response = the teachers' traces, rejected_sources
             = their names.
A study's split (train or eval) depends only on its subject id and the seed, so a patient never
lands on both sides, and every stage puts the same patients in the same split.
"""
import hashlib
import random
import string
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from datafiles import DataError

from .records import Study, Trace
from .text import drop_reason, is_refusal, normalise_whitespace

TRAIN, EVAL = 'train', 'eval'
TEMPLATE_FIELDS = {'question', 'sources', 'num_sources'}


def split_of(subject_id: Optional[str], seed: int, eval_fraction: float) -> str:
    """Deterministic: the subject's hash under the seed, compared with the fraction."""
    if eval_fraction <= 0:
        return TRAIN
    digest = hashlib.sha256(f'{seed}:{subject_id}'.encode()).digest()
    return EVAL if int.from_bytes(digest[:8], 'big') / 2**64 < eval_fraction else TRAIN


def user_turn(study: Study, text: str) -> Dict[str, str]:
    return {'role': 'user', 'content': '<image>' * len(study.head.images) + text}


def kept_traces(study: Study, drop_refusals: bool) -> Tuple[List[Trace], List[str]]:
    """The traces worth using, and the drop reason of each of the others."""
    kept, dropped = [], []
    for trace in study.traces:
        drop, reason = drop_reason(trace.text, drop_refusals)
        (dropped.append(reason) if drop else kept.append(trace))
    return kept, dropped


def sft_rows(study: Study, traces: Sequence[Trace]) -> List[Dict]:
    return [{'messages': [user_turn(study, study.head.question), {'role': 'assistant', 'content': trace.text}],
             'images': list(study.head.images), 'study_id': study.head.study_id, 'teacher': trace.teacher}
            for trace in traces]


@dataclass(frozen=True)
class ConsensusTemplate:
    text: str
    origin: str

    @classmethod
    def parse(cls, text: str, origin: str) -> 'ConsensusTemplate':
        fields = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
        unknown, missing = fields - TEMPLATE_FIELDS, {'question', 'sources'} - fields
        if unknown or missing:
            raise DataError(f'{origin}: the consensus prompt template must contain {{question}} and {{sources}} '
                            f'and may contain {{num_sources}}; ' +
                            (f'unknown placeholder(s) {sorted(unknown)}' if unknown else f'missing {sorted(missing)}') +
                            ' (write literal braces as {{ and }})')
        if '<image>' in text:
            raise DataError(f'{origin}: leave <image> out of the template; one tag per image is put before it')
        return cls(text, origin)

    def render(self, question: str, traces: Sequence[Trace]) -> str:
        sources = '\n\n'.join(f'Source {i}:\n{trace.text.strip()}' for i, trace in enumerate(traces, start=1))
        return self.text.format(question=question, sources=sources, num_sources=len(traces)).strip()


def consensus_request(study: Study, traces: Sequence[Trace], template: ConsensusTemplate, seed: int) -> Dict:
    """The request for one study; the teachers are shuffled (seeded per study) and anonymised."""
    order = list(traces)
    random.Random(f'{seed}:{study.head.study_id}').shuffle(order)
    return {'messages': [user_turn(study, template.render(study.head.question, order))],
            'images': list(study.head.images), 'study_id': study.head.study_id}


def apo_row(study: Study, consensus: str, drop_refusals: bool) -> Tuple[Optional[Dict], List[str]]:
    """The preference row and the reason each teacher trace was left out; None when no rejected answer is left."""
    chosen = consensus.strip()
    kept, dropped = kept_traces(study, drop_refusals)
    rejected = []
    for trace in kept:
        if normalise_whitespace(trace.text) == normalise_whitespace(chosen):
            dropped.append('identical to the consensus')
        else:
            rejected.append(trace)
    if not rejected:
        return None, dropped
    return {'messages': [user_turn(study, study.head.question), {'role': 'assistant', 'content': chosen}],
            'images': list(study.head.images), 'rejected_response': [t.text for t in rejected],
            'rejected_sources': [t.teacher for t in rejected], 'study_id': study.head.study_id}, dropped


def consensus_problem(answer, drop_refusals: bool) -> Optional[str]:
    if not isinstance(answer, str) or not answer.strip():
        return 'consensus answer empty'
    if drop_refusals and is_refusal(answer):
        return 'consensus answer is a refusal'
    return None
