"""A few APO training steps on the tiny Qwen2.5-VL, one process per rank's rows (run by test_zero3_ranks.py).

    torchrun --nproc_per_node 2 tests/zero3_worker.py --engine deepspeed ...   # ZeRO-3, gloo, one rank per rows
    python tests/zero3_worker.py --engine single ...                           # the same rows in one process

Each rank trains on its own rows (``RANK_ROWS``), whose answers have different lengths, so the ranks hold
different numbers of answer tokens and, with a small lm_head chunk, make different numbers of lm_head chunks.
The single-process run computes every rank's loss on its own rows, averages them as data parallelism does, and
takes the same SGD steps without DeepSpeed. Both write the per-rank losses and the full gradients of every
step to ``--out``.
"""
import argparse
import os
import sys
from contextlib import nullcontext
from datetime import timedelta
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from apo_batches import apo_template, collate, load, rows, sequence_logps  # noqa: E402

from swift_plugin.answer_logps import FastPathOptions, compute_answer_logps  # noqa: E402
from swift_plugin.loss import apo_loss, pad_by_counts  # noqa: E402

# rank -> (Ks of its rows, extra words per answer): rank 0 holds about 4x the answer tokens of rank 1.
RANK_ROWS = {0: ([3, 2], 12), 1: ([1], 0)}
CHUNK_SIZE = 8
LEARNING_RATE = {'lora': 0.05, 'full': 0.01}  # full tuning: small enough that no loss saturates
BETA = 0.5


def _options(args):
    return FastPathOptions(shared_prefix=True, lean_logps=True, chunk_size=CHUNK_SIZE)


def _model(args):
    model, processor = load(args.model, 'qwen2_5_vl', dtype=torch.float32)
    torch.manual_seed(0)
    if args.tuning == 'lora':
        from peft import LoraConfig, get_peft_model
        # init_lora_weights=False: a non-zero adapter, so the policy differs from the reference at once.
        model = get_peft_model(model, LoraConfig(r=4, target_modules=['q_proj', 'v_proj', 'down_proj', 'qkv'],
                                                 init_lora_weights=False))
    return model, processor


def _rank_batch(template, rank, image_dir, unpackable):
    ks, words = RANK_ROWS[rank]
    row_list = rows(image_dir, ks, answer_words=words, first=10 * rank)
    if unpackable and rank == 1:
        # Left truncation cuts the longest sequence's prompt and not the others': this rank cannot pack.
        longest = collate(template, row_list)[1].shape[1]
        template = apo_template(template.processor, template.model, 'qwen2_5_vl', max_length=longest - 5,
                                truncation_strategy='left')
    return collate(template, row_list)


def _logps(model, unwrapped, batch, options):
    inputs, labels, num_rejected = batch
    answer = compute_answer_logps(model, unwrapped, inputs, labels, num_rejected, options)
    return sequence_logps(answer, labels.shape[0]), answer.packed


def _rank_loss(model, unwrapped, batch, reference_logps, options):
    _, labels, num_rejected = batch
    rows_ = num_rejected.shape[0]
    policy, packed = _logps(model, unwrapped, batch, options)
    rejected, mask = pad_by_counts(policy[rows_:], num_rejected)
    ref_rejected, _ = pad_by_counts(reference_logps[rows_:], num_rejected)
    return apo_loss(policy[:rows_], rejected, reference_logps[:rows_], ref_rejected, mask, BETA).losses.mean(), packed


def _reference(model, unwrapped, batch, options, args, fixed):
    """LoRA: the adapter disabled, every step; full tuning: the initial policy (computed once, ``fixed``)."""
    if args.tuning == 'full' and fixed is not None:
        return fixed
    with torch.no_grad(), (unwrapped.disable_adapter() if args.tuning == 'lora' else nullcontext()):
        return _logps(model, unwrapped, batch, options)[0]


def run_deepspeed(args):
    import deepspeed
    from deepspeed.utils import safe_get_full_grad
    # A collective mismatch between the ranks hangs; the timeout turns it into an error.
    deepspeed.init_distributed(dist_backend='gloo', timeout=timedelta(minutes=3))
    rank = torch.distributed.get_rank()
    model, processor = _model(args)
    trainable = [p for p in model.parameters() if p.requires_grad]
    config = {
        'train_micro_batch_size_per_gpu': 1,
        'gradient_accumulation_steps': 1,
        'zero_optimization': {'stage': 3, 'stage3_param_persistence_threshold': 0},
        'zero_allow_untested_optimizer': True,
        'gradient_clipping': 0.0,  # DeepSpeed clips at 1.0 unless told otherwise; the single run does not clip
    }
    engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.SGD(trainable, lr=LEARNING_RATE[args.tuning]),
                                      config=config)
    template = apo_template(processor, engine.module, 'qwen2_5_vl')
    template.register_post_encode_hook([engine.module])
    batch = _rank_batch(template, rank, args.images, args.unpackable)
    options, fixed, record = _options(args), None, []
    for _ in range(args.steps):
        fixed = _reference(engine, engine.module, batch, options, args, fixed)
        loss, packed = _rank_loss(engine, engine.module, batch, fixed, options)
        engine.backward(loss)
        grads = {n: safe_get_full_grad(p).clone() for n, p in engine.module.named_parameters() if p.requires_grad}
        engine.step()
        record.append({'loss': loss.item(), 'packed': packed, 'grads': grads})
    torch.save(record, Path(args.out) / f'rank{rank}.pt')


def run_single(args):
    model, processor = _model(args)
    template = apo_template(processor, model, 'qwen2_5_vl')
    template.register_post_encode_hook([model])
    ranks = sorted(RANK_ROWS)
    batches = [_rank_batch(template, rank, args.images, args.unpackable) for rank in ranks]
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=LEARNING_RATE[args.tuning])
    options, fixed, records = _options(args), [None] * len(ranks), {rank: [] for rank in ranks}
    for _ in range(args.steps):
        optimizer.zero_grad(set_to_none=True)
        losses = []
        for rank, batch in zip(ranks, batches):
            fixed[rank] = _reference(model, model, batch, options, args, fixed[rank])
            losses.append(_rank_loss(model, model, batch, fixed[rank], options))
        (sum(loss for loss, _ in losses) / len(ranks)).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        optimizer.step()
        for rank, (loss, packed) in zip(ranks, losses):
            records[rank].append({'loss': loss.item(), 'packed': packed, 'grads': grads})
    for rank in ranks:
        torch.save(records[rank], Path(args.out) / f'rank{rank}.pt')


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--engine', choices=['deepspeed', 'single'], required=True)
    parser.add_argument('--tuning', choices=['lora', 'full'], required=True)
    parser.add_argument('--model', required=True)
    parser.add_argument('--images', required=True, help='a folder for the rows\' images')
    parser.add_argument('--out', required=True)
    parser.add_argument('--steps', type=int, default=3)
    parser.add_argument('--unpackable', action='store_true',
                        help="rank 1's rows cannot be packed: every rank must run the plain batch")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    (run_deepspeed if args.engine == 'deepspeed' else run_single)(args)


if __name__ == '__main__':
    main()
