"""The gym's experiment as steps: data, stage 1, consensus, APO data, the five arms, their answers, their scores.

Every arm is a stage 1 of ``stage1_steps`` SFT steps from a random student at ``stage1_lr``, then a stage 2 of
``stage2_steps`` steps at a learning rate of the grid ``stage2_lrs``, at the same batch of ``batch_size`` studies
per optimizer step:

======  ============================================  ============================================
arm     stage 1 (SFT)                                 stage 2
======  ============================================  ============================================
a       every teacher trace                           SFT, every teacher trace (stage 1 continued)
b       the teachers' majority, one trace per study   SFT, the majority (continued)
c       every teacher trace                           SFT on the consensus t+
d       every teacher trace                           ``swift rlhf --rlhf_type dpo``: t+ vs each teacher,
                                                      K pairs per study, K x batch pairs per step
e       every teacher trace                           ``swift rlhf --rlhf_type apo``: t+ vs all K at once
======  ============================================  ============================================

t+ is the stage-1 student's answer to data_prep's consensus prompt (``consensus: student``, the method), or the
teachers' majority written out as a trace (``consensus: majority``), which judges stage 3 without stage 2.
Everything a step makes lives under ``<out>/work/<step name>``; the name holds a hash of every setting the step
depends on, so sweep points that share a stage 1 (the beta sweep, say) share its run.
"""
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .answers import read_jsonl, study_answers, teacher_answers, write_item_answers, write_jsonl, write_study_answers
from .config import GymConfig
from .make import make
from .steps import Runner, Step, python_module
from .student import REPO, TEMPLATE, TEMPLATE_PLUGIN, build_student

SWIFT = str(Path(sys.executable).with_name('swift'))
# A student is rebuilt when its builder changes (its signature names only its shape and seed).
STUDENT_CODE = tuple(str(path) for path in (REPO / 'tools' / 'tiny_models.py', Path(__file__).with_name('student.py')))
STAGE2 = {'a': 'sft', 'b': 'sft', 'c': 'sft', 'd': 'dpo', 'e': 'apo'}


