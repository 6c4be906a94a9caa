#!/usr/bin/env python
"""Which model families APO trains, and with which fast paths: runs, then the table of docs/models.md.

    python tools/family_coverage.py run --family qwen3-vl --out DIR    # one process: every run of one family
    python tools/family_coverage.py table DIR --out docs/models.md     # the table from the runs' records

``run`` builds the family's tiny random model (tools/tiny_models.py) and drives ms-swift's own entry points
(``rlhf_main``, ``sft_main``, ``infer_main``: what ``swift rlhf / sft / infer`` run in their child process) one after
the other in this process, on the CPU in float32, with no --model_type or --template (ms-swift detects both):

1. ``swift rlhf --rlhf_type apo`` with LoRA for two steps on one batch of two rows with K = 2 and 1 rejected answers
   (and an image each for a vision family): once with the fast paths as they choose themselves (the default), once with
   ``--apo_shared_prefix false --apo_lean_logps false`` (the plain path: K + 1 full sequences, full logits);
2. the same with full tuning (the reference model a copy) for the Qwen families;
3. ``swift sft`` with LoRA on the chosen answers, saving the adapter;
4. ``swift infer`` with that adapter on the prompts (greedy, 8 new tokens).

It writes ``DIR/FAMILY.json``: per APO run, whether each fast path was in use or the reason it logged for not being
used, and the largest relative difference between the two runs' logged numbers (loss, rewards, log-probs, logits,
step by step); the SFT losses and the number of answers inference wrote. ``table`` renders the records as Markdown.
Everything that fails is recorded with its error, so the table says what does not work.
"""
import argparse
import json
import logging
import math
import os
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'tools'))
from tiny_models import FAMILIES, build_model  # noqa: E402

KS = [2, 1]  # rejected answers per row: one batch of both rows, 2 + 3 sequences
STEPS = 2
TOLERANCE = 1e-4  # relative, float32
BETA = 0.1
COMPARED = ('loss', 'rewards/', 'logps/', 'logits/')
FAST_PATH_LINES = {
    'shared_prefix': ('APO shared-prefix forward in use.', 'APO shared-prefix forward not used: ', '; running the plain'),
    'lean_logps': ('APO lean log-probs in use.', 'APO lean log-probs not used: ', '; computing full logits.'),
}


def mean_log_1_plus_k() -> float:
    """APO's first loss on these rows: log(1 + K) per row while the policy is the reference."""
    return sum(math.log1p(k) for k in KS) / len(KS)


CPU_FLAGS = ['--check_model', 'false', '--report_to', 'none', '--torch_dtype', 'float32', '--fp16', 'false', '--bf16',
             'false', '--dataloader_num_workers', '0', '--logging_steps', '1', '--seed', '42', '--add_version', 'false',
             '--split_dataset_ratio', '0', '--gradient_accumulation_steps', '1']


def write_rows(data: Path, vision: bool) -> Dict[str, Path]:
    """APO rows (mixed K), their SFT rows (the chosen answers) and inference rows (the prompts)."""
    from PIL import Image
    data.mkdir(parents=True, exist_ok=True)
    apo, sft, infer = [], [], []
    for i, k in enumerate(KS):
        prompt = ('<image>' if vision else '') + f'Findings of study {i}?'
        row = {'messages': [{'role': 'user', 'content': prompt},
                            {'role': 'assistant', 'content': f'C{i}: basal opacity.'}],
               'rejected_response': [f'T{j}: effusion {"?" * j}' for j in range(k)],
               'rejected_sources': [f'T{j}' for j in range(k)]}
        if vision:
            image = data / f'study{i}.png'
            Image.new('RGB', (56, 56), (60 * i, 120, 200)).save(image)
            row['images'] = [str(image)]
        apo.append(row)
        sft.append({key: row[key] for key in ('messages', 'images') if key in row})
        infer.append({**sft[-1], 'messages': row['messages'][:1]})
    paths = {}
    for name, rows in (('apo', apo), ('sft', sft), ('infer', infer)):
        paths[name] = data / f'{name}.jsonl'
        paths[name].write_text(''.join(json.dumps(r) + '\n' for r in rows))
    return paths


