"""``--resume_from_checkpoint`` loads the checkpoint's weights into every tensor that trains, or stops the run.

Why this exists: transformers 5 saves a model through its checkpoint conversion mapping reversed
(``save_pretrained`` -> ``revert_weight_conversion``), so a Qwen2.5-VL checkpoint holds ``model.layers.*`` and
``visual.*`` while the live model's parameters are ``model.language_model.layers.*`` and ``model.visual.*``.
``from_pretrained`` maps the names forward again, but ``Trainer._load_from_checkpoint`` reads the same file with a
plain ``model.load_state_dict(state_dict, strict=False)`` (or ``load_sharded_checkpoint(..., strict=False)``):
no key matches, nothing loads, ``_issue_warnings_after_load`` logs two lists and training carries on from the
base weights. Full tuning without DeepSpeed (one process or DDP) takes that path; LoRA does not (PEFT's
``load_adapter`` keeps the live names) and neither does DeepSpeed (``deepspeed_load_checkpoint`` restores its own
``global_step*`` files, saved under the live names).

The same holds for an MoE whose experts transformers fuses on load (saved one expert at a time, the stock resume
left the experts at the base weights). The fix sits at that one point: ms-swift's trainers (``SwiftMixin``) get a
``_load_from_checkpoint`` that, for a checkpoint of full weights, maps each checkpoint key the stock path would
miss through the model's own conversion mapping (what ``from_pretrained`` uses), loads, and then checks that every
trainable tensor was loaded. For an adapter checkpoint the stock loader runs and the adapter's tensors are then
compared with the file. Any miss is a ``ResumeError`` naming the checkpoint and the first missing keys. Optimizer,
scheduler, RNG and data position are restored by the Trainer as before. Everything else (FSDP, SageMaker MP,
models that are not transformers models, checkpoints without weight files) goes to the stock loader unchanged.
"""
import json
import os
import re
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

import torch

SAFE_WEIGHTS = 'model.safetensors'
WEIGHTS = 'pytorch_model.bin'
SAFE_INDEX = 'model.safetensors.index.json'
INDEX = 'pytorch_model.bin.index.json'
ADAPTER_SAFE_WEIGHTS = 'adapter_model.safetensors'
ADAPTER_WEIGHTS = 'adapter_model.bin'
FSDP_MODEL_NAME = 'pytorch_model_fsdp'  # transformers.trainer's name for FSDP weight files
SHOWN_KEYS = 8  # how many missing keys an error names


class ResumeError(RuntimeError):
    """The checkpoint's weights do not cover the model's trainable tensors."""


def _logger():
    from swift.utils import get_logger
    return get_logger()


def weight_files(folder: str) -> Optional[List[str]]:
    """The full-model weight files of a checkpoint folder (shards in index order), or None if it has none."""
    for index_name in (SAFE_INDEX, INDEX):
        index = os.path.join(folder, index_name)
        if os.path.isfile(index):
            with open(index, encoding='utf-8') as f:
                shards = dict.fromkeys(json.load(f)['weight_map'].values())
            return [os.path.join(folder, shard) for shard in shards]
    for name in (SAFE_WEIGHTS, WEIGHTS):
        if os.path.isfile(os.path.join(folder, name)):
            return [os.path.join(folder, name)]
    return None


def _read(path: str) -> Dict[str, torch.Tensor]:
    if path.endswith('.safetensors'):
        from safetensors.torch import load_file
        return load_file(path, device='cpu')
    return torch.load(path, map_location='cpu', weights_only=True)


def _read_shards(files: Iterable[str]) -> Iterator[Dict[str, torch.Tensor]]:
    for path in files:
        yield _read(path)


