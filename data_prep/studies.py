"""From the input dataset to a stream of complete studies, whatever the layout.

Rows are read once, normalised, and parked in a temporary SQLite file, which groups the rows of
one study (per-trace layout), finds duplicate studies and traces, and hands the studies back in
input order, without holding the dataset in memory.
"""
import itertools
import json
import os
import sqlite3
import tempfile
from typing import Callable, Iterator, Optional

from tqdm import tqdm

from datafiles import DataError, SourceRow, describe, iter_rows
from datafiles.images import ImagePolicy, check_image

from .columns import PER_TRACE, ColumnMapping, detect
from .outputs import Tally
from .records import Study, StudyHead, Trace, normalise_study_row, normalise_trace_row

SAMPLE_ROWS = 200


class StudyReader:
    """Iterate the studies of a dataset. Invalid rows raise DataError, or with ``on_invalid`` are
    handed to it (the subcommand counts them and lists them in its rejects file)."""

    def __init__(self, dataset: str, split: str, given: ColumnMapping, images: ImagePolicy, tally: Tally,
                 check_images: bool = False, on_invalid: Optional[Callable[[DataError, SourceRow], None]] = None):
        self.dataset, self.split, self.images, self.tally = dataset, split, images, tally
        self.check_images, self.on_invalid = check_images, on_invalid
        rows = iter_rows(dataset, split)
        sample = list(itertools.islice(rows, SAMPLE_ROWS))
        self._rows = itertools.chain(sample, rows)
        self.mapping = detect([s.row for s in sample if s.problem is None], given, describe(dataset, split))

    def __iter__(self) -> Iterator[Study]:
        with tempfile.TemporaryDirectory(prefix='data_prep.') as tmp:
            db = sqlite3.connect(os.path.join(tmp, 'studies.sqlite'))
            try:
                db.executescript('''
                    PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;
                    CREATE TABLE studies (seq INTEGER PRIMARY KEY, study TEXT UNIQUE, head TEXT, src TEXT);
                    CREATE TABLE traces (seq INTEGER PRIMARY KEY, study TEXT, teacher TEXT, text TEXT, src TEXT,
                                         UNIQUE (study, teacher));''')
                self._load(db)
                db.execute('CREATE INDEX traces_by_study ON traces (study, seq)')
                yield from self._studies(db)
            finally:
                db.close()

    def _invalid(self, error: DataError, source: SourceRow) -> None:
        if self.on_invalid is None:
            raise error
        self.on_invalid(error, source)

    def _load(self, db: sqlite3.Connection) -> None:
        rows = traces = 0
        label = describe(self.dataset, self.split)
        for source in tqdm(self._rows, desc=f'reading {label}', unit=' rows', disable=None):
            rows += 1
            try:
                if source.problem is not None:
                    raise DataError(f'{source.where}: {source.problem}',
                                    'not UTF-8' if 'UTF-8' in source.problem else 'not valid JSON')
                if self.mapping.layout == PER_TRACE:
                    head, trace = normalise_trace_row(source, self.mapping, self.images)
                    self._add_trace_row(db, source, head, trace)
                    traces += 1
                else:
                    study = normalise_study_row(source, self.mapping, self.images)
                    self._add_study(db, source, study.head)
                    db.executemany('INSERT INTO traces (study, teacher, text, src) VALUES (?, ?, ?, ?)',
                                   [(study.head.study_id, t.teacher, t.text, source.where) for t in study.traces])
                    traces += len(study.traces)
            except DataError as error:
                self._invalid(error, source)
        self.tally.read[label] = f'{rows} rows ({self.mapping.layout} layout), {traces} traces'

    def _add_study(self, db, source: SourceRow, head: StudyHead) -> None:
        try:
            db.execute('INSERT INTO studies (study, head, src) VALUES (?, ?, ?)',
                       (head.study_id, _head_json(head), source.where))
        except sqlite3.IntegrityError:
            first = db.execute('SELECT src FROM studies WHERE study = ?', (head.study_id,)).fetchone()[0]
            raise DataError(f'{source.where}: field {self.mapping.study or "study id"!r}: duplicate study '
                            f'{head.study_id!r} (first seen at {first})', 'duplicate study') from None

    def _add_trace_row(self, db, source: SourceRow, head: StudyHead, trace: Trace) -> None:
        known = db.execute('SELECT head, src FROM studies WHERE study = ?', (head.study_id,)).fetchone()
        if known is None:
            self._add_study(db, source, head)
        elif known[0] != _head_json(head):
            differs = [name for name, a, b in zip(StudyHead.__dataclass_fields__, _head_from_json(known[0]).__dict__
                                                  .values(), head.__dict__.values()) if a != b]
            raise DataError(f'{source.where}: field {differs[0]!r}: differs from the same study\'s row at {known[1]} '
                            f'(study {head.study_id!r})', 'inconsistent study')
        try:
            db.execute('INSERT INTO traces (study, teacher, text, src) VALUES (?, ?, ?, ?)',
                       (head.study_id, trace.teacher, trace.text, source.where))
        except sqlite3.IntegrityError:
            first = db.execute('SELECT src FROM traces WHERE study = ? AND teacher = ?',
                               (head.study_id, trace.teacher)).fetchone()[0]
            raise DataError(f'{source.where}: field {self.mapping.teacher!r}: a second trace of teacher '
                            f'{trace.teacher!r} for study {head.study_id!r} (first at {first})',
                            'duplicate trace') from None

    def _studies(self, db: sqlite3.Connection) -> Iterator[Study]:
        total = db.execute('SELECT COUNT(*) FROM studies').fetchone()[0]
        cursor = db.execute('''SELECT s.study, s.head, s.src, t.teacher, t.text FROM studies s
                               LEFT JOIN traces t ON t.study = s.study ORDER BY s.seq, t.seq''')
        grouped = itertools.groupby(cursor, key=lambda r: (r[0], r[1], r[2]))
        count = 0
        for (_, head_json, where), rows in tqdm(grouped, total=total, desc='studies', unit=' studies', disable=None):
            head = _head_from_json(head_json)
            traces = tuple(Trace(teacher, text) for _, _, _, teacher, text in rows if teacher is not None)
            if self.check_images:
                try:
                    for i, path in enumerate(head.images):
                        check_image(path, where, f'{self.mapping.images}[{i}]')
                except DataError as error:
                    self._invalid(error, SourceRow(where, {}))
                    continue
            count += 1
            yield Study(head, traces, where)
        self.tally.read['studies'] = count


def _head_json(head: StudyHead) -> str:
    return json.dumps([head.study_id, head.subject_id, head.images, head.question, head.labels, head.label_values],
                      ensure_ascii=False)


def _head_from_json(text: str) -> StudyHead:
    study, subject, images, question, labels, values = json.loads(text)
    return StudyHead(study, subject, tuple(images), question, tuple(labels), tuple(map(tuple, values)))
