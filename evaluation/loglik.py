"""Likelihood scoring (``classify --scoring loglik``): each class of an item gets an answer text, the model
scores every text as the assistant's reply to the item's prompt, and the class whose text has the highest
summed log-probability is the prediction; the per-token mean is reported beside it (as
lm-evaluation-harness scores multiple-choice tasks: ``acc`` and ``acc_norm``-like). No answer is parsed.

The model, adapters and template come from ms-swift's own ``swift infer`` set-up (``InferArguments`` and
``prepare_model_template``, with ``--swift-args`` parsed as ``swift infer`` would), and the prompt is
ms-swift's encoding of the same request the generative path sends, generation prompt included. The answer
text's tokens (the tokenizer's, no special tokens, no end-of-turn token) are appended to it.
"""
import copy
from typing import Dict, List, Sequence, Tuple

from datafiles import DataError

from .items import Item

DEFAULT_ANSWER_TEMPLATE = '{choice}'


def answer_text(template: str, choice: str, observation: str) -> str:
    try:
        text = template.format(choice=choice, observation=observation)
    except (KeyError, IndexError) as e:
        raise DataError(f'--answer-template: unknown placeholder {e}; use {{choice}}, {{observation}}') from None
    if not text.strip():
        raise DataError(f'--answer-template {template!r} gives an empty answer for class {choice!r}')
    return text


def load_model_template(model: str, adapters: Sequence[str], swift_args: Sequence[str]):
    """The model (adapters applied) and template, in eval mode, as ``swift infer --model M --adapters ...``
    with ``swift_args`` would build them."""
    from swift.arguments import InferArguments
    from swift.pipelines.utils import prepare_model_template
    from swift.utils import parse_args

    argv = ['--model', model, *(['--adapters', *adapters] if adapters else []), *swift_args]
    args, rest = parse_args(InferArguments, argv)
    if rest:
        raise DataError(f'--swift-args: not `swift infer` arguments: {rest}')
    model, template = prepare_model_template(args)
    template.set_mode('transformers')
    model.eval()
    return model, template


def encode_prompt(template, request: Dict) -> Dict:
    """ms-swift's encoding of ``request``: the prompt up to and including the assistant turn's opening."""
    encoded = template.encode(copy.deepcopy(request))
    encoded.pop('labels', None)
    return encoded


def _with_answer(prompt: Dict, answer_ids: List[int]) -> Dict:
    import torch
    encoded = dict(prompt, input_ids=list(prompt['input_ids']) + answer_ids)
    if 'mm_token_type_ids' in prompt:   # per-token: answer tokens are text (0)
        mm = prompt['mm_token_type_ids']
        encoded['mm_token_type_ids'] = torch.cat([mm, mm.new_zeros(len(answer_ids))])
    return encoded


def score_sequences(model, template, batch: List[Tuple[Dict, List[int]]]):
    """Per-token log-probabilities of each ``answer_ids`` after its encoded prompt, one forward pass for the batch."""
    import torch
    from swift.utils import to_device
    encoded = [_with_answer(prompt, ids) for prompt, ids in batch]
    inputs = to_device(template.data_collator(encoded), model.device)
    if inputs['input_ids'].shape[1] != max(len(e['input_ids']) for e in encoded) or \
            not bool(inputs['attention_mask'][:, -1].all()):
        raise RuntimeError('expected ms-swift to pad inference batches on the left')
    _, inputs = template.pre_forward_hook(model, None, inputs)
    inputs.pop('labels', None)
    longest = max(len(ids) for _, ids in batch)
    # left padding puts every answer at the end: only the last positions' logits are needed
    logits = model(**inputs, use_cache=False, logits_to_keep=longest + 1).logits
    out = []
    for row, (_, ids) in enumerate(batch):
        n = len(ids)
        predicting = logits[row, longest - n:longest]
        logps = torch.log_softmax(predicting.to(torch.promote_types(predicting.dtype, torch.float32)), dim=-1)
        target = torch.tensor(ids, device=logps.device)
        out.append(logps.gather(-1, target[:, None])[:, 0].tolist())
    return out


def answer_texts(items: List[Item], answer_template: str) -> Dict[str, Dict[str, str]]:
    """item id -> class -> the answer text scored for it."""
    return {item.id: {c: answer_text(answer_template, c, item.observation) for c in item.classes} for item in items}


def loglik_scores(items: List[Item], requests: List[Dict], texts: Dict[str, Dict[str, str]], model, template,
                  batch_size: int) -> Dict[str, Dict[str, Dict]]:
    """item id -> class -> {"text": its answer text, "sum_logp": the summed log-probability of the text's
    tokens, "mean_logp": per token, "n_tokens"}."""
    import torch
    from tqdm import tqdm
    tokenizer = template.tokenizer
    jobs = [(item.id, choice, text, request, tokenizer(text, add_special_tokens=False)['input_ids'])
            for item, request in zip(items, requests) for choice, text in texts[item.id].items()]
    scores: Dict[str, Dict[str, Dict]] = {item.id: {} for item in items}
    prompts: Dict[str, Dict] = {}     # an item's prompt is encoded (images loaded) once for all its classes
    with torch.inference_mode(), tqdm(total=len(jobs), desc='loglik', unit='answer') as bar:
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start:start + batch_size]
            kept, prompts = prompts, {}
            for item_id, _, _, request, _ in chunk:
                if item_id not in prompts:
                    prompts[item_id] = kept.get(item_id) or encode_prompt(template, request)
            logps = score_sequences(model, template, [(prompts[item_id], ids) for item_id, *_, ids in chunk])
            for (item_id, choice, text, _, _), token_logps in zip(chunk, logps):
                scores[item_id][choice] = {'text': text, 'sum_logp': sum(token_logps),
                                           'mean_logp': sum(token_logps) / len(token_logps),
                                           'n_tokens': len(token_logps)}
            bar.update(len(chunk))
    return scores
