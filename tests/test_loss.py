"""The APO loss against independent computations (REFERENCE.md section 2)."""
import math
from types import SimpleNamespace

import pytest
import torch
from swift.rlhf_trainers import DPOTrainer

from swift_plugin.loss import apo_loss, pad_by_counts


def _random_case(rows=4, max_k=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(1, max_k + 1, (rows, ), generator=g)
    counts[0] = max_k
    mask = torch.arange(max_k)[None] < counts[:, None]
    logps = lambda *shape: -50 * torch.rand(*shape, generator=g, dtype=dtype)  # noqa: E731
    return logps(rows), logps(rows, max_k), logps(rows), logps(rows, max_k), mask


def _reference_loss(pc, pr, rc, rr, mask, beta):
    """-log softmax([r+, r_1..r_K])[0] written out with Python floats, row by row."""
    losses = []
    for i in range(len(pc)):
        chosen = beta * (pc[i].item() - rc[i].item())
        rejected = [beta * (pr[i, k].item() - rr[i, k].item()) for k in range(pr.shape[1]) if mask[i, k]]
        top = max([chosen] + rejected)
        denominator = sum(math.exp(r - top) for r in [chosen] + rejected)
        losses.append(-(chosen - top - math.log(denominator)))
    return torch.tensor(losses, dtype=torch.float64)


def _swift_dpo_sigmoid(pc, pr, rc, rr, beta, label_smoothing=0.0):
    trainer = SimpleNamespace(beta=beta, label_smoothing=label_smoothing, reference_free=False,
                              f_divergence_type='reverse_kl',
                              f_divergence_params={}, accelerator=SimpleNamespace(device=pc.device))
    losses, chosen_rewards, rejected_rewards = DPOTrainer.dpo_loss(trainer, pc, pr, rc, rr, loss_type='sigmoid')
    return losses, chosen_rewards, rejected_rewards


def _smoothed_reference_loss(pc, pr, rc, rr, mask, beta, eps):
    """Cross-entropy of softmax([r+, r_1..r_K]) against (1 - eps, eps/K, ..., eps/K), by explicit log_softmax
    over each row's real answers in float64."""
    losses = []
    for i in range(len(pc)):
        real = mask[i]
        rewards = torch.cat([beta * (pc[i:i + 1] - rc[i:i + 1]), beta * (pr[i, real] - rr[i, real])]).double()
        k = int(real.sum())
        target = torch.tensor([1 - eps] + [eps / k] * k, dtype=torch.float64)
        losses.append(-(target * torch.log_softmax(rewards, 0)).sum())
    return torch.stack(losses)


@pytest.mark.parametrize('beta', [0.1, 0.5, 2.0])
def test_k1_equals_ms_swift_dpo_sigmoid(beta):
    pc, pr, rc, rr, _ = _random_case(rows=6, max_k=1, seed=1)
    mask = torch.ones(6, 1, dtype=torch.bool)
    ours = apo_loss(pc, pr, rc, rr, mask, beta)
    dpo_losses, dpo_chosen, dpo_rejected = _swift_dpo_sigmoid(pc, pr[:, 0], rc, rr[:, 0], beta)
    torch.testing.assert_close(ours.losses, dpo_losses, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours.chosen_rewards, dpo_chosen)
    torch.testing.assert_close(ours.rejected_rewards[:, 0], dpo_rejected)


@pytest.mark.parametrize('eps', [0.05, 0.2, 0.45])
def test_label_smoothing_k1_equals_ms_swift_conservative_dpo(eps):
    """K = 1: -(1 - eps) logsigmoid(beta h) - eps logsigmoid(-beta h), the formula of ms-swift's DPOTrainer.dpo_loss
    (sigmoid); trl 0.29's own sigmoid branch no longer applies label smoothing."""
    pc, pr, rc, rr, _ = _random_case(rows=6, max_k=1, seed=11)
    mask = torch.ones(6, 1, dtype=torch.bool)
    ours = apo_loss(pc, pr, rc, rr, mask, 0.3, label_smoothing=eps).losses
    dpo_losses, _, _ = _swift_dpo_sigmoid(pc, pr[:, 0], rc, rr[:, 0], 0.3, label_smoothing=eps)
    torch.testing.assert_close(ours, dpo_losses, rtol=1e-12, atol=1e-12)
    h = 0.3 * ((pc - rc) - (pr[:, 0] - rr[:, 0]))
    written = -(1 - eps) * torch.nn.functional.logsigmoid(h) - eps * torch.nn.functional.logsigmoid(-h)
    torch.testing.assert_close(ours, written, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(ours, apo_loss(pc, pr, rc, rr, mask, 0.3).losses)


@pytest.mark.parametrize('eps', [0.1, 0.3])
def test_label_smoothing_with_mixed_k_matches_explicit_cross_entropy(eps):
    pc, pr, rc, rr, mask = _random_case(rows=6, max_k=7, seed=12)
    pc, pr, rc, rr = (t / 20 for t in (pc, pr, rc, rr))  # rewards of order 1, so the eps terms matter
    assert len(set(mask.sum(1).tolist())) > 1
    ours = apo_loss(pc, pr, rc, rr, mask, 0.5, label_smoothing=eps)
    torch.testing.assert_close(ours.losses, _smoothed_reference_loss(pc, pr, rc, rr, mask, 0.5, eps))
    # Rewards are the same as without smoothing; only the loss changes.
    plain = apo_loss(pc, pr, rc, rr, mask, 0.5)
    torch.testing.assert_close(ours.rejected_rewards, plain.rejected_rewards)
    assert not torch.allclose(ours.losses, plain.losses)


def test_label_smoothing_properties():
    pc, pr, rc, rr, mask = _random_case(rows=5, max_k=6, seed=13)
    pc, pr, rc, rr = (t / 20 for t in (pc, pr, rc, rr))
    base = apo_loss(pc, pr, rc, rr, mask, 0.4, label_smoothing=0.2).losses
    # eps = 0 is the unsmoothed loss, bit for bit.
    assert torch.equal(apo_loss(pc, pr, rc, rr, mask, 0.4, label_smoothing=0.0).losses,
                       apo_loss(pc, pr, rc, rr, mask, 0.4).losses)
    # Padding slots contribute nothing, whatever they hold, and an extra padding column changes nothing.
    garbage = pr.clone()
    garbage[~mask] = 1e4
    torch.testing.assert_close(apo_loss(pc, garbage, rc, rr, mask, 0.4, label_smoothing=0.2).losses, base)
    widen = lambda t: torch.cat([t, torch.full((t.shape[0], 1), -7.0, dtype=t.dtype)], 1)  # noqa: E731
    wider_mask = torch.cat([mask, torch.zeros(5, 1, dtype=torch.bool)], 1)
    torch.testing.assert_close(apo_loss(pc, widen(pr), rc, widen(rr), wider_mask, 0.4, label_smoothing=0.2).losses,
                               base)
    # The order of the rejected answers does not matter.
    full = torch.ones_like(mask)
    permutation = torch.tensor([4, 2, 0, 5, 1, 3])
    torch.testing.assert_close(
        apo_loss(pc, pr[:, permutation], rc, rr[:, permutation], full, 0.4, label_smoothing=0.2).losses,
        apo_loss(pc, pr, rc, rr, full, 0.4, label_smoothing=0.2).losses)
    # While policy = reference every answer is equally likely: log(1 + K) for any eps.
    torch.testing.assert_close(apo_loss(pc, pr, pc, pr, mask, 0.4, label_smoothing=0.2).losses,
                               torch.log1p(mask.sum(1).double()))
    # Gradients: finite differences, and none reaches a padding slot.
    pc.requires_grad_(True)
    pr.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda c, r: apo_loss(c, r, rc, rr, mask, 0.4, label_smoothing=0.2).losses.sum(), (pc, pr))
    apo_loss(pc, pr, rc, rr, mask, 0.4, label_smoothing=0.2).losses.sum().backward()
    assert (pr.grad[~mask] == 0).all()


def test_label_smoothing_bounds_the_margin():
    """The smoothed loss is minimised at the margin log((1 - eps) K / eps), not at an infinite one."""
    eps, k = 0.1, 3
    margin = torch.linspace(0, 10, 2001, dtype=torch.float64)
    rejected = torch.zeros(margin.shape[0], k, dtype=torch.float64)
    mask = torch.ones_like(rejected, dtype=torch.bool)
    losses = apo_loss(margin, rejected, torch.zeros_like(margin), rejected, mask, 1.0, label_smoothing=eps).losses
    assert float(margin[losses.argmin()]) == pytest.approx(math.log((1 - eps) * k / eps), abs=0.01)


@pytest.mark.parametrize('eps', [-0.1, 0.5, 0.9])
def test_label_smoothing_out_of_range_is_refused(eps):
    pc, pr, rc, rr, mask = _random_case(rows=2, max_k=2, seed=14)
    with pytest.raises(ValueError, match=r'label_smoothing must lie in \[0, 0.5\)'):
        apo_loss(pc, pr, rc, rr, mask, 0.1, label_smoothing=eps)


def test_matches_written_out_softmax_with_mixed_k():
    pc, pr, rc, rr, mask = _random_case(rows=5, max_k=7, seed=2)
    ours = apo_loss(pc, pr, rc, rr, mask, beta=0.3)
    torch.testing.assert_close(ours.losses, _reference_loss(pc, pr, rc, rr, mask, 0.3))


def test_policy_equal_to_reference_gives_log_one_plus_k():
    pc, pr, _, _, mask = _random_case(rows=6, max_k=8, seed=3)
    ours = apo_loss(pc, pr, pc.clone(), pr.clone(), mask, beta=0.1)
    expected = torch.log1p(mask.sum(1).double())
    torch.testing.assert_close(ours.losses, expected)
    assert len(set(mask.sum(1).tolist())) > 1, 'the case should mix several K'


def test_order_of_rejected_answers_does_not_matter():
    pc, pr, rc, rr, mask = _random_case(rows=3, max_k=6, seed=4)
    mask[:] = True
    base = apo_loss(pc, pr, rc, rr, mask, beta=0.2).losses
    permutation = torch.tensor([3, 0, 5, 1, 4, 2])
    permuted = apo_loss(pc, pr[:, permutation], rc, rr[:, permutation], mask, beta=0.2).losses
    torch.testing.assert_close(base, permuted)
    # The chosen answer is not interchangeable with a rejected one: swapping them changes the loss.
    swapped = apo_loss(pr[:, 0], torch.cat([pc[:, None], pr[:, 1:]], 1), rr[:, 0],
                       torch.cat([rc[:, None], rr[:, 1:]], 1), mask, beta=0.2).losses
    assert not torch.allclose(base, swapped)


def test_masked_slot_changes_nothing():
    pc, pr, rc, rr, mask = _random_case(rows=4, max_k=5, seed=5)
    base = apo_loss(pc, pr, rc, rr, mask, beta=0.1)
    garbage = pr.clone()
    garbage[~mask] = 1e4  # a padded slot whose value would dominate if it counted
    other = apo_loss(pc, garbage, rc, rr, mask, beta=0.1)
    torch.testing.assert_close(base.losses, other.losses)
    # An extra all-padding column changes nothing either.
    widen = lambda t: torch.cat([t, torch.zeros(t.shape[0], 1, dtype=t.dtype)], 1)  # noqa: E731
    wider = apo_loss(pc, widen(pr), rc, widen(rr), torch.cat([mask, torch.zeros(4, 1, dtype=torch.bool)], 1), 0.1)
    torch.testing.assert_close(base.losses, wider.losses)
    assert (base.rejected_rewards[~mask] == 0).all()


def test_gradients_match_finite_differences():
    pc, pr, rc, rr, mask = _random_case(rows=3, max_k=4, seed=6)
    pc.requires_grad_(True)
    pr.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda c, r: apo_loss(c, r, rc, rr, mask, beta=0.7).losses.sum(), (pc, pr))
    apo_loss(pc, pr, rc, rr, mask, beta=0.7).losses.sum().backward()
    assert (pr.grad[~mask] == 0).all(), 'padding slots must get no gradient'
    assert (pc.grad < 0).all(), 'raising the chosen log-prob must lower the loss'


def test_row_without_rejected_answer_is_refused():
    pc, pr, rc, rr, mask = _random_case(rows=2, max_k=3, seed=7)
    mask[1] = False
    with pytest.raises(ValueError, match='at least one rejected'):
        apo_loss(pc, pr, rc, rr, mask, beta=0.1)


def test_pad_by_counts_layout_and_gradient():
    flat = torch.arange(1., 7., requires_grad=True)  # row 0: 1, 2, 3; row 1: 4; row 2: 5, 6
    padded, mask = pad_by_counts(flat, torch.tensor([3, 1, 2]))
    assert padded.tolist() == [[1, 2, 3], [4, 0, 0], [5, 6, 0]]
    assert mask.tolist() == [[True, True, True], [True, False, False], [True, True, False]]
    (padded * torch.arange(9.).view(3, 3)).sum().backward()
    assert flat.grad.tolist() == [0, 1, 2, 3, 6, 7]
