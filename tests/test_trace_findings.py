"""The findings reader (clinical_text/findings.py) on the labelled trace suite (tests/data/trace_findings_suite.jsonl).

The suite was written and labelled (and committed) before the reader existed: 185 trace sentences, each with the
call expected for every observation it mentions; the others must read as not mentioned (No Finding, which the
reader always decides, is checked only where the suite gives it). Every third line is "heldout".
"""
import json
from collections import Counter
from pathlib import Path

import pytest

from clinical_text.findings import CALLS, read_findings
from data_prep.text import OBSERVATIONS

SUITE = Path(__file__).parent / 'data' / 'trace_findings_suite.jsonl'


def _suite():
    rows = []
    with open(SUITE, encoding='utf-8') as f:
        for line_no, line in enumerate(f, 1):
            row = json.loads(line)
            assert set(row) == {'text', 'labels', 'split'}, line_no
            assert row['labels'] and set(row['labels']) <= set(OBSERVATIONS), line_no
            assert set(row['labels'].values()) <= set(CALLS), line_no
            assert row['split'] == ('heldout' if (line_no - 1) % 3 == 2 else 'dev'), line_no
            rows.append(row)
    return rows


def _checks(rows):
    """(text, observation, expected, read) for every call the suite or the reader makes."""
    for row in rows:
        calls = read_findings(row['text'])
        for observation, call in calls.items():
            if observation == 'No Finding' and observation not in row['labels']:
                continue
            if observation in row['labels'] or call is not None:
                yield row['text'], observation, row['labels'].get(observation), call


def test_suite_covers_the_issue():
    rows = _suite()
    assert len(rows) >= 150 and len({r['text'] for r in rows}) == len(rows)
    counts = Counter(call for r in rows for call in r['labels'].values())
    assert min(counts[c] for c in CALLS) >= 40, counts
    assert {o for r in rows for o in r['labels']} == set(OBSERVATIONS)
    for phrase in ('no longer', 'cannot', 'resolved', ' or ', 'but', 'tube'):
        assert sum(phrase in r['text'].lower() for r in rows) >= 3, phrase


@pytest.mark.parametrize('split', ['dev', 'heldout'])
def test_reader_accuracy_on_the_suite(split):
    checks = list(_checks([r for r in _suite() if r['split'] == split]))
    wrong = [c for c in checks if c[2] != c[3]]
    assert len(checks) > 70
    assert 1 - len(wrong) / len(checks) >= 0.95, wrong


@pytest.mark.parametrize('text, expected', [
    ('No pleural effusion or pneumothorax.', {'Pleural Effusion': 'negative', 'Pneumothorax': 'negative'}),
    ('No pneumothorax but a small pleural effusion.', {'Pneumothorax': 'negative', 'Pleural Effusion': 'positive'}),
    ('Pneumothorax is no longer seen.', {'Pneumothorax': 'negative'}),
    ('Pneumonia cannot be excluded.', {'Pneumonia': 'uncertain'}),
    ('The effusion has nearly resolved.', {'Pleural Effusion': 'positive'}),
    ('No large effusion, though a small effusion is possible.', {'Pleural Effusion': 'uncertain'}),
])
def test_scope_rules(text, expected):
    calls = read_findings(text)
    assert {o: c for o, c in calls.items() if c and o != 'No Finding'} == expected


def test_no_finding_follows_the_other_observations():
    assert read_findings('Endotracheal tube in place. No effusion.')['No Finding'] == 'positive'
    assert read_findings('Possible small effusion.')['No Finding'] == 'negative'
    assert read_findings('Mild cardiomegaly.')['No Finding'] == 'negative'
