"""Source row -> normalised records. Pure functions: no I/O except the optional image check.

A per-study row gives one ``Study`` with all its traces; a per-trace row gives a ``StudyHead``
(what every trace row of the study repeats) and one ``Trace``. Every problem is raised as a
DataError naming the row and the field, with a short ``reason`` used to count skipped rows.
"""
import os
import re
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from datafiles import SourceRow, field_error
from datafiles.images import ImagePolicy, image_paths, resolve_image
from datafiles.labels import is_positive, label_value

from .columns import PER_STUDY, ColumnMapping, teacher_and_trace_keys

_MIMIC_IDS = re.compile(r'(?:^|/)p(\d{6,})/s(\d{6,})(?:/|$)')


@dataclass(frozen=True)
class Trace:
    teacher: str
    text: str


@dataclass(frozen=True)
class StudyHead:
    study_id: str
    subject_id: Optional[str]
    images: Tuple[str, ...]
    question: str
    labels: Tuple[str, ...]
    # observation -> 1.0 positive / 0.0 negative / -1.0 uncertain, where the row says (a list of labels gives 1.0s)
    label_values: Tuple[Tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Study:
    head: StudyHead
    traces: Tuple[Trace, ...]
    where: str


def normalise_study_row(source: SourceRow, mapping: ColumnMapping, images: ImagePolicy) -> Study:
    head = _head(source, mapping, images)
    row, where = source.row, source.where
    traces = []
    if mapping.teacher_columns:
        for teacher, column in mapping.teacher_columns.items():
            traces.append(Trace(teacher, _text(row.get(column), where, column)))
    else:
        value = row.get(mapping.traces)
        if isinstance(value, dict):
            items = [(name, text, f'{mapping.traces}.{name}') for name, text in value.items()]
        elif isinstance(value, list):
            items = []
            for i, item in enumerate(value):
                keys = teacher_and_trace_keys(item) if isinstance(item, dict) else None
                if keys is None:
                    raise field_error(where, f'{mapping.traces}[{i}]', 'expected a dict with a teacher name and a '
                                      'trace (e.g. {"model": ..., "response": ...})', 'wrong type')
                items.append((item[keys[0]], item[keys[1]], f'{mapping.traces}[{i}]'))
        elif value is None:
            raise field_error(where, mapping.traces, 'missing', 'missing field')
        else:
            raise field_error(where, mapping.traces, f'expected a dict or list of teacher traces, found '
                              f'{type(value).__name__}', 'wrong type')
        seen = set()
        for name, text, field in items:
            teacher = _teacher(name, where, field, mapping)
            if teacher in seen:
                raise field_error(where, field, f'teacher {teacher!r} appears twice in this study', 'duplicate trace')
            seen.add(teacher)
            traces.append(Trace(teacher, _text(text, where, field)))
    return Study(head, tuple(traces), where)


def normalise_trace_row(source: SourceRow, mapping: ColumnMapping, images: ImagePolicy) -> Tuple[StudyHead, Trace]:
    row, where = source.row, source.where
    teacher = _teacher(row.get(mapping.teacher), where, mapping.teacher, mapping)
    return _head(source, mapping, images), Trace(teacher, _text(row.get(mapping.trace), where, mapping.trace))


def _head(source: SourceRow, mapping: ColumnMapping, policy: ImagePolicy) -> StudyHead:
    row, where = source.row, source.where
    images = tuple(resolve_image(p, policy, where, mapping.images) for p in image_paths(row, where, mapping.images))
    question = row.get(mapping.question)
    if question is None:
        raise field_error(where, mapping.question, 'missing', 'missing field')
    if not isinstance(question, str):
        raise field_error(where, mapping.question, f'expected text, found {type(question).__name__}', 'wrong type')
    if not question.strip():
        raise field_error(where, mapping.question, 'empty question', 'missing field')
    mimic = _MIMIC_IDS.search(images[0].replace(os.sep, '/'))
    study = _id(row, mapping.study, where) if mapping.study else None
    subject = _id(row, mapping.subject, where) if mapping.subject else None
    if study is None:
        if mimic:
            study = f's{mimic.group(2)}'
        elif mapping.layout == PER_STUDY:
            study = where
        else:
            study = '|'.join(images) + '|' + question
    if subject is None and mimic:
        subject = f'p{mimic.group(1)}'
    return StudyHead(study, subject, images, question, _labels(row, mapping, where), _label_values(row, mapping, where))


def _id(row, column, where) -> str:
    value = row.get(column)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise field_error(where, column, 'missing', 'missing field')
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise field_error(where, column, f'expected a text or integer id, found {type(value).__name__}', 'wrong type')
    return str(value).strip()


def _teacher(value, where, field, mapping: ColumnMapping) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise field_error(where, field, 'missing teacher name', 'missing field')
    if not isinstance(value, str):
        raise field_error(where, field, f'expected a teacher name, found {type(value).__name__}', 'wrong type')
    if mapping.teachers is not None and value not in mapping.teachers:
        raise field_error(where, field, f'unknown teacher {value!r}; the mapping lists {mapping.teachers}',
                          'unknown teacher')
    return value


def _text(value, where, field) -> str:
    """A trace; a missing one (null) counts as an empty trace, which the subcommands drop and report."""
    if value is None:
        return ''
    if not isinstance(value, str):
        raise field_error(where, field, f'expected text, found {type(value).__name__}', 'wrong type')
    return value


def _labels(row: Dict[str, Any], mapping: ColumnMapping, where: str) -> Tuple[str, ...]:
    """Positive observations, from a labels column (list, dict or delimited text) or CheXpert columns."""
    if mapping.label_columns:
        return tuple(obs for obs, column in mapping.label_columns.items() if is_positive(row.get(column)))
    if mapping.labels is None:
        return ()
    value = row.get(mapping.labels)
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(part.strip() for part in re.split(r'[,;|]', value) if part.strip())
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(v.strip() for v in value if v.strip())
    if isinstance(value, dict):
        return tuple(name for name, v in value.items() if is_positive(v))
    raise field_error(where, mapping.labels, f'expected a list, dict or text of labels, found {type(value).__name__}',
                      'wrong type')


def _label_values(row: Dict[str, Any], mapping: ColumnMapping, where: str) -> Tuple[Tuple[str, float], ...]:
    if mapping.label_columns:
        pairs = [(obs, column, row.get(column)) for obs, column in mapping.label_columns.items()]
    elif mapping.labels is not None and isinstance(row.get(mapping.labels), dict):
        pairs = [(name, f'{mapping.labels}.{name}', v) for name, v in row[mapping.labels].items()]
    else:
        return tuple((name, 1.0) for name in _labels(row, mapping, where))
    values = []
    for observation, field, value in pairs:
        try:
            number = label_value(value)
        except ValueError:
            raise field_error(where, field, f'expected 1, 0, -1 or blank, found {value!r}', 'bad label') from None
        if number is not None:
            values.append((observation, number))
    return tuple(values)
