"""APOTrainer: ms-swift's DPOTrainer with one chosen and K rejected answers per row.

The trainer only wires data to ``loss.apo_loss``: it gets the answer tokens' log-probs of the policy
(and the reference) on the ``[chosen x B, rejected answers row by row]`` batch built by template.py
from answer_logps.py (shared-prefix forward and lean log-probs where they apply), sums them per
sequence, lays the rejected ones out as [B, max K] with a mask, and logs DPO's metrics plus
``num_rejected`` and per-source rewards. Metrics are kept as (sum, count) pairs per row and summed
until the next log, so a logged mean weighs every row (answer, token) once however rows fell into
batches and ranks; in evaluation the rows the loader repeats to even out the last batch are dropped
(``accelerator.gather_for_metrics``). Everything else (reference model or disabled adapter,
DeepSpeed, gradient accumulation, evaluation, checkpointing) is ms-swift's DPOTrainer.
"""
import atexit
from collections import defaultdict
from typing import Dict, List, Optional, Tuple

import torch
import torch.distributed as dist
from accelerate.utils import gather_object
from swift.rlhf_trainers import DPOTrainer

from .answer_logps import FastPathOptions, compute_answer_logps
from .loss import APOLossOutput, apo_loss, pad_by_counts
from .template import NUM_REJECTED_KEY, SOURCES_KEY


