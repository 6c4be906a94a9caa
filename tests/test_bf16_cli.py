"""The default APO path through the real ``swift rlhf`` CLI in bf16, as users train (CPU, tiny Qwen2.5-VL).

Under ``--bf16 true`` accelerate wraps the model's forward in autocast and converts every floating output to
float32, so the lean log-probs path must take the head's input and autocast state from inside the forward:
a float32 last hidden state fed to a bf16 head stopped the first 7B run on a GPU. Each fast run here must use
both fast paths and log what the plain path (K + 1 full sequences, full logits) logs.
"""
import pytest
import torch

from conftest import VL_FLAGS, mean_log_1_plus_k, read_logs, run_swift, write_apo_rows

KS = [1, 3, 7]
PLAIN = {'APO_SHARED_PREFIX': '0', 'APO_LEAN_LOGPS': '0'}
PRECISIONS = {
    'bf16 weights': ['--torch_dtype', 'bfloat16', '--bf16', 'true', '--use_cpu', 'true'],
    # float32 weights, bf16 autocast: the head must compute in bf16 as the model's own call of it does
    'bf16 autocast': ['--torch_dtype', 'float32', '--fp16', 'false', '--bf16', 'true', '--use_cpu', 'true'],
    'cuda bf16': ['--torch_dtype', 'bfloat16', '--bf16', 'true'],  # where the 7B run crashed (scripts/gpu_check.sh)
}
ON_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return write_apo_rows(tmp_path_factory.mktemp('bf16') / 'data' / 'train.jsonl', KS, easy=True)


def _train(model, data, output_dir, precision, tuner, checkpointing, env=None):
    args = ['--rlhf_type', 'apo', '--model', model, *VL_FLAGS, *PRECISIONS[precision], '--tuner_type', tuner,
            '--gradient_checkpointing', str(checkpointing).lower(), '--dataset', str(data), '--split_dataset_ratio',
            '0', '--per_device_train_batch_size', '3', '--gradient_accumulation_steps', '1', '--learning_rate',
            '5e-3' if tuner == 'lora' else '1e-4', '--max_steps', '2', '--save_strategy', 'no']
    proc = run_swift('rlhf', args, output_dir, env=env)
    return proc.stdout + proc.stderr, [line for line in read_logs(output_dir) if 'loss' in line]


_plain_runs = {}


def _plain(model, data, tmp_path_factory, precision, tuner):
    """The plain path's logs for one precision and tuner (gradient checkpointing changes no number)."""
    key = (precision, tuner)
    if key not in _plain_runs:
        _plain_runs[key] = _train(model, data, tmp_path_factory.mktemp('plain'), precision, tuner, True, PLAIN)[1]
    return _plain_runs[key]


@pytest.mark.parametrize('precision, tuner, checkpointing', [('bf16 weights', 'lora', True),
                                                              ('bf16 weights', 'lora', False),
                                                              ('bf16 weights', 'full', True),
                                                              ('bf16 weights', 'full', False),
                                                              ('bf16 autocast', 'lora', True),
                                                              pytest.param('cuda bf16', 'lora', True, marks=ON_CUDA),
                                                              pytest.param('cuda bf16', 'full', False, marks=ON_CUDA)])
def test_default_path_runs_in_bf16_and_logs_the_plain_paths_numbers(tiny_vl_model, data, tmp_path, tmp_path_factory,
                                                                     precision, tuner, checkpointing):
    output, fast = _train(tiny_vl_model, data, tmp_path, precision, tuner, checkpointing)
    assert 'APO lean log-probs in use.' in output
    assert 'APO shared-prefix forward in use.' in output
    assert 'not used' not in output  # no fast path fell back
    plain = _plain(tiny_vl_model, data, tmp_path_factory, precision, tuner)
    assert len(fast) == len(plain) == 2
    assert fast[0]['loss'] == pytest.approx(mean_log_1_plus_k(KS), abs=1e-4)  # policy == reference at step 1
    # Step 1 runs the same weights: the log-probs agree to bf16 rounding of the two layouts' sums.
    for key in ('logps/chosen', 'logps/rejected'):
        assert fast[0][key] == pytest.approx(plain[0][key], rel=2e-3), key
    # Step 2 follows one update with gradients from either path.
    assert fast[1]['loss'] == pytest.approx(plain[1]['loss'], rel=2e-3)
    assert fast[1]['loss'] < fast[0]['loss'] - 5e-3  # the compared runs really train
