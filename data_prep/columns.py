"""Which column holds what: layout and column detection, and the user's explicit mapping.

Two layouts are understood:

* per-trace: one row per (study, teacher) with a teacher-name column and a trace column;
  the rows of one study are grouped by study id (they need not be adjacent).
* per-study: one row per study holding every teacher's trace, either as one column per teacher
  (``GPT-5``, ``gemini_2_5_answer``, ...) or as one column whose value maps teacher -> trace
  (a dict, or a list of {teacher, trace} dicts).

Detection rules, applied to the first rows of the input (names compared in lower case with
``_``, ``-``, ``.`` and spaces removed; the first candidate present wins):

* each field has a list of candidate names (``CANDIDATES`` below);
* a teacher column *and* a trace column -> per-trace;
* otherwise a column whose values are dicts of strings, or lists of dicts with a teacher and a
  trace key -> per-study with a traces column;
* otherwise columns named after known teacher families (gpt, gemini, claude/sonnet, grok, qwen,
  glm, moonshot/kimi) holding text -> per-study with one column per teacher;
* labels: a labels column, or CheXpert-style columns named after the observations (1 = positive);
* study and subject ids: their columns, else read from MIMIC-CXR image paths
  (``.../p10000032/s50414267/...``), else the study is the row (per-study) or the pair
  (images, question) (per-trace), and there is no subject id.

Anything given explicitly (flags, or a YAML file with the same keys) overrides detection.
"""
import re
from dataclasses import dataclass, field, fields, replace
from typing import Any, Dict, List, Optional, Sequence

import yaml

from datafiles import DataError

from .text import OBSERVATIONS, normalise_name

PER_TRACE, PER_STUDY = 'per-trace', 'per-study'

CANDIDATES = {
    'study': ['study_id', 'studyid', 'study', 'dicom_id', 'id'],
    'subject': ['subject_id', 'subjectid', 'subject', 'patient_id', 'patient', 'pid'],
    'images': ['images', 'image', 'image_path', 'image_paths', 'img_path', 'img', 'jpg_path', 'path', 'file_path'],
    'question': ['question', 'query', 'prompt', 'instruction', 'input'],
    'teacher': ['teacher', 'teacher_model', 'model', 'model_name', 'source', 'annotator'],
    'trace': ['trace', 'reasoning', 'reasoning_trace', 'trajectory', 'answer', 'response', 'output', 'rationale',
              'completion', 'text'],
    'traces': ['traces', 'teachers', 'answers', 'responses', 'trajectories', 'outputs'],
    'labels': ['labels', 'label', 'observations', 'chexpert_labels', 'findings', 'diagnosis'],
}
TEACHER_FAMILIES = ('gpt', 'gemini', 'claude', 'sonnet', 'grok', 'qwen', 'glm', 'moonshot', 'kimi')
TEACHER_KEYS = ('teacher', 'model', 'model_name', 'source', 'name')
TRACE_KEYS = ('trace', 'reasoning', 'answer', 'response', 'output', 'text', 'content')
MAPPING_FLAGS = ('--layout, --study-column, --subject-column, --image-column, --question-column, --teacher-column, '
                 '--trace-column, --traces-column, --teacher-columns NAME=COLUMN,..., --labels-column, --mapping FILE')


