"""Time and peak memory per prompt of one APO training step, three ways (prints a table; not a test).

    A  ms-swift pairwise DPO, as the seed recipe trains (``--rlhf_type dpo`` on K rows (chosen, rejected_k)):
       the template's rlhf encoding of each pair, one pair per micro-batch ([chosen, rejected]), the
       model with ms-swift's logits_to_keep (logits from the first answer position on), full logits,
       trl's selective_log_softmax as ms-swift's DPOTrainer.get_per_token_logps calls it, sigmoid loss.
       Re-implemented here from those pieces (DPOTrainer itself needs a whole training set-up).
    B  APO, plain path: one row, K + 1 sequences, full logits (APO_SHARED_PREFIX=0 APO_LEAN_LOGPS=0).
    C  APO, shared-prefix forward + lean log-probs (the default), once per kernel in ``--attn``:
       plain (shared prefix off, lean log-probs on), dense (dense 4D mask), flex (FlexAttention BlockMask),
       flash (flash-attention varlen: torch's varlen_attn, or the flash-attn package where installed; CUDA);
       the model loaded with sdpa, which the vision tower uses in every case.

Each step is what one prompt costs in training: the reference forward (LoRA adapter disabled, no grad),
the policy forward and the backward. LoRA rank 8 on every linear layer of the language model, as the
published recipe. On CUDA one process loads the model once and times every run in turn, each with its own
peak (torch.cuda.max_memory_allocated over its steps, minus what was allocated before them); a run that fails
(out of memory, a kernel that does not compile here) is reported and the next one runs. On the CPU each run
has its own process (peak resident set size sampled every 2 ms during the steps, minus the size before them).
``--one-process`` / ``--no-one-process`` choose either way.

    python benchmarks/bench_shared_prefix.py                       # CPU, float32
    python benchmarks/bench_shared_prefix.py --device cuda         # bf16, sdpa
    python benchmarks/bench_shared_prefix.py --device cuda --variants C --attn plain,dense,flex,flash
    python benchmarks/bench_shared_prefix.py --device cuda --variants C --attn plain,dense,flex \
        --prompt-tokens 500 --answer-tokens 3500                  # long answers, L ~ 28,500
"""
import argparse
import json
from contextlib import contextmanager
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / 'tools'))

KERNELS = {
    'plain': 'no shared prefix',
    'dense': 'shared prefix, dense 4D mask (sdpa)',
    'flex': 'shared prefix, FlexAttention BlockMask (sdpa model)',
    'flash': 'shared prefix, flash-attention varlen (sdpa model)',
}
VARIANTS = {
    'A': 'ms-swift DPO, K pairwise rows',
    'B': 'APO plain path',
    'C': 'APO shared prefix + lean log-probs',
}


def _label(run: str) -> str:
    return f'APO lean log-probs, {KERNELS[run[2:-1]]}' if run.startswith('C[') else VARIANTS[run]


def _args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--hidden-size', type=int, default=512)
    parser.add_argument('--num-layers', type=int, default=4)
    parser.add_argument('--vision-depth', type=int, default=2)
    parser.add_argument('--k', type=int, default=7, help='rejected answers per prompt')
    parser.add_argument('--image-side', type=int, default=840, help='pixels; (side / 28)^2 image tokens')
    parser.add_argument('--prompt-tokens', type=int, default=1000, help='image + text tokens of the prompt')
    parser.add_argument('--answer-tokens', type=int, default=350)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--steps', type=int, default=3)
    parser.add_argument('--variants', default='ABC')
    parser.add_argument('--attn', default='dense', type=lambda s: s.split(','),
                        help=f'comma-separated kernels for variant C, of {",".join(KERNELS)}')
    parser.add_argument('--model-dir', default=os.path.join(tempfile.gettempdir(), 'swift-apo-bench-model'),
                        help='where the random model of --hidden-size, --num-layers, --vision-depth is built (once)')
    parser.add_argument('--model', help='an existing Qwen2.5-VL model folder to use as it is instead (e.g. the 7B '
                        'one benchmarks/bench_7b_cli.py builds); the image is written beside it')
    parser.add_argument('--one-process', action=argparse.BooleanOptionalAction, help='time every run in one '
                        'process that loads the model once (default on cuda, where each run still gets its own '
                        'allocator peak; on the CPU the peak resident set size is the process\'s, so each run gets its '
                        'own process by default)')
    parser.add_argument('--profile', action='store_true', help='after timing, profile one more step of each run '
                        '(torch.profiler): time per phase, module and kernel, and the share of recomputation')
    parser.add_argument('--worker', help=argparse.SUPPRESS)  # the runs (A, B, C[kernel]) a worker times
    args = parser.parse_args(argv)
    if args.model:
        args.model_dir = args.model
    if args.one_process is None:
        args.one_process = args.device == 'cuda'
    unknown = set(args.attn) - set(KERNELS)
    if unknown:
        parser.error(f'--attn: unknown kernels {sorted(unknown)}; choose from {",".join(KERNELS)}')
    return args


