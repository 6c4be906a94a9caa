"""Shared-prefix forward and lean log-probs give the plain path's numbers, on the real tiny Qwen2.5-VL.

Batches come from ms-swift's real Qwen2.5-VL template in APO mode (mixed K, images) and run through the
model with ms-swift's post-encode hook (image features merged into the embeddings), in float64 so that
"equal" can mean 1e-5 relative or better.
"""
import copy
import sys
from contextlib import contextmanager, nullcontext

import pytest
import torch
from PIL import Image
from apo_batches import apo_template, collate, load, sequence_logps
from apo_batches import rows as apo_rows
from peft import LoraConfig, get_peft_model

from swift_plugin import answer_logps as answer_logps_module
from swift_plugin.answer_logps import FastPathOptions, compute_answer_logps
from swift_plugin.loss import apo_loss, pad_by_counts
from swift_plugin import prefix_attention
from swift_plugin.prefix_attention import install_prefix_attention, reference_varlen_attention
from swift_plugin.shared_prefix import image_rule_for, pack_shared_prefix, plain_answer_tokens

KS = [1, 3, 2]
PATHS = {
    'plain': FastPathOptions(shared_prefix=False, lean_logps=False),
    'shared_prefix': FastPathOptions(shared_prefix=True, lean_logps=False),
    'lean': FastPathOptions(shared_prefix=False, lean_logps=True, chunk_size=128),
    'both': FastPathOptions(shared_prefix=True, lean_logps=True, chunk_size=128),
    # auto, with the sdpa-written varlen contract as the installed kernel (varlen_reference_installed)
    'flash': FastPathOptions(shared_prefix=True, lean_logps=True, chunk_size=128),
}


@pytest.fixture(scope='module')
def env():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('HF_HUB_OFFLINE', '1')
        mp.setenv('MAX_PIXELS', '3136')
        yield


@contextmanager
def varlen_reference_installed():
    """The sdpa-written varlen contract as the one installed varlen kernel, so that the flash path (kernel check,
    layout, gathers, scatter, dispatch) runs on the CPU; yields the list of its calls' query counts."""
    calls = []

    def counted(query, *args, **kwargs):
        calls.append(query.shape[0])
        return reference_varlen_attention(query, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(prefix_attention, 'varlen_kernels', lambda device: [('sdpa reference', counted)])
        prefix_attention.checked_varlen_kernel.cache_clear()
        try:
            yield calls
        finally:
            prefix_attention.checked_varlen_kernel.cache_clear()


def _sequence_logps(model, batch, labels, num_rejected, options):
    answer = compute_answer_logps(model, model, batch, labels, num_rejected, copy.copy(options))
    return sequence_logps(answer, labels.shape[0]), answer


def _loss_and_grads(model, reference, batch, labels, num_rejected, options):
    """APO loss + rpo-style NLL of the policy against ``reference()``'s log-probs, and every gradient."""
    model.zero_grad(set_to_none=True)
    with torch.no_grad(), reference() as ref_model:
        ref, _ = _sequence_logps(ref_model, batch, labels, num_rejected, options)
    policy, answer = _sequence_logps(model, batch, labels, num_rejected, options)
    rows = num_rejected.shape[0]
    rejected, mask = pad_by_counts(policy[rows:], num_rejected)
    ref_rejected, _ = pad_by_counts(ref[rows:], num_rejected)
    loss = apo_loss(policy[:rows], rejected, ref[:rows], ref_rejected, mask, beta=0.5).losses.mean()
    loss = loss - 0.3 * answer.token_logps[answer.sequence < rows].mean()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), ref, policy.detach(), grads, answer


def _assert_same(expected, got, what, rel=1e-5):
    scale = expected.abs().max().clamp_min(1e-12)
    err = (got - expected).abs().max() / scale
    assert err <= rel, f'{what}: max relative error {float(err):.2e}'


def _frozen(ref_model):

    @contextmanager
    def reference():
        yield ref_model

    return reference


def _adapter_disabled(peft_model):

    @contextmanager
    def reference():
        with peft_model.disable_adapter():
            yield peft_model

    return reference


@pytest.fixture(scope='module')
def vl(env, tiny_vl_model):
    return tiny_vl_model


