"""Resuming and sharding ``swift infer`` over the consensus requests without losing or repeating an answer.

swift infer appends whole result lines to its ``--result_path``. A run killed while writing can leave a last
line without its end, and a run still going may be writing one right now; so a results file is only ever
read here: a last line without its newline counts when it is a complete result and is ignored otherwise.
Each run of the launcher writes its shards' answers to new files in a parts folder (never appending to an
older file, whose last line may be unfinished), and ``merge`` folds the parts into the one results file
through a temporary file and a rename once those runs have exited.
"""
import glob
import os
from typing import Dict, Iterator, List, Optional

from datafiles import DataError, SourceRow, derived_path, jsonl_row, output_set
from datafiles.swift_rows import request_fingerprint

from .outputs import Tally, write_rows


def _is_result(row: Dict) -> bool:
    return isinstance(row.get('response'), str) and isinstance(row.get('messages'), list)


def read_answers(path: str, tally: Tally) -> Iterator[SourceRow]:
    """The complete result rows of one swift infer results file, in file order."""
    with open(path, 'rb') as f:
        for line_no, data in enumerate(f, start=1):
            source = jsonl_row(path, line_no, data)
            if source is None:
                continue
            if not data.endswith(b'\n') and (source.problem is not None or not _is_result(source.row)):
                tally.notes.append(f'{source.where}: ignored an unfinished last line (a write interrupted or '
                                   f'still under way); the file is left as it is')
                return
            if source.problem is not None:
                raise DataError(f'{source.where}: {source.problem}')
            if not _is_result(source.row):
                raise DataError(f'{source.where}: not a swift infer result (needs a \'response\' text and '
                                f'\'messages\')')
            yield source


def part_files(parts: Optional[str]) -> List[str]:
    return sorted(glob.glob(os.path.join(glob.escape(parts), '*.jsonl'))) if parts else []


def _result_files(results: str, parts: Optional[str]) -> List[str]:
    return ([results] if os.path.exists(results) else []) + part_files(parts)


def shard_paths(out: str, shards: int) -> List[str]:
    """data/consensus.pending.jsonl, 2 -> data/consensus.pending.shard0.jsonl, ...shard1.jsonl"""
    return [derived_path(out, f'shard{i}') for i in range(shards)]


def write_pending(requests: Iterator[SourceRow], results: str, parts: Optional[str], out: str,
                  shards: Optional[int], tally: Tally) -> None:
    """The requests without a complete answer in ``results`` or ``parts``, each asked once, dealt round-robin
    over ``shards`` files (or written to ``out`` alone when ``shards`` is None)."""
    answered = set()
    for path in _result_files(results, parts):
        before = len(answered)
        answered.update(request_fingerprint(source.row) for source in read_answers(path, tally))
        tally.read[path] = f'{len(answered) - before} newly answered requests'
    paths = [out] if shards is None else shard_paths(out, shards)
    asked, count = set(), 0
    with output_set() as outputs:
        handles = [outputs.open(path) for path in paths]
        for path in paths:
            tally.wrote[path] = 0
        for source in requests:
            count += 1
            fingerprint = request_fingerprint(source.row)
            if fingerprint in answered or fingerprint in asked:
                continue
            asked.add(fingerprint)
            i = (len(asked) - 1) % len(paths)
            write_rows(handles[i], [source.row], tally, paths[i])
    tally.read['requests'] = f'{count} requests, {len(answered)} answered'


def merge_parts(requests: Iterator[SourceRow], results: str, parts: str, tally: Tally) -> None:
    """One answer per request (the first written), in request order, into ``results``; then the merged parts
    are removed. Only for parts whose writers have exited: a line appended after the read would be lost."""
    merged = part_files(parts)
    files = ([results] if os.path.exists(results) else []) + merged
    order: Dict[str, int] = {}
    for source in requests:
        order.setdefault(request_fingerprint(source.row), len(order))
    answers: Dict[str, Dict] = {}
    for path in files:
        for source in read_answers(path, tally):
            fingerprint = request_fingerprint(source.row)
            if fingerprint not in order:
                raise DataError(f'{source.where}: field \'messages\': this answer\'s prompt and images match no '
                                f'request; were the requests and the answers made from the same dataset?',
                                'unknown request')
            if fingerprint in answers:
                tally.drop('duplicate answer (first kept)')
                continue
            answers[fingerprint] = source.row
    with output_set() as outputs:
        handle = outputs.open(results)
        tally.wrote[results] = 0
        write_rows(handle, sorted(answers.values(), key=lambda row: order[request_fingerprint(row)]), tally,
                   results)
    for path in merged:
        os.unlink(path)
    tally.read[parts] = f'{len(merged)} part files, merged and removed'
    tally.read['requests'] = f'{len(order)} requests, {len(answers)} answered'
