"""``python -m evaluation paper --config paper.yaml --out reports/paper/``: the paper's experiment families from one
YAML file, written as one Markdown report (``paper_report.py``).

Each family is a list of steps, and each step is exactly the subcommand a user would type by hand
(``python -m evaluation classify ...``, ``python -m data_prep report ...``), run in this process and printed, so
one figure can be redone alone. Every step that scores a model writes its result file atomically; a step whose
result is up to date (same command, no newer input: ``stale_reason``) is not run again. Tables, comparisons and
the report itself are redone every time: they only read result files. The config format is documented in
docs/evaluation.md and, key by key, in ``evaluation/paper.example.yaml``.
"""
import argparse
import json
import os
import shlex
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import yaml
from tqdm import tqdm

from datafiles import DataError

from .table import file_name

FAMILIES = ('table1', 'report_generation', 'consistency', 'students', 'generalization')
TOP_KEYS = {'swift_args': str, 'infer_backend': str, 'max_new_tokens': int, 'n_boot': int, 'seed': int,
            'baseline': str, 'models': dict, **{family: dict for family in FAMILIES}}
MODEL_KEYS = {'model': str, 'adapters': list, 'swift_args': str, 'answers': dict}
SECTION_KEYS = {
    'table1': {'dataset': str, 'image_root': str, 'labels': str, 'skip_missing': bool, 'published': bool,
               'loglik': bool, 'prompt_template': str},
    'report_generation': {'dataset': str, 'image_root': str, 'reference_labels': str},
    'consistency': {'dataset': str, 'image_root': str, 'labels': str, 'samples': int, 'temperature': float,
                    'seed': int, 'teachers': str, 'teachers_name': str},
    'students': {'dataset': str, 'image_root': str, 'labels_csv': str, 'args': str},
    'generalization_dataset': {'dataset': str, 'image_root': str, 'labels': str, 'uncertain': str,
                               'skip_missing': bool},
}
REQUIRED = {'table1': ['dataset'], 'report_generation': ['dataset'], 'students': ['dataset'],
            'generalization_dataset': ['dataset']}
INFER_BACKENDS = ('auto', 'transformers', 'vllm')
TYPE_NAMES = {dict: 'a mapping', list: 'a list', str: 'text', int: 'an integer', float: 'a number',
              bool: 'true or false'}


@dataclass
class ModelSpec:
    name: str
    model: Optional[str] = None
    adapters: List[str] = field(default_factory=list)
    swift_args: str = ''
    # family -> answers file (consistency: a list of files; generalization: {dataset name: file})
    answers: Dict[str, Any] = field(default_factory=dict)


@dataclass
class PaperConfig:
    path: str
    models: List[ModelSpec]
    sections: Dict[str, Dict[str, Any]]
    swift_args: str = ''
    infer_backend: str = 'auto'
    max_new_tokens: int = 512
    n_boot: int = 2000
    seed: int = 0
    baseline: Optional[str] = None


@dataclass
class Step:
    family: str
    title: str
    program: str               # 'evaluation' or 'data_prep'
    argv: List[str]
    output: Optional[str]      # the result file; None: a table or comparison, redone every time
    model: Optional[str] = None    # the model a scoring step scores

    @property
    def command(self) -> str:
        return shlex.join(['python', '-m', self.program, *self.argv])


# ---- the config file ------------------------------------------------------------------------------------------

def _line(node: yaml.Node, where: Sequence[str]) -> Optional[int]:
    """1-based line of the value at ``where`` (a path of mapping keys) in a composed YAML document."""
    for key in where:
        if not isinstance(node, yaml.MappingNode):
            break
        for k, v in node.value:
            if k.value == key:
                node = v
                break
        else:
            break
    return node.start_mark.line + 1