def _hash(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _lr(value: float) -> str:
    return f'{value:g}'


@dataclass(frozen=True)
class Prepared:
    data: str                  # the gym folder (make)
    sft: str                   # data_prep sft: every teacher trace
    requests: str              # data_prep consensus: the consensus requests
    majority_sft: str          # one SFT row per study: the teachers' majority
    majority_consensus: str    # the majority as swift infer result rows answering the consensus requests


@dataclass(frozen=True)
class ArmRun:
    arm: str
    seed: int
    lr: float
    checkpoint: str
    answers: str               # folder: results.jsonl, val/test item answers, test study answers


class Pipeline:
    def __init__(self, root: str, runner: Runner, config: GymConfig):
        self.root = os.path.abspath(root)
        self.runner = runner
        self.threads = config.threads
        self.device = config.device

    # -- helpers --------------------------------------------------------------------------------------------------
    def _dir(self, name: str) -> str:
        return os.path.join(self.root, 'work', name)

    @property
    def env(self) -> Dict[str, str]:
        threads = str(self.threads)
        return {'HF_HUB_OFFLINE': '1', 'OMP_NUM_THREADS': threads, 'MKL_NUM_THREADS': threads,
                'TOKENIZERS_PARALLELISM': 'false'}

    def _precision(self) -> List[str]:
        if self.device == 'cuda':
            return ['--torch_dtype', 'bfloat16', '--bf16', 'true']
        return ['--torch_dtype', 'float32', '--fp16', 'false', '--bf16', 'false']

    def _model_flags(self) -> List[str]:
        return ['--model_type', 'qwen2_5_vl', '--template', TEMPLATE, '--external_plugins', TEMPLATE_PLUGIN]

    def _train(self, name: str, kind: str, model: str, dataset: str, steps: int, lr: float, batch: int,
               seed: int, config: GymConfig, needs: List[str], extra: List[str] = ()) -> str:
        out = self._dir(name)
        command = [SWIFT, 'sft' if kind == 'sft' else 'rlhf']
        if kind != 'sft':
            command += ['--rlhf_type', kind, '--beta', f'{config.beta:g}']
        command += ['--model', model, *self._model_flags(), '--check_model', 'false', '--tuner_type', 'full',
                    '--freeze_vit', 'false', '--freeze_aligner', 'false', '--dataset', dataset,
                    '--split_dataset_ratio', '0', '--per_device_train_batch_size', str(batch),
                    '--gradient_accumulation_steps', '1', '--learning_rate', _lr(lr), '--warmup_ratio', '0.05',
                    '--max_steps', str(steps), '--save_steps', str(steps), '--save_only_model', 'true',
                    '--save_total_limit', '1', '--logging_steps', '5', '--max_length', str(config.max_length),
                    '--gradient_checkpointing', 'false', '--dataloader_num_workers', '0', '--report_to', 'none',
                    '--seed', str(seed), '--data_seed', str(seed), '--output_dir', out, '--add_version', 'false',
                    *self._precision(), *extra]
        checkpoint = os.path.join(out, f'checkpoint-{steps}')
        env = {**self.env, 'MAX_PIXELS': str(config.image_size ** 2)}
        self.runner.add(Step(name, [checkpoint], command=command, needs=needs, env=env, clean=[out]))
        return checkpoint

    def _infer(self, name: str, checkpoint: str, requests: str, config: GymConfig, seed: int, needs: List[str],
               temperature: float = 0.0, top_k: int = 50) -> str:
        result = os.path.join(self._dir(name), 'results.jsonl')
        command = [SWIFT, 'infer', '--model', checkpoint, *self._model_flags(), '--val_dataset', requests,
                   '--result_path', result, '--max_new_tokens', str(config.max_new_tokens),
                   '--temperature', f'{temperature:g}', '--max_batch_size', '64', '--seed', str(seed),
                   '--torch_dtype', 'bfloat16' if self.device == 'cuda' else 'float32']
        if temperature > 0:
            command += ['--top_k', str(top_k), '--top_p', '1']
        env = {**self.env, 'MAX_PIXELS': str(config.image_size ** 2)}
        self.runner.add(Step(name, [result], command=command, needs=needs, env=env, clean=[self._dir(name)]))
        return result

    # -- data -----------------------------------------------------------------------------------------------------
    def data_name(self, config: GymConfig) -> str:
        return f'data-{_hash(config.data_fields())}'

    def prepared(self, config: GymConfig) -> Prepared:
        name = self.data_name(config)
        data = self._dir(name)
        self.runner.add(Step(name, [data], action=lambda: make(config, data),
                             signature=f'make {json.dumps(config.data_fields(), default=list)}'))
        prep = self._dir(f'prep-{name[5:]}')
        paths = Prepared(data, os.path.join(prep, 'sft.jsonl'), os.path.join(prep, 'consensus_requests.jsonl'),
                         os.path.join(prep, 'majority_sft.jsonl'), os.path.join(prep, 'majority_consensus.jsonl'))
        teachers = os.path.join(data, 'teachers.jsonl')
        common = ['--dataset', teachers, '--drop-refusals']
        self.runner.add(Step(f'sft-rows-{name[5:]}', [paths.sft], needs=[name], clean=[paths.sft],
                             command=python_module('data_prep', 'sft', *common, '--eval-fraction', '0',
                                                   '--out', paths.sft)))
        self.runner.add(Step(f'consensus-requests-{name[5:]}', [paths.requests], needs=[name], clean=[paths.requests],
                             command=python_module('data_prep', 'consensus', *common, '--out', paths.requests)))
        self.runner.add(Step(f'majority-rows-{name[5:]}', [paths.majority_sft, paths.majority_consensus],
                             needs=[f'sft-rows-{name[5:]}', f'consensus-requests-{name[5:]}'],
                             action=lambda: write_majority(data, paths), signature=f'majority rows of {data}'))
        return paths

    # -- models ---------------------------------------------------------------------------------------------------
    def student(self, config: GymConfig, seed: int) -> Tuple[str, str]:
        paths = self.prepared(config)
        shape = {k: getattr(config, k) for k in ('vocab_size', 'hidden_size', 'num_layers', 'vision_depth',
                                                 'vision_hidden', 'image_size')}
        name = f'student-s{seed}-{_hash(self.data_name(config), shape, seed)}'
        out = self._dir(name)
        self.runner.add(Step(name, [out], needs=[self.data_name(config), f'sft-rows-{self.data_name(config)[5:]}'],
                             action=lambda: build_student(out, paths.data, seed=seed, **shape), code=STUDENT_CODE,
                             signature=f'student {json.dumps(shape)} seed {seed} tokenizer from {paths.data}'))
        return name, out

    def stage1(self, config: GymConfig, seed: int, source: str) -> Tuple[str, str]:
        """Stage 1 on every teacher trace (``source`` 'teachers') or on the majority ('majority')."""
        paths = self.prepared(config)
        student_step, student = self.student(config, seed)
        dataset = paths.sft if source == 'teachers' else paths.majority_sft
        needs = [student_step, f'sft-rows-{self.data_name(config)[5:]}', f'majority-rows-{self.data_name(config)[5:]}']
        settings = (student_step, dataset, config.stage1_steps, config.stage1_lr, config.batch_size, config.max_length)
        name = f'stage1-{source}-s{seed}-{_hash(*settings)}'
        return name, self._train(name, 'sft', student, dataset, config.stage1_steps, config.stage1_lr,
                                 config.batch_size, seed, config, needs)

    def consensus(self, config: GymConfig, seed: int) -> Tuple[List[str], str]:
        """The consensus answers (swift infer result rows) and the steps that make them."""
        paths = self.prepared(config)
        if config.consensus == 'majority':
            return [f'majority-rows-{self.data_name(config)[5:]}'], paths.majority_consensus
        stage1_step, checkpoint = self.stage1(config, seed, 'teachers')
        name = f'consensus-{stage1_step[len("stage1-"):]}-{_hash(config.max_new_tokens, config.consensus_temperature)}'
        needs = [stage1_step, f'consensus-requests-{self.data_name(config)[5:]}']
        return [name], self._infer(name, checkpoint, paths.requests, config, seed, needs,
                                   temperature=config.consensus_temperature, top_k=10)

    def preference_data(self, config: GymConfig, seed: int) -> Tuple[str, Dict[str, str]]:
        """data_prep apo on the consensus, and the pairwise and consensus-SFT rows made from its rows."""
        paths = self.prepared(config)
        needs, consensus = self.consensus(config, seed)
        name = f'apo-data-{_hash(consensus)}'
        folder = self._dir(name)
        files = {k: os.path.join(folder, f'{k}.jsonl') for k in ('apo', 'pairs', 'consensus_sft')}
        apo_step = f'{name}-apo'
        self.runner.add(Step(apo_step, [files['apo']], clean=[files['apo']],
                             needs=needs + [f'consensus-requests-{self.data_name(config)[5:]}'],
                             command=python_module('data_prep', 'apo', '--dataset',
                                                   os.path.join(paths.data, 'teachers.jsonl'), '--drop-refusals',
                                                   '--consensus', consensus, '--requests', paths.requests,
                                                   '--eval-fraction', '0', '--out', files['apo'])))
        self.runner.add(Step(name, [files['pairs'], files['consensus_sft']], needs=[apo_step],
                             action=lambda: write_preference_rows(files),
                             signature=f'pairs and SFT rows of {files["apo"]}'))
        return name, files

    def arm(self, config: GymConfig, arm: str, seed: int, lr: float) -> Tuple[str, ArmRun]:
        paths = self.prepared(config)
        base_step, base = self.stage1(config, seed, 'majority' if arm == 'b' else 'teachers')
        needs = [base_step]
        batch = config.batch_size
        if arm == 'a':
            dataset = paths.sft
        elif arm == 'b':
            dataset = paths.majority_sft
        else:
            data_step, files = self.preference_data(config, seed)
            needs.append(data_step)
            dataset = {'c': files['consensus_sft'], 'd': files['pairs'], 'e': files['apo']}[arm]
            if arm == 'd':
                batch = config.batch_size * config.teachers   # as many studies and answers per step as APO
        beta = config.beta if arm in 'de' else None
        name = f'arm-{arm}-s{seed}-lr{_lr(lr)}-{_hash(base_step, dataset, config.stage2_steps, lr, batch, beta)}'
        checkpoint = self._train(name, STAGE2[arm], base, dataset, config.stage2_steps, lr, batch, seed, config,
                                 needs)
        answers_step, answers = self.heldout_answers(config, name, checkpoint, seed)
        return answers_step, ArmRun(arm, seed, lr, checkpoint, answers)

    def heldout_answers(self, config: GymConfig, train_step: str, checkpoint: str, seed: int) -> Tuple[str, str]:
        paths = self.prepared(config)
        requests = os.path.join(paths.data, 'heldout.requests.jsonl')
        infer_step = f'answers-{train_step}'
        result = self._infer(infer_step, checkpoint, requests, config, seed, [train_step])
        folder = os.path.dirname(result)
        name = f'{infer_step}-files'
        outputs = [os.path.join(folder, f) for f in ('val.answers.jsonl', 'test.answers.jsonl', 'test.studies.jsonl')]
        self.runner.add(Step(name, outputs, needs=[infer_step], clean=outputs,
                             action=lambda: write_answer_files(paths.data, result, folder),
                             signature=f'answer files of {result}'))
        samples = []
        for k in range(config.consistency_samples):
            samples.append(self._infer(f'{infer_step}-sample{k}', checkpoint, requests, config, seed + 1000 + k,
                                       [train_step], temperature=0.7))
        if samples:
            sample_file = os.path.join(folder, 'test.samples.jsonl')
            self.runner.add(Step(f'{name}-samples', [sample_file], needs=[f'{infer_step}-sample{k}' for k in
                                                                         range(len(samples))], clean=[sample_file],
                                 action=lambda: write_samples(paths.data, samples, sample_file),
                                 signature=f'samples of {samples}'))
            name = f'{name}-samples'
        return name, folder


def write_majority(data: str, paths: Prepared) -> None:
    majority = {r['study_id']: r['response'] for r in read_jsonl(os.path.join(data, 'majority.jsonl'))}
    rows, seen = [], set()
    for row in read_jsonl(paths.sft):
        if row['study_id'] not in seen:
            seen.add(row['study_id'])
            rows.append({'messages': [row['messages'][0], {'role': 'assistant', 'content': majority[row['study_id']]}],
                         'images': row['images'], 'study_id': row['study_id'], 'teacher': 'majority'})
    write_jsonl(paths.majority_sft, rows)
    write_jsonl(paths.majority_consensus, ({'messages': r['messages'], 'images': r['images'],
                                            'response': majority[r['study_id']]} for r in read_jsonl(paths.requests)))


def write_preference_rows(files: Dict[str, str]) -> None:
    """From APO rows: one DPO row per (study, rejected trace), and one SFT row per study on its consensus."""
    rows = read_jsonl(files['apo'])
    if not rows:
        raise ValueError(f'{files["apo"]}: no APO rows (data_prep apo kept no study: see its log for why)')
    write_jsonl(files['pairs'], ({'messages': r['messages'], 'images': r['images'], 'rejected_response': rejected}
                                 for r in rows for rejected in r['rejected_response']))
    write_jsonl(files['consensus_sft'], ({'messages': r['messages'], 'images': r['images']} for r in rows))


def write_answer_files(data: str, results: str, folder: str) -> None:
    answers = study_answers(os.path.join(data, 'heldout.requests.jsonl'), results)
    for split in ('val', 'test'):
        write_item_answers(os.path.join(folder, f'{split}.answers.jsonl'), os.path.join(data, f'{split}.items.jsonl'),
                           answers)
    test_studies = list(dict.fromkeys(str(r['study_id']) for r in read_jsonl(os.path.join(data, 'test.jsonl'))))
    write_study_answers(os.path.join(folder, 'test.studies.jsonl'), answers, test_studies)


def write_samples(data: str, results: List[str], out: str) -> None:
    """Several sampled answers per test item (``{"id", "response"}`` rows, one per sample), for consistency."""
    items = read_jsonl(os.path.join(data, 'test.items.jsonl'))
    sampled = [study_answers(os.path.join(data, 'heldout.requests.jsonl'), r) for r in results]
    write_jsonl(out, ({'id': item['id'], 'response': answers[item['id'].split(':', 1)[0]]}
                      for answers in sampled for item in items))


def write_teacher_answers(data: str, folder: str) -> Dict[str, Dict[str, str]]:
    """Each teacher's traces on the held-out studies as answer files, like a student's."""
    files = {}
    for split in ('val', 'test'):
        for teacher, answers in teacher_answers(os.path.join(data, f'{split}.jsonl')).items():
            path = os.path.join(folder, teacher, f'{split}.answers.jsonl')
            write_item_answers(path, os.path.join(data, f'{split}.items.jsonl'), answers)
            files.setdefault(teacher, {})[split] = path
    return files
