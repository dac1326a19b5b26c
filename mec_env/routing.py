"""Synthetic MoE expert routing fitted to published locality statistics, and expert-cache simulators.

Generator (REFERENCE_NUMBERS.md sec. 4): a topic ``z`` shared by all layers switches with
probability ``q`` per token (to a uniformly drawn *other* topic). Each (topic, layer) has a
popularity vector ``1/2 * Zipf(s)`` (ranks randomly permuted) ``+ 1/2 * Dirichlet(1)``, drawn
once at construction from the caller's ``np.random.Generator``. For every token and layer the
``k`` slots are filled in order: with probability ``p_stay`` a slot copies one of the previous
token's experts in that layer (uniformly among those not already chosen for this token),
otherwise it draws by popularity without replacement among the experts not yet chosen.
Sampling by popularity without replacement uses the exponential-race form of the Gumbel-top-k
trick (``key = Exp(1) / p``; the smallest key is drawn first), vectorised over layers.

Cache model, shared by every policy here: each layer has its own cache of ``capacity`` experts.
Token ``t`` needs the ``k`` experts ``S_t`` of each layer at once; an access is a hit when the
expert is resident at the start of the token (cold misses count). Afterwards the cache holds at
most ``capacity`` experts taken from (old cache | ``S_t``) - only demanded experts are loaded:

* LRU keeps the ``capacity`` most recently used experts (slots of one token are ordered, so for
  ``capacity >= k`` all of ``S_t`` stay resident). LRU is a stack algorithm: one pass gives the
  stack distance of every access and thereby the hit rate for every capacity.
* LFU keeps all of ``S_t`` (when ``capacity >= k``) plus the most frequently used others
  (frequency counted since the start of the stream, ties broken by recency).
* Belady keeps the ``capacity`` experts whose next use comes soonest (offline optimum of this
  model; it may decline to keep a just-used expert), so it bounds LRU and LFU from above.

``rho = capacity / top_k``: the cache holds ``rho * k`` experts per layer.

Fit (``python -m mec_env.routing --fit``): grid search of ``p_stay``, ``zipf_s``, ``num_topics``
and ``q`` so that steady-state LRU hit rates at rho = 1 and 2 match the moe-lrc table.
Note moe-lrc counts cold misses within 512-token samples and serves the k slots of a token
one after another; the presets here are fitted to this module's own (batched, steady-state)
simulator, so they reproduce the published numbers *under this module's cache model*.
"""

from __future__ import annotations

