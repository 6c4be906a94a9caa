"""End to end through the real ``swift rlhf --rlhf_type apo`` CLI on tiny random models (CPU).

Each run is a real ms-swift child process (and torchrun ranks for NPROC_PER_NODE), so these tests
also prove that the installed import hook reaches every interpreter ms-swift starts.
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import (CPU_FLAGS, MOE_FLAGS, SWIFT_COMMAND, TEXT_FLAGS, VL_FLAGS, mean_log_1_plus_k, read_logs, run_swift,
                      text_training_args, write_apo_rows, write_dpo_rows)

TRAIN_KS = [1, 3, 7]
VAL_KS = [2, 4]


def _vl_lora_args(model, data_dir: Path, *extra):
    return ['--rlhf_type', 'apo', '--model', model, *VL_FLAGS, '--tuner_type', 'lora', '--split_dataset_ratio', '0',
            '--dataset', str(data_dir / 'train.jsonl'), '--val_dataset', str(data_dir / 'val.jsonl'),
            '--per_device_train_batch_size', '3', '--per_device_eval_batch_size', '2',
            '--gradient_accumulation_steps', '1', '--learning_rate', '5e-3', '--lora_rank', '8', '--beta', '0.1',
            '--max_steps', '4', '--eval_strategy', 'steps', '--eval_steps', '4', '--save_strategy', 'steps',
            '--save_steps', '2', *extra]


@pytest.fixture(scope='module')
def lora_run(tiny_vl_model, tmp_path_factory):
    """LoRA on a vision-language model: mixed K (1, 3, 7) in one batch, evaluation, checkpoints."""
    root = tmp_path_factory.mktemp('lora')
    write_apo_rows(root / 'data' / 'train.jsonl', TRAIN_KS, easy=True)
    write_apo_rows(root / 'data' / 'val.jsonl', VAL_KS, easy=True)
    proc = run_swift('rlhf', _vl_lora_args(tiny_vl_model, root / 'data'), root / 'out')
    # The fast paths are on by default; the comparison with the plain path below relies on it.
    assert 'APO shared-prefix forward in use.' in proc.stdout + proc.stderr
    assert 'APO lean log-probs in use.' in proc.stdout + proc.stderr
    # auto's choice on the CPU, with the reason flash-attention varlen (its choice on CUDA) does not apply
    assert ('APO shared-prefix kernel: dense 4D mask with sdpa attention (flash-attention varlen: no '
            'flash-attention varlen kernel on cpu).') in proc.stdout + proc.stderr
    logs = read_logs(root / 'out')
    return root, [line for line in logs if 'loss' in line], [line for line in logs if 'eval_loss' in line]


def test_first_loss_is_mean_log_one_plus_k(lora_run):
    _, train, _ = lora_run
    assert train[0]['loss'] == pytest.approx(mean_log_1_plus_k(TRAIN_KS), abs=1e-4)
    assert train[0]['rewards/margins'] == pytest.approx(0, abs=1e-6)


def test_training_moves_margins_up(lora_run):
    _, train, _ = lora_run
    margins = [line['rewards/margins'] for line in train]
    assert len(margins) == 4
    assert margins[-1] > margins[1] > 0, margins
    assert train[-1]['loss'] < train[0]['loss']
    assert train[-1]['rewards/accuracies'] == 1.0


def test_logged_metrics(lora_run):
    _, train, _ = lora_run
    line = train[0]
    assert line['num_rejected'] == pytest.approx(sum(TRAIN_KS) / len(TRAIN_KS), rel=1e-6)
    for key in ['rewards/chosen', 'rewards/rejected', 'rewards/accuracies', 'logps/chosen', 'logps/rejected']:
        assert key in line
    assert {k for k in line if k.startswith('rewards/rejected/')} == {f'rewards/rejected/T{j}' for j in range(7)}
    assert 'nll_loss' not in line  # only with --rpo_alpha
    # After training, rewards/rejected is the answer-weighted mean of the per-source rewards
    # (source Tj answers in every row with K > j; one micro-batch per step holds all rows).
    last = train[-1]
    counts = {j: sum(1 for k in TRAIN_KS if k > j) for j in range(7)}
    weighted = sum(counts[j] * last[f'rewards/rejected/T{j}'] for j in range(7)) / sum(counts.values())
    assert weighted == pytest.approx(last['rewards/rejected'], rel=1e-4, abs=1e-6)
    assert last['rewards/rejected'] != 0


def test_evaluation_logs_the_same_metrics_with_eval_prefix(lora_run):
    _, _, evals = lora_run
    assert len(evals) == 1
    line = evals[0]
    assert line['eval_num_rejected'] == pytest.approx(sum(VAL_KS) / len(VAL_KS), rel=1e-6)
    for key in ['eval_rewards/margins', 'eval_rewards/accuracies', 'eval_logps/rejected', 'eval_rewards/rejected/T3']:
        assert key in line
    assert 'eval_rewards/rejected/T4' not in line  # no validation row has a fifth answer


def test_plain_path_logs_the_same_run(lora_run, tiny_vl_model):
    """--apo_shared_prefix false --apo_lean_logps false (K + 1 full sequences, full logits) trains the same model:
    every logged training and evaluation number of the 4 steps matches the fast run (gradient checkpointing on)."""
    root, train, evals = lora_run
    args = _vl_lora_args(tiny_vl_model, root / 'data')
    args[args.index('--save_strategy') + 1] = 'no'
    # The arguments win over the environment variables they replace.
    proc = run_swift('rlhf', args + ['--apo_shared_prefix', 'false', '--apo_lean_logps', 'false'], root / 'plain',
                     env={'APO_SHARED_PREFIX': '1', 'APO_LEAN_LOGPS': '1', 'APO_LOGPS_CHUNK_SIZE': '64'})
    assert 'in use.' not in proc.stdout + proc.stderr
    saved = _saved_args(root / 'plain')
    assert (saved['apo_shared_prefix'], saved['apo_lean_logps'], saved['apo_logps_chunk_size']) == (False, False, 64)
    logs = read_logs(root / 'plain')
    plain_train = [line for line in logs if 'loss' in line]
    plain_evals = [line for line in logs if 'eval_loss' in line]
    assert len(plain_train) == len(train) == 4 and len(plain_evals) == len(evals) == 1
    for fast, plain in zip(train + evals, plain_train + plain_evals):
        keys = [k for k in fast if k.startswith(('loss', 'eval_loss', 'rewards/', 'eval_rewards/', 'logps/',
                                                 'eval_logps/', 'logits/', 'eval_logits/'))]
        assert len(keys) > 10
        for key in keys:
            assert plain[key] == pytest.approx(fast[key], rel=1e-4, abs=1e-6), key
    assert train[-1]['rewards/margins'] > 0.1  # the compared run really trains


def _saved_args(output_dir: Path) -> dict:
    return json.loads(next(Path(output_dir).glob('v*-*/args.json')).read_text())


def test_apo_options_are_listed_and_saved_with_the_run(lora_run):
    """The --apo_* options are ms-swift arguments: in `swift rlhf --help`, and in args.json as the run resolved
    them (the fast run set none: the defaults; the plain run below sets two)."""
    root, _, _ = lora_run
    help_text = subprocess.run([*SWIFT_COMMAND, 'rlhf', '--help'], capture_output=True, text=True,
                               env={**os.environ, 'HF_HUB_OFFLINE': '1'}, timeout=300).stdout
    for option in ('--apo_shared_prefix', '--apo_prefix_kernel {auto,flash,flex,dense}', '--apo_lean_logps',
                   '--apo_logps_chunk_size', '--apo_drop_long_rejected', '--apo_length_check'):
        assert option in help_text, option
    saved = _saved_args(root / 'out')
    assert {k: v for k, v in saved.items() if k.startswith('apo_')} == {
        'apo_shared_prefix': True, 'apo_prefix_kernel': 'auto', 'apo_lean_logps': True, 'apo_logps_chunk_size': 512,
        'apo_drop_long_rejected': False, 'apo_length_check': True}


def test_resume_from_checkpoint_continues_the_same_run(lora_run, tiny_vl_model):
    root, train, _ = lora_run
    checkpoint = next((root / 'out').glob('v*/checkpoint-2'))
    run_swift('rlhf', _vl_lora_args(tiny_vl_model, root / 'data', '--resume_from_checkpoint', str(checkpoint)),
              root / 'resumed')
    resumed = [line for line in read_logs(root / 'resumed') if 'loss' in line]
    assert [line['global_step/max_steps'] for line in resumed] == ['3/4', '4/4']
    for original, again in zip(train[2:], resumed):
        assert again['loss'] == pytest.approx(original['loss'], abs=1e-4)


def test_ref_adapters_make_the_sft_adapter_the_reference(lora_run, tiny_vl_model):
    """Starting from a trained adapter with --ref_adapters on it, policy == reference: loss log(1 + K)."""
    root, train, _ = lora_run
    adapter = str(next((root / 'out').glob('v*/checkpoint-4')))
    args = _vl_lora_args(tiny_vl_model, root / 'data', '--adapters', adapter, '--ref_adapters', adapter)
    args[args.index('--max_steps') + 1] = '1'
    args = [a for a in args if a not in ('--val_dataset', str(root / 'data' / 'val.jsonl'))]
    run_swift('rlhf', args + ['--eval_strategy', 'no'], root / 'ref_adapters')
    first = read_logs(root / 'ref_adapters')[0]
    assert first['loss'] == pytest.approx(mean_log_1_plus_k(TRAIN_KS), abs=1e-4)
    assert abs(train[-1]['loss'] - first['loss']) > 0.05, 'the adapter alone (as reference) must differ'


def test_k1_apo_logs_the_same_losses_as_dpo(tiny_text_model, tmp_path):
    """On DPO data (one rejected string per row) APO is DPO: same losses, full tuning, text-only model,
    on the plain path and with the fast paths, with --rpo_alpha and --label_smoothing (conservative DPO).
    Rewards are beta x a difference of two float32 sums of about -500, so they agree to float32's rounding of
    those sums, not to a relative 1e-5."""
    data = write_dpo_rows(tmp_path / 'dpo.jsonl', 6)
    plain = {'APO_SHARED_PREFIX': '0', 'APO_LEAN_LOGPS': '0'}
    logs = {}
    for name, rlhf_type, env in [('dpo', 'dpo', {}), ('apo', 'apo', plain), ('apo-fast', 'apo', {})]:
        run_swift('rlhf', ['--rlhf_type', rlhf_type, *text_training_args(tiny_text_model, data), '--rpo_alpha', '0.5',
                           '--beta', '0.1', '--label_smoothing', '0.2'], tmp_path / name, env=env)
        logs[name] = read_logs(tmp_path / name)
    assert len(logs['apo']) == len(logs['apo-fast']) == len(logs['dpo']) == 3
    reward_rounding = 8 * 1.2e-7 * 0.1 * max(abs(line['logps/rejected']) for line in logs['dpo'])  # eps x beta x |logps|
    for name in ['apo', 'apo-fast']:
        for dpo, apo in zip(logs['dpo'], logs[name]):
            for key in ['loss', 'nll_loss', 'logps/rejected']:
                assert apo[key] == pytest.approx(dpo[key], rel=1e-5), (name, key)
            for key in ['rewards/margins', 'rewards/chosen', 'rewards/rejected']:
                assert apo[key] == pytest.approx(dpo[key], abs=reward_rounding), (name, key)
    assert logs['apo'][-1]['rewards/margins'] != 0, 'the losses must come from a run that trains'


def test_two_ranks_with_gloo(tiny_vl_model, tmp_path):
    """NPROC_PER_NODE=2: every torchrun rank knows apo; metrics are gathered over both ranks."""
    ks = [1, 7, 3, 2]
    data = write_apo_rows(tmp_path / 'train.jsonl', ks)
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    for i, row in enumerate(rows):  # sources unique to each row show which ranks' rows reach the log
        row['rejected_sources'] = [f'row{i}-T{j}' for j in range(ks[i])]
    data.write_text(''.join(json.dumps(row) + '\n' for row in rows))
    run_swift('rlhf', ['--rlhf_type', 'apo', '--model', tiny_vl_model, *VL_FLAGS, '--tuner_type', 'lora',
                       '--dataset', str(data), '--split_dataset_ratio', '0',
                       '--per_device_train_batch_size', '2', '--gradient_accumulation_steps', '1', '--max_steps', '1',
                       '--save_strategy', 'no', '--ddp_backend', 'gloo', '--use_cpu', 'true'],
              tmp_path / 'out', env={'NPROC_PER_NODE': '2', 'MASTER_PORT': '29533'})
    first = read_logs(tmp_path / 'out')[0]
    # The logged loss is averaged over the ranks, two rows each: the mean over all four rows.
    assert first['loss'] == pytest.approx(mean_log_1_plus_k(ks), abs=1e-4)
    # The APO metrics are gathered over both ranks: all four rows and all their sources count.
    assert first['num_rejected'] == pytest.approx(sum(ks) / len(ks), rel=1e-6)
    expected_sources = {f'rewards/rejected/row{i}-T{j}' for i, k in enumerate(ks) for j in range(k)}
    assert {k for k in first if k.startswith('rewards/rejected/')} == expected_sources


def test_two_ranks_evaluate_every_row_once(tiny_text_model, tmp_path):
    """5 eval rows on 2 ranks x 2 per batch: the loader repeats 3 rows to fill the last batch; they must not
    count. The eval before training (policy = reference) must equal a single-process eval with another batch size."""
    val_ks = [1, 5, 2, 7, 3]
    data = write_apo_rows(tmp_path / 'train.jsonl', [2, 3], images=False)
    val = write_apo_rows(tmp_path / 'val.jsonl', val_ks, images=False)
    common = ['--rlhf_type', 'apo', '--model', tiny_text_model, *TEXT_FLAGS, '--tuner_type', 'lora',
              '--dataset', str(data), '--val_dataset', str(val), '--split_dataset_ratio', '0',
              '--per_device_train_batch_size', '1', '--gradient_accumulation_steps', '1', '--max_steps', '1',
              '--eval_on_start', 'true', '--eval_strategy', 'steps', '--eval_steps', '100', '--save_strategy', 'no']
    run_swift('rlhf', common + ['--per_device_eval_batch_size', '2', '--ddp_backend', 'gloo', '--use_cpu', 'true'],
              tmp_path / 'two', env={'NPROC_PER_NODE': '2', 'MASTER_PORT': '29535'})
    run_swift('rlhf', common + ['--per_device_eval_batch_size', '3'], tmp_path / 'one')
    two, one = [next(line for line in read_logs(tmp_path / name) if 'eval_loss' in line) for name in ['two', 'one']]
    assert two['eval_num_rejected'] == pytest.approx(sum(val_ks) / len(val_ks), rel=1e-6)
    assert two['eval_loss'] == pytest.approx(mean_log_1_plus_k(val_ks), abs=1e-5)
    sources = {k for k in two if k.startswith('eval_rewards/rejected/')}
    assert sources == {f'eval_rewards/rejected/T{j}' for j in range(7)}
    keys = [k for k in one if k.startswith(('eval_loss', 'eval_num_rejected', 'eval_logps/', 'eval_logits/',
                                            'eval_rewards/'))]
    assert len(keys) > 10
    for key in keys:
        assert two[key] == pytest.approx(one[key], rel=1e-5, abs=1e-6), key


def test_moe_router_aux_loss(tiny_moe_model, tmp_path):
    """--router_aux_loss_coef on a MoE model: the load-balancing loss is added and logged; the shared-prefix
    forward steps aside for it (logged), the lean log-probs stay."""
    ks = [1, 3, 2, 4]
    data = write_apo_rows(tmp_path / 'train.jsonl', ks, images=False)
    proc = run_swift('rlhf', ['--rlhf_type', 'apo', '--model', tiny_moe_model, *MOE_FLAGS, '--tuner_type', 'lora',
                              '--dataset', str(data), '--split_dataset_ratio', '0',
                              '--per_device_train_batch_size', '4', '--gradient_accumulation_steps', '1',
                              '--max_steps', '1', '--save_strategy', 'no',
                              '--router_aux_loss_coef', '0.5'], tmp_path / 'out')
    output = proc.stdout + proc.stderr
    assert "APO shared-prefix forward not used: the MoE router's load-balancing loss" in output
    assert 'APO lean log-probs in use.' in output
    first = read_logs(tmp_path / 'out')[0]
    assert math.isfinite(first['aux_loss']) and first['aux_loss'] > 0
    assert first['loss'] == pytest.approx(mean_log_1_plus_k(ks) + 0.5 * first['aux_loss'], abs=1e-4)


@pytest.mark.parametrize('zero', ['zero2', 'zero3'])
def test_deepspeed_full_tuning(tiny_vl_model, tmp_path, zero):
    """Full tuning under DeepSpeed: the reference model is created automatically and stays fixed.

    Under ZeRO-3 the run is repeated with the fast paths off: the same losses step by step.
    """
    write_apo_rows(tmp_path / 'train.jsonl', TRAIN_KS, easy=True)
    paths = {'fast': {}, 'plain': {'APO_SHARED_PREFIX': '0', 'APO_LEAN_LOGPS': '0'}} if zero == 'zero3' else {'fast': {}}
    runs = {}
    for name, env in paths.items():
        proc = run_swift('rlhf', ['--rlhf_type', 'apo', '--model', tiny_vl_model, *VL_FLAGS, '--tuner_type', 'full',
                                  '--deepspeed', zero, '--dataset', str(tmp_path / 'train.jsonl'),
                                  '--split_dataset_ratio', '0', '--per_device_train_batch_size', '3',
                                  '--gradient_accumulation_steps', '1', '--learning_rate', '1e-3', '--max_steps', '3',
                                  '--save_strategy', 'no'],
                         tmp_path / name, env={'NPROC_PER_NODE': '1', 'MASTER_PORT': '29534', **env})
        assert ('APO shared-prefix forward in use.' in proc.stdout + proc.stderr) == (name == 'fast')
        runs[name] = read_logs(tmp_path / name)
    logs = runs['fast']
    assert logs[0]['loss'] == pytest.approx(mean_log_1_plus_k(TRAIN_KS), abs=1e-4)
    assert logs[-1]['rewards/margins'] > 0.0
    assert logs[-1]['loss'] < logs[0]['loss']
    if 'plain' in runs:
        assert [line['loss'] for line in runs['plain']] == pytest.approx([line['loss'] for line in logs], rel=2e-5)
        assert [line['rewards/margins'] for line in runs['plain']] == pytest.approx(
            [line['rewards/margins'] for line in logs], rel=1e-4, abs=1e-6)


def test_bad_row_stops_the_run_naming_file_line_and_field(tiny_vl_model, tmp_path):
    data = write_apo_rows(tmp_path / 'train.jsonl', [2, 2, 2])
    lines = data.read_text().splitlines()
    lines[1] = lines[1].replace('"rejected_sources": ["T0", "T1"]', '"rejected_sources": ["T0"]')
    data.write_text('\n'.join(lines) + '\n')
    proc = run_swift('rlhf', ['--rlhf_type', 'apo', '--model', tiny_vl_model, *VL_FLAGS, '--tuner_type', 'lora',
                              '--dataset', str(data), '--max_steps', '1'], tmp_path / 'out', check=False)
    assert proc.returncode != 0
    assert f"{data} line 2: field 'rejected_sources': has 1 entries but rejected_response has 2" in proc.stderr


def test_module_entry_point_works_without_the_installed_hook(tiny_text_model, tmp_path):
    """`python -m swift_plugin rlhf` (the route for a checkout that is not installed) arms APO itself."""
    ks = [2, 5]
    data = write_apo_rows(tmp_path / 'train.jsonl', ks, images=False)
    cmd = [sys.executable, '-m', 'swift_plugin', 'rlhf', *CPU_FLAGS, '--output_dir', str(tmp_path / 'out'),
           '--rlhf_type', 'apo', '--model', tiny_text_model, *TEXT_FLAGS, '--tuner_type', 'lora',
           '--dataset', str(data), '--split_dataset_ratio', '0', '--per_device_train_batch_size', '2',
           '--gradient_accumulation_steps', '1', '--max_steps', '1', '--save_strategy', 'no']
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'SWIFT_APO_DISABLE': '1'}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert read_logs(tmp_path / 'out')[0]['loss'] == pytest.approx(mean_log_1_plus_k(ks), abs=1e-4)
    # And the installed hook really is off under SWIFT_APO_DISABLE=1: plain `swift rlhf` refuses apo.
    refused = run_swift('rlhf', ['--rlhf_type', 'apo', '--model', tiny_text_model, *TEXT_FLAGS, '--dataset', str(data)],
                        tmp_path / 'refused', env={'SWIFT_APO_DISABLE': '1'}, check=False)
    assert refused.returncode != 0 and "invalid choice: 'apo'" in refused.stderr