class KeyMapper:
    """Maps checkpoint keys to the live model's names, as ``from_pretrained`` would, for keys that do not match.

    transformers 5: the model's weight conversions (``_weight_conversions``, set by ``from_pretrained``, else
    ``get_model_conversion_mapping``), run forward: renamings (Qwen2.5-VL's ``model.*`` -> ``model.language_model.*``,
    ``visual.*`` -> ``model.visual.*``) map a key at once; a key that a converter builds a tensor from (an MoE's
    per-expert weights fused into one) is held until every shard is read, then converted (``finish``).
    transformers 4: the model's ``_checkpoint_conversion_mapping`` (regex -> replacement).
    """

    def __init__(self, model):
        self.model = model
        self.model_keys = set(model.state_dict().keys())
        self._rename = None
        self._pending: Dict[str, Tuple[object, Dict[str, torch.Tensor], str]] = {}  # target -> (converter, sources)
        try:
            from transformers.conversion_mapping import get_model_conversion_mapping
            from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key
        except ImportError:
            legacy = getattr(model, '_checkpoint_conversion_mapping', None) or {}
            if legacy:
                self._rename = lambda key: (self._legacy_rename(legacy, key), None)
            return
        conversions = getattr(model, '_weight_conversions', None)
        if conversions is None:
            conversions = get_model_conversion_mapping(model)
        renamings = [c for c in conversions if isinstance(c, WeightRenaming)]
        converters = [c for c in conversions if isinstance(c, WeightConverter)]
        self._converters = {pattern: c for c in converters for pattern in c.source_patterns}
        prefix = getattr(model, 'base_model_prefix', None) or None
        meta = dict.fromkeys(self.model_keys, True)
        self._rename = lambda key: rename_source_key(key, renamings, converters, prefix, meta)

    @staticmethod
    def _legacy_rename(mapping: Dict[str, str], key: str) -> str:
        for pattern, replacement in mapping.items():
            key, n = re.subn(pattern, replacement, key)
            if n:
                break
        return key

    def map(self, shard: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], List[str], int]:
        """(live name -> tensor ready to load, keys that match nothing, how many were renamed) of one shard."""
        state, unmatched, renamed = {}, [], 0
        for key, tensor in shard.items():
            if key in self.model_keys:
                state[key] = tensor
                continue
            name, pattern = self._rename(key) if self._rename is not None else (None, None)
            if pattern is not None:
                self._pending.setdefault(name, (self._converters[pattern], {}, pattern))[1][key] = tensor
            elif name in self.model_keys:
                state[name] = tensor
                renamed += 1
            else:
                unmatched.append(key)
        return state, unmatched, renamed

    def finish(self) -> Tuple[Dict[str, torch.Tensor], List[str]]:
        """The converted tensors of the held keys (live name -> tensor), and the held keys that built none."""
        from copy import deepcopy

        from transformers.core_model_loading import dot_natural_key
        state, unmatched = {}, []
        for target, (template, sources, _) in self._pending.items():
            converter = deepcopy(template)
            for key in sorted(sources, key=dot_natural_key):  # expert order, as transformers' own loader
                _, pattern = self._rename(key)
                converter.add_tensor(target, key, pattern, sources[key])
            for name, value in converter.convert(target, model=self.model, config=self.model.config).items():
                value = value[0] if isinstance(value, list) else value
                if name in self.model_keys:
                    state[name] = value
                else:
                    unmatched.extend(sorted(sources))
        self._pending.clear()
        return state, unmatched


def _aliases(model) -> List[Tuple[str, List[str]]]:
    """(first name, every name) of each trainable parameter; tied parameters have several names."""
    names: Dict[int, List[str]] = {}
    first: Dict[int, str] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        if param.requires_grad:
            names.setdefault(id(param), []).append(name)
            first.setdefault(id(param), name)
    return [(first[key], names[key]) for key in first]


def _ignored_on_save(model, name: str) -> bool:
    return any(re.search(pattern, name) for pattern in getattr(model, '_keys_to_ignore_on_save', None) or [])


def _missing_error(checkpoint: str, what: str, missing: List[str], total: int, loaded: int, extra: str = ''):
    shown = ', '.join(missing[:SHOWN_KEYS]) + (f' (and {len(missing) - SHOWN_KEYS} more)'
                                               if len(missing) > SHOWN_KEYS else '')
    return ResumeError(
        f'--resume_from_checkpoint {checkpoint}: {len(missing)} of the {total} trainable {what} did not come from the '
        f'checkpoint ({loaded} matched), so the run would not continue from it. First missing: {shown}.{extra} '
        'Check that the checkpoint belongs to this model and --tuner_type; to start from its weights without its '
        'training state, pass it as --model (full) or --adapters (LoRA) instead.')


