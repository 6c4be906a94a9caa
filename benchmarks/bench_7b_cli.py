"""7B-scale benchmark of the real ``swift rlhf`` CLI: APO fast, APO plain and stock pairwise DPO, on Qwen2.5-VL-7B
(the paper's student) or the model users pick today: ``--family qwen3-vl`` (Qwen3-VL-8B) or ``--family qwen3.5``
(Qwen3.5-9B, Gated DeltaNet layers beside full attention).

One command (from the repository root, after ``bash scripts/setup.sh``; one 80 GB GPU, no internet):

    .venv/bin/python benchmarks/bench_7b_cli.py --device cuda --out results/7b          # add --full for ZeRO-3
    .venv/bin/python benchmarks/bench_7b_cli.py --family qwen3-vl --device cuda --out results/8b
    .venv/bin/python benchmarks/bench_7b_cli.py --scale tiny --device cpu --out /tmp/b7  # the same, tiny, CPU

What it does:
1. Builds the family's published architecture with random weights (tools/tiny_models.py ``--preset``:
   qwen2.5-vl-7b 8.29e9 parameters, qwen3-vl-8b 8.77e9, qwen3.5-9b 9.41e9; initialised in bf16 on the GPU, ~17-19 GB
   of safetensors under ``--model-dir``, reused when present). ``--scale tiny``: the family's tiny test model.
2. Writes CXR-MAX-shaped rows: a random image giving ~1,000 image tokens (31 x 31 merged patches: 868 x 868 pixels
   at Qwen2.5-VL's patch 14, 992 x 992 at Qwen3's patch 16, under a matching MAX_PIXELS), a question, K = 7 rejected
   answers and one chosen answer of ~350 tokens each
   (the tokenizer is byte-level, so one ASCII character is one token). APO rows hold the K answers; the DPO rows
   are the same prompts split into K pairwise rows (chosen, rejected k).
3. Runs each variant as its own ``swift rlhf`` process (``python -m swift_plugin rlhf``: works installed or not),
   LoRA r8 / alpha 32 / all-linear, bf16, sdpa, gradient checkpointing, gradient_accumulation_steps 1,
   per-device batch 1 and 2, ``--warmup`` + ``--steps`` optimizer steps:
     (a) --rlhf_type apo, fast paths on (shared-prefix forward + lean log-probs; the default)
     (b) --rlhf_type apo, plain path (APO_SHARED_PREFIX=0 APO_LEAN_LOGPS=0)
     (c) --rlhf_type dpo, stock ms-swift, on the K pairwise rows of each prompt
   ``--full``: also full tuning under ``--deepspeed zero3`` on one GPU, batch 1 (a reference model is loaded
   too); its (b) and (c) are skipped when its (a) does not fit. An out-of-memory run is reported as "did not fit".

Measurements (per variant; the raw numbers are in ``OUT/results.json``, each run's log in ``OUT/logs/``):
- seconds per step: median over the steps after ``--warmup``, timed by benchmarks/step_stats_plugin.py (an
  ms-swift callback: device-synchronised on_step_begin -> on_step_end, i.e. reference forward, policy forward,
  backward and optimizer step; data loading excluded). ``wall s/step`` in the JSON: the same from the
  differences of ms-swift's cumulative ``train_speed(s/it)`` in logging.jsonl (data loading included).
- seconds per PROMPT = s/step x rows per prompt / batch: an APO row is one prompt, (c) needs K rows per prompt.
- peak memory: torch.cuda.max_memory_allocated and max_memory_reserved over the run (weights included);
  ms-swift's ``memory(GiB)`` is the reserved one. On a CPU: the training process's peak resident set size.
- tokens per prompt, with P the prompt (image included) and R an answer's tokens, measured with ms-swift's
  template: processed by the language model in one forward: (a) P + (K+1)R, (b) (K+1)(P+R), (c) 2K(P+R);
  useful tokens: P + (K+1)R for every variant. tokens/s = tokens per prompt / s per prompt.
- MFU = model FLOPs per prompt / s per prompt / peak FLOPS (``--peak-tflops``, default 989: H100 SXM dense
  bf16). Model FLOPs count what the algorithm needs, no gradient-checkpointing recomputation:
    forward(T, H, S) = 2 N_lm T + 2 N_head H + 4 layers d_attn S    (T tokens, H answer tokens through the
        head, S attended (query, key) pairs, causal; a packed answer sees the prompt and itself)
    vision(image) = 2 N_vit n + 2 N_merger n/4 + 4 d_vit S_vit        (n patches; the ViT is frozen; S_vit:
        n^2 per full-attention block, n x 64 per windowed block; Qwen3's deepstack mergers count as mergers)
    (Qwen3.5: "layers" in the attention term are its full-attention layers; the gated delta rule's own FLOPs, under
    1% of a linear-attention layer's projections at 9B shapes, are left out)
    LoRA:  reference forward + policy forward + policy backward of the activation gradients through the
           frozen weights (2 N_lm T + 2 N_head H + 8 layers d_attn S) + 6 N_lora T, + 2 vision per image
    full:  the same with a backward of 4 N_lm T + 4 N_head H + 8 layers d_attn S (weight gradients too)
  i.e. about 6 N T for LoRA and 8 N T for full tuning. N_* are counted from the safetensors file.
  "MFU" uses each variant's own processed tokens and images; "useful MFU" the FLOPs of layout (a), the same
  work for every variant (so it is inversely proportional to s/prompt).
- ratios (a)/(c) and (a)/(b) of s/prompt, and the goal checks: (a)/(c) <= 0.25, and (a) LoRA at batch 2
  (the paper's per-device batch) runs with a peak reserved memory <= --fit-gib (78 GiB: an 80 GB GPU).

Where one call may not take long (e.g. 10 minutes), repeat ``timeout 590 <the command> --resume``: finished runs
(and those that ran out of memory) are kept, the model is built once, and OUT/results.md is rewritten after
every run. SIGTERM kills the running swift process group.
"""
import argparse
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGIN = Path(__file__).resolve().with_name('step_stats_plugin.py')
BUILDER = REPO / 'tools' / 'tiny_models.py'
sys.path.insert(0, str(REPO / 'tools'))
from tiny_models import FAMILIES, family_config  # noqa: E402