@dataclass(frozen=True)
class ColumnMapping:
    layout: Optional[str] = None
    study: Optional[str] = None
    subject: Optional[str] = None
    images: Optional[str] = None
    question: Optional[str] = None
    labels: Optional[str] = None
    label_columns: Dict[str, str] = field(default_factory=dict)    # observation -> column (CheXpert style)
    teacher: Optional[str] = None                                   # per-trace
    trace: Optional[str] = None                                     # per-trace
    traces: Optional[str] = None                                    # per-study, one dict/list column
    teacher_columns: Dict[str, str] = field(default_factory=dict)   # per-study, teacher -> column
    teachers: Optional[List[str]] = None                            # the teachers to accept; None: all

    def describe(self) -> str:
        parts = [f'layout={self.layout}']
        for name in ('study', 'subject', 'images', 'question', 'teacher', 'trace', 'traces', 'labels'):
            value = getattr(self, name)
            if value is not None:
                parts.append(f'{name}={value!r}')
        if self.study is None:
            parts.append('study=<from MIMIC-CXR image path, else the row>')
        if self.subject is None:
            parts.append('subject=<from MIMIC-CXR image path, if any>')
        if self.teacher_columns:
            parts.append('teacher_columns={' + ', '.join(f'{t}: {c!r}' for t, c in self.teacher_columns.items()) + '}')
        if self.label_columns:
            parts.append(f'label_columns={len(self.label_columns)} CheXpert columns')
        if self.teachers:
            parts.append(f'teachers={self.teachers}')
        return ', '.join(parts)


