"""The APO objective: multi-negative Plackett-Luce (top-1) over DPO's implicit rewards.

Pure tensor math, no ms-swift import, so it can be read and tested on its own.

For a prompt x with chosen answer y+ and rejected answers y_1..y_K, with
r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x)) (log-probs summed over answer tokens), the
Plackett-Luce model says answer i is ranked first with probability

    P(i first) = exp r(x,y_i) / (exp r(x,y+) + sum_k exp r(x,y_k))      (softmax over the K + 1 rewards)

and the loss is the negative log-likelihood of the label "the chosen answer is first":

    loss = -log P(y+ first) = softplus( logsumexp_k ( r(x,y_k) - r(x,y+) ) )

K = 1 is DPO's sigmoid loss. Rows may have different K: the rejected log-probs come as a
[rows, max K] tensor whose padding slots are excluded by ``rejected_mask``.

Label smoothing (``--label_smoothing eps``, conservative DPO, Mitchell 2023). Suppose the label is
wrong with probability eps, and then one of the K rejected answers, uniformly, is the truly best one.
The expected negative log-likelihood of the noisy label is

    loss_eps = -(1 - eps) log P(y+ first) - (eps / K) sum_k log P(y_k first),

i.e. the cross-entropy between the softmax over the K + 1 rewards and the target distribution
(1 - eps, eps/K, ..., eps/K). Writing d_k = r(x,y_k) - r(x,y+), -log P(y_k first) = -log P(y+ first) - d_k.
For K = 1 with h = r(x,y+) - r(x,y_1) this is -(1 - eps) logsigmoid(h) - eps logsigmoid(-h), ms-swift's
DPO sigmoid loss with label smoothing. The minimum sits where the softmax equals the target, at
finite margins r(x,y+) - r(x,y_k) = log((1 - eps) K / eps), so the rewards stop growing there; eps = 0
is the plain loss. eps must lie in [0, 0.5): at eps = 0.5 and K = 1 the label carries no information.
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
    label_smoothing: float = 0.0,
) -> APOLossOutput:
    """Per-row APO loss.

    Args:
        policy_chosen_logps, reference_chosen_logps: [rows].
        policy_rejected_logps, reference_rejected_logps: [rows, max K].
        rejected_mask: bool [rows, max K], True where a real rejected answer sits.
        beta: the implicit-reward temperature.
        label_smoothing: eps in [0, 0.5), the probability that the preference label is wrong (see above).
    """
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f'label_smoothing must lie in [0, 0.5), got {label_smoothing}')
    if not bool(rejected_mask.any(dim=1).all()):
        raise ValueError('every row needs at least one rejected answer')
    chosen_rewards = beta * (policy_chosen_logps - reference_chosen_logps)
    rejected_rewards = beta * (policy_rejected_logps - reference_rejected_logps)
    rejected_minus_chosen = rejected_rewards - chosen_rewards.unsqueeze(1)
    # Padding slots get -inf, so they add exp(-inf) = 0 to the partition function.
    chosen_nll = F.softplus(torch.logsumexp(rejected_minus_chosen.masked_fill(~rejected_mask, float('-inf')), dim=1))
    losses = chosen_nll
    if label_smoothing > 0:
        flipped_nll = (chosen_nll.unsqueeze(1) - rejected_minus_chosen).masked_fill(~rejected_mask, 0.0)
        losses = (1 - label_smoothing) * chosen_nll + label_smoothing * flipped_nll.sum(1) / rejected_mask.sum(1)
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
