"""Objective directions, MnasNet scalarisation and Pareto dominance."""

from __future__ import annotations

import pytest

from objectives.scores import OBJECTIVES, directions, dominates, scalarized, validate_objectives


def test_directions_in_one_place() -> None:
    assert directions(["accuracy", "mmacs", "latency_ms", "params", "score"]) == [
        "maximize", "minimize", "minimize", "minimize", "maximize",
    ]
    assert OBJECTIVES["accuracy"].unit == "top-1" and OBJECTIVES["mmacs"].unit == "MMACs"
    assert OBJECTIVES["latency_ms"].unit == "ms" and OBJECTIVES["params"].unit == "Mparams"
    assert OBJECTIVES["accuracy"].better(0.9, 0.8) and OBJECTIVES["mmacs"].better(10, 20)


def test_unknown_duplicate_and_empty_objectives() -> None:
    with pytest.raises(ValueError, match="known: accuracy, mmacs, latency_ms, params, score"):
        validate_objectives(["accuracy", "flops"])
    with pytest.raises(ValueError, match="unknown"):
        directions(["top5"])
    with pytest.raises(ValueError, match="duplicates"):
        validate_objectives(["accuracy", "accuracy"])
    with pytest.raises(ValueError, match="at least one"):
        validate_objectives([])
    assert validate_objectives("mmacs") == ["mmacs"]


def test_scalarized_hand_computed() -> None:
    assert scalarized(0.8, 10.0, 10.0) == pytest.approx(0.8)
    # 2x slower than target: 0.8 * 2**-0.07 = 0.8 * 0.952638...
    assert scalarized(0.8, 20.0, 10.0) == pytest.approx(0.8 * 0.9526380, rel=1e-6)
    # 2x faster: rewarded by 2**0.07 = 1.049717...
    assert scalarized(0.8, 5.0, 10.0) == pytest.approx(0.8 * 1.0497167, rel=1e-6)
    assert scalarized(0.5, 40.0, 10.0, w=-0.5) == pytest.approx(0.25)
    # hard constraint (alpha=0, beta=-1): fast models keep their accuracy, slow ones are cut
    assert scalarized(0.8, 5.0, 10.0, w=0.0, beta=-1.0) == pytest.approx(0.8)
    assert scalarized(0.8, 20.0, 10.0, w=0.0, beta=-1.0) == pytest.approx(0.4)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="latency_ms"):
            scalarized(0.8, bad, 10.0)
    with pytest.raises(ValueError, match="target_ms"):
        scalarized(0.8, 10.0, 0.0)


def test_dominates() -> None:
    d = ["maximize", "minimize"]  # accuracy, latency
    assert dominates([0.9, 5.0], [0.8, 6.0], d)
    assert dominates([0.9, 6.0], [0.8, 6.0], d)  # equal in one, better in the other
    assert not dominates([0.9, 6.0], [0.9, 6.0], d)  # equal is not domination
    assert not dominates([0.9, 7.0], [0.8, 6.0], d)  # trade-off
    assert not dominates([0.8, 6.0], [0.9, 5.0], d)
    assert dominates([1.0], [2.0], ["minimize"]) and not dominates([1.0], [2.0], ["maximize"])
    with pytest.raises(ValueError, match="equal lengths"):
        dominates([1.0], [1.0, 2.0], d)
    with pytest.raises(ValueError, match="directions"):
        dominates([1.0], [2.0], ["max"])
