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


def _swift_dpo_sigmoid(pc, pr, rc, rr, beta):
    trainer = SimpleNamespace(beta=beta, label_smoothing=0.0, reference_free=False, f_divergence_type='reverse_kl',
                              f_divergence_params={}, accelerator=SimpleNamespace(device=pc.device))
    losses, chosen_rewards, rejected_rewards = DPOTrainer.dpo_loss(trainer, pc, pr, rc, rr, loss_type='sigmoid')
    return losses, chosen_rewards, rejected_rewards


@pytest.mark.parametrize('beta', [0.1, 0.5, 2.0])
def test_k1_equals_ms_swift_dpo_sigmoid(beta):
    pc, pr, rc, rr, _ = _random_case(rows=6, max_k=1, seed=1)
    mask = torch.ones(6, 1, dtype=torch.bool)
    ours = apo_loss(pc, pr, rc, rr, mask, beta)
    dpo_losses, dpo_chosen, dpo_rejected = _swift_dpo_sigmoid(pc, pr[:, 0], rc, rr[:, 0], beta)
    torch.testing.assert_close(ours.losses, dpo_losses, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours.chosen_rewards, dpo_chosen)
    torch.testing.assert_close(ours.rejected_rewards[:, 0], dpo_rejected)


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
