"""Attention kernels of the shared-prefix forward, reached through transformers' attention interface.

The packed call (shared_prefix.py) gives the language model, in place of a dense 4D mask, one of

* a FlexAttention ``BlockMask``: ``flex_block_mask_attention`` runs the compiled flex_attention, which skips
  the masked blocks;
* a ``VarlenPrefixMask``: ``varlen_prefix_attention`` gathers each segment's queries and keys (the prompt's
  keys/values copied once per answer, not recomputed) and runs a flash-attention varlen kernel: the prompt
  causal on itself, each answer's queries on prompt + own keys with the causal diagonal aligned at the end
  (bottom right), so no mask exists at all and attention memory is linear in L.

``install_prefix_attention`` lets every registered attention function send those two masks here and
everything else to itself, so the model keeps whatever ``--attn_impl`` it was loaded with (the vision tower
never sees either mask). Both travel as 4D BlockMasks because transformers' mask preparation passes any 4D
mask on unchanged, in every model.

A varlen kernel (torch's built-in ``varlen_attn`` or the flash-attn package) is used only after it has
reproduced, on the training device, dtype and head layout, the forward and the gradients of sdpa with the
dense block-causal mask on a small packed batch (``checked_varlen_kernel``): a kernel build that aligned
the causal diagonal differently, or lacks the dtype, is then refused with the reason instead of training
on wrong attention.
"""
import importlib.util
import inspect
import logging
from functools import lru_cache, wraps
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch.nn.attention.flex_attention import BlockMask

from .shared_prefix import VarlenPrefixMask, block_causal_mask, prefix_block_mask, varlen_prefix_mask

logger = logging.getLogger(__name__)

# kernel(query [Tq, H, D], key [Tk, Hkv, D], value, cu_seq_q, cu_seq_k, max_q, max_k, scale) -> [Tq, H, D];
# sequence i's queries attend causally to its keys, diagonal aligned bottom right.
VarlenKernel = Callable[..., torch.Tensor]


@lru_cache(maxsize=None)
def _compiled_flex_attention():
    from torch.nn.attention.flex_attention import flex_attention
    # Only the compiled kernel skips masked blocks (uncompiled, flex_attention materialises the scores).
    return torch.compile(flex_attention)


