"""Label cells as datasets write them (CheXpert CSVs, JSON label dicts): 1 / 0 / -1 / blank and their spellings."""
from typing import Optional

_POSITIVE = {'1', '1.0', 'true', 'yes', 'positive', 'present'}
_NEGATIVE = {'0', '0.0', 'false', 'no', 'negative', 'absent'}
_UNCERTAIN = {'-1', '-1.0', 'uncertain'}
_BLANK = {'', 'nan', 'none', 'null'}


def label_value(value) -> Optional[float]:
    """1.0 positive, 0.0 negative, -1.0 uncertain, None blank; ValueError for anything else."""
    text = '' if value is None else str(value).strip().lower()
    if isinstance(value, (list, dict)) or text not in _POSITIVE | _NEGATIVE | _UNCERTAIN | _BLANK:
        raise ValueError(value)
    return 1.0 if text in _POSITIVE else 0.0 if text in _NEGATIVE else -1.0 if text in _UNCERTAIN else None


def is_positive(value) -> bool:
    return value is not None and not isinstance(value, (list, dict)) and str(value).strip().lower() in _POSITIVE
