"""Data options through the real ``swift rlhf --rlhf_type apo`` CLI on the tiny Qwen2.5-VL (CPU):
``--columns``, ``--max_length`` with the start-up length report and ``--apo_drop_long_rejected``, rejected_images."""
import json
import math
import re

import pytest
from PIL import Image

from conftest import VL_FLAGS, mean_log_1_plus_k, read_logs, run_swift


def _apo_args(model, data, *extra):
    return ['--rlhf_type', 'apo', '--model', model, *VL_FLAGS, '--tuner_type', 'lora', '--dataset', str(data),
            '--split_dataset_ratio', '0', '--gradient_accumulation_steps', '1', '--max_steps', '1',
            '--save_strategy', 'no', *extra]


def _image(path, color=(90, 120, 200)):
    if not path.exists():
        Image.new('RGB', (56, 56), color).save(path)
    return str(path)


def test_columns_mapping_applies_before_the_row_check(tiny_vl_model, tmp_path):
    """A file with its rejected answers in `rejected` and their sources in `teachers`, as stock DPO reads it
    with --columns: APO reads it the same way."""
    ks = [2, 3]
    with open(tmp_path / 'train.jsonl', 'w') as f:
        for i, k in enumerate(ks):
            f.write(json.dumps({'messages': [{'role': 'user', 'content': f'<image>Findings {i}?'},
                                             {'role': 'assistant', 'content': f'Consensus {i}.'}],
                                'rejected': [f'Teacher {j} on {i}.' for j in range(k)],
                                'teachers': [f'T{j}' for j in range(k)], 'images': [_image(tmp_path / 'a.png')]})
                    + '\n')
    columns = json.dumps({'rejected': 'rejected_response', 'teachers': 'rejected_sources'})
    run_swift('rlhf', _apo_args(tiny_vl_model, tmp_path / 'train.jsonl', '--columns', columns,
                                '--per_device_train_batch_size', '2'), tmp_path / 'out')
    first = read_logs(tmp_path / 'out')[0]
    assert first['loss'] == pytest.approx(mean_log_1_plus_k(ks), abs=1e-4)
    assert first['num_rejected'] == pytest.approx(2.5)
    assert {k for k in first if k.startswith('rewards/rejected/')} == {f'rewards/rejected/T{j}' for j in range(3)}


SHORT, LONG = 'short answer', 'a long teacher trace, ' * 12  # one token per byte: ~12 vs ~260 tokens
# Which answers of each row are long: [chosen, T0, T1, T2]. The other sequences are ~100 tokens, the long ones ~350.
LONG_ANSWERS = [[], ['T1'], ['T1', 'T2'], ['chosen'], ['T0', 'T1', 'T2'], []]
MAX_LENGTH = '200'


def _length_rows(path):
    with open(path, 'w') as f:
        for i, long in enumerate(LONG_ANSWERS):
            text = {name: (LONG if name in long else SHORT) + f' ({name} on study {i})'
                    for name in ['chosen', 'T0', 'T1', 'T2']}
            f.write(json.dumps({'messages': [{'role': 'user', 'content': f'<image>Findings for study {i}?'},
                                             {'role': 'assistant', 'content': text['chosen']}],
                                'rejected_response': [text['T0'], text['T1'], text['T2']],
                                'rejected_sources': ['T0', 'T1', 'T2'], 'images': [_image(path.parent / 'a.png')]})
                    + '\n')
    return path


def _report(output: str):
    """The numbers of the start-up report: the train line and the per-source table."""
    block = output[output.index('APO length check (--max_length'):]
    rows = re.search(r'train: (\d+) rows, (\d+) train, (\d+) dropped \((\d+) over max_length, (\d+) failed', block)
    table = dict(re.findall(r'^\s+(chosen|T\d)\s+(\d+\s+\d+\s+\d+)$', block, re.M))
    return tuple(map(int, rows.groups())), {name: tuple(map(int, counts.split())) for name, counts in table.items()}


