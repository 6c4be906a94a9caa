"""``python -m benchmarks.drift_gym make``: a synthetic CXR-MAX with known truth and teachers with known drift.

Writes, into one folder (built in a temporary sibling and renamed into place, so never half-written):

* ``teachers.jsonl``: the training studies in CXR-MAX's per-trace layout, as data_prep reads it (``subject_id``,
  ``study_id``, ``image_path``, ``question``, ``model``, ``response``), one row per (study, teacher).
* ``val.jsonl``, ``test.jsonl``: the held-out studies in the same layout (the teachers' traces on them are the
  teachers' answer files).
* ``truth.csv``: MIMIC-CXR-JPG's ``mimic-cxr-2.0.0-chexpert.csv`` layout: ``subject_id``, ``study_id`` and the 14
  CheXpert observations; the gym's findings 1.0 / 0.0, No Finding 1.0 when none but Support Devices is present,
  the rest blank.
* ``val.items.jsonl``, ``test.items.jsonl``: classification items (label set ``presence``), one per (held-out
  study, finding), id ``<study_id>:<finding>``, the study's own question.
* ``heldout.requests.jsonl``: ``swift infer`` requests, one per held-out study (validation, then test).
* ``majority.jsonl``: per training study, the teachers' majority written out as a trace.
* ``files/pXX/p<subject>/s<study>/view1_frontal.png``: the films.
* ``studies.json``: the machine truth (findings with details, every teacher's calls) and ``manifest.json`` (the
  configuration and each teacher's realised sensitivity and specificity per finding).
"""
import csv
import hashlib
import json
import os
import shutil
import tempfile
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

from data_prep.text import OBSERVATIONS as CHEXPERT_OBSERVATIONS

from .config import GymConfig
from .films import Finding, draw_details, draw_film
from .teachers import NAMES, TEACHERS, Trace, majority_trace, write_trace

SPLITS = ('train', 'val', 'test')
QUESTION = ('Based on the chest X-ray, what are the findings that form the basis for the diagnosis, or the '
            'exclusion, of {names}?')
MANIFEST = 'manifest.json'


def question(order: Sequence[str]) -> str:
    names = [NAMES[o] for o in order]
    return QUESTION.format(names=', '.join(names[:-1]) + ' and ' + names[-1] if len(names) > 1 else names[0])


def image_path(subject_id: int, study_id: int) -> str:
    return f'files/p{str(subject_id)[:2]}/p{subject_id}/s{study_id}/view1_frontal.png'


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in keys])


def draw_study(config: GymConfig, index: int, split: str) -> Dict[str, Any]:
    """Study ``index``: its findings, film, question and every teacher's trace (deterministic in data_seed)."""
    rng = _rng(config.data_seed, index, 0)
    truth: Dict[str, Optional[Finding]] = {}
    for observation in config.observations:
        present = rng.random() < config.prevalence
        details = draw_details(observation, rng)
        truth[observation] = details if present else None
    order = list(config.observations)   # one question for every study: the findings in the panel's order
    film = draw_film(config.image_size, {o: f for o, f in truth.items() if f is not None}, rng)
    traces = [write_trace(teacher, order, truth, config.drift, _rng(config.data_seed, index, 1 + t))
              for t, teacher in enumerate(TEACHERS[:config.teachers])]
    subject_id, study_id = 10000000 + index, 50000000 + index
    return {'index': index, 'split': split, 'subject_id': subject_id, 'study_id': study_id,
            'image_path': image_path(subject_id, study_id), 'question': question(order), 'order': order,
            'truth': truth, 'film': film, 'traces': traces}


def truth_row(study: Dict[str, Any], observations: Sequence[str]) -> Dict[str, str]:
    """The study's chexpert.csv row: the gym's findings 1.0 / 0.0; No Finding 1.0 when nothing but a support
    device is present (CheXpert's rule), else blank; every other observation blank (not assessed)."""
    row = {'subject_id': str(study['subject_id']), 'study_id': str(study['study_id'])}
    row.update({o: '' for o in CHEXPERT_OBSERVATIONS})
    for observation in observations:
        row[observation] = '1.0' if study['truth'][observation] is not None else '0.0'
    if not any(study['truth'][o] is not None for o in observations if o != 'Support Devices'):
        row['No Finding'] = '1.0'
    return row


def trace_rows(study: Dict[str, Any]) -> List[Dict[str, Any]]:
    return [{'subject_id': study['subject_id'], 'study_id': study['study_id'], 'image_path': study['image_path'],
             'question': study['question'], 'model': trace.teacher, 'response': trace.text}
            for trace in study['traces']]


def items(study: Dict[str, Any], observations: Sequence[str]) -> List[Dict[str, Any]]:
    return [{'id': f'{study["study_id"]}:{o}', 'images': [study['image_path']], 'observation': o,
             'question': study['question'], 'label': 'present' if study['truth'][o] is not None else 'absent'}
            for o in observations]


def request(study: Dict[str, Any], root: str) -> Dict[str, Any]:
    """The swift infer request for a held-out study: its user turn exactly as data_prep writes one."""
    return {'messages': [{'role': 'user', 'content': '<image>' + study['question']}],
            'images': [os.path.join(root, study['image_path'])], 'study_id': str(study['study_id'])}


