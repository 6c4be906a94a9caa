"""Per-token log-probs of chosen tokens without the [tokens, vocab] logits of all of them at once.

Pure torch, no ms-swift import. The output head (an ``nn.Linear`` or any callable from hidden states
to logits) runs on ``chunk_size`` tokens at a time, and with gradients on each chunk is wrapped in a
non-reentrant ``torch.utils.checkpoint``: the forward keeps only the chunk's hidden states, the
backward recomputes that chunk's logits. Peak memory is then about three [chunk_size, vocab] float32
buffers, whatever the number of tokens.

The head is *called* rather than its weight used directly, so that DeepSpeed ZeRO-3 (which gathers a
module's partitioned weight in the module's own forward hooks, also during the recomputation) and
adapters on the head keep working.
"""
from typing import Callable, Tuple

import torch
from torch.utils.checkpoint import checkpoint

DEFAULT_CHUNK_SIZE = 512


def logps_and_mean_logits(logits: torch.Tensor, targets: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """[tokens, vocab] logits -> [tokens] log-probs of ``targets`` and mean logits, in float32 or wider."""
    # At least float32 for the log-softmax: with bf16 logits over a 152k vocabulary the normaliser loses digits.
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    logps = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
    return logps, logits.mean(-1)


def _head_logps_and_mean_logits(hidden, targets, head):
    return logps_and_mean_logits(head(hidden), targets)


def token_logps(hidden: torch.Tensor, targets: torch.Tensor, head: Callable[[torch.Tensor], torch.Tensor],
                chunk_size: int = DEFAULT_CHUNK_SIZE) -> Tuple[torch.Tensor, torch.Tensor]:
    """log softmax(head(hidden))[target] per token, and the mean logit per token (detached, for metrics).

    Args:
        hidden: [tokens, hidden] states that predict ``targets``.
        targets: [tokens] token ids.
        head: hidden states -> logits over the vocabulary (e.g. the model's lm_head).
        chunk_size: tokens per head call.
    Returns:
        [tokens] tensors in float32 (float64 for float64 input): log-probs (differentiable) and mean logits.
    """
    if chunk_size < 1:
        raise ValueError(f'chunk_size must be positive, got {chunk_size}')
    recompute = torch.is_grad_enabled()
    logps, mean_logits = [], []
    for start in range(0, hidden.shape[0], chunk_size):
        chunk = (hidden[start:start + chunk_size], targets[start:start + chunk_size], head)
        if recompute:
            chunk_logps, chunk_means = checkpoint(_head_logps_and_mean_logits, *chunk, use_reentrant=False)
        else:
            chunk_logps, chunk_means = _head_logps_and_mean_logits(*chunk)
        logps.append(chunk_logps)
        mean_logits.append(chunk_means.detach())
    if not logps:
        empty = hidden.new_zeros(0, dtype=torch.float32)
        return empty, empty
    return torch.cat(logps), torch.cat(mean_logits)
