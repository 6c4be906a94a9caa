"""The tally that every data_prep subcommand prints, and the rows it writes and rejects (outputs are atomic:
``datafiles.output_set``)."""
from collections import Counter
from typing import Any, Dict, List, Optional, TextIO

from datafiles import dump_row


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
