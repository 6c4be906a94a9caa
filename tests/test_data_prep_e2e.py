"""The data_prep stages chained through the real ms-swift on the tiny Qwen2.5-VL (CPU):
data_prep consensus -> swift infer -> data_prep apo -> swift rlhf --rlhf_type apo, one step."""
import json
import os
import subprocess

import pytest

from conftest import SWIFT_COMMAND, VL_FLAGS, mean_log_1_plus_k, read_logs, run_swift
from cxr_data import SAMPLE, SAMPLE_FILE
from data_prep.cli import main


def _jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding='utf-8').splitlines()]


def test_consensus_infer_apo_rlhf(tiny_vl_model, tmp_path, capsys):
    requests, results, apo = tmp_path / 'requests.jsonl', tmp_path / 'consensus.jsonl', tmp_path / 'apo.jsonl'
    assert main(['consensus', '--dataset', str(SAMPLE_FILE), '--out', str(requests), '--check-images']) == 0
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'MAX_PIXELS': '3136', 'OMP_NUM_THREADS': '2'}
    # top_k/temperature: the tiny model's greedy answer is whitespace, which data_prep rightly drops as empty
    infer = subprocess.run([*SWIFT_COMMAND, 'infer', '--model', tiny_vl_model, *VL_FLAGS, '--torch_dtype', 'float32',
                            '--infer_backend', 'transformers', '--val_dataset', str(requests), '--result_path',
                            str(results), '--max_new_tokens', '24', '--temperature', '1', '--top_k', '50',
                            '--top_p', '1', '--seed', '0', '--max_batch_size', '6'],
                           env=env, capture_output=True, text=True, timeout=600)
    assert infer.returncode == 0, infer.stderr[-4000:]
    answers = _jsonl(results)
    assert len(answers) == 6 and all('study_id' not in row for row in answers)  # ms-swift drops the key column

    capsys.readouterr()
    assert main(['apo', '--dataset', str(SAMPLE_FILE), '--consensus', str(results), '--requests', str(requests),
                 '--out', str(apo), '--eval-fraction', '0']) == 0
    assert 'dropped (consensus answer empty)' not in capsys.readouterr().out
    rows = _jsonl(apo)
    by_request = {r['study_id']: a['response'].strip() for r, a in zip(_jsonl(requests), answers)}
    assert {r['study_id']: r['messages'][1]['content'] for r in rows} == by_request  # infer keeps request order
    assert sorted(len(r['rejected_response']) for r in rows) == [6, 7, 7, 7, 7, 7]  # the empty trace dropped, the refusal kept
    assert all(r['images'][0].startswith(str(SAMPLE)) for r in rows)

    # one row per micro-batch keeps the full-vocabulary logits small; the logged loss is the mean over the 6
    run_swift('rlhf', ['--rlhf_type', 'apo', '--model', tiny_vl_model, *VL_FLAGS, '--tuner_type', 'lora',
                       '--dataset', str(apo), '--split_dataset_ratio', '0', '--per_device_train_batch_size', '1',
                       '--gradient_accumulation_steps', '6', '--max_steps', '1', '--save_strategy', 'no',
                       '--max_length', '1024'], tmp_path / 'out')
    first = read_logs(tmp_path / 'out')[0]
    assert first['loss'] == pytest.approx(mean_log_1_plus_k([len(r['rejected_response']) for r in rows]), abs=1e-4)
    assert first['num_rejected'] == pytest.approx(41 / 6, rel=1e-6)