class _PeakRSS:
    """Samples this process's resident set size in a thread (CPU has no allocator peak counter)."""

    def __init__(self):
        self.page = os.sysconf('SC_PAGE_SIZE')
        self.peak, self._stop = 0, threading.Event()

    def rss(self):
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * self.page

    def __enter__(self):
        self.base = self.peak = self.rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self.rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def _rows(args, image_path):
    import random
    rng = random.Random(0)
    words = 'left right basal opacity effusion volume loss atelectasis lung heart size normal mild severe'.split()

    def text(n_chars):
        out = ''
        while len(out) < n_chars:
            out += rng.choice(words) + ' '
        return out[:n_chars]

    image_tokens = (args.image_side // 28)**2
    # The byte-level tokenizer makes one token per ASCII character; the chat template adds about 40.
    question = text(max(8, args.prompt_tokens - image_tokens - 40))
    answers = [text(args.answer_tokens - 2) for _ in range(args.k + 1)]  # -2: <|im_end|> and newline
    messages = [{'role': 'user', 'content': '<image>' + question}, {'role': 'assistant', 'content': answers[0]}]
    return messages, answers, [str(image_path)]


def _worker(args):
    """Loads the model once, then times each run of ``args.worker`` (A, B, C[kernel]) in turn: one JSON line each."""
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    os.environ['MAX_PIXELS'] = str(args.image_side**2)
    import numpy as np
    import torch
    from peft import LoraConfig, get_peft_model
    from PIL import Image

    import swift_plugin
    swift_plugin.install()  # the 'apo' template mode, also where the package is not installed (no .pth)
    from swift.model import get_model_processor
    from swift.template import get_template

    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == 'cuda' else torch.float32
    model, processor = get_model_processor(args.model_dir, model_type='qwen2_5_vl', torch_dtype=dtype,
                                           attn_impl='sdpa')
    model.to(device)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=32, target_modules=(
        r'.*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)')))
    model.enable_input_require_grads()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={'use_reentrant': False})
    model.train()

    image_path = Path(args.model_dir) / 'bench.png'
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (args.image_side, args.image_side, 3), dtype=np.uint8)).save(image_path)
    template = get_template(processor, template_type='qwen2_5_vl', max_length=None)
    template.model = model
    template.register_post_encode_hook([model])
    for run in args.worker.split(','):
        try:
            result = _time_run(args, run, model, template, _rows(args, image_path), device)
        except Exception as error:  # e.g. out of memory, or a kernel that does not compile here: the others still run
            if device.type == 'cuda':
                torch.cuda.empty_cache()
            result = {'run': run, 'error': f'{type(error).__name__}: {error}'[-3000:]}
        print(json.dumps(result), flush=True)


