"""The FlexAttention BlockMask of the shared-prefix forward and the choice of kernel (pure tensor checks)."""
import pytest
import torch

from swift_plugin.answer_logps import prefix_kernel
from swift_plugin.shared_prefix import block_causal_mask, prefix_block_mask


def _segments(*rows):
    """Rows of (segment id, length) runs, padded with -1 to one length."""
    built = [torch.cat([torch.full((n, ), s) for s, n in runs]) for runs in rows]
    length = max(len(r) for r in built)
    return torch.stack([torch.nn.functional.pad(r, (0, length - len(r)), value=-1) for r in built])


@pytest.mark.parametrize('rows_per_chunk', [128, 4096])
def test_block_mask_equals_the_dense_mask_and_skips_blocks(rows_per_chunk):
    from torch.nn.attention.flex_attention import flex_attention
    # A long prompt, then answers of 200-300 tokens, and a padded second row; block size 128, L = 1,030.
    segments = _segments([(0, 300), (1, 250), (2, 200), (3, 280)], [(0, 90), (1, 300), (2, 40)])
    block_mask = prefix_block_mask(segments, rows_per_chunk=rows_per_chunk)
    dense = block_causal_mask(segments)
    # Block by block: a block is listed exactly when the dense mask allows something in it.
    blocks = torch.nn.functional.pad(dense, (0, 1024 + 128 - 1030, 0, 1024 + 128 - 1030)).view(2, 1, 9, 128, 9, 128)
    assert torch.equal(block_mask.to_dense().bool(), blocks.any(5).any(3))
    assert block_mask.sparsity() > 50  # causal alone leaves 36 of 81 blocks (44%) out; the answers skip more
    torch.manual_seed(0)
    query, key, value = (torch.randn(2, h, segments.shape[1], 16, dtype=torch.float64) for h in (4, 2, 2))
    got = flex_attention(query, key, value, block_mask=block_mask, enable_gqa=True)
    expected = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=dense, enable_gqa=True)
    assert (got - expected).abs().max() < 1e-12


@pytest.mark.parametrize('requested, attention, device, expected', [
    ('auto', 'sdpa', 'cuda', 'dense'),  # flex only on request until its CUDA tests have run on a GPU
    ('auto', 'flash_attention_2', 'cuda', None),
    ('auto', 'eager', 'cuda', 'dense'),
    ('auto', 'sdpa', 'cpu', 'dense'),
    ('auto', 'flash_attention_2', 'cpu', None),
    ('flex', 'sdpa', 'cpu', 'flex'),
    ('flex', 'flash_attention_2', 'cuda', 'flex'),
    ('flex', 'eager', 'cuda', 'dense'),
    ('dense', 'sdpa', 'cuda', 'dense'),
    ('dense', 'flash_attention_2', 'cuda', None),
])
def test_kernel_choice(requested, attention, device, expected):
    kernel, why = prefix_kernel(requested, attention, torch.device(device))
    assert kernel == expected and why


def test_kernel_switch_from_the_environment(monkeypatch):
    from swift_plugin.answer_logps import FastPathOptions
    monkeypatch.setenv('APO_PREFIX_KERNEL', ' Flex ')
    assert FastPathOptions.from_env().prefix_kernel == 'flex'
    monkeypatch.setenv('APO_PREFIX_KERNEL', 'flash')
    with pytest.raises(ValueError, match="APO_PREFIX_KERNEL='flash': expected one of auto, flex, dense"):
        FastPathOptions.from_env()


@pytest.mark.parametrize('heads', [4, 6])  # grouped-query flex, and key/value heads repeated (not a power of two)
def test_attention_function_on_a_block_mask_equals_sdpa(heads):
    """The function transformers' attention interface hands a BlockMask to, against sdpa with the dense mask."""
    from swift_plugin.registration import flex_block_mask_attention
    segments = _segments([(0, 150), (1, 60), (2, 90)], [(0, 20), (1, 200)])
    torch.manual_seed(0)
    query, key, value = (torch.randn(2, h, segments.shape[1], 16, dtype=torch.float64) for h in (heads, 2, 2))
    got, _ = flex_block_mask_attention(None, query, key, value, prefix_block_mask(segments), scaling=0.3)
    expected = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=block_causal_mask(segments),
                                                                scale=0.3, enable_gqa=True)
    assert got.shape == (2, segments.shape[1], heads, 16)  # [batch, length, heads, head dim], as transformers wants
    assert (got - expected.transpose(1, 2)).abs().max() < 1e-12
