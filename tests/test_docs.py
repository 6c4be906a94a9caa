"""Every command the README and docs/ show exists, and every --flag shown on it is one its --help lists.

A command is a line of a fenced code block (backslash continuations joined, comments dropped) or an inline code
span that starts with one of the project's entry points: `swift <command>`, `python -m data_prep|evaluation|
swift_plugin [subcommand]`, `python benchmarks/*.py` or `tools/*.py`, `bash scripts/*.sh` or `shells/*.sh`.
"""
import functools
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, SWIFT_COMMAND

DOCS = [REPO / 'README.md', *sorted((REPO / 'docs').glob('*.md'))]
PROGRAM = re.compile(r'^(?:[A-Z_]+=\S*\s+)*(?:source \S+\s*)?'
                     r'(?P<program>swift [a-z-]+|(?:\.venv/bin/)?python3? -m (?:data_prep|evaluation|swift_plugin)'
                     r'(?: [a-z][a-z-]*)?|(?:\.venv/bin/)?python3? (?:benchmarks|tools)/\S+\.py|bash (?:scripts|shells)/\S+\.sh)'
                     r'(?P<rest>.*)$')
FLAG = re.compile(r'(?<![\w-])--[a-z][a-z0-9_-]*')
# Launchers pass extra arguments to the swift command they run.
LAUNCHED = {'SFT-Qwen2.5.sh': 'sft', 'APO-Qwen2.5.sh': 'rlhf', 'consensus-Qwen2.5.sh': 'infer',
            'merge-SFT.sh': 'export'}


def _commands(path: Path):
    """(line number, command text) of every command shown in a Markdown file."""
    text = path.read_text(encoding='utf-8')
    found, in_block, pending = [], False, ''
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith('```'):
            in_block, pending = not in_block, ''
            continue
        if in_block:
            line = pending + re.sub(r'\s#\s.*$', '', line).strip()
            if line.endswith('\\'):
                pending = line[:-1] + ' '
                continue
            pending = ''
            found.append((number, line))
        else:
            found += [(number, span) for span in re.findall(r'`([^`]+)`', line)]
    return [(number, command) for number, command in found if PROGRAM.match(command)]


SHOWN = [(path, number, command) for path in DOCS for number, command in _commands(path)]


@functools.lru_cache(maxsize=None)
def _help(program: str) -> str:
    words = program.split()
    if words[0] == 'swift':
        argv = [*SWIFT_COMMAND, *words[1:]]
    elif words[0].endswith(('python', 'python3')):
        argv = [sys.executable, *words[1:]]
    else:
        return ''
    proc = subprocess.run([*argv, '--help'], capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={'HF_HUB_OFFLINE': '1', 'PATH': str(Path(sys.executable).parent) + ':/usr/bin:/bin'})
    assert proc.returncode == 0, f'{program} --help failed:\n{proc.stderr[-2000:]}'
    return proc.stdout


def test_the_docs_show_commands():
    assert len(SHOWN) > 40 and {p.name for p, _, _ in SHOWN} >= {'README.md', 'performance.md', 'evaluation.md'}


@pytest.mark.parametrize('path, number, command', SHOWN, ids=[f'{p.name}:{n}' for p, n, _ in SHOWN])
def test_command_exists_and_takes_its_flags(path, number, command):
    program = PROGRAM.match(command)['program']
    flags = FLAG.findall(PROGRAM.match(command)['rest'])
    words = program.split()
    script = next((w for w in words if w.endswith(('.py', '.sh'))), None)
    if script:
        assert (REPO / script).is_file(), f'{path.name}:{number}: {script} does not exist'
    if script and script.endswith('.sh'):
        accepted = (REPO / script).read_text()
        if Path(script).name in LAUNCHED:
            accepted += _help(f'swift {LAUNCHED[Path(script).name]}')
    else:
        accepted = _help(program)
    for flag in flags:
        assert re.search(re.escape(flag) + r'(?![\w-])', accepted), \
            f'{path.name}:{number}: {program} does not take {flag} (in: {command})'