class _Checker:
    def __init__(self, path: str, root: yaml.Node):
        self.path, self.root = path, root

    def error(self, where: Sequence[str], problem: str) -> DataError:
        return DataError(f'{self.path} line {_line(self.root, where)}: field {".".join(where)!r}: {problem}')

    def mapping(self, value: Any, where: List[str], keys: Dict[str, type], required: Sequence[str] = ()) -> Dict:
        if not isinstance(value, dict):
            raise self.error(where, f'expected a mapping, found {type(value).__name__}')
        for key, item in value.items():
            if key not in keys:
                raise self.error(where + [str(key)], f'unknown key (known: {", ".join(sorted(keys))})')
            expected = keys[key]
            ok = isinstance(item, expected) and not (expected is int and isinstance(item, bool)) or \
                (expected is float and isinstance(item, int) and not isinstance(item, bool))
            if item is not None and not ok:
                raise self.error(where + [key], f'expected {TYPE_NAMES[expected]}, found {item!r}')
        for key in required:
            if value.get(key) in (None, ''):
                raise self.error(where + [key], 'missing')
        return {k: v for k, v in value.items() if v is not None}

    def file_list(self, value: Any, where: List[str]) -> List[str]:
        files = [value] if isinstance(value, str) else value
        if not isinstance(files, list) or not files or not all(isinstance(f, str) and f for f in files):
            raise self.error(where, f'expected a file or a list of files, found {value!r}')
        return files


def load_config(path: str) -> PaperConfig:
    """Reads and checks ``paper.yaml``: an unknown key, a wrong type or a missing field is an error naming the file,
    line and field. Paths are used as given (relative to the working directory, as on the command line)."""
    try:
        with open(path, encoding='utf-8') as handle:
            text = handle.read()
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except OSError as e:
        raise DataError(f'{path}: {e.strerror or e}') from e
    except yaml.YAMLError as e:
        raise DataError(f'{path}: not valid YAML: {e}') from e
    if root is None:
        raise DataError(f'{path}: empty config (every key: evaluation/paper.example.yaml)')
    check = _Checker(path, root)
    data = check.mapping(data, [], TOP_KEYS, required=['models'])
    models = []
    for name, spec in data['models'].items():
        where = ['models', str(name)]
        spec = check.mapping(spec if spec is not None else {}, where, MODEL_KEYS)
        adapters = spec.get('adapters', [])
        if not all(isinstance(a, str) and a for a in adapters):
            raise check.error(where + ['adapters'], f'expected a list of checkpoint folders, found {adapters!r}')
        answers = spec.get('answers', {})
        for family, files in answers.items():
            if family not in FAMILIES:
                raise check.error(where + ['answers', str(family)], f'unknown family (known: {", ".join(FAMILIES)})')
            if family == 'consistency':
                answers[family] = check.file_list(files, where + ['answers', family])
            elif family == 'generalization':
                check.mapping(files, where + ['answers', family], {k: str for k in data.get('generalization', {})})
            elif not isinstance(files, str) or not files:
                raise check.error(where + ['answers', family], f'expected a file, found {files!r}')
        if not spec.get('model') and not answers:
            raise check.error(where, 'give "model" (scored through swift infer) or "answers" (files of answers)')
        if adapters and not spec.get('model'):
            raise check.error(where + ['adapters'], 'adapters need "model"')
        models.append(ModelSpec(str(name), spec.get('model'), adapters, spec.get('swift_args', ''), answers))
    if not models:
        raise check.error(['models'], 'no model given')
    sections = {}
    for family in FAMILIES:
        if family not in data:
            continue
        if family == 'generalization':
            sets = check.mapping(data[family], [family], {k: dict for k in data[family]})
            sections[family] = {str(name): check.mapping(spec, [family, str(name)],
                                                         SECTION_KEYS['generalization_dataset'],
                                                         REQUIRED['generalization_dataset'])
                                for name, spec in sets.items()}
        else:
            sections[family] = check.mapping(data[family], [family], SECTION_KEYS[family], REQUIRED.get(family, ()))
    cons = sections.get('consistency')
    if cons is not None and not cons.get('dataset') and not cons.get('teachers'):
        raise check.error(['consistency'], 'give "dataset" (items the models are sampled on) and/or "teachers"')
    names = [m.name for m in models]
    baseline = data.get('baseline', names[0])
    if baseline not in names:
        raise check.error(['baseline'], f'{baseline!r} is not one of the models ({", ".join(names)})')
    backend = data.get('infer_backend', 'auto')
    if backend not in INFER_BACKENDS:
        raise check.error(['infer_backend'], f'expected one of {", ".join(INFER_BACKENDS)}, found {backend!r}')
    return PaperConfig(path, models, sections, data.get('swift_args', ''), backend, data.get('max_new_tokens', 512),
                       data.get('n_boot', 2000), data.get('seed', 0), baseline)


