"""Tests for mec_env.pareto (all objectives maximised)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mec_env.pareto import (
    cardinality,
    expected_utility,
    hypervolume,
    igd,
    maximum_utility_loss,
    normalise,
    pareto_front,
    pareto_mask,
    simplex_weights,
    sparsity,
)

pymoo_hv = pytest.importorskip("pymoo.indicators.hv")


def reference_hv(points: np.ndarray, ref: np.ndarray) -> float:
    """pymoo's (moocore's) exact hypervolume; pymoo minimises, so negate everything."""
    points = np.asarray(points, dtype=float)
    ref = np.asarray(ref, dtype=float)
    keep = np.all(points > ref, axis=1)
    if not keep.any():
        return 0.0
    return float(pymoo_hv.HV(ref_point=-ref)(-points[keep]))


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all(a >= b) and np.any(a > b))


def brute_force_mask(points: np.ndarray) -> np.ndarray:
    n = len(points)
    mask = np.zeros(n, dtype=bool)
    for i in range(n):
        if any(dominates(points[j], points[i]) for j in range(n)):
            continue
        if any(np.array_equal(points[j], points[i]) for j in range(i)):
            continue
        mask[i] = True
    return mask


def point_sets(max_n: int = 25, dims: tuple[int, ...] = (2, 3, 4)) -> st.SearchStrategy:
    """(n, d) arrays with coarse values so that ties and duplicates are frequent."""
    return st.sampled_from(dims).flatmap(
        lambda d: hnp.arrays(
            np.float64,
            st.tuples(st.integers(1, max_n), st.just(d)),
            elements=st.integers(-4, 4).map(lambda v: v / 2),
        )
    )


# ------------------------------------------------------------------ Pareto filtering
def test_pareto_mask_hand_example() -> None:
    pts = np.array([[1.0, 2.0], [2.0, 1.0], [1.0, 1.0], [2.0, 1.0], [0.0, 3.0], [1.0, 2.0]])
    assert pareto_mask(pts).tolist() == [True, True, False, False, True, False]
    np.testing.assert_array_equal(pareto_front(pts), [[0.0, 3.0], [1.0, 2.0], [2.0, 1.0]])


def test_pareto_mask_signed_zero_is_a_duplicate() -> None:
    assert pareto_mask(np.array([[0.0, 1.0], [-0.0, 1.0]])).tolist() == [True, False]


def test_pareto_mask_empty_and_errors() -> None:
    assert pareto_mask(np.zeros((0, 3))).shape == (0,)
    assert pareto_front(np.zeros((0, 2))).shape == (0, 2)
    with pytest.raises(ValueError, match="points"):
        pareto_mask(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="points"):
        pareto_mask(np.array([[0.0, np.nan]]))


def test_pareto_mask_large_random_matches_chunked_bruteforce() -> None:
    rng = np.random.default_rng(3)
    pts = np.round(rng.random((600, 3)) * 20) / 20
    ge = np.all(pts[None, :, :] >= pts[:, None, :], axis=2)
    gt = np.any(pts[None, :, :] > pts[:, None, :], axis=2)
    dominated = np.any(ge & gt, axis=1)
    expected_front = np.unique(pts[~dominated], axis=0)
    np.testing.assert_array_equal(pareto_front(pts), expected_front)


@settings(max_examples=150, deadline=None)
@given(point_sets(dims=(1, 2, 3, 4)))
def test_pareto_mask_matches_brute_force(pts: np.ndarray) -> None:
    mask = pareto_mask(pts)
    np.testing.assert_array_equal(mask, brute_force_mask(pts))
    kept = pts[mask]
    # Mutually non-dominated and distinct.
    for i, a in enumerate(kept):
        for j, b in enumerate(kept):
            if i != j:
                assert not dominates(a, b)
                assert not np.array_equal(a, b)
    # Every removed point is dominated by, or equal to, a kept one.
    for p in pts[~mask]:
        assert any(dominates(k, p) or np.array_equal(k, p) for k in kept)
    front = pareto_front(pts)
    assert len(front) == cardinality(pts) == mask.sum()
    np.testing.assert_array_equal(front, front[np.lexsort(front.T[::-1])])


# ------------------------------------------------------------------------ hypervolume
def test_hypervolume_hand_examples() -> None:
    assert hypervolume([[3.0]], [1.0]) == 2.0
    assert hypervolume([[2.0, 3.0]], [0.0, 0.0]) == 6.0
    # Two rectangles 2x1 and 1x2 overlapping on a 1x1 square: 2 + 2 - 1.
    assert hypervolume([[2.0, 1.0], [1.0, 2.0]], [0.0, 0.0]) == 3.0
    assert hypervolume([[1.0, 1.0, 1.0]], [0.0, 0.0, 0.0]) == 1.0
    # Two unit-ish boxes in 3-D: 2*1*1 + 1*2*1 + 1*1*2 - overlaps = 4.
    three = [[2.0, 1.0, 1.0], [1.0, 2.0, 1.0], [1.0, 1.0, 2.0]]
    assert hypervolume(three, [0.0, 0.0, 0.0]) == pytest.approx(4.0)
    assert hypervolume([[1.0, 2.0, 3.0, 4.0]], [0.0, 1.0, 1.0, 1.0]) == pytest.approx(6.0)
    assert hypervolume([[-1.0, -2.0]], [-3.0, -3.0]) == pytest.approx(2.0)


def test_hypervolume_empty_and_ignored_points() -> None:
    assert hypervolume(np.zeros((0, 2)), [0.0, 0.0]) == 0.0
    assert hypervolume([], [0.0, 0.0]) == 0.0
    # On the boundary or below the reference point in some objective: contributes nothing.
    assert hypervolume([[0.0, 5.0], [5.0, -1.0], [-1.0, -1.0]], [0.0, 0.0]) == 0.0
    base = hypervolume([[2.0, 1.0]], [0.0, 0.0])
    assert hypervolume([[2.0, 1.0], [0.0, 9.0], [9.0, -0.5]], [0.0, 0.0]) == base


def test_hypervolume_dominated_and_duplicates_do_not_change_it() -> None:
    rng = np.random.default_rng(7)
    for d in (2, 3, 4):
        pts = rng.random((15, d))
        ref = np.full(d, -0.1)
        hv = hypervolume(pts, ref)
        extra = np.concatenate([pts, pts[:5], pts[:5] * 0.5 - 0.05])
        assert hypervolume(extra, ref) == pytest.approx(hv, rel=1e-12)
        assert hypervolume(pareto_front(pts), ref) == pytest.approx(hv, rel=1e-12)


def test_hypervolume_validation_errors() -> None:
    with pytest.raises(ValueError, match=r"ref_point.*\(2,\).*\(3,\)"):
        hypervolume([[1.0, 2.0]], [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="ref_point"):
        hypervolume([[1.0, 2.0]], [[0.0, 0.0]])
    with pytest.raises(ValueError, match=r"ref_point.*nan"):
        hypervolume([[1.0, 2.0]], [0.0, np.nan])
    with pytest.raises(ValueError, match="ref_point"):
        hypervolume([[1.0, 2.0]], [0.0, np.inf])
    with pytest.raises(ValueError, match="points"):
        hypervolume([[1.0, np.inf]], [0.0, 0.0])
    with pytest.raises(ValueError, match="points"):
        hypervolume([1.0, 2.0], [0.0, 0.0])


@pytest.mark.parametrize(
    ("d", "n", "rounded"),
    [(2, 50, False), (2, 300, True), (3, 40, False), (3, 400, False), (3, 200, True)],
)
def test_hypervolume_matches_pymoo_2d_3d(d: int, n: int, rounded: bool) -> None:
    rng = np.random.default_rng(1000 * d + n)
    for _ in range(5):
        pts = rng.normal(size=(n, d)) * rng.uniform(0.1, 10.0, size=d)
        if rounded:
            pts = np.round(pts * 2) / 2
        ref = pts.min(axis=0) - rng.random(d)
        expected = reference_hv(pts, ref)
        assert hypervolume(pts, ref) == pytest.approx(expected, rel=1e-9)


def test_hypervolume_matches_pymoo_on_a_concave_3d_front() -> None:
    rng = np.random.default_rng(11)
    pts = np.abs(rng.normal(size=(1000, 3)))
    pts /= np.linalg.norm(pts, axis=1, keepdims=True)
    assert hypervolume(pts, np.zeros(3)) == pytest.approx(reference_hv(pts, np.zeros(3)), rel=1e-9)


@pytest.mark.parametrize(("d", "n"), [(4, 8), (4, 30), (5, 12), (6, 8)])
def test_hypervolume_matches_pymoo_high_dim(d: int, n: int) -> None:
    rng = np.random.default_rng(d * 100 + n)
    for _ in range(3):
        pts = rng.random((n, d))
        ref = rng.uniform(-0.2, 0.3, size=d)  # some points fall below the reference
        assert hypervolume(pts, ref) == pytest.approx(reference_hv(pts, ref), rel=1e-9)


@settings(max_examples=100, deadline=None)
@given(point_sets(max_n=12, dims=(2, 3, 4)))
def test_hypervolume_matches_pymoo_with_ties(pts: np.ndarray) -> None:
    ref = np.full(pts.shape[1], -1.5)
    assert hypervolume(pts, ref) == pytest.approx(reference_hv(pts, ref), rel=1e-9, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(point_sets(max_n=12, dims=(1, 2, 3, 4)), st.data())
def test_hypervolume_monotone_when_adding_a_point(pts: np.ndarray, data: st.DataObject) -> None:
    d = pts.shape[1]
    extra = data.draw(
        hnp.arrays(np.float64, (d,), elements=st.floats(-2.0, 2.0, allow_subnormal=False))
    )
    ref = np.full(d, -1.0)
    before = hypervolume(pts, ref)
    after = hypervolume(np.vstack([pts, extra]), ref)
    assert after >= before - 1e-12 * max(1.0, before)
    assert before >= 0.0


# ------------------------------------------------------------------- utility metrics
def test_expected_utility_hand_example() -> None:
    front = np.array([[1.0, 0.0], [0.0, 1.0]])
    weights = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    assert expected_utility(front, weights=weights) == pytest.approx((1 + 0.5 + 1) / 3)
    # Default 2-D weights: 50 evenly spaced -> mean of max(t, 1 - t).
    t = np.linspace(0, 1, 50)
    assert expected_utility(front) == pytest.approx(np.mean(np.maximum(t, 1 - t)))
    assert expected_utility(front, weights=[0.25, 0.75]) == pytest.approx(0.75)


def test_expected_utility_default_weights_are_seeded() -> None:
    front = np.random.default_rng(0).random((10, 3))
    assert expected_utility(front) == expected_utility(front)
    assert expected_utility(front, rng=5) == expected_utility(front, rng=5)
    assert expected_utility(front, rng=np.random.default_rng(5)) == expected_utility(front, rng=5)
    assert expected_utility(front, rng=1) != expected_utility(front, rng=2)


def test_expected_utility_errors() -> None:
    with pytest.raises(ValueError, match="front"):
        expected_utility(np.zeros((0, 2)))
    with pytest.raises(ValueError, match="weights"):
        expected_utility([[1.0, 2.0]], weights=[[1.0, 0.0, 0.0]])


@settings(max_examples=100, deadline=None)
@given(point_sets(max_n=15, dims=(2, 3, 4)), st.data())
def test_expected_utility_of_superset_is_not_lower(pts: np.ndarray, data: st.DataObject) -> None:
    subset = data.draw(st.lists(st.integers(0, len(pts) - 1), min_size=1, unique=True))
    full = expected_utility(pts)
    assert full >= expected_utility(pts[subset]) - 1e-12
    # The Pareto front loses nothing under linear utilities with non-negative weights.
    assert expected_utility(pareto_front(pts)) == pytest.approx(full, abs=1e-12)


def test_maximum_utility_loss() -> None:
    ref = np.array([[1.0, 0.0], [0.0, 1.0]])
    weights = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    assert maximum_utility_loss(ref, ref, weights) == 0.0
    assert maximum_utility_loss([[0.5, 0.5]], ref, weights) == pytest.approx(0.5)
    assert maximum_utility_loss([[2.0, 2.0]], ref, weights) == pytest.approx(-1.0)
    assert maximum_utility_loss([[0.5, 0.5]], ref) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="reference_front"):
        maximum_utility_loss([[0.5, 0.5]], [[1.0, 0.0, 0.0]], weights)


# --------------------------------------------------------------- other front metrics
def test_sparsity_hand_example() -> None:
    # Sorted x: 0, 1, 3 -> 1 + 4; sorted y: 0, 2, 3 -> 4 + 1; total 10 / (3 - 1).
    front = np.array([[0.0, 3.0], [1.0, 2.0], [3.0, 0.0]])
    assert sparsity(front) == pytest.approx(5.0)
    # Dominated and duplicate points are dropped first.
    assert sparsity(np.vstack([front, [[0.5, 0.5]], front[:1]])) == pytest.approx(5.0)
    assert sparsity([[1.0, 1.0]]) == 0.0
    assert sparsity([[1.0, 1.0], [0.0, 0.0]]) == 0.0
    assert sparsity(np.zeros((0, 2))) == 0.0


def test_cardinality_hand_example() -> None:
    pts = [[1.0, 2.0], [2.0, 1.0], [2.0, 1.0], [0.5, 0.5], [1.5, 1.5]]
    assert cardinality(pts) == 3
    assert cardinality(np.zeros((0, 3))) == 0
    assert cardinality([[1.0, 1.0, 1.0]] * 4) == 1


def test_igd_hand_example() -> None:
    reference = np.array([[0.0, 1.0], [1.0, 0.0]])
    assert igd(reference, reference) == 0.0
    # Distances: [0,1] -> [0,0] is 1; [1,0] -> [0,0] is 1.
    assert igd([[0.0, 0.0]], reference) == pytest.approx(1.0)
    # Reference [0,1] -> [0,1] is 0; [4,0] -> [4,3] is 3 (closer than sqrt(17) to [0,1]).
    assert igd([[0.0, 1.0], [4.0, 3.0]], [[0.0, 1.0], [4.0, 0.0]]) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="reference_front"):
        igd([[0.0, 1.0]], np.zeros((0, 2)))
    with pytest.raises(ValueError, match="reference_front"):
        igd([[0.0, 1.0]], [[0.0, 1.0, 2.0]])


# --------------------------------------------------------------------------- weights
def test_simplex_weights_two_objectives() -> None:
    w = simplex_weights(2, 101)
    assert w.shape == (101, 2)
    np.testing.assert_allclose(w[:, 0], np.linspace(0.0, 1.0, 101))
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    np.testing.assert_array_equal(simplex_weights(2, 3), [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]])


@pytest.mark.parametrize(("d", "per_edge"), [(3, 2), (3, 5), (3, 13), (4, 6)])
def test_simplex_weights_match_das_dennis(d: int, per_edge: int) -> None:
    from pymoo.util.ref_dirs import get_reference_directions

    w = simplex_weights(d, per_edge)
    expected = get_reference_directions("das-dennis", d, n_partitions=per_edge - 1)
    assert w.shape == expected.shape
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    assert np.all(w >= 0.0)
    np.testing.assert_allclose(np.unique(w, axis=0), np.unique(expected, axis=0), atol=1e-12)


def test_simplex_weights_errors_and_trivial() -> None:
    np.testing.assert_array_equal(simplex_weights(1, 10), [[1.0]])
    with pytest.raises(ValueError, match="num_objectives"):
        simplex_weights(0, 5)
    with pytest.raises(ValueError, match="points_per_edge"):
        simplex_weights(3, 1)


# ---------------------------------------------------------------------- normalisation
def test_normalise() -> None:
    pts = np.array([[-10.0, 0.0], [0.0, 5.0], [10.0, 10.0]])
    out = normalise(pts, low=[-10.0, 0.0], high=[10.0, 10.0])
    np.testing.assert_allclose(out, [[0.0, 0.0], [0.5, 0.5], [1.0, 1.0]])
    np.testing.assert_allclose(normalise([5.0, 5.0], 0.0, 10.0), [0.5, 0.5])
    np.testing.assert_allclose(normalise([[20.0]], [0.0], [10.0]), [[2.0]])  # no clipping
    with pytest.raises(ValueError, match="high"):
        normalise(pts, low=[0.0, 1.0], high=[1.0, 1.0])
    with pytest.raises(ValueError, match="low"):
        normalise(pts, low=[0.0, 0.0, 0.0], high=[1.0, 1.0])
    with pytest.raises(ValueError, match="high"):
        normalise(pts, low=[0.0, 0.0], high=[np.inf, 1.0])