def load_mapping_file(path: str) -> ColumnMapping:
    """A YAML file whose keys are ColumnMapping's fields, e.g. ``{layout: per-trace, trace: reasoning}``."""
    try:
        with open(path, encoding='utf-8') as f:
            data = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as e:
        raise DataError(f'{path}: cannot read the column mapping ({e})') from None
    if not isinstance(data, dict):
        raise DataError(f'{path}: the column mapping must be a YAML mapping of field: column')
    known = {f.name for f in fields(ColumnMapping)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise DataError(f'{path}: unknown key(s) {unknown}; the keys are {sorted(known)}')
    for key in ('teacher_columns', 'label_columns'):
        if key in data and not isinstance(data[key], dict):
            raise DataError(f'{path}: {key!r} must map names to columns')
    if 'teachers' in data and not isinstance(data['teachers'], list):
        raise DataError(f'{path}: \'teachers\' must be a list of teacher names')
    return ColumnMapping(**data)


def merge(base: ColumnMapping, override: ColumnMapping) -> ColumnMapping:
    """``override``'s set fields win over ``base``'s."""
    changes = {f.name: getattr(override, f.name) for f in fields(ColumnMapping) if getattr(override, f.name)}
    return replace(base, **changes)


def detect(sample: Sequence[Dict[str, Any]], given: ColumnMapping, where: str) -> ColumnMapping:
    """Fill what ``given`` leaves open from the columns of ``sample``; raise naming what is missing."""
    columns: List[str] = []
    for row in sample:
        columns.extend(c for c in row if c not in columns)
    if not columns:
        raise DataError(f'{where}: no rows to read')
    by_norm = {normalise_name(c): c for c in columns}

    def missing(name: str, problem: str) -> DataError:
        return DataError(f'{where}: {problem}. Columns found: {columns}. Set the mapping with {MAPPING_FLAGS}.')

    for name in ('study', 'subject', 'images', 'question', 'labels', 'teacher', 'trace', 'traces'):
        value = getattr(given, name)
        if value is not None and value not in columns:
            raise missing(name, f'the {name} column {value!r} given in the mapping does not exist')
    for teacher, column in given.teacher_columns.items():
        if column not in columns:
            raise missing('teacher_columns', f'the column {column!r} mapped to teacher {teacher!r} does not exist')

    def find(name: str, taken: Sequence[Optional[str]] = ()) -> Optional[str]:
        value = getattr(given, name)
        if value is not None:
            return value
        for candidate in CANDIDATES[name]:
            column = by_norm.get(normalise_name(candidate))
            if column is not None and column not in taken:
                return column
        return None

    mapping = {name: find(name) for name in ('study', 'subject', 'images', 'question')}
    if mapping['images'] is None:
        raise missing('images', 'no image column found')
    if mapping['question'] is None:
        raise missing('question', 'no question column found')
    taken = list(mapping.values())

    label_columns = dict(given.label_columns)
    labels = find('labels', taken)
    if labels is None and not label_columns:
        label_columns = {obs: by_norm[normalise_name(obs)] for obs in OBSERVATIONS if normalise_name(obs) in by_norm}
        if len(label_columns) < 3:  # a lone column named "Edema" is more likely a trace than a label
            label_columns = {}
    taken += [labels, *label_columns.values()]

    layout = given.layout
    teacher, trace = find('teacher', taken), find('trace', taken + [find('teacher', taken)])
    traces = find('traces', taken)
    teacher_columns = dict(given.teacher_columns)
    if layout is None:
        if teacher is not None and trace is not None:
            layout = PER_TRACE
        elif traces is not None or _traces_column(sample, columns, taken):
            layout = PER_STUDY
            traces = traces or _traces_column(sample, columns, taken)
        else:
            teacher_columns = teacher_columns or _teacher_columns(sample, columns, taken)
            if teacher_columns:
                layout = PER_STUDY
    if layout == PER_TRACE:
        if teacher is None or trace is None:
            raise missing('teacher', 'per-trace layout needs a teacher column and a trace column')
        result = ColumnMapping(layout=layout, teacher=teacher, trace=trace, **mapping)
    elif layout == PER_STUDY:
        if not teacher_columns and traces is None:
            teacher_columns = _teacher_columns(sample, columns, taken)
        if not teacher_columns and traces is None:
            raise missing('traces', 'per-study layout needs a traces column or one column per teacher')
        result = ColumnMapping(layout=layout, traces=None if teacher_columns else traces,
                               teacher_columns=teacher_columns, **mapping)
    elif layout is None:
        raise missing('layout', 'could not tell the layout: no teacher + trace columns (one row per trace), no '
                      'column of teacher traces and no columns named after teachers (one row per study)')
    else:
        raise DataError(f'unknown layout {layout!r}: use {PER_TRACE!r} or {PER_STUDY!r}')
    result = replace(result, labels=labels, label_columns=label_columns, teachers=given.teachers)
    if result.teachers and result.teacher_columns:
        absent = [t for t in result.teachers if t not in result.teacher_columns]
        if absent:
            raise missing('teachers', f'teacher(s) {absent} in the mapping have no column '
                          f'(teacher columns: {list(result.teacher_columns)})')
        result = replace(result, teacher_columns={t: result.teacher_columns[t] for t in result.teachers})
    return result


def _values(sample, column):
    return [row.get(column) for row in sample if row.get(column) is not None]


def _traces_column(sample, columns, taken) -> Optional[str]:
    """A column whose values map teacher -> trace: {name: text} or [{teacher: .., trace: ..}, ...]."""
    for column in columns:
        if column in taken:
            continue
        values = _values(sample, column)
        if values and all(_is_traces_value(v) for v in values):
            return column
    return None


def _is_traces_value(value) -> bool:
    if isinstance(value, dict):
        return bool(value) and all(isinstance(v, str) or v is None for v in value.values())
    if isinstance(value, list):
        return bool(value) and all(isinstance(item, dict) and teacher_and_trace_keys(item) for item in value)
    return False


def teacher_and_trace_keys(item: Dict[str, Any]):
    teacher = next((k for k in TEACHER_KEYS if k in item), None)
    trace = next((k for k in TRACE_KEYS if k in item), None)
    return (teacher, trace) if teacher and trace else None


def _teacher_columns(sample, columns, taken) -> Dict[str, str]:
    found = {}
    for column in columns:
        if column in taken or not normalise_name(column).startswith(TEACHER_FAMILIES):
            continue
        values = _values(sample, column)
        if values and all(isinstance(v, str) for v in values):
            found[re.sub(r'[_ ](answer|response|trace|reasoning|output)$', '', column, flags=re.I)] = column
    return found


def parse_pairs(text: str, flag: str) -> Dict[str, str]:
    """``A=col_a,B=col_b`` -> {A: col_a, B: col_b}."""
    pairs = {}
    for item in filter(None, (part.strip() for part in text.split(','))):
        name, sep, column = item.partition('=')
        if not sep or not name.strip() or not column.strip():
            raise DataError(f'{flag}: expected NAME=COLUMN pairs separated by commas, got {item!r}')
        pairs[name.strip()] = column.strip()
    return pairs
