"""The shared-prefix forward's FlexAttention BlockMask and varlen layout, their attention functions, the varlen
kernel check and the choice of kernel (pure tensor checks; the installed varlen kernels on CUDA)."""
import re

import pytest
import torch

from swift_plugin.answer_logps import prefix_kernel
from swift_plugin import prefix_attention
from swift_plugin.prefix_attention import (checked_varlen_kernel, kernel_mismatch, reference_varlen_attention,
                                           varlen_prefix_attention)
from swift_plugin.shared_prefix import (VarlenPrefixMask, block_causal_mask, prefix_block_mask, prefix_varlen_layout,
                                        varlen_prefix_mask)


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


FLASH_PASSED, NO_FLASH = (True, 'torch varlen_attn'), (False, 'no flash-attention varlen kernel on cpu')
FLEX_FAILED = (False, 'NoValidChoicesError: No choices to select')  # as Inductor said on an H200 (torch 2.11)


@pytest.mark.parametrize('requested, attention, flash, expected', [
    ('auto', 'sdpa', FLASH_PASSED, 'flash'),
    ('auto', 'flash_attention_2', FLASH_PASSED, 'flash'),
    ('auto', 'eager', FLASH_PASSED, 'dense'),  # eager attention never goes through the attention interface
    ('auto', 'sdpa', NO_FLASH, 'dense'),
    ('auto', 'flash_attention_2', NO_FLASH, None),
    ('flash', 'sdpa', NO_FLASH, 'dense'),
    ('flash', 'flash_attention_2', NO_FLASH, None),
    ('flex', 'sdpa', NO_FLASH, 'flex'),  # flex only on request until its CUDA tests have run on a GPU
    ('flex', 'sdpa', FLASH_PASSED, 'flex'),
    ('flex', 'flash_attention_2', NO_FLASH, 'flex'),
    ('flex', 'eager', NO_FLASH, 'dense'),
    ('dense', 'sdpa', FLASH_PASSED, 'dense'),
    ('dense', 'flash_attention_2', FLASH_PASSED, None),
])
def test_kernel_choice(requested, attention, flash, expected):
    kernel, why = prefix_kernel(requested, attention, flash)
    assert kernel == expected and why
    if requested in ('auto', 'flash') and attention != 'eager' and kernel != 'flash':
        assert flash[1] in why  # the log says why flash-attention did not apply


@pytest.mark.parametrize('attention, expected', [('sdpa', 'dense'), ('flash_attention_2', None)])
def test_flex_that_failed_its_check_falls_back_with_the_reason(attention, expected):
    kernel, why = prefix_kernel('flex', attention, FLASH_PASSED, FLEX_FAILED)
    assert kernel == expected
    assert f'(FlexAttention: {FLEX_FAILED[1]})' in why


def test_apo_options_take_the_argument_then_the_environment_then_the_default(monkeypatch):
    from swift_plugin.options import APOArguments
    monkeypatch.setenv('APO_PREFIX_KERNEL', ' Flash ')
    monkeypatch.setenv('APO_SHARED_PREFIX', 'off')
    options = APOArguments(apo_shared_prefix=True)
    options.resolve_apo_options()
    assert (options.apo_prefix_kernel, options.apo_shared_prefix) == ('flash', True)  # the argument wins
    assert (options.apo_lean_logps, options.apo_logps_chunk_size, options.apo_length_check,
            options.apo_drop_long_rejected) == (True, 512, True, False)
    for env, value, error in [('APO_PREFIX_KERNEL', 'varlen', "APO_PREFIX_KERNEL='varlen': expected one of auto, "
                               'flash, flex, dense'), ('APO_LEAN_LOGPS', 'maybe', "APO_LEAN_LOGPS='maybe': expected "
                               'one of 1, true'), ('APO_LOGPS_CHUNK_SIZE', '1k', "APO_LOGPS_CHUNK_SIZE='1k': expected "
                               'a whole number')]:
        monkeypatch.setenv(env, value)
        with pytest.raises(ValueError, match=re.escape(error)):
            APOArguments().resolve_apo_options()
        monkeypatch.delenv(env)
    with pytest.raises(ValueError, match='--apo_logps_chunk_size: the chunk size must be positive'):
        APOArguments(apo_logps_chunk_size=0).resolve_apo_options()


