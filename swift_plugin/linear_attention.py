"""The shared-prefix forward through gated-delta-net linear-attention layers (Qwen3.5, Qwen3-Next).

A packed row is ``prompt | answer 1 | ... | answer K+1`` (shared_prefix.py). Full-attention layers share the prompt
through the block-causal mask; a linear-attention layer is a recurrence instead, so no mask can stop an answer from
reading the answers before it. Here each such layer runs the prompt once, keeps the two states the recurrence carries
at the prompt's end, and starts every answer from them:

* the causal depthwise convolution (kernel k) reads the k - 1 inputs before each token: an answer's first tokens read
  the prompt's last k - 1 inputs, never the previous answer's (the answer is convolved behind a copy of them);
* the gated delta rule's recurrent state at the prompt's end is each answer's initial state (a tensor, so the
  answers' gradients reach the prompt through it).

Everything else in the layer acts token by token and runs on the packed row as it is. The layer's own weights and
kernels (the transformers module's convolution and chunked delta rule, or flash-linear-attention's where installed)
do the work, so every answer token gets the value the plain sequence ``prompt | answer`` gives it, up to the
rounding of a different chunking of the scan.

The segments reach the layers as the ``'linear_attention'`` entry of the mask mapping that transformers' hybrid
models accept in place of an attention mask (the full-attention layers get the block-causal mask); the layer class's
forward hands a ``LinearSegments`` to ``packed_forward`` and everything else to itself, also in the recomputation of
gradient checkpointing, which calls the layer with the same arguments.
"""
import inspect
import sys
from dataclasses import dataclass, field
from functools import wraps
from typing import Dict, List, Optional, Tuple

import torch

# The attributes packed_forward reads from a layer (those of transformers' Qwen3.5 / Qwen3-Next GatedDeltaNet).
_LAYER_ATTRIBUTES = ('in_proj_qkv', 'in_proj_z', 'in_proj_b', 'in_proj_a', 'conv1d', 'A_log', 'dt_bias', 'norm',
                     'out_proj', 'key_dim', 'value_dim', 'head_k_dim', 'head_v_dim', 'num_k_heads', 'num_v_heads',
                     'activation')
_MODULE_FUNCTIONS = ('causal_conv1d_fn', 'torch_chunk_gated_delta_rule')


@dataclass
class LinearSegments:
    """Where each packed row's prompt and answers lie: per row, the prompt's length and each answer's [start, end)."""
    prompt_lengths: List[int]
    answers: List[List[Tuple[int, int]]]
    # (length, context, device) -> the convolution's layout, computed once for all layers of a forward
    _convolution_layouts: Dict[tuple, Tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, segments: torch.Tensor) -> 'LinearSegments':
        """From segment ids (0: prompt, first; j > 0: answer j, in order; -1: padding, last)."""
        prompt_lengths, answers = [], []
        for row in segments.tolist():
            prompt_lengths.append(row.count(0))
            spans, start = [], prompt_lengths[-1]
            for segment in range(1, max(row) + 1):
                length = row.count(segment)
                spans.append((start, start + length))
                start += length
            answers.append(spans)
        return cls(prompt_lengths, answers)

    def to(self, device) -> 'LinearSegments':  # accelerate / ms-swift move every input to the model's device
        return self


def unsupported_layer(module) -> str:
    """'' when ``packed_forward`` knows how to run ``module``, else why not."""
    missing = [name for name in _LAYER_ATTRIBUTES if not hasattr(module, name)]
    modeling = sys.modules.get(type(module).__module__)
    missing += [f'{type(module).__module__}.{name}' for name in _MODULE_FUNCTIONS if not hasattr(modeling, name)]
    if missing:
        return f'{type(module).__name__} lacks {missing}'
    return ''


def _convolution_layout(segments: LinearSegments, rows: int, length: int, context: int, device):
    """Indices that lay each packed row out as ``prompt | tail | answer 1 | tail | answer 2 | ...`` (tail: the
    prompt's last ``context`` tokens, or the zero input before a shorter prompt) in a [rows * length + 1] token list
    whose last entry is a zero input, and where each packed position's output lies in that layout (padding: one past
    its end, a zero output)."""
    key = (length, context, str(device))
    if key not in segments._convolution_layouts:
        zero = rows * length
        laid_out, kept = [], []
        for r in range(rows):
            prompt, base = segments.prompt_lengths[r], r * length
            order = list(range(base, base + prompt))
            tail = [base + p if p >= 0 else zero for p in range(prompt - context, prompt)]
            where = list(range(prompt))
            for start, end in segments.answers[r]:
                order += tail
                where += range(len(order), len(order) + end - start)
                order += range(base + start, base + end)
            laid_out.append(order)
            kept.append(where)
        width = max(map(len, laid_out))
        index = torch.tensor([order + [zero] * (width - len(order)) for order in laid_out], device=device)
        take = torch.tensor([where + [width] * (length - len(where)) for where in kept], device=device)
        segments._convolution_layouts[key] = index, take
    return segments._convolution_layouts[key]


def _convolve(layer, mixed: torch.Tensor, segments: LinearSegments, modeling) -> torch.Tensor:
    """The layer's causal convolution of [rows, length, channels] packed inputs, each answer behind a copy of its
    prompt's last k - 1 inputs; padding positions get 0."""
    rows, length, channels = mixed.shape
    context = layer.conv1d.weight.shape[-1] - 1
    index, take = _convolution_layout(segments, rows, length, context, mixed.device)
    flat = torch.cat([mixed.reshape(rows * length, channels), mixed.new_zeros(1, channels)])
    convolved = modeling.causal_conv1d_fn(flat[index].transpose(1, 2), layer.conv1d.weight.squeeze(1),
                                          layer.conv1d.bias, activation=layer.activation).transpose(1, 2)
    convolved = torch.cat([convolved, convolved.new_zeros(rows, 1, channels)], 1)
    return convolved.gather(1, take.unsqueeze(-1).expand(-1, -1, channels))


