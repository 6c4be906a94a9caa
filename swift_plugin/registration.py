"""Everything that teaches ms-swift ``--rlhf_type apo``, in one place.

Each patch targets one ms-swift module and runs right after that module is imported (or at once
if it already is), so nothing here imports ms-swift eagerly and the cost at interpreter start-up
is nil. APO reuses ms-swift's DPO machinery wherever DPO's behaviour is the right one (reference
model creation for full tuning, ``--ref_adapters``, DPOConfig, loss bookkeeping); the patches make
those ``rlhf_type == 'dpo'`` gates see APO as DPO and add what DPO lacks: the ``'apo'`` template
mode (K rejected answers per row), the trainer, and row checks that name the offending row.

The patches are written against ms-swift's internals, and the hook runs in every interpreter of the
environment, so a patch must never break a command that does not use APO. Each patch therefore checks
its target (the attributes it touches, the parameter names its wrapper forwards) before changing
anything, and on an ms-swift outside ``SUPPORTED_MS_SWIFT`` nothing is patched but the argument
class, which then refuses ``--rlhf_type apo`` with the reason.
"""
import importlib
import inspect
from contextlib import contextmanager
from dataclasses import dataclass, fields
from functools import lru_cache, partial, wraps
from typing import Dict, Literal, Optional, get_args

from .options import APOArguments

APO = 'apo'
# pyproject.toml declares the same range (a test checks that they agree). 4.5.3 was checked: APO's
# template code needs 4.6.0's get_last_user_round(include_tool=...), so it is refused.
SUPPORTED_MS_SWIFT = '>=4.6,<4.7'
TESTED_MS_SWIFT = '4.6.0'
TRAINER_PATH = 'swift_plugin.trainer.APOTrainer'
# DPO features built on exactly two sequences per row; APO refuses them with a clear message.
_UNSUPPORTED_FLAGS = ('packing', 'padding_free', 'ld_alpha', 'loss_weights')


@contextmanager
def as_dpo(args):
    """Let ms-swift's DPO-only code paths run for an APO run."""
    if getattr(args, 'rlhf_type', None) != APO:
        yield
        return
    args.rlhf_type = 'dpo'
    try:
        yield
    finally:
        args.rlhf_type = APO


class TargetChanged(Exception):
    """A patch target is not what the patch was written for; the patch leaves it alone."""


def require(owner, name: str, *params: str):
    """``owner.name``, failing unless it exists and (for a function) its parameters are exactly ``params``."""
    target = getattr(owner, name, None)
    if target is None:
        raise TargetChanged(f'{owner.__name__}.{name} does not exist')
    if params:
        found = tuple(inspect.signature(target).parameters)
        if found != params:
            raise TargetChanged(f'{owner.__name__}.{name} takes ({", ".join(found)}), not ({", ".join(params)})')
    return target


def ms_swift_version() -> Optional[str]:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version('ms-swift')
    except PackageNotFoundError:
        return None


@lru_cache(maxsize=None)
def version_problem() -> Optional[str]:
    """Why this environment's ms-swift is not one the patches were tested with, or None.

    Asked only once an ms-swift module is imported: transformers has imported ``packaging`` by then,
    and interpreters that never import ms-swift pay nothing.
    """
    from packaging.specifiers import SpecifierSet
    found = ms_swift_version()
    if found is None:
        return 'the version of ms-swift is unknown (no package metadata)'
    if not SpecifierSet(SUPPORTED_MS_SWIFT).contains(found, prereleases=True):
        return f'ms-swift {found} is not a supported release'
    return None


# Patch target module -> why its patch was not applied.
_failed: Dict[str, str] = {}