@pytest.mark.parametrize('tuning, paths', [('lora', ['shared_prefix', 'lean', 'both', 'flash']),
                                           ('full', ['both', 'flash'])])
def test_loss_and_every_gradient_equal_the_plain_path(vl, tmp_path, tuning, paths):
    """Policy with gradients and reference without (LoRA: the adapter disabled; full: a second model)."""
    model, processor = load(vl, 'qwen2_5_vl')
    torch.manual_seed(0)
    if tuning == 'lora':
        # init_lora_weights=False: a non-zero adapter, so policy != reference (the adapter-disabled model).
        model = get_peft_model(model, LoraConfig(r=4, target_modules=['q_proj', 'v_proj', 'down_proj', 'qkv'],
                                                 init_lora_weights=False))
        reference = _adapter_disabled(model)
    else:
        ref_model = copy.deepcopy(model)
        with torch.no_grad():
            for p in ref_model.parameters():
                p.add_(torch.randn_like(p) * 0.02)
        reference = _frozen(ref_model)
        model.gradient_checkpointing_enable()
        model.train()
    template = apo_template(processor, model, 'qwen2_5_vl')
    vl_config = template.model.config
    template.register_post_encode_hook([model] + ([] if tuning == 'lora' else [ref_model]))
    try:
        batch, labels, num_rejected = collate(template, apo_rows(tmp_path, KS))
        results, varlen_calls = {}, []
        for name in ['plain'] + paths:
            with varlen_reference_installed() if name == 'flash' else nullcontext([]) as calls:
                results[name] = _loss_and_grads(model, reference, batch, labels, num_rejected, PATHS[name])
                varlen_calls += calls
    finally:
        template.remove_post_encode_hook()
    loss, ref, policy, grads, _ = results['plain']
    if 'flash' in paths:
        # One call in the kernel check, then one per language-model layer and forward (reference, policy and,
        # under gradient checkpointing, the recomputation) on every real token of the packed rows.
        packed, _ = pack_shared_prefix(batch, labels, num_rejected, images=image_rule_for(vl_config, batch),
                                       kernel='flash')
        forwards = 3 if tuning == 'full' else 2
        layers = vl_config.get_text_config().num_hidden_layers
        expected = [packed.inputs['attention_mask'].layout.query_index.numel()] * (layers * forwards)
        assert varlen_calls[1:] == expected
    assert not torch.allclose(ref, policy), 'policy and reference must differ for the test to mean something'
    assert len(grads) > 10 and all(g.abs().sum() > 0 for n, g in grads.items() if 'lm_head' in n or 'visual' in n)
    for name in paths:
        got_loss, got_ref, got_policy, got_grads, answer = results[name]
        assert answer.packed == PATHS[name].shared_prefix
        _assert_same(loss, got_loss, f'{name} loss')
        _assert_same(ref, got_ref, f'{name} reference log-probs')
        _assert_same(policy, got_policy, f'{name} policy log-probs')
        assert got_grads.keys() == grads.keys()
        for param, grad in grads.items():
            _assert_same(grad, got_grads[param], f'{name} gradient of {param}')