@pytest.mark.parametrize('heads', [4, 6])  # grouped-query flex, and key/value heads repeated (not a power of two)
def test_attention_function_on_a_block_mask_equals_sdpa(heads):
    """The function transformers' attention interface hands a BlockMask to, against sdpa with the dense mask."""
    from swift_plugin.prefix_attention import flex_block_mask_attention
    segments = _segments([(0, 150), (1, 60), (2, 90)], [(0, 20), (1, 200)])
    torch.manual_seed(0)
    query, key, value = (torch.randn(2, h, segments.shape[1], 16, dtype=torch.float64) for h in (heads, 2, 2))
    got, _ = flex_block_mask_attention(None, query, key, value, prefix_block_mask(segments), scaling=0.3)
    expected = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=block_causal_mask(segments),
                                                                scale=0.3, enable_gqa=True)
    assert got.shape == (2, segments.shape[1], heads, 16)  # [batch, length, heads, head dim], as transformers wants
    assert (got - expected.transpose(1, 2)).abs().max() < 1e-12


@pytest.fixture
def failing_flex(monkeypatch):
    """FlexAttention failing as its compile did on an H200 with torch 2.11; yields the list of its calls."""
    calls = []

    def fail(*args, **kwargs):
        calls.append(args[0].shape)
        raise RuntimeError('NoValidChoicesError: No choices to select, please consider adding ATEN into '
                           'max_autotune_gemm_backends config\n  target: flex_attention')

    monkeypatch.setattr(prefix_attention, '_flex', fail)
    monkeypatch.setattr(prefix_attention, '_flex_failed_on', {})
    prefix_attention.checked_flex.cache_clear()
    yield calls
    prefix_attention.checked_flex.cache_clear()


def test_flex_check_passes_the_cpu_forward_and_names_a_failure(failing_flex):
    from swift_plugin.prefix_attention import checked_flex
    assert checked_flex(torch.device('cpu'), torch.float64, 4, 2, 16, False) == (
        'RuntimeError: NoValidChoicesError: No choices to select, please consider adding ATEN into '
        'max_autotune_gemm_backends config')
    assert failing_flex  # the check called FlexAttention


def test_flex_check_passes_flex_on_the_cpu_forward():
    from swift_plugin.prefix_attention import checked_flex
    checked_flex.cache_clear()
    assert checked_flex(torch.device('cpu'), torch.float64, 4, 2, 16, False) == ''
    assert checked_flex(torch.device('cpu'), torch.float64, 6, 2, 16, False) == ''


def test_flex_that_fails_at_run_time_goes_on_with_the_dense_mask(failing_flex, caplog):
    """A FlexAttention failure inside the forward (a compile at a new shape) switches that device to sdpa with the
    dense mask for the rest of the run, with the reason logged once: the same output, and the run goes on."""
    from swift_plugin.prefix_attention import flex_block_mask_attention
    segments = _segments([(0, 150), (1, 60), (2, 90)], [(0, 20), (1, 200)])
    torch.manual_seed(0)
    query, key, value = (torch.randn(2, h, segments.shape[1], 16, dtype=torch.float64) for h in (6, 2, 2))
    expected = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=block_causal_mask(segments),
                                                                scale=0.3, enable_gqa=True).transpose(1, 2)
    with caplog.at_level('WARNING'):
        for _ in range(2):
            got, _ = flex_block_mask_attention(None, query, key, value, prefix_block_mask(segments), scaling=0.3)
            assert (got - expected).abs().max() < 1e-12
    assert len(failing_flex) == 1  # not tried again after it failed
    warnings = [r.getMessage() for r in caplog.records if 'FlexAttention failed on cpu' in r.getMessage()]
    assert len(warnings) == 1 and 'NoValidChoicesError' in warnings[0]


def test_varlen_layout_of_segments():
    """Worked by hand: row 0 = prompt 0-1, answer 2-3, answer 4, padding 5; row 1 (offset 6) = prompt 6, answer 7-9."""
    layout = prefix_varlen_layout(torch.tensor([[0, 0, 1, 1, 2, -1], [0, 1, 1, 1, -1, -1]]))
    assert layout.query_index.tolist() == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    assert layout.key_index.tolist() == [0, 1, 0, 1, 2, 3, 0, 1, 4, 6, 6, 7, 8, 9]
    assert layout.cu_seq_q.tolist() == [0, 2, 4, 5, 6, 9] and layout.cu_seq_q.dtype == torch.int32
    assert layout.cu_seq_k.tolist() == [0, 2, 6, 9, 10, 14] and layout.cu_seq_k.dtype == torch.int32
    assert (layout.max_q, layout.max_k) == (3, 4)


@pytest.mark.parametrize('row', [[1, 0, 0], [0, 1, 0], [0, -1, 1], [0, 1, 1, 2, 1]])
def test_varlen_layout_refuses_segments_out_of_order(row):
    with pytest.raises(ValueError, match='row 0: segment ids .* are not prompt 0, then answers, then padding -1'):
        prefix_varlen_layout(torch.tensor([row]))