def _finding_dict(finding: Optional[Finding]) -> Optional[Dict[str, str]]:
    if finding is None:
        return None
    return {k: v for k, v in vars(finding).items() if v is not None}


def _trace_record(trace: Trace) -> Dict[str, Any]:
    return {'teacher': trace.teacher, 'kind': trace.kind,
            'calls': {o: {'present': c.present, 'hedged': c.hedged, 'mentioned': c.mentioned,
                          'details': _finding_dict(c.details)} for o, c in trace.calls.items()}}


def teacher_rates(studies: Sequence[Dict[str, Any]], observations: Sequence[str]) -> Dict[str, Any]:
    """Each teacher's realised sensitivity and specificity per finding (refusals and generic text count as not
    calling it) and its refusal / generic counts, over ``studies``."""
    rates: Dict[str, Any] = {}
    for t, name in enumerate(tr.teacher for tr in studies[0]['traces']):
        kinds = [s['traces'][t].kind for s in studies]
        per = {}
        for o in observations:
            pos = [s['traces'][t].says(o) is True for s in studies if s['truth'][o] is not None]
            neg = [s['traces'][t].says(o) is not True for s in studies if s['truth'][o] is None]
            per[o] = {'sensitivity': sum(pos) / len(pos) if pos else None,
                      'specificity': sum(neg) / len(neg) if neg else None,
                      'accuracy': (sum(pos) + sum(neg)) / (len(pos) + len(neg))}
        rates[name] = {'refusals': kinds.count('refusal'), 'generic': kinds.count('generic'), 'findings': per}
    return rates


def fingerprint(config: GymConfig) -> str:
    return hashlib.sha256(json.dumps(config.data_fields(), sort_keys=True, default=list).encode()).hexdigest()[:16]


def is_made(out: str, config: GymConfig) -> bool:
    try:
        with open(os.path.join(out, MANIFEST), encoding='utf-8') as f:
            return json.load(f).get('fingerprint') == fingerprint(config)
    except (OSError, ValueError):
        return False


def make(config: GymConfig, out: str) -> str:
    """Write the studies of ``config`` into ``out`` (kept as it is when it already holds them)."""
    out = os.path.abspath(out)
    if is_made(out, config):
        return out
    if os.path.exists(out):
        raise FileExistsError(f'{out}: exists and holds other studies (or is not a gym folder); remove it or pick '
                              f'another --out')
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(out)}.', dir=parent)
    try:
        _write(config, tmp, out)
        os.chmod(tmp, 0o755)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write(config: GymConfig, tmp: str, final: str) -> None:
    counts = {'train': config.train_studies, 'val': config.val_studies, 'test': config.test_studies}
    studies, index = [], 0
    for split in SPLITS:
        for _ in range(counts[split]):
            studies.append(draw_study(config, index, split))
            index += 1
    for study in studies:
        path = os.path.join(tmp, study['image_path'])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(study.pop('film')).save(path)
    by_split = {split: [s for s in studies if s['split'] == split] for split in SPLITS}

    def jsonl(name: str, rows) -> None:
        with open(os.path.join(tmp, name), 'w', encoding='utf-8') as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + '\n')

    jsonl('teachers.jsonl', (r for s in by_split['train'] for r in trace_rows(s)))
    for split in ('val', 'test'):
        jsonl(f'{split}.jsonl', (r for s in by_split[split] for r in trace_rows(s)))
        jsonl(f'{split}.items.jsonl', (i for s in by_split[split] for i in items(s, config.observations)))
    jsonl('heldout.requests.jsonl', (request(s, final) for split in ('val', 'test') for s in by_split[split]))
    jsonl('majority.jsonl', ({'study_id': str(s['study_id']), 'response': majority_trace(
        s['order'], s['traces'], _rng(config.data_seed, s['index'], 99))} for s in by_split['train']))
    with open(os.path.join(tmp, 'truth.csv'), 'w', newline='', encoding='utf-8') as f:
        writer = csv.DictWriter(f, fieldnames=['subject_id', 'study_id', *CHEXPERT_OBSERVATIONS])
        writer.writeheader()
        for study in studies:
            writer.writerow(truth_row(study, config.observations))
    records = [{'study_id': s['study_id'], 'subject_id': s['subject_id'], 'split': s['split'],
                'image_path': s['image_path'], 'question': s['question'],
                'truth': {o: _finding_dict(f) for o, f in s['truth'].items()},
                'traces': [_trace_record(t) for t in s['traces']]} for s in studies]
    with open(os.path.join(tmp, 'studies.json'), 'w', encoding='utf-8') as f:
        json.dump(records, f)
    manifest = {'fingerprint': fingerprint(config), 'config': config.data_fields(),
                'studies': {split: len(by_split[split]) for split in SPLITS},
                'teachers': [t.teacher for t in studies[0]['traces']],
                'prevalence': {o: sum(s['truth'][o] is not None for s in studies) / len(studies)
                               for o in config.observations},
                'teacher_rates': {split: teacher_rates(by_split[split], config.observations)
                                  for split in SPLITS if by_split[split]}}
    with open(os.path.join(tmp, MANIFEST), 'w', encoding='utf-8') as f:
        json.dump(manifest, f, indent=1, default=list)
