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
``--truncation_strategy`` follow ms-swift's rules (image placeholder tokens are never cut).
"""
from typing import Any, Dict, List, Optional

import torch
from swift.template import TemplateInputs
from swift.template.utils import get_last_user_round

from .rows import REJECTED_FIELD, SOURCES_FIELD, parse_rejected

APO_MODE = 'apo'
NUM_REJECTED_KEY = 'num_rejected'
SOURCES_KEY = 'rejected_sources'
_ANSWERS_KEY = 'rejected_answers'


def _without_none(encoded: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in encoded.items() if v is not None}


def encode_apo_row(template, row: Dict[str, Any], return_length: bool = False) -> Dict[str, Any]:
    """Encode one APO row with ``template`` (an ms-swift Template)."""
    if not isinstance(row, dict):
        raise TypeError(f'APO encoding takes a dataset row (dict), got {type(row).__name__}')
    rejected = parse_rejected(row, where=f'row with messages {str(row.get("messages"))[:200]!r}')
    chosen_row = {k: v for k, v in row.items() if k not in (REJECTED_FIELD, SOURCES_FIELD)}
    chosen_inputs = TemplateInputs.from_dict(chosen_row).chosen
    chosen = template._encode_truncated(chosen_inputs)

    messages = chosen_row['messages']
    prompt = messages[:get_last_user_round(messages, include_tool=False) + 1]
    answers = []
    for trajectory in rejected.trajectories:
        inputs = TemplateInputs.from_dict({**chosen_row, 'messages': prompt + trajectory}).chosen
        answers.append(_without_none(template._encode_truncated(inputs)))

    lengths = [chosen.pop('length')] + [answer.pop('length') for answer in answers]
    encoded = {f'chosen_{k}': v for k, v in _without_none(chosen).items()}
    encoded[_ANSWERS_KEY] = answers
    encoded[SOURCES_KEY] = rejected.sources
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