import argparse
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ROUTING_PRESETS",
    "ROUTING_TARGETS",
    "LRUExpertCache",
    "RoutingGenerator",
    "RoutingParams",
    "belady_hit_rate",
    "capacity_for_rho",
    "lfu_hit_rate",
    "lru_hit_rate",
    "lru_hit_rate_table",
    "lru_hit_rates",
    "lru_stack_distances",
]


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_prob(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    if not (0.0 <= float(value) <= 1.0):
        raise ValueError(f"{name} must be in [0, 1], got {value}")


@dataclass(frozen=True)
class RoutingParams:
    """Parameters of the synthetic routing generator (see module docstring)."""

    num_layers: int
    num_experts: int
    top_k: int
    p_stay: float = 0.0  # prob. a slot copies one of the previous token's experts (same layer)
    zipf_s: float = 0.0  # Zipf exponent of the per-(topic, layer) popularity
    num_topics: int = 1  # number of shared topics
    topic_switch_prob: float = 0.0  # q: prob. the shared topic switches before a token

    def __post_init__(self) -> None:
        _check_int("num_layers", self.num_layers, 1)
        _check_int("num_experts", self.num_experts, 1)
        _check_int("top_k", self.top_k, 1)
        if self.top_k > self.num_experts:
            raise ValueError(f"top_k must be <= num_experts, got {self.top_k}")
        if self.num_experts > np.iinfo(np.int16).max:
            raise ValueError(f"num_experts must be <= 32767, got {self.num_experts}")
        _check_prob("p_stay", self.p_stay)
        if isinstance(self.zipf_s, bool) or not isinstance(
            self.zipf_s, (int, float, np.integer, np.floating)
        ):
            raise ValueError(f"zipf_s must be a real number, got {self.zipf_s!r}")
        if not (math.isfinite(float(self.zipf_s)) and float(self.zipf_s) >= 0.0):
            raise ValueError(f"zipf_s must be finite and >= 0, got {self.zipf_s}")
        _check_int("num_topics", self.num_topics, 1)
        _check_prob("topic_switch_prob", self.topic_switch_prob)

    def capacity(self, rho: float) -> int:
        """Experts per layer for a cache of ``rho * top_k`` experts (see ``capacity_for_rho``)."""
        return capacity_for_rho(rho, self.top_k, self.num_experts)


def capacity_for_rho(rho: float, top_k: int, num_experts: int) -> int:
    """``round(rho * top_k)`` clipped to ``[0, num_experts]``."""
    if not math.isfinite(rho) or rho < 0:
        raise ValueError(f"rho must be finite and >= 0, got {rho}")
    return int(min(num_experts, round(rho * top_k)))


# --------------------------------------------------------------------------------------------
# Generator
# --------------------------------------------------------------------------------------------

_CHUNK_TOKENS = 256


class RoutingGenerator:
    """Seeded synthetic routing stream.

    ``generate(n)`` continues the stream: ``generate(a)`` then ``generate(b)`` gives the same
    tokens as ``generate(a + b)`` from the same seed, and ``next_token()`` is ``generate(1)[0]``.
    Each token consumes one fixed-size block of uniforms from ``rng``, so the stream does not
    depend on how it is chunked.
    """

    def __init__(self, params: RoutingParams, rng: np.random.Generator) -> None:
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        self.params = params
        self._rng = rng
        L, E, K = params.num_layers, params.num_experts, params.num_topics
        ranks = np.arange(1, E + 1, dtype=np.float64)
        zipf = ranks ** (-float(params.zipf_s))
        zipf /= zipf.sum()
        # Permute the Zipf ranks independently for every (topic, layer).
        perm = np.argsort(rng.random((K, L, E)), axis=-1)
        dirichlet = rng.dirichlet(np.ones(E), size=(K, L))
        self.popularity: np.ndarray = 0.5 * zipf[perm] + 0.5 * dirichlet  # (K, L, E), rows sum 1
        self._inv_pop = 1.0 / self.popularity
        self.topic: int = int(rng.integers(K))
        self._prev: np.ndarray | None = None  # (L, k) experts of the previous token
        self.tokens_generated = 0
        # Uniforms per token: topic switch, new-topic offset, L*E race keys, L*k stay, L*k copy.
        self._block = 2 + L * E + 2 * L * params.top_k

    def reset_stream(self, topic: int | None = None) -> None:
        """Forget the previous token (a new sequence starts); popularity is kept."""
        self._prev = None
        if topic is not None:
            if not 0 <= topic < self.params.num_topics:
                raise ValueError(f"topic must be in [0, {self.params.num_topics}), got {topic}")
            self.topic = int(topic)

    def next_token(self) -> np.ndarray:
        """Experts of the next token, shape ``(num_layers, top_k)``."""
        return self.generate(1)[0]

    def generate(self, num_tokens: int) -> np.ndarray:
        """Routing of the next ``num_tokens`` tokens: int16 ``(num_tokens, num_layers, top_k)``."""
        _check_int("num_tokens", num_tokens, 0)
        p = self.params
        out = np.empty((num_tokens, p.num_layers, p.top_k), dtype=np.int16)
        for start in range(0, num_tokens, _CHUNK_TOKENS):
            stop = min(num_tokens, start + _CHUNK_TOKENS)
            self._generate_chunk(out[start:stop])
        return out

    def _generate_chunk(self, out: np.ndarray) -> None:
        p = self.params
        n = out.shape[0]
        L, E, k, K = p.num_layers, p.num_experts, p.top_k, p.num_topics
        u = self._rng.random((n, self._block))
        # Topic sequence: z_t = z_{t-1} + switch_t * offset_t (mod K), offset in 1..K-1.
        if K > 1:
            switch = u[:, 0] < p.topic_switch_prob
            offset = 1 + np.minimum((u[:, 1] * (K - 1)).astype(np.int64), K - 2)
            topics = (self.topic + np.cumsum(switch * offset)) % K
            self.topic = int(topics[-1])
        else:
            topics = np.zeros(n, dtype=np.int64)
        o = 2
        # Exponential race: the expert with the smallest Exp(1)/p is drawn first.
        keys = (-np.log1p(-u[:, o : o + L * E])).reshape(n, L, E) * self._inv_pop[topics]
        o += L * E
        stay = (u[:, o : o + L * k] < p.p_stay).reshape(n, L, k)
        o += L * k
        copy_keys = u[:, o : o + L * k].reshape(n, L, k)
        row_e = np.arange(L) * E  # flat offsets into (L, E) / (L, k) arrays
        row_k = np.arange(L) * k
        prev = self._prev
        any_stay = stay.any(axis=1)  # (n, k): does any layer copy at this slot?
        for i in range(n):
            key = keys[i]
            stay_slots = np.flatnonzero(any_stay[i])
            if prev is None or stay_slots.size == 0:
                # Pure popularity draws: Gumbel-top-k in one shot.
                if k == E:
                    cur = np.argsort(key, axis=1)
                else:
                    part = np.argpartition(key, k - 1, axis=1)[:, :k]
                    order = np.argsort(np.take_along_axis(key, part, axis=1), axis=1)
                    cur = np.take_along_axis(part, order, axis=1)
            else:
                key_flat = key.reshape(-1)
                ck = copy_keys[i].copy()  # copy candidates; -1 marks "already chosen"
                prev_flat = prev.reshape(-1)
                st = stay[i]
                last_stay = stay_slots[-1]
                cur = np.empty((L, k), dtype=np.int64)
                for j in range(k):
                    pick = key.argmin(axis=1)
                    if any_stay[i, j]:
                        copy_pick = prev_flat[row_k + ck.argmax(axis=1)]
                        pick = np.where(st[:, j], copy_pick, pick)
                    cur[:, j] = pick
                    key_flat[row_e + pick] = np.inf
                    if j < last_stay:
                        ck[prev == pick[:, None]] = -1.0
            out[i] = cur
            prev = cur
        self._prev = prev
        self.tokens_generated += n


# --------------------------------------------------------------------------------------------
# Cache simulators
# --------------------------------------------------------------------------------------------


def _validate_routing(routing: np.ndarray) -> tuple[np.ndarray, int]:
    r = np.asarray(routing)
    if r.ndim != 3:
        raise ValueError(f"routing must have shape (tokens, layers, top_k), got {r.shape}")
    if not np.issubdtype(r.dtype, np.integer):
        raise ValueError(f"routing must be an integer array, got dtype {r.dtype}")
    if r.size and r.min() < 0:
        raise ValueError(f"routing must be non-negative, got min {r.min()}")
    num_experts = int(r.max()) + 1 if r.size else 1
    return r.astype(np.int64, copy=False), num_experts


def _resolve(routing: np.ndarray, num_experts: int | None) -> tuple[np.ndarray, int]:
    r, seen = _validate_routing(routing)
    if num_experts is None:
        num_experts = seen
    elif num_experts < seen:
        raise ValueError(f"num_experts must be > every expert id, got {num_experts}")
    return r, int(num_experts)


def _check_capacity(capacity: int) -> int:
    _check_int("capacity", capacity, 0)
    return int(capacity)


def _check_warmup(warmup_tokens: int, num_tokens: int) -> int:
    _check_int("warmup_tokens", warmup_tokens, 0)
    if num_tokens and warmup_tokens >= num_tokens:
        raise ValueError(f"warmup_tokens must be < number of tokens, got {warmup_tokens}")
    return int(warmup_tokens)


def lru_stack_distances(
    routing: np.ndarray, num_experts: int | None = None, chunk_tokens: int = 128
) -> np.ndarray:
    """LRU stack distance of every access, shape ``(tokens, layers, top_k)``.

    The distance is the number of distinct experts of that layer used more recently than the
    accessed one, measured at the start of the token; cold accesses get ``num_experts``. An
    access hits an LRU cache of capacity ``c`` iff its distance is ``< c``.
    """
    r, E = _resolve(routing, num_experts)
    T, L, k = r.shape
    dist = np.empty((T, L, k), dtype=np.int32)
    if T == 0:
        return dist
    # last[t, l, e]: timestamp (t*k + slot) of the last use of e in layer l up to token t.
    dt = np.int32 if T * k < np.iinfo(np.int32).max else np.int64
    stamp = np.full((T, L, E), -1, dtype=dt)
    tt = np.arange(T)[:, None, None]
    ll = np.arange(L)[None, :, None]
    stamp[tt, ll, r] = tt * k + np.arange(k)[None, None, :]
    last = np.maximum.accumulate(stamp, axis=0)
    del stamp
    carry = np.full((1, L, E), -1, dtype=dt)
    for s in range(0, T, chunk_tokens):
        e = min(T, s + chunk_tokens)
        before = np.concatenate([carry, last[s : e - 1]], axis=0)  # state at token start
        carry = last[e - 1 : e]
        own = np.take_along_axis(before, r[s:e], axis=2)  # (n, L, k)
        d = np.count_nonzero(before[:, :, None, :] > own[..., None], axis=3)
        dist[s:e] = np.where(own < 0, E, d)
    return dist


def lru_hit_rates(
    routing: np.ndarray,
    capacities: Sequence[int],
    warmup_tokens: int = 0,
    num_experts: int | None = None,
) -> np.ndarray:
    """LRU hit rate for each capacity (one pass), over accesses of tokens ``>= warmup_tokens``."""
    r, E = _resolve(routing, num_experts)
    w = _check_warmup(warmup_tokens, r.shape[0])
    caps = np.array([_check_capacity(c) for c in capacities], dtype=np.int64)
    dist = lru_stack_distances(r, E)[w:].ravel()
    if dist.size == 0:
        return np.full(len(caps), np.nan)
    hist = np.bincount(dist, minlength=E + 1)
    cum = np.concatenate([[0], np.cumsum(hist)])  # cum[c] = #accesses with distance < c
    return cum[np.minimum(caps, E)] / dist.size


def lru_hit_rate(
    routing: np.ndarray, capacity: int, warmup_tokens: int = 0, num_experts: int | None = None
) -> float:
    """Hit rate of per-layer LRU caches of ``capacity`` experts (see module docstring)."""
    return float(lru_hit_rates(routing, [capacity], warmup_tokens, num_experts)[0])


def _next_use(r: np.ndarray, E: int) -> np.ndarray:
    """``nxt[t, l, e]``: first token > t using e in layer l, or ``T`` if none."""
    T, L, _ = r.shape
    use = np.full((T + 1, L, E), T, dtype=np.int32)
    tt = np.arange(T)[:, None, None]
    use[tt, np.arange(L)[None, :, None], r] = tt
    nxt = np.minimum.accumulate(use[::-1], axis=0)[::-1]
    return nxt[1:]


def _keep_smallest(score: np.ndarray, candidates: np.ndarray, capacity: int) -> np.ndarray:
    """Mask of the ``capacity`` candidates with the smallest score in each row."""
    L, E = score.shape
    if capacity >= E:
        return candidates.copy()
    s = np.where(candidates, score, np.inf)
    keep = np.argpartition(s, capacity - 1, axis=1)[:, :capacity]
    mask = np.zeros((L, E), dtype=bool)
    mask[np.arange(L)[:, None], keep] = True
    return mask & candidates


def _simulate(
    routing: np.ndarray,
    capacity: int,
    warmup_tokens: int,
    num_experts: int | None,
    policy: str,
) -> float:
    r, E = _resolve(routing, num_experts)
    capacity = _check_capacity(capacity)
    T, L, k = r.shape
    w = _check_warmup(warmup_tokens, T)
    total = (T - w) * L * k
    if total == 0:
        return float("nan")
    if capacity == 0:
        return 0.0
    rows = np.arange(L)[:, None]
    resident = np.zeros((L, E), dtype=bool)
    hits = 0
    if policy == "belady":
        nxt = _next_use(r, E).astype(np.float64)
    else:
        count = np.zeros((L, E), dtype=np.float64)
        last = np.full((L, E), -1.0)
        slot_order = np.arange(k, dtype=np.float64)
        scale = float(T * k + 1)
    forced = capacity >= k
    for t in range(T):
        s = r[t]
        if t >= w:
            hits += int(resident[rows, s].sum())
        cand = resident.copy()
        cand[rows, s] = True
        if policy == "belady":
            score = nxt[t].copy()
        else:
            count[rows, s] += 1.0
            last[rows, s] = t * k + slot_order
            score = -(count * scale + last)
            if forced:
                score[rows, s] = -np.inf
        resident = _keep_smallest(score, cand, capacity)
    return hits / total


def lfu_hit_rate(
    routing: np.ndarray, capacity: int, warmup_tokens: int = 0, num_experts: int | None = None
) -> float:
    """Hit rate of per-layer LFU caches (frequencies since stream start, ties by recency)."""
    return _simulate(routing, capacity, warmup_tokens, num_experts, "lfu")


def belady_hit_rate(
    routing: np.ndarray, capacity: int, warmup_tokens: int = 0, num_experts: int | None = None
) -> float:
    """Offline-optimal (Belady/MIN) hit rate of per-layer caches; an upper bound on LRU/LFU."""
    return _simulate(routing, capacity, warmup_tokens, num_experts, "belady")


class LRUExpertCache:
    """Stateful per-layer LRU expert cache, vectorised over layers.

    Same model as ``lru_hit_rate``: ``access`` serves one token's ``(num_layers, top_k)``
    experts, counts hits against the residency at the start of the token and then makes the
    ``capacity`` most recently used experts of each layer resident. Deterministic: equal
    routing gives equal hits and residency.
    """

    def __init__(self, num_layers: int, num_experts: int, capacity: int) -> None:
        _check_int("num_layers", num_layers, 1)
        _check_int("num_experts", num_experts, 1)
        _check_capacity(capacity)
        self.num_layers = int(num_layers)
        self.num_experts = int(num_experts)
        self.capacity = int(capacity)
        self._rows = np.arange(self.num_layers)[:, None]
        self.reset()

    def reset(self) -> None:
        """Empty every layer's cache."""
        self._last = np.full((self.num_layers, self.num_experts), -1, dtype=np.int64)
        self._clock = 0
        self.hits = 0
        self.accesses = 0

    def _check(self, experts: np.ndarray) -> np.ndarray:
        x = np.asarray(experts)
        if x.ndim != 2 or x.shape[0] != self.num_layers:
            raise ValueError(f"experts must have shape ({self.num_layers}, k), got {x.shape}")
        if x.size and (x.min() < 0 or x.max() >= self.num_experts):
            raise ValueError(
                f"experts must be in [0, {self.num_experts}), got {x.min()}..{x.max()}"
            )
        return x.astype(np.int64, copy=False)

    def contains(self, experts: np.ndarray) -> np.ndarray:
        """Bool ``(num_layers, k)``: which of these experts are resident now (no side effects)."""
        return self.resident_mask()[self._rows, self._check(experts)]

    def access(self, experts: np.ndarray) -> np.ndarray:
        """Serve one token; returns hits per layer, int64 ``(num_layers,)``."""
        x = self._check(experts)
        k = x.shape[1]
        hit = self.resident_mask()[self._rows, x]
        self._last[self._rows, x] = self._clock + np.arange(k)[None, :]
        self._clock += k
        per_layer = hit.sum(axis=1)
        self.hits += int(per_layer.sum())
        self.accesses += x.size
        return per_layer

    def resident_mask(self) -> np.ndarray:
        """Bool ``(num_layers, num_experts)``: resident experts."""
        used = self._last >= 0
        if self.capacity >= self.num_experts:
            return used
        if self.capacity == 0:
            return np.zeros_like(used)
        # The `capacity` most recent of the used experts (timestamps are distinct).
        top = np.argpartition(self._last, self.num_experts - self.capacity, axis=1)
        mask = np.zeros_like(used)
        np.put_along_axis(mask, top[:, self.num_experts - self.capacity :], True, axis=1)
        return mask & used

    @property
    def hit_rate(self) -> float:
        return self.hits / self.accesses if self.accesses else float("nan")


# --------------------------------------------------------------------------------------------
# Presets fitted to moe-lrc (REFERENCE_NUMBERS.md sec. 4)
# --------------------------------------------------------------------------------------------

# Published LRU hit rates at rho = 1, 2, 3 (ljcleo/moe-lrc, "Not All Models Suit Expert
# Offloading", model level, +/-0.01).
ROUTING_TARGETS: dict[str, tuple[float, float, float]] = {
    "mixtral-8x7b": (0.36, 0.62, 0.83),
    "deepseek-moe-16b": (0.27, 0.40, 0.51),
    "qwen1.5-moe": (0.19, 0.28, 0.36),
    "olmoe-1b-7b": (0.43, 0.61, 0.74),
}

# Fitted with ``fit_preset`` (coarse grid over p_stay, zipf_s, num_topics, q; then a fine grid
# over p_stay and zipf_s at 4 topics, q = 0.01 - the topic settings of REFERENCE_NUMBERS.md
# sec. 4). "Achieved" = steady-state LRU hit rate at rho = 1/2/3 from
# ``lru_hit_rate_table(params, (1, 2, 3), num_tokens=4000, seed=s)``, mean over seeds 100-105
# (the spread over seeds is <= 0.004). Belady rho = 1/2 is reported for comparison only.
ROUTING_PRESETS: dict[str, RoutingParams] = {
    # Mixtral-8x7B: 32 layers, 8 experts, top-2 (sec. 2). Source: moe-lrc via sec. 4.
    # Target LRU rho=1/2/3 .36/.62/.83 (Belady .59/.83); achieved .368/.618/.833 (Belady .56/.79).
    "mixtral-8x7b": RoutingParams(
        num_layers=32,
        num_experts=8,
        top_k=2,
        p_stay=0.10,
        zipf_s=0.75,
        num_topics=4,
        topic_switch_prob=0.01,
    ),
    # DeepSeek-MoE-16B: 28 layers, 64 routed experts (the 2 shared ones are always resident),
    # top-6 (sec. 2). Source: moe-lrc via sec. 4.
    # Target LRU .27/.40/.51 (Belady .48/.64); achieved .270/.400/.511 (Belady .48/.64).
    "deepseek-moe-16b": RoutingParams(
        num_layers=28,
        num_experts=64,
        top_k=6,
        p_stay=0.12,
        zipf_s=1.05,
        num_topics=4,
        topic_switch_prob=0.01,
    ),
    # Qwen1.5-MoE-A2.7B: 24 layers, 60 routed experts (shared expert always resident), top-4.
    # Source: moe-lrc via sec. 4.
    # Target LRU .19/.28/.36 (Belady .39/.53); achieved .191/.280/.362 (Belady .38/.53).
    "qwen1.5-moe": RoutingParams(
        num_layers=24,
        num_experts=60,
        top_k=4,
        p_stay=0.10,
        zipf_s=0.80,
        num_topics=4,
        topic_switch_prob=0.01,
    ),
    # OLMoE-1B-7B: 16 layers, 64 experts, top-8. Source: moe-lrc via sec. 4.
    # Target LRU .43/.61/.74 (Belady .59/.79); achieved .442/.591/.708 (Belady .61/.77): the
    # best fit found, within 0.02 at rho = 1, 2 but 0.03 low at rho = 3 (the Dirichlet half of
    # the popularity limits how concentrated a layer can be). Qwen3-30B-A3B (128 experts,
    # .48/.65/.75) cannot be fitted by this generator (best rho=2 ~ .55) and has no preset.
    "olmoe-1b-7b": RoutingParams(
        num_layers=16,
        num_experts=64,
        top_k=8,
        p_stay=0.20,
        zipf_s=2.0,
        num_topics=4,
        topic_switch_prob=0.01,
    ),
}


# --------------------------------------------------------------------------------------------
# Tables and fitting
# --------------------------------------------------------------------------------------------


def lru_hit_rate_table(
    params: RoutingParams,
    rhos: Sequence[float] = (1.0, 2.0, 3.0),
    num_tokens: int = 4000,
    seed: int = 0,
    warmup_tokens: int | None = None,
) -> np.ndarray:
    """Steady-state LRU hit rate for each ``rho`` (float64 array aligned with ``rhos``).

    Generates ``num_tokens`` tokens with ``np.random.default_rng(seed)`` and ignores the first
    ``warmup_tokens`` (default ``num_tokens // 10``) so cold misses do not count.
    """
    _check_int("num_tokens", num_tokens, 2)
    if warmup_tokens is None:
        warmup_tokens = num_tokens // 10
    routing = RoutingGenerator(params, np.random.default_rng(seed)).generate(num_tokens)
    caps = [params.capacity(rho) for rho in rhos]
    return lru_hit_rates(routing, caps, warmup_tokens, params.num_experts)


def _fit_score(
    params: RoutingParams, targets: Sequence[float], seeds: Sequence[int], num_tokens: int
) -> tuple[float, np.ndarray]:
    """Max |error| at rho = 1, 2 plus a quarter of the error at rho = 3 (tie-breaker)."""
    rates = np.mean(
        [lru_hit_rate_table(params, (1.0, 2.0, 3.0), num_tokens, s) for s in seeds], axis=0
    )
    err = np.abs(rates - np.asarray(targets[:3]))
    return float(max(err[0], err[1]) + 0.25 * err[2]), rates


def fit_preset(
    num_layers: int,
    num_experts: int,
    top_k: int,
    targets: Sequence[float],
    p_stays: Sequence[float] = tuple(np.round(np.arange(0.0, 0.61, 0.05), 2)),
    zipf_ss: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5),
    topics: Sequence[int] = (1, 2, 4, 8),
    qs: Sequence[float] = (0.005, 0.01, 0.02, 0.05),
    seeds: Sequence[int] = (0, 1),
    num_tokens: int = 2000,
    verbose: bool = False,
) -> tuple[RoutingParams, np.ndarray, float]:
    """Grid search minimising max |LRU(rho) - target| over rho = 1, 2 (+ rho = 3 / 4)."""
    best: tuple[float, RoutingParams, np.ndarray] | None = None
    for p_stay, s, nt, q in itertools.product(p_stays, zipf_ss, topics, qs):
        if nt == 1 and q != qs[0]:
            continue
        params = RoutingParams(num_layers, num_experts, top_k, float(p_stay), float(s), nt, q)
        err, rates = _fit_score(params, targets, seeds, num_tokens)
        if best is None or err < best[0]:
            best = (err, params, rates)
            if verbose:
                print(f"  err={err:.4f} rates={np.round(rates, 3)} {params}")
    assert best is not None
    return best[1], best[2], best[0]