def test_answer_logits_and_positions_equal_the_plain_path(vl, tmp_path):
    model, processor = load(vl, 'qwen2_5_vl', attn_impl='eager')  # eager: the additive float mask
    template = apo_template(processor, model, 'qwen2_5_vl')
    template.register_post_encode_hook([model])
    try:
        batch, labels, num_rejected = collate(template, apo_rows(tmp_path, KS))
        packed, reason = pack_shared_prefix(batch, labels, num_rejected, images=image_rule_for(model.config, batch),
                                            mask_dtype=torch.float64)
        assert reason == ''
        with torch.no_grad():
            plain_logits = model(**batch, use_cache=False).logits
            packed_logits = model(**packed.inputs, use_cache=False).logits
    finally:
        template.remove_post_encode_hook()
    plain = plain_answer_tokens(labels)
    assert torch.equal(plain.sequence, packed.tokens.sequence) and torch.equal(plain.target, packed.tokens.target)
    _assert_same(plain_logits[plain.row, plain.position], packed_logits[packed.tokens.row, packed.tokens.position],
                 'answer-token logits', rel=1e-6)
    # One image per row through the vision tower instead of one per sequence, and far fewer tokens.
    assert packed.inputs['image_grid_thw'].shape[0] == len(KS) < batch['image_grid_thw'].shape[0]
    assert packed.inputs['input_ids'].numel() < batch['input_ids'].numel() * 0.7

    # The positions themselves: every answer continues from the end of its prompt, as the model's own
    # get_rope_index places prompt + that answer alone.
    rows = len(KS)
    first_rejected = rows + sum(KS[:1])  # row 1's first rejected sequence
    seq = first_rejected + 2
    real = batch['attention_mask'][seq].bool()
    ids = batch['input_ids'][seq][real]
    expected, _ = model.model.get_rope_index(ids[None], batch['mm_token_type_ids'][seq][real][None],
                                             image_grid_thw=batch['image_grid_thw'][1:2],
                                             attention_mask=torch.ones_like(ids)[None])
    answer_start = int((labels[seq] != -100).int().argmax())
    answer_len = len(ids) - answer_start
    segment = packed.tokens.position[packed.tokens.sequence == seq]
    offset = int(segment[1])  # segment[0] is the prompt's last position, which predicts the first answer token
    got = packed.inputs['position_ids'][:, 1, offset:offset + answer_len]
    assert torch.equal(got, expected[:, 0, answer_start:])
    assert int(got[0, 0]) == int(expected[:, 0, :answer_start].max()) + 1


def test_text_model_full_tuning_equals_plain_path(env, tiny_text_model, tmp_path):
    model, processor = load(tiny_text_model, 'qwen2')
    ref_model = copy.deepcopy(model)
    with torch.no_grad():
        for p in ref_model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    template = apo_template(processor, model, 'qwen2_5')
    batch, labels, num_rejected = collate(template, apo_rows(None, [3, 1, 2]))
    plain = _loss_and_grads(model, _frozen(ref_model), batch, labels, num_rejected, PATHS['plain'])
    both = _loss_and_grads(model, _frozen(ref_model), batch, labels, num_rejected, PATHS['both'])
    assert both[4].packed
    _assert_same(plain[0], both[0], 'loss')
    _assert_same(plain[1], both[1], 'reference log-probs')
    for param, grad in plain[3].items():
        _assert_same(grad, both[3][param], f'gradient of {param}')


def test_prompts_that_differ_fall_back_to_the_plain_batch(env, tiny_text_model, tmp_path):
    """Left truncation cuts each sequence's prompt differently: no shared prefix, plain path, same numbers."""
    model, processor = load(tiny_text_model, 'qwen2')
    template = apo_template(processor, model, 'qwen2_5', max_length=70, truncation_strategy='left')
    batch, labels, num_rejected = collate(template, apo_rows(None, [2, 3]))
    _, reason = pack_shared_prefix(batch, labels, num_rejected)
    assert reason.startswith('row 0: its answers do not share one prompt')
    with torch.no_grad():
        plain, _ = _sequence_logps(model, batch, labels, num_rejected, PATHS['plain'])
        fast, answer = _sequence_logps(model, batch, labels, num_rejected, PATHS['both'])
    assert not answer.packed
    _assert_same(plain, fast, 'log-probs')


