"""Consensus-stage throughput: studies per hour on one GPU, vLLM vs transformers, and a full CXR-MAX estimate.

One command (repository root, after ``bash scripts/setup.sh`` and ``bash scripts/setup.sh --infer``; one GPU):

    .venv/bin/python benchmarks/bench_consensus.py --out results/consensus                  # 7B, both backends
    .venv/bin/python benchmarks/bench_consensus.py --scale tiny --device cpu --backends transformers \\
        --studies 4 --answer-tokens 16 --out /tmp/bc                                         # the same, tiny, CPU

What it does: builds Qwen2.5-VL-7B-Instruct's architecture with random weights (tools/tiny_qwen2_5_vl.py
``--preset qwen2.5-vl-7b``, reused when present; ``--scale tiny``: the tests' tiny model); writes ``--studies``
consensus requests made by ``python -m data_prep consensus`` from the bundled sample, each with a random
868 x 868 image (961 image tokens) and its text repeated up to ``--prompt-chars`` (2,500: with the image about
the 3,500 tokens of a CXR-MAX prompt; the built tokenizer is byte-level) and a distinct first line (no prefix-cache reuse between studies); runs one ``swift infer`` per
backend, greedy, ``--max_new_tokens --answer-tokens``: vLLM from the inference environment (INFER_PYTHON or
.venv-infer), transformers from this one with ``--max_batch_size --infer-batch``. ms-swift has no ignore-EOS
switch; a random-weight model almost never samples its end token, and the generated tokens are reported.

Measured (``OUT/results.json``, logs in ``OUT/logs/``): ms-swift's InferStats (prompt and generated tokens,
runtime from the first request, model loading excluded), studies/hour = samples/s x 3600, and the hours a
full run of ``--full-studies`` (24,426) would take on ``--gpus`` (4) GPUs, one engine per GPU.
"""
import argparse
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from evaluation.swift_infer import infer_python, swift_executable  # noqa: E402

SCALES = {'7b': ['--preset', 'qwen2.5-vl-7b'], 'tiny': []}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', type=Path, required=True)
    parser.add_argument('--scale', choices=list(SCALES), default='7b')
    parser.add_argument('--device', choices=['cuda', 'cpu'], default='cuda')
    parser.add_argument('--model-dir', type=Path, help='default: OUT/model-SCALE (built once, then reused)')
    parser.add_argument('--backends', default='vllm,transformers')
    parser.add_argument('--studies', type=int, default=256, help='requests per backend')
    parser.add_argument('--answer-tokens', type=int, default=512)
    parser.add_argument('--prompt-chars', type=int, default=2500,
                        help='text characters per prompt (the tokenizer is byte-level: one character, one token)')
    parser.add_argument('--infer-batch', type=int, default=16, help='transformers --max_batch_size')
    parser.add_argument('--full-studies', type=int, default=24426)
    parser.add_argument('--gpus', type=int, default=4)
    return parser.parse_args(argv)


def env(**extra):
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get('PYTHONPATH')]))
    return {**os.environ, 'PYTHONPATH': pythonpath, 'HF_HUB_OFFLINE': '1', 'PYTHONUNBUFFERED': '1',
            'MAX_PIXELS': str(868 * 868), **extra}


def build_model(args) -> Path:
    model = args.model_dir or args.out / f'model-{args.scale}'
    if not (model / 'config.json').exists():
        cmd = [sys.executable, str(REPO / 'tools' / 'tiny_qwen2_5_vl.py'), str(model), *SCALES[args.scale]]
        if args.scale != 'tiny':
            cmd += ['--dtype', 'bfloat16' if args.device == 'cuda' else 'float32', '--device', args.device]
        subprocess.run(cmd, check=True, env=env(), stdout=subprocess.DEVNULL)
    return model


def write_requests(args) -> Path:
    sample = args.out / 'sample_requests.jsonl'
    subprocess.run([sys.executable, '-m', 'data_prep', 'consensus', '--dataset',
                    str(REPO / 'sample_data' / 'cxr_max_sample.jsonl'), '--out', str(sample)],
                   check=True, env=env(), stdout=subprocess.DEVNULL)
    base = [json.loads(line) for line in sample.read_text().splitlines()]
    rng = np.random.default_rng(0)
    requests = args.out / 'requests.jsonl'
    (args.out / 'images').mkdir(exist_ok=True)
    with open(requests, 'w') as f:
        for i in range(args.studies):
            row = base[i % len(base)]
            image = args.out / 'images' / f'{i}.png'
            Image.fromarray(rng.integers(0, 256, (868, 868, 3), dtype=np.uint8)).save(image)
            text = row['messages'][0]['content'].replace('<image>', '')
            text = (f'Study {i}.\n' + text * (args.prompt_chars // len(text) + 1))[:args.prompt_chars]
            f.write(json.dumps({'messages': [{'role': 'user', 'content': '<image>' + text}],
                                'images': [str(image)]}) + '\n')
    return requests


def run_backend(args, backend: str, model: Path, requests: Path) -> dict:
    python = infer_python() if backend == 'vllm' else sys.executable
    cmd = [swift_executable(python), 'infer', '--model', str(model), '--model_type', 'qwen2_5_vl', '--template',
           'qwen2_5_vl', '--infer_backend', backend, '--val_dataset', str(requests), '--result_path',
           str(args.out / f'{backend}.results.jsonl'), '--max_new_tokens', str(args.answer_tokens),
           '--temperature', '0', '--write_batch_size', '-1',
           '--torch_dtype', 'bfloat16' if args.device == 'cuda' else 'float32']
    if backend == 'transformers':
        cmd += ['--max_batch_size', str(args.infer_batch)]
    else:
        cmd += ['--vllm_max_model_len', '8192', '--vllm_gpu_memory_utilization', '0.9']
    (args.out / f'{backend}.results.jsonl').unlink(missing_ok=True)
    print(f'{backend}: {" ".join(cmd)}', file=sys.stderr, flush=True)
    log = args.out / 'logs' / f'{backend}.log'
    with open(log, 'w') as f:
        proc = subprocess.run(cmd, env=env(), stdout=f, stderr=subprocess.STDOUT)
    stats = [line for line in log.read_text().splitlines() if "'samples/s'" in line]
    if proc.returncode != 0 or not stats:
        return {'error': f'exit {proc.returncode}, see {log}'}
    metric = ast.literal_eval(stats[-1][stats[-1].index('{'):])
    per_hour = metric['samples/s'] * 3600
    return {**metric, 'python': python, 'studies_per_hour': per_hour,
            'prompt_tokens_per_study': metric['num_prompt_tokens'] / metric['num_samples'],
            'generated_tokens_per_study': metric['num_generated_tokens'] / metric['num_samples'],
            f'full_run_hours_on_{args.gpus}_gpus': args.full_studies / (per_hour * args.gpus)}


def main(argv=None):
    args = parse_args(argv)
    (args.out / 'logs').mkdir(parents=True, exist_ok=True)
    model = build_model(args)
    requests = write_requests(args)
    results = {'scale': args.scale, 'studies': args.studies, 'answer_tokens': args.answer_tokens,
               'backends': {b: run_backend(args, b, model, requests) for b in args.backends.split(',')}}
    (args.out / 'results.json').write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == '__main__':
    main()
