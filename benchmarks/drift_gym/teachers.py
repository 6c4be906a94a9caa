"""Teachers with known drift: who calls which finding how often, and how each one writes.

Each teacher has, per finding, a sensitivity and a specificity: ``0.95 - under * drift`` and
``0.95 - over * drift``, where ``under`` / ``over`` (below) say how far it under- or over-calls the finding at full
drift and ``drift`` (0..1) is the configuration's severity. At drift 1 the spread between the best and the worst
teacher reaches about 70 points of accuracy on Consolidation (Moonshot misses most and invents some), as the paper
reports for Consolidation and Edema. Teachers also refuse, write generic text, hedge ("possible ..."), leave a
finding they think absent unmentioned, and each writes in its own style (report prose, key: value lines, a
differential, a ``<think>`` block, numbered steps), mostly its own and sometimes another's.

A call is drawn from one uniform number per (study, teacher, finding), so raising the drift only ever flips calls
from right to wrong, and the first K teachers of a 7-teacher set write the same traces as in a K-teacher set.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .films import Finding, draw_details

BASE_ACCURACY = 0.95
STYLES = ('report', 'keyvalue', 'differential', 'think', 'steps')


@dataclass(frozen=True)
class Teacher:
    name: str
    style: str
    drift: Dict[str, Tuple[float, float]]   # finding -> (under, over) at full drift
    refusal: float = 0.0                     # share of traces that refuse
    generic: float = 0.0                     # share of traces with no findings at all
    hedge: float = 0.0                       # share of positive calls written as "possible ..."
    omit: float = 0.0                        # share of negative calls left unmentioned
    own_style: float = 0.8                   # share of traces in its own style

    def sensitivity(self, observation: str, drift: float) -> float:
        return BASE_ACCURACY - self.drift.get(observation, (0.0, 0.0))[0] * drift

    def specificity(self, observation: str, drift: float) -> float:
        return BASE_ACCURACY - self.drift.get(observation, (0.0, 0.0))[1] * drift


# Names are the paper's teachers; the profiles are invented (loosely after the per-finding spreads of its Table 1).
TEACHERS: Tuple[Teacher, ...] = (
    Teacher('GPT-5', 'report', {'Consolidation': (0.1, 0.1), 'Pleural Effusion': (0.0, 0.15),
                                'Pneumothorax': (0.1, 0.0), 'Cardiomegaly': (0.0, 0.1)}, hedge=0.1, omit=0.05),
    Teacher('Sonnet-4', 'steps', {'Pneumothorax': (0.75, 0.0), 'Cardiomegaly': (0.0, 0.4)}, hedge=0.2, omit=0.1),
    Teacher('Gemini-2.5', 'keyvalue', {'Consolidation': (0.7, 0.0), 'Pleural Effusion': (0.0, 0.3)},
            generic=0.08),
    Teacher('Qwen-VL-Max', 'differential', {'Consolidation': (0.0, 0.45), 'Support Devices': (0.3, 0.0)},
            hedge=0.15, omit=0.15),
    Teacher('Grok-4', 'think', {'Pleural Effusion': (0.5, 0.0), 'Consolidation': (0.0, 0.3),
                                'Cardiomegaly': (0.4, 0.0)}, refusal=0.05),
    Teacher('GLM-4.5V', 'keyvalue', {'Cardiomegaly': (0.0, 0.55), 'Pneumothorax': (0.0, 0.2)}, omit=0.05),
    Teacher('Moonshot', 'report', {'Consolidation': (0.75, 0.7), 'Pleural Effusion': (0.0, 0.5),
                                   'Support Devices': (0.0, 0.3)}, refusal=0.1, generic=0.05, omit=0.2),
)

REFUSALS = (
    "I'm sorry, but I can't provide a diagnostic interpretation of medical images. Please consult a radiologist.",
    "I am unable to interpret this radiograph. A qualified radiologist should review the image.",
)
GENERIC = (
    "The chest radiograph has been reviewed. Findings should be correlated with the clinical presentation and "
    "prior imaging. Further evaluation may be considered if symptoms persist.",
    "This is a frontal chest radiograph. Interpretation depends on the clinical context; comparison with prior "
    "studies is recommended.",
)


@dataclass(frozen=True)
class Call:
    """What a teacher says about one finding: present or not, hedged, with which details, or nothing."""
    present: bool
    details: Optional[Finding] = None
    hedged: bool = False
    mentioned: bool = True


@dataclass
class Trace:
    teacher: str
    text: str
    kind: str                                   # 'answer', 'refusal' or 'generic'
    calls: Dict[str, Call] = field(default_factory=dict)   # empty unless kind == 'answer'

    def says(self, observation: str) -> Optional[bool]:
        """The teacher's call (True / False), None when it gave none (refusal, generic text)."""
        call = self.calls.get(observation)
        return None if call is None else call.present