# The family's published architecture at the 7b scale (tools/tiny_models.py presets).
PRESETS = {'qwen2.5-vl': 'qwen2.5-vl-7b', 'qwen3-vl': 'qwen3-vl-8b', 'qwen3.5': 'qwen3.5-9b'}
# Model and row shapes. The 7B rows follow CXR-MAX; the tiny ones only have to run everything quickly. The image is
# image_tokens x image_tokens merged patches.
SCALES = {
    '7b': dict(image_tokens=31, question_tokens=100, answer_tokens=350),
    'tiny': dict(image_tokens=4, question_tokens=40, answer_tokens=40),
}
VARIANTS = {
    'a': ('APO fast paths', 'apo', {}),
    'b': ('APO plain path', 'apo', {'APO_SHARED_PREFIX': '0', 'APO_LEAN_LOGPS': '0'}),
    'c': ('DPO, K pairwise rows', 'dpo', {}),
}
FAST_PATH_LINES = ('APO shared-prefix forward in use.', 'APO lean log-probs in use.')
OOM_PATTERNS = ('CUDA out of memory', 'OutOfMemoryError', 'CUBLAS_STATUS_ALLOC_FAILED', "can't allocate memory",
                'std::bad_alloc')
GIB = 2**30


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', choices=['cuda', 'cpu'], default='cuda')
    parser.add_argument('--family', choices=list(PRESETS), default='qwen2.5-vl',
                        help='the model family (its published architecture at the 7b scale)')
    parser.add_argument('--scale', choices=list(SCALES), help='default: 7b on cuda, tiny on cpu')
    parser.add_argument('--out', type=Path, required=True, help='results, logs, runs, data (and the model)')
    parser.add_argument('--model-dir', type=Path, help='default: OUT/model-SCALE (built once, then reused)')
    parser.add_argument('--variants', default='abc', help='any of a, b, c')
    parser.add_argument('--batch-sizes', default='1,2', help='per-device batch sizes (rows) for LoRA')
    parser.add_argument('--full', action='store_true', help='also full tuning with --deepspeed zero3, batch 1')
    parser.add_argument('--k', type=int, default=7, help='rejected answers per prompt')
    parser.add_argument('--image-side', type=int, help='pixels, a multiple of patch x merge (28 for Qwen2.5-VL, 32 for '
                        'Qwen3); (side / (patch x merge))^2 image tokens')
    parser.add_argument('--question-tokens', type=int)
    parser.add_argument('--answer-tokens', type=int, help='tokens per answer, <|im_end|> included')
    parser.add_argument('--warmup', type=int, default=2, help='optimizer steps left out of the timing')
    parser.add_argument('--steps', type=int, default=4, help='timed optimizer steps')
    parser.add_argument('--peak-tflops', type=float, help='peak dense FLOPS of one device for MFU; default '
                        '989 (H100 SXM bf16) on cuda, none (no MFU) on cpu')
    parser.add_argument('--timeout', type=int, default=1800, help='seconds per run')
    parser.add_argument('--resume', action='store_true', help='keep the runs already finished in OUT with the same '
                        'command (or that ran out of memory); run the others. To split the work over several calls')
    parser.add_argument('--build-only', action='store_true', help='build (or check) the model in --model-dir and '
                        'stop: scripts/gpu_check.sh builds it while other checks run')
    parser.add_argument('--fit-gib', type=float, default=78.0, help='the most reserved memory that counts as fitting '
                        'an 80 GB GPU (torch sees 79.2 GiB on an H100 80GB; the CUDA context takes about 1 GiB)')
    args = parser.parse_args(argv)
    args.scale = args.scale or ('7b' if args.device == 'cuda' else 'tiny')
    for key, value in SCALES[args.scale].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    vision = family_config(args.family).vision_config
    args.image_factor = vision.patch_size * vision.spatial_merge_size  # pixels per merged image token, per side
    if args.image_side is None:
        args.image_side = args.image_tokens * args.image_factor
    if args.peak_tflops is None and args.device == 'cuda':
        args.peak_tflops = 989.0
    args.out = args.out.absolute()
    args.model_dir = (args.model_dir or args.out / f'model-{args.family}-{args.scale}').absolute()
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(',')]
    if set(args.variants) - set(VARIANTS):
        parser.error(f'--variants: unknown {sorted(set(args.variants) - set(VARIANTS))}')
    if args.image_side % args.image_factor:
        parser.error(f'--image-side must be a multiple of {args.image_factor} for {args.family}')
    return args


