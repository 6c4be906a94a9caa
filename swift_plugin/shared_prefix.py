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
_IMAGE_META_KEYS = ('image_grid_thw', 'image_sizes')
_KNOWN_KEYS = set(_PER_TOKEN_KEYS) | set(_IMAGE_META_KEYS) | {'attention_mask', 'position_ids', 'pixel_values'}


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
    segments: torch.Tensor  # [rows, length]: 0 the prompt, j > 0 answer j, -1 padding


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


@dataclass(frozen=True)
class ImageRule:
    """How a family's image inputs line up with its image placeholder tokens. The image inputs of a batch are the
    images of its sequences concatenated in sequence order; a rule says which rows of ``pixel_values`` (and of
    ``meta_key``, the per-image sizes) belong to a sequence, from its placeholder tokens:

    * 'grid' (Qwen2-VL .. Qwen3.5, GLM-4.xV): ``pixel_values`` holds patches, ``image_grid_thw`` one (t, h, w) per
      image, and an image has t h w / ``tokens_per_row`` placeholders (``tokens_per_row``: the merge size squared);
    * 'tokens' (InternVL tiles, Gemma 3 images): a ``pixel_values`` row per ``tokens_per_row`` placeholders;
    * 'run' (LLaVA-OneVision): one run of placeholders and one ``meta_key`` row (its size) per image, and
      ``rows_per_image(size)`` rows of ``pixel_values`` (its any-resolution crops), or one when ``pixel_values`` has
      a row per image.
    """
    token_id: int
    unit: str
    tokens_per_row: int = 1
    meta_key: Optional[str] = None
    rows_per_image: Optional[Callable[[torch.Tensor], int]] = None


