"""Closed-form checks of the preference losses in :mod:`sipo.losses`.

The common fixture: pc = [-10, -5, 0], pr = [-10, -15, -20], rc = rr = [-10, -10, -10], so
h = (pc - rc) - (pr - rr) = [0 - 0, 5 - (-5), 10 - (-10)] = [0, 10, 20] and, with beta = 0.1, beta * h = [0, 1, 2].
-log sigmoid(t) = log(1 + exp(-t)): t = 0 -> log 2 = 0.693147; t = 1 -> 0.313262; t = 2 -> 0.126928;
t = -1 -> 1.313262; t = -2 -> 2.126928; t = 6 -> 0.002476.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sipo.losses import dpo_loss, dpo_lw_loss, dpo_nll_loss, modpo_loss, sequence_nll

BETA = 0.1


def _logps(requires_grad: bool = False):
    pc = torch.tensor([-10.0, -5.0, 0.0], requires_grad=requires_grad)
    pr = torch.tensor([-10.0, -15.0, -20.0], requires_grad=requires_grad)
    rc = torch.tensor([-10.0, -10.0, -10.0])
    rr = torch.tensor([-10.0, -10.0, -10.0])
    return pc, pr, rc, rr


def nls(t: float) -> float:
    """-log sigmoid(t)."""
    return math.log1p(math.exp(-t))


def test_dpo_loss_matches_closed_form():
    """beta * h = [0, 1, 2] -> losses [log 2, 0.313262, 0.126928];
    chosen rewards 0.1 * (pc - rc) = [0, 0.5, 1.0]; rejected 0.1 * (pr - rr) = [0, -0.5, -1.0]."""
    losses, chosen_rewards, rejected_rewards = dpo_loss(*_logps(), beta=BETA)
    torch.testing.assert_close(losses, torch.tensor([math.log(2), 0.313262, 0.126928]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(chosen_rewards, torch.tensor([0.0, 0.5, 1.0]))
    torch.testing.assert_close(rejected_rewards, torch.tensor([0.0, -0.5, -1.0]))


def test_dpo_preferred_direction_gives_lower_loss():
    """Swapping chosen and rejected turns beta * h = [1, 2] into [-1, -2]: 0.313 < 1.313, 0.127 < 2.127."""
    pc, pr, rc, rr = _logps()
    right, _, _ = dpo_loss(pc, pr, rc, rr, beta=BETA)
    wrong, _, _ = dpo_loss(pr, pc, rr, rc, beta=BETA)
    assert torch.all(right[1:] < wrong[1:])
    torch.testing.assert_close(wrong, torch.tensor([math.log(2), 1.313262, 2.126928]), atol=1e-5, rtol=1e-5)


def test_rewards_are_detached_and_losses_are_not():
    pc, pr, rc, rr = _logps(requires_grad=True)
    signs = torch.tensor([[1.0, -1.0]] * 3)
    margins = torch.zeros(3, 1)
    outputs = [
        dpo_loss(pc, pr, rc, rr, beta=BETA),
        dpo_nll_loss(pc, pr, rc, rr, torch.tensor([5, 5, 4]), beta=BETA, alpha=0.1),
        dpo_lw_loss(pc, pr, rc, rr, signs, [0.5, 0.5], beta=BETA),
        modpo_loss(pc, pr, rc, rr, margins, [0.5, 0.5], beta=BETA),
    ]
    for losses, chosen_rewards, rejected_rewards in outputs:
        assert losses.requires_grad
        assert not chosen_rewards.requires_grad
        assert not rejected_rewards.requires_grad


def test_dpo_nll_loss_matches_closed_form():
    """alpha = 0.5, chosen token counts [5, 5, 4]: NLL = -pc / n = [10/5, 5/5, 0/4] = [2, 1, 0];
    loss = [log 2 + 0.5 * 2, 0.313262 + 0.5 * 1, 0.126928 + 0] = [1.693147, 0.813262, 0.126928]."""
    losses, chosen_rewards, _ = dpo_nll_loss(*_logps(), torch.tensor([5, 5, 4]), beta=BETA, alpha=0.5)
    torch.testing.assert_close(losses, torch.tensor([1.693147, 0.813262, 0.126928]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(chosen_rewards, torch.tensor([0.0, 0.5, 1.0]))


def test_nll_is_normalised_by_chosen_response_tokens():
    """Doubling the chosen token counts halves the NLL term: alpha * [2, 1, 0] / 2 = 0.5 * [1, 0.5, 0]."""
    pc, pr, rc, rr = _logps()
    dpo, _, _ = dpo_loss(pc, pr, rc, rr, beta=BETA)
    short, _, _ = dpo_nll_loss(pc, pr, rc, rr, torch.tensor([5, 5, 4]), beta=BETA, alpha=0.5)
    long, _, _ = dpo_nll_loss(pc, pr, rc, rr, torch.tensor([10, 10, 8]), beta=BETA, alpha=0.5)
    torch.testing.assert_close(short - dpo, torch.tensor([1.0, 0.5, 0.0]))
    torch.testing.assert_close(long - dpo, torch.tensor([0.5, 0.25, 0.0]))
    torch.testing.assert_close(sequence_nll(torch.tensor([-6.0]), torch.tensor([3])), torch.tensor([2.0]))


def test_dpo_nll_with_alpha_zero_is_dpo():
    pc, pr, rc, rr = _logps()
    dpo, _, _ = dpo_loss(pc, pr, rc, rr, beta=BETA)
    nll0, _, _ = dpo_nll_loss(pc, pr, rc, rr, torch.tensor([5, 5, 4]), beta=BETA, alpha=0.0)
    torch.testing.assert_close(nll0, dpo)


def test_dpo_lw_matches_closed_form():
    """w = (0.25, 0.75); signs per pair [(+1, -1), (+1, -1), (-1, +1)]; beta * h = [0, 1, 2]:
    pair 0: 0.25 log 2 + 0.75 log 2 = 0.693147;
    pair 1: 0.25 * nls(1) + 0.75 * nls(-1) = 0.25 * 0.313262 + 0.75 * 1.313262 = 1.063262;
    pair 2: 0.25 * nls(-2) + 0.75 * nls(2) = 0.25 * 2.126928 + 0.75 * 0.126928 = 0.626928."""
    signs = torch.tensor([[1, -1], [1, -1], [-1, 1]])
    losses, a_rewards, b_rewards = dpo_lw_loss(*_logps(), signs, [0.25, 0.75], beta=BETA)
    torch.testing.assert_close(losses, torch.tensor([0.693147, 1.063262, 0.626928]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a_rewards, torch.tensor([0.0, 0.5, 1.0]))
    torch.testing.assert_close(b_rewards, torch.tensor([0.0, -0.5, -1.0]))


@pytest.mark.parametrize("objective", [0, 1])
def test_dpo_lw_with_one_hot_weight_is_dpo_on_that_objective(objective):
    """With w = e_o the loss is exactly DPO with objective o's winner as the chosen response."""
    pc, pr, rc, rr = _logps()
    signs = torch.tensor([[1, -1], [-1, 1], [1, -1]])
    weights = [1.0 if o == objective else 0.0 for o in range(2)]
    losses, _, _ = dpo_lw_loss(pc, pr, rc, rr, signs, weights, beta=BETA)
    s = signs[:, objective] > 0
    chosen = torch.where(s, pc, pr), torch.where(s, rc, rr)
    rejected = torch.where(s, pr, pc), torch.where(s, rr, rc)
    expected, _, _ = dpo_loss(chosen[0], rejected[0], chosen[1], rejected[1], beta=BETA)
    torch.testing.assert_close(losses, expected, atol=0, rtol=0)