def image_budget(args) -> dict:
    """The environment that gives the benchmark's image its (side / factor)^2 tokens under ms-swift's Qwen-VL
    preprocessing, whatever the family's patch size (IMAGE_MAX_TOKEN_NUM would otherwise come from the caller)."""
    tokens = (args.image_side // args.image_factor)**2
    return {'MAX_PIXELS': str(args.image_side**2), 'IMAGE_MAX_TOKEN_NUM': str(tokens)}


def child_env(**extra):
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get('PYTHONPATH')]))
    return {**os.environ, 'PYTHONPATH': pythonpath, 'HF_HUB_OFFLINE': '1', 'PYTHONUNBUFFERED': '1', **extra}


# ---------------------------------------------------------------------------------------------------------------
# model and rows
# ---------------------------------------------------------------------------------------------------------------
def build_model(args):
    """In a child process, so that the GPU memory of the build is freed before the runs."""
    for stale in args.model_dir.parent.glob(f'.{args.model_dir.name}.tmp-*'):  # a build cut short (16 GB for 7B)
        shutil.rmtree(stale, ignore_errors=True)
    if args.scale == '7b' and not (args.model_dir / 'model.safetensors').exists():
        free = shutil.disk_usage(args.model_dir.parent if args.model_dir.parent.exists() else args.out).free
        print(f'building the random 7B model in {args.model_dir} (~16.6 GB; {free / 1e9:.0f} GB free)', file=sys.stderr)
    dtype = 'bfloat16' if args.device == 'cuda' else 'float32'
    cmd = [sys.executable, str(BUILDER), str(args.model_dir), '--family', args.family]
    if args.scale != 'tiny':
        cmd += ['--preset', PRESETS[args.family], '--dtype', dtype, '--device', args.device]
    subprocess.run(cmd, check=True, env=child_env(), stdout=subprocess.DEVNULL)


