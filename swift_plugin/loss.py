"""The APO objective: multi-negative Plackett-Luce (top-1) over DPO's implicit rewards.

Pure tensor math, no ms-swift import, so it can be read and tested on its own.

For a prompt x with chosen answer y+ and rejected answers y_1..y_K, with
r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x)) (log-probs summed over answer tokens):

    loss = -log( exp r(x,y+) / (exp r(x,y+) + sum_k exp r(x,y_k)) )
         = softplus( logsumexp_k ( r(x,y_k) - r(x,y+) ) )

K = 1 is DPO's sigmoid loss. Rows may have different K: the rejected log-probs come as a
[rows, max K] tensor whose padding slots are excluded by ``rejected_mask``.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class APOLossOutput:
    losses: torch.Tensor  # [rows]
    chosen_rewards: torch.Tensor  # [rows], detached
    rejected_rewards: torch.Tensor  # [rows, max K], detached; padding slots are 0


def apo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    rejected_mask: torch.Tensor,
    beta: float,
) -> APOLossOutput:
    """Per-row APO loss.

    Args:
        policy_chosen_logps, reference_chosen_logps: [rows].
        policy_rejected_logps, reference_rejected_logps: [rows, max K].
        rejected_mask: bool [rows, max K], True where a real rejected answer sits.
        beta: the implicit-reward temperature.
    """
    if not bool(rejected_mask.any(dim=1).all()):
        raise ValueError('every row needs at least one rejected answer')
    chosen_rewards = beta * (policy_chosen_logps - reference_chosen_logps)
    rejected_rewards = beta * (policy_rejected_logps - reference_rejected_logps)
    # Padding slots get -inf, so they add exp(-inf) = 0 to the partition function.
    rejected_minus_chosen = (rejected_rewards - chosen_rewards.unsqueeze(1)).masked_fill(~rejected_mask, float('-inf'))
    losses = F.softplus(torch.logsumexp(rejected_minus_chosen, dim=1))
    return APOLossOutput(
        losses=losses,
        chosen_rewards=chosen_rewards.detach(),
        rejected_rewards=rejected_rewards.detach().masked_fill(~rejected_mask, 0.0),
    )


def pad_by_counts(flat: torch.Tensor, counts: torch.Tensor):
    """Lay out ``flat`` ([sum(counts)], row 0's entries first) as [rows, max count] plus its bool mask.

    Padding slots hold 0 and are False in the mask; gradients flow to ``flat`` only.
    """
    max_count = int(counts.max())
    mask = torch.arange(max_count, device=counts.device).unsqueeze(0) < counts.unsqueeze(1)
    padded = flat.new_zeros(counts.shape[0], max_count)
    padded[mask] = flat
    return padded, mask