def draw_calls(teacher: Teacher, truth: Dict[str, Optional[Finding]], drift: float,
               rng: np.random.Generator) -> Dict[str, Call]:
    """The teacher's calls on a study whose findings are ``truth`` (observation -> details or None)."""
    calls = {}
    for observation, finding in truth.items():
        u, hedge_u, omit_u = rng.random(3)
        detail_rng = np.random.default_rng(rng.integers(2 ** 32))
        if finding is not None:
            present = bool(u < teacher.sensitivity(observation, drift))
            details = finding
        else:
            present = bool(u >= teacher.specificity(observation, drift))
            details = draw_details(observation, detail_rng)   # what it imagines
        calls[observation] = Call(present=present, details=details if present else None,
                                  hedged=bool(present and hedge_u < teacher.hedge),
                                  mentioned=bool(present or omit_u >= teacher.omit))
    return calls


def write_trace(teacher: Teacher, question_order: Sequence[str], truth: Dict[str, Optional[Finding]], drift: float,
                rng: np.random.Generator) -> Trace:
    """One teacher's trace for one study."""
    kind_u, style_u = rng.random(2)
    choice = int(rng.integers(2))
    calls = draw_calls(teacher, truth, drift, rng)   # drawn even for a refusal, so other draws do not shift
    if kind_u < teacher.refusal:
        return Trace(teacher.name, REFUSALS[choice], 'refusal')
    if kind_u < teacher.refusal + teacher.generic:
        return Trace(teacher.name, GENERIC[choice], 'generic')
    if style_u < teacher.own_style:
        style = teacher.style
    else:
        style = STYLES[int(rng.integers(len(STYLES)))]
    return Trace(teacher.name, WRITERS[style](question_order, calls, rng), 'answer', calls)


# -- how findings are written ------------------------------------------------------------------------------------
NAMES = {'Consolidation': 'consolidation', 'Pleural Effusion': 'pleural effusion', 'Pneumothorax': 'pneumothorax',
         'Cardiomegaly': 'cardiomegaly', 'Support Devices': 'support devices'}


def _positive(observation: str, d: Finding, rng: np.random.Generator) -> str:
    pick = int(rng.integers(2))
    if observation == 'Consolidation':
        return (f'consolidation in the {d.side} {d.zone} zone',
                f'a focal opacity in the {d.side} {d.zone} zone consistent with consolidation')[pick]
    if observation == 'Pleural Effusion':
        return (f'a {d.size} {d.side} pleural effusion with a meniscus',
                f'blunting of the {d.side} costophrenic angle from a {d.size} pleural effusion')[pick]
    if observation == 'Pneumothorax':
        return (f'a {d.size} {d.side} apical pneumothorax',
                f'a pleural line at the {d.side} apex with no lung markings beyond it, a {d.size} pneumothorax')[pick]
    if observation == 'Cardiomegaly':
        return ('cardiomegaly, the heart is enlarged',
                f'a {d.size} enlargement of the cardiac silhouette (cardiomegaly)')[pick]
    return (f'an {d.device} is in place' if d.device == 'endotracheal tube' else f'a {d.device} is in place',
            f'a support device ({d.device}) is seen')[pick]