def write_rows(args, num_prompts: int):
    """APO rows (one per prompt) and DPO rows (K per prompt) over the same prompts; one random image each."""
    import numpy as np
    from PIL import Image

    data = args.out / 'data'
    data.mkdir(parents=True, exist_ok=True)
    rng, pixel_rng = np.random.default_rng(0), np.random.default_rng(1)
    words = ('left right basal opacity effusion volume loss atelectasis pleural lung heart size normal mild severe '
             'consolidation silhouette costophrenic angle blunting').split()

    def text(n_chars):  # one token per character
        out = ''
        while len(out) < n_chars:
            out += str(rng.choice(words)) + ' '
        return out[:n_chars]

    apo, dpo = [], []
    for i in range(num_prompts):
        image = data / f'image{i}.png'
        if not image.exists() or Image.open(image).size != (args.image_side, args.image_side):
            pixels = pixel_rng.integers(0, 255, (args.image_side, args.image_side, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(image)
        question = text(args.question_tokens)
        answers = [text(args.answer_tokens - 2) for _ in range(args.k + 1)]  # + <|im_end|> and a newline
        messages = [{'role': 'user', 'content': '<image>' + question}, {'role': 'assistant', 'content': answers[0]}]
        apo.append({'messages': messages, 'rejected_response': answers[1:], 'images': [str(image)]})
        dpo += [{'messages': messages, 'rejected_response': rejected, 'images': [str(image)]}
                for rejected in answers[1:]]
    for name, rows in (('apo', apo), ('dpo', dpo)):
        (data / f'{name}.jsonl').write_text(''.join(json.dumps(row) + '\n' for row in rows))
    return data / 'apo.jsonl', data / 'dpo.jsonl'


def measure_shapes(args, dpo_data: Path):
    """P and R from ms-swift's own template encoding of the first pairwise row, and the image's patch count.

    In a child process, so that this process never holds a CUDA context while the runs measure memory.
    """
    code = ('import json, sys; from bench_7b_cli import encode_pair; '
            'print(json.dumps(encode_pair(sys.argv[1], sys.argv[2])))')
    proc = subprocess.run([sys.executable, '-c', code, str(args.model_dir), str(dpo_data)], capture_output=True,
                          text=True, cwd=Path(__file__).parent, env=child_env(**image_budget(args)))
    if proc.returncode != 0:
        sys.exit(f'encoding a row with ms-swift\'s template failed:\n{proc.stderr[-4000:]}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def encode_pair(model_dir: str, dpo_data: str):
    from swift.model import get_model_processor
    from swift.template import get_template

    with open(dpo_data, encoding='utf-8') as f:
        row = json.loads(f.readline())
    _, processor = get_model_processor(model_dir, load_model=False)
    template_type = json.loads((Path(model_dir) / 'args.json').read_text())['template']  # the builder names it
    template = get_template(processor, template_type=template_type)
    template.set_mode('rlhf')
    encoded = template.encode(row)
    labels = encoded['chosen_labels']
    prompt = next(i for i, label in enumerate(labels) if label != -100)
    if len(encoded['rejected_input_ids']) != len(labels):
        raise RuntimeError('chosen and rejected answers differ in length; the token counts assume equal ones')
    return {'P': prompt, 'R': len(labels) - prompt, 'patches': int(encoded['chosen_image_grid_thw'].prod())}


def model_sizes(model_dir: Path, lora_rank: int = 8):
    """Parameter counts by role, from the safetensors header, and the shapes the FLOPs need."""
    from safetensors import safe_open

    config = json.loads((model_dir / 'config.json').read_text())
    text, vision = config['text_config'], config['vision_config']
    counts = dict(total=0, lm=0, head=0, embed=0, vit=0, merger=0, lora=0)
    with safe_open(str(model_dir / 'model.safetensors'), 'pt') as f:
        for name in f.keys():
            shape = f.get_slice(name).get_shape()
            size = math.prod(shape)
            counts['total'] += size
            if 'visual' in name:
                counts['merger' if 'merger' in name else 'vit'] += size
            elif 'lm_head' in name:
                counts['head'] += size
            elif 'embed_tokens' in name:
                counts['embed'] += size
            elif '.layers.' in name:
                counts['lm'] += size
                if len(shape) == 2:  # every linear layer of the language model: LoRA's all-linear
                    counts['lora'] += lora_rank * sum(shape)
    if not counts['head']:  # tied embeddings
        counts['head'] = counts['embed']
    layer_types = text.get('layer_types') or ['full_attention'] * text['num_hidden_layers']
    windowed = 'window_size' in vision  # Qwen2.5-VL: windowed blocks but for fullatt_block_indexes
    return dict(counts, layers=layer_types.count('full_attention'), d_attn=text['num_attention_heads'] * (text.get(
        'head_dim') or text['hidden_size'] // text['num_attention_heads']), d_vit=vision['hidden_size'],
                vit_depth=vision['depth'],
                vit_full=len(vision['fullatt_block_indexes']) if windowed else vision['depth'],
                window_patches=(vision['window_size'] // vision['patch_size'])**2 if windowed else 0)


# ---------------------------------------------------------------------------------------------------------------
# token counts and FLOPs
# ---------------------------------------------------------------------------------------------------------------
def causal_pairs(length: int) -> int:
    return length * (length + 1) // 2


def layout(variant: str, P: int, R: int, K: int):
    """Per prompt, in one forward: LM tokens, answer tokens through the head, attended pairs, images."""
    if variant == 'a':  # prompt | K + 1 answers, each answer sees the prompt and itself
        pairs = causal_pairs(P) + (K + 1) * (R * P + causal_pairs(R))
        return dict(tokens=P + (K + 1) * R, head=(K + 1) * R, pairs=pairs, images=1)
    sequences = K + 1 if variant == 'b' else 2 * K
    return dict(tokens=sequences * (P + R), head=sequences * R, pairs=sequences * causal_pairs(P + R), images=sequences)


def flops_per_prompt(sizes, shape, patches: int, full: bool) -> float:
    lm = 2 * sizes['lm'] * shape['tokens'] + 2 * sizes['head'] * shape['head']
    attention = 4 * sizes['layers'] * sizes['d_attn'] * shape['pairs']
    windowed_blocks = sizes['vit_depth'] - sizes['vit_full']
    vit_pairs = patches**2 * sizes['vit_full'] + patches * sizes['window_patches'] * windowed_blocks
    vision = 2 * sizes['vit'] * patches + 2 * sizes['merger'] * patches / 4 + 4 * sizes['d_vit'] * vit_pairs
    forward = lm + attention + vision * shape['images']
    backward = (2 if full else 1) * lm + 2 * attention
    adapters = 0 if full else 6 * sizes['lora'] * shape['tokens']
    return 2 * forward + backward + adapters  # reference forward + policy forward + backward


# ---------------------------------------------------------------------------------------------------------------
# runs
# ---------------------------------------------------------------------------------------------------------------
def swift_command(args, variant, tuning, batch, data, run_dir):
    """The ``swift rlhf`` command line of one run and the environment variables it sets."""
    _, rlhf_type, env = VARIANTS[variant]
    cmd = [sys.executable, '-m', 'swift_plugin', 'rlhf', '--rlhf_type', rlhf_type, '--model', str(args.model_dir),
           '--check_model', 'false',
           '--dataset', str(data), '--split_dataset_ratio', '0', '--max_length', '4096',
           '--per_device_train_batch_size', str(batch), '--gradient_accumulation_steps', '1',
           '--max_steps', str(args.warmup + args.steps), '--learning_rate', '1e-5', '--beta', '0.1',
           '--attn_impl', 'sdpa', '--gradient_checkpointing', 'true', '--save_strategy', 'no', '--report_to', 'none',
           '--logging_steps', '1', '--seed', '42', '--output_dir', str(run_dir), '--add_version', 'false',
           '--external_plugins', str(PLUGIN), '--callbacks', 'step_stats']
    cmd += ['--tuner_type', 'lora', '--lora_rank', '8', '--lora_alpha', '32', '--target_modules', 'all-linear'
            ] if tuning == 'lora' else ['--tuner_type', 'full', '--deepspeed', 'zero3']
    if args.device == 'cuda':
        cmd += ['--torch_dtype', 'bfloat16', '--dataloader_num_workers', '2']
    else:
        cmd += ['--torch_dtype', 'float32', '--fp16', 'false', '--bf16', 'false', '--dataloader_num_workers', '0']
    env = {**image_budget(args), **env}
    if tuning == 'full':
        env.update(NPROC_PER_NODE='1', MASTER_PORT=os.environ.get('MASTER_PORT', '29561'))
    return cmd, env


def run_variant(args, name, variant, tuning, batch, data):
    run_dir, log_path = args.out / 'runs' / name, args.out / 'logs' / f'{name}.log'
    cmd, env = swift_command(args, variant, tuning, batch, data, run_dir)
    result = {'name': name, 'variant': variant, 'label': VARIANTS[variant][0], 'tuning': tuning, 'batch': batch,
              'command': cmd, 'env': env}
    saved = run_dir / 'result.json'
    if args.resume and saved.exists():
        previous = json.loads(saved.read_text())
        if (previous['command'], previous['env']) == (cmd, env) and previous['status'].startswith(('ok', 'did not')):
            return {**previous, 'resumed': True}
    shutil.rmtree(run_dir, ignore_errors=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with open(log_path, 'w', encoding='utf-8') as log:
        log.write(' '.join(f'{k}={v}' for k, v in env.items()) + ' ' + ' '.join(cmd) + '\n\n')
        log.flush()
        # Its own session: swift re-executes itself (under torchrun for DeepSpeed), and a timed-out or
        # interrupted run must not leave a grandchild holding the GPU.
        proc = subprocess.Popen(cmd, env=child_env(**env), stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                start_new_session=True)
        try:
            returncode = proc.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            returncode = None
        finally:
            if proc.poll() is None:  # timed out or interrupted; not yet reaped, so the group id is still ours
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    result['run_seconds'] = round(time.time() - start, 1)
    output = log_path.read_text(encoding='utf-8', errors='replace')
    if returncode != 0:
        result['status'] = failure_status(returncode, output, args.timeout)
    else:
        try:
            result.update(read_run(args, run_dir, variant, output))
        except (OSError, ValueError, KeyError) as e:
            result['status'] = f'failed: its logs could not be read ({type(e).__name__}: {e})'
    run_dir.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(result, indent=2))
    return result


def failure_status(returncode, output: str, timeout: int) -> str:
    if any(pattern in output for pattern in OOM_PATTERNS):
        return 'did not fit (out of memory)'
    if returncode is None:
        return f'timed out after {timeout} s'
    if returncode in (-9, 137) or 'exitcode  : -9' in output or 'Signals.SIGKILL' in output:
        return 'killed (SIGKILL: host memory?)'
    errors = [line.strip() for line in output.splitlines() if re.search(r'(Error|Exception)\b', line)]
    return f'failed (exit {returncode}): {errors[-1][:200] if errors else "see its log"}'


def read_run(args, run_dir: Path, variant: str, output: str):
    """Per-step times and memory of a finished run."""
    steps = [json.loads(line) for line in (run_dir / 'step_stats.jsonl').read_text().splitlines()]
    logs = [json.loads(line) for line in (run_dir / 'logging.jsonl').read_text().splitlines()]
    logs = [line for line in logs if 'loss' in line]
    timed = [s for s in steps if s['step'] > args.warmup]
    if len(steps) != args.warmup + args.steps or not timed:
        return {'status': f'failed: {len(steps)} steps logged, expected {args.warmup + args.steps}'}
    # ms-swift logs the mean seconds per step since the start; differences give each step's wall time.
    elapsed = [int(line['global_step/max_steps'].split('/')[0]) * line['train_speed(s/it)'] for line in logs]
    wall = [b - a for a, b in zip([0.0] + elapsed, elapsed)][args.warmup:]
    result = {
        'status': 'ok',
        'seconds_per_step': statistics.median(s['seconds'] for s in timed),
        'step_seconds': [round(s['seconds'], 4) for s in steps],
        'wall_seconds_per_step': statistics.median(wall),
        'first_loss': logs[0]['loss'],
        'last_loss': logs[-1]['loss'],
        'swift_memory_gib': max((line.get('memory(GiB)', 0) for line in logs), default=0),
    }
    last = steps[-1]
    if 'max_allocated' in last:
        result.update(peak_allocated=max(s['max_allocated'] for s in steps),
                      peak_reserved=max(s['max_reserved'] for s in steps), device_name=last['device_name'],
                      device_total=last['device_total'])
    else:
        result['peak_rss'] = max(s['max_rss'] for s in steps)
    fast = [line in output for line in FAST_PATH_LINES]
    kernel = re.search(r'APO shared-prefix kernel: (.*)\.$', output, re.MULTILINE)
    if kernel:
        result['prefix_kernel'] = kernel.group(1)
    if variant == 'a' and not all(fast):
        result['status'] = 'ok, but a fast path fell back (see its log)'
    if variant != 'a' and any(fast):
        result['status'] = 'ok, but a fast path was used'
    return result


# ---------------------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------------------
def summarise(args, results, shapes, sizes):
    P, R, K = shapes['P'], shapes['R'], args.k
    useful_tokens = P + (K + 1) * R
    for r in results:
        if not r['status'].startswith('ok'):
            continue
        shape = layout(r['variant'], P, R, K)
        rows_per_prompt = K if r['variant'] == 'c' else 1
        seconds = r['seconds_per_step'] * rows_per_prompt / r['batch']
        full = r['tuning'] == 'full'
        r.update(seconds_per_prompt=seconds, tokens_per_prompt=shape['tokens'], useful_tokens_per_prompt=useful_tokens,
                 tokens_per_second=shape['tokens'] / seconds, useful_tokens_per_second=useful_tokens / seconds,
                 model_flops_per_prompt=flops_per_prompt(sizes, shape, shapes['patches'], full),
                 useful_flops_per_prompt=flops_per_prompt(sizes, layout('a', P, R, K), shapes['patches'], full))
        if args.peak_tflops:
            r['mfu'] = r['model_flops_per_prompt'] / seconds / (args.peak_tflops * 1e12)
            r['useful_mfu'] = r['useful_flops_per_prompt'] / seconds / (args.peak_tflops * 1e12)
    by_key = {(r['variant'], r['tuning'], r['batch']): r for r in results}
    ratios, checks = [], []
    for (variant, tuning, batch), r in by_key.items():
        if variant != 'a':
            continue
        for other in 'cb':
            o = by_key.get((other, tuning, batch))
            if o is not None and 'seconds_per_prompt' in r and 'seconds_per_prompt' in o:
                ratios.append({'ratio': f'(a)/({other})', 'tuning': tuning, 'batch': batch,
                               'time': r['seconds_per_prompt'] / o['seconds_per_prompt'],
                               'peak_memory': peak(r) / peak(o) if peak(o) else None})
    for ratio in ratios:
        if ratio['ratio'] == '(a)/(c)' and ratio['tuning'] == 'lora':
            checks.append({'goal': f'(a)/(c) <= 0.25 in time per prompt, LoRA, batch {ratio["batch"]}',
                           'passed': ratio['time'] <= 0.25, 'value': f'{ratio["time"]:.3f}'})
    a2 = by_key.get(('a', 'lora', 2))
    if a2 is not None:
        fits, value = a2['status'].startswith('ok'), a2['status']
        if fits and 'peak_reserved' in a2:
            fits = a2['peak_reserved'] <= args.fit_gib * GIB
            value = (f'peak {a2["peak_allocated"] / GIB:.1f} GiB allocated, {a2["peak_reserved"] / GIB:.1f} GiB '
                     f'reserved on a {a2["device_total"] / GIB:.1f} GiB {a2["device_name"]}; '
                     f'limit {args.fit_gib:g} GiB')
        elif fits:
            value = 'it ran; on a CPU this says nothing about GPU memory'
        checks.append({'goal': '(a) LoRA, per-device batch 2 fits an 80 GB GPU', 'passed': fits, 'value': value})
    return ratios, checks


def peak(r):
    return r.get('peak_allocated', r.get('peak_rss', 0))


def markdown(args, results, ratios, checks, shapes, sizes) -> str:
    P, R, K = shapes['P'], shapes['R'], args.k
    device = next((r['device_name'] for r in results if 'device_name' in r), args.device)
    cuda = any('peak_allocated' in r for r in results)
    lines = [
        f'Model: {FAMILIES[args.family].title} ({args.scale}), {sizes["total"] / 1e9:.3g}e9 random parameters, '
        f'{"bf16" if args.device == "cuda" else "float32"}, sdpa, gradient checkpointing; device: {device}.',
        f'Rows: P = {P} prompt tokens ({shapes["patches"] // 4} image tokens), K = {K} rejected + 1 chosen answers '
        f'of R = {R} tokens; useful tokens per prompt P + (K+1)R = {P + (K + 1) * R}.',
        f'Timing: median of {args.steps} optimizer steps after {args.warmup} warm-up steps; s/prompt = s/step x rows '
        f'per prompt (K for DPO) / batch.',
        '',
        f'| variant | tuning | batch | status | peak {"allocated / reserved GiB" if cuda else "RSS GiB"} | s/step | '
        f's/prompt | LM tokens/prompt | tokens/s | useful tokens/s | MFU | useful MFU |',
        '|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|',
    ]
    for r in results:
        ok = 'seconds_per_prompt' in r
        memory = ''
        if 'peak_allocated' in r:
            memory = f'{r["peak_allocated"] / GIB:.1f} / {r["peak_reserved"] / GIB:.1f}'
        elif 'peak_rss' in r:
            memory = f'{r["peak_rss"] / GIB:.2f}'
        cells = [f'({r["variant"]}) {r["label"]}', r['tuning'], str(r['batch']), r['status'], memory]
        if ok:
            mfu = (f'{100 * r["mfu"]:.1f}%', f'{100 * r["useful_mfu"]:.1f}%') if 'mfu' in r else ('n/a', 'n/a')
            cells += [f'{r["seconds_per_step"]:.3f}', f'{r["seconds_per_prompt"]:.3f}', f'{r["tokens_per_prompt"]:,}',
                      f'{r["tokens_per_second"]:,.0f}', f'{r["useful_tokens_per_second"]:,.0f}', *mfu]
        else:
            cells += [''] * 7
        lines.append('| ' + ' | '.join(cells) + ' |')
    lines += ['', '| ratio | tuning | batch | time per prompt | peak memory |', '|---|---|---:|---:|---:|']
    for ratio in ratios:
        memory = f'{ratio["peak_memory"]:.3f}' if ratio['peak_memory'] is not None else ''
        lines.append(f'| {ratio["ratio"]} | {ratio["tuning"]} | {ratio["batch"]} | {ratio["time"]:.3f} | {memory} |')
    kernels = sorted({r['prefix_kernel'] for r in results if 'prefix_kernel' in r})
    if kernels:
        lines += ['', f'Shared-prefix kernel (from the run logs): {"; ".join(kernels)}.']
    lines += ['', 'Goals:']
    for check in checks:
        lines.append(f'- {check["goal"]}: {"PASS" if check["passed"] else "FAIL"} ({check["value"]})')
    if args.peak_tflops:
        lines.append(f'\nMFU against {args.peak_tflops:g} TFLOPS per device (--peak-tflops); model FLOPs as in the '
                     f'script\'s docstring (no recomputation counted).')
    return '\n'.join(lines) + '\n'


def main(argv=None):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    args.out.mkdir(parents=True, exist_ok=True)
    build_model(args)
    if args.build_only:
        return 0
    apo_data, dpo_data = write_rows(args, (args.warmup + args.steps) * max(args.batch_sizes))
    shapes = measure_shapes(args, dpo_data)
    sizes = model_sizes(args.model_dir)
    print(f'P = {shapes["P"]}, R = {shapes["R"]}, K = {args.k}; model {args.model_dir}', file=sys.stderr)

    plan = [(variant, 'lora', batch) for batch in args.batch_sizes for variant in args.variants]
    if args.full:
        plan += [(variant, 'full', 1) for variant in args.variants]
    results = []
    for variant, tuning, batch in plan:
        name = f'{variant}-{tuning}-b{batch}'
        full_a = [r['status'] for r in results if r['name'] == 'a-full-b1']
        if tuning == 'full' and full_a and not full_a[0].startswith('ok'):  # (a) needs the least memory
            results.append({'name': name, 'variant': variant, 'label': VARIANTS[variant][0], 'tuning': tuning,
                            'batch': batch, 'status': 'skipped: (a) full did not run'})
            continue
        print(f'{name} ...', file=sys.stderr, flush=True)
        results.append(run_variant(args, name, variant, tuning, batch, dpo_data if variant == 'c' else apo_data))
        took = 'kept from an earlier call' if results[-1].get('resumed') else f'{results[-1]["run_seconds"]} s'
        print(f'  {results[-1]["status"]} ({took})', file=sys.stderr, flush=True)
        report = write_report(args, results, shapes, sizes)  # after every run: an interrupted call leaves a table

    print(report)
    print(f'written: {args.out / "results.md"}, {args.out / "results.json"}; logs in {args.out / "logs"}')
    failed = [r['name'] for r in results if r['status'].startswith(('failed', 'timed out', 'killed'))]
    if failed:
        print(f'runs that failed for another reason than memory: {failed}', file=sys.stderr)
    return 1 if failed else 0


def write_report(args, results, shapes, sizes) -> str:
    ratios, checks = summarise(args, results, shapes, sizes)
    report = markdown(args, results, ratios, checks, shapes, sizes)
    (args.out / 'results.md').write_text(report)
    (args.out / 'results.json').write_text(json.dumps({
        'args': {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        'shapes': shapes, 'model_sizes': sizes, 'results': results, 'ratios': ratios, 'goals': checks}, indent=2))
    return report


def _terminate(signum, frame):
    raise SystemExit(128 + signum)  # unwinds through run_variant, which kills the running swift's process group


if __name__ == '__main__':
    sys.exit(main())
