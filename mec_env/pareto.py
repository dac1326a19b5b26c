"""Multi-objective metrics for Pareto fronts (all objectives are MAXIMISED).

The conventions follow morl-baselines / MO-Gymnasium: every objective is a reward, so
*higher is better* and costs enter as negated values. A point ``a`` dominates ``b`` when
``a >= b`` in every objective and ``a > b`` in at least one.

Everything here is pure numpy and has no dependency on the rest of the project:

* :func:`pareto_mask` / :func:`pareto_front` -- non-dominated filtering.
* :func:`hypervolume` -- exact hypervolume for any number of objectives (closed form
  for one objective, a sweep for two, a sweep with an incrementally maintained 2-D
  staircase for three, and recursive slicing (HSO) down to the 3-D case above that).
* :func:`expected_utility`, :func:`maximum_utility_loss` -- linear-utility metrics.
* :func:`sparsity`, :func:`cardinality`, :func:`igd` -- spread / size / distance metrics.
* :func:`simplex_weights` -- evenly spaced preference vectors (Das-Dennis lattice).
* :func:`normalise` -- per-objective linear rescaling with user supplied bounds.
"""

from __future__ import annotations

import bisect
from itertools import combinations

import numpy as np

__all__ = [
    "cardinality",
    "expected_utility",
    "hypervolume",
    "igd",
    "maximum_utility_loss",
    "normalise",
    "pareto_front",
    "pareto_mask",
    "simplex_weights",
    "sparsity",
]

# Upper bound on the number of elements of the boolean (chunk, n, d) tensor built while
# checking dominance, to keep memory bounded for large inputs.
_CHUNK_ELEMENTS = 1 << 22


# --------------------------------------------------------------------------- helpers
def _as_points(points: np.ndarray, name: str = "points") -> np.ndarray:
    """Converts ``points`` to a float64 ``(n, d)`` array and checks it.

    An empty input (``[]`` or any array with zero elements and at most two dimensions) is
    returned as an array of shape ``(0, d)`` (``d = 0`` when unknown).

    Raises:
        ValueError: If the array is not 2-D or contains NaN/inf.
    """
    arr = np.asarray(points, dtype=np.float64)
    if arr.size == 0 and arr.ndim <= 2:
        return arr.reshape(0, arr.shape[1] if arr.ndim == 2 else 0)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of shape (n, d), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = arr[~np.isfinite(arr)]
        raise ValueError(f"{name} must contain only finite values, got {bad[:5].tolist()}")
    return arr


def _lexsort_rows(points: np.ndarray) -> np.ndarray:
    """Returns the stable order sorting rows lexicographically (first column primary)."""
    return np.lexsort(points.T[::-1])


def _unique_first(points: np.ndarray) -> np.ndarray:
    """Indices of the first occurrence of every distinct row (numeric equality).

    ``-0.0`` and ``0.0`` are treated as equal, unlike ``np.unique(axis=0)``.
    """
    n = points.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.intp)
    order = _lexsort_rows(points)
    srt = points[order]
    new = np.ones(n, dtype=bool)
    new[1:] = np.any(srt[1:] != srt[:-1], axis=1)
    # lexsort is stable, so the first row of each group has the smallest original index.
    return np.sort(order[new])


