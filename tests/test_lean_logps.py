"""lean_logps.token_logps and shared_prefix.block_causal_mask on their own, against independent computations."""
import pytest
import torch
import torch.nn.functional as F

from swift_plugin.lean_logps import token_logps
from swift_plugin.shared_prefix import block_causal_mask

TOKENS, HIDDEN, VOCAB = 23, 8, 301


def _inputs(seed=0):
    torch.manual_seed(seed)
    head = torch.nn.Linear(HIDDEN, VOCAB, dtype=torch.float64)
    hidden = torch.randn(TOKENS, HIDDEN, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(VOCAB, (TOKENS, ))
    upstream = torch.randn(TOKENS, dtype=torch.float64)  # an arbitrary loss: sum(upstream * logps)
    return head, hidden, targets, upstream


@pytest.mark.parametrize('chunk_size', [1, 5, 23, 64])
def test_values_and_gradients_equal_cross_entropy(chunk_size):
    head, hidden, targets, upstream = _inputs()
    logits = hidden @ head.weight.T + head.bias
    expected = -F.cross_entropy(logits, targets, reduction='none')
    expected_grads = torch.autograd.grad((expected * upstream).sum(), [hidden, head.weight, head.bias])

    logps, mean_logits = token_logps(hidden, targets, head, chunk_size=chunk_size)
    grads = torch.autograd.grad((logps * upstream).sum(), [hidden, head.weight, head.bias])
    torch.testing.assert_close(logps, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(mean_logits, logits.detach().mean(-1), rtol=1e-12, atol=1e-12)
    assert not mean_logits.requires_grad
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('chunk_size', [1, 5, 64])
def test_frozen_head_gradients_equal_cross_entropy(chunk_size):
    """A head without trainable parameters (LoRA's lm_head) takes the path without recomputation."""
    head, hidden, targets, upstream = _inputs(4)
    head.requires_grad_(False)
    expected = -F.cross_entropy(head(hidden), targets, reduction='none')
    expected_grad, = torch.autograd.grad((expected * upstream).sum(), hidden)
    logps, mean_logits = token_logps(hidden, targets, head, chunk_size=chunk_size)
    got, = torch.autograd.grad((logps * upstream).sum(), hidden)
    torch.testing.assert_close(logps, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(mean_logits, head(hidden).mean(-1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got, expected_grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('head_kind', ['trainable', 'frozen', 'no_grad'])
@pytest.mark.parametrize('num_tokens', [0, 5, 23])
def test_min_head_calls_pads_the_calls_and_leaves_the_results(head_kind, num_tokens):
    """Under ZeRO-3 each head call is a collective: a rank with fewer tokens must still make every call,
    in the forward and in the backward (the recomputation), without changing values or gradients."""
    head, hidden, targets, upstream = _inputs(5)
    hidden, targets, upstream = hidden[:num_tokens], targets[:num_tokens], upstream[:num_tokens]
    head.requires_grad_(head_kind == 'trainable')
    forward_calls = []
    head.register_forward_hook(lambda *_: forward_calls.append(torch.is_grad_enabled()))
    chunk_size, min_calls = 5, 7
    with torch.set_grad_enabled(head_kind != 'no_grad'):
        logps, mean_logits = token_logps(hidden, targets, head, chunk_size=chunk_size, min_head_calls=min_calls)
    calls_after_forward = len(forward_calls)
    expected = -F.cross_entropy(head(hidden).detach(), targets, reduction='none')
    forward_calls.pop()
    assert calls_after_forward == min_calls
    torch.testing.assert_close(logps.detach(), expected, rtol=1e-12, atol=1e-12)
    assert logps.shape == mean_logits.shape == (num_tokens, )
    if head_kind == 'no_grad':
        assert not logps.requires_grad
        return
    inputs = [hidden] + ([head.weight] if head_kind == 'trainable' else [])
    grads = torch.autograd.grad((logps * upstream).sum(), inputs, allow_unused=True)
    # A trainable head is recomputed in the backward, dummy calls included: as many calls again.
    assert len(forward_calls) == min_calls * (2 if head_kind == 'trainable' else 1)
    expected_grads = torch.autograd.grad((-F.cross_entropy(head(hidden), targets, reduction='none') * upstream).sum(),
                                         inputs, allow_unused=True) if num_tokens else [None] * len(inputs)
    for got, want in zip(grads, expected_grads):
        if want is None:
            assert got is None or not got.abs().any()
        else:
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_bf16_logits_are_normalised_in_float32():
    head, hidden, targets, _ = _inputs(3)
    head, hidden = head.to(torch.bfloat16), hidden.detach().to(torch.bfloat16)
    logps, _ = token_logps(hidden, targets, head, chunk_size=7)
    assert logps.dtype == torch.float32
    expected = torch.log_softmax(head(hidden).float(), -1).gather(-1, targets[:, None]).squeeze(-1)
    torch.testing.assert_close(logps, expected)


def test_no_grad_gives_the_same_values_without_a_graph():
    head, hidden, targets, _ = _inputs(1)
    with_grad, _ = token_logps(hidden, targets, head, chunk_size=4)
    with torch.no_grad():
        without, _ = token_logps(hidden, targets, head, chunk_size=4)
    assert without.grad_fn is None
    torch.testing.assert_close(without, with_grad.detach())


def test_saves_no_vocabulary_sized_tensor_for_backward():
    """What autograd keeps between forward and backward: hidden-sized chunks, never [tokens, vocab] logits."""
    head, hidden, targets, _ = _inputs(2)

    def largest_saved(fn):
        sizes = []

        def pack(t):
            sizes.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn()
        return max(sizes)

    def full_logits():
        return -F.cross_entropy(head(hidden), targets, reduction='none')

    assert largest_saved(full_logits) >= TOKENS * VOCAB  # the measurement sees the logits when they are kept
    limit = max(HIDDEN * VOCAB, TOKENS * HIDDEN)  # the head's weight and the hidden states, nothing per vocab entry
    assert largest_saved(lambda: token_logps(hidden, targets, head, chunk_size=4)) <= limit
    head.requires_grad_(False)
    assert largest_saved(lambda: token_logps(hidden, targets, head, chunk_size=4)) <= limit


def test_block_causal_mask():
    segments = torch.tensor([[0, 0, 1, 1, 2, -1]])
    allowed = block_causal_mask(segments)[0, 0].int()
    expected = torch.tensor([
        [1, 0, 0, 0, 0, 0],  # prompt: causal
        [1, 1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],  # answer 1: the prompt and itself
        [1, 1, 1, 1, 0, 0],
        [1, 1, 0, 0, 1, 0],  # answer 2: the prompt, not answer 1
        [1, 1, 0, 0, 0, 1],  # padding: the prompt and itself, so its softmax row is not empty
    ])
    assert torch.equal(allowed, expected)
    additive = block_causal_mask(segments, torch.float32)[0, 0]
    assert torch.equal(additive == 0, expected.bool())
    assert float(additive.min()) == torch.finfo(torch.float32).min
