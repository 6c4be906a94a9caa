"""The gym's settings: one frozen dataclass, three named configurations, YAML overrides.

A configuration says what synthetic studies to draw (``make``), how big a student to train and for how long, and
which experiments to run (``run``): the five arms over several seeds, and the sweeps over the number of teachers,
the drift severity and beta. ``--config NAME`` picks a named one; ``--config FILE.yaml`` reads
``{base: small, <field>: <value>, ...}`` (any field below; ``base`` defaults to ``small``); ``--set FIELD=VALUE``
overrides one field on the command line.
"""
import dataclasses
import json
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional, Tuple

import yaml

from datafiles import DataError

# The five gym findings and how each is drawn (films.py): an opacity blob in a lung zone, a fluid level at a base,
# an apical pleural line with no lung markings beyond it, a wide heart shadow, a bright tube or line.
OBSERVATIONS = ('Consolidation', 'Pleural Effusion', 'Pneumothorax', 'Cardiomegaly', 'Support Devices')
ARMS = ('a', 'b', 'c', 'd', 'e')
ARM_NAMES = {
    'a': 'stage 1 only (SFT on every teacher trace)',
    'b': 'SFT on the teachers\' majority vote',
    'c': 'stage 1 + SFT on the consensus',
    'd': 'stage 1 + pairwise DPO (consensus vs each teacher)',
    'e': 'stage 1 + APO (consensus vs all teachers at once)',
}
CONSENSUS_SOURCES = ('student', 'majority')
SWEEPS = ('teachers', 'drift', 'beta', 'consensus')


@dataclass(frozen=True)
class GymConfig:
    name: str = 'small'
    # -- the synthetic studies (make) -------------------------------------------------------------------------
    data_seed: int = 0
    train_studies: int = 384
    val_studies: int = 48         # choose each arm's learning rate (when the grid has more than one)
    test_studies: int = 128       # held out: every figure on the page
    image_size: int = 84          # pixels, a multiple of 28 (Qwen2.5-VL: one merged token per 28 x 28)
    observations: Tuple[str, ...] = OBSERVATIONS
    prevalence: float = 0.35      # chance that a study shows each finding (independently)
    teachers: int = 7             # the first N of teachers.TEACHERS
    drift: float = 1.0            # 0: every teacher calls each finding right 95% of the time; 1: the full profiles
    # -- the student --------------------------------------------------------------------------------------------
    hidden_size: int = 128
    num_layers: int = 2
    vision_depth: int = 2
    vision_hidden: int = 64
    vocab_size: int = 1024        # the gym tokenizer's learned vocabulary (special tokens come on top)
    # -- training (every arm gets the same) ---------------------------------------------------------------------
    seeds: Tuple[int, ...] = (0, 1, 2)
    batch_size: int = 16          # prompts (studies) per optimizer step, every stage and arm
    stage1_steps: int = 1000
    stage2_steps: int = 60        # every arm: stage 1 (SFT) for stage1_steps, then its stage 2 for this many
    stage1_lr: float = 1e-3
    stage2_lrs: Tuple[float, ...] = (1e-4,)   # the grid every stage-2 arm runs; the validation studies choose
    beta: float = 0.1             # DPO / APO
    max_length: int = 1024
    max_new_tokens: int = 96
    consensus: str = 'student'    # where t+ comes from: the stage-1 student (the method) or the teachers' majority
    compare_consensus: bool = True   # the main table also runs arms c, d, e with t+ from the other source
    consensus_temperature: float = 0.0   # 0: greedy; the CI's barely trained student only writes text when sampled
                                         # (top 10 tokens: an untrained student's tail holds vision tokens, which
                                         # swift infer writes out as text and which would break stage 2's encoding)
    # -- evaluation ---------------------------------------------------------------------------------------------
    consistency_samples: int = 0  # sampled answers per held-out study for self-consistency (0: greedy only)
    n_boot: int = 2000
    # -- sweeps: each value is one more run of every arm it affects, on every seed ----------------------------
    sweeps: Dict[str, List[Any]] = field(default_factory=dict)
    sweep_seeds: Optional[Tuple[int, ...]] = None   # seeds of the sweep points (default: seeds)
    sweep_lrs: Optional[Tuple[float, ...]] = None   # stage-2 grid of the sweep points (default: stage2_lrs)
    sweep_consensus: Optional[str] = None           # t+ of the sweep points (default: consensus)
    # -- where it runs ------------------------------------------------------------------------------------------
    device: str = 'cpu'           # cpu: float32, no AMP; cuda: bfloat16
    threads: int = 1              # OMP threads per process on the CPU (2 steps run at a time: 1 each; more
                                  # threads than free cores slows torch's CPU kernels many times over)

    def data_fields(self) -> Dict[str, Any]:
        """What the synthetic studies depend on (``make``'s part of the config)."""
        keys = ('data_seed', 'train_studies', 'val_studies', 'test_studies', 'image_size', 'observations',
                'prevalence', 'teachers', 'drift')
        return {k: getattr(self, k) for k in keys}

    def with_changes(self, **changes) -> 'GymConfig':
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> Dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))


