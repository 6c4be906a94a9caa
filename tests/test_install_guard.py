"""Installing swift-apo never breaks other swift commands.

The ``.pth`` hook patches ms-swift in every interpreter of the environment. On an ms-swift outside the
supported range, or where a patch target changed, it patches nothing but the argument class, which refuses
``--rlhf_type apo`` naming the supported versions; where it does patch, stock commands log what they log
without it.
"""
import json
import os
import re
import subprocess
import sys
import types

import pytest
from packaging.specifiers import SpecifierSet

from conftest import REPO, read_logs, run_swift, text_training_args, write_dpo_rows
from swift_plugin import registration
from swift_plugin.registration import SUPPORTED_MS_SWIFT, TESTED_MS_SWIFT

# In a fresh interpreter of this environment: which ms-swift targets carry a swift-apo patch, and why
# --rlhf_type apo cannot run (null when it can).
_PATCH_REPORT = '''
import json
from swift.arguments import RLHFArguments
from swift.dataset.preprocessor.core import RowPreprocessor
from swift.pipelines.train.rlhf import SwiftRLHF
from swift.template import Template
from swift.trainers import TrainerFactory
from swift.trainers.mixin import SwiftMixin
from swift_plugin.registration import apo_problem

def from_plugin(func):
    return 'swift_plugin' in getattr(func, '__func__', func).__code__.co_filename

print(json.dumps({'patched': {
    'RLHFArguments.__post_init__': from_plugin(RLHFArguments.__post_init__),
    'Template.encode': from_plugin(Template.encode),
    'Template.data_collator': from_plugin(Template.data_collator),
    'SwiftRLHF._prepare_template': from_plugin(SwiftRLHF._prepare_template),
    'SwiftRLHF.prepare_model': from_plugin(SwiftRLHF.prepare_model),
    'SwiftRLHF._get_dataset': from_plugin(SwiftRLHF._get_dataset),
    'TrainerFactory.TRAINER_MAPPING': 'apo' in TrainerFactory.TRAINER_MAPPING,
    'RowPreprocessor.standard_keys': 'rejected_sources' in RowPreprocessor.standard_keys,
    'SwiftMixin._load_from_checkpoint': ('_load_from_checkpoint' in vars(SwiftMixin)
                                         and from_plugin(SwiftMixin._load_from_checkpoint)),
}, 'apo_problem': apo_problem()}))
'''


@pytest.fixture
def unsupported_ms_swift(tmp_path):
    """Environment variables under which ms-swift reports itself as release 9.0.0 (its metadata comes first on
    sys.path; the code is still the installed ms-swift)."""
    dist_info = tmp_path / 'fake-version' / 'ms_swift-9.0.0.dist-info'
    dist_info.mkdir(parents=True)
    (dist_info / 'METADATA').write_text('Metadata-Version: 2.1\nName: ms-swift\nVersion: 9.0.0\n')
    return {'PYTHONPATH': os.pathsep.join(filter(None, [str(dist_info.parent), os.environ.get('PYTHONPATH')]))}