# ---- the steps ------------------------------------------------------------------------------------------------

def _source(config: PaperConfig, model: ModelSpec, answers: Optional[Any]) -> Optional[List[str]]:
    """The flags that give a subcommand this model's answers: its answers file(s) for the family, else the model
    through swift infer, else None (the model is not scored in this family)."""
    if answers:
        return ['--answers', *([answers] if isinstance(answers, str) else answers)]
    if not model.model:
        return None
    flags = ['--model', model.model]
    if model.adapters:
        flags += ['--adapters', *model.adapters]
    return flags + ['--infer-backend', config.infer_backend, '--max-new-tokens', str(config.max_new_tokens),
                    '--swift-args', ' '.join(a for a in (config.swift_args, model.swift_args) if a)]


def _optional(section: Dict, *pairs) -> List[str]:
    flags = []
    for key, flag in pairs:
        value = section.get(key)
        if value is True:
            flags.append(flag)
        elif value not in (None, False):
            flags += [flag, str(value)]
    return flags


def _scored(config, family: str, skipped: List[str], build) -> List[Step]:
    """One step per model that has answers or a model for ``family``; the others are listed in ``skipped``."""
    steps = []
    for model in config.models:
        answers = model.answers.get(family)
        source = _source(config, model, answers)
        if source is None:
            skipped.append(f'{family}: {model.name} (no "model" and no answers file for it)')
            continue
        steps += build(model, source, bool(answers))
    return steps


