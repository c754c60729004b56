"""Scoring responses: implicit rewards of DPO adapters."""

from sipo.scoring.implicit import (
    implicit_reward,
    implicit_rewards,
    implicit_rewards_reference,
    sequence_logprobs,
)

__all__ = [
    "implicit_reward",
    "implicit_rewards",
    "implicit_rewards_reference",
    "sequence_logprobs",
]
