"""Tests for mec_env.routing: synthetic MoE routing and expert-cache simulators."""

from __future__ import annotations

import itertools
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mec_env.routing import (
    ROUTING_PRESETS,
    ROUTING_TARGETS,
    LRUExpertCache,
    RoutingGenerator,
    RoutingParams,
    belady_hit_rate,
    lfu_hit_rate,
    lru_hit_rate,
    lru_hit_rate_table,
    lru_hit_rates,
    lru_stack_distances,
)

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _gen(params: RoutingParams, n: int, seed: int) -> np.ndarray:
    return RoutingGenerator(params, np.random.default_rng(seed)).generate(n)


def _reference_lru(routing: np.ndarray, capacity: int) -> int:
    """Plain-Python per-layer LRU with the module's batched-token semantics; returns hits."""
    T, L, k = routing.shape
    hits = 0
    for layer in range(L):
        cache: OrderedDict[int, None] = OrderedDict()  # oldest first
        for t in range(T):
            experts = [int(e) for e in routing[t, layer]]
            hits += sum(e in cache for e in experts)
            for e in experts:  # slot order = recency order within the token
                cache.pop(e, None)
                cache[e] = None
            while len(cache) > capacity:
                cache.popitem(last=False)
    return hits


def _optimal_hits(routing: np.ndarray, capacity: int) -> int:
    """Exhaustive DP over cache contents (tiny cases): max hits when, after each token, the
    cache may keep any subset of (old cache | token's experts) of size <= capacity."""
    T, L, _ = routing.shape
    total = 0
    for layer in range(L):
        best: dict[frozenset[int], int] = {frozenset(): 0}
        for t in range(T):
            s = frozenset(int(e) for e in routing[t, layer])
            nxt: dict[frozenset[int], int] = {}
            for cache, val in best.items():
                v = val + len(cache & s)
                pool = sorted(cache | s)
                for size in range(min(capacity, len(pool)) + 1):
                    for keep in itertools.combinations(pool, size):
                        key = frozenset(keep)
                        if nxt.get(key, -1) < v:
                            nxt[key] = v
            best = nxt
        total += max(best.values())
    return total


@st.composite
def routings(draw, max_tokens: int = 25, max_experts: int = 6, max_layers: int = 2):
    E = draw(st.integers(1, max_experts))
    k = draw(st.integers(1, E))
    L = draw(st.integers(1, max_layers))
    T = draw(st.integers(1, max_tokens))
    perms = draw(
        st.lists(st.permutations(range(E)), min_size=T * L, max_size=T * L),
    )
    r = np.array([p[:k] for p in perms], dtype=np.int16).reshape(T, L, k)
    return r, E


# --------------------------------------------------------------------------------------------
# presets reproduce the published LRU hit rates
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "num_tokens", "seeds"),
    [
        ("mixtral-8x7b", 3000, (0, 1, 2)),
        ("deepseek-moe-16b", 2000, (0, 7)),
        ("qwen1.5-moe", 2000, (0, 7)),
    ],
)
def test_preset_lru_hit_rates_match_moe_lrc(name, num_tokens, seeds):
    params = ROUTING_PRESETS[name]
    target = np.array(ROUTING_TARGETS[name][:2])
    for seed in seeds:
        rates = lru_hit_rate_table(params, (1.0, 2.0), num_tokens=num_tokens, seed=seed)
        assert np.all(np.abs(rates - target) <= 0.05), (name, seed, rates, target)


def test_preset_shapes():
    shapes = {
        "mixtral-8x7b": (32, 8, 2),
        "deepseek-moe-16b": (28, 64, 6),
        "qwen1.5-moe": (24, 60, 4),
    }
    for name, (L, E, k) in shapes.items():
        p = ROUTING_PRESETS[name]
        assert (p.num_layers, p.num_experts, p.top_k) == (L, E, k)
        assert p.capacity(1.0) == k and p.capacity(2.0) == 2 * k


# --------------------------------------------------------------------------------------------
# generator
# --------------------------------------------------------------------------------------------

SMALL = RoutingParams(
    num_layers=5,
    num_experts=12,
    top_k=3,
    p_stay=0.3,
    zipf_s=0.8,
    num_topics=3,
    topic_switch_prob=0.05,
)


def test_same_seed_identical_and_different_seed_differs():
    a = _gen(SMALL, 400, 123)
    b = _gen(SMALL, 400, 123)
    c = _gen(SMALL, 400, 124)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("params", [SMALL, ROUTING_PRESETS["mixtral-8x7b"]])
def test_shape_dtype_range_and_distinct(params):
    r = _gen(params, 300, 5)
    assert r.shape == (300, params.num_layers, params.top_k)
    assert r.dtype in (np.int16, np.int32)
    assert r.min() >= 0 and r.max() < params.num_experts
    srt = np.sort(r, axis=2)
    assert np.all(np.diff(srt, axis=2) > 0)


