"""``--resume_from_checkpoint`` continues the interrupted run: the resumed run logs the uninterrupted run's losses.

Full tuning of Qwen2.5-VL used to restart from the base weights without an error: the checkpoint is saved under
the model's checkpoint key mapping reversed (``model.layers.*``, ``visual.*``) and the Trainer reloaded it with a
plain ``load_state_dict`` (swift_plugin/resume.py). LoRA resume is tested in test_cli.py
(test_resume_from_checkpoint_continues_the_same_run, on its 4-step run); here: full tuning in one process, full
tuning under ZeRO-3 (DeepSpeed restores its own ``global_step*`` files), ``swift sft`` full tuning,
an unmatched checkpoint, and the loader itself. Rows have mixed K; float32, so the losses agree to 1e-5.
"""
import json
import shutil
import socket
from pathlib import Path

import pytest
import torch

from conftest import VL_FLAGS, read_logs, run_swift, write_apo_rows

KS = [1, 3, 2, 4, 1, 2, 3, 1]


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return str(s.getsockname()[1])


def _args(model, data, *extra, tuner='full'):
    return ['--rlhf_type', 'apo', '--model', model, *VL_FLAGS, '--tuner_type', tuner, '--split_dataset_ratio', '0',
            '--dataset', str(data), '--per_device_train_batch_size', '2', '--gradient_accumulation_steps', '1',
            '--learning_rate', '1e-3', '--beta', '0.1', '--max_steps', '4', '--save_strategy', 'steps',
            '--save_steps', '2', *extra]


def _train(logs):
    return [line for line in logs if 'loss' in line]


def _run_and_resume(root: Path, model: str, extra=(), env=None, tuner='full'):
    """4 steps with a checkpoint at step 2, then the same command resumed from checkpoint-2."""
    data = write_apo_rows(root / 'data' / 'train.jsonl', KS, easy=True)
    run_swift('rlhf', _args(model, data, *extra, tuner=tuner), root / 'whole', env=env)
    checkpoint = next((root / 'whole').glob('v*/checkpoint-2'))
    proc = run_swift('rlhf', _args(model, data, *extra, '--resume_from_checkpoint', str(checkpoint), tuner=tuner),
                     root / 'resumed', env=env)
    return checkpoint, _train(read_logs(root / 'whole')), _train(read_logs(root / 'resumed')), proc


def _assert_continues(whole, resumed):
    assert [line['global_step/max_steps'] for line in resumed] == ['3/4', '4/4']
    for original, again in zip(whole[2:], resumed):
        assert again['loss'] == pytest.approx(original['loss'], abs=1e-5)
        assert again['rewards/margins'] == pytest.approx(original['rewards/margins'], abs=1e-5)
    assert abs(whole[2]['loss'] - whole[0]['loss']) > 0.1, 'the weights at the checkpoint must differ from the base'


@pytest.fixture(scope='module')
def full_run(tiny_vl_model, tmp_path_factory):
    return _run_and_resume(tmp_path_factory.mktemp('full'), tiny_vl_model)


def test_full_tuning_resumes_the_checkpoint_weights(full_run):
    checkpoint, whole, resumed, proc = full_run
    _assert_continues(whole, resumed)
    output = proc.stdout + proc.stderr
    assert f'Resumed model weights from {checkpoint}' in output
    assert 'came from the checkpoint' in output
    assert 'There were missing keys' not in output


def test_zero3_resume(tiny_vl_model, tmp_path):
    """DeepSpeed ZeRO-3 (one rank under torchrun, as DeepSpeed runs on a CPU): the engine restores its own
    partitions (global_step2/); the resumed run logs the uninterrupted run's losses."""
    env = {'NPROC_PER_NODE': '1', 'MASTER_PORT': _free_port(), 'OMP_NUM_THREADS': '1'}
    checkpoint, whole, resumed, _ = _run_and_resume(tmp_path, tiny_vl_model, ['--deepspeed', 'zero3'], env)
    assert (checkpoint / 'global_step2').is_dir()
    _assert_continues(whole, resumed)


def _sft_rows(path: Path) -> Path:
    data = write_apo_rows(path, KS, easy=True, sources=False)
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    data.write_text(''.join(json.dumps({k: v for k, v in row.items() if k != 'rejected_response'}) + '\n'
                            for row in rows))
    return data


def _sft_args(model, data, *extra):
    return ['--model', model, *VL_FLAGS, '--tuner_type', 'full', '--dataset', str(data), '--split_dataset_ratio', '0',
            '--per_device_train_batch_size', '2', '--gradient_accumulation_steps', '1', '--learning_rate', '1e-3',
            '--max_steps', '3', '--save_strategy', 'steps', '--save_steps', '2', *extra]


@pytest.fixture(scope='module')
def sft_run(tiny_vl_model, tmp_path_factory):
    """`swift sft` full tuning, 3 steps with a checkpoint at step 2, then resumed from it (the hook is not APO's)."""
    root = tmp_path_factory.mktemp('sft')
    data = _sft_rows(root / 'data' / 'train.jsonl')
    run_swift('sft', _sft_args(tiny_vl_model, data), root / 'whole')
    checkpoint = next((root / 'whole').glob('v*/checkpoint-2'))
    proc = run_swift('sft', _sft_args(tiny_vl_model, data, '--resume_from_checkpoint', str(checkpoint)),
                     root / 'resumed')
    return root, data, checkpoint, _train(read_logs(root / 'whole')), _train(read_logs(root / 'resumed')), proc


