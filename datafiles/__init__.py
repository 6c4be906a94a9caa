"""Rows in, rows out: what data_prep and evaluation share.

Reading a dataset row by row, each row with a location naming its file and row (``iter_rows``); the error for
input that cannot be used, naming the file, the row and the field (``DataError``, ``field_error``); output files
that appear whole or not at all (``output_set``); and the command-line wrapper that turns such an error into one
line and exit code 2 (``run_command``).
"""
import argparse
import sys
from typing import List, Optional

from .output import OutputSet, derived_path, dump_row, output_set
from .rows import DataError, SourceRow, column_names, describe, field_error, is_local_file, iter_rows, jsonl_row


def run_command(parser: argparse.ArgumentParser, program: str, argv: Optional[List[str]]) -> int:
    """Parse, run the chosen subcommand (``args.run``), and turn a DataError into a one-line message and exit
    code 2."""
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except DataError as e:
        print(f'{program} {args.command}: error: {e}', file=sys.stderr)
        return 2
    return 0


__all__ = ['DataError', 'OutputSet', 'SourceRow', 'column_names', 'derived_path', 'describe', 'dump_row',
           'field_error', 'is_local_file', 'iter_rows', 'jsonl_row', 'output_set', 'run_command']
