"""benchmarks/bench_7b_cli.py's arithmetic and the presets of tools/tiny_models.py (fast; no CLI run).

The benchmark itself runs end to end with ``python benchmarks/bench_7b_cli.py --scale tiny --device cpu --out DIR``.
"""
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO

sys.path.insert(0, str(REPO / 'tools'))
import tiny_models as tiny  # noqa: E402


def _load_bench():
    spec = importlib.util.spec_from_file_location('bench_7b_cli', REPO / 'benchmarks' / 'bench_7b_cli.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


# The released checkpoints' parameter counts: Qwen2.5-VL-7B-Instruct's safetensors; Qwen3-VL-8B-Instruct's (8.77B on
# its model card); Qwen3.5-9B's safetensors (19,306,216,416 bytes of bf16) hold a multi-token-prediction layer too,
# which transformers does not build.
RELEASED = {'qwen2.5-vl-7b': 8_292_166_656, 'qwen3-vl-8b': 8_767_123_696, 'qwen3.5-9b': 19_306_216_416 // 2}


@pytest.mark.parametrize('name', list(tiny.PRESETS))
def test_presets_have_the_released_parameter_counts(name):
    """Each preset built on the meta device (no memory) has its released checkpoint's parameters."""
    import transformers
    preset = tiny.PRESETS[name]
    config = tiny.family_config(preset.family, preset.overrides, dtype='bfloat16')
    with torch.device('meta'):
        model = getattr(transformers, tiny.FAMILIES[preset.family].architecture)._from_config(config, dtype=torch.bfloat16)
    count = sum(p.numel() for p in model.parameters())
    text = config.text_config
    assert count == preset.parameters and not config.tie_word_embeddings
    assert model.lm_head.weight.shape == (text.vocab_size, text.hidden_size)
    if name == 'qwen3.5-9b':
        # the MTP layer: a full-attention decoder layer, its input projection (2h -> h) and norms (their exact
        # layout aside: 3,840 parameters remain unaccounted for)
        layer = model.model.language_model.layers[text.layer_types.index('full_attention')]
        mtp = sum(p.numel() for p in layer.parameters()) + 2 * text.hidden_size**2 + 3 * text.hidden_size
        assert count + mtp == pytest.approx(RELEASED[name], abs=1e4)
        assert text.layer_types.count('linear_attention') == 24
    else:
        assert count == RELEASED[name]
    if name == 'qwen2.5-vl-7b':
        assert text.num_key_value_heads == 4 and config.vision_config.fullatt_block_indexes == [7, 15, 23, 31]


def test_model_sizes_match_the_loaded_model(tiny_vl_model):
    """Counts from the safetensors header against the loaded model's parameters and peft's LoRA (all-linear on
    the language model, as ms-swift targets it)."""
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2_5_VLForConditionalGeneration
    sizes = bench.model_sizes(Path(tiny_vl_model))
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_vl_model)
    params = dict(model.named_parameters())
    assert sizes['total'] == sum(p.numel() for p in params.values())
    assert sizes['lm'] == sum(p.numel() for n, p in params.items() if '.language_model.layers.' in n)
    assert sizes['vit'] + sizes['merger'] == sum(p.numel() for n, p in params.items() if '.visual.' in n)
    assert sizes['head'] == model.lm_head.weight.numel()  # tied: the embedding
    peft_model = get_peft_model(model, LoraConfig(r=8, target_modules=(
        r'.*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)')))
    assert sizes['lora'] == sum(p.numel() for p in peft_model.parameters() if p.requires_grad)


def test_packed_attention_pairs_match_the_shared_prefix_mask():
    from swift_plugin.shared_prefix import block_causal_mask
    P, R, K = 13, 5, 3
    segments = torch.tensor([[0] * P + [j for j in range(1, K + 2) for _ in range(R)]])
    shape = bench.layout('a', P, R, K)
    assert shape['pairs'] == int(block_causal_mask(segments).sum())
    assert shape['tokens'] == segments.shape[1] and shape['head'] == (K + 1) * R
    plain = bench.layout('b', P, R, K)
    assert plain['pairs'] == (K + 1) * int(torch.ones(P + R, P + R).tril().sum())
    assert bench.layout('c', P, R, K)['tokens'] == 2 * K * (P + R)


def test_flops_convention():
    """LoRA: 6 N T for the layers (2 reference forward + 2 policy forward + 2 activation gradients); full: 8 N T."""
    sizes = dict(lm=1000, head=0, layers=1, d_attn=0, vit=0, merger=0, d_vit=0, vit_depth=1, vit_full=1,
                 window_patches=64, lora=10)
    shape = dict(tokens=7, head=0, pairs=0, images=1)
    assert bench.flops_per_prompt(sizes, shape, patches=0, full=False) == 6 * 1000 * 7 + 6 * 10 * 7
    assert bench.flops_per_prompt(sizes, shape, patches=0, full=True) == 8 * 1000 * 7


@pytest.mark.parametrize('returncode, output, expected', [
    (1, 'torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB', 'did not fit (out of memory)'),
    (-9, 'loading checkpoint shards', 'killed (SIGKILL: host memory?)'),
    (None, '', 'timed out after 60 s'),
    (1, 'Traceback ...\nValueError: --rlhf_type apo does not support: --packing.', 'failed (exit 1): ValueError: '
     '--rlhf_type apo does not support: --packing.'),
])
def test_failure_status(returncode, output, expected):
    assert bench.failure_status(returncode, output, 60) == expected
