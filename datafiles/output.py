"""Writing output files atomically: each is written to a hidden temporary file beside its final path and renamed
only when the whole command succeeded, so a crash or an error never leaves a half-written file behind."""
import json
import os
import tempfile
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, TextIO


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