@pytest.mark.parametrize('fault', ['post-processed logits', 'head that fails'])
def test_lean_path_check_falls_back_with_the_reason_and_the_plain_numbers(env, tiny_text_model, fault, caplog):
    """The check that chooses the lean path never ends a run: logits the head does not give (soft-capping and the
    like), or a head that raises on the check, switch lean log-probs off with the reason, and the full-logits path
    gives the plain path's numbers."""
    from swift_plugin import answer_logps
    model, processor = load(tiny_text_model, 'qwen2')
    template = apo_template(processor, model, 'qwen2_5')
    batch, labels, num_rejected = collate(template, apo_rows(None, [2, 1]))
    if fault == 'post-processed logits':
        hook = model.register_forward_hook(lambda module, args, output: output.__setitem__('logits', output.logits / 2))
        expected_reason = "the model's logits are not its lm_head applied to its last hidden state (max difference"
    else:
        head_calls = []

        def fail_in_the_check(module, args):
            head_calls.append(args[0].shape)
            if len(head_calls) == 2:  # the model's own call (logits_to_keep=1), then the check's
                raise RuntimeError('expected m1 and m2 to have the same dtype')

        hook = model.get_output_embeddings().register_forward_pre_hook(fail_in_the_check)
        expected_reason = 'the lm_head failed on the last hidden state: RuntimeError: expected m1 and m2'
    options = copy.copy(PATHS['both'])
    try:
        with torch.no_grad():
            with caplog.at_level('WARNING'):
                got = sequence_logps(compute_answer_logps(model, model, batch, labels, num_rejected, options),
                                     labels.shape[0])
            plain, _ = _sequence_logps(model, batch, labels, num_rejected, PATHS['plain'])
    finally:
        hook.remove()
    assert options.lean_logps is False  # switched off for the rest of the run
    warnings = [r.getMessage() for r in caplog.records if 'APO lean log-probs not used' in r.getMessage()]
    assert warnings and expected_reason in warnings[0], [r.getMessage() for r in caplog.records]
    _assert_same(plain, got, 'log-probs')
    assert answer_logps._head_mismatch(model.get_output_embeddings(), None, torch.zeros(1, 1, 4)).startswith(
        'Linear input not found')


def _switch_load_balancing_loss(router_logits, real, num_experts, top_k):
    """Switch Transformer's auxiliary loss over the real tokens of all layers: E * sum_e f_e * P_e, with f_e the
    share of top-k assignments and P_e the mean router probability of expert e."""
    probs = torch.cat([layer[real.flatten()] for layer in router_logits]).softmax(-1)
    assigned = torch.zeros_like(probs).scatter_(1, probs.topk(top_k, dim=-1).indices, 1.0)
    return num_experts * (assigned.mean(0) * probs.mean(0)).sum()


def test_moe_router_aux_loss_runs_the_plain_batch(env, tiny_moe_model, tmp_path):
    """--router_aux_loss_coef: transformers' load-balancing loss takes the [batch, length] padding mask, so the
    shared-prefix forward (a 4D block mask) steps aside and the aux loss is the plain batch's."""
    model, processor = load(tiny_moe_model, 'qwen2_moe')
    model.set_experts_implementation('eager')  # the default grouped_mm takes no float64
    template = apo_template(processor, model, 'qwen2_5')
    batch, labels, num_rejected = collate(template, apo_rows(None, [3, 1, 2]))
    router = {'output_router_logits': True}
    with torch.no_grad():
        packed, packed_answer = _sequence_logps(model, batch, labels, num_rejected, PATHS['both'])
        results = {name: compute_answer_logps(model, model, batch, labels, num_rejected, copy.copy(PATHS[name]), router)
                   for name in ['plain', 'both']}
    assert packed_answer.packed, 'without the aux loss this MoE model takes the shared-prefix forward'
    assert not results['both'].packed
    plain_aux = results['plain'].outputs.aux_loss
    expected = _switch_load_balancing_loss(results['plain'].outputs.router_logits, batch['attention_mask'].bool(),
                                           model.config.num_experts, model.config.num_experts_per_tok)
    assert torch.isfinite(plain_aux) and plain_aux > 0
    _assert_same(expected, plain_aux, 'aux loss against the written-out Switch loss', rel=1e-6)  # float32 sums
    _assert_same(plain_aux, results['both'].outputs.aux_loss, 'aux loss with the fast options', rel=1e-12)
    for name, answer in results.items():
        _assert_same(packed, sequence_logps(answer, labels.shape[0]), f'{name} log-probs with the router logits against the packed ones')


def _apo_loss_against(policy, reference, num_rejected):
    rows = num_rejected.shape[0]
    rejected, mask = pad_by_counts(policy[rows:], num_rejected)
    ref_rejected, _ = pad_by_counts(reference[rows:], num_rejected)
    return apo_loss(policy[:rows], rejected, reference[:rows], ref_rejected, mask, beta=0.5).losses.mean()