@pytest.mark.parametrize('drop_long_rejected', ['false', 'true'])
def test_rows_over_max_length_are_counted_per_source(tiny_vl_model, tmp_path, drop_long_rejected):
    """The start-up report's numbers, and the training step that follows trains exactly the rows (and answers)
    the report says: the first loss is the mean log(1 + K) over the kept rows, K counting kept answers."""
    data = _length_rows(tmp_path / 'train.jsonl')
    if drop_long_rejected == 'true':
        # Rows 3 (chosen too long) and 4 (no rejected answer fits) go; rows 1 and 2 lose their long answers.
        expected_rows, kept_ks = (6, 4, 2, 2, 0), [3, 2, 1, 3]
        expected_sources = {'chosen': (6, 1, 2), 'T0': (6, 1, 2), 'T1': (6, 3, 4), 'T2': (6, 2, 3)}
    else:
        expected_rows, kept_ks = (6, 2, 4, 4, 0), [3, 3]
        expected_sources = {'chosen': (6, 1, 4), 'T0': (6, 1, 4), 'T1': (6, 3, 4), 'T2': (6, 2, 4)}
    proc = run_swift('rlhf', _apo_args(tiny_vl_model, data, '--max_length', MAX_LENGTH, '--per_device_train_batch_size',
                                       str(len(kept_ks)), '--apo_drop_long_rejected', drop_long_rejected),
                     tmp_path / 'out')
    assert f'--apo_drop_long_rejected {drop_long_rejected}):' in proc.stdout + proc.stderr
    rows, sources = _report(proc.stdout + proc.stderr)
    assert rows == expected_rows
    assert sources == expected_sources
    first = read_logs(tmp_path / 'out')[0]
    assert first['num_rejected'] == pytest.approx(sum(kept_ks) / len(kept_ks))
    assert first['loss'] == pytest.approx(sum(math.log1p(k) for k in kept_ks) / len(kept_ks), abs=1e-4)


def test_strict_stops_at_a_row_over_max_length(tiny_vl_model, tmp_path):
    data = _length_rows(tmp_path / 'train.jsonl')
    proc = run_swift('rlhf', _apo_args(tiny_vl_model, data, '--max_length', MAX_LENGTH, '--strict', 'true'),
                     tmp_path / 'out', check=False)
    assert proc.returncode != 0
    assert re.search(rf'APO length check, train dataset: row with messages .*Findings for study [1-4]\?.*: over '
                     rf'max_length {MAX_LENGTH}: (chosen|T\d)', proc.stderr)


def test_answers_with_their_own_images_train(tiny_vl_model, tmp_path):
    """Per-answer rejected_images reach the model: the shared-prefix forward steps aside (logged) and the run trains."""
    ks = [2, 1]
    with open(tmp_path / 'train.jsonl', 'w') as f:
        for i, k in enumerate(ks):
            f.write(json.dumps({'messages': [{'role': 'user', 'content': f'<image>Findings {i}?'},
                                             {'role': 'assistant', 'content': f'Consensus {i}.'}],
                                'rejected_response': [f'Teacher {j} on {i}.' for j in range(k)],
                                'images': [_image(tmp_path / 'a.png')],
                                'rejected_images': [[_image(tmp_path / f'r{i}{j}.png', (60 * j, 20 * i, 0))]
                                                    for j in range(k)]}) + '\n')
    proc = run_swift('rlhf', _apo_args(tiny_vl_model, tmp_path / 'train.jsonl', '--per_device_train_batch_size', '2'),
                     tmp_path / 'out')
    output = proc.stdout + proc.stderr
    assert 'APO shared-prefix forward not used: row 0: its sequences carry different images' in output
    assert read_logs(tmp_path / 'out')[0]['loss'] == pytest.approx(mean_log_1_plus_k(ks), abs=1e-4)


def test_dpo_rows_with_rejected_images_train_as_in_dpo(tiny_vl_model, tmp_path):
    """DPO's own format with rejected_images (other size than the chosen image): APO logs DPO's numbers.
    Also runs the length check in 2 processes (--dataset_num_proc 2)."""
    Image.new('RGB', (112, 56), (200, 10, 10)).save(tmp_path / 'rejected.png')
    with open(tmp_path / 'train.jsonl', 'w') as f:
        for i in range(4):
            f.write(json.dumps({'messages': [{'role': 'user', 'content': f'<image>Findings {i}?'},
                                             {'role': 'assistant', 'content': f'Consensus answer {i}.'}],
                                'rejected_response': f'Teacher {i}.', 'images': [_image(tmp_path / 'a.png')],
                                'rejected_images': [str(tmp_path / 'rejected.png')]}) + '\n')
    logs = {}
    for rlhf_type in ['dpo', 'apo']:
        args = _apo_args(tiny_vl_model, tmp_path / 'train.jsonl', '--per_device_train_batch_size', '2',
                         '--learning_rate', '1e-2', '--dataset_num_proc', '2')
        args[args.index('--rlhf_type') + 1] = rlhf_type
        args[args.index('--max_steps') + 1] = '3'
        run_swift('rlhf', args, tmp_path / rlhf_type)
        logs[rlhf_type] = read_logs(tmp_path / rlhf_type)
    assert len(logs['apo']) == len(logs['dpo']) == 3
    for dpo, apo in zip(logs['dpo'], logs['apo']):
        for key in ['loss', 'logps/chosen', 'logps/rejected', 'rewards/margins']:
            assert apo[key] == pytest.approx(dpo[key], rel=1e-5, abs=1e-6), key
    assert logs['apo'][-1]['rewards/margins'] > 0.1  # the compared run trains