def plan(config: PaperConfig, out: str) -> (List[Step], List[str]):
    """Every step of the configured families, in order, and what is left out (and why)."""
    steps: List[Step] = []
    skipped: List[str] = [f'{family}: not in {config.path}' for family in FAMILIES if family not in config.sections]
    boot = ['--n-boot', str(config.n_boot), '--seed', str(config.seed)]

    def comparisons(family, label, folder, scored):
        """``compare`` of the baseline's result with each other model's."""
        base = next((s.output for s in scored if s.model == config.baseline), None)
        if base is None:
            return []
        return [Step(family, f'{label}: {s.model} vs {config.baseline}', 'evaluation',
                     ['compare', base, s.output, '--seed', str(config.seed),
                      '--out', os.path.join(folder, f'{file_name(config.baseline)}_vs_{file_name(s.model)}.md')],
                     None) for s in scored if s.model != config.baseline]

    section = config.sections.get('table1')
    if section is not None:
        folder = os.path.join(out, 'table1')
        common = ['--dataset', section['dataset'], '--out', folder, *boot,
                  *_optional(section, ('image_root', '--image-root'), ('labels', '--labels'),
                             ('skip_missing', '--skip-missing'), ('prompt_template', '--prompt-template'))]

        def classify(model, source, from_answers):
            stem = os.path.join(folder, file_name(model.name))
            made = [Step('table1', f'Table 1: {model.name}', 'evaluation',
                         ['classify', *source, '--name', model.name, *common], stem + '.json', model.name)]
            if section.get('loglik') and not from_answers:
                made.append(Step('table1', f'Table 1: {model.name} (likelihood)', 'evaluation',
                                 ['classify', *source, '--name', model.name, '--scoring', 'loglik', *common],
                                 stem + '.loglik.json', model.name))
            return made
        family = _scored(config, 'table1', skipped, classify)
        results = [s.output for s in family]
        if results:
            base = os.path.join(folder, file_name(config.baseline) + '.json')
            family.append(Step('table1', 'Table 1: table', 'evaluation',
                               ['table', *results, '--out', os.path.join(folder, 'table1.md')]
                               + (['--baseline', base] if base in results else [])
                               + (['--published'] if section.get('published', True) else []), None))
            generative = [s for s in family if s.output and not s.output.endswith('.loglik.json')]
            family += comparisons('table1', 'Table 1', folder, generative)
        steps += family

    section = config.sections.get('report_generation')
    if section is not None:
        folder = os.path.join(out, 'report_generation')
        common = ['--dataset', section['dataset'], '--out', folder, *boot,
                  *_optional(section, ('image_root', '--image-root'), ('reference_labels', '--reference-labels'))]
        family = _scored(config, 'report_generation', skipped, lambda model, source, _: [
            Step('report_generation', f'report generation: {model.name}', 'evaluation',
                 ['report-gen', *source, '--name', model.name, *common],
                 os.path.join(folder, file_name(model.name) + '.gen.json'), model.name)])
        family += comparisons('report_generation', 'report generation', folder, family)
        steps += family

    section = config.sections.get('consistency')
    if section is not None:
        folder = os.path.join(out, 'consistency')
        if section.get('dataset'):
            common = ['--dataset', section['dataset'], '--out', folder,
                      *_optional(section, ('image_root', '--image-root'), ('labels', '--labels'))]
            sampling = ['--samples', str(section.get('samples', 5)), '--temperature',
                        str(section.get('temperature', 0.7)), '--seed', str(section.get('seed', config.seed))]
            steps += _scored(config, 'consistency', skipped, lambda model, source, from_answers: [
                Step('consistency', f'consistency: {model.name}', 'evaluation',
                     ['consistency', *source, *([] if from_answers else sampling), '--name', model.name, *common],
                     os.path.join(folder, file_name(model.name) + '.consistency.json'), model.name)])
        if section.get('teachers'):
            name = section.get('teachers_name', 'teachers')
            steps.append(Step('consistency', f'consistency: {name}', 'evaluation',
                              ['consistency', '--teachers', section['teachers'], '--name', name, '--out', folder,
                               *_optional(section, ('image_root', '--image-root'))],
                              os.path.join(folder, file_name(name) + '.teachers.consistency.json')))

    section = config.sections.get('students')
    if section is not None:
        folder = os.path.join(out, 'students')
        sources = []
        for model in config.models:
            answers = student_answers(model, config, out)
            if answers is None:
                skipped.append(f'students: {model.name} (no answers on the studies: give answers.students, or '
                               'score the model in report_generation on data_prep\'s eval rows)')
            else:
                sources += ['--source', f'{model.name}={answers}']
        steps.append(Step('students', 'students beside their teachers', 'data_prep',
                          ['report', '--dataset', section['dataset'], '--out', folder, *sources,
                           *_optional(section, ('image_root', '--image-root'), ('labels_csv', '--labels-csv')),
                           *shlex.split(section.get('args', ''))],
                          os.path.join(folder, 'drift.json')))

    for set_name, section in config.sections.get('generalization', {}).items():
        folder = os.path.join(out, 'generalization', file_name(set_name))
        common = ['--dataset', section['dataset'], '--out', folder, *boot,
                  '--labels', section.get('labels', 'presence'),
                  *_optional(section, ('image_root', '--image-root'), ('uncertain', '--uncertain'),
                             ('skip_missing', '--skip-missing'))]
        family = []
        for model in config.models:
            answers = model.answers.get('generalization', {}).get(set_name)
            source = _source(config, model, answers)
            if source is None:
                skipped.append(f'generalization {set_name}: {model.name} (no "model" and no answers file for it)')
                continue
            family.append(Step('generalization', f'generalization {set_name}: {model.name}', 'evaluation',
                               ['classify', *source, '--name', model.name, *common],
                               os.path.join(folder, file_name(model.name) + '.json'), model.name))
        if family:
            family.append(Step('generalization', f'generalization {set_name}: table', 'evaluation',
                               ['table', *[s.output for s in family], '--out', os.path.join(folder, 'table.md')],
                               None))
        steps += family
    return steps, skipped


