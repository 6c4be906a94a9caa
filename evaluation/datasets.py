"""Items made from published label CSVs (``python -m evaluation items``), in the items format ``classify`` reads.

- MS-CXR-T temporal image classification CSV (``--ms-cxr-t CSV``): columns ``dicom_id, previous_dicom_id,
  study_id, previous_study_id, subject_id`` and ``<observation>_progression`` (consolidation, edema,
  pleural_effusion, pneumonia, pneumothorax) holding improving / stable / worsening or empty. Images are found
  under a MIMIC-CXR-JPG root as ``files/pXX/pXXXXXXXX/sSSSSSSSS/<dicom_id>.jpg``; a ``dicom_id`` may also be
  given as such a path (relative to the root), with or without the ``.jpg``. One item per (image pair, labelled observation), id
  ``<dicom_id>:<column prefix>``, images ``[prior, current]``.
- A labelled image CSV in the CheXpert / NIH layout (``--labels-csv CSV``): a ``Path`` column (relative to the
  image root) and observation columns holding 1 / 0 / -1 / blank (parsed as data_prep's chexpert reader does).
  One item per (image, labelled observation) with classes present / absent (label set ``presence``).
  Uncertain (-1) policy, ``--uncertain``: ``skip`` (default: no item, counted), ``present`` (U-Ones) or
  ``absent`` (U-Zeros). Blank: no item.

Rows: CSV row -> normalised record -> item dicts; every error names the file, line and field.
"""
import csv
import os
from typing import Dict, Iterator, List, Optional, Tuple

from datafiles import DataError
from datafiles.labels import label_value

from .labels import MS_CXR_T_OBSERVATIONS, PRESENCE, PRESENCE_CLASSES

MS_CXR_T_ID_COLUMNS = ('dicom_id', 'previous_dicom_id', 'study_id', 'previous_study_id', 'subject_id')
PROGRESSION = {obs.lower().replace(' ', '_') + '_progression': obs for obs in MS_CXR_T_OBSERVATIONS}
TEMPORAL_VALUES = ('improving', 'stable', 'worsening')
UNCERTAIN_POLICIES = ('skip', 'present', 'absent')
# columns of CheXpert / NIH label files that are not observations (ignored)
METADATA_COLUMNS = {'path', 'sex', 'age', 'frontal/lateral', 'ap/pa', 'patient id', 'patient age', 'patient sex',
                    'view position', 'follow-up #', 'image index', 'finding labels', 'subject_id', 'study_id',
                    'dicom_id', 'split'}
TEMPORAL_QUESTION = 'Compared with the prior image, how has the {observation} changed?'
PRESENCE_QUESTION = 'Is there {observation} on this chest X-ray?'


def _error(path: str, line: int, field: str, message: str) -> DataError:
    return DataError(f'{path}: line {line}: field {field!r}: {message}')


def _reader(path: str) -> Tuple[csv.DictReader, object]:
    if not os.path.isfile(path):
        raise DataError(f'{path}: no such file')
    handle = open(path, newline='', encoding='utf-8-sig')
    return csv.DictReader(handle), handle


def csv_kind(path: str) -> Optional[str]:
    """'ms-cxr-t', 'labels-csv', or None when ``path`` is not a .csv file."""
    if not path.lower().endswith('.csv'):
        return None
    reader, handle = _reader(path)
    with handle:
        header = [c.strip() for c in (reader.fieldnames or [])]
    if 'dicom_id' in header or any(c.endswith('_progression') for c in header):
        return 'ms-cxr-t'
    if 'Path' in header:
        return 'labels-csv'
    raise DataError(f'{path}: line 1: neither an MS-CXR-T CSV (dicom_id, previous_dicom_id, ..., '
                    f'<observation>_progression) nor a labels CSV with a "Path" column; found {header}')


def mimic_image(image_root: str, subject_id: str, study_id: str, dicom_id: str) -> str:
    """Path (relative to the MIMIC-CXR-JPG root) of one image. A dicom_id given as a path is kept as it is, with
    ".jpg" added when it has no extension (``files/p10/p10000032/s50000002/<dicom_id>``, as some releases write it)."""
    if '/' in dicom_id or dicom_id.lower().endswith('.jpg'):
        path = dicom_id.lstrip('/') if not os.path.isabs(dicom_id) else os.path.relpath(dicom_id, image_root)
        return path if os.path.splitext(path)[1] else path + '.jpg'
    subject = subject_id[1:] if subject_id[:1] in 'pP' else subject_id
    study = study_id[1:] if study_id[:1] in 'sS' else study_id
    return f'files/p{subject[:2]}/p{subject}/s{study}/{dicom_id}.jpg'


