"""The model families of tools/tiny_models.py: what the builder writes, and APO on each through ms-swift.

The builder's models use each family's real transformers classes; ms-swift must detect the family from the directory
and its template must encode an image row that the model runs. The coverage runs (tools/family_coverage.py, one
process per family: `swift rlhf --rlhf_type apo` with LoRA, fast and plain, with full tuning too for the Qwen
families, then `swift sft` and `swift infer`) must show every fast path either in use with the plain path's logged
numbers or off with the reason it logged, and docs/models.md must be the table of those runs.

`APO_FAMILIES=all` runs every family's coverage; the default is FAMILIES_IN_CI below. `APO_COVERAGE_DIR=DIR` keeps
the runs' records there, for `python tools/family_coverage.py table DIR --out docs/models.md` (see docs/models.md).
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import REPO
from tiny_models import FAMILIES

sys.path.insert(0, str(REPO / 'tools'))
import family_coverage  # noqa: E402

# The families whose coverage runs in the default test run (one of each kind of image layout, position scheme and
# layer type; about 6 minutes on 2 cores); the others run with APO_FAMILIES=all (about 10 minutes for all 14).
FAMILIES_IN_CI = ['qwen2.5-vl', 'qwen3-vl', 'qwen3.5', 'internvl3.5', 'llava-onevision', 'gemma3', 'glm4.1v', 'llama3']
COVERED = list(FAMILIES) if os.environ.get('APO_FAMILIES') == 'all' else FAMILIES_IN_CI
# Fast paths that a family does not take, and the reason its run must log.
EXPECTED_OFF = {
    'gemma3': {'shared_prefix': "the model has ['sliding_attention'] layers (only full and linear attention pack)"},
}


# ----------------------------------------------------------------------------------------------------------------
# the builder
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('name', list(FAMILIES))
def test_family_model_loads_through_ms_swift_and_runs_its_template(name, family_model, tmp_path):
    """ms-swift detects model_type and template from the directory (no flags), loads the real classes, and the
    template's encoding of an image row runs through the model; every special token sits at the family's id and
    the config's image token is the tokenizer's."""
    from swift.model import get_model_processor
    from swift.template import get_template
    from swift.template.register import get_template_meta
    family = FAMILIES[name]
    model, processor = get_model_processor(family_model(name), torch_dtype=torch.float32)
    assert type(model).__name__ == family.architecture
    assert (model.model_meta.model_type, model.model_info.model_type) == (family.model_type, family.model_type)
    tokenizer = processor.tokenizer if family.vision else processor
    for content, tid in family.tokenizer.ids.items():
        assert tokenizer.convert_tokens_to_ids(content) == tid and tokenizer.encode(content, add_special_tokens=False) \
            == [tid], content
    text = 'Findings: héllo 👋 — 肺\n  end'
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
    assert 1e6 < sum(p.numel() for p in model.parameters()) < 4e7

    template_meta = get_template_meta(model.model_info, model.model_meta)  # what --template defaults to
    assert template_meta.template_type == family.template
    template = get_template(processor, template_type=template_meta.template_type)
    template.set_mode('train')
    template.model = model
    row = {'messages': [{'role': 'user', 'content': 'Which findings?'}, {'role': 'assistant', 'content': 'None.'}]}
    if family.vision:
        Image.new('RGB', (56, 56), (200, 30, 90)).save(tmp_path / 'cxr.png')
        row = {'messages': [{**row['messages'][0], 'content': '<image>Which findings?'}, row['messages'][1]],
               'images': [str(tmp_path / 'cxr.png')]}
    batch = template.data_collator([template.encode(row)])
    if family.vision:
        image_token = model.config.image_token_id
        assert tokenizer.convert_ids_to_tokens(image_token) in {*dict(family.tokenizer.named).values(), '<|image_pad|>',
                                                                '<|image|>'}
        assert int((batch['input_ids'] == image_token).sum()) > 0
    template.register_post_encode_hook([model])
    try:
        with torch.no_grad():
            batch.pop('text_position_ids', None)
            labels = batch.pop('labels')
            logits = model(**batch).logits
    finally:
        template.remove_post_encode_hook()
    assert logits.shape[-1] == model.config.get_text_config().vocab_size and torch.isfinite(logits).all()
    answer = tokenizer.decode([t for t in labels[0].tolist() if t != -100])
    assert 'None.' in answer  # thinking templates (Qwen3, Qwen3.5, GLM-4.5V) put an empty think block first


@pytest.mark.parametrize('name', list(FAMILIES))
def test_a_released_checkpoint_of_each_family_is_detected_as_that_family(name):
    """ms-swift detects a hub id (or a folder of that name) by its name: `BASE_MODEL=<hub id>` needs no
    --model_type or --template, and gets the model type and template the tiny model of the family runs with."""
    from swift.model.model_meta import get_matched_model_meta
    family = FAMILIES[name]
    meta = get_matched_model_meta(family.hub_example)
    assert (meta.model_type, meta.template) == (family.model_type, family.template), family.hub_example


def test_builder_cli_lists_every_family_and_builds_one(tmp_path):
    listing = subprocess.run([sys.executable, str(REPO / 'tools' / 'tiny_models.py'), '--list'], capture_output=True,
                             text=True, check=True).stdout
    for family in FAMILIES.values():
        assert f'--model_type {family.model_type}' in listing and family.architecture in listing
    out = subprocess.run([sys.executable, str(REPO / 'tools' / 'tiny_models.py'), str(tmp_path / 'm'), '--family',
                          'qwen3-vl', '--num-layers', '1'], capture_output=True, text=True, check=True).stdout
    config = json.loads((tmp_path / 'm' / 'config.json').read_text())
    assert out.splitlines()[-1] == str(tmp_path / 'm') and config['text_config']['num_hidden_layers'] == 1
    assert json.loads((tmp_path / 'm' / 'args.json').read_text())['template'] == 'qwen3_vl'


# ----------------------------------------------------------------------------------------------------------------
# the coverage runs (one process per family) and docs/models.md
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope='session')
def coverage_records(family_model, tmp_path_factory):
    """name -> the record of tools/family_coverage.py's runs of that family (run on first use)."""
    out = Path(os.environ.get('APO_COVERAGE_DIR') or tmp_path_factory.mktemp('coverage'))
    records = {}

    def record(name):
        if name not in records:
            env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'OMP_NUM_THREADS': '2', 'PYTHONUNBUFFERED': '1'}
            proc = subprocess.run([sys.executable, str(REPO / 'tools' / 'family_coverage.py'), 'run', '--family', name,
                                   '--out', str(out), '--model', family_model(name)],
                                  env=env, capture_output=True, text=True, timeout=900)
            path = out / f'{name}.json'
            assert path.exists(), f'{name}: no record\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}'
            records[name] = json.loads(path.read_text())
            records[name]['output'] = proc.stderr[-6000:]
        return records[name]

    return record


