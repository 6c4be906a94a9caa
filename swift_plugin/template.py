"""Encoding and collation of APO rows: one prompt, one chosen answer, K rejected answers.

A template in mode ``'apo'`` (see registration.py) encodes a row into

    {'chosen_<key>': ...,                     # the prompt + chosen answer, as ms-swift's DPO encodes it
     'rejected_answers': [{<key>: ...}, ...],  # the prompt + each rejected answer, K entries
     'rejected_sources': [...] or None}

and collates a batch of B rows into one model batch whose sequences are
``[chosen_1 .. chosen_B, rejected answers of row 1, rejected answers of row 2, ...]`` with
``num_rejected`` [B] saying how many rejected sequences each row owns. With K = 1 everywhere this is
exactly ms-swift's DPO layout ``[chosen x B, rejected x B]``.

Each sequence goes through the template's own ``_encode_truncated``, so ``--max_length`` and
``--truncation_strategy`` follow ms-swift's rules (image placeholder tokens are never cut). Under
``--truncation_strategy delete`` a row with any sequence over max_length is dropped, as in DPO; with
``--apo_drop_long_rejected true`` only its over-long rejected answers are (see ``rows.kept_answers``).
A rejected answer is encoded with its own images when the row has ``rejected_images``.
"""
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch
from swift.template import MaxLengthError, Template, TemplateInputs
from swift.template.templates.qwen import Qwen2VLTemplate
from swift.template.utils import get_last_user_round

from .rows import RejectedAnswers, kept_answers, parse_rejected

APO_MODE = 'apo'
NUM_REJECTED_KEY = 'num_rejected'
SOURCES_KEY = 'rejected_sources'
_ANSWERS_KEY = 'rejected_answers'
def _without_none(encoded: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in encoded.items() if v is not None}


@dataclass
class _EncodedSequences:
    chosen_inputs: Any  # ms-swift's StdTemplateInputs of the chosen sequence
    chosen: Optional[Dict[str, Any]]  # None: over max_length
    answers: List[Optional[Dict[str, Any]]]  # one per rejected answer; None: over max_length
    rejected: RejectedAnswers

    @property
    def fits(self) -> List[bool]:
        return [self.chosen is not None] + [answer is not None for answer in self.answers]


def describe_row(row: Dict[str, Any]) -> str:
    """How errors name a row once it has left its file (ms-swift shuffles and samples rows)."""
    return f'row with messages {str(row.get("messages"))[:200]!r}'


def _encode_or_none(template, inputs) -> Optional[Dict[str, Any]]:
    try:
        encoded = template._encode_truncated(inputs)
    except MaxLengthError:  # raised only under --truncation_strategy delete
        return None
    types = encoded.get('mm_token_type_ids')
    if types is not None and len(types) != len(encoded['input_ids']):
        # ms-swift 4.6's glm4_5v template keeps the processor's mm_token_type_ids of the image placeholder text alone;
        # the model reads them only to place positions, which the collator computes from input_ids instead.
        encoded['mm_token_type_ids'] = template.create_mm_token_type_ids(encoded['input_ids'])
    return encoded


def _split_row(row: Dict[str, Any]) -> Tuple[RejectedAnswers, Dict[str, Any], List[Dict[str, Any]]]:
    """The row's rejected answers, its chosen row (no rejected_* keys) and the prompt every answer follows."""
    if not isinstance(row, dict):
        raise TypeError(f'APO encoding takes a dataset row (dict), got {type(row).__name__}')
    rejected = parse_rejected(row, where=describe_row(row))
    # rejected_* keys would make ms-swift build a DPO rejected sequence; APO builds its own from them.
    chosen_row = {k: v for k, v in row.items() if not k.startswith('rejected_')}
    messages = chosen_row['messages']
    return rejected, chosen_row, messages[:get_last_user_round(messages, include_tool=False) + 1]


def _encode_sequences(template, row: Dict[str, Any]) -> _EncodedSequences:
    rejected, chosen_row, prompt = _split_row(row)
    chosen_inputs = TemplateInputs.from_dict(chosen_row).chosen
    chosen = _encode_or_none(template, chosen_inputs)
    answers = []
    for k, trajectory in enumerate(rejected.trajectories):
        answer_row = {**chosen_row, 'messages': prompt + trajectory}
        if rejected.images is not None:
            answer_row['images'] = rejected.images[k]
        answers.append(_encode_or_none(template, TemplateInputs.from_dict(answer_row).chosen))
    return _EncodedSequences(chosen_inputs, chosen, answers, rejected)


def _untruncated_length(template, row: Dict[str, Any]) -> int:
    """The length ``_encode_truncated`` compares with max_length (it raises without saying it)."""
    inputs = TemplateInputs.from_dict(row).chosen
    template._preprocess_inputs(inputs)
    encoded = template._encode(inputs)
    return template._get_length(encoded.get('input_ids'), encoded.get('labels'))


# Templates whose encoding is ms-swift's text encoding, each piece tokenized on its own (template_backend
# 'swift'), plus media tokens decided by the media alone: a sequence's length is the prompt's and media's,
# which every answer of a row shares, plus its answer's.
_ADDITIVE_ENCODE = (Template._encode, Qwen2VLTemplate._encode)