def student_answers(model: ModelSpec, config: PaperConfig, out: str) -> Optional[str]:
    """A model's answers on the teachers' studies: its ``answers.students`` file, else the answers it gave in
    report generation (on data_prep's eval rows, the studies' own questions, which the drift report joins)."""
    if model.answers.get('students'):
        return model.answers['students']
    if 'report_generation' not in config.sections:
        return None
    if model.answers.get('report_generation'):
        return model.answers['report_generation']
    if model.model:
        return os.path.join(out, 'report_generation', file_name(model.name) + '.answers.jsonl')
    return None


# ---- running --------------------------------------------------------------------------------------------------

STEPS_FILE = '.paper-steps.json'    # result file -> the command that wrote it


def _inputs(step: Step) -> List[str]:
    """Files the step reads, as far as its command line names them (``--source NAME=FILE`` included)."""
    paths = [a.partition('=')[2] if a.partition('=')[2] and not a.startswith('-') else a for a in step.argv]
    return [p for p in paths if p != step.output and os.path.isfile(p)]


def stale_reason(step: Step, recorded: Dict[str, str]) -> Optional[str]:
    """Why a scoring step must run (None: its result is up to date): no result yet, another command wrote it (the
    config changed), or a file it reads is newer than its result (e.g. answers an earlier step redid)."""
    if not os.path.exists(step.output):
        return 'no result yet'
    if recorded.get(step.output) != step.command:
        return 'made by another command (the config changed), redone'
    newer = [p for p in _inputs(step) if os.path.getmtime(p) > os.path.getmtime(step.output)]
    return f'{newer[0]} is newer than its result, redone' if newer else None


def run_step(step: Step, evaluation_parser: Callable[[], argparse.ArgumentParser]) -> None:
    """Run one step in this process; ``evaluation_parser`` builds evaluation's own command line (passed in by the
    command line, which imports this module, not the other way round)."""
    if step.program == 'evaluation':
        build_parser = evaluation_parser
    else:       # the drift report with students: data_prep's command, run as its user would
        from data_prep.cli import build_parser
    args = build_parser().parse_args(step.argv)
    try:
        args.run(args)
    except DataError as e:
        raise DataError(f'{step.title}: {e}\n  the step was: {step.command}') from e


def _record(out: str, recorded: Dict[str, str]) -> None:
    from datafiles import output_set
    with output_set() as outputs:
        with outputs.open(os.path.join(out, STEPS_FILE)) as handle:
            json.dump(recorded, handle, indent=1)


def run_paper(args) -> None:
    from .paper_report import write_report
    config = load_config(args.config)
    out = args.out
    steps, skipped = plan(config, out)
    os.makedirs(out, exist_ok=True)
    try:
        with open(os.path.join(out, STEPS_FILE), encoding='utf-8') as handle:
            recorded = json.load(handle)
    except FileNotFoundError:
        recorded = {}
    except (OSError, ValueError):
        recorded = {}   # unreadable: every result is redone rather than trusted
    bar = tqdm(steps, desc='paper', unit='step', disable=None, file=sys.stderr)
    for step in bar:
        bar.set_postfix_str(step.title)
        reason = stale_reason(step, recorded) if step.output else 'a table or comparison, always redone'
        if reason is None:
            print(f'== {step.title}: done before, kept ({step.output})', file=sys.stderr)
            continue
        print(f'== {step.title} ({reason}): {step.command}', file=sys.stderr)
        run_step(step, args.evaluation_parser)
        if step.output:
            recorded[step.output] = step.command
            _record(out, recorded)
    path = write_report(config, out, steps, skipped)
    print(f'evaluation paper: wrote {path}')