CI = GymConfig(
    name='ci', train_studies=24, val_studies=4, test_studies=8, image_size=56, teachers=3, hidden_size=32,
    num_layers=1, vision_depth=1, vision_hidden=32, vocab_size=512, seeds=(0,), batch_size=4, stage1_steps=40,
    stage2_steps=2, max_new_tokens=24, n_boot=200, max_length=768, consensus_temperature=1.0,
    compare_consensus=False)

# 20 minutes on 2 CPU cores, 2 steps at a time (docs/drift-gym.md, Configurations: what each step costs there)
SMALL = GymConfig(
    name='small', stage1_steps=300, stage2_steps=20, compare_consensus=False,
    sweeps={'beta': [0.03, 0.3], 'drift': [0.0, 0.5], 'teachers': [3, 5]},
    sweep_seeds=(0, 1), sweep_lrs=(1e-4, 3e-4), sweep_consensus='majority')

GPU = GymConfig(
    name='gpu', train_studies=4096, val_studies=256, test_studies=512, image_size=112, hidden_size=512,
    num_layers=4, vision_depth=4, vision_hidden=128, vocab_size=2048, batch_size=32, stage1_steps=3000,
    stage2_steps=300, stage1_lr=5e-4, stage2_lrs=(3e-5, 1e-4, 3e-4), consistency_samples=4, device='cuda', threads=4,
    sweeps={'beta': [0.03, 0.3], 'drift': [0.0, 0.5], 'teachers': [3, 5]}, sweep_seeds=(0, 1, 2))

NAMED = {c.name: c for c in (CI, SMALL, GPU)}


def _coerce(name: str, value: Any, where: str) -> Any:
    """``value`` (from YAML or ``FIELD=VALUE``) as the type of the field ``name``."""
    default = getattr(SMALL, name)
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                return {'true': True, 'false': False}[value.lower()]
            return bool(value)
        if isinstance(default, tuple):
            items = value.split(',') if isinstance(value, str) else list(value)
            kind = type(default[0]) if default else str
            return tuple(kind(v) for v in items)
        if name == 'sweep_consensus':
            return None if value in (None, '', 'none') else str(value)
        if name in ('sweep_seeds', 'sweep_lrs'):
            if value is None:
                return None
            items = value.split(',') if isinstance(value, str) else list(value)
            return tuple((int if name == 'sweep_seeds' else float)(v) for v in items)
        if name == 'sweeps':
            value = yaml.safe_load(value) if isinstance(value, str) else value
            if not isinstance(value, dict) or any(k not in SWEEPS or not isinstance(v, list) for k, v in value.items()):
                raise ValueError(f'a mapping of {", ".join(SWEEPS)} to lists of values')
            return value
        return type(default)(value)
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f'{where}: field {name!r}: cannot read {value!r} as {type(default).__name__} ({e})') from None