def _patch_report(env=None) -> dict:
    proc = subprocess.run([sys.executable, '-c', _PATCH_REPORT], env={**os.environ, 'HF_HUB_OFFLINE': '1', **(env or {})},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


def _refusal_pattern(problem: str) -> str:
    return (rf'--rlhf_type apo is unavailable: .*{problem}.*swift-apo supports '
            rf'ms-swift{re.escape(SUPPORTED_MS_SWIFT)} \(tested with {re.escape(TESTED_MS_SWIFT)}\)')


def test_declared_range_is_the_guarded_range():
    tomllib = pytest.importorskip('tomllib')
    dependencies = tomllib.loads((REPO / 'pyproject.toml').read_text())['project']['dependencies']
    assert f'ms-swift{SUPPORTED_MS_SWIFT}' in dependencies
    pinned = re.search(r'^ms[-_]swift==(\S+)$', (REPO / 'constraints.txt').read_text(), re.M).group(1)
    assert pinned == TESTED_MS_SWIFT and pinned in SpecifierSet(SUPPORTED_MS_SWIFT)


def test_installed_ms_swift_gets_every_patch():
    report = _patch_report()
    assert report['apo_problem'] is None
    assert all(report['patched'].values()), report['patched']


def test_unsupported_ms_swift_gets_only_the_apo_refusal(unsupported_ms_swift):
    report = _patch_report(unsupported_ms_swift)
    assert report['apo_problem'] == 'ms-swift 9.0.0 is not a supported release'
    patched = [target for target, is_patched in report['patched'].items() if is_patched]
    assert patched == ['RLHFArguments.__post_init__']


def test_unsupported_ms_swift_refuses_apo_on_the_command_line(tiny_text_model, tmp_path, unsupported_ms_swift):
    data = write_dpo_rows(tmp_path / 'dpo.jsonl', 2)
    proc = run_swift('rlhf', ['--rlhf_type', 'apo', *text_training_args(tiny_text_model, data)], tmp_path / 'out',
                     env=unsupported_ms_swift, check=False)
    assert proc.returncode != 0
    assert re.search(_refusal_pattern(r'ms-swift 9\.0\.0 is not a supported release'), proc.stderr), proc.stderr[-3000:]


def _changed_template_module():
    """ms-swift's ``swift.template.base`` as a release might change it: ``encode`` takes one more parameter."""

    class Template:

        def encode(self, inputs, return_template_inputs=False, return_length=False, add_generation_prompt=False):
            return 'encoded'

        def data_collator(self, batch, *, padding_to=None):
            return 'collated'

        def set_mode(self, mode):
            self.mode = mode

    return types.SimpleNamespace(__name__='swift.template.base', Template=Template)


@pytest.fixture
def fresh_guard(monkeypatch):
    """The installed ms-swift counts as supported, and no patch has failed yet."""
    monkeypatch.setattr(registration, 'version_problem', lambda: None)
    monkeypatch.setattr(registration, '_failed', {})


def test_changed_signature_leaves_the_target_alone_and_refuses_apo(fresh_guard):
    module = _changed_template_module()
    before = dict(vars(module.Template))
    registration.apply_patch('swift.template.base', module)
    assert dict(vars(module.Template)) == before
    expected = (f'ms-swift {registration.ms_swift_version()} differs from what swift-apo patches (swift.template.base: '
                'Template.encode takes (self, inputs, return_template_inputs, return_length, add_generation_prompt), '
                'not (self, inputs, return_template_inputs, return_length))')
    with pytest.raises(RuntimeError, match=_refusal_pattern(re.escape(expected))):
        registration.require_apo_patches()


def test_renamed_module_refuses_apo(fresh_guard, monkeypatch):
    monkeypatch.setitem(registration.PATCHES, 'swift.pipelines.train.rlhf_renamed', registration._patch_rlhf_pipeline)
    with pytest.raises(RuntimeError, match=_refusal_pattern(r'cannot import swift\.pipelines\.train\.rlhf_renamed')):
        registration.require_apo_patches()


# Logged figures that depend on the clock, not on the training.
_TIMING_KEYS = {'train_speed(s/it)', 'train_speed(iter/s)', 'elapsed_time', 'remaining_time', 'memory(GiB)',
                'train_runtime', 'train_samples_per_second', 'train_steps_per_second'}


@pytest.mark.parametrize('command', ['rlhf', 'sft'])
def test_stock_commands_log_the_same_with_the_plugin_installed(tiny_text_model, tmp_path, command):
    data = write_dpo_rows(tmp_path / 'dpo.jsonl', 6)
    args = text_training_args(tiny_text_model, data)
    if command == 'rlhf':
        args = ['--rlhf_type', 'dpo', *args, '--beta', '0.1']
    logs = {}
    for name, env in [('installed', {}), ('disabled', {'SWIFT_APO_DISABLE': '1'})]:
        run_swift(command, args, tmp_path / name, env=env)
        logs[name] = [{k: v for k, v in line.items() if k not in _TIMING_KEYS} for line in read_logs(tmp_path / name)]
    assert len(logs['installed']) == 3
    assert logs['installed'] == logs['disabled']
    assert logs['installed'][-1]['loss'] != logs['installed'][0]['loss'], 'the logs must come from a run that trains'