def _negative(observation: str, rng: np.random.Generator) -> str:
    options = {
        'Consolidation': ('no focal consolidation', 'no consolidation'),
        'Pleural Effusion': ('no pleural effusion', 'no effusion'),
        'Pneumothorax': ('no pneumothorax', 'no pneumothorax is seen'),
        'Cardiomegaly': ('heart size is normal, no cardiomegaly', 'no cardiomegaly'),
        'Support Devices': ('no lines or tubes', 'no support devices'),
    }[observation]
    return options[int(rng.integers(2))]


def _phrase(observation: str, call: Call, rng: np.random.Generator) -> str:
    if not call.present:
        return _negative(observation, rng)
    text = _positive(observation, call.details, rng)
    return f'possible {text}' if call.hedged else text


def _said(order: Sequence[str], calls: Dict[str, Call]) -> List[str]:
    return [o for o in order if calls[o].mentioned]


def _impression(order: Sequence[str], calls: Dict[str, Call]) -> str:
    positives = [NAMES[o] for o in order if calls[o].present]
    if not positives:
        return 'no acute cardiopulmonary abnormality'
    return positives[0] if len(positives) == 1 else ', '.join(positives[:-1]) + ' and ' + positives[-1]


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:] + '.'


def _report(order, calls, rng) -> str:
    body = ' '.join(_sentence(_phrase(o, calls[o], rng)) for o in _said(order, calls))
    return f'Findings: {body} Impression: {_impression(order, calls)}.'


def _keyvalue(order, calls, rng) -> str:
    lines = []
    for o in _said(order, calls):
        c = calls[o]
        if c.present:
            value = ('possibly present' if c.hedged else 'present') + f' ({_positive(o, c.details, rng)})'
        else:
            value = 'absent'
        lines.append(f'{NAMES[o].capitalize()}: {value}')
    return '\n'.join(lines) + f'\nConclusion: {_impression(order, calls)}.'


def _differential(order, calls, rng) -> str:
    positives = [o for o in _said(order, calls) if calls[o].present]
    negatives = [o for o in _said(order, calls) if not calls[o].present]
    parts = []
    for o in positives:
        lead = 'There may be' if calls[o].hedged else 'There is'
        parts.append(f'{lead} {_positive(o, calls[o].details, rng)}.')
        if o == 'Consolidation':
            parts.append('The differential includes atelectasis, but consolidation is favoured.')
    if negatives:
        parts.append(_sentence('; '.join(_negative(o, rng) for o in negatives)))
    return ' '.join(parts) + f' Most likely diagnosis: {_impression(order, calls)}.'


def _think(order, calls, rng) -> str:
    notes = '; '.join(_phrase(o, calls[o], rng) for o in _said(order, calls))
    return f'<think>Check lungs, pleura, heart and lines: {notes}.</think>\nAnswer: {_impression(order, calls)}.'


def _steps(order, calls, rng) -> str:
    steps = ' '.join(f'Step {i}: {NAMES[o]}: {_phrase(o, calls[o], rng)}.'
                     for i, o in enumerate(_said(order, calls), start=1))
    return f'{steps} Conclusion: {_impression(order, calls)}.'


WRITERS = {'report': _report, 'keyvalue': _keyvalue, 'differential': _differential, 'think': _think,
           'steps': _steps}


def majority_calls(traces: Sequence[Trace], observations: Sequence[str]) -> Dict[str, Call]:
    """The teachers' majority per finding over the traces that give calls (ties and no votes: absent); the
    details of a present finding are the ones most of its callers gave."""
    calls = {}
    for observation in observations:
        votes = [t.calls[observation] for t in traces if t.kind == 'answer']
        yes = [c for c in votes if c.present]
        if votes and 2 * len(yes) > len(votes):
            counts: Dict[Finding, int] = {}
            for c in yes:
                counts[c.details] = counts.get(c.details, 0) + 1
            details = max(counts, key=lambda d: (counts[d], -yes.index(next(c for c in yes if c.details == d))))
            calls[observation] = Call(True, details)
        else:
            calls[observation] = Call(False)
    return calls


def majority_trace(order: Sequence[str], traces: Sequence[Trace], rng: np.random.Generator) -> str:
    """The teachers' majority written out as a plain report (every finding addressed, nothing hedged)."""
    return _report(order, majority_calls(traces, order), rng)
