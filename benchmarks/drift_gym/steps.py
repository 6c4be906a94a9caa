"""Steps that run once: a command line (or a small in-process action) with its outputs, skipped on a rerun when
it finished before with the same command, run two at a time when they do not depend on each other.

``<out>/.gym-steps.json`` records each finished step's signature (its command, or the action's description and
inputs). A step is redone when its signature changed or an output is missing; its outputs are removed before it
runs, so an interrupted run never leaves a half-written result that a rerun would take as finished. Each
command's output goes to ``<out>/logs/<step>.log``; a failure stops the run, naming the step, its command and its
log, and keeps every step that finished.
"""
import functools
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

RECORD = '.gym-steps.json'


class StepFailed(RuntimeError):
    pass


@dataclass
class Step:
    name: str                                   # unique; also its log file's name
    outputs: List[str]                          # files or folders it writes
    command: Optional[List[str]] = None         # a command line ...
    action: Optional[Callable[[], None]] = None  # ... or an in-process action
    signature: str = ''                         # for an action: what it reads and does
    needs: List[str] = field(default_factory=list)
    env: Dict[str, str] = field(default_factory=dict)
    clean: Optional[List[str]] = None           # removed before it runs (default: its outputs)
    code: Tuple[str, ...] = ()                  # source folders or files whose change redoes it (the readers of
                                                # a score, the student's builder)

    def key(self) -> str:
        key = shlex.join(self.command) if self.command is not None else self.signature
        return key + (f'  # code {code_digest(self.code)}' if self.code else '')


@functools.lru_cache(maxsize=None)
def code_digest(folders: Tuple[str, ...]) -> str:
    """A hash of the Python and YAML sources under ``folders`` (a file stands for itself)."""
    digest = hashlib.sha256()
    for folder in folders:
        if os.path.isfile(folder):
            with open(folder, 'rb') as f:
                digest.update(os.path.basename(folder).encode() + f.read())
            continue
        for root, dirs, files in sorted(os.walk(folder)):
            dirs.sort()
            for name in sorted(files):
                if name.endswith(('.py', '.yaml')):
                    path = os.path.join(root, name)
                    digest.update(os.path.relpath(path, folder).encode())
                    with open(path, 'rb') as f:
                        digest.update(f.read())
    return digest.hexdigest()[:12]


class Runner:
    def __init__(self, out: str, jobs: int = 1, log=print):
        self.out = out
        self.jobs = max(1, jobs)
        self.log = log
        self.steps: Dict[str, Step] = {}
        self._lock = threading.Lock()
        # in-process actions share the interpreter (torch's global RNG when a student is built): one at a time
        self._action_lock = threading.Lock()
        self._record_path = os.path.join(out, RECORD)
        try:
            with open(self._record_path, encoding='utf-8') as f:
                self.record: Dict[str, Dict] = json.load(f)
        except (OSError, ValueError):
            self.record = {}
        self.timings: Dict[str, float] = {}

    def add(self, step: Step) -> Step:
        """Add ``step`` (a step with the same name and signature is added once)."""
        known = self.steps.get(step.name)
        if known is not None:
            if known.key() != step.key():
                raise ValueError(f'two different steps named {step.name!r}')
            return known
        missing = [n for n in step.needs if n not in self.steps]
        if missing:
            raise ValueError(f'step {step.name!r} needs unknown step(s) {missing}')
        self.steps[step.name] = step
        return step

    def is_done(self, step: Step) -> bool:
        """Finished before with the same command, outputs present, and after every step it needs (so a redone
        step redoes what was made from it)."""
        entry = self.record.get(step.name)
        if not (entry and entry.get('key') == step.key() and all(os.path.exists(p) for p in step.outputs)):
            return False
        for need in step.needs:
            # records without a time (older runs) count as made in order
            before = self.record.get(need, {}).get('finished', 0)
            if not self.is_done(self.steps[need]) or before > entry.get('finished', 0):
                return False
        return True

    def _save_record(self) -> None:
        tmp = self._record_path + '.tmp'
        with open(tmp, 'w', encoding='utf-8') as f:
            json.dump(self.record, f, indent=1, sort_keys=True)
        os.replace(tmp, self._record_path)

    def _execute(self, step: Step) -> float:
        for path in (step.clean if step.clean is not None else step.outputs):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.unlink(path)
        started = time.time()
        if step.command is None:
            try:
                with self._action_lock:
                    step.action()
            except (OSError, ValueError, KeyError) as e:
                raise StepFailed(f'step {step.name} failed: {step.signature}: {type(e).__name__}: {e}') from e
        else:
            log_path = os.path.join(self.out, 'logs', f'{step.name}.log')
            os.makedirs(os.path.dirname(log_path), exist_ok=True)
            with open(log_path, 'w', encoding='utf-8') as log:
                log.write(f'$ {step.key()}\n')
                log.flush()
                done = subprocess.run(step.command, stdout=log, stderr=subprocess.STDOUT,
                                      env={**os.environ, **step.env})
            if done.returncode != 0:
                raise StepFailed(f'step {step.name} failed (exit {done.returncode}): {step.key()}\n'
                                 f'  log: {log_path}\n' + _tail(log_path))
        missing = [p for p in step.outputs if not os.path.exists(p)]
        if missing:
            raise StepFailed(f'step {step.name} finished without writing {missing}: {step.key()}')
        return time.time() - started

    def plan(self) -> List[Step]:
        """The steps a run would execute now, in order (for ``--dry-run``)."""
        return [s for s in self.steps.values() if not self.is_done(s)]

    def run(self, targets: Optional[List[str]] = None) -> Dict[str, float]:
        """Run ``targets`` (default: every step) and what they need; returns seconds per step run now."""
        wanted = set()

        def want(name: str) -> None:
            if name not in wanted:
                wanted.add(name)
                for need in self.steps[name].needs:
                    want(need)

        for name in targets or list(self.steps):
            want(name)
        pending = [n for n in self.steps if n in wanted]   # insertion order: a step comes after its needs
        finished = {n for n in pending if self.is_done(self.steps[n])}
        skipped = len(finished)
        if skipped:
            self.log(f'== {skipped} step(s) done before, kept')
        pending = [n for n in pending if n not in finished]
        running: Dict[Future, str] = {}
        failure: Optional[BaseException] = None
        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            while pending or running:
                if failure is None:
                    for name in list(pending):
                        if len(running) >= self.jobs:
                            break
                        if all(n in finished for n in self.steps[name].needs):
                            pending.remove(name)
                            self.log(f'== {name}: {self.steps[name].key()[:300]}')
                            running[pool.submit(self._execute, self.steps[name])] = name
                if not running:
                    if failure is None and pending:
                        raise StepFailed(f'steps {pending} wait on steps that cannot run')
                    break
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in done:
                    name = running.pop(future)
                    try:
                        seconds = future.result()
                    except BaseException as e:   # keep the others running to their end, then stop
                        failure = failure or e
                        continue
                    with self._lock:
                        self.record[name] = {'key': self.steps[name].key(), 'seconds': round(seconds, 1),
                                             'finished': time.time()}
                        self._save_record()
                    self.timings[name] = seconds
                    finished.add(name)
                    self.log(f'   {name}: {seconds:.0f} s')
        if failure is not None:
            raise failure
        return dict(self.timings)


def _tail(path: str, lines: int = 15) -> str:
    with open(path, encoding='utf-8', errors='replace') as f:
        return ''.join(f.readlines()[-lines:])


def python_module(module: str, *args: str) -> List[str]:
    return [sys.executable, '-m', module, *args]