class APOTrainer(DPOTrainer):

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Neither ms-swift nor torch destroys the process group before the interpreter shuts down; gloo's worker
        # threads can then still hold finished work with tensors in it, and a rank aborts at exit (SIGABRT,
        # "terminate called without an active exception") after a run that succeeded.
        atexit.register(_destroy_process_group)
        self.fast_path = FastPathOptions.from_args(self.args, use_logits_to_keep=self.get_use_logits_to_keep(True))
        # train/eval -> metric name -> [sum, count] since the last log
        self._metric_totals = defaultdict(lambda: defaultdict(lambda: [0.0, 0.0]))

    def concatenated_forward(self, model, batch, is_ref_model: bool = False):
        batch = batch.copy()
        num_rejected = batch.pop(NUM_REJECTED_KEY)
        batch.pop(SOURCES_KEY, None)
        batch.pop('text_position_ids', None)
        labels = batch.pop('labels')
        model_kwargs = {'output_router_logits': True} if self.aux_loss_enabled else {}
        answer = compute_answer_logps(model, self.accelerator.unwrap_model(model), batch, labels, num_rejected,
                                      self.fast_path, model_kwargs)

        num_rows, num_sequences = num_rejected.shape[0], labels.shape[0]

        def per_sequence(values):
            return values.new_zeros(num_sequences).index_add(0, answer.sequence, values)

        def chosen_and_rejected(values):
            """Per-sequence values -> (chosen [B], sum over each row's rejected answers [B])."""
            return values[:num_rows], pad_by_counts(values[num_rows:], num_rejected)[0].sum(1)

        sequence_logps = per_sequence(answer.token_logps)
        rejected_logps, rejected_mask = pad_by_counts(sequence_logps[num_rows:], num_rejected)
        logit_sums = chosen_and_rejected(per_sequence(answer.token_mean_logits))
        token_counts = chosen_and_rejected(per_sequence(torch.ones_like(answer.token_mean_logits)))
        output = {
            'chosen_logps': sequence_logps[:num_rows],
            'rejected_logps': rejected_logps,
            'rejected_mask': rejected_mask,
            'chosen_logit_sums': logit_sums[0],
            'rejected_logit_sums': logit_sums[1],
            'chosen_tokens': token_counts[0],
            'rejected_tokens': token_counts[1],
        }
        if not is_ref_model:
            output['nll_loss'] = -answer.token_logps[answer.sequence < num_rows].mean()
        if self.aux_loss_enabled:
            output['aux_loss'] = answer.outputs.aux_loss
        return output

    def get_batch_loss_metrics(self, model, batch, train_eval='train', pair_loss_scale=None):
        """The mean loss of the batch, and its metrics as gathered (sum, count) pairs (see ``store_metrics``)."""
        policy = self.concatenated_forward(model, batch)
        ref_chosen_logps, ref_rejected_logps = self.compute_ref_log_probs(batch)
        chosen_logps, rejected_logps = policy['chosen_logps'], policy['rejected_logps']
        result = apo_loss(chosen_logps, rejected_logps, ref_chosen_logps.to(chosen_logps),
                          ref_rejected_logps.to(rejected_logps), policy['rejected_mask'], self.beta,
                          label_smoothing=self.label_smoothing)
        losses = result.losses
        if self.args.rpo_alpha is not None:
            losses = losses + self.args.rpo_alpha * policy['nll_loss']
        if self.aux_loss_enabled:
            losses = losses + self.aux_loss_coef * policy['aux_loss']
        # In evaluation the per-row loss is a metric too: it replaces the Trainer's eval_loss (see ``log``).
        rows = self._row_metrics(policy, result, losses if train_eval == 'eval' else None, batch.get(SOURCES_KEY))
        prefix = 'eval_' if train_eval == 'eval' else ''
        totals = self._gathered_totals(rows, train_eval)
        return losses.mean(), {f'{prefix}{name}': total for name, total in totals.items()}

    def _row_metrics(self, policy, result: APOLossOutput, losses: Optional[torch.Tensor],
                     sources: Optional[List[List[str]]]) -> List[Dict[str, Tuple[float, float]]]:
        """Each row's metrics as (sum, count) pairs, so that every row, answer and token counts once in a mean."""
        mask = policy['rejected_mask']
        num_rows = mask.shape[0]
        answers = mask.sum(1).float()
        one = torch.ones_like(answers)
        best_rejected = result.rejected_rewards.masked_fill(~mask, float('-inf')).max(dim=1).values
        columns = {
            'rewards/chosen': (result.chosen_rewards, one),
            'rewards/rejected': (result.rejected_rewards.sum(1), answers),  # padding slots hold 0
            'rewards/margins': (result.chosen_rewards - best_rejected, one),
            'rewards/accuracies': (result.chosen_rewards > best_rejected, one),
            'logps/chosen': (policy['chosen_logps'], one),
            'logps/rejected': (policy['rejected_logps'].masked_fill(~mask, 0.0).sum(1), answers),
            'logits/chosen': (policy['chosen_logit_sums'], policy['chosen_tokens']),
            'logits/rejected': (policy['rejected_logit_sums'], policy['rejected_tokens']),
            'num_rejected': (answers, one),
        }
        if self.args.rpo_alpha is not None:
            columns['nll_loss'] = (-policy['chosen_logps'], policy['chosen_tokens'])  # a mean over chosen tokens
        if self.aux_loss_enabled:
            # One value per batch: each of its rows carries an equal share of the batch's weight.
            columns['aux_loss'] = (policy['aux_loss'] * one / num_rows, one / num_rows)
        if losses is not None:
            columns['loss'] = (losses, one)
        table = torch.stack([torch.stack([s.detach().float(), c.detach().float()], -1) for s, c in columns.values()],
                            1).tolist()  # [rows, metrics, 2]
        records = [{name: tuple(pair) for name, pair in zip(columns, row)} for row in table]
        if sources:
            rewards, real = result.rejected_rewards.float().tolist(), mask.tolist()
            for row, names in enumerate(sources):
                for k, name in enumerate(names):
                    if name is not None and real[row][k]:
                        key = f'rewards/rejected/{name}'
                        s, c = records[row].get(key, (0.0, 0.0))
                        records[row][key] = (s + rewards[row][k], c + 1)
        return records

    def _gathered_totals(self, rows: List[Dict[str, Tuple[float, float]]],
                         train_eval: str) -> Dict[str, Tuple[float, float]]:
        """The rows' (sum, count) pairs summed over all ranks; every rank joins, whatever its rows hold."""
        if train_eval == 'eval':
            # To fill the last batch on every rank, the eval loader repeats rows from the start of the set;
            # gather_for_metrics cuts the gathered rows at the set's remainder, which drops exactly those.
            return _summed(self.accelerator.gather_for_metrics(rows, use_gather_object=True))
        # A row repeated in training is trained on: it counts, as in the loss.
        return _summed(gather_object([_summed(rows)]))

    def store_metrics(self, metrics: Dict[str, Tuple[float, float]], train_eval: str = 'train') -> None:
        """Add a batch's (sum, count) pairs; ``log`` divides. DPO averages per-batch means instead, which
        weighs rows by how they fell into batches and ranks."""
        totals = self._metric_totals[train_eval]
        for name, (s, c) in metrics.items():
            totals[name][0] += s
            totals[name][1] += c

    def log(self, logs, start_time=None):
        train_eval = 'train' if 'loss' in logs else 'eval'  # as DPOTrainer.log tells them apart
        # In evaluation this also replaces eval_loss (the Trainer's mean of per-batch means) by the mean over rows;
        # ``logs`` is the dict that evaluate() returns, so best-checkpoint selection sees the same number.
        logs.update({name: s / c for name, (s, c) in self._metric_totals.pop(train_eval, {}).items()})
        return super().log(logs, start_time)


def _summed(records) -> Dict[str, Tuple[float, float]]:
    total = defaultdict(lambda: [0.0, 0.0])
    for record in records:
        for name, (s, c) in record.items():
            total[name][0] += s
            total[name][1] += c
    return {name: tuple(pair) for name, pair in total.items()}


def _destroy_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
