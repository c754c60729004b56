"""The combine and filter rules of SIPO (sipo.selection), pinned as the paper and the reference code state them.

Filter (reference ``select_sample.py``): a candidate is kept only if ``all(score > chosen)`` and
``all(score > rejected)`` over every judge; survivors are sorted by ``sum(score)`` and the highest is taken.
Combine (reference ``select_rewrite.py``): the rewrite replaces the sample iff ``not all(rewrite <= sample)``,
i.e. it is better on at least one objective (``not_dominated``); the paper's wording is ``no_worse``.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipo.pareto import dominates
from sipo.selection import beats_both, rewrite_replaces, select_candidate

# Six judges, as in the paper's setting: the two round-1 adapters and soups at 0.8/0.6/0.4/0.2.
JUDGES = ("r0_correctness", "r0_verbosity", "soup0.8", "soup0.6", "soup0.4", "soup0.2")


def judged(*values: float) -> dict[str, float]:
    return dict(zip(JUDGES, values))


CHOSEN = judged(1.0, 0.0, 0.5, 0.5, 0.5, 0.5)
REJECTED = judged(0.0, 1.0, 0.4, 0.4, 0.4, 0.6)


# --- filter ---------------------------------------------------------------------------------------------------


def test_the_filter_keeps_a_candidate_only_if_it_beats_both_chosen_and_rejected_on_every_judge():
    """Per judge the bar is max(chosen, rejected) = (1.0, 1.0, 0.5, 0.5, 0.5, 0.6); a candidate must clear it
    strictly on all six."""
    above_all = judged(1.1, 1.1, 0.6, 0.6, 0.6, 0.7)
    assert beats_both(above_all, CHOSEN, REJECTED)
    # beats chosen everywhere but not rejected on the verbosity judge (0.9 < 1.0)
    assert not beats_both(judged(1.1, 0.9, 0.6, 0.6, 0.6, 0.7), CHOSEN, REJECTED)
    # beats rejected everywhere but not chosen on the correctness judge
    assert not beats_both(judged(0.9, 1.1, 0.6, 0.6, 0.6, 0.7), CHOSEN, REJECTED)
    # fails on one soup only
    assert not beats_both(judged(1.1, 1.1, 0.6, 0.6, 0.6, 0.55), CHOSEN, REJECTED)


def test_a_candidate_equal_to_an_original_on_one_judge_is_dropped():
    """Strictly better: equal to chosen's 0.5 on the soup0.6 judge is not enough."""
    assert not beats_both(judged(1.1, 1.1, 0.6, 0.5, 0.6, 0.7), CHOSEN, REJECTED)
    assert select_candidate([("tie", judged(1.1, 1.1, 0.6, 0.5, 0.6, 0.7))], CHOSEN, REJECTED) is None


def test_highest_summed_reward_wins_among_survivors():
    """Sums: a = 1.1+1.1+0.6+0.6+0.6+0.7 = 4.7; b = 2+1.2+0.6+0.6+0.6+0.7 = 5.7; c = 9+9+9+9+9+0.5 = 45.5 but c
    fails the soup0.2 judge (0.5 < 0.6), so it is not eligible however high its sum. b wins."""
    candidates = [
        ("a", judged(1.1, 1.1, 0.6, 0.6, 0.6, 0.7)),
        ("b", judged(2.0, 1.2, 0.6, 0.6, 0.6, 0.7)),
        ("c", judged(9.0, 9.0, 9.0, 9.0, 9.0, 0.5)),
    ]
    assert select_candidate(candidates, CHOSEN, REJECTED) == "b"
    assert select_candidate(list(reversed(candidates)), CHOSEN, REJECTED) == "b"


def test_a_prompt_with_no_survivor_gets_none():
    candidates = [("a", judged(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)), ("b", judged(5.0, 5.0, 5.0, 5.0, 5.0, 0.6))]
    assert select_candidate(candidates, CHOSEN, REJECTED) is None
    assert select_candidate([], CHOSEN, REJECTED) is None


def test_equal_sums_go_to_the_first_listed_survivor():
    """a and b both sum to 4.7 (b moves 0.1 from the first judge to the second)."""
    a = judged(1.2, 1.1, 0.6, 0.6, 0.6, 0.6000001)
    b = judged(1.1, 1.2, 0.6, 0.6, 0.6, 0.6000001)
    assert select_candidate([("a", a), ("b", b)], CHOSEN, REJECTED) == "a"
    assert select_candidate([("b", b), ("a", a)], CHOSEN, REJECTED) == "b"