@pytest.mark.parametrize('heads', [4, 6])
def test_varlen_attention_equals_sdpa_with_the_dense_mask(heads):
    """Outputs at every real token and the gradients of query, key and value, with the sdpa reference kernel."""
    segments = _segments([(0, 150), (1, 60), (2, 90), (3, 1)], [(0, 20), (1, 200)], [(0, 5), (1, 7)])
    real = (segments >= 0).unsqueeze(-1).unsqueeze(-1)
    torch.manual_seed(0)
    inputs = [torch.randn(3, h, segments.shape[1], 16, dtype=torch.float64) for h in (heads, 2, 2)]
    upstream = torch.randn(3, segments.shape[1], heads, 16, dtype=torch.float64) * real
    results = []
    for varlen in (True, False):
        leaves = [t.clone().requires_grad_() for t in inputs]
        if varlen:
            out, _ = varlen_prefix_attention(None, *leaves, varlen_prefix_mask(segments, reference_varlen_attention),
                                             scaling=0.3)
            assert out.shape == (3, segments.shape[1], heads, 16)
            assert out[~real.expand_as(out)].abs().max() == 0  # padding is nobody's query
        else:
            out = torch.nn.functional.scaled_dot_product_attention(
                *leaves, attn_mask=block_causal_mask(segments), scale=0.3, enable_gqa=True).transpose(1, 2)
        (out * upstream).sum().backward()
        results.append([(out * real).detach()] + [t.grad for t in leaves])
    for got, expected in zip(*results):
        assert (got - expected).abs().max() < 1e-12


def _top_left_causal(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, scale=None):
    """A varlen kernel with sdpa's is_causal alignment (top left), as a kernel build might get it wrong."""
    q, k = cu_seq_q.tolist(), cu_seq_k.tolist()
    return torch.cat([
        torch.nn.functional.scaled_dot_product_attention(*(t.transpose(0, 1) for t in (
            query[q[i]:q[i + 1]], key[k[i]:k[i + 1]], value[k[i]:k[i + 1]])), is_causal=True, scale=scale,
                                                         enable_gqa=True).transpose(0, 1) for i in range(len(q) - 1)
    ])


def _unsupported_dtype(*args, **kwargs):
    raise RuntimeError('FlashAttention only supports fp16 and bf16 data type\nmore detail')


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_kernel_check_accepts_the_contract_and_refuses_other_kernels(dtype):
    assert kernel_mismatch(reference_varlen_attention, 'cpu', dtype, 6, 2, 16) == ''
    with torch.no_grad():  # as in a reference model's forward
        assert kernel_mismatch(reference_varlen_attention, 'cpu', dtype, 4, 4, 16) == ''
    assert re.fullmatch(r'its output differs from sdpa with the block-causal mask by \S+ \(relative to max\)',
                        kernel_mismatch(_top_left_causal, 'cpu', dtype, 6, 2, 16))
    assert kernel_mismatch(_unsupported_dtype, 'cpu', dtype, 6, 2,
                           16) == 'RuntimeError: FlashAttention only supports fp16 and bf16 data type'


def test_checked_kernel_is_the_first_that_passes(monkeypatch):
    import swift_plugin.prefix_attention as prefix_attention
    assert prefix_attention.varlen_kernels(torch.device('cpu')) == []  # CPU: the dense mask, never a varlen kernel
    candidates = [('shifted', _top_left_causal), ('fp16 only', _unsupported_dtype),
                  ('reference', reference_varlen_attention)]
    monkeypatch.setattr(prefix_attention, 'varlen_kernels', lambda device: candidates)
    prefix_attention.checked_varlen_kernel.cache_clear()
    try:
        assert checked_varlen_kernel(torch.device('cpu'), torch.float32, 4, 2, 16) == (reference_varlen_attention,
                                                                                     'reference')
        del candidates[2]
        prefix_attention.checked_varlen_kernel.cache_clear()
        kernel, why = checked_varlen_kernel(torch.device('cpu'), torch.float32, 4, 2, 16)
        assert kernel is None and why.startswith('no varlen kernel passed the check with torch.float32 (shifted: its '
                                                 'output differs') and '; fp16 only: RuntimeError: ' in why
    finally:
        prefix_attention.checked_varlen_kernel.cache_clear()


def _first_torch_varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, is_causal=False, return_aux=None):
    """torch 2.10's varlen_attn signature: is_causal, no scale (head_dim ** -0.5), no grouped-query heads."""
    assert is_causal and query.shape[1] == key.shape[1]
    return reference_varlen_attention(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k)


