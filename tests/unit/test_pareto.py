"""Pareto dominance, fronts and hypervolume (maximisation), with hand-derived values and properties."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipo.pareto import (
    better_on_any,
    default_reference_point,
    dominates,
    hypervolume,
    no_worse_all,
    pareto_front,
    strictly_better_all,
)

OBJ = ("c", "v")


def s(c: float, v: float) -> dict[str, float]:
    return {"c": c, "v": v}


# --- dominance on score dicts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "a, b, dom, strict, no_worse, any_better",
    [
        # better on both
        (s(2, 2), s(1, 1), True, True, True, True),
        # equal on one, better on the other: dominates but not strictly on all
        (s(2, 1), s(1, 1), True, False, True, True),
        # identical: nothing dominates, but no worse
        (s(1, 1), s(1, 1), False, False, True, False),
        # a trade-off: neither dominates; a is better on c only
        (s(2, 0), s(1, 1), False, False, False, True),
        # worse on both
        (s(0, 0), s(1, 1), False, False, False, False),
    ],
)
def test_dominance_relations_by_hand(a, b, dom, strict, no_worse, any_better):
    assert dominates(a, b, OBJ) is dom
    assert strictly_better_all(a, b, OBJ) is strict
    assert no_worse_all(a, b, OBJ) is no_worse
    assert better_on_any(a, b, OBJ) is any_better


def test_dominance_uses_keys_of_a_without_objectives_and_ignores_extra_keys():
    """Only the named objectives count: b is better on 'extra', which is not one of them."""
    a, b = {"c": 1.0, "v": 2.0}, {"c": 1.0, "v": 1.0, "extra": 9.0}
    assert dominates(a, b)
    assert dominates(a, b, ["c", "v"])
    assert not dominates(b, a, ["c", "v"])
    assert dominates({"c": 2.0, "v": 0.0, "x": 5.0}, {"c": 1.0, "v": 1.0, "x": 0.0}, ["c"])


def test_dominance_missing_objective_raises():
    with pytest.raises(KeyError):
        dominates({"c": 1.0}, {"v": 1.0}, ["c"])


def test_dominance_three_objectives():
    a = {"x": 1.0, "y": 1.0, "z": 1.0}
    assert dominates(a, {"x": 1.0, "y": 1.0, "z": 0.5})
    assert not dominates(a, {"x": 1.0, "y": 1.0, "z": 1.5})
    assert strictly_better_all(a, {"x": 0.0, "y": 0.0, "z": 0.0})


# --- Pareto front ---------------------------------------------------------------------------------------------


def test_pareto_front_hand_case():
    """(1,3), (2,2), (3,1) trade off; (1,1) is dominated by all three; (2,2.5) dominates (2,2); (0,3) is
    dominated by (1,3). Front: indices 0, 2, 4."""
    points = [(1, 3), (2, 2), (3, 1), (1, 1), (2, 2.5), (0, 3)]
    assert pareto_front(points) == [0, 2, 4]


def test_pareto_front_keeps_duplicates_and_handles_edge_cases():
    assert pareto_front([(1, 1), (1, 1), (0, 0)]) == [0, 1]
    assert pareto_front([]) == []
    assert pareto_front([(5.0, -1.0)]) == [0]
    assert pareto_front([(1.0,), (3.0,), (3.0,)]) == [1, 2]


def test_pareto_front_four_objectives():
    points = [(1, 2, 3, 4), (2, 1, 3, 4), (1, 1, 3, 4), (0, 0, 0, 5)]
    assert pareto_front(points) == [0, 1, 3]


def test_pareto_front_rejects_ragged_or_nan():
    with pytest.raises(ValueError):
        pareto_front([(1, 2), (1, 2, 3)])
    with pytest.raises(ValueError):
        pareto_front([(1, float("nan"))])


point_lists = st.lists(
    st.tuples(*[st.integers(min_value=0, max_value=4)] * 2).map(lambda t: tuple(float(x) for x in t)),
    min_size=0, max_size=12,
) | st.lists(
    st.tuples(*[st.integers(min_value=0, max_value=3)] * 3).map(lambda t: tuple(float(x) for x in t)),
    min_size=0, max_size=12,
)


@settings(max_examples=150, deadline=None, database=None)
@given(points=point_lists, data=st.data())
def test_pareto_front_invariant_to_input_order(points, data):
    order = data.draw(st.permutations(range(len(points))))
    shuffled = [points[i] for i in order]
    front = sorted(points[i] for i in pareto_front(points))
    shuffled_front = sorted(shuffled[i] for i in pareto_front(shuffled))
    assert front == shuffled_front


@settings(max_examples=150, deadline=None, database=None)
@given(points=point_lists)
def test_pareto_front_matches_the_definition(points):
    """A point is on the front iff no other point dominates it (brute force over all pairs)."""
    names = [str(i) for i in range(len(points[0]))] if points else []
    as_dict = [dict(zip(names, p)) for p in points]
    expected = [i for i, p in enumerate(as_dict) if not any(dominates(q, p, names) for q in as_dict)]
    assert pareto_front(points) == expected


# --- hypervolume ----------------------------------------------------------------------------------------------


def test_hypervolume_two_points():
    """(1,2) and (2,1) against (0,0): boxes 1x2 and 2x1 overlapping in 1x1 -> 2 + 2 - 1 = 3."""
    assert hypervolume([(1, 2), (2, 1)], [0, 0]) == pytest.approx(3.0)


def test_hypervolume_dominated_point_adds_nothing():
    assert hypervolume([(1, 2), (2, 1), (1, 1), (0.5, 0.5)], [0, 0]) == pytest.approx(3.0)


def test_hypervolume_cube_3d():
    """(2,3,4) against (1,1,1): a 1 x 2 x 3 box = 6. Adding (1.5,1.5,5): its box [1,1.5]x[1,1.5]x[1,5] (volume 1)
    overlaps the first in [1,1.5]x[1,1.5]x[1,4] (volume 0.75), so it adds 0.25 -> 6.25."""
    assert hypervolume([(2, 3, 4)], [1, 1, 1]) == pytest.approx(6.0)
    assert hypervolume([(2, 3, 4), (1.5, 1.5, 5)], [1, 1, 1]) == pytest.approx(6.25)


def test_hypervolume_negative_scores_and_reference():
    """(-1,-1) against (-3,-2): 2 x 1 = 2."""
    assert hypervolume([(-1, -1)], [-3, -2]) == pytest.approx(2.0)


def test_hypervolume_points_not_beating_reference_contribute_zero():
    """(0,5) ties the reference on the first objective; (-1,9) is worse: both add 0. (2,1) alone: 2."""
    assert hypervolume([(0, 5), (-1, 9)], [0, 0]) == 0.0
    assert hypervolume([(0, 5), (-1, 9), (2, 1)], [0, 0]) == pytest.approx(2.0)


def test_hypervolume_empty_and_shape_errors():
    assert hypervolume([], [0, 0]) == 0.0
    with pytest.raises(ValueError):
        hypervolume([(1, 2, 3)], [0, 0])
    with pytest.raises(ValueError):
        hypervolume([(1, 2)], [])


def _hv2d_brute(points, ref):
    """Union of boxes in 2-D by sweeping the sorted distinct x coordinates."""
    pts = [p for p in points if p[0] > ref[0] and p[1] > ref[1]]
    xs = sorted({ref[0], *(p[0] for p in pts)})
    total = 0.0
    for lo, hi in itertools.pairwise(xs):
        height = max((p[1] - ref[1] for p in pts if p[0] >= hi), default=0.0)
        total += (hi - lo) * height
    return total


@settings(max_examples=100, deadline=None, database=None)
@given(points=st.lists(st.tuples(st.integers(-2, 6), st.integers(-2, 6)), max_size=10))
def test_hypervolume_2d_matches_brute_force(points):
    assert hypervolume(points, [0, 0]) == pytest.approx(_hv2d_brute(points, (0, 0)))


# --- reference point ------------------------------------------------------------------------------------------


def test_default_reference_point_by_hand():
    """c ranges 0.2..0.8 -> 0.2 - 0.05*0.6 = 0.17; v ranges -1..3 -> -1 - 0.05*4 = -1.2."""
    ref = default_reference_point([(0.2, 3.0), (0.8, -1.0), (0.5, 0.0)])
    assert ref == pytest.approx([0.17, -1.2])


def test_default_reference_point_zero_range_and_margin():
    """Zero range: subtract margin * max(|min|, 1): 2 - 0.1*2 = 1.8; 0 - 0.1*1 = -0.1."""
    assert default_reference_point([(2.0, 0.0)], margin=0.1) == pytest.approx([1.8, -0.1])
    assert default_reference_point([(0.0, 1.0), (1.0, 0.0)], margin=0.0) == [0.0, 0.0]
    with pytest.raises(ValueError):
        default_reference_point([])


def test_default_reference_point_every_point_counts():
    ref = default_reference_point([(0.2, 3.0), (0.8, -1.0)])
    assert all(x > r for p in [(0.2, 3.0), (0.8, -1.0)] for x, r in zip(p, ref))
