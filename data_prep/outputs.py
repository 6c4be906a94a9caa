"""Writing outputs atomically and keeping the tally that every subcommand prints.

Each output is written to a hidden temporary file beside its final path and renamed only when the
whole subcommand succeeded, so a crash or an error never leaves a half-written file behind.
"""
import json
import os
import tempfile
from collections import Counter
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, TextIO


def dump_row(row: Dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False) + '\n'


def _mode_for_new_files() -> int:
    """What ``open()`` would give a new file under the user's umask (mkstemp's files are 0o600): outputs derived
    from MIMIC-CXR are as private as the user keeps their files, never forced world-readable."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


class OutputSet:
    """Temporary files that become the named outputs together, on ``commit``."""

    def __init__(self):
        self._files: List[tuple] = []

    def open(self, path: str, binary: bool = False) -> TextIO:
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.', suffix='.tmp', dir=directory)
        handle = os.fdopen(fd, 'wb') if binary else os.fdopen(fd, 'w', encoding='utf-8', newline='\n')
        self._files.append((handle, tmp, path))
        return handle

    def temp_path(self, path: str) -> str:
        """A temporary path for a writer that opens files itself (e.g. matplotlib)."""
        handle = self.open(path, binary=True)
        handle.close()
        return self._files[-1][1]

    def commit(self) -> None:
        for handle, tmp, path in self._files:
            handle.close()
            os.chmod(tmp, _mode_for_new_files())
            os.replace(tmp, path)
        self._files = []

    def discard(self) -> None:
        for handle, tmp, _ in self._files:
            handle.close()
            if os.path.exists(tmp):
                os.unlink(tmp)
        self._files = []


@contextmanager
def output_set() -> Iterator[OutputSet]:
    outputs = OutputSet()
    try:
        yield outputs
        outputs.commit()
    finally:
        outputs.discard()


def derived_path(path: str, tag: str) -> str:
    """data/sft.jsonl + 'eval' -> data/sft.eval.jsonl"""
    stem, ext = os.path.splitext(path)
    return f'{stem}.{tag}{ext or ".jsonl"}'


class Tally:
    """What a subcommand read, wrote and dropped (by reason); printed at the end of every run."""

    def __init__(self, command: str):
        self.command = command
        self.read: Dict[str, Any] = {}
        self.wrote: Dict[str, int] = {}
        self.dropped: Counter = Counter()
        self.skipped: Counter = Counter()
        self.notes: List[str] = []

    def drop(self, reason: str, count: int = 1) -> None:
        self.dropped[reason] += count

    def as_dict(self) -> Dict[str, Any]:
        return {'read': self.read, 'wrote': self.wrote, 'dropped': dict(sorted(self.dropped.items())),
                'skipped_invalid': dict(sorted(self.skipped.items())), 'notes': self.notes}

    def format(self) -> str:
        lines = [f'data_prep {self.command}:']
        lines += [f'  read   {name}: {value}' for name, value in self.read.items()]
        lines += [f'  wrote  {path}' + (f': {count} rows' if path.endswith('.jsonl') else '')
                  for path, count in self.wrote.items()]
        lines += [f'  dropped ({reason}): {count}' for reason, count in sorted(self.dropped.items())]
        lines += [f'  skipped invalid ({reason}): {count}' for reason, count in sorted(self.skipped.items())]
        if not self.dropped and not self.skipped:
            lines.append('  dropped: nothing')
        lines += [f'  note: {note}' for note in self.notes]
        return '\n'.join(lines)


def write_rows(handle: TextIO, rows, tally: Tally, path: str) -> None:
    for row in rows:
        handle.write(dump_row(row))
        tally.wrote[path] = tally.wrote.get(path, 0) + 1


def rejects_row(where: str, reason: str, message: str, raw: Optional[str], row: Optional[Dict]) -> Dict[str, Any]:
    entry = {'where': where, 'reason': reason, 'error': message}
    if raw is not None:
        entry['raw'] = raw
    elif row:
        entry['row'] = row
    return entry