def check(config: GymConfig, where: str) -> GymConfig:
    """Reject settings the gym cannot run, naming the field."""
    def bad(name: str, why: str):
        raise DataError(f'{where}: field {name!r}: {why}')

    from .teachers import TEACHERS
    if config.image_size % 28 or config.image_size < 56:
        bad('image_size', f'{config.image_size} must be a multiple of 28, at least 56')
    unknown = [o for o in config.observations if o not in OBSERVATIONS]
    if unknown or not config.observations:
        bad('observations', f'{unknown or "none"}: the gym draws {", ".join(OBSERVATIONS)}')
    if not 1 <= config.teachers <= len(TEACHERS):
        bad('teachers', f'{config.teachers}: between 1 and {len(TEACHERS)}')
    if not 0 <= config.drift <= 1:
        bad('drift', f'{config.drift}: between 0 and 1')
    if not 0 < config.prevalence < 1:
        bad('prevalence', f'{config.prevalence}: between 0 and 1')
    for name in ('consensus', 'sweep_consensus'):
        if getattr(config, name) not in CONSENSUS_SOURCES + ((None,) if name == 'sweep_consensus' else ()):
            bad(name, f'{getattr(config, name)!r}: one of {", ".join(CONSENSUS_SOURCES)}')
    if config.device not in ('cpu', 'cuda'):
        bad('device', f'{config.device!r}: cpu or cuda')
    for name in ('train_studies', 'test_studies', 'batch_size', 'stage1_steps', 'stage2_steps', 'hidden_size',
                 'num_layers', 'vision_depth', 'max_new_tokens'):
        if getattr(config, name) < 1:
            bad(name, 'must be at least 1')
    if not config.seeds or not config.stage2_lrs:
        bad('seeds' if not config.seeds else 'stage2_lrs', 'must not be empty')
    if len(config.stage2_lrs) > 1 and config.val_studies < 1:
        bad('val_studies', 'a learning-rate grid needs validation studies to choose from it')
    for name, values in config.sweeps.items():
        for value in values:
            try:
                check(sweep_point(config, name, value), f'{where}: sweeps.{name}')
            except DataError as e:
                raise DataError(str(e)) from None
    return config


def sweep_point(config: GymConfig, name: str, value: Any) -> GymConfig:
    """The configuration of one sweep point: ``config`` with ``name`` set to ``value`` (and the sweep seeds and
    learning-rate grid), no sweeps of its own."""
    target = {'teachers': 'teachers', 'drift': 'drift', 'beta': 'beta', 'consensus': 'consensus'}[name]
    changes = {target: _coerce(target, value, f'sweeps.{name}'), 'sweeps': {}}
    changes['seeds'] = config.sweep_seeds or config.seeds
    changes['stage2_lrs'] = config.sweep_lrs or config.stage2_lrs
    if name != 'consensus' and config.sweep_consensus:
        changes['consensus'] = config.sweep_consensus
    return config.with_changes(compare_consensus=False, **changes)


def main_point(config: GymConfig) -> GymConfig:
    """The main table's configuration; with ``sweep_lrs`` it is also the sweeps' reference point on their grid."""
    return config.with_changes(sweeps={})


def load(spec: str, overrides: Optional[List[str]] = None) -> GymConfig:
    """A named configuration or a YAML file of overrides of one, then ``FIELD=VALUE`` overrides."""
    known = {f.name for f in fields(GymConfig)}
    if spec in NAMED:
        config, where = NAMED[spec], f'config {spec!r}'
    else:
        try:
            with open(spec, encoding='utf-8') as f:
                data = yaml.safe_load(f) or {}
        except OSError as e:
            raise DataError(f'{spec}: cannot read the config ({e.strerror}); named configs: '
                            f'{", ".join(NAMED)}') from None
        if not isinstance(data, dict):
            raise DataError(f'{spec}: a gym config is a YAML mapping of field: value')
        base = data.pop('base', 'small')
        if base not in NAMED:
            raise DataError(f'{spec}: field \'base\': {base!r} is not one of {", ".join(NAMED)}')
        unknown = sorted(set(data) - known)
        if unknown:
            raise DataError(f'{spec}: unknown field(s) {unknown}; the fields are {sorted(known)}')
        config = NAMED[base].with_changes(**{k: _coerce(k, v, spec) for k, v in data.items()})
        where = spec
        if 'name' not in data:
            config = config.with_changes(name=spec.rsplit('/', 1)[-1].rsplit('.', 1)[0])
    for item in overrides or []:
        key, sep, value = item.partition('=')
        if not sep or key not in known:
            raise DataError(f'--set {item!r}: expected FIELD=VALUE with FIELD one of {sorted(known)}')
        config = config.with_changes(**{key: _coerce(key, value, f'--set {key}')})
    return check(config, where)
