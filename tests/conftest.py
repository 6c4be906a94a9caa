"""Shared fixtures: tiny random models built offline, APO datasets with images, and a runner for the
real ``swift`` CLI that returns what the run logged (ms-swift's logging.jsonl)."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
# ms-swift fixes Qwen-VL's pixel budget from MAX_PIXELS when it first loads a Qwen-VL processor in a process
# (module constants of qwen_vl_utils, and IMAGE_MAX_TOKEN_NUM in the environment), so every in-process test
# gets the tests' one budget, whichever test loads first.
os.environ.setdefault('MAX_PIXELS', '3136')
# The same budget of 4 image tokens for the patch-16 families (Qwen3-VL, Qwen3.5), whichever family loads first
# (ms-swift derives IMAGE_MAX_TOKEN_NUM from MAX_PIXELS with the first family's patch size).
os.environ.setdefault('IMAGE_MAX_TOKEN_NUM', '4')
sys.path.insert(0, str(REPO / 'tools'))
from tiny_models import build_model  # noqa: E402
from tiny_qwen2_5_vl import build_tiny_moe_model, build_tiny_qwen2_5_vl, build_tiny_text_model  # noqa: E402

# The installed ``swift`` script; in a checkout that is not pip-installed (scripts/gpu_check.sh on an image with its
# own torch), ``python -m swift_plugin``, which arms the APO registration in every interpreter ms-swift starts.
_INSTALLED_SWIFT = Path(sys.executable).with_name('swift')
SWIFT_COMMAND = [str(_INSTALLED_SWIFT)] if _INSTALLED_SWIFT.exists() else [sys.executable, '-m', 'swift_plugin']
CPU_FLAGS = ['--check_model', 'false', '--report_to', 'none', '--torch_dtype', 'float32', '--fp16', 'false',
             '--bf16', 'false', '--dataloader_num_workers', '0', '--logging_steps', '1', '--seed', '42']
VL_FLAGS = ['--model_type', 'qwen2_5_vl', '--template', 'qwen2_5_vl']
TEXT_FLAGS = ['--model_type', 'qwen2', '--template', 'qwen2_5']
MOE_FLAGS = ['--model_type', 'qwen2_moe', '--template', 'qwen2_5']


@pytest.fixture(scope='session')
def tiny_vl_model(tmp_path_factory) -> str:
    return str(build_tiny_qwen2_5_vl(tmp_path_factory.mktemp('models') / 'tiny-qwen2.5-vl'))


@pytest.fixture(scope='session')
def tiny_text_model(tmp_path_factory) -> str:
    return str(build_tiny_text_model(tmp_path_factory.mktemp('models') / 'tiny-qwen2.5-text'))


@pytest.fixture(scope='session')
def tiny_moe_model(tmp_path_factory) -> str:
    return str(build_tiny_moe_model(tmp_path_factory.mktemp('models') / 'tiny-qwen2-moe'))


@pytest.fixture(scope='session')
def family_model(tmp_path_factory):
    """family name -> the directory of its tiny random model (tools/tiny_models.py), built once per session."""
    root = tmp_path_factory.mktemp('families')
    return lambda name: str(build_model(root / name, name))


def mean_log_1_plus_k(ks: Sequence[int]) -> float:
    return sum(math.log1p(k) for k in ks) / len(ks)


def write_apo_rows(path: Path, ks: Sequence[int], images: bool = True, sources: bool = True,
                   easy: bool = False) -> Path:
    """One APO row per entry of ``ks`` (its number of rejected answers), images as tiny PNGs beside ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        for i, k in enumerate(ks):
            chosen = 'yes yes yes' if easy else f'Consensus {i}: left basal opacity with volume loss.'
            row = {
                'messages': [{'role': 'user', 'content': ('<image>' if images else '') +
                              f'Which findings support the diagnosis of atelectasis in study {i}?'},
                             {'role': 'assistant', 'content': chosen}],
                'rejected_response': [('no no no no' if easy else f'Teacher {j} on study {i}: effusion, maybe {j}.')
                                      for j in range(k)],
            }
            if sources:
                row['rejected_sources'] = [f'T{j}' for j in range(k)]
            if images:
                image = path.parent / f'study{i % 3}.png'
                if not image.exists():
                    Image.new('RGB', (56, 56), (40 * i % 256, 120, 200)).save(image)
                row['images'] = [str(image)]
            f.write(json.dumps(row) + '\n')
    return path


def text_training_args(model: str, data: Path) -> List[str]:
    """Full tuning of the tiny text model: three steps of two rows, no checkpoints."""
    return ['--model', model, *TEXT_FLAGS, '--tuner_type', 'full', '--dataset', str(data), '--split_dataset_ratio', '0',
            '--per_device_train_batch_size', '2', '--gradient_accumulation_steps', '1', '--learning_rate', '1e-4',
            '--max_steps', '3', '--save_strategy', 'no']


def write_dpo_rows(path: Path, n: int) -> Path:
    """``n`` text-only rows in DPO's own format: one rejected answer as a plain string."""
    write_apo_rows(path, [1] * n, images=False, sources=False)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text(''.join(json.dumps({**r, 'rejected_response': r['rejected_response'][0]}) + '\n' for r in rows))
    return path


def read_logs(output_dir: Path) -> List[Dict]:
    """The log_history lines (training and eval) of the newest run under an ms-swift output_dir."""
    run_dir = sorted(p for p in Path(output_dir).glob('v*-*') if (p / 'logging.jsonl').exists())[-1]
    lines = [json.loads(line) for line in (run_dir / 'logging.jsonl').read_text().splitlines()]
    return [line for line in lines if 'loss' in line or 'eval_loss' in line]


def run_swift(command: str, args: Sequence[str], output_dir: Path, env: Optional[Dict[str, str]] = None,
              check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    full_env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'MAX_PIXELS': '3136', 'PYTHONUNBUFFERED': '1',
                'OMP_NUM_THREADS': '2', **(env or {})}
    cmd = [*SWIFT_COMMAND, command, *CPU_FLAGS, '--output_dir', str(output_dir), *args]
    proc = subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f'{" ".join(cmd)}\nexited {proc.returncode}:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}')
    return proc
