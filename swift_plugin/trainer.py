"""APOTrainer: ms-swift's DPOTrainer with one chosen and K rejected answers per row.

The trainer only wires data to ``loss.apo_loss``: it gets the answer tokens' log-probs of the policy
(and the reference) on the ``[chosen x B, rejected answers row by row]`` batch built by template.py
from answer_logps.py (shared-prefix forward and lean log-probs where they apply), sums them per
sequence, lays the rejected ones out as [B, max K] with a mask, and logs DPO's metrics plus
``num_rejected`` and per-source rewards. Everything else (reference model or disabled adapter,
DeepSpeed, gradient accumulation, evaluation, checkpointing) is ms-swift's DPOTrainer.
"""
from collections import defaultdict
from typing import Dict, List, Optional

import torch
from accelerate.utils import gather_object
from swift.rlhf_trainers import DPOTrainer

from .answer_logps import FastPathOptions, compute_answer_logps
from .loss import APOLossOutput, apo_loss, pad_by_counts
from .template import NUM_REJECTED_KEY, SOURCES_KEY


class APOTrainer(DPOTrainer):

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fast_path = FastPathOptions.from_env(use_logits_to_keep=self.get_use_logits_to_keep(True))

    def concatenated_forward(self, model, batch, is_ref_model: bool = False):
        batch = batch.copy()
        num_rejected = batch.pop(NUM_REJECTED_KEY)
        batch.pop(SOURCES_KEY, None)
        batch.pop('text_position_ids', None)
        labels = batch.pop('labels')
        model_kwargs = {'output_router_logits': True} if self.aux_loss_enabled else {}
        answer = compute_answer_logps(model, self.accelerator.unwrap_model(model), batch, labels, num_rejected,
                                      self.fast_path, model_kwargs)

        num_rows = num_rejected.shape[0]
        sequence_logps = answer.token_logps.new_zeros(labels.shape[0]).index_add(0, answer.sequence,
                                                                                 answer.token_logps)
        rejected_logps, rejected_mask = pad_by_counts(sequence_logps[num_rows:], num_rejected)
        chosen_tokens = answer.sequence < num_rows
        output = {
            'chosen_logps': sequence_logps[:num_rows],
            'rejected_logps': rejected_logps,
            'rejected_mask': rejected_mask,
            'mean_chosen_logits': answer.token_mean_logits[chosen_tokens].mean(),
            'mean_rejected_logits': answer.token_mean_logits[~chosen_tokens].mean(),
        }
        if not is_ref_model:
            output['nll_loss'] = -answer.token_logps[chosen_tokens].mean()
        if self.aux_loss_enabled:
            output['aux_loss'] = answer.outputs.aux_loss
        return output

    def get_batch_loss_metrics(self, model, batch, train_eval='train', pair_loss_scale=None):
        policy = self.concatenated_forward(model, batch)
        ref_chosen_logps, ref_rejected_logps = self.compute_ref_log_probs(batch)
        chosen_logps, rejected_logps = policy['chosen_logps'], policy['rejected_logps']
        result = apo_loss(chosen_logps, rejected_logps, ref_chosen_logps.to(chosen_logps),
                          ref_rejected_logps.to(rejected_logps), policy['rejected_mask'], self.beta)
        losses = result.losses
        if self.args.rpo_alpha is not None:
            losses = losses + self.args.rpo_alpha * policy['nll_loss']
        if self.aux_loss_enabled:
            losses = losses + self.aux_loss_coef * policy['aux_loss']
        prefix = 'eval_' if train_eval == 'eval' else ''
        metrics = self._gathered_means(self._metric_sums(policy, result), prefix)
        metrics.update(self._per_source_rewards(result, policy['rejected_mask'], batch.get(SOURCES_KEY), prefix))
        return losses.mean(), metrics

    def _metric_sums(self, policy, result: APOLossOutput) -> Dict[str, torch.Tensor]:
        """Each metric as a (sum, count) pair, so that means over ranks weigh every row/answer once."""
        mask = policy['rejected_mask']
        best_rejected = result.rejected_rewards.masked_fill(~mask, float('-inf')).max(dim=1).values
        rows = float(mask.shape[0])
        answers = mask.sum().float()
        pairs = {
            'rewards/chosen': (result.chosen_rewards.sum(), rows),
            'rewards/rejected': (result.rejected_rewards[mask].sum(), answers),
            'rewards/margins': ((result.chosen_rewards - best_rejected).sum(), rows),
            'rewards/accuracies': ((result.chosen_rewards > best_rejected).float().sum(), rows),
            'logps/chosen': (policy['chosen_logps'].detach().sum(), rows),
            'logps/rejected': (policy['rejected_logps'].detach()[mask].sum(), answers),
            'logits/chosen': (policy['mean_chosen_logits'].detach(), 1.0),
            'logits/rejected': (policy['mean_rejected_logits'].detach(), 1.0),
            'num_rejected': (answers, rows),
        }
        if self.args.rpo_alpha is not None:
            pairs['nll_loss'] = (policy['nll_loss'].detach(), 1.0)
        if self.aux_loss_enabled:
            pairs['aux_loss'] = (policy['aux_loss'].detach(), 1.0)
        return pairs

    def _gathered_means(self, pairs, prefix: str) -> Dict[str, float]:
        device = self.accelerator.device
        local = torch.stack([torch.stack([torch.as_tensor(s, dtype=torch.float32, device=device).reshape(()),
                                          torch.as_tensor(c, dtype=torch.float32, device=device).reshape(())])
                             for s, c in pairs.values()])
        total = self.accelerator.gather(local.unsqueeze(0)).sum(0)
        return {f'{prefix}{name}': s / c for name, (s, c) in zip(pairs, total.tolist())}

    def _per_source_rewards(self, result: APOLossOutput, mask: torch.Tensor, sources: Optional[List[List[str]]],
                            prefix: str) -> Dict[str, float]:
        local = defaultdict(lambda: [0.0, 0])
        if sources:
            rewards = result.rejected_rewards.float().cpu()
            for row, names in enumerate(sources):
                for k, name in enumerate(names):
                    if name is not None and mask[row, k]:
                        local[name][0] += rewards[row, k].item()
                        local[name][1] += 1
        # Every rank joins the gather, with or without named sources, so no rank waits alone.
        per_rank = gather_object([dict(local)]) if self.accelerator.num_processes > 1 else [dict(local)]
        totals = defaultdict(lambda: [0.0, 0])
        for rank_sums in per_rank:
            for name, (s, c) in rank_sums.items():
                totals[name][0] += s
                totals[name][1] += c
        return {f'{prefix}rewards/rejected/{name}': s / c for name, (s, c) in sorted(totals.items())}