class _Captured(logging.Handler):
    """The APO plugin's fast-path messages of one run."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.messages: List[str] = []

    def emit(self, record):
        message = record.getMessage()
        if message.startswith('APO '):
            self.messages.append(message)


def _run(main, argv: List[str]) -> List[str]:
    """One ms-swift pipeline in this process; the APO messages it logged. ms-swift logs an ``*_once`` message
    once per process, so its record of them is cleared for each run."""
    from swift.utils import get_logger
    from swift.utils import logger as swift_logger
    swift_logger.info_set.clear()
    swift_logger.warning_set.clear()
    handler = _Captured()
    logger = get_logger()
    logger.addHandler(handler)
    try:
        main(argv)
    finally:
        logger.removeHandler(handler)
    return handler.messages


def fast_path_status(messages: List[str]) -> Dict[str, str]:
    """'in use', or the reason the run logged for not using it, per fast path."""
    status = {}
    for path, (used, unused, tail) in FAST_PATH_LINES.items():
        if used in messages:
            status[path] = 'in use'
        else:
            reasons = [m[len(unused):].split(tail)[0] for m in messages if m.startswith(unused)]
            status[path] = reasons[0] if reasons else 'not reported'
    kernel = [m[len('APO shared-prefix kernel: '):].rstrip('.') for m in messages
              if m.startswith('APO shared-prefix kernel: ')]
    if kernel and status['shared_prefix'] == 'in use':
        status['kernel'] = kernel[0]
    return status


def read_logs(run_dir: Path) -> List[Dict[str, Any]]:
    lines = [json.loads(line) for line in (run_dir / 'logging.jsonl').read_text().splitlines()]
    return [line for line in lines if 'loss' in line]


def relative_differences(fast: List[Dict[str, Any]], plain: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The largest relative difference of the compared numbers, and whether all are within TOLERANCE (relative,
    with an absolute floor of 1e-6 for numbers near 0, such as the first step's reward margins). A reward is beta
    times the difference of two float32 sums of log-probs, so it is compared to float32's rounding of those sums."""
    if len(fast) != len(plain) or not fast:
        return {'equal': False, 'max_rel_diff': None, 'why': f'{len(fast)} against {len(plain)} logged steps'}
    worst, equal, compared = 0.0, True, 0
    for a, b in zip(fast, plain):
        logps = max(abs(float(b[k])) for k in ('logps/chosen', 'logps/rejected'))
        for key in (k for k in b if k.startswith(COMPARED)):
            compared += 1
            x, y = float(a[key]), float(b[key])
            rounding = 8 * 1.2e-7 * BETA * logps if key.startswith('rewards/') else 0.0
            equal &= abs(x - y) <= TOLERANCE * abs(y) + max(1e-6, rounding)
            if abs(y) > 1e-3:
                worst = max(worst, abs(x - y) / abs(y))
    return {'equal': bool(equal and compared), 'max_rel_diff': worst, 'numbers_compared': compared}


def apo_runs(model: str, paths: Dict[str, Path], out: Path, tuning: str, flags: List[str]) -> Dict[str, Any]:
    from swift.pipelines import rlhf_main
    common = ['--rlhf_type', 'apo', '--model', model, '--dataset', str(paths['apo']), '--tuner_type', tuning,
              '--per_device_train_batch_size', str(len(KS)), '--max_steps', str(STEPS), '--save_strategy', 'no', '--beta',
              str(BETA), *CPU_FLAGS, *flags]
    common += ['--learning_rate', '5e-3', '--lora_rank', '8'] if tuning == 'lora' else ['--learning_rate', '1e-3']
    result = {}
    logs = {}
    for name, extra in (('fast', []), ('plain', ['--apo_shared_prefix', 'false', '--apo_lean_logps', 'false'])):
        run_dir = out / f'apo-{tuning}-{name}'
        started = time.time()
        messages = _run(rlhf_main, common + extra + ['--output_dir', str(run_dir)])
        result[f'{name}_seconds'] = round(time.time() - started, 1)
        logs[name] = read_logs(run_dir)
        if name == 'fast':
            result.update(fast_path_status(messages))
            result['detected'] = _detected(run_dir)
        else:  # the plain run must not have used a fast path
            result['plain_used'] = [m for m in messages if m.endswith(' in use.')]
    result.update(relative_differences(logs['fast'], logs['plain']))
    result['losses'] = {name: [line['loss'] for line in lines] for name, lines in logs.items()}
    return result