def test_filter_judges_are_the_keys_of_chosen():
    """Only the judges that scored the originals count; an extra score on the candidate is ignored."""
    chosen, rejected = {"x": 1.0}, {"x": 0.0}
    assert beats_both({"x": 2.0, "unused": -100.0}, chosen, rejected)
    with pytest.raises(KeyError):
        beats_both({"y": 2.0}, chosen, rejected)


# --- combine --------------------------------------------------------------------------------------------------


def scores(c: float, v: float) -> dict[str, float]:
    return {"correctness": c, "verbosity": v}


ORIGINAL = scores(1.0, 1.0)


@pytest.mark.parametrize("rewrite, not_dominated, no_worse", [
    # better on one, worse on the other: the reference code keeps the rewrite, the paper's wording does not
    (scores(2.0, 0.0), True, False),
    (scores(0.5, 1.5), True, False),
    # equal everywhere: the reference code keeps the original, the paper's wording takes the rewrite
    (scores(1.0, 1.0), False, True),
    # better on one, equal on the other: both replace
    (scores(1.0, 1.5), True, True),
    # better on both / worse on both
    (scores(2.0, 2.0), True, True),
    (scores(0.0, 0.0), False, False),
    # equal on one, worse on the other
    (scores(1.0, 0.5), False, False),
])
def test_combine_rules_differ_exactly_where_documented(rewrite, not_dominated, no_worse):
    assert rewrite_replaces(ORIGINAL, rewrite, "not_dominated") is not_dominated
    assert rewrite_replaces(ORIGINAL, rewrite, "no_worse") is no_worse


def test_the_rewrite_replaces_the_sample_iff_it_is_better_on_at_least_one_objective_by_default():
    """The reference code's ``not all(rewrite <= sample)`` is the config default."""
    from sipo.config import CombineRule, CombineStageConfig

    assert CombineStageConfig().rule == "not_dominated"
    assert CombineRule.values() == ("not_dominated", "no_worse")
    assert rewrite_replaces(scores(0.0, 0.0), scores(-5.0, 0.001), CombineStageConfig().rule)


def test_unknown_combine_rule():
    with pytest.raises(ValueError, match="unknown combine rule"):
        rewrite_replaces(ORIGINAL, ORIGINAL, "majority")


finite = st.floats(min_value=-10, max_value=10, allow_nan=False)


@given(st.lists(finite, min_size=3, max_size=3), st.lists(finite, min_size=3, max_size=3))
def test_combine_rules_agree_with_dominance(original_values, rewrite_values):
    """If the rewrite Pareto-dominates the sample, both rules replace it; if the sample dominates the rewrite,
    neither does; otherwise (a trade-off) not_dominated replaces and no_worse does not."""
    keys = ("a", "b", "c")
    original, rewrite = dict(zip(keys, original_values)), dict(zip(keys, rewrite_values))
    nd, nw = rewrite_replaces(original, rewrite, "not_dominated"), rewrite_replaces(original, rewrite, "no_worse")
    if dominates(rewrite, original):
        assert nd and nw
    elif dominates(original, rewrite):
        assert not nd and not nw
    elif original == rewrite:
        assert not nd and nw
    else:
        assert nd and not nw


@given(st.lists(st.tuples(finite, finite), min_size=0, max_size=6), finite, finite, finite, finite)
def test_selected_candidate_is_a_survivor_with_the_highest_sum(candidate_scores, c1, c2, r1, r2):
    chosen, rejected = {"j1": c1, "j2": c2}, {"j1": r1, "j2": r2}
    candidates = [(str(i), {"j1": x, "j2": y}) for i, (x, y) in enumerate(candidate_scores)]
    survivors = [(cid, s) for cid, s in candidates
                 if s["j1"] > max(c1, r1) and s["j2"] > max(c2, r2)]
    best = select_candidate(candidates, chosen, rejected)
    if not survivors:
        assert best is None
    else:
        best_sum = max(s["j1"] + s["j2"] for _, s in survivors)
        picked = dict(candidates)[best]
        assert best in dict(survivors)
        assert picked["j1"] + picked["j2"] == best_sum
