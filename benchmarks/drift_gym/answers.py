"""Answer files from ``swift infer`` results and from the teachers' traces, in the forms the readers take.

A student answers each held-out study once (its own question names every finding); the classification items of a
study (one per finding) all read that one answer, as the drift report does. ``swift infer`` drops the requests'
``study_id``, so results are joined to studies by what it keeps (data_prep's request fingerprint).
"""
import json
import os
from typing import Dict, Iterable, List

from datafiles.swift_rows import request_fingerprint


def read_jsonl(path: str) -> List[Dict]:
    with open(path, encoding='utf-8') as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path: str, rows: Iterable[Dict]) -> None:
    """Written to a temporary name and renamed, so a reader never sees half a file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f'{path}.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + '\n')
    os.replace(tmp, path)


def study_answers(requests: str, results: str) -> Dict[str, str]:
    """study id -> the response swift infer gave to that study's request."""
    by_fingerprint = {request_fingerprint(r): str(r['study_id']) for r in read_jsonl(requests)}
    answers: Dict[str, str] = {}
    for line_no, row in enumerate(read_jsonl(results), start=1):
        study = by_fingerprint.get(request_fingerprint(row))
        if study is None:
            raise ValueError(f'{results} line {line_no}: answers no request of {requests}')
        answers.setdefault(study, row['response'])
    missing = set(by_fingerprint.values()) - set(answers)
    if missing:
        raise ValueError(f'{results}: no answer for {len(missing)} request(s) of {requests}, '
                         f'e.g. study {sorted(missing)[0]}')
    return answers


def teacher_answers(dataset: str) -> Dict[str, Dict[str, str]]:
    """teacher -> study id -> trace, from a per-trace dataset file of the gym."""
    answers: Dict[str, Dict[str, str]] = {}
    for row in read_jsonl(dataset):
        answers.setdefault(row['model'], {})[str(row['study_id'])] = row['response']
    return answers


def write_item_answers(path: str, items_file: str, answers: Dict[str, str]) -> None:
    """``{"id", "answer"}`` per classification item of ``items_file`` (``<study>:<finding>``), the study's answer."""
    write_jsonl(path, ({'id': item['id'], 'answer': answers[item['id'].split(':', 1)[0]]}
                       for item in read_jsonl(items_file)))


def write_study_answers(path: str, answers: Dict[str, str], studies: Iterable[str]) -> None:
    """``{"id", "response"}`` per study (the drift report's ``--source`` files)."""
    write_jsonl(path, ({'id': study, 'response': answers[study]} for study in studies))