@pytest.mark.parametrize('dtype, rel', [(torch.float32, 1e-4), (torch.float64, 1e-6)])
def test_flex_forward_equals_the_plain_path(vl, tmp_path, dtype, rel):
    """FlexAttention's BlockMask under sdpa (the model as loaded): answer logits, log-probs and APO loss.

    Forward only: torch has no FlexAttention backward on the CPU (the gradients are tested on CUDA below)."""
    from torch.nn.attention.flex_attention import BlockMask
    model, processor = load(vl, 'qwen2_5_vl', dtype=dtype)
    template = apo_template(processor, model, 'qwen2_5_vl')
    template.register_post_encode_hook([model])
    flex = FastPathOptions(shared_prefix=True, lean_logps=False, prefix_kernel='flex')
    try:
        batch, labels, num_rejected = collate(template, apo_rows(tmp_path, KS))
        packed, reason = pack_shared_prefix(batch, labels, num_rejected, images=image_rule_for(model.config, batch),
                                            kernel='flex')
        assert reason == '' and isinstance(packed.inputs['attention_mask'], BlockMask)
        install_prefix_attention()  # what compute_answer_logps does when it picks FlexAttention
        with torch.no_grad():
            plain_logits = model(**batch, use_cache=False).logits
            packed_logits = model(**packed.inputs, use_cache=False).logits
            plain, _ = _sequence_logps(model, batch, labels, num_rejected, PATHS['plain'])
            got, answer = _sequence_logps(model, batch, labels, num_rejected, flex)
    finally:
        template.remove_post_encode_hook()
    assert answer.packed
    tokens = plain_answer_tokens(labels)
    _assert_same(plain_logits[tokens.row, tokens.position], packed_logits[packed.tokens.row, packed.tokens.position],
                 'answer-token logits', rel=rel)
    _assert_same(plain, got, 'per-sequence log-probs', rel=rel)
    reference = plain + torch.linspace(-1, 1, plain.numel(), dtype=plain.dtype)  # policy != reference
    _assert_same(_apo_loss_against(plain, reference, num_rejected), _apo_loss_against(got, reference, num_rejected),
                 'APO loss', rel=rel)


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason='FlexAttention has no backward on the CPU and flash-attention varlen runs on CUDA only: '
                    'these gradient tests need CUDA')
@pytest.mark.parametrize('kernel, dtype, rel', [('flex', torch.float32, 1e-4), ('flex', torch.bfloat16, 5e-2),
                                                ('flash', torch.bfloat16, 5e-2), ('flash', torch.float16, 1e-2)])
def test_kernel_loss_and_every_gradient_equal_the_plain_path_on_cuda(vl, tmp_path, kernel, dtype, rel):
    """LoRA policy, adapter-disabled reference: FlexAttention or flash-attention varlen (the installed kernel,
    after its check) + lean log-probs against the plain path."""
    model, processor = load(vl, 'qwen2_5_vl', dtype=dtype)
    model.to('cuda')
    if kernel == 'flash':
        chosen, why = prefix_attention.checked_varlen_kernel_for(model, torch.device('cuda'))
        assert chosen is not None, why
    else:  # else compute_answer_logps would fall back to the dense mask, and this test would not test FlexAttention
        why = prefix_attention.checked_flex_for(model, torch.device('cuda'), backward=True)
        assert not why, why
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=4, target_modules=['q_proj', 'v_proj', 'down_proj', 'qkv'],
                                             init_lora_weights=False))
    template = apo_template(processor, model, 'qwen2_5_vl')
    template.register_post_encode_hook([model])
    fast = FastPathOptions(shared_prefix=True, lean_logps=True, chunk_size=128, prefix_kernel=kernel)
    try:
        batch, labels, num_rejected = collate(template, apo_rows(tmp_path, KS))
        batch = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        labels, num_rejected = labels.cuda(), num_rejected.cuda()
        plain = _loss_and_grads(model, _adapter_disabled(model), batch, labels, num_rejected, PATHS['plain'])
        got = _loss_and_grads(model, _adapter_disabled(model), batch, labels, num_rejected, fast)
    finally:
        template.remove_post_encode_hook()
    assert got[4].packed
    _assert_same(plain[0].float(), got[0].float(), 'loss', rel=rel)
    _assert_same(plain[2].float(), got[2].float(), 'policy log-probs', rel=rel)
    assert got[3].keys() == plain[3].keys()
    for param, grad in plain[3].items():
        _assert_same(grad.float(), got[3][param].float(), f'gradient of {param}', rel=rel)


