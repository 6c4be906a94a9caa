"""Log-probs of every answer token of an APO batch: the model call, with the two fast paths and their fall-backs.

* shared prefix (shared_prefix.py): each row's image and prompt go through the model once, its K + 1
  answers after them under a block-causal rule, on one of three kernels (``--apo_prefix_kernel``, see
  ``prefix_kernel``): flash-attention varlen (no mask, prompt keys gathered per answer; CUDA, checked on
  first use), FlexAttention with a ``BlockMask`` (masked blocks skipped) or sdpa/eager with a dense 4D mask.
  Needs a forward that takes position_ids; with none of the kernels it runs the plain batch.
* lean log-probs (lean_logps.py): the model returns the logits of one position only (``logits_to_keep=1``);
  its decoder's last hidden state is taken by a hook, in the dtype the model computed it in (accelerate's mixed
  precision converts the forward's outputs to float32), and the lm_head runs on answer positions only, chunk
  by chunk, under the autocast state of the model's own head call.

Each is on unless switched off (``--apo_shared_prefix false``, ``--apo_lean_logps false``); whenever one does not
apply, the reason is logged once and the plain computation runs. Both give the plain path's
log-probs: the tests compare losses, logits and every gradient.

Under torch.distributed every decision is taken by all ranks together (one small all-reduce each), and
the lean path makes the same number of lm_head calls on every rank: ZeRO-3 all-gathers a module's
weight in each of its calls, so ranks that call the head a different number of times (more answer
tokens, or a fall-back on one rank only) would mismatch their collectives (a gloo error, a NCCL hang).
"""
import inspect
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from swift.template import Template
from swift.utils import get_logger

from .lean_logps import DEFAULT_CHUNK_SIZE, logps_and_mean_logits, token_logps
from .linear_attention import LinearSegments, linear_attention_problem
from .options import APOArguments
from .prefix_attention import checked_flex_for, checked_varlen_kernel_for, install_prefix_attention
from .shared_prefix import image_rule_for, pack_shared_prefix, plain_answer_tokens

logger = get_logger()
_MASK_ATTENTION = ('sdpa', 'eager')


def prefix_kernel(requested: str, attention: str, flash: Tuple[bool, str],
                  flex: Tuple[bool, str] = (True, '')) -> Tuple[Optional[str], str]:
    """('flash' | 'flex' | 'dense', why) for the shared-prefix forward, or (None, why not).

    Args:
        requested: --apo_prefix_kernel. auto and flash: flash-attention varlen where a kernel passed its check
            (``flash``: (passed, its name or why none did)), else the dense mask where the attention takes
            one (sdpa, eager), else nothing (the plain batch). flex: FlexAttention where it passed its check
            (``flex``: (passed, why not)), else as auto without flash. dense: the dense mask. FlexAttention is
            never chosen unasked: it has not yet run on a GPU (its CUDA tests are in the suite, skipped without CUDA).
        attention: the model's attention implementation. Eager attention is called directly by the models,
            not through the AttentionInterface that takes the flash and flex masks, so it gets the dense mask.
    """
    if attention != 'eager':
        if requested in ('auto', 'flash') and flash[0]:
            return 'flash', f'flash-attention varlen, {flash[1]} ({attention} attention elsewhere)'
        if requested == 'flex' and flex[0]:
            return 'flex', f'FlexAttention block mask ({attention} attention elsewhere)'
    unmet = ''
    if requested in ('auto', 'flash') and attention != 'eager':
        unmet = f' (flash-attention varlen: {flash[1]})'
    elif requested == 'flex' and attention != 'eager':
        unmet = f' (FlexAttention: {flex[1]})'
    elif requested in ('flash', 'flex'):
        unmet = f' (--apo_prefix_kernel {requested} does not apply to eager attention)'
    if attention in _MASK_ATTENTION:
        return 'dense', f'dense 4D mask with {attention} attention{unmet}'
    return None, (f'attention implementation {attention!r} takes no dense 4D mask and neither flash-attention varlen '
                  f'nor FlexAttention applies{unmet}; --apo_prefix_kernel flex chooses FlexAttention')