def test_top_k_equals_num_experts():
    p = RoutingParams(num_layers=3, num_experts=4, top_k=4, p_stay=0.5)
    r = _gen(p, 50, 0)
    assert np.array_equal(np.sort(r, axis=2), np.broadcast_to(np.arange(4), r.shape))


def test_stream_continuation_is_chunk_invariant():
    whole = _gen(SMALL, 700, 9)
    g = RoutingGenerator(SMALL, np.random.default_rng(9))
    parts = [g.generate(300), g.generate(0), g.next_token()[None], g.generate(399)]
    assert np.array_equal(np.concatenate(parts), whole)
    assert g.tokens_generated == 700


def test_p_stay_one_copies_previous_token():
    p = RoutingParams(num_layers=4, num_experts=10, top_k=3, p_stay=1.0)
    r = _gen(p, 50, 3)
    assert np.array_equal(np.sort(r[1:], axis=2), np.sort(r[:-1], axis=2))


def test_popularity_is_normalised_and_used():
    p = RoutingParams(num_layers=2, num_experts=6, top_k=1, zipf_s=2.0)
    g = RoutingGenerator(p, np.random.default_rng(0))
    assert g.popularity.shape == (1, 2, 6)
    np.testing.assert_allclose(g.popularity.sum(axis=-1), 1.0)
    r = g.generate(20000)[:, :, 0]
    for layer in range(2):
        freq = np.bincount(r[:, layer], minlength=6) / len(r)
        np.testing.assert_allclose(freq, g.popularity[0, layer], atol=0.015)


def test_uniform_routing_lru_equals_k_over_e():
    # zipf_s = 0 makes the Zipf half uniform; 64 topics that switch every token average the
    # Dirichlet half away, and p_stay = 0 removes copying: near-iid uniform routing.
    L, E, k = 8, 16, 2
    p = RoutingParams(L, E, k, p_stay=0.0, zipf_s=0.0, num_topics=64, topic_switch_prob=1.0)
    rate = lru_hit_rate(_gen(p, 3000, 0), capacity=k, warmup_tokens=10)
    assert abs(rate - k / E) < 0.02


def test_locality_knobs_raise_hit_rate():
    base = RoutingParams(8, 16, 2)
    sticky = RoutingParams(8, 16, 2, p_stay=0.5)
    skewed = RoutingParams(8, 16, 2, zipf_s=1.5)
    rates = [lru_hit_rate_table(p, (1.0,), 2000, 0)[0] for p in (base, sticky, skewed)]
    assert rates[1] > rates[0] + 0.1
    assert rates[2] > rates[0] + 0.05


def test_generator_rejects_legacy_rng():
    with pytest.raises(TypeError):
        RoutingGenerator(SMALL, np.random.RandomState(0))  # type: ignore[arg-type]  # noqa: NPY002


# --------------------------------------------------------------------------------------------
# cache simulators
# --------------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(routings(), st.integers(0, 7))
def test_lru_matches_reference_and_stateful_cache(case, capacity):
    r, E = case
    T, L, k = r.shape
    expected = _reference_lru(r, capacity)
    assert lru_hit_rate(r, capacity, num_experts=E) * r.size == pytest.approx(expected)
    cache = LRUExpertCache(L, E, capacity)
    per_token = [cache.access(r[t]) for t in range(T)]
    assert sum(int(h.sum()) for h in per_token) == expected
    assert cache.hits == expected and cache.accesses == r.size
    assert cache.resident_mask().sum(axis=1).max() <= capacity


@settings(max_examples=150, deadline=None)
@given(routings(), st.integers(0, 7))
def test_belady_bounds_lru_and_lfu(case, capacity):
    r, E = case
    b = belady_hit_rate(r, capacity, num_experts=E)
    assert b >= lru_hit_rate(r, capacity, num_experts=E) - 1e-12
    assert b >= lfu_hit_rate(r, capacity, num_experts=E) - 1e-12


@settings(max_examples=60, deadline=None)
@given(routings(max_tokens=6, max_experts=4, max_layers=1), st.integers(0, 4))
def test_belady_is_optimal_on_tiny_cases(case, capacity):
    r, E = case
    hits = belady_hit_rate(r, capacity, num_experts=E) * r.size
    assert hits == pytest.approx(_optimal_hits(r, capacity))


@settings(max_examples=80, deadline=None)
@given(routings())
def test_hit_rate_monotone_in_capacity(case):
    r, E = case
    caps = list(range(E + 2))
    lru = lru_hit_rates(r, caps, num_experts=E)
    bel = [belady_hit_rate(r, c, num_experts=E) for c in caps]
    assert np.all(np.diff(lru) >= -1e-12)
    assert np.all(np.diff(bel) >= -1e-12)
    assert lru[0] == 0.0 and bel[0] == 0.0


@settings(max_examples=80, deadline=None)
@given(routings(), st.integers(0, 3))
def test_full_capacity_only_cold_misses(case, extra):
    r, E = case
    T, L, k = r.shape
    cold = sum(len(np.unique(r[:, layer])) for layer in range(L))
    expected = 1.0 - cold / r.size
    cap = E + extra
    for fn in (lru_hit_rate, lfu_hit_rate, belady_hit_rate):
        assert fn(r, cap, num_experts=E) == pytest.approx(expected)