@pytest.mark.parametrize('name', COVERED)
def test_apo_trains_every_family_with_the_fast_paths_exact_or_off_with_a_reason(name, coverage_records):
    record = coverage_records(name)
    family = FAMILIES[name]
    assert record['errors'] == {}, record['output']
    runs = record['apo']
    assert set(runs) == ({'lora', 'full'} if family.qwen else {'lora'})
    for tuning, run in runs.items():
        assert run['detected'] == {'model_type': family.model_type, 'template': family.template}
        assert run['plain_used'] == [], 'the plain run used a fast path'
        assert run['numbers_compared'] >= 20 and run['equal'], (tuning, run)
        for path in ('shared_prefix', 'lean_logps'):
            assert run[path] == EXPECTED_OFF.get(name, {}).get(path, 'in use'), (tuning, path, run[path])
        fast, plain = run['losses']['fast'], run['losses']['plain']
        assert fast[0] == pytest.approx(family_coverage.mean_log_1_plus_k(), abs=1e-4)  # policy = reference
        assert fast[1] != fast[0] and fast == pytest.approx(plain, rel=family_coverage.TOLERANCE)
    assert record['sft']['ok'] and all(math.isfinite(x) for x in record['sft']['losses'])
    assert record['infer'] == {'answers': len(family_coverage.KS), 'prompts': len(family_coverage.KS), 'ok': True}


def test_docs_models_md_is_the_table_of_the_coverage_runs(coverage_records):
    """docs/models.md's table is what tools/family_coverage.py renders from these runs (families the run left out keep
    their rows from the last full run, `APO_FAMILIES=all`)."""
    table = family_coverage.table_in((REPO / 'docs' / 'models.md').read_text())
    rows = {line.split(' | ')[0]: line for line in table.splitlines()[2:]}
    rendered = family_coverage.render_table([coverage_records(name) for name in COVERED]).splitlines()
    assert len(rows) >= 8
    for line in rendered[2:]:
        assert rows.get(line.split(' | ')[0]) == line, 'regenerate docs/models.md (see its first lines)'
