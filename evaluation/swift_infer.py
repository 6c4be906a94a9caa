"""Running ``swift infer`` from the inference environment: the evaluation CLI and the benchmarks use it.

vLLM cannot share the training environment's torch, so ``scripts/setup.sh --infer`` builds ``.venv-infer``;
generation runs there when it exists (``INFER_PYTHON`` names another interpreter), else in this environment.
"""
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from datafiles import DataError

INFER_VENV = Path(__file__).resolve().parent.parent / '.venv-infer'


def infer_python() -> str:
    """The inference environment's interpreter: INFER_PYTHON, else .venv-infer when scripts/setup.sh --infer built
    it, else this one."""
    if os.environ.get('INFER_PYTHON'):
        return os.environ['INFER_PYTHON']
    built = INFER_VENV / 'bin' / 'python'
    return str(built) if built.exists() else sys.executable


def swift_executable(python: str) -> str:
    beside = Path(python).with_name('swift')
    return str(beside) if os.sep in python and beside.exists() else (shutil.which('swift') or 'swift')


def infer_backend(choice: str, python: str) -> str:
    """``choice``, or for 'auto' vllm where the inference environment has it and a GPU, else transformers."""
    if choice != 'auto':
        return choice
    # asked of the inference environment, which may not be this process's
    probe = 'import importlib.util, torch; print(importlib.util.find_spec("vllm") is not None and ' \
            'torch.cuda.is_available())'
    proc = subprocess.run([python, '-c', probe], capture_output=True, text=True)
    return 'vllm' if proc.stdout.strip() == 'True' else 'transformers'


def run_swift_infer(model: str, requests_path: str, result_path: str, backend: str = 'auto',
                    max_new_tokens: int = 512, adapters: Sequence[str] = (), extra_args: str = '') -> None:
    """Greedy answers of ``model`` (with LoRA ``adapters``) to the requests JSONL, as swift infer result rows."""
    python = infer_python()
    backend = infer_backend(backend, python)
    print(f'evaluation: swift infer from {python}, backend {backend}', file=sys.stderr, flush=True)
    cmd = [swift_executable(python), 'infer', '--model', model, '--infer_backend', backend,
           '--val_dataset', requests_path, '--result_path', result_path, '--max_new_tokens', str(max_new_tokens),
           '--temperature', '0', *(['--adapters', *adapters] if adapters else []), *shlex.split(extra_args)]
    print('evaluation: running ' + ' '.join(shlex.quote(c) for c in cmd), file=sys.stderr, flush=True)
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise DataError(f'swift infer exited with status {proc.returncode} (its output is above)')