def _detected(run_dir: Path) -> Dict[str, str]:
    saved = json.loads((run_dir / 'args.json').read_text())
    return {'model_type': saved['model_type'], 'template': saved['template']}


def sft_and_infer(model: str, paths: Dict[str, Path], out: Path, flags: List[str]) -> Dict[str, Any]:
    from swift.pipelines import infer_main, sft_main
    run_dir = out / 'sft'
    _run(sft_main, ['--model', model, '--dataset', str(paths['sft']), '--tuner_type', 'lora', '--lora_rank', '8',
                    '--learning_rate', '5e-3', '--per_device_train_batch_size', str(len(KS)), '--max_steps', str(STEPS),
                    '--save_strategy', 'steps', '--save_steps', str(STEPS), '--output_dir', str(run_dir), *CPU_FLAGS,
                    *flags])
    sft = {'losses': [line['loss'] for line in read_logs(run_dir)]}
    sft['ok'] = len(sft['losses']) == STEPS and all(math.isfinite(x) for x in sft['losses'])
    result_path = out / 'infer.jsonl'
    _run(infer_main, ['--adapters', str(run_dir / f'checkpoint-{STEPS}'), '--val_dataset', str(paths['infer']),
                      '--result_path', str(result_path), '--max_new_tokens', '8', '--temperature', '0',
                      '--max_batch_size', str(len(KS)), '--torch_dtype', 'float32', '--seed', '42'])
    answers = [json.loads(line) for line in result_path.read_text().splitlines()]
    infer = {'answers': sum(isinstance(a.get('response'), str) for a in answers), 'prompts': len(KS)}
    infer['ok'] = infer['answers'] == len(KS)
    return {'sft': sft, 'infer': infer}


def run_family(name: str, out: Path, model: Optional[str] = None) -> Dict[str, Any]:
    family = FAMILIES[name]
    os.environ.update(family.tiny_env, HF_HUB_OFFLINE='1')
    out.mkdir(parents=True, exist_ok=True)
    work = out / name
    model = model or str(build_model(work / 'model', family))
    paths = write_rows(work / 'data', family.vision)
    runs = work / 'runs'
    shutil.rmtree(runs, ignore_errors=True)  # an earlier call's outputs (ms-swift would resume or append to them)
    record: Dict[str, Any] = {'family': name, 'title': family.title, 'model_type': family.model_type,
                              'template': family.template, 'architecture': family.architecture,
                              'hub_example': family.hub_example, 'vision': family.vision, 'errors': {}}
    started = time.time()
    flags = list(family.lora_flags)
    record['lora_flags'] = flags
    stages = [('lora', lambda: apo_runs(model, paths, runs, 'lora', flags))]
    if family.qwen:
        stages.append(('full', lambda: apo_runs(model, paths, runs, 'full', [])))
    stages.append(('sft_infer', lambda: sft_and_infer(model, paths, runs, flags)))
    for stage, run in stages:
        try:
            result = run()
        except Exception as error:  # recorded: the table says what does not work
            record['errors'][stage] = f'{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ""}'
            traceback.print_exc()
            continue
        if stage == 'sft_infer':
            record.update(result)
        else:
            record.setdefault('apo', {})[stage] = result
    record['seconds'] = round(time.time() - started, 1)
    _write_atomically(out / f'{name}.json', json.dumps(record, indent=2) + '\n')
    return record


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(text)
    tmp.replace(path)


# ----------------------------------------------------------------------------------------------------------------
# the table
# ----------------------------------------------------------------------------------------------------------------
def _fast_path_cell(run: Optional[Dict[str, Any]], path: str) -> str:
    if run is None:
        return 'not run'
    status = run[path]
    if status != 'in use':
        return f'off: {status}'
    return 'in use' if run['equal'] else '**in use, differs from the plain path**'


