"""Reading the input dataset row by row, each row with a location that names its file and row.

Local json / jsonl / parquet / csv files are read here directly, so that an error can name the
exact line; a Hugging Face dataset id or a local dataset folder goes through ``datasets`` in
streaming mode. Nothing here holds more than one row (or one parquet batch) in memory, except a
``.json`` file holding one JSON array, which has to be parsed whole.
"""
import csv
import json
import os
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional

LOCAL_SUFFIXES = ('.jsonl', '.json', '.parquet', '.csv')


class DataError(ValueError):
    """Input that cannot be used; the message names the file, the row and, where known, the field.
    ``reason`` is the short name under which --skip-invalid counts such rows."""

    def __init__(self, message: str, reason: str = 'invalid row'):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class SourceRow:
    where: str                     # "data/cxr.jsonl line 12", "MiaoMiaoYang/CXR-MAX [train] row 5"
    row: Dict[str, Any]
    problem: Optional[str] = None  # set when the row could not be read at all (bad JSON, not UTF-8)
    raw: Optional[str] = None      # the text as read, for the rejects file, when ``problem`` is set


def field_error(where: str, field: Optional[str], problem: str, reason: str) -> DataError:
    return DataError(f'{where}: field {field!r}: {problem}' if field else f'{where}: {problem}', reason)


def describe(dataset: str, split: str) -> str:
    return dataset if is_local_file(dataset) else f'{dataset} [{split}]'


def is_local_file(dataset: str) -> bool:
    return os.path.isfile(dataset) and dataset.lower().endswith(LOCAL_SUFFIXES)


def iter_rows(dataset: str, split: str = 'train') -> Iterator[SourceRow]:
    """Every row of ``dataset``: a local file, a local dataset folder or a Hugging Face dataset id."""
    if os.path.isfile(dataset):
        suffix = os.path.splitext(dataset)[1].lower()
        readers = {'.jsonl': _iter_jsonl, '.json': _iter_json, '.parquet': _iter_parquet, '.csv': _iter_csv}
        if suffix not in readers:
            raise DataError(f'{dataset}: unsupported file type {suffix!r}; use one of {", ".join(LOCAL_SUFFIXES)}, '
                            f'a dataset folder or a Hugging Face dataset id')
        yield from readers[suffix](dataset)
    else:
        yield from _iter_hf(dataset, split)


def _decode(path: str, data: bytes, where: str) -> str:
    try:
        return data.decode('utf-8')
    except UnicodeDecodeError as e:
        raise DataError(f'{where}: not UTF-8 text (byte {e.start}: {data[e.start:e.start + 1]!r}); '
                        f're-encode {path} as UTF-8') from None


def _iter_jsonl(path: str) -> Iterator[SourceRow]:
    with open(path, 'rb') as f:
        for line_no, data in enumerate(f, start=1):
            source = jsonl_row(path, line_no, data)
            if source is not None:
                yield source


def jsonl_row(path: str, line_no: int, data: bytes) -> Optional[SourceRow]:
    """One line of a JSONL file as a row (with ``problem`` set when it is not a JSON object); None when blank."""
    where = f'{path} line {line_no}'
    try:
        text = _decode(path, data, where)
    except DataError as e:
        return SourceRow(where, {}, str(e).split(': ', 1)[1], data.decode('utf-8', 'backslashreplace'))
    if not text.strip():
        return None
    try:
        row = json.loads(text)
    except json.JSONDecodeError as e:
        return SourceRow(where, {}, f'not valid JSON ({e.msg} at column {e.colno})', text.rstrip('\n'))
    if not isinstance(row, dict):
        return SourceRow(where, {}, f'a row must be a JSON object, found {type(row).__name__}', text.rstrip('\n'))
    return SourceRow(where, row)


def _iter_json(path: str) -> Iterator[SourceRow]:
    with open(path, 'rb') as f:
        text = _decode(path, f.read(), path)
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f'{path} line {e.lineno}: not valid JSON ({e.msg} at column {e.colno})') from None
    if isinstance(rows, dict):
        rows = [rows]
    if not isinstance(rows, list):
        raise DataError(f'{path}: expected a JSON array of objects, found {type(rows).__name__}')
    for i, row in enumerate(rows):
        where = f'{path} item {i}'
        if isinstance(row, dict):
            yield SourceRow(where, row)
        else:
            yield SourceRow(where, {}, f'a row must be a JSON object, found {type(row).__name__}', json.dumps(row))


def _iter_parquet(path: str) -> Iterator[SourceRow]:
    import pyarrow.parquet as pq
    row_no = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            row_no += 1
            yield SourceRow(f'{path} row {row_no}', row)


def _iter_csv(path: str) -> Iterator[SourceRow]:
    with open(path, 'rb') as raw:
        lines = (_decode(path, data, f'{path} line {n}') for n, data in enumerate(raw, start=1))
        reader = csv.DictReader(lines)
        for row in reader:
            where = f'{path} line {reader.line_num}'
            if None in row:
                yield SourceRow(where, {}, f'{len(row[None])} more values than header columns', json.dumps(row[None]))
                continue
            yield SourceRow(where, {k: _parse_cell(v) for k, v in row.items()})


def _parse_cell(value: Optional[str]) -> Any:
    """CSV cells are text; a cell written as a JSON list or object is read back as one."""
    if value is None:
        return None
    stripped = value.strip()
    if stripped[:1] in ('[', '{'):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError:
            return value
    return value


def _iter_hf(dataset: str, split: str) -> Iterator[SourceRow]:
    import datasets
    label = f'{dataset} [{split}]'
    if os.path.isdir(dataset) and os.path.exists(os.path.join(dataset, 'dataset_info.json')) and \
            os.path.exists(os.path.join(dataset, 'state.json')):
        data = datasets.load_from_disk(dataset)
    else:
        try:
            data = datasets.load_dataset(dataset, split=split, streaming=True)
        except Exception as e:  # datasets raises many types; the user needs the id and the reason
            raise DataError(f'{label}: could not load the dataset ({type(e).__name__}: {e})') from None
    if isinstance(data, datasets.DatasetDict):
        if split not in data:
            raise DataError(f'{dataset}: no split {split!r}; it has {sorted(data)}')
        data = data[split]
    for i, row in enumerate(data, start=1):
        yield SourceRow(f'{label} row {i}', row)


def column_names(rows: List[Dict[str, Any]]) -> List[str]:
    names: Dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    return list(names)
