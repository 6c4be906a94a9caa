"""Two ranks under DeepSpeed ZeRO-3 (gloo, CPU) give a one-process run's losses and gradients, step by step.

The ranks hold different numbers of answer tokens, so without agreement they would call the lm_head a
different number of times, and ZeRO-3's per-call all-gather of its weight would mismatch across ranks (a
gloo error, an NCCL hang). ms-swift's CLI with two CPU processes trips DeepSpeed's batch-size check, so the
engine is driven directly (tests/zero3_worker.py).
"""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = str(Path(__file__).with_name('zero3_worker.py'))


@pytest.mark.parametrize('tuning, unpackable', [('lora', False), ('full', True)])
def test_two_zero3_ranks_equal_one_process(tiny_vl_model, tmp_path, tuning, unpackable):
    images = tmp_path / 'images'
    images.mkdir()
    common = ['--tuning', tuning, '--model', tiny_vl_model, '--images', str(images), '--steps', '3']
    common += ['--unpackable'] if unpackable else []
    torchrun = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', _free_port()]
    ranks = _run_worker(torchrun, ['--engine', 'deepspeed', *common], tmp_path / 'zero3')
    single = _run_worker([sys.executable], ['--engine', 'single', *common], tmp_path / 'single')

    # One path for all ranks: packed on both, or (one rank's prompts cut differently) plain on both.
    assert [step['packed'] for step in ranks[0]] == [step['packed'] for step in ranks[1]] == [not unpackable] * 3
    if unpackable:  # on its own, rank 0 would have packed its rows
        assert [step['packed'] for step in single[0]] == [True] * 3
        assert [step['packed'] for step in single[1]] == [False] * 3
    for rank in (0, 1):
        for step, (got, expected) in enumerate(zip(ranks[rank], single[rank])):
            assert got['loss'] == pytest.approx(expected['loss'], rel=1e-4), (rank, step)
            assert got['grads'].keys() == expected['grads'].keys()
            for name, grad in expected['grads'].items():
                error = (got['grads'][name] - grad).abs().max() / grad.abs().max().clamp_min(1e-12)
                assert error <= 1e-4, f'rank {rank} step {step}: gradient of {name} off by {float(error):.1e}'
    losses = [step['loss'] for step in single[0]]
    assert losses[-1] != losses[0], 'the steps must train for the comparison to mean something'


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return str(s.getsockname()[1])


def _run_worker(launcher, args, out, timeout=600):
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'MAX_PIXELS': '3136', 'OMP_NUM_THREADS': '1'}
    proc = subprocess.run([*launcher, WORKER, *args, '--out', str(out)], env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f'{args} exited {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}'
    return [torch.load(out / f'rank{rank}.pt') for rank in (0, 1)]