def apo_problem() -> Optional[str]:
    """Why ``--rlhf_type apo`` cannot run in this environment, or None once every patch is in place."""
    problem = version_problem()
    if problem:
        return problem
    changed = []
    for module_name in PATCHES:
        try:
            importlib.import_module(module_name)  # runs its patch if it has not run yet
        except ModuleNotFoundError as missing:
            changed.append(f'cannot import {module_name} ({missing})')
    changed += [f'{module_name}: {why}' for module_name, why in _failed.items()]
    if changed:
        return f'ms-swift {ms_swift_version()} differs from what swift-apo patches ({"; ".join(changed)})'
    return None


def require_apo_patches() -> None:
    problem = apo_problem()
    if problem:
        raise RuntimeError(f'--rlhf_type apo is unavailable: {problem}. swift-apo supports '
                           f'ms-swift{SUPPORTED_MS_SWIFT} (tested with {TESTED_MS_SWIFT}).')


def check_apo_arguments(args) -> None:
    problems = [f'--{flag}' for flag in _UNSUPPORTED_FLAGS if getattr(args, flag, None)]
    if getattr(args, 'sequence_parallel_size', 1) > 1:
        problems.append('--sequence_parallel_size > 1')
    if args.truncation_strategy == 'split':
        problems.append('--truncation_strategy split')
    if not 0 <= args.label_smoothing < 0.5:
        problems.append(f'--label_smoothing {args.label_smoothing} (it must lie in [0, 0.5))')
    loss_type = args.loss_type
    if isinstance(loss_type, (list, tuple)) and len(loss_type) == 1:
        loss_type = loss_type[0]
    if loss_type not in (None, 'sigmoid'):
        problems.append(f'--loss_type {loss_type} (APO has its own loss; K = 1 is DPO sigmoid)')
    if problems:
        raise ValueError(f'--rlhf_type apo does not support: {", ".join(problems)}.')


def _patch_arguments(module) -> None:
    cls = require(module, 'RLHFArguments')
    post_init = require(cls, '__post_init__', 'self')
    field = cls.__dataclass_fields__.get('rlhf_type')
    if field is None or 'dpo' not in get_args(field.type):
        raise TargetChanged("RLHFArguments.rlhf_type is no longer a Literal with 'dpo'")
    if APO in get_args(field.type):
        return
    rlhf_type = Literal[get_args(field.type) + (APO, )]
    cls.__annotations__['rlhf_type'] = rlhf_type
    field.type = rlhf_type

    @wraps(post_init)
    def __post_init__(self):
        if self.rlhf_type == APO:
            require_apo_patches()
            check_apo_arguments(self)
            self.resolve_apo_options()  # so that args.json records what the run used
        with as_dpo(self):
            post_init(self)
        if self.rlhf_type == APO:
            # ms-swift built the trainer's arguments (DPO's, under as_dpo) from the fields they declare; the
            # trainer reads the APO options there.
            for option in fields(APOArguments):
                setattr(self.training_args, option.name, getattr(self, option.name))

    cls.__post_init__ = __post_init__
    # The --apo_* options join ms-swift's RLHF arguments (its parser, --help and args.json read the dataclass
    # fields): the module's class becomes a dataclass with them, before swift.arguments re-exports it.
    module.RLHFArguments = dataclass(
        type(cls.__name__, (APOArguments, cls), {'__module__': cls.__module__, '__qualname__': cls.__qualname__}))


def _patch_trainer_factory(module) -> None:
    factory = require(module, 'TrainerFactory')
    for mapping in ('TRAINER_MAPPING', 'TRAINING_ARGS_MAPPING'):
        if 'dpo' not in getattr(factory, mapping, {}):
            raise TargetChanged(f"TrainerFactory.{mapping} has no 'dpo' entry")
    factory.TRAINER_MAPPING.setdefault(APO, TRAINER_PATH)
    factory.TRAINING_ARGS_MAPPING.setdefault(APO, factory.TRAINING_ARGS_MAPPING['dpo'])


