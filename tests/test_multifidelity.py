"""Multi-fidelity promotion rule on hand-made rungs (ranks, crowding, ties, counts), the
experiment option, and the trial flow on a real Optuna study."""

from __future__ import annotations

import math

import pytest

from nas.multifidelity import crowding_distance, promoted_count, promotes, rank_trials, select_promoted

ACC_MMACS = ["maximize", "minimize"]


def test_nondominated_first_then_crowding() -> None:
    # front 0: 0, 1, 2 (2 is interior, finite crowding); 3 and 4 are dominated
    rung = {0: [0.90, 30.0], 1: [0.80, 10.0], 2: [0.85, 20.0], 3: [0.70, 40.0], 4: [0.60, 50.0], 5: [0.84, 25.0]}
    assert rank_trials(rung, ACC_MMACS)[:3] == [0, 1, 2]
    # 6 trials, promote 1/3 -> exactly 2: the two boundary points of front 0, not the interior one
    assert select_promoted(rung, ACC_MMACS, 1 / 3) == [0, 1]
    assert promotes(1, rung, ACC_MMACS, 1 / 3) and not promotes(2, rung, ACC_MMACS, 1 / 3)
    # half: all of front 0 (3), never a dominated trial ahead of a non-dominated one
    assert select_promoted(rung, ACC_MMACS, 0.5) == [0, 1, 2]


def test_crowding_prefers_the_isolated_point() -> None:
    # one front of 5 (accuracy up, MMACs up); 2 sits alone in a wide gap, 3 is crowded by 4
    front = {0: [0.50, 10.0], 1: [0.55, 12.0], 2: [0.70, 30.0], 3: [0.88, 48.0], 4: [0.90, 50.0]}
    d = crowding_distance(list(front.values()))
    assert math.isinf(d[0]) and math.isinf(d[4])
    assert d[2] > d[1] and d[2] > d[3]
    assert d[2] == pytest.approx((0.88 - 0.55) / 0.40 + (48 - 12) / 40)
    assert select_promoted(front, ACC_MMACS, 0.6) == [0, 4, 2]


def test_ties_break_by_trial_number() -> None:
    same = {7: [0.8, 20.0], 3: [0.8, 20.0], 5: [0.8, 20.0], 9: [0.5, 40.0]}
    assert rank_trials(same, ACC_MMACS) == [3, 5, 7, 9]
    assert select_promoted(same, ACC_MMACS, 0.5) == [3, 5]
    # equal in one objective and better in the other dominates: 1 is behind 0 and 2
    weak = {0: [0.8, 20.0], 1: [0.8, 25.0], 2: [0.9, 25.0]}
    assert rank_trials(weak, ACC_MMACS)[-1] == 1


@pytest.mark.parametrize(("n", "promote", "expected"), [
    (2, 1 / 3, 0), (3, 1 / 3, 1), (5, 1 / 3, 1), (6, 1 / 3, 2), (9, 1 / 3, 3), (10, 0.5, 5), (4, 0.25, 1),
    (7, 0.5, 3),
])
def test_fraction_rounds_down(n: int, promote: float, expected: int) -> None:
    assert promoted_count(n, promote, 1) == expected
    rung = {i: [0.5 + i / 100, 10.0 + i] for i in range(n)}  # one front: every trial non-dominated
    assert len(select_promoted(rung, ACC_MMACS, promote)) == expected


def test_min_population_holds_promotion_back() -> None:
    rung = {0: [0.9, 10.0], 1: [0.1, 90.0], 2: [0.2, 80.0], 3: [0.3, 70.0]}
    assert select_promoted(rung, ACC_MMACS, 0.5, min_population=5) == []
    assert select_promoted(rung, ACC_MMACS, 0.5, min_population=4) == [0, 3]


def test_non_finite_never_promoted_but_counts() -> None:
    rung = {0: [math.nan, 10.0], 1: [0.5, 20.0], 2: [0.4, 30.0]}
    assert select_promoted(rung, ACC_MMACS, 2 / 3) == [1, 2]
    with pytest.raises(ValueError, match="trial 9"):
        promotes(9, rung, ACC_MMACS, 0.5)