def test_dpo_lw_tie_contributes_nothing():
    """Signs (+1, 0), w = (0.5, 0.5): the tie drops out, loss = 0.5 * DPO = 0.5 * [log 2, 0.313262, 0.126928]."""
    pc, pr, rc, rr = _logps()
    losses, _, _ = dpo_lw_loss(pc, pr, rc, rr, torch.tensor([[1, 0]] * 3), [0.5, 0.5], beta=BETA)
    torch.testing.assert_close(losses, 0.5 * torch.tensor([math.log(2), 0.313262, 0.126928]), atol=1e-5, rtol=1e-5)


@settings(max_examples=50, deadline=None)
@given(
    h=st.lists(st.floats(-50, 50), min_size=1, max_size=6),
    w=st.floats(0.0, 1.0),
)
def test_dpo_lw_with_agreeing_objectives_is_dpo(h, w):
    """When both objectives prefer `a`, sum_o w_o DPO_o = (w_1 + w_2) DPO = DPO for w on the simplex."""
    pa = torch.tensor(h, dtype=torch.float64)
    zeros = torch.zeros_like(pa)
    signs = torch.ones(len(h), 2)
    lw, _, _ = dpo_lw_loss(pa, zeros, zeros, zeros, signs, [w, 1.0 - w], beta=BETA)
    dpo, _, _ = dpo_loss(pa, zeros, zeros, zeros, beta=BETA)
    torch.testing.assert_close(lw, dpo)