def _flash_for(hf_model, requested: str, attention: str, device: torch.device) -> Tuple[Any, str]:
    """(checked varlen kernel or None, its name or why none) for this model's attention layers."""
    if requested not in ('auto', 'flash') or attention == 'eager':
        return None, 'not asked for'
    return checked_varlen_kernel_for(hf_model, device)


def _flex_for(hf_model, requested: str, attention: str, device: torch.device) -> Tuple[bool, str]:
    """(whether FlexAttention passed its check here, why not) for this model's attention layers; the check
    includes the backward when gradients are on."""
    if requested != 'flex' or attention == 'eager':
        return False, 'not asked for'
    why = checked_flex_for(hf_model, device, backward=torch.is_grad_enabled())
    return not why, why


@dataclass
class FastPathOptions:
    shared_prefix: bool = True
    lean_logps: bool = True
    chunk_size: int = DEFAULT_CHUNK_SIZE
    prefix_kernel: str = 'auto'  # options.PREFIX_KERNELS
    # For the full-logits path: compute logits from the first answer position on only.
    use_logits_to_keep: bool = True

    @classmethod
    def from_args(cls, args: APOArguments, use_logits_to_keep: bool = True) -> 'FastPathOptions':
        """The options of a run's (resolved) --apo_* arguments."""
        return cls(shared_prefix=args.apo_shared_prefix, lean_logps=args.apo_lean_logps,
                   chunk_size=args.apo_logps_chunk_size, prefix_kernel=args.apo_prefix_kernel,
                   use_logits_to_keep=use_logits_to_keep)


@dataclass
class AnswerLogps:
    token_logps: torch.Tensor  # [answer tokens], float32 or wider, differentiable
    token_mean_logits: torch.Tensor  # [answer tokens], detached
    sequence: torch.Tensor  # [answer tokens]: the plain sequence each token belongs to
    outputs: Any  # the model's output (aux_loss and the like)
    packed: bool  # whether the shared-prefix batch ran