def _patch_template(module) -> None:
    cls = require(module, 'Template')
    encode = require(cls, 'encode', 'self', 'inputs', 'return_template_inputs', 'return_length')
    data_collator = require(cls, 'data_collator', 'self', 'batch', 'padding_to')
    require(cls, 'set_mode', 'self', 'mode')
    if getattr(cls, '_apo_patched', False):
        return

    @wraps(encode)
    def apo_aware_encode(self, inputs, return_template_inputs=False, return_length=False):
        if self.mode != APO:
            return encode(self, inputs, return_template_inputs=return_template_inputs, return_length=return_length)
        from .template import encode_apo_row
        return encode_apo_row(self, inputs, return_length=return_length)

    @wraps(data_collator)
    def apo_aware_data_collator(self, batch, *, padding_to=None):
        if self.mode != APO:
            return data_collator(self, batch, padding_to=padding_to)
        from .template import collate_apo_rows
        return collate_apo_rows(self, batch, padding_to=padding_to)

    cls.encode, cls.data_collator, cls._apo_patched = apo_aware_encode, apo_aware_data_collator, True


def _patch_row_preprocessor(module) -> None:
    keys = getattr(require(module, 'RowPreprocessor'), 'standard_keys', None)
    if not isinstance(keys, list):
        raise TargetChanged('RowPreprocessor.standard_keys is not a list')
    if 'rejected_sources' not in keys:
        keys.append('rejected_sources')


def _patch_rlhf_pipeline(module) -> None:
    cls = require(module, 'SwiftRLHF')
    prepare_template = require(cls, '_prepare_template', 'self')
    prepare_model = require(cls, 'prepare_model', 'args', 'model', 'template', 'train_dataset', 'task_type').__func__
    get_dataset = require(cls, '_get_dataset', 'self')
    if getattr(cls, '_apo_patched', False):
        return

    @wraps(prepare_template)
    def _prepare_template(self):
        prepare_template(self)
        if self.args.rlhf_type == APO:
            self.template.set_mode(APO)
            # read by the APO encoding, which runs where the arguments are not at hand (dataset workers too)
            self.template.apo_drop_long_rejected = self.args.apo_drop_long_rejected

    @wraps(prepare_model)
    def _prepare_model(cls_, args, model, **kwargs):
        with as_dpo(args):  # ms-swift only allows --ref_adapters for dpo/kto/grpo
            return prepare_model(cls_, args, model, **kwargs)

    @wraps(get_dataset)
    def _get_dataset(self):
        if self.args.rlhf_type != APO:
            return get_dataset(self)
        from .length_check import drop_over_long_rows
        from .rows import local_dataset_file, validate_dataset_file
        for spec in list(self.args.dataset) + list(self.args.val_dataset):
            path = local_dataset_file(spec)
            if path is not None:
                validate_dataset_file(path, self.args.columns)
        return drop_over_long_rows(self.args, self.template, *get_dataset(self))

    cls._prepare_template, cls.prepare_model, cls._get_dataset = _prepare_template, classmethod(
        _prepare_model), _get_dataset
    cls._apo_patched = True


PATCHES = {
    'swift.arguments.rlhf_args': _patch_arguments,
    'swift.trainers.trainer_factory': _patch_trainer_factory,
    'swift.template.base': _patch_template,
    'swift.dataset.preprocessor.core': _patch_row_preprocessor,
    'swift.pipelines.train.rlhf': _patch_rlhf_pipeline,
}


def apply_patch(module_name: str, module) -> None:
    """Apply the patch of ``module_name`` to the imported ``module`` if ms-swift is a supported version and the
    patch's targets are as expected; otherwise leave the module alone and remember why."""
    patch = PATCHES[module_name]
    if version_problem() and patch is not _patch_arguments:
        return  # only the argument class is touched, to refuse --rlhf_type apo with the reason
    try:
        patch(module)
    except TargetChanged as changed:
        _failed[module_name] = str(changed)


def install() -> None:
    """Arm every patch; safe to call more than once and before or after ms-swift is imported."""
    from .import_hook import when_imported
    for module_name in PATCHES:
        when_imported(module_name, partial(apply_patch, module_name))
