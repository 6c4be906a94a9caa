"""The APO preference row: reading and checking its rejected answers.

Pure functions over one row (a dict as ms-swift loads it); no ms-swift or torch import.

    rejected_response: "text"                      -> K = 1 (any DPO dataset)
    rejected_response: ["text 1", ..., "text K"]   -> K alternatives
    rejected_response: [{"role": "assistant", ...}, ...]
                                                   -> K = 1, one multi-turn trajectory (ms-swift's meaning)
    rejected_sources:  ["GPT-5", ...]              -> optional, one name per alternative
"""
import json
import os
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple

REJECTED_FIELD = 'rejected_response'
SOURCES_FIELD = 'rejected_sources'


class APORowError(ValueError):
    """A preference row that APO cannot train on; the message names the row and the field."""


@dataclass(frozen=True)
class RejectedAnswers:
    trajectories: List[List[Dict[str, Any]]]  # each replaces the chosen answer's messages
    sources: Optional[List[str]]

    def __len__(self) -> int:
        return len(self.trajectories)


def _chosen_answer(row: Dict[str, Any]) -> Optional[str]:
    messages = row.get('messages') or []
    if messages and isinstance(messages[-1], dict) and messages[-1].get('role') == 'assistant':
        return messages[-1].get('content')
    return None


def parse_rejected(row: Dict[str, Any], where: str = 'row') -> RejectedAnswers:
    """Read the rejected answers of ``row``; raise APORowError naming ``where`` and the field."""

    def fail(field: str, problem: str) -> APORowError:
        return APORowError(f'{where}: field {field!r}: {problem}')

    rejected = row.get(REJECTED_FIELD)
    if rejected is None:
        raise fail(REJECTED_FIELD, 'missing: an APO row needs at least one rejected answer')
    if isinstance(rejected, str):
        texts = [rejected]
        trajectories = None
    elif isinstance(rejected, (list, tuple)):
        if len(rejected) == 0:
            raise fail(REJECTED_FIELD, 'empty list: an APO row needs at least one rejected answer')
        kinds = {type(item) for item in rejected}
        if kinds == {str}:
            texts = list(rejected)
            trajectories = None
        elif kinds == {dict}:
            for i, message in enumerate(rejected):
                if message.get('role') == 'user':
                    raise fail(f'{REJECTED_FIELD}[{i}]', "a rejected trajectory cannot contain a 'user' message")
            texts = None
            trajectories = [list(rejected)]
        elif kinds <= {str, dict}:
            raise fail(REJECTED_FIELD, 'mixes strings and message dicts: use a list of strings for K alternative '
                       'answers, or a list of message dicts for one multi-turn rejected trajectory')
        else:
            names = sorted(k.__name__ for k in kinds)
            raise fail(REJECTED_FIELD, f'list items must be strings (or message dicts), found {names}')
    else:
        raise fail(REJECTED_FIELD, f'must be a string or a list of strings, found {type(rejected).__name__}')

    if texts is not None:
        chosen = _chosen_answer(row)
        for i, text in enumerate(texts):
            field = REJECTED_FIELD if isinstance(rejected, str) else f'{REJECTED_FIELD}[{i}]'
            if not text.strip():
                raise fail(field, 'empty string')
            if chosen is not None and text == chosen:
                raise fail(field, 'identical to the chosen answer')
        trajectories = [[{'role': 'assistant', 'content': text}] for text in texts]

    return RejectedAnswers(trajectories=trajectories, sources=_parse_sources(row, len(trajectories), fail))


def _parse_sources(row: Dict[str, Any], num_rejected: int, fail) -> Optional[List[str]]:
    sources = row.get(SOURCES_FIELD)
    if sources is None:
        return None
    if isinstance(sources, str):
        sources = [sources]
    if not isinstance(sources, (list, tuple)) or not all(isinstance(s, str) and s.strip() for s in sources):
        raise fail(SOURCES_FIELD, 'must be a list of non-empty strings, one per rejected answer')
    if len(sources) != num_rejected:
        raise fail(SOURCES_FIELD, f'has {len(sources)} entries but {REJECTED_FIELD} has {num_rejected} answers')
    return list(sources)


def iter_local_rows(path: str) -> Iterator[Tuple[str, Dict[str, Any]]]:
    """Yield (location, row) for a local .jsonl / .json dataset file, location naming file and line/index."""
    if path.endswith('.jsonl'):
        with open(path, encoding='utf-8') as f:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                where = f'{path} line {line_no}'
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise APORowError(f'{where}: not valid JSON ({e.msg})') from None
                yield where, row
    else:
        with open(path, encoding='utf-8') as f:
            rows = json.load(f)
        for i, row in enumerate(rows if isinstance(rows, list) else [rows]):
            yield f'{path} row {i}', row


def local_dataset_file(spec: str) -> Optional[str]:
    """The local .json/.jsonl file behind an ms-swift ``--dataset`` entry (``path``, ``path#N``), if any."""
    path = spec.rsplit('#', 1)[0] if '#' in spec and not os.path.exists(spec) else spec
    if path.endswith(('.jsonl', '.json')) and os.path.isfile(path):
        return path
    return None


def validate_dataset_file(path: str) -> int:
    """Check every row of a local preference file; return the number of rows."""
    count = 0
    for where, row in iter_local_rows(path):
        if not isinstance(row, dict):
            raise APORowError(f'{where}: a row must be a JSON object')
        parse_rejected(row, where)
        count += 1
    return count