def ms_cxr_t_records(path: str, image_root: str) -> Iterator[Dict]:
    """Normalised records, one per (image pair, labelled observation)."""
    reader, handle = _reader(path)
    with handle:
        header = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in MS_CXR_T_ID_COLUMNS if c not in header]
        if missing:
            raise _error(path, 1, missing[0], f'missing column(s) {", ".join(missing)}')
        unknown = [c for c in header if c not in MS_CXR_T_ID_COLUMNS and c not in PROGRESSION]
        if unknown:
            raise _error(path, 1, unknown[0], f'unknown column; expected {", ".join(MS_CXR_T_ID_COLUMNS)} and '
                         f'<observation>_progression columns ({", ".join(PROGRESSION)})')
        for row in reader:
            line = reader.line_num
            row = {(k or '').strip(): (v or '').strip() for k, v in row.items()}
            for column in MS_CXR_T_ID_COLUMNS:
                if not row.get(column):
                    raise _error(path, line, column, 'empty')
            prior = mimic_image(image_root, row['subject_id'], row['previous_study_id'], row['previous_dicom_id'])
            current = mimic_image(image_root, row['subject_id'], row['study_id'], row['dicom_id'])
            dicom = os.path.splitext(os.path.basename(row['dicom_id']))[0]
            for column, observation in PROGRESSION.items():
                value = row.get(column, '').lower()
                if not value:
                    continue
                if value not in TEMPORAL_VALUES:
                    raise _error(path, line, column, f'{row[column]!r} is not one of '
                                 f'{", ".join(TEMPORAL_VALUES)} or empty')
                yield {'id': f'{dicom}:{column[:-len("_progression")]}', 'line': line,
                       'images': [prior, current], 'observation': observation, 'label': value,
                       'question': TEMPORAL_QUESTION.format(observation=observation.lower())}


def labels_csv_records(path: str, uncertain: str = 'skip', counts: Optional[Dict[str, int]] = None) -> Iterator[Dict]:
    """Normalised records, one per (image, observation labelled 1 / 0, or -1 under the policy)."""
    if uncertain not in UNCERTAIN_POLICIES:
        raise DataError(f'--uncertain {uncertain}: expected one of {", ".join(UNCERTAIN_POLICIES)}')
    counts = counts if counts is not None else {}
    reader, handle = _reader(path)
    with handle:
        header = [c.strip() for c in (reader.fieldnames or [])]
        if 'Path' not in header:
            raise _error(path, 1, 'Path', 'missing column (the image path, relative to --image-root)')
        columns = {}
        for column in header:
            observation = PRESENCE.observation(column)
            if observation:
                columns[column] = observation
            elif column.lower() not in METADATA_COLUMNS:
                raise _error(path, 1, column, f'unknown column: neither an observation '
                             f'({", ".join(PRESENCE.observations)}) nor a known metadata column')
        seen = {}
        for row in reader:
            line = reader.line_num
            row = {(k or '').strip(): (v or '').strip() for k, v in row.items()}
            image = row.get('Path', '')
            if not image:
                raise _error(path, line, 'Path', 'empty')
            for column, observation in columns.items():
                try:
                    value = label_value(row.get(column))
                except ValueError:
                    raise _error(path, line, column, f'expected 1, 0, -1 or blank, found {row[column]!r}') from None
                if value is None:
                    continue
                if value == -1.0:
                    counts['uncertain'] = counts.get('uncertain', 0) + 1
                    if uncertain == 'skip':
                        continue
                    label = uncertain
                else:
                    label = 'present' if value == 1.0 else 'absent'
                item_id = f'{image}:{column.lower().replace(" ", "_")}'
                if item_id in seen:
                    raise _error(path, line, 'Path', f'{image!r} listed twice (first at line {seen[item_id]})')
                seen[item_id] = line
                yield {'id': item_id, 'line': line, 'images': [image], 'observation': observation, 'label': label,
                       'question': PRESENCE_QUESTION.format(observation=observation.lower())}


def build_items(path: str, image_root: str, kind: str, skip_missing: bool = False,
                uncertain: str = 'skip') -> Tuple[List[Dict], Dict]:
    """(item rows in the items format, report {'missing': [...], 'skipped_items': n, 'uncertain': n}).
    A missing image is an error naming the first few unless ``skip_missing``."""
    counts: Dict[str, int] = {}
    records = ms_cxr_t_records(path, image_root) if kind == 'ms-cxr-t' else \
        labels_csv_records(path, uncertain, counts)
    items, missing, skipped = [], [], 0
    for record in records:
        absent = [p for p in record['images'] if not os.path.isfile(os.path.join(image_root, p))]
        for p in absent:
            entry = f'{p} ({path}: line {record["line"]})'
            if entry not in missing:
                missing.append(entry)
        if absent:
            skipped += 1
            continue
        items.append({k: v for k, v in record.items() if k != 'line'})
    if missing and not skip_missing:
        raise DataError(f'{path}: {len(missing)} image(s) not found under {image_root}, e.g. '
                        f'{"; ".join(missing[:3])} (give --skip-missing to leave their items out)')
    if not items:
        raise DataError(f'{path}: no items')
    return items, {'missing': missing, 'skipped_items': skipped, 'uncertain': counts.get('uncertain', 0)}


__all__ = ['build_items', 'csv_kind', 'ms_cxr_t_records', 'labels_csv_records', 'mimic_image', 'PRESENCE_CLASSES']