def _later_torch_varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, return_aux=None, scale=None,
                             window_size=(-1, -1), enable_gqa=False, seqused_k=None, block_table=None,
                             num_splits=None):
    """The signature of torch 2.13/2.14's varlen_attn (causal = window (-1, 0))."""
    assert window_size == (-1, 0) and (enable_gqa or query.shape[1] == key.shape[1])
    return reference_varlen_attention(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, scale)


@pytest.mark.parametrize('varlen_attn', [_first_torch_varlen_attn, _later_torch_varlen_attn])
def test_torch_varlen_kernel_is_called_as_its_signature_asks(monkeypatch, varlen_attn):
    """torch's varlen_attn changed its keywords between releases: each spelling passes the check (grouped-query
    heads and a scale that is not head_dim ** -0.5 included)."""
    import torch.nn.attention.varlen
    import swift_plugin.prefix_attention as prefix_attention
    monkeypatch.setattr(torch.nn.attention.varlen, 'varlen_attn', varlen_attn)
    for heads, kv_heads in ((6, 2), (4, 4)):
        assert kernel_mismatch(prefix_attention._torch_varlen, 'cpu', torch.float32, heads, kv_heads, 16) == ''


@pytest.mark.parametrize('autocast', [False, True])
def test_kernel_check_runs_with_the_models_head_layout_and_dtype(monkeypatch, autocast):
    """A model whose head_dim is not hidden_size / heads (Qwen3: 16, not 8), in float64 or under bf16 autocast."""
    import swift_plugin.prefix_attention as prefix_attention
    from transformers import Qwen3Config, Qwen3ForCausalLM
    model = Qwen3ForCausalLM(Qwen3Config(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                         num_hidden_layers=1, intermediate_size=32, vocab_size=64)).double()
    seen = []

    def recording(query, key, value, *args, **kwargs):
        seen.append((tuple(query.shape[1:]), tuple(key.shape[1:]), query.dtype))
        return reference_varlen_attention(query, key, value, *args, **kwargs)

    monkeypatch.setattr(prefix_attention, 'varlen_kernels', lambda device: [('recording', recording)])
    prefix_attention.checked_varlen_kernel.cache_clear()
    try:
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
            assert prefix_attention.checked_varlen_kernel_for(model, torch.device('cpu')) == (recording, 'recording')
    finally:
        prefix_attention.checked_varlen_kernel.cache_clear()
    assert seen == [((4, 16), (2, 16), torch.bfloat16 if autocast else torch.float64)]


@pytest.mark.parametrize('attention', ['sdpa', 'flash_attention_2', 'flex_attention'])
def test_varlen_mask_passes_mask_preparation_unchanged(attention):
    """The claim VarlenPrefixMask rests on: transformers hands a 4D BlockMask to the layers as it is."""
    from transformers import Qwen2Config
    from transformers.masking_utils import create_causal_mask
    config = Qwen2Config(hidden_size=32, num_attention_heads=2, num_key_value_heads=1, num_hidden_layers=1)
    config._attn_implementation = attention
    segments = _segments([(0, 5), (1, 3)], [(0, 2), (1, 2)])
    mask = varlen_prefix_mask(segments, reference_varlen_attention)
    embeds = torch.zeros(2, segments.shape[1], 32)
    assert create_causal_mask(config, embeds, mask, past_key_values=None) is mask
    assert mask.shape == (2, 1, 8, 8) and mask.to_dense().sum() == 0  # lists no block: flex would attend to nothing
    from accelerate.utils import send_to_device  # what accelerate's device hooks (device_map) do to every input
    moved = send_to_device(mask, 'cpu')
    assert isinstance(moved, VarlenPrefixMask) and moved.kernel is reference_varlen_attention
    assert moved.shape == mask.shape and all(
        torch.equal(getattr(moved.layout, f), getattr(mask.layout, f))
        for f in ('query_index', 'key_index', 'cu_seq_q', 'cu_seq_k'))


@pytest.mark.skipif(not torch.cuda.is_available(), reason='flash-attention varlen kernels run on CUDA only')
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
@pytest.mark.parametrize('heads, kv_heads, head_dim', [(28, 4, 128), (16, 16, 64), (6, 2, 16)])
def test_installed_varlen_kernels_pass_the_check_on_cuda(dtype, heads, kv_heads, head_dim):
    """Qwen2.5-VL-7B's head layout, one without grouped queries (cuDNN-eligible in torch), the tiny test model's."""
    from swift_plugin.prefix_attention import varlen_kernels
    kernels = varlen_kernels(torch.device('cuda'))
    assert kernels, 'torch has varlen_attn since 2.10; the pinned torch must provide it'
    for name, kernel in kernels:
        assert kernel_mismatch(kernel, torch.device('cuda'), dtype, heads, kv_heads, head_dim) == '', name