def _flex(query, key, value, block_mask: BlockMask, scaling) -> torch.Tensor:
    """flex_attention on a ``BlockMask``: [rows, H, L, D] in, [rows, L, H, D] out. Compiled off the CPU; on the
    CPU eager, forward only (torch has no FlexAttention backward there)."""
    from torch.nn.attention.flex_attention import flex_attention
    flex = flex_attention if query.device.type == 'cpu' else _compiled_flex_attention()
    heads, kv_heads = query.shape[1], key.shape[1]
    if heads & (heads - 1):
        # As transformers' flex_attention_forward: grouped-query flex only for a power-of-two number of
        # query heads (Qwen2.5-VL-7B has 28), else the key/value heads repeated.
        key, value = (t.repeat_interleave(heads // kv_heads, dim=1) for t in (key, value))
    out = flex(query, key, value, block_mask=block_mask, scale=scaling, enable_gqa=key.shape[1] != heads)
    return out.transpose(1, 2).contiguous()


def _dense_block_mask_attention(query, key, value, block_mask: BlockMask, scaling) -> torch.Tensor:
    """What ``_flex`` computes, with sdpa and the dense mask the block mask's mask_mod describes."""
    from torch.nn.attention.flex_attention import create_mask
    allowed = create_mask(block_mask.mask_mod, query.shape[0], None, query.shape[2], key.shape[2], device=query.device)
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=allowed, scale=scaling,
                                                           enable_gqa=key.shape[1] != query.shape[1])
    return out.transpose(1, 2).contiguous()


# device type -> why FlexAttention failed there during this run (its calls then take the dense mask)
_flex_failed_on: Dict[str, str] = {}


def flex_block_mask_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers attention function for a ``BlockMask`` (the shared-prefix forward's).

    ``checked_flex`` tried FlexAttention at the model's head layout and dtype before it was chosen; should it
    still fail here (a compile at a new shape), the forward continues on sdpa with the dense mask, for this call
    and the rest of the run, and says why: a kernel never ends a run. Running out of memory is not such a failure.
    """
    if dropout:
        raise ValueError('the shared-prefix FlexAttention forward takes no attention dropout')
    device_type = query.device.type
    if device_type not in _flex_failed_on:
        try:
            return _flex(query, key, value, attention_mask, scaling), None
        except torch.OutOfMemoryError:
            raise
        except Exception as error:
            _flex_failed_on[device_type] = _first_line(error)
            logger.warning(f'FlexAttention failed on {device_type} ({_flex_failed_on[device_type]}); the shared-prefix '
                           'forward goes on with sdpa and the dense block-causal mask for the rest of the run.')
    return _dense_block_mask_attention(query, key, value, attention_mask, scaling), None


def varlen_prefix_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers attention function for a ``VarlenPrefixMask``: [rows, H, L, D] in, [rows, L, H, D] out.

    Padding positions are no query of any sequence; their output is 0 (nothing reads it).
    """
    if dropout:
        raise ValueError('the shared-prefix varlen forward takes no attention dropout')
    layout = attention_mask.layout
    rows, heads, length, head_dim = query.shape
    flat = [t.transpose(1, 2).reshape(rows * length, t.shape[1], head_dim) for t in (query, key, value)]
    out = attention_mask.kernel(flat[0][layout.query_index], flat[1][layout.key_index], flat[2][layout.key_index],
                                layout.cu_seq_q, layout.cu_seq_k, layout.max_q, layout.max_k, scaling)
    full = out.new_zeros(rows * length, heads, head_dim).index_copy(0, layout.query_index, out)
    return full.view(rows, length, heads, head_dim), None


def reference_varlen_attention(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, scale=None):
    """The varlen contract written out with sdpa, sequence by sequence (any device, any dtype, with backward)."""
    bounds_q, bounds_k = cu_seq_q.tolist(), cu_seq_k.tolist()
    outs = []
    for (q0, q1), (k0, k1) in zip(zip(bounds_q, bounds_q[1:]), zip(bounds_k, bounds_k[1:])):
        allowed = torch.ones(q1 - q0, k1 - k0, dtype=torch.bool, device=query.device).tril((k1 - k0) - (q1 - q0))
        q, k, v = (t.transpose(0, 1) for t in (query[q0:q1], key[k0:k1], value[k0:k1]))
        outs.append(
            torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scale,
                                                             enable_gqa=True).transpose(0, 1))
    return torch.cat(outs)


@lru_cache(maxsize=None)
def _parameter_names(function) -> frozenset:
    return frozenset(inspect.signature(function).parameters)


def _torch_varlen(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, scale=None):
    from torch.nn.attention.varlen import varlen_attn
    parameters = _parameter_names(varlen_attn)
    options = {}
    # torch's first varlen_attn (2.10) spelt causal is_causal and took no scale or enable_gqa; later ones spell
    # it window (-1, 0). Both mean flash-attention's causal mask, aligned bottom right.
    if 'window_size' in parameters:
        options['window_size'] = (-1, 0)
    else:
        options['is_causal'] = True
    if query.shape[1] != key.shape[1]:
        if 'enable_gqa' in parameters:
            options['enable_gqa'] = True
        else:
            key, value = (t.repeat_interleave(query.shape[1] // key.shape[1], dim=1) for t in (key, value))
    if scale is not None:
        if 'scale' in parameters:
            options['scale'] = scale
        else:  # its fixed scale is head_dim ** -0.5
            query = query * (scale * query.shape[-1]**0.5)
    return varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, **options)


def _flash_attn_varlen(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, scale=None):
    from flash_attn import flash_attn_varlen_func
    return flash_attn_varlen_func(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, softmax_scale=scale,
                                  causal=True)


def varlen_kernels(device: torch.device) -> List[Tuple[str, VarlenKernel]]:
    """The varlen kernels installed for ``device``, in order of preference (none off CUDA)."""
    if device.type != 'cuda':
        return []
    found = []
    if importlib.util.find_spec('flash_attn') is not None:  # the user installed it on purpose
        found.append(('flash-attn flash_attn_varlen_func', _flash_attn_varlen))
    if importlib.util.find_spec('torch.nn.attention.varlen') is not None:
        found.append(('torch varlen_attn (flash-attention built into torch)', _torch_varlen))
    return found


def _check_rows() -> torch.Tensor:
    """Segment ids of the check: two rows, a short and a long answer (more than 128 queries), padding."""
    runs = [[(0, 40), (1, 3), (2, 150), (-1, 7)], [(0, 20), (1, 180)]]
    return torch.stack([torch.cat([torch.full((n, ), s) for s, n in row]) for row in runs])


def _first_line(error: BaseException) -> str:
    return f'{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ""}'


def kernel_mismatch(kernel: VarlenKernel, device, dtype, heads: int, kv_heads: int, head_dim: int) -> str:
    """'' when ``varlen_prefix_attention`` with ``kernel`` gives sdpa's output and gradients under the dense
    block-causal mask (computed in float32 from the same inputs), else what differs or failed."""

    def attend(segments, query, key, value):
        return varlen_prefix_attention(None, query, key, value, varlen_prefix_mask(segments, kernel), scaling=0.125)[0]

    return attention_mismatch(attend, device, dtype, heads, kv_heads, head_dim)


def attention_mismatch(attend: Callable, device, dtype, heads: int, kv_heads: int, head_dim: int,
                       backward: bool = True) -> str:
    """'' when ``attend(segments, query, key, value)`` ([rows, H, L, D] in, [rows, L, H, D] out) gives sdpa's
    output (and with ``backward`` its gradients) under the dense block-causal mask, else what differs or failed.

    Runs with gradients and without autocast whatever the caller's context (the first packed call may be a
    reference model's forward under no_grad, or inside autocast).
    """
    with torch.inference_mode(False), torch.enable_grad(), torch.autocast(torch.device(device).type, enabled=False):
        return _attention_mismatch(attend, device, dtype, heads, kv_heads, head_dim, backward)


def _attention_mismatch(attend, device, dtype, heads, kv_heads, head_dim, backward) -> str:
    segments = _check_rows().to(device)
    rows, length = segments.shape
    generator = torch.Generator().manual_seed(0)
    # Sharp attention (scaled queries): attending to one key too many or too few changes the output a lot.
    shapes = [(rows, heads, length, head_dim), (rows, kv_heads, length, head_dim), (rows, kv_heads, length, head_dim)]
    inputs = [(torch.randn(s, generator=generator) * f).to(device, dtype) for s, f in zip(shapes, (3.0, 1.0, 1.0))]
    real = (segments >= 0).view(rows, length, 1, 1)
    upstream = torch.randn(rows, length, heads, head_dim, generator=generator).to(device) * real
    results = []
    for run in ('kernel', 'reference'):
        leaves = [t.detach().clone().requires_grad_(backward) for t in inputs]
        if run == 'kernel':
            try:
                out = attend(segments, *leaves)
                if backward:
                    (out.float() * upstream).sum().backward()
            except Exception as error:  # a dtype or head layout the kernel lacks, a compile that failed
                return _first_line(error)
        else:
            q, k, v = (t.float() for t in leaves)
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=block_causal_mask(segments),
                                                                   scale=0.125, enable_gqa=True).transpose(1, 2)
            if backward:
                (out * upstream).sum().backward()
        results.append([out.detach().float() * real] + ([t.grad.float() for t in leaves] if backward else []))
    tolerance = 1e-4 if dtype in (torch.float32, torch.float64) else 3e-2
    for name, got, expected in zip(('output', 'query gradient', 'key gradient', 'value gradient'), *results):
        error = float((got - expected).abs().max() / expected.abs().max().clamp_min(1e-12))
        if not error <= tolerance:
            return f'its {name} differs from sdpa with the block-causal mask by {error:.1e} (relative to max)'
    return ''


@lru_cache(maxsize=None)
def checked_varlen_kernel(device: torch.device, dtype: torch.dtype, heads: int, kv_heads: int,
                          head_dim: int) -> Tuple[Optional[VarlenKernel], str]:
    """(the first installed varlen kernel that passes ``kernel_mismatch`` here, its name), or (None, why not)."""
    refused = []
    for name, kernel in varlen_kernels(device):
        mismatch = kernel_mismatch(kernel, device, dtype, heads, kv_heads, head_dim)
        if not mismatch:
            return kernel, name
        refused.append(f'{name}: {mismatch}')
    if not refused:
        return None, f'no flash-attention varlen kernel on {device.type}'
    return None, f'no varlen kernel passed the check with {dtype} ({"; ".join(refused)})'


def _attention_layout(hf_model, device: torch.device) -> Tuple[torch.dtype, int, int, int]:
    """(dtype, heads, key/value heads, head dim) of a transformers model's attention layers: its text config's
    heads and head dim, and the dtype its forward computes in (autocast's where autocast is on, else the weights')."""
    text = hf_model.config.get_text_config()
    heads = text.num_attention_heads
    head_dim = getattr(text, 'head_dim', None) or text.hidden_size // heads
    dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else hf_model.dtype
    return dtype, heads, getattr(text, 'num_key_value_heads', None) or heads, head_dim


def checked_varlen_kernel_for(hf_model, device: torch.device) -> Tuple[Optional[VarlenKernel], str]:
    """``checked_varlen_kernel`` for the attention layers of a transformers model."""
    return checked_varlen_kernel(device, *_attention_layout(hf_model, device))


@lru_cache(maxsize=None)
def checked_flex(device: torch.device, dtype: torch.dtype, heads: int, kv_heads: int, head_dim: int,
                 backward: bool) -> str:
    """'' when FlexAttention (compiled where it runs compiled) reproduces sdpa with the dense block-causal mask
    here (with ``backward``, its gradients too), else why not: e.g. an Inductor compile that found no kernel for
    this device and dtype, or the CPU, where FlexAttention has no backward."""

    def attend(segments, query, key, value):
        return _flex(query, key, value, prefix_block_mask(segments), 0.125)

    return attention_mismatch(attend, device, dtype, heads, kv_heads, head_dim, backward)


def checked_flex_for(hf_model, device: torch.device, backward: bool) -> str:
    """``checked_flex`` for the attention layers of a transformers model."""
    return checked_flex(device, *_attention_layout(hf_model, device), backward)


@lru_cache(maxsize=None)
def install_prefix_attention() -> None:
    """Let every registered attention implementation hand a ``VarlenPrefixMask`` to ``varlen_prefix_attention``
    and (all but FlexAttention's own) any other ``BlockMask`` to ``flex_block_mask_attention``; other masks go
    to the implementation as before (also in the recomputation of gradient checkpointing).

    Eager attention is called directly by the models, not through this interface: it never gets these masks.
    """
    from transformers import AttentionInterface

    def dispatching(name, original):

        @wraps(original)
        def attention(module, query, key, value, attention_mask, *args, **kwargs):
            if isinstance(attention_mask, VarlenPrefixMask):
                return varlen_prefix_attention(module, query, key, value, attention_mask, *args, **kwargs)
            if isinstance(attention_mask, BlockMask) and name != 'flex_attention':
                return flex_block_mask_attention(module, query, key, value, attention_mask, *args, **kwargs)
            return original(module, query, key, value, attention_mask, *args, **kwargs)

        return attention

    for name, function in list(AttentionInterface._global_mapping.items()):
        if not name.startswith('paged|'):
            AttentionInterface.register(name, dispatching(name, function))