_MODEL_SHAPES: dict[str, tuple[int, int, int]] = {
    "mixtral-8x7b": (32, 8, 2),
    "deepseek-moe-16b": (28, 64, 6),
    "qwen1.5-moe": (24, 60, 4),
    "olmoe-1b-7b": (16, 64, 8),
}


def _main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fit", action="store_true", help="grid-search the presets")
    ap.add_argument("--model", action="append", help="restrict --fit to these presets")
    ap.add_argument("--tokens", type=int, default=2000)
    args = ap.parse_args(argv)
    if args.fit:
        for name in args.model or list(_MODEL_SHAPES):
            L, E, k = _MODEL_SHAPES[name]
            tgt = ROUTING_TARGETS[name]
            print(f"{name}: targets LRU rho=1/2/3 {tgt}")
            coarse, rates, err = fit_preset(L, E, k, tgt, num_tokens=args.tokens, verbose=True)
            print(f"{name}: coarse err={err:.4f} rates={np.round(rates, 3)}\n  {coarse}")
            # Fine grid around the coarse optimum at the sec. 4 topic settings (4 topics, q=0.01).
            p_stays = np.round(np.clip(coarse.p_stay + np.arange(-0.04, 0.041, 0.01), 0, 1), 2)
            zipf_ss = np.round(np.clip(coarse.zipf_s + np.arange(-0.25, 0.26, 0.05), 0, None), 2)
            fine, rates, err = fit_preset(
                L,
                E,
                k,
                tgt,
                sorted(set(p_stays)),
                sorted(set(zipf_ss)),
                (4,),
                (0.01,),
                seeds=(20, 21, 22),
                num_tokens=3000,
            )
            print(f"{name}: fine err={err:.4f} rates={np.round(rates, 3)}\n  {fine}")
    for name, params in ROUTING_PRESETS.items():
        table = lru_hit_rate_table(params, (1.0, 2.0, 3.0), 4000, 0)
        print(f"{name}: LRU rho=1/2/3 {np.round(table, 3)} target {ROUTING_TARGETS[name]}")


if __name__ == "__main__":
    _main()