def _scan(modeling, query, key, value, g, beta, segments: LinearSegments) -> torch.Tensor:
    """The gated delta rule of every prompt once, and of every answer from its prompt's final recurrent state."""
    rows, length = query.shape[:2]
    out = value.new_zeros(value.shape)
    pieces = []
    for r in range(rows):
        prompt = slice(0, segments.prompt_lengths[r])
        prompt_out, state = modeling.torch_chunk_gated_delta_rule(
            query[r:r + 1, prompt], key[r:r + 1, prompt], value[r:r + 1, prompt], g=g[r:r + 1, prompt],
            beta=beta[r:r + 1, prompt], initial_state=None, output_final_state=True, use_qk_l2norm_in_kernel=True)
        pieces.append((r, 0, prompt_out[0]))
        spans = segments.answers[r]
        longest = max(end - start for start, end in spans)

        def answers(t):  # [answers, longest, ...], zero after each answer's end (the scan is causal)
            return torch.stack([torch.nn.functional.pad(t[r, start:end], (0, 0) * (t.dim() - 2) + (0, longest - end + start))
                                for start, end in spans])

        answer_out, _ = modeling.torch_chunk_gated_delta_rule(
            answers(query), answers(key), answers(value), g=answers(g), beta=answers(beta),
            initial_state=state.expand(len(spans), *state.shape[1:]).contiguous(), output_final_state=False,
            use_qk_l2norm_in_kernel=True)
        pieces += [(r, start, answer_out[j, :end - start]) for j, (start, end) in enumerate(spans)]
    index = torch.cat([r * length + torch.arange(start, start + piece.shape[0], device=out.device)
                       for r, start, piece in pieces])
    flat = out.reshape(rows * length, *out.shape[2:]).index_copy(0, index, torch.cat([p for _, _, p in pieces]))
    return flat.view(out.shape)


def packed_forward(layer, hidden_states: torch.Tensor, segments: LinearSegments) -> torch.Tensor:
    """A gated-delta-net layer on packed rows: the layer's own computation with the recurrence restarted from the
    prompt's end for every answer (see the module docstring)."""
    modeling = sys.modules[type(layer).__module__]
    rows, length, _ = hidden_states.shape
    mixed = _convolve(layer, layer.in_proj_qkv(hidden_states), segments, modeling)
    z = layer.in_proj_z(hidden_states).reshape(rows, length, -1, layer.head_v_dim)
    b, a = layer.in_proj_b(hidden_states), layer.in_proj_a(hidden_states)
    query, key, value = torch.split(mixed, [layer.key_dim, layer.key_dim, layer.value_dim], dim=-1)
    query = query.reshape(rows, length, -1, layer.head_k_dim)
    key = key.reshape(rows, length, -1, layer.head_k_dim)
    value = value.reshape(rows, length, -1, layer.head_v_dim)
    beta = b.sigmoid()
    g = -layer.A_log.float().exp() * torch.nn.functional.softplus(a.float() + layer.dt_bias)
    if layer.num_v_heads // layer.num_k_heads > 1:
        query = query.repeat_interleave(layer.num_v_heads // layer.num_k_heads, dim=2)
        key = key.repeat_interleave(layer.num_v_heads // layer.num_k_heads, dim=2)
    core = _scan(modeling, query, key, value, g, beta, segments)
    core = layer.norm(core.reshape(-1, layer.head_v_dim), z.reshape(-1, layer.head_v_dim))
    return layer.out_proj(core.reshape(rows, length, -1))


def install_packed_forward(layer_class) -> None:
    """Let ``layer_class`` (a gated-delta-net layer) run ``packed_forward`` when its attention mask is a
    ``LinearSegments``; any other call runs its own forward as before. Once per class."""
    if getattr(layer_class, '_apo_packed', False):
        return
    original = layer_class.forward
    names = list(inspect.signature(original).parameters)

    @wraps(original)
    def forward(self, *args, **kwargs):
        mask = kwargs.get('attention_mask')
        if mask is None and len(args) >= names.index('attention_mask'):
            mask = args[names.index('attention_mask') - 1]
        if isinstance(mask, LinearSegments):
            hidden_states = kwargs['hidden_states'] if 'hidden_states' in kwargs else args[0]
            return packed_forward(self, hidden_states, mask)
        return original(self, *args, **kwargs)

    layer_class.forward = forward
    layer_class._apo_packed = True


def linear_layers(hf_model) -> List[torch.nn.Module]:
    """The model's linear-attention token mixers (its decoder layers' ``linear_attn``)."""
    return [module.linear_attn for module in hf_model.modules() if hasattr(module, 'linear_attn')]


def linear_attention_problem(hf_model) -> Optional[str]:
    """None when every linear-attention layer of the model can run packed (and their forwards are ready for it),
    else why not."""
    layers = linear_layers(hf_model)
    if not layers:
        return 'no linear-attention layer found'
    for layer in layers:
        why = unsupported_layer(layer)
        if why:
            return why
    for layer_class in {type(layer) for layer in layers}:
        install_packed_forward(layer_class)
    return None
