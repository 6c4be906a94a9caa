"""APO encoding and collation with the real Qwen2.5-VL template, checked against ms-swift's own DPO path."""
import copy

import pytest
import torch
from swift.dataset import RowPreprocessor
from swift.model import get_processor
from swift.template import get_template

import swift_plugin  # noqa: F401  (arms the 'apo' template mode)
from swift_plugin.template import NUM_REJECTED_KEY, SOURCES_KEY

IMAGE_PAD = 151655


@pytest.fixture(scope='module')
def processor(tiny_vl_model, monkeypatch_module):
    monkeypatch_module.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch_module.setenv('MAX_PIXELS', '3136')
    return get_processor(tiny_vl_model, model_type='qwen2_5_vl')


@pytest.fixture(scope='module')
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def _template(processor, mode, **kwargs):
    template = get_template(processor, template_type='qwen2_5_vl', **kwargs)
    template.set_mode(mode)
    return template


def _rows(tmp_path, ks):
    from PIL import Image
    image = tmp_path / 'cxr.png'
    Image.new('RGB', (56, 56), (90, 90, 90)).save(image)
    rows = []
    for i, k in enumerate(ks):
        rows.append({
            'messages': [{'role': 'user', 'content': f'<image>Findings for study {i}?'},
                         {'role': 'assistant', 'content': f'Consensus {i}: cardiomegaly.'}],
            'rejected_response': [f'Teacher {j}: study {i} is normal.' for j in range(k)],
            'rejected_sources': [f'T{j}' for j in range(k)],
            'images': [{'bytes': None, 'path': str(image)}],
        })
    return rows


def test_k1_batch_is_exactly_ms_swift_dpo_batch(processor, tmp_path):
    rows = _rows(tmp_path, [1, 1, 1])
    dpo_rows = [{**{k: v for k, v in r.items() if k != 'rejected_sources'}, 'rejected_response':
                 r['rejected_response'][0]} for r in rows]
    dpo, apo = _template(processor, 'rlhf'), _template(processor, 'apo')
    expected = dpo.data_collator([dpo.encode(copy.deepcopy(r)) for r in dpo_rows])
    got = apo.data_collator([apo.encode(copy.deepcopy(r)) for r in rows])
    assert got.pop(NUM_REJECTED_KEY).tolist() == [1, 1, 1]
    assert got.pop(SOURCES_KEY) == [['T0'], ['T0'], ['T0']]
    assert sorted(got) == sorted(expected)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], msg=key)


def test_mixed_k_layout(processor, tmp_path):
    ks = [1, 3, 7]
    apo = _template(processor, 'apo')
    encoded = [apo.encode(copy.deepcopy(r), return_length=True) for r in _rows(tmp_path, ks)]
    assert [len(e['lengths']) for e in encoded] == [1 + k for k in ks]
    batch = apo.data_collator(encoded)
    assert batch[NUM_REJECTED_KEY].tolist() == ks
    assert batch['input_ids'].shape[0] == len(ks) + sum(ks)
    assert batch[SOURCES_KEY] == [[f'T{j}' for j in range(k)] for k in ks]
    # One image per sequence: the vision inputs follow the sequences.
    assert batch['image_grid_thw'].shape[0] == len(ks) + sum(ks)
    tokenizer = processor.tokenizer if hasattr(processor, 'tokenizer') else processor
    texts = [tokenizer.decode(ids[ids != tokenizer.pad_token_id]) for ids in batch['input_ids']]
    assert 'Consensus 2' in texts[2] and 'study 2' in texts[2]
    # Rejected answers follow the chosen ones, row by row, in their given order.
    expected = [f'Teacher {j}: study {i} is normal.' for i, k in enumerate(ks) for j in range(k)]
    for text, answer in zip(texts[len(ks):], expected):
        assert answer in text
    # Every sequence of a row carries the same prompt, and labels cover the answer only.
    labels = batch['labels']
    for i, text in enumerate(texts):
        answer_ids = labels[i][labels[i] != -100]
        assert 'Findings for study' not in tokenizer.decode(answer_ids)


@pytest.mark.parametrize('strategy', ['left', 'right'])
def test_truncation_never_cuts_image_tokens(processor, tmp_path, strategy):
    full = _template(processor, 'apo')
    row = _rows(tmp_path, [3])[0]
    untruncated = full.encode(copy.deepcopy(row))
    image_tokens = int((torch.tensor(untruncated['chosen_input_ids']) == IMAGE_PAD).sum())
    assert image_tokens > 0
    short = _template(processor, 'apo', max_length=image_tokens + 6, truncation_strategy=strategy)
    encoded = short.encode(copy.deepcopy(row))
    sequences = [encoded['chosen_input_ids']] + [a['input_ids'] for a in encoded['rejected_answers']]
    for ids in sequences:
        assert len(ids) == image_tokens + 6
        assert sum(1 for t in ids if t == IMAGE_PAD) == image_tokens


def test_bad_row_in_template_names_the_field(processor, tmp_path):
    row = _rows(tmp_path, [2])[0]
    row['rejected_sources'] = ['only one']
    with pytest.raises(ValueError, match="field 'rejected_sources': has 1 entries but rejected_response has 2"):
        _template(processor, 'apo').encode(row)


def test_rejected_sources_survives_ms_swift_column_filter():
    assert 'rejected_sources' in RowPreprocessor.standard_keys