def _plain_answer(messages: List[Dict[str, Any]]) -> bool:
    return (len(messages) == 1 and set(messages[0]) <= {'role', 'content'} and messages[0]['role'] == 'assistant'
            and isinstance(messages[0]['content'], str))


def _shared_prompt_lengths(template, rejected: RejectedAnswers, chosen_row: Dict[str, Any],
                           prompt: List[Dict[str, Any]]) -> Optional[List[int]]:
    """Lengths [chosen, rejected 1..K] from one encoding with media, or None where that is not exact.

    Every answer follows the same prompt and images, so rejected answer k's length is the chosen sequence's
    minus the chosen answer's tokens plus answer k's; the answers' token counts come from the same template
    encoding the prompt and each answer without the images, where only the answer differs.
    """
    answers = [chosen_row['messages'][len(prompt):]] + list(rejected.trajectories)
    if (template.template_backend != 'swift' or template.is_encoder_decoder
            or type(template)._encode not in _ADDITIVE_ENCODE or rejected.images is not None
            or any(chosen_row.get(key) for key in ('videos', 'audios', 'objects'))
            or not all(_plain_answer(answer) for answer in answers)
            # '<img>path</img>' turns into an image when a row has none (ms-swift's _replace_image_tags)
            or any('<img>' in str(message['content']) for message in prompt + [a[0] for a in answers])):
        return None
    chosen = _untruncated_length(template, chosen_row)
    text_only = [_untruncated_length(template, {**chosen_row, 'messages': prompt + answer, 'images': []})
                 for answer in answers]
    return [chosen - text_only[0] + n for n in text_only]


def apo_row_fits(template, row: Dict[str, Any]) -> Tuple[List[bool], Optional[List[str]]]:
    """Whether each sequence of the row, [chosen, rejected 1, ..., rejected K], fits ``--max_length``, and the
    row's ``rejected_sources``.

    Under ``--truncation_strategy delete`` the images of a row whose answers share the prompt and images are
    processed once, not K + 1 times (``_shared_prompt_lengths``); other rows are encoded as for training.
    """
    if template.truncation_strategy == 'raise' and template.max_length is not None:
        rejected, chosen_row, prompt = _split_row(row)
        lengths = _shared_prompt_lengths(template, rejected, chosen_row, prompt)
        if lengths is not None:
            return [length <= template.max_length for length in lengths], rejected.sources
    sequences = _encode_sequences(template, row)
    return sequences.fits, sequences.rejected.sources


def encode_apo_row(template,
                   row: Dict[str, Any],
                   return_length: bool = False,
                   drop_long_rejected: Optional[bool] = None) -> Dict[str, Any]:
    """Encode one APO row with ``template`` (an ms-swift Template).

    Raises MaxLengthError (ms-swift then drops the row) when the row does not train under
    ``--truncation_strategy delete``; ``drop_long_rejected`` defaults to the run's ``--apo_drop_long_rejected``,
    which the rlhf pipeline sets on the template.
    """
    if drop_long_rejected is None:
        drop_long_rejected = getattr(template, 'apo_drop_long_rejected', False)
    sequences = _encode_sequences(template, row)
    kept = kept_answers(sequences.fits, drop_long_rejected)
    if kept is None:
        names = ['the chosen answer'] + [f'rejected answer {k}' for k in range(len(sequences.answers))]
        over = [name for name, fit in zip(names, sequences.fits) if not fit]
        raise MaxLengthError(f'APO row over max_length {template.max_length}: {", ".join(over)} '
                             f'(the row trains only when the chosen answer and every rejected answer fit, or with '
                             '--apo_drop_long_rejected true at least one)')
    chosen = sequences.chosen
    answers = [_without_none(sequences.answers[k]) for k in kept]
    sources = sequences.rejected.sources
    lengths = [chosen.pop('length')] + [answer.pop('length') for answer in answers]
    encoded = {f'chosen_{k}': v for k, v in _without_none(chosen).items()}
    encoded[_ANSWERS_KEY] = answers
    encoded[SOURCES_KEY] = [sources[k] for k in kept] if sources else None
    chosen_inputs = sequences.chosen_inputs
    if chosen_inputs.channel is not None:
        encoded['channel'] = chosen_inputs.channel
    if return_length:
        encoded['lengths'] = lengths
    if not template.remove_unused_columns:
        encoded['_extra_kwargs'] = chosen_inputs.extra_kwargs
    return encoded


def collate_apo_rows(template, batch: List[Dict[str, Any]], padding_to: Optional[int] = None) -> Dict[str, Any]:
    """Collate encoded APO rows into ``[chosen x B, rejected answers row by row]`` plus ``num_rejected``."""
    chosen = template._fetch_inputs_startswith(batch, 'chosen_')
    rejected = [answer for row in batch for answer in row[_ANSWERS_KEY]]
    res = template._data_collator(chosen + rejected, padding_to=padding_to)
    res[NUM_REJECTED_KEY] = torch.tensor([len(row[_ANSWERS_KEY]) for row in batch], dtype=torch.long)
    if any(row.get(SOURCES_KEY) for row in batch):
        res[SOURCES_KEY] = [row.get(SOURCES_KEY) or [None] * len(row[_ANSWERS_KEY]) for row in batch]
    return res
