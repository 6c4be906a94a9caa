"""Study labels from MIMIC-CXR-JPG's ``mimic-cxr-2.0.0-chexpert.csv`` (``report --labels-csv FILE``).

Columns subject_id, study_id and the 14 CheXpert observations; 1.0 positive, 0.0 negative, -1.0 uncertain, blank
not mentioned. Studies are joined by study id with or without MIMIC's "s" prefix (50414267 = s50414267).
"""
import csv
import os
from typing import Dict, Optional

from datafiles import DataError
from datafiles.labels import label_value

from .text import OBSERVATIONS

REQUIRED = ('subject_id', 'study_id', *OBSERVATIONS)


def study_key(study_id: str) -> str:
    text = str(study_id).strip()
    return text[1:] if text[:1] in ('s', 'S') and text[1:].isdigit() else text


def load_labels_csv(path: str) -> Dict[str, Dict[str, float]]:
    """study key -> {observation: 1.0 / 0.0 / -1.0} (blank cells left out)."""
    if not os.path.isfile(path):
        raise DataError(f'{path}: labels file not found')
    labels: Dict[str, Dict[str, float]] = {}
    with open(path, newline='', encoding='utf-8') as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or ())]
        if missing:
            raise DataError(f'{path}: line 1: missing column(s) {", ".join(missing)} (a MIMIC-CXR-JPG chexpert '
                            f'labels file has {", ".join(REQUIRED)})')
        for row in reader:
            line = reader.line_num
            study = study_key(row['study_id'] or '')
            if not study:
                raise DataError(f'{path}: line {line}: column \'study_id\': empty')
            if study in labels:
                raise DataError(f'{path}: line {line}: column \'study_id\': study {study} listed twice')
            values: Dict[str, float] = {}
            for observation in OBSERVATIONS:
                value: Optional[float]
                try:
                    value = label_value(row[observation])
                except ValueError:
                    raise DataError(f'{path}: line {line}: column {observation!r}: expected 1.0, 0.0, -1.0 or '
                                    f'blank, found {row[observation]!r}') from None
                if value is not None:
                    values[observation] = value
            labels[study] = values
    return labels
