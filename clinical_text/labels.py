"""Labels that people or other labellers gave texts, read from files: the reference labels of
``evaluation report-gen --reference-labels`` and the study labels of ``data_prep report --labels-csv``.

- CSV (CheXpert style, such as MIMIC-CXR-JPG's ``mimic-cxr-2.0.0-chexpert.csv``): a key column, ``study_id``
  (with or without MIMIC's "s" prefix: 50414267 = s50414267) or ``id``, and a column per observation among the 14
  CheXpert observations (any of them; the ones absent are unlabelled); 1 positive, 0 negative, -1 uncertain, blank
  not mentioned (1.0 / 0.0 / -1.0, true / false and positive / negative / uncertain too).
- JSONL (or JSON, parquet: any file ``datafiles.iter_rows`` reads): one object per text, ``{"id": ...}`` or
  ``{"study_id": ...}``, with the labels under ``"labels"``
  (``{"Edema": 1, "Pneumothorax": 0}``) or as top-level observation keys; null for not mentioned.

Every problem names the file, the line and the column or field.
"""
import csv
import os
from typing import Dict, Mapping, Optional, Sequence

from datafiles import DataError, iter_rows
from datafiles.labels import label_value

from .vocabulary import NEGATIVE, OBSERVATIONS, POSITIVE, UNCERTAIN

# MIMIC-CXR-JPG's chexpert labels file: the drift report reads the teachers' truth from it.
REQUIRED = ('subject_id', 'study_id', *OBSERVATIONS)
KEY_COLUMNS = ('study_id', 'id')
_CALLS = {1.0: POSITIVE, 0.0: NEGATIVE, -1.0: UNCERTAIN}


def study_key(study_id: str) -> str:
    text = str(study_id).strip()
    return text[1:] if text[:1] in ('s', 'S') and text[1:].isdigit() else text


def as_calls(values: Mapping[str, float]) -> Dict[str, Optional[str]]:
    """{observation: 1.0 / 0.0 / -1.0} -> the reader's calls (positive / negative / uncertain, None unlabelled)."""
    return {observation: _CALLS.get(values.get(observation)) for observation in OBSERVATIONS}


def load_labels_csv(path: str, required: Sequence[str] = REQUIRED) -> Dict[str, Dict[str, float]]:
    """key -> {observation: 1.0 / 0.0 / -1.0} (blank cells left out), from a CheXpert-style CSV."""
    if not os.path.isfile(path):
        raise DataError(f'{path}: labels file not found')
    labels: Dict[str, Dict[str, float]] = {}
    with open(path, newline='', encoding='utf-8') as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            raise DataError(f'{path}: line 1: missing column(s) {", ".join(missing)} (a MIMIC-CXR-JPG chexpert '
                            f'labels file has {", ".join(REQUIRED)})')
        key_column = next((c for c in KEY_COLUMNS if c in header), None)
        observations = [o for o in OBSERVATIONS if o in header]
        if key_column is None or not observations:
            raise DataError(f'{path}: line 1: expected a key column ({" or ".join(KEY_COLUMNS)}) and at least one '
                            f'of the 14 CheXpert observations as columns; found {header}')
        for row in reader:
            line = reader.line_num
            key = study_key(row[key_column] or '')
            if not key:
                raise DataError(f'{path}: line {line}: column {key_column!r}: empty')
            if key in labels:
                raise DataError(f'{path}: line {line}: column {key_column!r}: {key} listed twice')
            values: Dict[str, float] = {}
            for observation in observations:
                value = _value(row[observation], f'{path}: line {line}: column {observation!r}')
                if value is not None:
                    values[observation] = value
            labels[key] = values
    return labels


def load_reference_labels(path: str) -> Dict[str, Dict[str, float]]:
    """key (an item id or a study id) -> {observation: 1.0 / 0.0 / -1.0}, from a CSV or a JSONL file."""
    if path.lower().endswith('.csv'):
        return load_labels_csv(path, required=())
    if not os.path.isfile(path):
        raise DataError(f'{path}: labels file not found')
    labels: Dict[str, Dict[str, float]] = {}
    for source in iter_rows(path):
        where, row = source.where, source.row
        if source.problem:
            raise DataError(f'{where}: {source.problem}')
        field = next((k for k in ('id', 'study_id') if k in row), None)
        if field is None or row[field] in (None, ''):
            raise DataError(f'{where}: field \'id\': missing (or give \'study_id\')')
        key = study_key(row[field]) if field == 'study_id' else str(row[field])
        if key in labels:
            raise DataError(f'{where}: field {field!r}: {key} listed twice')
        given = row.get('labels', {k: v for k, v in row.items() if k in OBSERVATIONS})
        if not isinstance(given, dict):
            raise DataError(f'{where}: field \'labels\': expected an object of observation: label')
        unknown = sorted(set(given) - set(OBSERVATIONS))
        if unknown:
            raise DataError(f'{where}: field \'labels\': {unknown} are not CheXpert observations')
        values = {}
        for observation, cell in given.items():
            value = _value(cell, f'{where}: field \'labels.{observation}\'')
            if value is not None:
                values[observation] = value
        labels[key] = values
    if not labels:
        raise DataError(f'{path}: no labels')
    return labels


def _value(cell, where: str) -> Optional[float]:
    try:
        return label_value(cell)
    except ValueError:
        raise DataError(f'{where}: expected 1, 0, -1 or blank, found {cell!r}') from None
