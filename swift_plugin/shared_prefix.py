"""Shared-prefix packing of an APO batch: each row's prompt (image included) once, its answers after it.

template.py encodes a row as K + 1 sequences that repeat one prompt. Packing lays the row out as one
sequence

    prompt | chosen answer | rejected answer 1 | ... | rejected answer K

with a block-causal mask: prompt tokens attend causally within the prompt; answer tokens attend to the
whole prompt and causally within their own answer. Every token keeps the position it had in its own
plain sequence (mrope [3, ...] positions included, so each answer continues from the end of the
prompt exactly as the template's get_rope_index placed it). An answer token therefore sees the same
keys at the same positions as in the plain batch, and its logits are the plain path's, while the
vision tower and the prompt run once per row instead of K + 1 times (Wang & Hegde, arXiv 2410.20305,
generalised from one rejected answer to K).

The mask is one of three forms of the same rule, one per kernel (prefix_attention.py runs the last two):
dense (``block_causal_mask``, [rows, 1, L, L], for sdpa/eager); a FlexAttention ``BlockMask``
(``prefix_block_mask``): the rule as a mask function plus which 128 x 128 blocks are empty (skipped by the
kernel), full (no mask function call) or partial, with no L x L tensor; or a varlen layout
(``varlen_prefix_mask``): which tokens are the queries and keys of each segment, for flash-attention.

Pure tensor functions, no ms-swift import. ``pack_shared_prefix`` returns a reason instead of a
packed batch when a batch cannot be packed exactly; the caller then runs the plain batch.
"""
from dataclasses import dataclass, fields, replace
from itertools import accumulate, groupby
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch.nn.attention.flex_attention import BlockMask

IGNORE_INDEX = -100
_PER_TOKEN_KEYS = ('input_ids', 'mm_token_type_ids')
_KNOWN_KEYS = set(_PER_TOKEN_KEYS) | {'attention_mask', 'position_ids', 'pixel_values', 'image_grid_thw'}


@dataclass
class AnswerTokens:
    """Every answer token of the plain batch, in plain order (sequence by sequence, left to right).

    ``row``/``position`` address the model input whose output predicts the token, ``sequence`` is the
    plain sequence the token belongs to (``[chosen x B, rejected row by row]``), ``target`` its id.
    """
    row: torch.Tensor
    position: torch.Tensor
    sequence: torch.Tensor
    target: torch.Tensor


@dataclass
class PackedBatch:
    inputs: Dict[str, Any]
    tokens: AnswerTokens


def plain_answer_tokens(labels: torch.Tensor) -> AnswerTokens:
    """Answer tokens of an unpacked batch: position t predicts labels[t + 1]."""
    following = labels[:, 1:]
    sequence, position = (following != IGNORE_INDEX).nonzero(as_tuple=True)
    return AnswerTokens(sequence, position, sequence, following[sequence, position])


def block_causal_mask(segments: torch.Tensor, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """[rows, 1, L, L] mask from segment ids (0: shared prompt, j > 0: answer j, -1: padding).

    Bool (True = attend) when ``dtype`` is None, else additive (0 or the dtype's minimum) for eager
    attention, which adds the mask to the scores. Padding queries see the prompt and themselves, so
    no softmax row is empty (an all-masked row is NaN in sdpa, and NaN * 0 poisons the backward).
    """
    length = segments.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=segments.device).tril()
    query, key = segments.unsqueeze(2), segments.unsqueeze(1)
    allowed = causal & ((key == 0) | (key == query))
    allowed = allowed.unsqueeze(1)
    if dtype is None:
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=segments.device).masked_fill(~allowed,
                                                                                       torch.finfo(dtype).min)


def _prefix_mask_mod(segments: torch.Tensor):
    """``block_causal_mask``'s rule as a FlexAttention mask function."""

    def mask_mod(b, h, q, kv):
        key = segments[b, kv]
        return (kv <= q) & ((key == 0) | (key == segments[b, q]))

    return mask_mod