def _agreed(local: Sequence[int], device) -> List[int]:
    """The elementwise maximum of ``local`` over all ranks (``local`` itself outside torch.distributed)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return list(local)
    values = torch.tensor(local, dtype=torch.long, device=device)
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return values.tolist()


def _forward_parameters(hf_model):
    return inspect.signature(hf_model.forward).parameters


def _pack(hf_model, batch, labels, num_rejected, model_kwargs, requested_kernel='auto'):
    if model_kwargs.get('output_router_logits'):
        # transformers' load_balancing_loss_func reads the attention mask as [batch, length] padding.
        return None, "the MoE router's load-balancing loss (--router_aux_loss_coef) needs the 2D padding mask"
    config = hf_model.config
    text = config.get_text_config()
    attention = text._attn_implementation
    layer_types = set(getattr(text, 'layer_types', None) or ['full_attention'])
    others = layer_types - {'full_attention', 'linear_attention'}
    if others:
        # transformers passes a prepared 4D mask to sliding-window layers unchanged: their window would be lost.
        return None, f'the model has {sorted(others)} layers (only full and linear attention pack)'
    if 'linear_attention' in layer_types:
        problem = linear_attention_problem(hf_model)
        if problem:
            return None, f'its linear-attention layers cannot run packed ({problem})'
    flash_kernel, flash_why = _flash_for(hf_model, requested_kernel, attention, labels.device)
    flex = _flex_for(hf_model, requested_kernel, attention, labels.device)
    kernel, why = prefix_kernel(requested_kernel, attention, (flash_kernel is not None, flash_why), flex)
    if kernel is None:
        return None, why
    if 'position_ids' not in _forward_parameters(hf_model):
        return None, f'{type(hf_model).__name__}.forward takes no position_ids'
    if kernel in ('flash', 'flex'):
        install_prefix_attention()
    logger.info_once(f'APO shared-prefix kernel: {why}.')
    packed, why = pack_shared_prefix(
        batch,
        labels,
        num_rejected,
        images=image_rule_for(config, batch),
        mask_dtype=hf_model.dtype if attention == 'eager' else None,
        kernel=kernel,
        varlen_kernel=flash_kernel)
    if packed is not None and 'linear_attention' in layer_types:
        # hybrid models take a mask per layer type: the block mask for attention, the segments for the recurrence
        mask = packed.inputs['attention_mask']
        packed.inputs['attention_mask'] = {'full_attention': mask, 'linear_attention': LinearSegments.of(packed.segments)}
    return packed, why


def _lean_reason(hf_model, unwrapped_model) -> str:
    if 'logits_to_keep' not in _forward_parameters(hf_model):
        return f'{type(hf_model).__name__}.forward takes no logits_to_keep'
    if unwrapped_model.get_output_embeddings() is None:
        return f'{type(hf_model).__name__} has no output embeddings'
    return ''


class _HeadAsInForward(torch.nn.Module):
    """The model's head, called under the autocast state the model's own forward called it in.

    Mixed precision wraps only the model's forward in autocast (and accelerate converts its outputs to
    float32); the chunked head calls of the lean path run outside it, so without this they would compute
    in another dtype than the plain path's logits, or fail on a float32 input to a bf16 head.
    """

    def __init__(self, head: torch.nn.Module, device_type: str, autocast_dtype: Optional[torch.dtype]):
        super().__init__()
        self.head = head
        self.device_type = device_type
        self.autocast_dtype = autocast_dtype  # None: autocast was off

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.autocast_dtype is None:
            with torch.autocast(self.device_type, enabled=False):
                return self.head(hidden)
        with torch.autocast(self.device_type, dtype=self.autocast_dtype):
            return self.head(hidden)


@contextmanager
def _capturing_head_input(hf_model, head):
    """Records, during one model call, the last hidden state as the model's decoder returned it (its own dtype,
    before any output conversion such as accelerate's float32 upcast) and the autocast state of the head call.

    transformers' causal LMs compute ``logits = lm_head(self.model(...)[0][:, slice])``: the decoder's first
    output is the head's input. The consistency check in ``_from_hidden_states`` catches models where it is not.
    """
    captured = {}

    def keep_hidden(module, args, output):
        captured['hidden'] = output.last_hidden_state if hasattr(output, 'last_hidden_state') else output[0]

    def keep_autocast(module, args):
        device_type = args[0].device.type
        enabled = torch.is_autocast_enabled(device_type)
        captured['head'] = _HeadAsInForward(module, device_type,
                                            torch.get_autocast_dtype(device_type) if enabled else None)

    decoder = hf_model.base_model
    handles = [head.register_forward_pre_hook(keep_autocast)]
    if decoder is not hf_model:
        handles.append(decoder.register_forward_hook(keep_hidden))
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def _head_mismatch(head, hidden, logits) -> str:
    """'' when ``head`` applied to the last position's hidden state gives the model's logits there, else why not.

    The lean path assumes logits == head(decoder output); models that post-process logits (soft-capping,
    scaling) or whose decoder output is not the head's input fail here and take the full-logits path. The
    check only chooses a path: whatever goes wrong in it is a reason to fall back, never the end of a run.
    """
    if hidden is None:
        return f'{type(head).__name__} input not found: the base model returned no last hidden state'
    try:
        with torch.no_grad():
            expected, got = logits[:, -1:].float(), head(hidden[:, -1:]).float()
    except Exception as error:
        return f'the lm_head failed on the last hidden state: {type(error).__name__}: {error}'
    if not torch.allclose(got, expected, rtol=1e-3, atol=1e-3):
        difference = float((got - expected).abs().max())
        return f"the model's logits are not its lm_head applied to its last hidden state (max difference {difference:.3g})"
    return ''


def _from_hidden_states(model, hf_model, head, inputs, tokens, model_kwargs, chunk_size):
    with _capturing_head_input(hf_model, head) as captured:
        outputs = model(**inputs, **model_kwargs, use_cache=False, logits_to_keep=1)
    hidden = captured.get('hidden')
    head = captured.get('head', head)
    mismatch = _head_mismatch(head, hidden, outputs.logits)
    num_tokens = tokens.target.numel()
    device = outputs.logits.device
    mismatch_anywhere, head_calls = _agreed([int(bool(mismatch)), -(-num_tokens // chunk_size)], device)
    if mismatch_anywhere:
        return None, outputs, mismatch or "another rank's model failed the lm_head check and all ranks take one path"
    logps, mean_logits = token_logps(hidden[tokens.row, tokens.position], tokens.target, head, chunk_size,
                                     min_head_calls=head_calls)
    return (logps, mean_logits), outputs, ''


def _from_logits(model, inputs, tokens, model_kwargs, use_logits_to_keep):
    length = inputs['input_ids'].shape[1]
    if use_logits_to_keep and tokens.position.numel():
        model_kwargs = {**model_kwargs, 'logits_to_keep': length - int(tokens.position.min())}
    outputs = model(**inputs, **model_kwargs, use_cache=False)
    logits = outputs.logits
    offset = length - logits.shape[1]  # logits_to_keep dropped the first positions
    logps, mean_logits = logps_and_mean_logits(logits[tokens.row, tokens.position - offset], tokens.target)
    return (logps, mean_logits.detach()), outputs


def compute_answer_logps(model,
                         unwrapped_model,
                         batch: Dict[str, Any],
                         labels: torch.Tensor,
                         num_rejected: torch.Tensor,
                         options: FastPathOptions,
                         model_kwargs: Optional[Dict[str, Any]] = None) -> AnswerLogps:
    """Per-token log-probs of every answer token of ``[chosen x B, rejected row by row]``.

    Args:
        model: what to call (a DDP/DeepSpeed wrapper, a PeftModel, a transformers model).
        unwrapped_model: the same without DDP/DeepSpeed, to read its config and lm_head from.
        batch: the model inputs of the plain batch, without labels.
        labels: [sequences, length], unshifted.
        num_rejected: [B].
        options: which fast paths to try; ``lean_logps`` is switched off for good when the model's
            logits turn out not to be its lm_head applied to its last hidden state.
        model_kwargs: extra model arguments (e.g. output_router_logits).
    """
    model_kwargs = model_kwargs or {}
    hf_model = Template.get_base_model(unwrapped_model)
    inputs, tokens = batch, plain_answer_tokens(labels)
    packed = False
    if options.shared_prefix:
        packed_batch, reason = _pack(hf_model, batch, labels, num_rejected, model_kwargs, options.prefix_kernel)
        unpacked_anywhere, = _agreed([int(packed_batch is None)], labels.device)
        if packed_batch is not None and unpacked_anywhere:
            packed_batch, reason = None, "another rank's batch cannot be packed and all ranks take one path"
        if packed_batch is None:
            logger.warning_once(f'APO shared-prefix forward not used: {reason}; running the plain batch.')
        else:
            inputs, tokens, packed = packed_batch.inputs, packed_batch.tokens, True
            logger.info_once('APO shared-prefix forward in use.')
    result = None
    if options.lean_logps:
        reason = _lean_reason(hf_model, unwrapped_model)
        if not reason:
            head = unwrapped_model.get_output_embeddings()
            result, outputs, reason = _from_hidden_states(model, hf_model, head, inputs, tokens, model_kwargs,
                                                          options.chunk_size)
            if result is None:
                options.lean_logps = False
            else:
                logger.info_once('APO lean log-probs in use.')
        if reason:
            logger.warning_once(f'APO lean log-probs not used: {reason}; computing full logits.')
    if result is None:
        result, outputs = _from_logits(model, inputs, tokens, model_kwargs, options.use_logits_to_keep)
    logps, mean_logits = result
    return AnswerLogps(logps, mean_logits, tokens.sequence, outputs, packed)

