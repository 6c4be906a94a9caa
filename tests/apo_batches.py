"""APO batches from ms-swift's real templates, for the tests that drive the model directly."""
import copy
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
from swift.model import get_model_processor
from swift.template import get_template

import swift_plugin  # noqa: F401  (arms the 'apo' template mode)
from swift_plugin.template import NUM_REJECTED_KEY, SOURCES_KEY


def load(path, model_type, attn_impl='sdpa', dtype=torch.float64):
    return get_model_processor(path, model_type=model_type, torch_dtype=dtype, attn_impl=attn_impl)


def apo_template(processor, model, template_type, **kwargs):
    template = get_template(processor, template_type=template_type, **kwargs)
    template.set_mode('apo')
    template.model = model
    return template


def rows(image_dir: Optional[Path], ks: Sequence[int], answer_words: int = 0, first: int = 0) -> List[Dict]:
    """One row per entry of ``ks`` (its number of rejected answers), with a small PNG each when ``image_dir``.

    ``answer_words`` lengthens every answer by that many words; ``first`` numbers the rows from there.
    """
    from PIL import Image
    extra = ' lung' * answer_words
    result = []
    for i, k in enumerate(ks, start=first):
        row = {
            'messages': [{'role': 'user', 'content': ('<image>' if image_dir else '') + f'Findings for study {i}?'},
                         {'role': 'assistant', 'content': f'C{i}: cm{"!" * i}{extra}'}],
            'rejected_response': [f'T{j}: {"no " * j}cm{extra}' for j in range(k)],
        }
        if image_dir:
            image = Path(image_dir) / f'cxr{i}.png'
            Image.new('RGB', (56, 56), (30 * i % 256, 90, 200 - 20 * i % 200)).save(image)
            row['images'] = [str(image)]
        result.append(row)
    return result


def collate(template, row_list):
    """(model inputs without labels, labels, num_rejected) of one APO micro-batch."""
    batch = template.data_collator([template.encode(copy.deepcopy(r)) for r in row_list])
    num_rejected = batch.pop(NUM_REJECTED_KEY)
    batch.pop(SOURCES_KEY, None)
    batch.pop('text_position_ids', None)
    labels = batch.pop('labels')
    return batch, labels, num_rejected


def sequence_logps(answer, num_sequences: int) -> torch.Tensor:
    """Per-sequence sums of an AnswerLogps' per-token log-probs."""
    return answer.token_logps.new_zeros(num_sequences).index_add(0, answer.sequence, answer.token_logps)