def test_sft_full_tuning_resumes_the_checkpoint_weights(sft_run):
    _, _, checkpoint, whole, resumed, proc = sft_run
    assert [line['global_step/max_steps'] for line in resumed] == ['3/3']
    assert resumed[0]['loss'] == pytest.approx(whole[2]['loss'], abs=1e-5)
    assert abs(whole[2]['loss'] - whole[0]['loss']) > 0.1, 'the weights at the checkpoint must differ from the base'
    assert f'Resumed model weights from {checkpoint}' in proc.stdout + proc.stderr


def test_unmatched_checkpoint_stops_the_run(sft_run, tiny_vl_model, tmp_path):
    """Weights saved under names the model cannot map: the run stops at once, naming the checkpoint and the first
    missing keys."""
    from safetensors.torch import load_file, save_file
    root, data, checkpoint, *_ = sft_run
    bad = tmp_path / 'checkpoint-2'
    shutil.copytree(checkpoint, bad)
    weights = load_file(bad / 'model.safetensors')
    save_file({f'other.{key}': tensor for key, tensor in weights.items()}, bad / 'model.safetensors',
              metadata={'format': 'pt'})
    proc = run_swift('sft', _sft_args(tiny_vl_model, data, '--resume_from_checkpoint', str(bad)), tmp_path / 'out',
                     check=False)
    assert proc.returncode != 0
    assert f'ResumeError: --resume_from_checkpoint {bad}: ' in proc.stderr
    assert 'did not come from the checkpoint (0 matched)' in proc.stderr
    assert 'First missing: model.language_model.embed_tokens.weight' in proc.stderr


def test_loader_maps_saved_names_and_checks_every_trainable_tensor(tiny_vl_model, tmp_path):
    """In process: a save_pretrained checkpoint (saved names differ from live ones) loads every tensor back;
    a checkpoint lacking one trainable tensor is refused by name."""
    from safetensors.torch import load_file, save_file
    from transformers import Qwen2_5_VLForConditionalGeneration

    from swift_plugin.resume import ResumeError, load_full_checkpoint
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_vl_model, dtype=torch.float32)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(1.0)
    expected = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    model.save_pretrained(tmp_path / 'ckpt')
    saved = load_file(tmp_path / 'ckpt' / 'model.safetensors')
    assert not set(saved) & set(expected), 'the bug needs saved names that differ from the live ones'

    fresh = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_vl_model, dtype=torch.float32)
    report = load_full_checkpoint(fresh, str(tmp_path / 'ckpt'))
    assert report['renamed'] == report['loaded'] == len(saved)
    for name, tensor in fresh.state_dict().items():
        assert torch.equal(tensor, expected[name]), name

    dropped = next(key for key in saved if key.endswith('layers.1.mlp.up_proj.weight'))
    save_file({k: v for k, v in saved.items() if k != dropped}, tmp_path / 'ckpt' / 'model.safetensors',
              metadata={'format': 'pt'})
    with pytest.raises(ResumeError, match=r'1 of the \d+ trainable tensors did not come from the checkpoint.*'
                       r'First missing: model\.language_model\.layers\.1\.mlp\.up_proj\.weight\.'):
        load_full_checkpoint(fresh, str(tmp_path / 'ckpt'))


def test_loader_fuses_saved_moe_experts(tiny_moe_model, tmp_path):
    """transformers 5 saves an MoE's fused expert weights one expert at a time; they are fused back on resume
    (the stock loader left them at the base weights)."""
    from transformers import AutoModelForCausalLM

    from swift_plugin.resume import load_full_checkpoint
    model = AutoModelForCausalLM.from_pretrained(tiny_moe_model, dtype=torch.float32)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(1.0)
    expected = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    assert any(name.endswith('mlp.experts.gate_up_proj') for name in expected)
    model.save_pretrained(tmp_path / 'ckpt')
    fresh = AutoModelForCausalLM.from_pretrained(tiny_moe_model, dtype=torch.float32)
    report = load_full_checkpoint(fresh, str(tmp_path / 'ckpt'))
    assert report['renamed'] > 0
    for name, tensor in fresh.state_dict().items():
        assert torch.equal(tensor, expected[name]), name


def test_patch_leaves_a_mixin_with_its_own_loader_alone(monkeypatch):
    """An ms-swift whose SwiftMixin defines _load_from_checkpoint is not overridden; the reason is recorded."""
    import types

    from swift_plugin import registration
    monkeypatch.setattr(registration, 'version_problem', lambda: None)
    monkeypatch.setattr(registration, '_failed', {})

    class SwiftMixin:

        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            return 'own'

    own = SwiftMixin._load_from_checkpoint
    registration.apply_patch('swift.trainers.mixin', types.SimpleNamespace(__name__='swift.trainers.mixin',
                                                                           SwiftMixin=SwiftMixin))
    assert SwiftMixin._load_from_checkpoint is own
    assert registration._failed == {'swift.trainers.mixin': 'SwiftMixin defines its own _load_from_checkpoint'}
