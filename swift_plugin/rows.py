"""The APO preference row: reading and checking its rejected answers.

Pure functions over one row (a dict as ms-swift loads it); no ms-swift or torch import.

    rejected_response: "text"                      -> K = 1 (any DPO dataset)
    rejected_response: ["text 1", ..., "text K"]   -> K alternatives
    rejected_response: [{"role": "assistant", ...}, ...]
                                                   -> K = 1, one multi-turn trajectory (ms-swift's meaning)
    rejected_sources:  ["GPT-5", ...]              -> optional, one name per alternative
    rejected_images:   [img, ...]                  -> optional, the images of every rejected answer (DPO's meaning)
    rejected_images:   [[img, ...], ..., [img, ...]]
                                                   -> optional, the images of each rejected answer, one list each
"""
import json
import os
from collections import Counter
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

REJECTED_FIELD = 'rejected_response'
SOURCES_FIELD = 'rejected_sources'
IMAGES_FIELD = 'rejected_images'
# ms-swift's other per-rejected-answer fields. APO encodes every answer with the chosen row's prompt, media and
# tools, so a row that sets one of these would silently train on something else than it says.
UNSUPPORTED_FIELDS = ('rejected_messages', 'rejected_videos', 'rejected_audios', 'rejected_tools',
                      'rejected_objects')


class APORowError(ValueError):
    """A preference row that APO cannot train on; the message names the row and the field."""


@dataclass(frozen=True)
class RejectedAnswers:
    trajectories: List[List[Dict[str, Any]]]  # each replaces the chosen answer's messages
    sources: Optional[List[str]]
    images: Optional[List[list]] = None  # each replaces the chosen row's images; None: the chosen row's images

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

    for field in UNSUPPORTED_FIELDS:
        if row.get(field):
            raise fail(field, f'not supported by --rlhf_type apo (every rejected answer shares the prompt, media '
                       f'and tools of the chosen one; per-answer fields: {REJECTED_FIELD}, {SOURCES_FIELD}, '
                       f'{IMAGES_FIELD})')
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

    num_rejected = len(trajectories)
    return RejectedAnswers(trajectories=trajectories, sources=_parse_sources(row, num_rejected, fail),
                           images=_parse_images(row, num_rejected, fail))


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


def _parse_images(row: Dict[str, Any], num_rejected: int, fail) -> Optional[List[list]]:
    images = row.get(IMAGES_FIELD)
    if images is None:
        return None
    if isinstance(images, (str, dict)):
        images = [images]
    if not isinstance(images, (list, tuple)):
        raise fail(IMAGES_FIELD, f'must be a list of images, or one list of images per rejected answer, found '
                   f'{type(images).__name__}')
    nested = [isinstance(item, (list, tuple)) for item in images]
    one_list_per_answer = bool(images) and all(nested)
    if one_list_per_answer:
        if len(images) != num_rejected:
            raise fail(IMAGES_FIELD, f'has {len(images)} image lists but {REJECTED_FIELD} has {num_rejected} answers '
                       '(give one list per answer, or one flat list for all of them)')
        per_answer = [list(item) for item in images]
    elif any(nested):
        raise fail(IMAGES_FIELD, 'mixes images and lists of images: use one flat list for all rejected answers, '
                   'or one list per answer')
    else:
        per_answer = [list(images)] * num_rejected
    for k, answer_images in enumerate(per_answer):
        bad = [type(image).__name__ for image in answer_images if not isinstance(image, (str, dict))]
        if bad:
            field = f'{IMAGES_FIELD}[{k}]' if one_list_per_answer else IMAGES_FIELD
            raise fail(field, f'an image must be a path, URL or {{"path"/"bytes"}} dict, found {bad[0]}')
    return per_answer


def kept_answers(fits: Sequence[bool], drop_long_rejected: bool) -> Optional[List[int]]:
    """Which rejected answers a row trains on, given which of its sequences fit ``--max_length``.

    ``fits`` is [chosen, rejected 1, ..., rejected K]. Returns the indices (0-based, among the rejected answers)
    that train, or None when the whole row is dropped: ms-swift's ``--truncation_strategy delete`` drops a row
    with any sequence over max_length; with ``drop_long_rejected`` only the over-long rejected answers go, and
    the row stays while its chosen answer and at least one rejected answer fit.
    """
    chosen_fits, rejected_fit = fits[0], list(fits[1:])
    if not chosen_fits or not any(rejected_fit) or (not drop_long_rejected and not all(rejected_fit)):
        return None
    return [k for k, fit in enumerate(rejected_fit) if fit]


def column_renames(columns: Optional[Dict[str, str]], names: Iterable[str]) -> Dict[str, str]:
    """The renames ms-swift's ``--columns`` makes on a dataset whose columns are ``names``.

    The rule of ``RowPreprocessor.safe_rename_columns``: names match case-insensitively, and a target that
    two present columns would both take is not renamed to at all.
    """
    by_lower = {name.lower(): name for name in names}
    renames = {by_lower[old.lower()]: new for old, new in (columns or {}).items() if old.lower() in by_lower}
    claimed = Counter(renames.values())
    return {old: new for old, new in renames.items() if claimed[new] == 1 and old != new}


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


def validate_dataset_file(path: str, columns: Optional[Dict[str, str]] = None) -> int:
    """Check every row of a local preference file as ms-swift will read it (after ``--columns``); return the
    number of rows. Field names in errors are the renamed ones, e.g. 'rejected_response' for a column
    ``rejected`` under ``--columns '{"rejected": "rejected_response"}'``."""
    renames = {}
    if columns:
        names = {}  # the file's columns in order of appearance, as the json loader sees them
        for _, row in iter_local_rows(path):
            if isinstance(row, dict):
                names.update(dict.fromkeys(row))
        renames = column_renames(columns, names)
    count = 0
    for where, row in iter_local_rows(path):
        if not isinstance(row, dict):
            raise APORowError(f'{where}: a row must be a JSON object')
        parse_rejected({renames.get(k, k): v for k, v in row.items()}, where)
        count += 1
    return count
