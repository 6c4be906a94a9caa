"""Rejected answers with their own images (``rejected_images``): the log-probs APO trains on, on the real tiny
Qwen2.5-VL, against each sequence run alone through the model as ms-swift's SFT encoding builds it."""
import copy

import pytest
import torch
from PIL import Image
from swift.model import get_model_processor
from swift.template import get_template

import swift_plugin  # noqa: F401  (arms the 'apo' template mode)
from swift_plugin.answer_logps import FastPathOptions, compute_answer_logps
from swift_plugin.shared_prefix import ImageRule, pack_shared_prefix
from swift_plugin.template import NUM_REJECTED_KEY, SOURCES_KEY


@pytest.fixture(scope='module')
def model_and_template(tiny_vl_model):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('HF_HUB_OFFLINE', '1')
        mp.setenv('MAX_PIXELS', '3136')
        model, processor = get_model_processor(tiny_vl_model, model_type='qwen2_5_vl', torch_dtype=torch.float64,
                                               attn_impl='sdpa')
        template = get_template(processor, template_type='qwen2_5_vl')
        template.model = model
        template.register_post_encode_hook([model])
        yield model, template
        template.remove_post_encode_hook()


def _image(tmp_path, name, size, color):
    path = tmp_path / name
    Image.new('RGB', size, color).save(path)
    return str(path)


def _rows(tmp_path):
    """Row 0: the answers' own images, same size as the chosen one (same tokens, other pixels); row 1: one image
    shared by its rejected answers, of another size (other tokens); row 2: the chosen image everywhere."""
    chosen = [_image(tmp_path, f'chosen{i}.png', (56, 56), (40 * i, 120, 200)) for i in range(3)]
    rows = []
    for i in range(3):
        rows.append({'messages': [{'role': 'user', 'content': f'<image>Findings for study {i}?'},
                                  {'role': 'assistant', 'content': f'Consensus {i}: cardiomegaly.'}],
                     'rejected_response': [f'Teacher {j}: study {i} is normal.' for j in range(2)],
                     'images': [chosen[i]]})
    rows[0]['rejected_images'] = [[_image(tmp_path, 'r0.png', (56, 56), (250, 0, 0))],
                                  [_image(tmp_path, 'r1.png', (56, 56), (0, 250, 0))]]
    rows[1]['rejected_images'] = [_image(tmp_path, 'wide.png', (112, 56), (0, 0, 250))]
    return rows


def _alone(model, template, messages, images):
    """Sum of the answer's log-probs with the sequence alone in the batch (ms-swift's SFT encoding)."""
    template.set_mode('train')
    batch = template.data_collator([template.encode({'messages': messages, 'images': images})])
    batch.pop('text_position_ids', None)
    labels = batch.pop('labels')
    with torch.no_grad():
        logits = model(**batch, use_cache=False).logits[0, :-1]
    targets = labels[0, 1:]
    answer = targets != -100
    return logits[answer].log_softmax(-1).gather(-1, targets[answer, None]).sum()


def _apo_batch(template, rows):
    template.set_mode('apo')
    batch = template.data_collator([template.encode(copy.deepcopy(r)) for r in rows])
    num_rejected = batch.pop(NUM_REJECTED_KEY)
    batch.pop(SOURCES_KEY, None)
    batch.pop('text_position_ids', None)
    return batch, batch.pop('labels'), num_rejected


def test_answers_with_their_own_images_get_their_own_log_probs(model_and_template, tmp_path):
    model, template = model_and_template
    rows = _rows(tmp_path)
    batch, labels, num_rejected = _apo_batch(template, rows)

    # The shared-prefix packing cannot share a prompt whose image differs by answer: the batch runs plain.
    image_layout = {'images': ImageRule(model.config.image_token_id, 'grid', 4, 'image_grid_thw')}
    assert pack_shared_prefix(batch, labels, num_rejected, **image_layout) == (
        None, 'row 0: its sequences carry different images')
    assert pack_shared_prefix(*_apo_batch(template, rows[1:2]), **image_layout)[1].startswith(
        'row 0: its answers do not share one prompt')
    with torch.no_grad():
        answer = compute_answer_logps(model, model, batch, labels, num_rejected, FastPathOptions())
    assert not answer.packed
    got = answer.token_logps.new_zeros(labels.shape[0]).index_add(0, answer.sequence, answer.token_logps)

    sequences = [(r['messages'], r['images']) for r in rows]  # [chosen x 3, rejected row by row]
    for row in rows:
        prompt = row['messages'][:1]
        per_answer = row.get('rejected_images')
        for j, text in enumerate(row['rejected_response']):
            images = row['images'] if per_answer is None else (per_answer[j] if isinstance(per_answer[0], list)
                                                               else per_answer)
            sequences.append((prompt + [{'role': 'assistant', 'content': text}], images))
    expected = torch.stack([_alone(model, template, m, i) for m, i in sequences])
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)

    # The images matter: the same answers under the chosen row's image score differently.
    wrong = torch.stack([_alone(model, template, m, rows[0]['images']) for m, _ in sequences[3:5]])
    assert (wrong - expected[3:5]).abs().min() > 1e-6