def _nondominated_distinct(points: np.ndarray) -> np.ndarray:
    """Boolean mask over *distinct* rows: True where no other row weakly dominates it.

    Because the rows are pairwise distinct, a row ``j != i`` with ``p_j >= p_i``
    everywhere dominates ``p_i`` strictly.
    """
    n, d = points.shape
    if n <= 1:
        return np.ones(n, dtype=bool)
    if d == 1:
        return points[:, 0] == points[:, 0].max()
    if d == 2:
        # Sort by x descending, then y descending: every earlier row has a larger x, or an
        # equal x and a larger y. A row survives iff its y beats every earlier y.
        order = np.lexsort((-points[:, 1], -points[:, 0]))
        ys = points[order, 1]
        prev_max = np.empty(n)
        prev_max[0] = -np.inf
        prev_max[1:] = np.maximum.accumulate(ys)[:-1]
        mask = np.empty(n, dtype=bool)
        mask[order] = ys > prev_max
        return mask
    # Visit rows by decreasing coordinate sum, ties broken lexicographically descending:
    # a dominator then always comes strictly before the rows it dominates (floating-point
    # summation is monotone, and a dominator is lexicographically larger). So each block
    # only needs checking against the survivors found so far and against itself.
    order = np.lexsort(tuple(-points[:, ::-1].T) + (-points.sum(axis=1),))
    srt = points[order]
    keep = np.zeros(n, dtype=bool)
    front = np.empty((0, d))
    block = 256
    for start in range(0, n, block):
        cand = srt[start : start + block]
        alive = np.ones(cand.shape[0], dtype=bool)
        if front.shape[0]:
            step = max(1, _CHUNK_ELEMENTS // (block * d))
            for f0 in range(0, front.shape[0], step):
                sub = front[f0 : f0 + step]
                alive &= ~np.any(np.all(sub[None, :, :] >= cand[:, None, :], axis=2), axis=1)
        # Within the block, every row weakly dominates itself; any other is strict.
        alive &= np.all(cand[None, :, :] >= cand[:, None, :], axis=2).sum(axis=1) == 1
        keep[start : start + block] = alive
        front = np.concatenate((front, cand[alive]))
    mask = np.empty(n, dtype=bool)
    mask[order] = keep
    return mask


# ------------------------------------------------------------------ Pareto filtering
def pareto_mask(points: np.ndarray) -> np.ndarray:
    """Marks the non-dominated rows of a set of points (maximisation).

    Duplicated non-dominated points are kept exactly once (the first occurrence); the
    other copies are marked False. The check is vectorised: O(n log n) for two
    objectives; otherwise blocks of rows (in decreasing-sum order) are compared with
    numpy broadcasting against the survivors found so far, i.e. O(n * |front| * d) work
    with bounded memory.

    Args:
        points: Array-like of shape ``(n, d)``, one point per row.

    Returns:
        Boolean array of shape ``(n,)``; True for the rows forming the Pareto front.

    Raises:
        ValueError: If ``points`` is not 2-D or contains non-finite values.
    """
    pts = _as_points(points)
    mask = np.zeros(pts.shape[0], dtype=bool)
    if pts.shape[0] == 0:
        return mask
    pts = pts + 0.0  # folds -0.0 into 0.0
    first = _unique_first(pts)
    mask[first[_nondominated_distinct(pts[first])]] = True
    return mask


def pareto_front(points: np.ndarray) -> np.ndarray:
    """Returns the distinct non-dominated points, sorted lexicographically.

    Args:
        points: Array-like of shape ``(n, d)``.

    Returns:
        Float array of shape ``(m, d)`` with the Pareto-optimal rows, sorted by the first
        objective, ties broken by the second, and so on.

    Raises:
        ValueError: If ``points`` is not 2-D or contains non-finite values.
    """
    pts = _as_points(points)
    front = pts[pareto_mask(pts)]
    return front[_lexsort_rows(front)]


# ------------------------------------------------------------------------ hypervolume
def _hv2d(q: np.ndarray) -> float:
    """Area dominated by positive 2-D points ``q`` (reference at the origin)."""
    order = np.lexsort((-q[:, 1], -q[:, 0]))  # x descending, then y descending
    xs, ys = q[order, 0], q[order, 1]
    prev = np.maximum.accumulate(np.concatenate(([0.0], ys)))
    # Each row adds the horizontal strip between the best y so far and its own y.
    gain = np.maximum(ys - prev[:-1], 0.0)
    return float(np.sum(xs * gain))


def _hv3d(q: np.ndarray) -> float:
    """Volume dominated by positive 3-D points ``q`` (reference at the origin).

    Sweeps the points by decreasing third objective while maintaining the 2-D staircase
    of the points seen so far (x ascending, y descending) and its area incrementally.
    """
    order = np.lexsort((-q[:, 1], -q[:, 0], -q[:, 2]))
    q = q[order]
    xs: list[float] = []
    neg_ys: list[float] = []  # -y, ascending, so bisect works on it
    area = 0.0
    volume = 0.0
    n = q.shape[0]
    for k in range(n):
        a, b, z = float(q[k, 0]), float(q[k, 1]), float(q[k, 2])
        i = bisect.bisect_left(xs, a)  # xs[i:] >= a; the best y among them is at i
        if not (i < len(xs) and -neg_ys[i] >= b):  # (a, b) is not dominated
            e = bisect.bisect_right(xs, a)  # rows [s, e) have x <= a and y <= b
            s = bisect.bisect_left(neg_ys, -b)
            x_before = xs[s - 1] if s > 0 else 0.0
            old = 0.0
            prev_x = x_before
            for j in range(s, e):
                old += (xs[j] - prev_x) * -neg_ys[j]
                prev_x = xs[j]
            new = (a - x_before) * b
            if e < len(xs):
                y_next = -neg_ys[e]
                old += (xs[e] - prev_x) * y_next
                new += (xs[e] - a) * y_next
            area += new - old
            xs[s:e] = [a]
            neg_ys[s:e] = [-b]
        z_next = float(q[k + 1, 2]) if k + 1 < n else 0.0
        if z > z_next:
            volume += area * (z - z_next)
    return volume


def _hv_positive(q: np.ndarray) -> float:
    """Hypervolume of strictly positive points ``q`` w.r.t. the origin (any d >= 1)."""
    n, d = q.shape
    if n == 0:
        return 0.0
    if d == 1:
        return float(q.max())
    if d == 2:
        return _hv2d(q)
    if d == 3:
        return _hv3d(q)
    # HSO: slice along the last objective; each slab is the (d-1)-D hypervolume of the
    # points reaching at least that height, times the slab thickness.
    q = q[np.argsort(-q[:, -1], kind="stable")]
    total = 0.0
    for k in range(n):
        z_next = q[k + 1, -1] if k + 1 < n else 0.0
        thickness = q[k, -1] - z_next
        if thickness > 0.0:
            proj = q[: k + 1, :-1]
            proj = proj[pareto_mask(proj)]
            total += thickness * _hv_positive(proj)
    return float(total)


def hypervolume(points: np.ndarray, ref_point: np.ndarray) -> float:
    """Exact hypervolume dominated by ``points`` and bounded below by ``ref_point``.

    All objectives are maximised. Points that do not strictly exceed ``ref_point`` in
    every objective contribute nothing and are ignored. Dominated and duplicated points do
    not change the result. Cost: O(n log n) for d <= 2, O(n^2) worst case (usually much
    less) for d = 3, and roughly O(n^(d-2)) slices for d >= 4 (fine for small fronts).

    Args:
        points: Array-like of shape ``(n, d)``; an empty input gives 0.0.
        ref_point: Array-like of shape ``(d,)``, the (worst) reference point.

    Returns:
        The hypervolume as a Python float (0.0 if no point dominates ``ref_point``).

    Raises:
        ValueError: If ``ref_point`` is not 1-D, does not match the number of columns of
            ``points``, or contains non-finite values; or if ``points`` is not 2-D or
            contains non-finite values.
    """
    ref = np.asarray(ref_point, dtype=np.float64)
    if ref.ndim != 1:
        raise ValueError(f"ref_point must be a 1-D array of shape (d,), got shape {ref.shape}")
    if not np.all(np.isfinite(ref)):
        raise ValueError(f"ref_point must contain only finite values, got {ref.tolist()}")
    pts = _as_points(points)
    if pts.shape[0] == 0 and pts.shape[1] == 0:
        return 0.0
    if pts.shape[1] != ref.shape[0]:
        raise ValueError(
            f"ref_point must have shape ({pts.shape[1]},) to match points with "
            f"{pts.shape[1]} columns, got shape {ref.shape}"
        )
    if pts.shape[0] == 0:
        return 0.0
    q = pts[np.all(pts > ref, axis=1)] - ref
    q = q[np.all(q > 0.0, axis=1)]  # guard against rounding in the subtraction
    if q.shape[0] == 0:
        return 0.0
    if q.shape[1] >= 4:  # the d <= 3 routines skip dominated points on their own
        q = q[pareto_mask(q)]
    return _hv_positive(q)


# --------------------------------------------------------------------------- weights
def simplex_weights(num_objectives: int, points_per_edge: int) -> np.ndarray:
    """Evenly spaced weight vectors on the probability simplex (Das-Dennis lattice).

    Every vector has non-negative entries summing to one, with entries that are multiples
    of ``1 / (points_per_edge - 1)``. For two objectives this is
    ``[(t, 1 - t) for t in linspace(0, 1, points_per_edge)]`` (``points_per_edge``
    vectors in total); for three it is the triangular lattice with ``points_per_edge``
    points on each edge (``points_per_edge * (points_per_edge + 1) / 2`` vectors), i.e.
    pymoo's ``das-dennis`` directions with ``n_partitions = points_per_edge - 1``.

    Args:
        num_objectives: Number of objectives ``d >= 1``.
        points_per_edge: Points on each edge of the simplex (for ``d = 2`` the total
            count); at least 2 when ``d >= 2``. Ignored for ``d = 1``.

    Returns:
        Array of shape ``(m, d)``, rows in lexicographic order (first weight ascending).

    Raises:
        ValueError: If ``num_objectives < 1`` or ``points_per_edge < 2`` (for d >= 2).
    """
    d = int(num_objectives)
    if d < 1:
        raise ValueError(f"num_objectives must be >= 1, got {num_objectives}")
    if d == 1:
        return np.ones((1, 1))
    p = int(points_per_edge) - 1
    if p < 1:
        raise ValueError(f"points_per_edge must be >= 2 for d >= 2, got {points_per_edge}")
    # Stars and bars: choose d - 1 bar positions among p + d - 1 slots.
    bars = np.array(list(combinations(range(p + d - 1), d - 1)), dtype=np.int64)
    bounds = np.concatenate(
        [np.full((len(bars), 1), -1), bars, np.full((len(bars), 1), p + d - 1)], axis=1
    )
    counts = np.diff(bounds, axis=1) - 1
    return counts / p


def _check_weights(weights: np.ndarray, d: int) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim == 1:
        w = w[None, :]
    if w.ndim != 2 or w.shape[1] != d or w.shape[0] == 0:
        raise ValueError(
            f"weights must have shape (k, {d}) with k >= 1 to match the front, got shape "
            f"{np.shape(weights)}"
        )
    if not np.all(np.isfinite(w)):
        raise ValueError("weights must contain only finite values")
    return w


def _default_weights(d: int, num_weights: int, rng: int | np.random.Generator | None) -> np.ndarray:
    if num_weights < 1:
        raise ValueError(f"num_weights must be >= 1, got {num_weights}")
    if d == 1:
        return np.ones((1, 1))
    if d == 2:
        if num_weights == 1:
            return np.array([[0.5, 0.5]])
        return simplex_weights(2, num_weights)
    gen = np.random.default_rng(0 if rng is None else rng)
    return gen.dirichlet(np.ones(d), size=num_weights)


# ------------------------------------------------------------------- utility metrics
def _max_utilities(front: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``max_i w . p_i`` for every weight vector ``w`` (rows of ``weights``)."""
    return np.max(weights @ front.T, axis=1)


def expected_utility(
    front: np.ndarray,
    weights: np.ndarray | None = None,
    num_weights: int = 50,
    rng: int | np.random.Generator | None = None,
) -> float:
    """Expected utility of a front under linear utilities (morl-baselines' EUM).

    ``EU = mean_w max_i w . p_i`` over a set of weight vectors ``w``.

    Args:
        front: Array-like of shape ``(n, d)``; need not be non-dominated.
        weights: Optional weights of shape ``(k, d)`` (or a single ``(d,)`` vector). By
            default, for ``d = 2``, ``num_weights`` evenly spaced simplex vectors; for
            ``d = 1`` the single weight 1; otherwise ``num_weights`` samples of a uniform
            Dirichlet distribution.
        num_weights: Number of default weight vectors (ignored when ``weights`` is given).
        rng: Seed or generator for the Dirichlet sample (``d >= 3`` defaults only). ``None``
            means seed 0, so the default metric is deterministic and comparable across
            calls; pass a ``np.random.Generator`` or another int for other samples.

    Returns:
        The expected utility as a float.

    Raises:
        ValueError: If ``front`` is empty, not 2-D or non-finite, if ``weights`` does not
            have ``d`` columns, or if ``num_weights < 1``.
    """
    pts = _as_points(front, "front")
    if pts.shape[0] == 0:
        raise ValueError("front must contain at least one point, got an empty array")
    d = pts.shape[1]
    w = _default_weights(d, num_weights, rng) if weights is None else _check_weights(weights, d)
    return float(np.mean(_max_utilities(pts, w)))


def maximum_utility_loss(
    front: np.ndarray,
    reference_front: np.ndarray,
    weights: np.ndarray | None = None,
    num_weights: int = 50,
    rng: int | np.random.Generator | None = None,
) -> float:
    """Maximum utility loss of ``front`` w.r.t. ``reference_front`` (morl-baselines' MUL).

    ``MUL = max_w (max_{r in reference} w . r - max_{p in front} w . p)``; it is
    non-positive when ``front`` is at least as good as the reference for every weight.

    Args:
        front: Array-like of shape ``(n, d)``, the approximation to evaluate.
        reference_front: Array-like of shape ``(m, d)``, e.g. the true Pareto front.
        weights: Optional weights of shape ``(k, d)``; defaults as in
            :func:`expected_utility`.
        num_weights: Number of default weight vectors.
        rng: Seed or generator for default Dirichlet weights (``None`` means seed 0).

    Returns:
        The maximum utility loss as a float.

    Raises:
        ValueError: If either front is empty, malformed, or the dimensions disagree.
    """
    pts = _as_points(front, "front")
    ref = _as_points(reference_front, "reference_front")
    if pts.shape[0] == 0:
        raise ValueError("front must contain at least one point, got an empty array")
    if ref.shape[0] == 0:
        raise ValueError("reference_front must contain at least one point, got an empty array")
    if ref.shape[1] != pts.shape[1]:
        raise ValueError(
            f"reference_front must have {pts.shape[1]} columns to match front, got shape "
            f"{ref.shape}"
        )
    d = pts.shape[1]
    w = _default_weights(d, num_weights, rng) if weights is None else _check_weights(weights, d)
    return float(np.max(_max_utilities(ref, w) - _max_utilities(pts, w)))


# --------------------------------------------------------------- other front metrics
def sparsity(front: np.ndarray) -> float:
    """Sparsity of the non-dominated part of ``front`` (morl-baselines' definition).

    The front is first reduced to its distinct non-dominated points (``n`` of them);
    then, for each objective, the values are sorted and the squared gaps between
    consecutive values are summed; the total over objectives is divided by ``n - 1``.
    Lower is denser.

    Args:
        front: Array-like of shape ``(n, d)``.

    Returns:
        The sparsity; 0.0 when fewer than two non-dominated points remain.

    Raises:
        ValueError: If ``front`` is not 2-D or contains non-finite values.
    """
    pts = pareto_front(_as_points(front, "front"))
    n = pts.shape[0]
    if n < 2:
        return 0.0
    gaps = np.diff(np.sort(pts, axis=0), axis=0)
    return float(np.sum(gaps**2) / (n - 1))


def cardinality(front: np.ndarray) -> int:
    """Number of distinct non-dominated points in ``front``.

    Args:
        front: Array-like of shape ``(n, d)``.

    Returns:
        The cardinality (0 for an empty input).

    Raises:
        ValueError: If ``front`` is not 2-D or contains non-finite values.
    """
    return int(np.count_nonzero(pareto_mask(_as_points(front, "front"))))


def igd(front: np.ndarray, reference_front: np.ndarray) -> float:
    """Inverted generational distance of ``front`` w.r.t. ``reference_front``.

    ``IGD = mean_{r in reference} min_{p in front} ||r - p||_2``. The inputs are used as
    given (no filtering or normalisation; apply :func:`normalise` first if objectives
    have different scales). Lower is better.

    Args:
        front: Array-like of shape ``(n, d)``, the approximation.
        reference_front: Array-like of shape ``(m, d)``, e.g. the true Pareto front.

    Returns:
        The IGD as a float.

    Raises:
        ValueError: If either set is empty, malformed, or the dimensions disagree.
    """
    pts = _as_points(front, "front")
    ref = _as_points(reference_front, "reference_front")
    if pts.shape[0] == 0:
        raise ValueError("front must contain at least one point, got an empty array")
    if ref.shape[0] == 0:
        raise ValueError("reference_front must contain at least one point, got an empty array")
    if ref.shape[1] != pts.shape[1]:
        raise ValueError(
            f"reference_front must have {pts.shape[1]} columns to match front, got shape "
            f"{ref.shape}"
        )
    chunk = max(1, _CHUNK_ELEMENTS // (pts.shape[0] * max(pts.shape[1], 1)))
    nearest = np.empty(ref.shape[0])
    for start in range(0, ref.shape[0], chunk):
        diff = ref[start : start + chunk, None, :] - pts[None, :, :]
        nearest[start : start + chunk] = np.sqrt(np.min(np.sum(diff**2, axis=2), axis=1))
    return float(np.mean(nearest))


# ---------------------------------------------------------------------- normalisation
def normalise(points: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Maps each objective linearly so that ``low`` goes to 0 and ``high`` goes to 1.

    ``(points - low) / (high - low)``, per column. Typically ``low``/``high`` are fixed
    per-scenario bounds (worst / best achievable returns) so that metrics such as
    :func:`hypervolume` (with ``ref_point = 0``) or :func:`igd` are comparable across
    objectives with different units. Values outside ``[low, high]`` map outside
    ``[0, 1]``; nothing is clipped. ``high < low`` is allowed (it flips the direction).

    Args:
        points: Array-like of shape ``(n, d)`` or a single point of shape ``(d,)``.
        low: Scalar or array-like of shape ``(d,)``, mapped to 0.
        high: Scalar or array-like of shape ``(d,)``, mapped to 1.

    Returns:
        Float array with the same shape as ``points``.

    Raises:
        ValueError: If the bounds are non-finite, do not broadcast to ``(d,)``, or
            ``high == low`` in some objective.
    """
    pts = np.asarray(points, dtype=np.float64)
    d = pts.shape[-1] if pts.ndim >= 1 else 1
    lo = np.asarray(low, dtype=np.float64)
    hi = np.asarray(high, dtype=np.float64)
    for name, bound in (("low", lo), ("high", hi)):
        if bound.ndim > 1 or (bound.ndim == 1 and bound.shape[0] not in (1, d)):
            raise ValueError(
                f"{name} must be a scalar or have shape ({d},) to match points, got shape "
                f"{bound.shape}"
            )
        if not np.all(np.isfinite(bound)):
            raise ValueError(f"{name} must contain only finite values, got {bound.tolist()}")
    span = hi - lo
    if np.any(span == 0.0):
        raise ValueError(
            f"high must differ from low in every objective, got low={lo.tolist()} "
            f"high={hi.tolist()}"
        )
    return (pts - lo) / span
