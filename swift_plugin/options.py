"""Every APO option in one dataclass: the ``--apo_*`` arguments the plugin adds to ms-swift's RLHF arguments.

They show in ``swift rlhf --help`` and are saved in the run folder's ``args.json`` like any ms-swift argument.
Each one left unset falls back to its environment variable (``APO_SHARED_PREFIX`` and so on, the switches of
earlier releases), else to its default; the argument wins over the variable. Nothing else in the plugin reads
the environment for them. Imports nothing but the standard library: the import hook loads it at interpreter start.
"""
import os
from dataclasses import dataclass, field, fields
from typing import Literal, Optional

PREFIX_KERNELS = ('auto', 'flash', 'flex', 'dense')
DEFAULT_CHUNK_SIZE = 512  # answer tokens per head call of the lean log-probs
_TRUE, _FALSE = ('1', 'true', 'yes', 'on'), ('0', 'false', 'no', 'off')


# option -> (its environment variable, its default)
FALLBACKS = {
    'apo_shared_prefix': ('APO_SHARED_PREFIX', True),
    'apo_prefix_kernel': ('APO_PREFIX_KERNEL', 'auto'),
    'apo_lean_logps': ('APO_LEAN_LOGPS', True),
    'apo_logps_chunk_size': ('APO_LOGPS_CHUNK_SIZE', DEFAULT_CHUNK_SIZE),
    'apo_drop_long_rejected': ('APO_DROP_LONG_REJECTED', False),
    'apo_length_check': ('APO_LENGTH_CHECK', True),
}


def _option(name: str, help: str):
    env, default = FALLBACKS[name]
    # the metadata goes to argparse as keywords: help only
    return field(default=None, metadata={'help': f'{help} Default {default}; unset: ${env}, else the default.'})


@dataclass
class APOArguments:
    apo_shared_prefix: Optional[bool] = _option(
        'apo_shared_prefix', 'Shared-prefix forward: each image and prompt through the model once per row, its '
        'K + 1 answers after it under a block-causal rule (falls back, logged, where it does not apply).')
    apo_prefix_kernel: Optional[Literal[PREFIX_KERNELS]] = _option(
        'apo_prefix_kernel', 'Attention kernel of the shared-prefix forward: flash (flash-attention varlen), '
        'flex (FlexAttention block mask), dense (4D mask), auto (flash where its check passes, else dense).')
    apo_lean_logps: Optional[bool] = _option(
        'apo_lean_logps', 'Lean log-probs: the vocabulary head on answer tokens only, chunk by chunk, instead '
        'of full logits.')
    apo_logps_chunk_size: Optional[int] = _option(
        'apo_logps_chunk_size', 'Answer tokens per head call of the lean log-probs (peak about '
        '3 x chunk x vocabulary floats; under ZeRO-3 fewer, larger chunks gather the head less often).')
    apo_drop_long_rejected: Optional[bool] = _option(
        'apo_drop_long_rejected', 'Under --truncation_strategy delete, drop only the rejected answers over '
        '--max_length instead of their whole rows.')
    apo_length_check: Optional[bool] = _option(
        'apo_length_check', 'Count (per source) and remove the rows and answers over --max_length before '
        'training.')

    def resolve_apo_options(self) -> None:
        """Set every option left unset from its environment variable, else its default, and check the values."""
        for option in fields(APOArguments):
            value, origin = getattr(self, option.name), f'--{option.name}'
            if value is None:
                env, default = FALLBACKS[option.name]
                raw = os.environ.get(env, '').strip()
                origin = f'{env}={raw!r}'
                value = _parse(raw, default, origin) if raw else default
            _check(option.name, value, origin)
            setattr(self, option.name, value)


def _parse(raw: str, default, origin: str):
    if isinstance(default, bool):
        if raw.lower() in _TRUE + _FALSE:
            return raw.lower() in _TRUE
        raise ValueError(f'{origin}: expected one of {", ".join(_TRUE + _FALSE)}')
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f'{origin}: expected a whole number') from None
    return raw.lower()


def _check(name: str, value, origin: str) -> None:
    if name == 'apo_prefix_kernel' and value not in PREFIX_KERNELS:
        raise ValueError(f'{origin}: expected one of {", ".join(PREFIX_KERNELS)}')
    if name == 'apo_logps_chunk_size' and value < 1:
        raise ValueError(f'{origin}: the chunk size must be positive')