def test_warmup_excludes_cold_misses():
    r = _gen(SMALL, 200, 1)
    cap = SMALL.num_experts
    for fn in (lru_hit_rate, lfu_hit_rate, belady_hit_rate):
        assert fn(r, cap, warmup_tokens=100) == 1.0
        assert fn(r, cap) < 1.0
    with pytest.raises(ValueError, match="warmup_tokens"):
        lru_hit_rate(r, 3, warmup_tokens=200)


def test_stack_distances():
    # one layer, k = 1: a b a c b a
    r = np.array([0, 1, 0, 2, 1, 0], dtype=np.int16).reshape(6, 1, 1)
    d = lru_stack_distances(r, num_experts=3).ravel()
    assert d.tolist() == [3, 3, 1, 3, 2, 2]


def test_lru_expert_cache_state():
    cache = LRUExpertCache(num_layers=2, num_experts=5, capacity=2)
    assert cache.access(np.array([[0, 1], [2, 3]])).tolist() == [0, 0]
    assert cache.contains(np.array([[1, 4], [3, 2]])).tolist() == [[True, False], [True, True]]
    assert cache.access(np.array([[1, 4], [0, 3]])).tolist() == [1, 1]
    mask = cache.resident_mask()
    assert mask.shape == (2, 5) and mask.dtype == bool
    assert mask[0].nonzero()[0].tolist() == [1, 4]
    assert mask[1].nonzero()[0].tolist() == [0, 3]
    cache.reset()
    assert not cache.resident_mask().any() and cache.accesses == 0
    with pytest.raises(ValueError):
        cache.access(np.array([[0, 5], [1, 2]]))


def test_lru_expert_cache_matches_on_generated_stream():
    p = ROUTING_PRESETS["deepseek-moe-16b"]
    r = _gen(p, 300, 4)
    for rho in (1.0, 2.0):
        cap = p.capacity(rho)
        cache = LRUExpertCache(p.num_layers, p.num_experts, cap)
        hits = sum(int(cache.access(x).sum()) for x in r)
        assert hits == round(lru_hit_rate(r, cap, num_experts=p.num_experts) * r.size)


def test_lru_hit_rate_table_is_deterministic_and_ordered():
    p = ROUTING_PRESETS["mixtral-8x7b"]
    a = lru_hit_rate_table(p, (0.5, 1.0, 2.0, 3.0, 4.0), num_tokens=1000, seed=3)
    b = lru_hit_rate_table(p, (0.5, 1.0, 2.0, 3.0, 4.0), num_tokens=1000, seed=3)
    assert np.array_equal(a, b)
    assert np.all(np.diff(a) >= 0) and a[-1] == 1.0


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------

_GOOD = {
    "num_layers": 2,
    "num_experts": 8,
    "top_k": 2,
    "p_stay": 0.1,
    "zipf_s": 0.5,
    "num_topics": 4,
    "topic_switch_prob": 0.01,
}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_layers", 0),
        ("num_layers", 2.5),
        ("num_experts", 0),
        ("top_k", 0),
        ("top_k", 9),
        ("top_k", True),
        ("p_stay", -0.1),
        ("p_stay", 1.5),
        ("zipf_s", -1.0),
        ("zipf_s", float("nan")),
        ("num_topics", 0),
        ("topic_switch_prob", 2.0),
        ("topic_switch_prob", "0.1"),
    ],
)
def test_invalid_params_raise_naming_field(field, value):
    kwargs = dict(_GOOD, **{field: value})
    with pytest.raises(ValueError, match=field) as info:
        RoutingParams(**kwargs)
    assert str(value) in str(info.value) or repr(value) in str(info.value)


def test_top_k_message():
    with pytest.raises(ValueError, match=r"top_k must be <= num_experts, got 9"):
        RoutingParams(num_layers=1, num_experts=8, top_k=9)


def test_invalid_simulator_arguments():
    r = _gen(SMALL, 10, 0)
    with pytest.raises(ValueError, match="capacity"):
        lru_hit_rate(r, -1)
    with pytest.raises(ValueError, match="routing"):
        lru_hit_rate(r[0], 2)
    with pytest.raises(ValueError, match="num_experts"):
        belady_hit_rate(r, 2, num_experts=2)
    with pytest.raises(ValueError, match="rho"):
        SMALL.capacity(-1.0)
    with pytest.raises(ValueError, match="capacity"):
        LRUExpertCache(2, 4, -1)


def test_reset_stream_sets_topic_and_validates():
    g = RoutingGenerator(SMALL, np.random.default_rng(0))
    g.generate(5)
    g.reset_stream(topic=2)
    assert g.topic == 2
    assert g.next_token().shape == (SMALL.num_layers, SMALL.top_k)
    with pytest.raises(ValueError, match="topic"):
        g.reset_stream(topic=SMALL.num_topics)
