"""Test-only shim: lets ``NPROC_PER_NODE=2 swift ... --deepspeed`` run as two real DeepSpeed ranks on a CPU.

Put this folder on PYTHONPATH of a test's ``swift`` subprocess. On a machine without an accelerator, accelerate's
``PartialState`` picks no backend for a DeepSpeed launch (it only knows accelerator backends there), so
transformers counts one process while DeepSpeed counts two: the batch-size check fails, and the ranks' data is not
split. This makes accelerate choose gloo for that case, as it does for plain CPU DDP, so both sides agree on two
ranks. Nothing changes on a machine with an accelerator or outside a DeepSpeed launch.
"""
import os

from swift_plugin.import_hook import when_imported


def _patch(module):
    from accelerate.utils import DistributedType
    state = module.PartialState
    prepare = state._prepare_backend

    def _prepare_backend(self, cpu=False, sagemaker_dp=False, backend=None):
        found, kind = prepare(self, cpu, sagemaker_dp, backend)
        if (found is None and kind == DistributedType.NO and not cpu and int(os.environ.get('LOCAL_RANK', -1)) != -1
                and os.environ.get('ACCELERATE_USE_DEEPSPEED', 'false').lower() == 'true'):
            return 'gloo', DistributedType.MULTI_CPU
        return found, kind

    state._prepare_backend = _prepare_backend


if os.environ.get('LOCAL_RANK') is not None:
    when_imported('accelerate.state', _patch)