def _time_run(args, run, model, template, rows, device):
    import copy

    import torch
    from torch.profiler import record_function
    from trl.trainer.utils import selective_log_softmax

    from swift_plugin.answer_logps import FastPathOptions, compute_answer_logps
    from swift_plugin.loss import apo_loss, pad_by_counts
    from swift_plugin.template import NUM_REJECTED_KEY, SOURCES_KEY

    messages, answers, images = rows
    variant, kernel = run[0], (run[2:-1] if run.startswith('C[') else 'plain')
    beta = 0.1
    if kernel == 'flash':  # compute_answer_logps would fall back to the dense mask: say so instead of timing it
        from swift_plugin.prefix_attention import checked_varlen_kernel_for
        found, why = checked_varlen_kernel_for(model, device)
        if found is None:
            raise RuntimeError(f'flash: {why}')
        print(f'flash kernel: {why}', file=sys.stderr)
    elif kernel == 'flex':
        from swift_plugin.prefix_attention import checked_flex_for
        why = checked_flex_for(model, device, backward=True)
        if why:
            raise RuntimeError(f'flex: {why}')

    def to_device(batch):
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    if variant == 'A':
        template.set_mode('rlhf')
        pairs = [{'messages': messages, 'rejected_response': rejected, 'images': images} for rejected in answers[1:]]
        batches = [to_device(template.data_collator([template.encode(copy.deepcopy(p))])) for p in pairs]

        def logps(batch):  # ms-swift DPOTrainer.concatenated_forward (+ prepare_logits_to_keep) without padding_free
            batch = dict(batch)
            batch.pop('text_position_ids', None)
            labels = batch.pop('labels')
            keep = labels.shape[-1] - int((labels != -100).int().argmax(-1).min()) + 1
            logits = model(**batch, logits_to_keep=keep, use_cache=False).logits
            labels = torch.roll(labels[:, -keep:], shifts=-1, dims=1)
            mask = labels != -100
            per_token = selective_log_softmax(logits, labels.masked_fill(~mask, 0))
            return (per_token * mask).sum(-1)

        def step():
            for batch in batches:
                with record_function('reference forward'), torch.no_grad(), model.disable_adapter():
                    ref = logps(batch)
                with record_function('policy forward'):
                    policy = logps(batch)
                    margin = (policy[0] - ref[0]) - (policy[1] - ref[1])
                    loss = -torch.nn.functional.logsigmoid(beta * margin)
                with record_function('backward'):
                    loss.backward()
            return float(loss)

        tokens = sum(int(b['attention_mask'].sum()) for b in batches)
        prompt_tokens = int(batches[0]['labels'][0].ne(-100).int().argmax())
    else:
        template.set_mode('apo')
        fast = variant == 'C' and kernel != 'plain'
        row = {'messages': messages, 'rejected_response': answers[1:], 'images': images}
        batch = to_device(template.data_collator([template.encode(copy.deepcopy(row))]))
        num_rejected = batch.pop(NUM_REJECTED_KEY)
        batch.pop(SOURCES_KEY, None)
        batch.pop('text_position_ids', None)
        labels = batch.pop('labels')
        options = FastPathOptions(shared_prefix=fast, lean_logps=variant == 'C',
                                  prefix_kernel=kernel if kernel in ('dense', 'flex', 'flash') else 'auto')

        def logps():
            answer = compute_answer_logps(model, model, batch, labels, num_rejected, options)
            assert answer.packed == fast
            return answer.token_logps.new_zeros(labels.shape[0]).index_add(0, answer.sequence, answer.token_logps)

        def step():
            with record_function('reference forward'), torch.no_grad(), model.disable_adapter():
                ref = logps()
            with record_function('policy forward'):
                policy = logps()
                rejected, mask = pad_by_counts(policy[1:], num_rejected)
                loss = apo_loss(policy[:1], rejected, ref[:1], pad_by_counts(ref[1:], num_rejected)[0], mask,
                                beta).losses.mean()
            with record_function('backward'):
                loss.backward()
            return float(loss)

        prompt_tokens = int(labels[0].ne(-100).int().argmax())
        tokens = int(batch['attention_mask'].sum())
        if fast:  # the prompt once, not once per sequence
            tokens -= (labels.shape[0] - 1) * prompt_tokens

    warmup_start = time.perf_counter()
    for _ in range(args.warmup):
        step()
        model.zero_grad(set_to_none=True)
    warmup_seconds = time.perf_counter() - warmup_start
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    if device.type == 'cuda':
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times = []
    with _PeakRSS() as rss:
        for _ in range(args.steps):
            sync()
            start = time.perf_counter()
            loss = step()
            sync()
            times.append(time.perf_counter() - start)
            model.zero_grad(set_to_none=True)
    peak = torch.cuda.max_memory_allocated() - base if device.type == 'cuda' else rss.peak - rss.base
    if args.profile:
        print(profile_step(step, model, device, f'{run}: {_label(run)}'), file=sys.stderr)
        model.zero_grad(set_to_none=True)
    return {'run': run, 'seconds': sorted(times)[len(times) // 2], 'warmup_seconds': warmup_seconds,
            'peak_bytes': peak, 'tokens': tokens, 'prompt_tokens': prompt_tokens, 'loss': loss}


@contextmanager
def _module_regions(model):
    """Names each forward of the vision tower, a decoder layer and the output head as a profiler region, with
    ' (recomputed)' when gradient checkpointing runs it again inside the backward."""
    import torch
    from torch.profiler import record_function
    hf_model = model.get_base_model() if hasattr(model, 'get_base_model') else model
    parts = [('vision tower', hf_model.model.visual), ('lm_head (output head)', hf_model.lm_head)]
    parts += [('decoder layer', layer) for layer in hf_model.model.language_model.layers]
    originals = []
    for name, module in parts:
        forward = module.forward

        def named(*args, __forward=forward, __name=name, **kwargs):
            recomputed = torch._C._current_graph_task_id() != -1  # inside the autograd engine: a recomputation
            with record_function(__name + (' (recomputed)' if recomputed else '')):
                return __forward(*args, **kwargs)

        originals.append((module, forward))
        module.forward = named
    try:
        yield
    finally:
        for module, forward in originals:
            module.forward = forward


def profile_step(step, model, device, title: str) -> str:
    """One more step under torch.profiler: device time per region (the step's phases, the vision tower, decoder
    layers, output head, recomputation) and the kernels that took the most, as markdown."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda' else [])
    with _module_regions(model), profile(activities=activities) as prof:
        step()
        if device.type == 'cuda':
            torch.cuda.synchronize()
    events = prof.key_averages()

    def device_time(event):  # microseconds; on the CPU, CPU time
        return event.device_time_total if device.type == 'cuda' else event.cpu_time_total

    phases = ('reference forward', 'policy forward', 'backward')
    regions = [e for e in events if e.key in phases or e.key.startswith(('vision tower', 'decoder layer', 'lm_head'))]
    total = sum(device_time(e) for e in events if e.key in phases) or 1
    lines = [f'\nprofile of one step, {title} ({"CUDA" if device.type == "cuda" else "CPU"} time; regions nest: the '
             f'modules inside the phases)', '', '| region | calls | ms | share of the step |', '|---|---:|---:|---:|']
    for e in sorted(regions, key=device_time, reverse=True):
        lines.append(f'| {e.key} | {e.count} | {device_time(e) / 1e3:.1f} | {device_time(e) / total:.1%} |')
    kernels = [e for e in events if e.key not in phases and e.key not in {r.key for r in regions}]
    self_time = (lambda e: e.self_device_time_total) if device.type == 'cuda' else (lambda e: e.self_cpu_time_total)
    lines += ['', '| op or kernel (self time) | calls | ms | share |', '|---|---:|---:|---:|']
    for e in sorted(kernels, key=self_time, reverse=True)[:15]:
        lines.append(f'| {e.key[:90]} | {e.count} | {self_time(e) / 1e3:.1f} | {self_time(e) / total:.1%} |')
    return '\n'.join(lines)


def main():
    args = _args()
    if args.worker:
        return _worker(args)
    from tiny_qwen2_5_vl import build_tiny_qwen2_5_vl
    model_dir = Path(args.model_dir)
    config = model_dir / 'config.json'
    wanted = (args.hidden_size, args.num_layers, args.vision_depth)
    if not args.model and (not config.exists()
                           or json.loads((model_dir / 'bench_shape.json').read_text()) != list(wanted)):
        build_tiny_qwen2_5_vl(model_dir, seed=0, hidden_size=args.hidden_size, num_layers=args.num_layers,
                              vision_depth=args.vision_depth)
        (model_dir / 'bench_shape.json').write_text(json.dumps(list(wanted)))
    runs = [f'C[{kernel}]' if variant == 'C' else variant for variant in args.variants
            for kernel in (args.attn if variant == 'C' else [None])]
    groups = [runs] if args.one_process else [[run] for run in runs]
    environment = {**os.environ, 'PYTHONPATH': os.pathsep.join(filter(None, [str(REPO), os.environ.get('PYTHONPATH')]))}
    results = {}
    for group in groups:
        cmd = [sys.executable, __file__] + sys.argv[1:] + ['--worker', ','.join(group)]
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=environment) as proc:
            for line in proc.stdout:  # as each run finishes, so that a later one that hangs loses nothing
                if not line.startswith('{'):
                    continue
                result = json.loads(line)
                name = result.pop('run')
                if 'error' in result:
                    print(f'{name} failed: {result["error"]}', file=sys.stderr)
                else:
                    results[name] = result
                    print(f'{name} done: {result}', file=sys.stderr)
        if proc.returncode:
            print(f'worker for {",".join(group)} exited {proc.returncode}', file=sys.stderr)
    if not results:
        sys.exit('every variant failed')

    k, answer = args.k, args.answer_tokens
    prompt = next(iter(results.values()))['prompt_tokens']
    shape = (f'model {args.model}' if args.model else
             f'hidden {args.hidden_size}, {args.num_layers} layers, vision depth {args.vision_depth}, vocab 151936')
    print(f'\n{shape}, '
          f'device {args.device}; prompt P = {prompt} tokens (image {(args.image_side // 28)**2}), '
          f'K = {k} answers of R ~ {answer} tokens; LoRA r8, gradient checkpointing; median of {args.steps} steps')
    print('time per prompt = reference forward + policy forward + backward\n')
    print('| variant | tokens through the LM | time per prompt (s) | peak memory (MiB) |')
    print('|---|---:|---:|---:|')
    for variant, r in results.items():
        print(f'| {variant}: {_label(variant)} | {r["tokens"]} | {r["seconds"]:.2f} | {r["peak_bytes"] / 2**20:.0f} |')
    print()
    for c in (name for name in results if name[0] == 'C'):
        if 'A' in results:
            print(f'{c}/A time: {results[c]["seconds"] / results["A"]["seconds"]:.3f}')
        if 'B' in results:
            print(f'{c}/B time: {results[c]["seconds"] / results["B"]["seconds"]:.3f}')
            print(f'{c}/B peak memory: {results[c]["peak_bytes"] / max(results["B"]["peak_bytes"], 1):.3f}')
            print(f'APO loss B vs {c}: {results["B"]["loss"]:.6f} vs {results[c]["loss"]:.6f}')
    print(f'theoretical token ratio (P + (K+1)R) / (2K(P+R)) = {(prompt + (k + 1) * answer) / (2 * k * (prompt + answer)):.3f}')
    if not args.model:
        lm_flops = 2 * (2 * args.hidden_size**2 + 2 * args.hidden_size * 32 + 3 * args.hidden_size * 2 * args.hidden_size)
        head_flops = 2 * args.hidden_size * 151936
        # Shapes of tools/tiny_qwen2_5_vl.py: head_dim 16, 2 key/value heads, intermediate 2 x hidden.
        print(f'per answer token, the vocabulary head costs {head_flops / (args.num_layers * lm_flops):.1f}x all '
              f'{args.num_layers} decoder layers\' linear layers together (it runs once per answer token in every '
              'variant)')


if __name__ == '__main__':
    main()
