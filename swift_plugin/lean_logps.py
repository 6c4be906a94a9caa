"""Per-token log-probs of chosen tokens without the [tokens, vocab] logits of all of them at once.

Pure torch, no ms-swift import. The output head (an ``nn.Linear`` or any callable from hidden states
to logits) runs on ``chunk_size`` tokens at a time, and with gradients on each chunk is wrapped in a
non-reentrant ``torch.utils.checkpoint``: the forward keeps only the chunk's hidden states, the
backward recomputes that chunk's logits. Peak memory is then about three [chunk_size, vocab] float32
buffers, whatever the number of tokens.

When the head has no trainable parameter (LoRA), ``_FrozenHeadLogps`` computes the [chunk, hidden]
gradient in the forward instead, which saves the recomputation.

The head is *called* rather than its weight used directly, so that DeepSpeed ZeRO-3 (which gathers a
module's partitioned weight in the module's own forward hooks, also during the recomputation) and
adapters on the head keep working.
"""
from typing import Callable, Tuple

import torch
from torch.utils.checkpoint import checkpoint

from .options import DEFAULT_CHUNK_SIZE


def logps_and_mean_logits(logits: torch.Tensor, targets: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """[tokens, vocab] logits -> [tokens] log-probs of ``targets`` and mean logits, in float32 or wider."""
    # At least float32 for the log-softmax: with bf16 logits over a 152k vocabulary the normaliser loses digits.
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    logps = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
    return logps, logits.mean(-1)


def _head_logps_and_mean_logits(hidden, targets, head):
    return logps_and_mean_logits(head(hidden), targets)


class _FrozenHeadLogps(torch.autograd.Function):
    """Chunk log-probs through a head without trainable parameters (LoRA leaves the lm_head frozen).

    d logp / d hidden is then all the backward needs, and it is [chunk, hidden]: computing it in the
    forward (one head-sized matmul, through the head's own backward) replaces the checkpoint's
    recomputation of the logits, so the head runs twice per chunk instead of three times.
    """

    @staticmethod
    def forward(ctx, hidden, targets, head):
        with torch.enable_grad():
            leaf = hidden.detach().requires_grad_()
            logits = head(leaf)
        wide = logits.detach().to(torch.promote_types(logits.dtype, torch.float32))
        logsumexp = wide.logsumexp(-1, keepdim=True)
        logps = (wide.gather(-1, targets.unsqueeze(-1)) - logsumexp).squeeze(-1)
        mean_logits = wide.mean(-1)
        # d logp_t / d logits_t = onehot(target_t) - softmax(logits_t)
        d_logits = wide.sub_(logsumexp).exp_().neg_()
        d_logits.scatter_add_(-1, targets.unsqueeze(-1), torch.ones_like(logps).unsqueeze(-1))
        d_hidden, = torch.autograd.grad(logits, leaf, d_logits.to(logits.dtype))
        ctx.save_for_backward(d_hidden)
        ctx.mark_non_differentiable(mean_logits)
        return logps, mean_logits

    @staticmethod
    def backward(ctx, grad_logps, grad_mean_logits):
        d_hidden, = ctx.saved_tensors
        return grad_logps.unsqueeze(-1).to(d_hidden.dtype) * d_hidden, None, None


def _trainable(head) -> bool:
    return not isinstance(head, torch.nn.Module) or any(p.requires_grad for p in head.parameters())


def token_logps(hidden: torch.Tensor,
                targets: torch.Tensor,
                head: Callable[[torch.Tensor], torch.Tensor],
                chunk_size: int = DEFAULT_CHUNK_SIZE,
                min_head_calls: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """log softmax(head(hidden))[target] per token, and the mean logit per token (detached, for metrics).

    Args:
        hidden: [tokens, hidden] states that predict ``targets``.
        targets: [tokens] token ids.
        head: hidden states -> logits over the vocabulary (e.g. the model's lm_head).
        chunk_size: tokens per head call.
        min_head_calls: call the head at least this often (forward and backward alike): the surplus calls run
            one dummy token whose result is dropped. Under ZeRO-3 each head call all-gathers the head's weight,
            so all ranks must make the same number of calls whatever their number of tokens.
    Returns:
        [tokens] tensors in float32 (float64 for float64 input): log-probs (differentiable) and mean logits.
    """
    if chunk_size < 1:
        raise ValueError(f'chunk_size must be positive, got {chunk_size}')
    grad = torch.is_grad_enabled()
    recompute = grad and _trainable(head)
    frozen_head = grad and not recompute and hidden.requires_grad
    num_tokens = hidden.shape[0]
    logps, mean_logits = [], []
    for call in range(max(-(-num_tokens // chunk_size), min_head_calls)):
        start = call * chunk_size
        if start < num_tokens:
            chunk = (hidden[start:start + chunk_size], targets[start:start + chunk_size], head)
        else:  # a dummy call; its empty slice of the result still reaches the loss, so the backward runs it too
            # With no token at all, a zero row padded onto ``hidden`` keeps the dummy on its autograd graph.
            dummy = hidden[:1] if num_tokens else torch.nn.functional.pad(hidden, (0, 0, 0, 1))
            chunk = (dummy, targets.new_zeros(1), head)
        if recompute:
            chunk_logps, chunk_means = checkpoint(_head_logps_and_mean_logits, *chunk, use_reentrant=False)
        elif frozen_head:
            chunk_logps, chunk_means = _FrozenHeadLogps.apply(*chunk)
        else:
            chunk_logps, chunk_means = _head_logps_and_mean_logits(*chunk)
        if start >= num_tokens:
            chunk_logps, chunk_means = chunk_logps[:0], chunk_means[:0]
        logps.append(chunk_logps)
        mean_logits.append(chunk_means.detach())
    if not logps:
        empty = hidden.new_zeros(0, dtype=torch.float32)
        return empty, empty
    return torch.cat(logps), torch.cat(mean_logits)