def image_rule_for(config, batch: Dict[str, Any]) -> Optional[ImageRule]:
    """The ``ImageRule`` of a transformers model config for this batch, or None when no known layout fits."""
    token_id = getattr(config, 'image_token_id', None)
    vision = getattr(config, 'vision_config', None)
    if token_id is None or vision is None:
        return None
    if batch.get('image_grid_thw') is not None:
        merge = getattr(vision, 'spatial_merge_size', None)
        return ImageRule(token_id, 'grid', merge**2, 'image_grid_thw') if merge else None
    if batch.get('image_sizes') is not None and getattr(config, 'image_grid_pinpoints', None):
        from transformers.models.llava_onevision.modeling_llava_onevision import image_size_to_num_patches

        def crops(size):
            return image_size_to_num_patches(size, config.image_grid_pinpoints, vision.image_size)

        return ImageRule(token_id, 'run', meta_key='image_sizes', rows_per_image=crops)
    if getattr(config, 'mm_tokens_per_image', None):
        return ImageRule(token_id, 'tokens', config.mm_tokens_per_image)
    if getattr(config, 'downsample_ratio', None) and getattr(vision, 'image_size', None):
        # InternVL: a tile's patches, pixel-shuffled by downsample_ratio (the processor's image_seq_length)
        side, patch = (v[0] if isinstance(v, (list, tuple)) else v for v in (vision.image_size, vision.patch_size))
        return ImageRule(token_id, 'tokens', int((side // patch)**2 * config.downsample_ratio**2))
    return None


def _image_rows(input_ids, real, batch, rule: ImageRule) -> Tuple[Optional[List[Tuple[slice, slice]]], str]:
    """Per sequence, its rows of ``pixel_values`` and of the rule's meta key, or (None, why not)."""
    placeholders = (input_ids == rule.token_id) & real
    counts = placeholders.sum(1).tolist()
    pixel_rows = batch['pixel_values'].shape[0]
    meta = batch.get(rule.meta_key) if rule.meta_key else None
    if rule.unit == 'grid':
        tokens_per_image = (meta.prod(-1) // rule.tokens_per_row).tolist()
        patch_offsets = [0] + list(accumulate(meta.prod(-1).tolist()))
        images, image = [], 0
        for needed in counts:
            first = image
            while needed > 0 and image < len(tokens_per_image):
                needed -= tokens_per_image[image]
                image += 1
            if needed != 0:
                return None, f'image placeholder tokens do not match {rule.meta_key}'
            images.append((first, image))
        if image != len(tokens_per_image):
            return None, f'{rule.meta_key} has images no sequence uses'
        return [(slice(patch_offsets[a], patch_offsets[b]), slice(a, b)) for a, b in images], ''
    if rule.unit == 'tokens':
        if any(n % rule.tokens_per_row for n in counts):
            return None, f'a sequence has image placeholders that are no whole number of {rule.tokens_per_row}-token rows'
        rows = [n // rule.tokens_per_row for n in counts]
        meta_offsets = None
    else:  # 'run': one image per run of placeholders
        starts = placeholders & ~torch.nn.functional.pad(placeholders[:, :-1], (1, 0), value=False)
        meta_offsets = [0] + list(accumulate(starts.sum(1).tolist()))
        if meta_offsets[-1] != meta.shape[0]:
            return None, f'image placeholder runs do not match the {meta.shape[0]} rows of {rule.meta_key}'
        per_image = [1] * meta.shape[0] if pixel_rows == meta.shape[0] else [rule.rows_per_image(m) for m in meta]
        rows = [sum(per_image[a:b]) for a, b in zip(meta_offsets, meta_offsets[1:])]
    offsets = [0] + list(accumulate(rows))
    if offsets[-1] != pixel_rows:
        return None, f'image placeholder tokens do not match the {pixel_rows} rows of pixel_values'
    meta_offsets = meta_offsets or offsets
    return [(slice(a, b), slice(c, d)) for a, b, c, d in zip(offsets, offsets[1:], meta_offsets, meta_offsets[1:])], ''


def pack_shared_prefix(batch: Dict[str, Any],
                       labels: torch.Tensor,
                       num_rejected: torch.Tensor,
                       images: Optional[ImageRule] = None,
                       mask_dtype: Optional[torch.dtype] = None,
                       kernel: str = 'dense',
                       varlen_kernel: Optional[Callable[..., torch.Tensor]] = None
                       ) -> Tuple[Optional[PackedBatch], str]:
    """Pack ``[chosen x B, rejected row by row]`` into B shared-prefix rows, or say why not.

    Args:
        batch: the model inputs of the plain batch (without labels).
        labels: [sequences, length], unshifted; -100 outside the answers.
        num_rejected: [B] rejected sequences per row.
        images: how the batch's image inputs map to its image placeholder tokens (``image_rule_for``); needed
            only when the batch has ``pixel_values``. Each sequence's images go into its row once.
        kernel: the attention mask's form: 'dense' (4D tensor), 'flex' (``BlockMask``) or 'flash'
            (``VarlenPrefixMask`` running ``varlen_kernel``).
        mask_dtype: for 'dense', None for a bool mask (sdpa), a float dtype for an additive one (eager).
    Returns:
        (packed batch, '') or (None, reason).
    """
    unknown = sorted(k for k, v in batch.items() if v is not None and k not in _KNOWN_KEYS)
    if unknown:
        return None, f'the batch has inputs {unknown} that packing cannot lay out'
    input_ids = batch.get('input_ids')
    if input_ids is None:
        return None, 'the batch has no input_ids (only inputs_embeds)'
    num_seqs, length = input_ids.shape
    misshapen = sorted(k for k in _PER_TOKEN_KEYS if batch.get(k) is not None and batch[k].shape != input_ids.shape)
    if misshapen:
        return None, f'the batch has {misshapen} of another shape than input_ids {list(input_ids.shape)}'
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
        if images is None:
            return None, 'the batch has pixel_values in a layout packing does not know'
        rows_of, reason = _image_rows(input_ids, real, batch, images)
        if rows_of is None:
            return None, reason

        def images_of(i):
            pixel_rows, meta_rows = rows_of[i]
            return [pixel_values[pixel_rows]] + ([batch[images.meta_key][meta_rows]] if images.meta_key else [])

    num_rows = num_rejected.shape[0]
    first_rejected = [num_rows + o for o in accumulate([0] + num_rejected.tolist()[:-1])]
    row_of, answer_offset, prompt_lengths = [0] * num_seqs, [0] * num_seqs, []
    row_sources, row_segments, row_images = [], [], []
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
            in_answers = any(bool((input_ids[i, answer_starts[i]:ends[i]] == images.token_id).any()) for i in members)
            if in_answers:
                return None, f'row {r}: an answer holds image tokens'
            row_images.append(images_of(r))
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
        inputs['pixel_values'] = torch.cat([parts[0] for parts in row_images])
        if images.meta_key:
            inputs[images.meta_key] = torch.cat([parts[1] for parts in row_images])

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
    return PackedBatch(inputs, tokens, segments), ''