def test_modpo_matches_closed_form():
    """w = (0.5, 0.5), margins r_2(c) - r_2(r) = [0, 1, -2], beta * h = [0, 1, 2]:
    logits = (beta * h - 0.5 * m) / 0.5 = [0, (1 - 0.5) / 0.5, (2 + 1) / 0.5] = [0, 1, 6];
    losses = [log 2, 0.313262, log(1 + e^-6) = 0.002476]."""
    margins = torch.tensor([[0.0], [1.0], [-2.0]])
    losses, chosen_rewards, rejected_rewards = modpo_loss(*_logps(), margins, [0.5, 0.5], beta=BETA)
    torch.testing.assert_close(losses, torch.tensor([math.log(2), 0.313262, 0.002476]), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(chosen_rewards, torch.tensor([0.0, 0.5, 1.0]))
    torch.testing.assert_close(rejected_rewards, torch.tensor([0.0, -0.5, -1.0]))


@pytest.mark.parametrize("num_objectives", [2, 3])
def test_modpo_with_all_weight_on_target_is_dpo(num_objectives):
    """w = (1, 0, ...): the margin term vanishes and 1 / w_1 = 1, so MODPO is DPO on objective 1."""
    pc, pr, rc, rr = _logps()
    margins = torch.tensor([[3.0], [-7.0], [11.0]]).expand(3, num_objectives - 1)
    weights = [1.0] + [0.0] * (num_objectives - 1)
    losses, _, _ = modpo_loss(pc, pr, rc, rr, margins, weights, beta=BETA)
    expected, _, _ = dpo_loss(pc, pr, rc, rr, beta=BETA)
    torch.testing.assert_close(losses, expected)


def test_modpo_margin_favouring_chosen_raises_the_loss():
    """A positive margin means the other objectives already prefer y_c, so less is left to learn:
    with beta * h = 1 and w = (0.5, 0.5), m = 0 gives nls(2) = 0.126928 and m = 2 gives nls(0) = log 2."""
    pc, pr, rc, rr = _logps()
    no_margin, _, _ = modpo_loss(pc[1:2], pr[1:2], rc[1:2], rr[1:2], torch.tensor([[0.0]]), [0.5, 0.5], beta=BETA)
    margin, _, _ = modpo_loss(pc[1:2], pr[1:2], rc[1:2], rr[1:2], torch.tensor([[2.0]]), [0.5, 0.5], beta=BETA)
    torch.testing.assert_close(no_margin, torch.tensor([nls(2.0)]))
    torch.testing.assert_close(margin, torch.tensor([math.log(2)]))


def test_modpo_rejects_zero_target_weight_and_bad_shapes():
    pc, pr, rc, rr = _logps()
    with pytest.raises(ValueError, match="positive weight"):
        modpo_loss(pc, pr, rc, rr, torch.zeros(3, 1), [0.0, 1.0], beta=BETA)
    with pytest.raises(ValueError, match="expected"):
        modpo_loss(pc, pr, rc, rr, torch.zeros(3, 2), [0.5, 0.5], beta=BETA)
    with pytest.raises(ValueError, match="expected"):
        dpo_lw_loss(pc, pr, rc, rr, torch.ones(3, 3), [0.5, 0.5], beta=BETA)