def prefix_block_mask(segments: torch.Tensor, block_size: int = 128, rows_per_chunk: int = 2048):
    """FlexAttention ``BlockMask`` equal to ``block_causal_mask(segments)``, built without an L x L tensor.

    Blocks are classified from ``rows_per_chunk`` query rows at a time (peak rows_per_chunk x L booleans);
    blocks that reach past L are never full, so the mask function trims them.
    """
    from torch.nn.attention.flex_attention import BlockMask
    rows, length = segments.shape
    num_blocks = -(-length // block_size)
    padded = num_blocks * block_size
    seg = torch.nn.functional.pad(segments, (0, padded - length), value=-2)  # -2: beyond L
    rows_per_chunk = max(block_size, rows_per_chunk // block_size * block_size)
    key = seg.unsqueeze(1)
    key_index = torch.arange(padded, device=segments.device)
    partial, full = [], []
    for start in range(0, padded, rows_per_chunk):
        query = seg[:, start:start + rows_per_chunk].unsqueeze(2)
        query_index = torch.arange(start, start + query.shape[1], device=segments.device).unsqueeze(1)
        allowed = (key_index <= query_index) & ((key == 0) | (key == query)) & (key > -2) & (query > -2)
        blocks = allowed.view(rows, -1, block_size, num_blocks, block_size)
        any_, all_ = blocks.any(4).any(2), blocks.all(4).all(2)
        partial.append(any_ & ~all_)
        full.append(all_)
    partial, full = torch.cat(partial, 1).unsqueeze(1), torch.cat(full, 1).unsqueeze(1)

    def listed(which):  # block counts and indices, listed blocks first
        order = torch.argsort((~which).to(torch.int8), dim=-1, stable=True).to(torch.int32)
        return which.sum(-1).to(torch.int32), order

    kv_num, kv_indices = listed(partial)
    full_num, full_indices = listed(full)
    return BlockMask.from_kv_blocks(kv_num, kv_indices, full_num, full_indices, BLOCK_SIZE=block_size,
                                    mask_mod=_prefix_mask_mod(segments), seq_lengths=(length, length))


@dataclass
class VarlenLayout:
    """The shared-prefix rule as varlen sequences over the flattened [rows * L] tokens.

    Sequence by sequence: a row's prompt (queries and keys: the prompt), then each of its answers (queries:
    the answer; keys: the prompt, then the answer). Causal with the diagonal aligned at the end of the keys,
    this is ``block_causal_mask``'s rule; padding tokens are no sequence's queries or keys.
    """
    query_index: torch.Tensor  # [Tq] into the flattened tokens
    key_index: torch.Tensor  # [Tk]: the prompt's tokens once for itself and once per answer
    cu_seq_q: torch.Tensor  # int32 [sequences + 1]
    cu_seq_k: torch.Tensor
    max_q: int
    max_k: int


def prefix_varlen_layout(segments: torch.Tensor) -> VarlenLayout:
    """``VarlenLayout`` of segment ids (each row: its prompt 0 first, answers 1, 2, ... after it, padding -1 last)."""
    rows, length = segments.shape
    queries, keys = [], []  # per sequence: its [start, end) spans of flattened token indices
    for r, row in enumerate(segments.tolist()):
        runs, start = [], r * length
        for segment, members in groupby(row):
            runs.append((segment, start, start + len(list(members))))
            start = runs[-1][2]
        ids = [segment for segment, _, _ in runs]
        if ids[0] != 0 or -1 in ids[:-1] or len(set(ids)) != len(ids):
            raise ValueError(f'row {r}: segment ids {ids} are not prompt 0, then answers, then padding -1')
        prompt = runs[0][1:]
        queries.append([prompt])
        keys.append([prompt])
        for segment, first, end in runs[1:]:
            if segment > 0:
                queries.append([(first, end)])
                keys.append([prompt, (first, end)])
    device = segments.device

    def flat_and_bounds(sequences):
        index = torch.cat([torch.arange(a, b, device=device) for spans in sequences for a, b in spans])
        lengths = [sum(b - a for a, b in spans) for spans in sequences]
        bounds = torch.tensor([0] + list(accumulate(lengths)), dtype=torch.int32, device=device)
        return index, bounds, max(lengths)

    query_index, cu_seq_q, max_q = flat_and_bounds(queries)
    key_index, cu_seq_k, max_k = flat_and_bounds(keys)
    return VarlenLayout(query_index, key_index, cu_seq_q, cu_seq_k, max_q, max_k)


class VarlenPrefixMask(BlockMask):
    """A ``VarlenLayout`` and the kernel to run it, dressed as a [rows, 1, L, L] ``BlockMask``.

    transformers' mask preparation passes any 4D mask on unchanged, in every model, so this reaches the
    language model's attention calls the way the FlexAttention mask does; prefix_attention.py's dispatcher
    recognises it there. As a block mask it lists no block at all: a flex_attention that were handed it by
    mistake would attend to nothing and make the mistake loud (zero outputs), never subtly wrong.
    """
    layout: VarlenLayout
    kernel: Callable[..., torch.Tensor]

    @classmethod
    def carrying(cls, layout: VarlenLayout, kernel, rows: int, length: int) -> 'VarlenPrefixMask':
        nothing = torch.zeros(rows, 1, 1, dtype=torch.int32, device=layout.query_index.device)
        mask = cls.from_kv_blocks(nothing, nothing.unsqueeze(-1), BLOCK_SIZE=max(length, 1),
                                  seq_lengths=(length, length))
        mask.layout, mask.kernel = layout, kernel
        return mask

    def to(self, device) -> 'VarlenPrefixMask':
        """As ``BlockMask.to`` (accelerate's device hooks call it), keeping the layout and the kernel."""
        values = {f.name: getattr(self.layout, f.name) for f in fields(VarlenLayout)}
        moved = replace(self.layout, **{k: v.to(device) for k, v in values.items() if isinstance(v, torch.Tensor)})
        return VarlenPrefixMask.carrying(moved, self.kernel, self.shape[0], self.shape[-1])


def varlen_prefix_mask(segments: torch.Tensor, kernel: Callable[..., torch.Tensor]) -> VarlenPrefixMask:
    return VarlenPrefixMask.carrying(prefix_varlen_layout(segments), kernel, *segments.shape)


def _image_spans(input_ids, real, grid, image_token_id, merge_size) -> Tuple[Optional[List[Tuple[int, int]]], str]:
    """Which images (indices into image_grid_thw) each sequence owns; ms-swift concatenates them in sequence order."""
    tokens_per_image = (grid.prod(-1) // merge_size**2).tolist()
    spans, image = [], 0
    for needed in ((input_ids == image_token_id) & real).sum(1).tolist():
        first = image
        while needed > 0 and image < len(tokens_per_image):
            needed -= tokens_per_image[image]
            image += 1
        if needed != 0:
            return None, 'image placeholder tokens do not match image_grid_thw'
        spans.append((first, image))
    if image != len(tokens_per_image):
        return None, 'image_grid_thw has images no sequence uses'
    return spans, ''


def pack_shared_prefix(batch: Dict[str, Any],
                       labels: torch.Tensor,
                       num_rejected: torch.Tensor,
                       image_token_id: Optional[int] = None,
                       image_merge_size: Optional[int] = None,
                       mask_dtype: Optional[torch.dtype] = None,
                       kernel: str = 'dense',
                       varlen_kernel: Optional[Callable[..., torch.Tensor]] = None
                       ) -> Tuple[Optional[PackedBatch], str]:
    """Pack ``[chosen x B, rejected row by row]`` into B shared-prefix rows, or say why not.

    Args:
        batch: the model inputs of the plain batch (without labels).
        labels: [sequences, length], unshifted; -100 outside the answers.
        num_rejected: [B] rejected sequences per row.
        image_token_id, image_merge_size: how image placeholders map to ``image_grid_thw`` rows
            (Qwen2-VL family); needed only when the batch has ``pixel_values``.
        kernel: the attention mask's form: 'dense' (4D tensor), 'flex' (``BlockMask``) or 'flash'
            (``VarlenPrefixMask`` running ``varlen_kernel``).
        mask_dtype: for 'dense', None for a bool mask (sdpa), a float dtype for an additive one (eager).
    Returns:
        (packed batch, '') or (None, reason).
    """
    unknown = sorted(k for k, v in batch.items() if v is not None and k not in _KNOWN_KEYS)
    if unknown:
        return None, f'the batch has inputs {unknown} that packing cannot lay out'
    input_ids = batch['input_ids']
    num_seqs, length = input_ids.shape
    device = input_ids.device
    attention_mask = batch.get('attention_mask')
    if attention_mask is not None and attention_mask.dim() != 2:
        return None, 'the batch already has a custom attention mask'
    real = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    plain_positions = batch.get('position_ids')
    if plain_positions is None:
        plain_positions = torch.arange(length, device=device).expand(num_seqs, length)
    positions_2d = plain_positions.dim() == 2
    if positions_2d:
        plain_positions = plain_positions.unsqueeze(0)

    answer = (labels != IGNORE_INDEX) & real
    if not bool(answer.any(1).all()):
        return None, 'a sequence has no answer tokens left (truncated away?)'
    starts = real.int().argmax(1).tolist()
    ends = [s + n for s, n in zip(starts, real.sum(1).tolist())]
    answer_starts = answer.int().argmax(1).tolist()
    if any(not bool(real[i, starts[i]:ends[i]].all()) for i in range(num_seqs)):
        return None, 'a sequence has holes in its attention mask'

    pixel_values = batch.get('pixel_values')
    if pixel_values is not None:
        grid = batch.get('image_grid_thw')
        if grid is None or image_token_id is None or image_merge_size is None:
            return None, 'the batch has pixel_values but no image_grid_thw / image token id / merge size'
        spans, reason = _image_spans(input_ids, real, grid, image_token_id, image_merge_size)
        if spans is None:
            return None, reason
        patch_offsets = [0] + list(accumulate(grid.prod(-1).tolist()))

        def images_of(i):
            first, last = spans[i]
            return pixel_values[patch_offsets[first]:patch_offsets[last]], grid[first:last]

    num_rows = num_rejected.shape[0]
    first_rejected = [num_rows + o for o in accumulate([0] + num_rejected.tolist()[:-1])]
    row_of, answer_offset, prompt_lengths = [0] * num_seqs, [0] * num_seqs, []
    row_sources, row_segments, row_pixels, row_grids = [], [], [], []
    for r in range(num_rows):
        members = [r] + list(range(first_rejected[r], first_rejected[r] + int(num_rejected[r])))
        s, a = starts[r], answer_starts[r]
        for i in members[1:]:
            si, ai = starts[i], answer_starts[i]
            same_prompt = (ai - si == a - s and torch.equal(input_ids[i, si:ai], input_ids[r, s:a])
                           and torch.equal(plain_positions[:, i, si:ai], plain_positions[:, r, s:a])
                           and all(torch.equal(batch[k][i, si:ai], batch[k][r, s:a])
                                   for k in _PER_TOKEN_KEYS if batch.get(k) is not None))
            if not same_prompt:
                return None, (f'row {r}: its answers do not share one prompt (prompt tokens or positions differ, '
                              'e.g. after truncation)')
            if pixel_values is not None and not all(map(torch.equal, images_of(i), images_of(r))):
                return None, f'row {r}: its sequences carry different images'
        if pixel_values is not None:
            in_answers = any(bool((input_ids[i, answer_starts[i]:ends[i]] == image_token_id).any()) for i in members)
            if in_answers:
                return None, f'row {r}: an answer holds image tokens'
            pixels, grids = images_of(r)
            row_pixels.append(pixels)
            row_grids.append(grids)
        sources = [r * length + torch.arange(s, a, device=device)]
        segments = [torch.zeros(a - s, dtype=torch.long, device=device)]
        offset = a - s
        prompt_lengths.append(offset)
        for j, i in enumerate(members, start=1):
            row_of[i], answer_offset[i] = r, offset
            sources.append(i * length + torch.arange(answer_starts[i], ends[i], device=device))
            segments.append(torch.full((ends[i] - answer_starts[i], ), j, device=device))
            offset += ends[i] - answer_starts[i]
        row_sources.append(torch.cat(sources))
        row_segments.append(torch.cat(segments))

    packed_length = max(len(s) for s in row_sources)
    padding = [packed_length - len(s) for s in row_sources]
    source = torch.stack([torch.nn.functional.pad(s, (0, p)) for s, p in zip(row_sources, padding)])
    segments = torch.stack([torch.nn.functional.pad(s, (0, p), value=-1) for s, p in zip(row_segments, padding)])
    is_padding = segments < 0

    inputs = {
        k: batch[k].flatten()[source].masked_fill(is_padding, 0)
        for k in _PER_TOKEN_KEYS if batch.get(k) is not None
    }
    if kernel == 'flash':
        inputs['attention_mask'] = varlen_prefix_mask(segments, varlen_kernel)
    elif kernel == 'flex':
        inputs['attention_mask'] = prefix_block_mask(segments)
    else:
        inputs['attention_mask'] = block_causal_mask(segments, mask_dtype)
    positions = plain_positions.flatten(1)[:, source].masked_fill(is_padding, 0)
    inputs['position_ids'] = positions[0] if positions_2d else positions
    if pixel_values is not None:
        inputs['pixel_values'] = torch.cat(row_pixels)
        inputs['image_grid_thw'] = torch.cat(row_grids)

    # Plain position t of sequence i predicts labels[i, t + 1]; the prompt's last position (shared) predicts
    # each answer's first token, position t inside the answer sits at answer_offset + (t - answer start).
    rows, positions_in_row, sequences, targets = [], [], [], []
    for i in range(num_seqs):
        predictors = torch.arange(answer_starts[i] - 1, ends[i] - 1, device=device)
        target = labels[i, predictors + 1]
        keep = target != IGNORE_INDEX
        in_answer = predictors - answer_starts[i] + answer_offset[i]
        packed = torch.where(predictors < answer_starts[i], prompt_lengths[row_of[i]] - 1, in_answer)
        rows.append(torch.full((int(keep.sum()), ), row_of[i], device=device))
        positions_in_row.append(packed[keep])
        sequences.append(torch.full_like(rows[-1], i))
        targets.append(target[keep])
    tokens = AnswerTokens(torch.cat(rows), torch.cat(positions_in_row), torch.cat(sequences), torch.cat(targets))
    return PackedBatch(inputs, tokens), ''
