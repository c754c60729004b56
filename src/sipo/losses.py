"""Preference losses as pure functions of sequence log-probabilities.

Every function takes log-probabilities summed over the response tokens (EOS included, prompt masked), one value per
pair, and returns per-pair losses plus the detached implicit rewards used for logging. Nothing here touches a
model: :mod:`sipo.training.dpo` computes the log-probs and calls these functions, so what is tested here is what
trains.

Notation: ``pc, pr`` are the policy log-probs of the chosen and rejected responses, ``rc, rr`` the reference ones,
and the implicit reward of a response is ``beta * (log pi(y|x) - log pi_ref(y|x))`` (Rafailov et al. 2023, §5).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from sipo.registry import Registry

__all__ = ["LOSSES", "LossBatch", "LossDef", "dpo_loss", "dpo_nll_loss", "dpo_lw_loss", "modpo_loss",
           "sequence_nll"]


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    *,
    beta: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """The DPO loss (Rafailov et al. 2023, Eq. 7).

    ``loss = -log sigmoid(beta * [(pc - rc) - (pr - rr)])``

    Args:
        policy_chosen_logps: log pi(y_c|x) summed over response tokens. Shape: ``(batch_size,)``.
        policy_rejected_logps: log pi(y_r|x). Shape: ``(batch_size,)``.
        reference_chosen_logps: log pi_ref(y_c|x). Shape: ``(batch_size,)``.
        reference_rejected_logps: log pi_ref(y_r|x). Shape: ``(batch_size,)``.
        beta: strength of the KL regularisation (the paper's 0.1).

    Returns:
        ``(losses, chosen_rewards, rejected_rewards)``, each of shape ``(batch_size,)``; the rewards
        ``beta * (p - r)`` are detached.
    """
    chosen_logratios = policy_chosen_logps - reference_chosen_logps
    rejected_logratios = policy_rejected_logps - reference_rejected_logps
    losses = -F.logsigmoid(beta * (chosen_logratios - rejected_logratios))
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


def sequence_nll(policy_logps: Tensor, token_counts: Tensor) -> Tensor:
    """Per-sequence negative log-likelihood averaged over the response tokens: ``-logp / num_tokens``.

    Args:
        policy_logps: log pi(y|x) summed over the response tokens. Shape: ``(batch_size,)``.
        token_counts: number of response tokens of each ``y`` (EOS included). Shape: ``(batch_size,)``.

    Returns:
        Shape: ``(batch_size,)``. A response with no tokens counts as one token (its NLL is then 0).
    """
    return -policy_logps / token_counts.to(policy_logps.dtype).clamp(min=1.0)


def dpo_nll_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    chosen_token_counts: Tensor,
    *,
    beta: float,
    alpha: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """DPO plus an NLL term on the chosen response: SIPO's re-alignment loss (Li, Zhang et al. 2025; docs/method.md §1).

    ``loss = -log sigmoid(beta * [(pc - rc) - (pr - rr)]) + alpha * (-pc / n_c)``

    where ``n_c`` is the number of response tokens of the chosen response. The NLL is a per-sequence mean over the
    response tokens; the reference code divides by the padded prompt+response length instead (see
    ``docs/decisions.md``).

    Args:
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps: as in
            :func:`dpo_loss`. Shape: ``(batch_size,)``.
        chosen_token_counts: response tokens of each chosen response (EOS included). Shape: ``(batch_size,)``.
        beta: KL strength.
        alpha: weight of the NLL term (the paper's 0.1); 0 gives plain DPO.

    Returns:
        ``(losses, chosen_rewards, rejected_rewards)``, each ``(batch_size,)``, rewards detached.
    """
    losses, chosen_rewards, rejected_rewards = dpo_loss(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta=beta
    )
    losses = losses + alpha * sequence_nll(policy_chosen_logps, chosen_token_counts)
    return losses, chosen_rewards, rejected_rewards


def _weights_tensor(weights: Tensor | Sequence[float], like: Tensor) -> Tensor:
    return torch.as_tensor(weights, dtype=like.dtype, device=like.device)


def dpo_lw_loss(
    policy_a_logps: Tensor,
    policy_b_logps: Tensor,
    reference_a_logps: Tensor,
    reference_b_logps: Tensor,
    preference_signs: Tensor,
    weights: Tensor | Sequence[float],
    *,
    beta: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """DPO with linearly weighted objectives (DPO-LW; the baseline of Zhou et al. 2024 and Li, Zhang et al. 2025).

    Each objective ``o`` labels the same pair ``(a, b)``, possibly in opposite directions. With
    ``h = (pa - ra) - (pb - rb)`` and ``s_o`` = +1 if objective ``o`` prefers ``a``, -1 if it prefers ``b``, 0 if
    it has no preference (a tie: no term)::

        loss = sum_o w_o * |s_o| * (-log sigmoid(beta * s_o * h))

    i.e. ``sum_o w_o * DPO_o`` where ``DPO_o`` is the DPO loss with objective ``o``'s winner as the chosen response.

    Args:
        policy_a_logps, policy_b_logps: log pi of responses ``a`` and ``b``. Shape: ``(batch_size,)``.
        reference_a_logps, reference_b_logps: log pi_ref of ``a`` and ``b``. Shape: ``(batch_size,)``.
        preference_signs: each objective's label of the pair, in {+1, 0, -1}. Shape: ``(batch_size, N)``.
        weights: objective weights ``w``. Shape: ``(N,)``.
        beta: KL strength.

    Returns:
        ``(losses, a_rewards, b_rewards)``, each ``(batch_size,)``; rewards ``beta * (p - r)`` detached.
    """
    a_logratios = policy_a_logps - reference_a_logps
    b_logratios = policy_b_logps - reference_b_logps
    signs = preference_signs.to(a_logratios.dtype)
    w = _weights_tensor(weights, a_logratios)
    if signs.ndim != 2 or signs.shape[1] != w.shape[0]:
        raise ValueError(f"preference_signs has shape {tuple(signs.shape)}; expected (batch_size, {w.shape[0]})")
    h = (a_logratios - b_logratios).unsqueeze(1)
    per_objective = -F.logsigmoid(beta * signs * h) * signs.abs()
    losses = (per_objective * w).sum(dim=1)
    return losses, beta * a_logratios.detach(), beta * b_logratios.detach()


def modpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    margin_reward_diffs: Tensor,
    weights: Tensor | Sequence[float],
    *,
    beta: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """The MODPO loss (Zhou et al. 2024, "Beyond One-Preference-Fits-All Alignment", arXiv 2310.03708, §3).

    DPO on the target objective (the first one, whose preference labels the pair) with the other objectives'
    rewards as a margin::

        loss = -log sigmoid( (beta / w_1) * [(pc - rc) - (pr - rr)]
                             - (1 / w_1) * sum_{o > 1} w_o * (r_o(x, y_c) - r_o(x, y_r)) )

    as in the authors' ``modpo_loss`` (github ZHIsZZ/modpo), where ``r_o`` are fixed reward models; here they are
    the implicit rewards ``beta * (log pi_o - log pi_ref)`` of the other objectives' round-1 adapters.

    Args:
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps: as in
            :func:`dpo_loss`. Shape: ``(batch_size,)``.
        margin_reward_diffs: ``r_o(x, y_c) - r_o(x, y_r)`` for ``o = 2..N``. Shape: ``(batch_size, N - 1)``.
        weights: ``w = (w_1, ..., w_N)``; ``w_1`` must be positive. Shape: ``(N,)``.
        beta: KL strength.

    Returns:
        ``(losses, chosen_rewards, rejected_rewards)``, each ``(batch_size,)``; the rewards are the policy's own
        implicit rewards ``beta * (p - r)``, detached (the margin is not included).
    """
    chosen_logratios = policy_chosen_logps - reference_chosen_logps
    rejected_logratios = policy_rejected_logps - reference_rejected_logps
    w = _weights_tensor(weights, chosen_logratios)
    if float(w[0]) <= 0.0:
        raise ValueError(f"MODPO needs a positive weight on the target (first) objective, got {float(w[0]):g}")
    margins = margin_reward_diffs.to(chosen_logratios.dtype)
    if margins.ndim != 2 or margins.shape[1] != w.shape[0] - 1:
        raise ValueError(f"margin_reward_diffs has shape {tuple(margins.shape)}; expected (batch_size, {w.shape[0] - 1})")
    margin = margins @ w[1:]
    logits = (beta * (chosen_logratios - rejected_logratios) - margin) / w[0]
    losses = -F.logsigmoid(logits)
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


# ---------------------------------------------------------------------------------------------------------------
# The loss registry: what the trainer calls for each ``LossSpec.name``


PREFERENCE_SIGNS = "preference_signs"
"""Example column for ``dpo_lw``: N values in {+1, 0, -1}, +1 if objective o prefers ``chosen``."""
MARGIN = "margin"
"""Example column for ``modpo``: N - 1 values ``r_o(x, chosen) - r_o(x, rejected)`` for objectives 2..N."""

LogProbs = tuple[Tensor, Tensor, Tensor, Tensor]
"""(policy chosen, policy rejected, reference chosen, reference rejected) summed log-probs, each ``(batch,)``."""


@dataclass(frozen=True)
class LossBatch:
    """What a loss's ``compute`` gets: the four log-probs, the collated batch (its extra columns and
    ``completion_mask``), the spec's parameters and DPO's beta."""

    logps: LogProbs
    inputs: Mapping[str, Any]
    beta: float
    nll_alpha: float = 0.0
    objective_weights: tuple[float, ...] | None = None

    def chosen_token_counts(self) -> Tensor:
        """Tokens of each chosen response (the chosen rows come first in the collated batch)."""
        return self.inputs["completion_mask"][:, 1:].chunk(2, dim=0)[0].sum(dim=1)


LossResult = tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]
"""(per-pair losses, chosen rewards, rejected rewards, extra per-pair metrics to log, e.g. ``nll``)."""


def margin_accuracy(margins: Tensor, batch: LossBatch) -> Tensor:
    """Share of pairs whose implicit reward margin is positive (the chosen response wins)."""
    return (margins > 0).to(margins.dtype)


@dataclass(frozen=True)
class LossDef:
    """One preference loss that adapters can be trained with (``LossSpec(name=...)``)."""

    name: str
    compute: Callable[[LossBatch], LossResult]
    columns: Callable[[int], dict[str, int]] = lambda n: {}
    """Extra example columns the loss reads, with their widths, given the number of objective weights."""
    accuracy: Callable[[Tensor, LossBatch], Tensor] = margin_accuracy
    """Per-pair reward accuracy logged as ``rewards/accuracies``."""
    min_weights: int = 0
    """Objective weights the loss needs (0: it takes none)."""
    uses_nll_alpha: bool = False


def _dpo(batch: LossBatch) -> LossResult:
    return (*dpo_loss(*batch.logps, beta=batch.beta), {})


def _dpo_nll(batch: LossBatch) -> LossResult:
    counts = batch.chosen_token_counts()
    losses, chosen, rejected = dpo_nll_loss(*batch.logps, counts, beta=batch.beta, alpha=batch.nll_alpha)
    return losses, chosen, rejected, {"nll": sequence_nll(batch.logps[0].detach(), counts)}


def _dpo_lw(batch: LossBatch) -> LossResult:
    signs = batch.inputs[PREFERENCE_SIGNS]
    return (*dpo_lw_loss(*batch.logps, signs, batch.objective_weights or (), beta=batch.beta), {})


def _dpo_lw_accuracy(margins: Tensor, batch: LossBatch) -> Tensor:
    """Share of (weighted, non-tied) objective labels that the implicit reward margin agrees with."""
    signs = batch.inputs[PREFERENCE_SIGNS].to(margins.dtype)
    w = torch.as_tensor(batch.objective_weights, dtype=margins.dtype, device=margins.device)
    agree = ((signs * margins.unsqueeze(1)) > 0).to(margins.dtype)
    labelled = (signs.abs() * w).sum(dim=1).clamp(min=1e-12)
    return (agree * signs.abs() * w).sum(dim=1) / labelled


def _modpo(batch: LossBatch) -> LossResult:
    return (*modpo_loss(*batch.logps, batch.inputs[MARGIN], batch.objective_weights or (), beta=batch.beta), {})


LOSSES: Registry[LossDef] = Registry("loss")
"""The losses a trainer can call, by ``LossSpec.name``; a new loss is one ``LOSSES.register(LossDef(...))``."""

for _loss in (
    LossDef("dpo", _dpo),
    LossDef("dpo_nll", _dpo_nll, uses_nll_alpha=True),
    LossDef("dpo_lw", _dpo_lw, columns=lambda n: {PREFERENCE_SIGNS: n}, accuracy=_dpo_lw_accuracy, min_weights=1),
    LossDef("modpo", _modpo, columns=lambda n: {MARGIN: n - 1}, min_weights=2),
):
    LOSSES.register(_loss)