def _apo_cell(run: Optional[Dict[str, Any]]) -> str:
    if run is None:
        return 'not run'
    return 'yes, fast = plain' if run['equal'] else f'**fast != plain** ({run.get("why") or run.get("max_rel_diff")})'


def render_table(records: List[Dict[str, Any]]) -> str:
    order = list(FAMILIES)
    records = sorted(records, key=lambda r: order.index(r['family']) if r['family'] in order else len(order))
    lines = [
        '| family | `--model_type` / `--template` (detected) | APO LoRA | APO full | shared prefix | lean log-probs | '
        '`swift sft` / `swift infer` |',
        '|---|---|---|---|---|---|---|',
    ]
    for r in records:
        apo = r.get('apo', {})
        lora, full = apo.get('lora'), apo.get('full')
        detected = (lora or {}).get('detected', {})
        types = f'`{detected.get("model_type", r["model_type"])}` / `{detected.get("template", r["template"])}`'
        if r.get('lora_flags'):
            types += f'; LoRA with `{" ".join(r["lora_flags"])}`'
        sft, infer = r.get('sft', {}), r.get('infer', {})
        sft_cell = ('yes' if sft.get('ok') else 'no') + ' / ' + (
            f'yes ({infer["answers"]}/{infer["prompts"]} answers)' if infer.get('ok') else 'no')
        errors = '; '.join(f'{stage}: {error}' for stage, error in r['errors'].items())
        full_cell = _apo_cell(full) if r['family'] in FAMILIES and FAMILIES[r['family']].qwen else 'not run (not a Qwen)'
        cells = [f'{r["title"]} ({r["architecture"]}{", images" if r["vision"] else ", text"})', types, _apo_cell(lora),
                 full_cell, _fast_path_cell(lora, 'shared_prefix'), _fast_path_cell(lora, 'lean_logps'),
                 sft_cell + (f' **errors: {errors}**' if errors else '')]
        lines.append('| ' + ' | '.join(c.replace('|', '\\|') for c in cells) + ' |')
    return '\n'.join(lines) + '\n'


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest='command', required=True)
    run = commands.add_parser('run', help='every run of one family, in this process; writes OUT/FAMILY.json')
    run.add_argument('--family', choices=list(FAMILIES), required=True)
    run.add_argument('--out', type=Path, required=True)
    run.add_argument('--model', help='an existing model directory of the family instead of a tiny one')
    table = commands.add_parser('table', help='the Markdown table of the records in the given folders')
    table.add_argument('folders', nargs='+', type=Path)
    table.add_argument('--out', type=Path, help="write it into this Markdown file, between its table markers (else "
                       'print it)')
    args = parser.parse_args(argv)
    if args.command == 'run':
        record = run_family(args.family, args.out, args.model)
        print(json.dumps({k: record.get(k) for k in ('family', 'errors', 'seconds')}))
        return 1 if record['errors'] else 0
    records = [json.loads(p.read_text()) for folder in args.folders for p in sorted(folder.glob('*.json'))]
    if not records:
        parser.error(f'no records (FAMILY.json) in {", ".join(map(str, args.folders))}')
    text = render_table(records)
    if args.out:
        write_table(args.out, text)
    else:
        print(text, end='')
    return 0


TABLE_BEGIN, TABLE_END = '<!-- table: tools/family_coverage.py -->\n', '<!-- end of table -->'


def table_in(document: str) -> str:
    """The table between the markers of a Markdown document."""
    return document[document.index(TABLE_BEGIN) + len(TABLE_BEGIN):document.index(TABLE_END)]


def write_table(path: Path, table: str) -> None:
    """Replace the table between the markers of ``path`` (a temporary file, then a rename)."""
    document = path.read_text()
    start, end = document.index(TABLE_BEGIN) + len(TABLE_BEGIN), document.index(TABLE_END)
    _write_atomically(path, document[:start] + table + document[end:])


if __name__ == '__main__':
    sys.exit(main())
