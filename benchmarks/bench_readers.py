"""Speed of the findings reader (clinical_text/findings.py), one process, one core.

Two kinds of trace of about 1,500 characters each:
- "structured": texts of the reader suites (tests/data/reader_suite_*.jsonl: reports, markdown lists, tables,
  JSON, think blocks) joined at random until 1,500 characters;
- "word salad": the drift-report benchmark's synthetic traces (benchmarks/bench_data_prep.py: clinical words at
  random, no punctuation, so one long sentence per trace: the reader's worst case for scope work).

    python benchmarks/bench_readers.py [--traces 2000] [--repeats 3]

Prints traces and calls (14 per trace) per second of CPU time, best of the repeats, and what that means for
CXR-MAX's 170,982 traces on one core.
"""
import argparse
import json
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / 'benchmarks'))

from bench_data_prep import WORDS  # noqa: E402
from clinical_text import OBSERVATIONS, read_findings  # noqa: E402

CXR_MAX_TRACES = 170_982
LENGTH = 1500


def structured(n: int, rng: random.Random):
    suites = [REPO / 'tests' / 'data' / f'reader_suite_{s}.jsonl' for s in ('report', 'llm')]
    texts = [json.loads(line)['text'] for path in suites for line in path.open(encoding='utf-8')]
    out = []
    for _ in range(n):
        trace = ''
        while len(trace) < LENGTH:
            trace += rng.choice(texts) + '\n'
        out.append(trace)
    return out


def salad(n: int, rng: random.Random):
    return [' '.join(rng.choices(WORDS, k=230))[:LENGTH] for _ in range(n)]


def best_rate(texts, repeats: int) -> float:
    """Traces per second of CPU time (process time: other jobs on a shared machine slow the wall clock, not
    this), best of ``repeats``."""
    best = float('inf')
    for _ in range(repeats):
        start = time.process_time()
        for text in texts:
            read_findings(text)
        best = min(best, time.process_time() - start)
    return len(texts) / best


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--traces', type=int, default=2000)
    parser.add_argument('--repeats', type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(0)
    read_findings('warm up: the reader builds its regular expressions once')
    for name, texts in (('structured', structured(args.traces, rng)), ('word salad', salad(args.traces, rng))):
        rate = best_rate(texts, args.repeats)
        print(f'{name:11}: {rate:8.1f} traces/s, {rate * len(OBSERVATIONS):9.0f} calls/s; CXR-MAX '
              f'({CXR_MAX_TRACES:,} traces) on one core: {CXR_MAX_TRACES / rate:.0f} s of reading')


if __name__ == '__main__':
    main()
