"""Everything that teaches ms-swift ``--rlhf_type apo``, in one place.

Each patch targets one ms-swift module and runs right after that module is imported (or at once
if it already is), so nothing here imports ms-swift eagerly and the cost at interpreter start-up
is nil. APO reuses ms-swift's DPO machinery wherever DPO's behaviour is the right one (reference
model creation for full tuning, ``--ref_adapters``, DPOConfig, loss bookkeeping); the patches make
those ``rlhf_type == 'dpo'`` gates see APO as DPO and add what DPO lacks: the ``'apo'`` template
mode (K rejected answers per row), the trainer, and row checks that name the offending row.
"""
from contextlib import contextmanager
from functools import wraps
from typing import Literal, get_args

APO = 'apo'
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


def check_apo_arguments(args) -> None:
    problems = [f'--{flag}' for flag in _UNSUPPORTED_FLAGS if getattr(args, flag, None)]
    if getattr(args, 'sequence_parallel_size', 1) > 1:
        problems.append('--sequence_parallel_size > 1')
    if args.truncation_strategy == 'split':
        problems.append('--truncation_strategy split')
    loss_type = args.loss_type
    if isinstance(loss_type, (list, tuple)) and len(loss_type) == 1:
        loss_type = loss_type[0]
    if loss_type not in (None, 'sigmoid'):
        problems.append(f'--loss_type {loss_type} (APO has its own loss; K = 1 is DPO sigmoid)')
    if problems:
        raise ValueError(f'--rlhf_type apo does not support: {", ".join(problems)}.')


def _patch_arguments(module) -> None:
    cls = module.RLHFArguments
    if APO in get_args(cls.__dataclass_fields__['rlhf_type'].type):
        return
    rlhf_type = Literal[tuple(get_args(cls.__annotations__['rlhf_type'])) + (APO, )]
    cls.__annotations__['rlhf_type'] = rlhf_type
    cls.__dataclass_fields__['rlhf_type'].type = rlhf_type
    post_init = cls.__post_init__

    @wraps(post_init)
    def __post_init__(self):
        if self.rlhf_type == APO:
            check_apo_arguments(self)
        with as_dpo(self):
            post_init(self)

    cls.__post_init__ = __post_init__


def _patch_trainer_factory(module) -> None:
    factory = module.TrainerFactory
    factory.TRAINER_MAPPING.setdefault(APO, TRAINER_PATH)
    factory.TRAINING_ARGS_MAPPING.setdefault(APO, factory.TRAINING_ARGS_MAPPING['dpo'])


def _patch_template(module) -> None:
    cls = module.Template
    if getattr(cls, '_apo_patched', False):
        return
    encode, data_collator = cls.encode, cls.data_collator

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
    keys = module.RowPreprocessor.standard_keys
    if 'rejected_sources' not in keys:
        keys.append('rejected_sources')


def _patch_rlhf_pipeline(module) -> None:
    cls = module.SwiftRLHF
    if getattr(cls, '_apo_patched', False):
        return
    prepare_template, prepare_model, get_dataset = cls._prepare_template, cls.prepare_model.__func__, cls._get_dataset

    @wraps(prepare_template)
    def _prepare_template(self):
        prepare_template(self)
        if self.args.rlhf_type == APO:
            self.template.set_mode(APO)

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


def install() -> None:
    """Arm every patch; safe to call more than once and before or after ms-swift is imported."""
    from .import_hook import when_imported
    for module_name, patch in PATCHES.items():
        when_imported(module_name, patch)
