"""APO encoding and collation with the real Qwen2.5-VL template, checked against ms-swift's own DPO path."""
import copy

import pytest
import torch
from PIL import Image
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


def _image(tmp_path, name, size=(56, 56), color=(90, 90, 90)):
    path = tmp_path / name
    Image.new('RGB', size, color).save(path)
    return str(path)


def _rows(tmp_path, ks):
    image = _image(tmp_path, 'cxr.png')
    rows = []
    for i, k in enumerate(ks):
        rows.append({
            'messages': [{'role': 'user', 'content': f'<image>Findings for study {i}?'},
                         {'role': 'assistant', 'content': f'Consensus {i}: cardiomegaly.'}],
            'rejected_response': [f'Teacher {j}: study {i} is normal.' for j in range(k)],
            'rejected_sources': [f'T{j}' for j in range(k)],
            'images': [{'bytes': None, 'path': image}],
        })
    return rows


@pytest.mark.parametrize('rejected_images', [False, True])
def test_k1_batch_is_exactly_ms_swift_dpo_batch(processor, tmp_path, rejected_images):
    """Also with DPO's rejected_images: the rejected answer is encoded with those images, as DPO does."""
    rows = _rows(tmp_path, [1, 1, 1])
    if rejected_images:
        for i, row in enumerate(rows):
            row['rejected_images'] = [_image(tmp_path, f'rejected{i}.png', (112, 56), (10 * i, 200, 30))]
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
    # 56 x 56 chosen images (4 image tokens each), 112 x 56 rejected ones (scaled to 56 x 28: 2 tokens).
    assert got['image_grid_thw'].prod(-1).tolist() == [16] * 3 + [8 if rejected_images else 16] * 3


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


def _single_sequence(template, row, images):
    """ms-swift's own SFT encoding of one sequence: the row's prompt + one answer, with ``images``."""
    template.set_mode('train')
    try:
        return template.encode({'messages': row['messages'], 'images': images})
    finally:
        template.set_mode('apo')


def test_each_rejected_answer_is_encoded_with_its_own_images(processor, tmp_path):
    row = _rows(tmp_path, [3])[0]
    per_answer = [[_image(tmp_path, 'a.png', (56, 56), (200, 0, 0))], [_image(tmp_path, 'b.png', (112, 56))],
                  [_image(tmp_path, 'c.png', (56, 56), (0, 0, 200))]]
    row['rejected_images'] = per_answer
    apo = _template(processor, 'apo')
    encoded = apo.encode(copy.deepcopy(row))
    prompt = row['messages'][:1]
    for k, answer in enumerate(encoded['rejected_answers']):
        expected = _single_sequence(apo, {'messages': prompt + [{'role': 'assistant', 'content':
                                                                 row['rejected_response'][k]}]}, per_answer[k])
        assert answer['input_ids'] == expected['input_ids'] and answer['labels'] == expected['labels']
        torch.testing.assert_close(answer['pixel_values'], expected['pixel_values'])
        torch.testing.assert_close(answer['image_grid_thw'], expected['image_grid_thw'])
    chosen = _single_sequence(apo, row, row['images'])
    torch.testing.assert_close(encoded['chosen_pixel_values'], chosen['pixel_values'])
    # The answers' images really differ from the chosen one's and from each other.
    pixels = [encoded['chosen_pixel_values']] + [a['pixel_values'] for a in encoded['rejected_answers']]
    assert all(not torch.equal(pixels[i], pixels[j]) for i in range(4) for j in range(i) if
               pixels[i].shape == pixels[j].shape)


def _long_answer_row(tmp_path):
    row = _rows(tmp_path, [3])[0]
    row['rejected_response'][1] += ' and a much longer trace' * 4  # one token per byte: ~100 more tokens
    return row


def test_over_long_rejected_answer_drops_the_row_or_only_itself(processor, tmp_path):
    from swift.template import MaxLengthError

    from swift_plugin.template import apo_row_fits, encode_apo_row
    row = _long_answer_row(tmp_path)
    lengths = _template(processor, 'apo').encode(copy.deepcopy(row), return_length=True)['lengths']
    assert lengths[2] > max(lengths[:2] + lengths[3:]) + 50
    template = _template(processor, 'apo', max_length=lengths[2] - 1)
    assert apo_row_fits(template, copy.deepcopy(row)) == ([True, True, False, True], ['T0', 'T1', 'T2'])
    # ms-swift's --truncation_strategy delete (template 'raise'): the whole row goes, as in DPO.
    with pytest.raises(MaxLengthError, match=f'APO row over max_length {lengths[2] - 1}: rejected answer 1 '):
        template.encode(copy.deepcopy(row))
    # --apo_drop_long_rejected true: the row trains without that answer, exactly as if it had never been there.
    dropped = encode_apo_row(template, copy.deepcopy(row), return_length=True, drop_long_rejected=True)
    assert dropped['rejected_sources'] == ['T0', 'T2'] and dropped['lengths'] == lengths[:2] + lengths[3:]
    without = {**row, 'rejected_response': [row['rejected_response'][k] for k in (0, 2)],
               'rejected_sources': ['T0', 'T2']}
    expected = template.data_collator([template.encode(copy.deepcopy(without))])
    got = template.data_collator([dropped])
    assert sorted(got) == sorted(expected)
    for key in expected:
        assert got[key] == expected[key] if key == SOURCES_KEY else torch.equal(got[key], expected[key]), key
    # The chosen answer never goes, and a row keeps at least one rejected answer.
    for max_length, problem in [(lengths[0] - 1, 'the chosen answer'), (min(lengths[1:]) - 1, 'rejected answer 0')]:
        with pytest.raises(MaxLengthError, match=problem):
            encode_apo_row(_template(processor, 'apo', max_length=max_length), copy.deepcopy(row),
                           drop_long_rejected=True)


def test_drop_long_rejected_is_read_from_the_template(processor, tmp_path):
    """The rlhf pipeline sets the run's --apo_drop_long_rejected on the template; the encoding reads it there."""
    row = _long_answer_row(tmp_path)
    lengths = _template(processor, 'apo').encode(copy.deepcopy(row), return_length=True)['lengths']
    template = _template(processor, 'apo', max_length=lengths[2] - 1)
    template.apo_drop_long_rejected = True
    assert len(template.encode(copy.deepcopy(row))['rejected_answers']) == 2
    template.apo_drop_long_rejected = False
    with pytest.raises(ValueError, match='over max_length'):
        template.encode(copy.deepcopy(row))