def test_sliding_window_layers_run_the_plain_batch(env, tiny_text_model):
    """transformers hands a prepared 4D mask to sliding-window layers unchanged, so a packed batch would lose the
    window: such a model runs the plain batch (a window of 16 tokens is shorter than every sequence here)."""
    from transformers import AutoConfig, Qwen2ForCausalLM
    config = AutoConfig.from_pretrained(tiny_text_model)
    config.update({'use_sliding_window': True, 'sliding_window': 16, 'max_window_layers': 1, 'layer_types': None})
    config.__init__(**config.to_dict())  # layer_types recomputed from the window settings
    assert config.layer_types == ['full_attention', 'sliding_attention']
    _, processor = load(tiny_text_model, 'qwen2')
    model = Qwen2ForCausalLM.from_pretrained(tiny_text_model, config=config, dtype=torch.float64,
                                             attn_implementation='sdpa')
    template = apo_template(processor, model, 'qwen2_5')
    batch, labels, num_rejected = collate(template, apo_rows(None, [2, 3]))
    packed, _ = pack_shared_prefix(batch, labels, num_rejected)
    with torch.no_grad():
        plain, _ = _sequence_logps(model, batch, labels, num_rejected, PATHS['plain'])
        fast, answer = _sequence_logps(model, batch, labels, num_rejected, PATHS['both'])
        windowless = model(**packed.inputs, use_cache=False).logits  # what packing would have computed
    assert not answer.packed
    _assert_same(plain, fast, 'log-probs')
    plain_logits = model(**batch, use_cache=False).logits.detach()
    tokens = plain_answer_tokens(labels)
    lost = (plain_logits[tokens.row, tokens.position] - windowless[packed.tokens.row, packed.tokens.position]).abs()
    assert lost.max() > 1e-3  # the window matters on these rows: packing them would have changed the numbers


@pytest.mark.parametrize('tuning', ['lora', 'full'])
def test_linear_attention_layers_share_the_prefix_exactly(env, family_model, tmp_path, tuning):
    """Qwen3.5's gated-delta-net layers run each prompt once and start every answer from the prompt's convolution
    inputs and recurrent state (swift_plugin/linear_attention.py), its full-attention layers take the block mask:
    loss, log-probs and every gradient equal the plain path's (LoRA on every linear layer of both kinds; full tuning
    under gradient checkpointing, which recomputes the packed layers from the same segments)."""
    from swift_plugin.linear_attention import linear_layers
    model, processor = load(family_model('qwen3.5'), 'qwen3_5')
    text = model.config.get_text_config()
    assert set(text.layer_types) == {'linear_attention', 'full_attention'}
    torch.manual_seed(0)
    if tuning == 'lora':
        model = get_peft_model(model, LoraConfig(r=4, init_lora_weights=False, target_modules=[
            'in_proj_qkv', 'in_proj_z', 'in_proj_b', 'in_proj_a', 'out_proj', 'q_proj', 'v_proj', 'down_proj']))
        reference, models = _adapter_disabled(model), [model]
    else:
        ref_model = copy.deepcopy(model)
        with torch.no_grad():
            for p in ref_model.parameters():
                p.add_(torch.randn_like(p) * 0.02)
        reference, models = _frozen(ref_model), [model, ref_model]
        model.gradient_checkpointing_enable()
        model.train()
    template = apo_template(processor, model, 'qwen3_5')
    template.register_post_encode_hook(models)
    modeling = sys.modules[type(linear_layers(model)[0]).__module__]
    try:
        # answers longer than the convolution's context and than one 64-token chunk of the scan
        batch, labels, num_rejected = collate(template, apo_rows(tmp_path, [2, 1], answer_words=14))
        with pytest.MonkeyPatch.context() as mp:
            # transformers' delta rule casts to float32, which would hide the algorithm's exactness behind float32's
            # rounding (the prompt's state handed over at its end rounds differently from the same scan run on
            # through an answer): lifted here; the float32 scan is compared in the CLI runs of test_families.py
            mp.setattr(modeling, 'torch', _TorchWithFloat32As64())
            plain, fast = [_loss_and_grads(model, reference, batch, labels, num_rejected, PATHS[name])
                           for name in ('plain', 'both')]
    finally:
        template.remove_post_encode_hook()
    assert int((labels != -100).sum(1).max()) > 64
    assert fast[4].packed and not plain[4].packed
    assert not torch.allclose(plain[1], plain[2]), 'policy and reference must differ for the test to mean something'
    _assert_same(plain[0], fast[0], 'loss')
    _assert_same(plain[1], fast[1], 'reference log-probs')
    _assert_same(plain[2], fast[2], 'policy log-probs')
    assert any('linear_attn' in n for n in plain[3]) and plain[3].keys() == fast[3].keys()
    for param, grad in plain[3].items():
        _assert_same(grad, fast[3][param], f'gradient of {param}')