def load_full_checkpoint(model, checkpoint: str, files: Optional[List[str]] = None) -> Dict[str, int]:
    """Load a full-weights checkpoint into ``model`` (a transformers model, unwrapped) through the model's key
    mapping, shard by shard, and raise ``ResumeError`` unless every trainable tensor was loaded."""
    files = files or weight_files(checkpoint)
    if not files:
        raise ResumeError(f'--resume_from_checkpoint {checkpoint}: no model weights found ({SAFE_WEIGHTS}, {WEIGHTS} '
                          'or a sharded index).')
    mapper = KeyMapper(model)
    loaded, unexpected, renamed = set(), [], 0
    for shard in _read_shards(files):
        state, unmatched, count = mapper.map(shard)
        model.load_state_dict(state, strict=False)  # a shape mismatch raises here
        loaded.update(state)
        unexpected += unmatched
        renamed += count
        del shard, state
    state, unmatched = mapper.finish()
    if state:
        model.load_state_dict(state, strict=False)
        loaded.update(state)
        renamed += len(state)
    unexpected += unmatched
    aliases = [(first, names) for first, names in _aliases(model)
               if not all(_ignored_on_save(model, n) for n in names)]
    missing = [first for first, names in aliases if not loaded.intersection(names)]
    if missing:
        extra = ''
        if unexpected:
            extra = f' Checkpoint keys that matched no parameter: {", ".join(unexpected[:SHOWN_KEYS])}.'
        raise _missing_error(checkpoint, 'tensors', missing, len(aliases), len(aliases) - len(missing), extra)
    if unexpected:
        _logger().warning(f'Resuming from {checkpoint}: {len(unexpected)} checkpoint tensors matched no parameter '
                          f'of the model and were not loaded: {unexpected[:SHOWN_KEYS]}')
    report = {'loaded': len(loaded), 'renamed': renamed, 'trainable': len(aliases)}
    _logger().info(f'Resumed model weights from {checkpoint}: {len(loaded)} tensors loaded ({renamed} through the '
                   f"model's checkpoint key mapping); all {len(aliases)} trainable tensors came from the checkpoint.")
    return report


def check_adapter_checkpoint(model, checkpoint: str) -> Dict[str, int]:
    """After the stock adapter load: every tensor of the active adapter equals the checkpoint's, else ResumeError."""
    from peft import get_peft_model_state_dict
    adapter = model.active_adapters[0] if hasattr(model, 'active_adapters') else 'default'
    folder = checkpoint
    if not any(os.path.isfile(os.path.join(folder, n)) for n in (ADAPTER_SAFE_WEIGHTS, ADAPTER_WEIGHTS)):
        folder = os.path.join(checkpoint, adapter)  # several adapters: one sub-folder each
    path = next((os.path.join(folder, n) for n in (ADAPTER_SAFE_WEIGHTS, ADAPTER_WEIGHTS)
                 if os.path.isfile(os.path.join(folder, n))), None)
    if path is None:
        raise ResumeError(f'--resume_from_checkpoint {checkpoint}: no adapter weights for adapter {adapter!r} '
                          f'({ADAPTER_SAFE_WEIGHTS} or {ADAPTER_WEIGHTS}).')
    saved = _read(path)
    live = get_peft_model_state_dict(model, adapter_name=adapter)
    missing = [k for k, v in live.items() if k not in saved or not torch.equal(v.detach().cpu(), saved[k].to(v.dtype))]
    if missing:
        raise _missing_error(checkpoint, 'adapter tensors', missing, len(live), len(live) - len(missing),
                             f' (compared with {path})')
    _logger().info(f'Resumed adapter {adapter!r} from {checkpoint}: all {len(live)} adapter tensors equal the '
                   'checkpoint\'s.')
    return {'loaded': len(live), 'trainable': len(live)}


def make_load_from_checkpoint(owner, stock):
    """The ``_load_from_checkpoint`` to set on ``owner`` (ms-swift's SwiftMixin); ``stock`` is transformers'."""

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        from transformers import PreTrainedModel
        target = self.model if model is None else model
        files = weight_files(resume_from_checkpoint) if os.path.isdir(resume_from_checkpoint) else None
        fsdp = getattr(self, 'is_fsdp_enabled', False) or (
            os.path.isdir(resume_from_checkpoint)
            and any(FSDP_MODEL_NAME in name for name in os.listdir(resume_from_checkpoint)))
        if files and not fsdp and isinstance(target, PreTrainedModel) and not _sagemaker_mp():
            load_full_checkpoint(target, resume_from_checkpoint, files)
            return
        super(owner, self)._load_from_checkpoint(resume_from_checkpoint, model)
        if not files and not fsdp and _is_peft(target):
            check_adapter_checkpoint(target, resume_from_checkpoint)

    _load_from_checkpoint.__doc__ = stock.__doc__
    _load_from_checkpoint._swift_apo_resume = True
    return _load_from_checkpoint


def _sagemaker_mp() -> bool:
    try:
        from transformers.utils import is_sagemaker_mp_enabled
    except ImportError:
        return False
    return is_sagemaker_mp_enabled()


def _is_peft(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)
