"""The findings reader measured on the labelled suites: the first two (tests/data/reader_suite_{report,llm}.jsonl,
written by the rule author before the rules) and the blind ones (tests/data/blind/*.{dev,heldout}.jsonl, written and
labelled by helper sessions that saw only docs/readers.md's conventions, never the reader; the rule author reads
only their dev halves).

Each line: {"text", "labels": {observation: positive / uncertain / negative / "not mentioned"}, "split": dev or
heldout}. The labels of a text are exhaustive: an observation it does not list is not mentioned, except No Finding,
which is only checked where it is listed. A *call* is one (text, observation) pair that the suite labels or that
the reader calls (a finding read where the suite has none is a wrong call). The suites were written from the
CheXpert conventions (docs/readers.md) and committed before the rules they measure; rules were written against
"dev" only.

    python tests/reader_suites.py                 # the table of every suite, both parts, per class
    python tests/reader_suites.py --wrong dev     # and the dev parts' wrong calls (never print the held-out ones
                                                  # to whoever writes rules)
"""
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clinical_text import CALLS, OBSERVATIONS, read_findings  # noqa: E402
from clinical_text.stats import binary_kappa  # noqa: E402

DATA = Path(__file__).parent / 'data'
BLIND = DATA / 'blind'
SUITES = {
    'report': [DATA / 'reader_suite_report.jsonl'],
    'llm': [DATA / 'reader_suite_llm.jsonl'],
    'blind report': [BLIND / f'{name}.{split}.jsonl' for name in ('report_mimic', 'report_deid', 'report_intl')
                     for split in ('dev', 'heldout')],
    'blind llm': [BLIND / f'{name}.{split}.jsonl'
                  for name in ('llm_structured', 'llm_prose', 'llm_teachers', 'llm_chat', 'llm_reasoning', 'llm_short')
                  for split in ('dev', 'heldout')],
}
NOT_MENTIONED = 'not mentioned'
CLASSES = (*CALLS, NOT_MENTIONED)
PRESENT = ('positive', 'uncertain')     # present-vs-not: the drift report's reading (uncertain counts as present)


def load(style: str) -> List[Dict]:
    rows = []
    for path in SUITES[style]:
        with open(path, encoding='utf-8') as f:
            for line_no, line in enumerate(f, 1):
                row = json.loads(line)
                where = f'{path.name} line {line_no}'
                assert set(row) == {'text', 'labels', 'split'}, where
                assert row['split'] in ('dev', 'heldout'), where
                assert path.parent != BLIND or path.name.endswith(f'.{row["split"]}.jsonl'), where
                assert row['labels'] and set(row['labels']) <= set(OBSERVATIONS), where
                assert set(row['labels'].values()) <= set(CLASSES), where
                rows.append(row)
    return rows


def _class(call: Optional[str]) -> str:
    return call or NOT_MENTIONED


def checks(rows: List[Dict]):
    """(text, observation, expected class, read class) of every call."""
    for row in rows:
        calls = read_findings(row['text'])
        for observation in OBSERVATIONS:
            expected = row['labels'].get(observation, None if observation == 'No Finding' else NOT_MENTIONED)
            if expected is None or (expected == NOT_MENTIONED and calls[observation] is None
                                    and observation not in row['labels']):
                continue
            yield row['text'], observation, expected, _class(calls[observation])


def measure(rows: List[Dict]) -> Dict:
    """4-class accuracy, present-vs-not accuracy, per-class accuracy and present-vs-not kappa macro."""
    found = list(checks(rows))
    per_class = defaultdict(Counter)
    for _, _, expected, read in found:
        per_class[expected]['n'] += 1
        per_class[expected]['right'] += expected == read
    binary = defaultdict(list)     # observation -> (expected present, read present) over every text of the part
    for row in rows:
        calls = read_findings(row['text'])
        for observation in OBSERVATIONS:
            if observation == 'No Finding' and observation not in row['labels']:
                continue
            expected = row['labels'].get(observation, NOT_MENTIONED)
            binary[observation].append((expected in PRESENT, calls[observation] in PRESENT))
    kappas = {o: binary_kappa(p) for o, p in binary.items() if any(e for e, _ in p)}
    defined = [k for k in kappas.values() if k is not None]
    return {
        'calls': len(found),
        'accuracy': sum(e == r for _, _, e, r in found) / len(found),
        'present_vs_not': sum((e in PRESENT) == (r in PRESENT) for _, _, e, r in found) / len(found),
        'per_class': {c: (per_class[c]['right'], per_class[c]['n']) for c in CLASSES if per_class[c]['n']},
        'kappa_macro': sum(defined) / len(defined) if defined else None,
        'kappa': kappas,
        'wrong': [(t, o, e, r) for t, o, e, r in found if e != r],
    }


def table() -> str:
    lines = ['| suite | part | calls | 4-class | present-vs-not | kappa macro | ' + ' | '.join(CLASSES) + ' |',
             '|---|---|---|---|---|---|' + '---|' * len(CLASSES)]
    for style in SUITES:
        rows = load(style)
        for split in ('dev', 'heldout'):
            m = measure([r for r in rows if r['split'] == split])
            cells = [f'{m["per_class"][c][0]}/{m["per_class"][c][1]}' if c in m['per_class'] else '-'
                     for c in CLASSES]
            lines.append(f'| {style} | {split} | {m["calls"]} | {m["accuracy"]:.3f} | {m["present_vs_not"]:.3f} | '
                         f'{m["kappa_macro"]:.3f} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def wrong_calls(split: str = 'dev') -> str:
    lines = []
    for style in SUITES:
        for text, observation, expected, read in measure([r for r in load(style) if r['split'] == split])['wrong']:
            lines.append(f'[{style}] {observation}: expected {expected}, read {read}\n    {text!r}')
    return '\n'.join(lines)


if __name__ == '__main__':
    print(table())
    if sys.argv[1:2] == ['--wrong']:
        assert sys.argv[2:] == ['dev'], 'only the dev parts: the held-out parts stay unread by the rule author'
        print(wrong_calls('dev'))