class _TorchWithFloat32As64:
    """torch, except that torch.float32 is float64: a modeling module's explicit float32 casts keep float64."""
    float32 = torch.float64

    def __getattr__(self, name):
        return getattr(torch, name)


def test_linear_attention_layers_the_packing_does_not_know_are_refused_with_the_reason(env, family_model):
    """A linear-attention layer without the parts the packed forward uses (another kind of recurrence) makes the
    shared prefix step aside, saying which layer lacks what."""
    from swift_plugin.linear_attention import linear_layers
    model, processor = load(family_model('qwen3.5'), 'qwen3_5')
    template = apo_template(processor, model, 'qwen3_5')
    batch, labels, num_rejected = collate(template, apo_rows(None, [2, 1]))
    assert answer_logps_module._pack(model, batch, labels, num_rejected, {})[1] == ''
    del linear_layers(model)[0].in_proj_z
    _, reason = answer_logps_module._pack(model, batch, labels, num_rejected, {})
    assert reason == "its linear-attention layers cannot run packed (Qwen3_5GatedDeltaNet lacks ['in_proj_z'])"


@pytest.mark.parametrize('family', ['qwen2.5-vl', 'internvl3.5', 'llava-onevision', 'glm4.1v'])
def test_several_images_per_prompt_pack_once_per_row(env, family_model, tmp_path, family):
    """Two images per prompt, in each family's image layout (patch grids, tiles, any-resolution crops): each row's
    images go through the vision tower once, and every answer's log-probs are the plain batch's."""
    from tiny_models import FAMILIES
    spec = FAMILIES[family]
    model, processor = load(family_model(family), spec.model_type)
    template = apo_template(processor, model, spec.template)
    template.register_post_encode_hook([model])
    rows = apo_rows(tmp_path, [2, 1, 3])
    for i, row in enumerate(rows):  # a second, different image before the first
        second = tmp_path / f'second{i}.png'
        Image.new('RGB', (56, 84), (10, 200 - 40 * i, 60)).save(second)
        row['messages'][0]['content'] = '<image>' + row['messages'][0]['content']
        row['images'] = [str(second)] + row['images']
    try:
        batch, labels, num_rejected = collate(template, rows)
        with torch.no_grad():
            plain, _ = _sequence_logps(model, batch, labels, num_rejected, PATHS['plain'])
            fast, answer = _sequence_logps(model, batch, labels, num_rejected, PATHS['both'])
        packed, reason = pack_shared_prefix(batch, labels, num_rejected, images=image_rule_for(model.config, batch))
    finally:
        template.remove_post_encode_hook()
    assert answer.packed and reason == ''
    # a row's pixel rows once (its sequences all hold the same images)
    assert packed.inputs['pixel_values'].shape[0] * labels.shape[0] == batch['pixel_values'].shape[0] * len(rows)
    image_rows = {'qwen2.5-vl': 'image_grid_thw', 'glm4.1v': 'image_grid_thw', 'llava-onevision': 'image_sizes'}
    if family in image_rows:  # one entry per image: two per row once packed, two per sequence before
        assert packed.inputs[image_rows[family]].shape[0] == 2 * len(rows)
        assert batch[image_rows[family]].shape[0] == 2 * labels.shape[0]
    _assert_same(plain, fast, 'per-sequence log-probs', rel=1e-6)
