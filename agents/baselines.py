"""Heuristic baselines for the offloading environments, one interface for all of them.

A baseline is built from the env it will act in, single or vector
(``make_baseline(name, env, weights=None, seed=0)``), and has ``act(obs, info) -> action`` for a
single env and ``act_batch(obs, info) -> actions`` for a vector env (a single env gives a batch of
one). It reads the state it needs from the env (``env.unwrapped.core`` for ``LLMOffload-v0``,
GMORL's batched core or its observation for ``GMORLOffload-v0``), never changes it, and only
returns plans that are open under the conditional masks (``core.ok_st`` for split and tier,
``core.ok_p`` for the expert policy), so no part falls back; a request no target can take gets
the all-zero plan (the env rejects it). Passing the ``obs`` that the env returned lets the
baseline check that it reads the state of the env being stepped (``bind`` switches env).
``act_batch(obs, info, weights)`` sets the preference first when given one, so with
:func:`agents.evaluation.episode_returns` build the env once and hand the same one back::

    env = gym.make_vec("mec_env/LLMOffload-v0", num_envs=len(prefs))
    b = make_baseline("greedy", env)
    returns = episode_returns(env, b.act_batch, prefs, episodes, seed)

``mec_env/LLMOffload-v0`` (and its vector env); a plan is (target, split, kv_tier, policy):

| name | plan |
|---|---|
| ``random`` | uniformly random jointly open plan: target, then split, tier, policy open for it (seeded) |
| ``all-local`` | the device itself when open, else as ``all-offload`` |
| ``all-offload`` / ``least-loaded`` | the open server with the fewest running jobs per slot, whole model (split 0 if open), fastest open tier, LRU experts if open |
| ``all-cloud`` | the least-loaded open cloud server, else as ``all-offload`` |
| ``round-robin`` | the next open server after the last one chosen, per env; completed as ``all-offload`` |
| ``greedy`` | the open plan minimising ``w . (costs / scale)`` of the predicted per-request costs (``core.plan_costs``): myopic, with full knowledge of the cost model |
| ``flexgen`` | least-loaded server, KV in host DRAM (tier 1, attention where the KV lives), else the next open tier (ssd, csd, fast); experts on demand |
| ``instinfer`` | the least-loaded open server whose CSD can take the KV, KV on the CSD (tier 3, in-storage attention); else as ``all-offload`` |
| ``lru-experts`` | the least-loaded server that holds the whole model (ties: its expert cache already holds the model), fastest tier, LRU experts |

Without an open server, the server baselines run the request locally.

``mec_env/GMORLOffload-v0`` (and its vector env); the action is the server, 0 = cloud:
``random`` (uniform over the mask), ``round-robin`` (over the present servers, per env),
``all-cloud`` (always 0), ``least-loaded`` / ``all-offload`` (fewest tasks running or uploading;
ties: the faster CPU), ``greedy`` (the server minimising ``w . (-reward)`` of the predicted
immediate reward, computed from the core with the env's own formulas). All of them but
``greedy`` read only ``obs`` and ``info["action_mask"]`` when given them.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from agents.common import objective_scale
from mec_env.core import OffloadCore
from mec_env.cost_model import ps_row_own_added, ps_row_served
from mec_env.envs import gmorl as gm

__all__ = [
    "BASELINES",
    "Baseline",
    "applicable_baselines",
    "gmorl_predicted_costs",
    "make_baseline",
]

LLM, GMORL = "LLMOffload", "GMORLOffload"
FASTEST_TIERS = (0, 1, 2, 3)  # fast (HBM / device RAM), dram, ssd, csd
FLEXGEN_TIERS = (1, 2, 3, 0)  # host DRAM first (FlexGen's CPU placement), then the next ones
CSD_TIER = 3
LRU_FIRST = (1, 0, 2, 3, 4)  # LRU when the model is MoE, else on demand (the only open one)
ON_DEMAND_FIRST = (0, 1, 2, 3, 4)
_ROW_PRESENT = gm.FEATURES.index("present")
_ROW_FREQ = gm.FEATURES.index("cpu_freq")
_ROW_RUNNING = gm.FEATURES.index("num_running")
_ROW_UPLOADING = gm.FEATURES.index("num_uploading")


def _env_kind(env) -> tuple[str, Any]:
    """("LLMOffload" | "GMORLOffload", the unwrapped env); ValueError for anything else."""
    u = getattr(env, "unwrapped", env)
    if isinstance(getattr(u, "core", None), OffloadCore):
        space = getattr(u, "single_action_space", None) or u.action_space
        if isinstance(space, gym.spaces.Box):
            raise ValueError(
                f"baselines choose discrete plans: use LLMOffload-v0, not {type(u).__name__}"
            )
        return LLM, u
    if isinstance(getattr(u, "_core", None), gm.GMORLBatchedCore):
        return GMORL, u
    raise ValueError(
        f"no baselines for {type(u).__name__}: expected an LLMOffload-v0 or GMORLOffload-v0 env"
    )


def gmorl_predicted_costs(core: gm.GMORLBatchedCore, n: int = 0) -> np.ndarray:
    """(servers, 2) delay s and energy J that dispatching env ``n``'s current task to each server
    would be charged (the env's formulas, :func:`mec_env.envs.gmorl._dispatch`); inf for servers
    not present, 0 when no task waits. Changes nothing."""
    out = np.full((core.num_servers, 2), np.inf)
    size = float(core.task_mbit[n])
    present = np.flatnonzero(core.present[n])
    if size <= 0.0:
        out[present] = 0.0
        return out
    user = int(core.task_user[n])
    for a in present:
        f_ghz = core.freq_ghz[n, a]
        mu = f_ghz * 1e9 / gm.CYCLES_PER_BIT / 1e6  # Mbit/s
        tx_s = size * 1e6 / core.rate_bps[n, a, user]
        exec_j_per_mbit = gm.KAPPA * gm.CYCLES_PER_BIT * (f_ghz * 1e9) ** 2 * 1e6
        on = core.task_server[n] == a
        left = core.task_finish_mbit[n, on] - core.v_mbit[n, a]
        left = np.sort(left[left > gm._EPS_MBIT])  # running tasks (uploading ones: mark -1)
        level = ps_row_served(left, tx_s * mu)  # service they get during the upload
        own, added = ps_row_own_added(np.maximum(left - level, 0.0), size)
        out[a, 0] = tx_s + (own + added) / mu
        out[a, 1] = gm.TX_POWER_W * tx_s + exec_j_per_mbit * size
    return out


class Baseline:
    """Shared machinery: env binding, weights, seeded RNG, per-env cursors, batching.

    Subclasses implement ``_plan(n)`` (LLMOffload: env n's plan, (4,) int64) and/or
    ``_server(present, load, freq, n)`` (GMORL: env n's server) and list the env kinds
    they apply to in ``kinds``.

    Args:
        env: the (single or vector) env the baseline acts in; its state is read, never changed.
        weights: preference over the env's objectives (``greedy``), shape (reward_dim,) or
            (num_envs, reward_dim), non-negative; None: equal weights.
        seed: seed of the baseline's own Generator (``random``).
    """

    name: ClassVar[str] = ""
    kinds: ClassVar[tuple[str, ...]] = (LLM,)

    def __init__(self, env, weights=None, seed: int = 0) -> None:
        self.seed = seed
        self.bind(env)
        self.set_weights(weights)
        self.reset(seed)

    # ------------------------------------------------------------ setup
    def bind(self, env) -> None:
        """Act in ``env`` from now on (same kind of env; weights and RNG are kept)."""
        kind, u = _env_kind(env)
        if kind not in self.kinds:
            raise ValueError(
                f"baseline {self.name!r} does not apply to {kind} envs (it applies to "
                f"{', '.join(self.kinds)}); for {kind}: {applicable_baselines(env)}"
            )
        self.env, self.kind, self._u = env, kind, u
        self.vector = isinstance(u, gym.vector.VectorEnv)
        self.core = u.core if kind == LLM else u._core
        self.num_envs = int(self.core.n if kind == LLM else self.core.num_envs)
        self.reward_dim = int(u.reward_dim)
        self.scale = np.asarray(objective_scale(env), np.float64)
        if kind == LLM:
            self.num_servers = len(u.scenario.servers)
        if hasattr(self, "weights") and len(self.weights) != self.num_envs:
            self.set_weights(self.weights[0])
        if hasattr(self, "cursor"):
            self.cursor = np.full(self.num_envs, -1, np.int64)

    def set_weights(self, weights=None) -> None:
        """Preference over the objectives, (reward_dim,) for every env or (num_envs, reward_dim)."""
        d = self.reward_dim
        w = np.full(d, 1.0 / d) if weights is None else np.asarray(weights, np.float64)
        if w.shape not in ((d,), (self.num_envs, d)):
            raise ValueError(
                f"weights must have shape ({d},) or ({self.num_envs}, {d}), got {w.shape}"
            )
        if not np.all(np.isfinite(w)) or np.any(w < 0) or np.any(w.sum(axis=-1) <= 0):
            raise ValueError(f"weights must be finite, non-negative and not all zero, got {w}")
        self.weights = np.array(np.broadcast_to(w, (self.num_envs, d)))

    def reset(self, seed: int | None = None) -> None:
        """Restart the Generator (from ``seed``, or the constructor's) and the cursors."""
        if seed is not None:
            self.seed = seed
        self.rng = np.random.default_rng(self.seed)
        self.cursor = np.full(self.num_envs, -1, np.int64)  # last server chosen (round-robin)

    # ------------------------------------------------------------ acting
    def act(self, obs=None, info=None, weights=None):
        """The action for a single env: (4,) int64 plan (LLMOffload) or an int server (GMORL).
        ``weights``: when given, :meth:`set_weights` first."""
        if self.vector:
            raise ValueError(f"{type(self._u).__name__} is a vector env: use act_batch")
        obs = None if obs is None else np.asarray(obs)[None]
        a = self.act_batch(obs, _batch_info(info), weights)
        return a[0] if self.kind == LLM else int(a[0])

    def act_batch(self, obs=None, info=None, weights=None) -> np.ndarray:
        """Actions for every env: (num_envs, 4) int64 plans or (num_envs,) int64 servers.
        ``weights`` ((reward_dim,) or (num_envs, reward_dim)): when given, :meth:`set_weights`
        first, so ``act_batch`` is a ``policy(obs, info, weights)`` for
        :func:`agents.evaluation.episode_returns`."""
        if weights is not None:
            self.set_weights(weights)
        if self.kind == LLM:
            self._check_obs(obs)
            return np.stack([self._plan(n) for n in range(self.num_envs)])
        return self._gmorl_batch(obs, info)

    def _check_obs(self, obs) -> None:
        """The obs handed in must be the bound env's current one (the state read is the core's)."""
        if obs is None:
            return
        mine = np.asarray(self.core.observation()).reshape(self.num_envs, -1)
        obs = np.asarray(obs)
        if obs.size != mine.size or not np.array_equal(obs.reshape(mine.shape), mine):
            raise ValueError(
                f"baseline {self.name!r} reads the state of the env it was built with, and obs "
                "differs from that env's current observation: build it with (or bind it to) the "
                "env you step"
            )

    # ------------------------------------------------------------ LLMOffload helpers
    def _plan(self, n: int) -> np.ndarray:
        raise NotImplementedError

    def _open_servers(self, n: int) -> np.ndarray:
        """Open server targets (1..) of env n's current request."""
        return np.flatnonzero(self.core.part_mask(0)[n, 1 : self.num_servers + 1]) + 1

    def _load(self, n: int, targets: np.ndarray) -> np.ndarray:
        """Running jobs per slot of each target's resource row."""
        c = self.core
        rows = c.res_of_target[c.req_device[n], targets]
        return c.busy[n, rows] / c.slots_per_resource[rows]

    def _least_loaded(self, n: int, targets: np.ndarray) -> int:
        return int(targets[np.argmin(self._load(n, targets))])  # ties: the lowest index

    def _complete(
        self, n: int, g: int, tiers=FASTEST_TIERS, policies=LRU_FIRST, split: int = 0
    ) -> np.ndarray:
        """Plan on target g: ``split`` if open there (else the first open one), the first open
        tier of ``tiers``, the first open policy of ``policies``."""
        c = self.core
        st = c.ok_st[n, g]
        s = split if st[split].any() else int(np.flatnonzero(st.any(axis=1))[0])
        k = next(t for t in tiers if st[s, t])
        p = next(q for q in policies if c.ok_p[n, g, q])
        return np.array([g, s, k, p], np.int64)

    def _offload(self, n: int, tiers=FASTEST_TIERS, policies=LRU_FIRST) -> np.ndarray:
        """Least-loaded open server completed with ``tiers``/``policies``; local without one."""
        servers = self._open_servers(n)
        if servers.size:
            return self._complete(n, self._least_loaded(n, servers), tiers, policies)
        return self._local_or_reject(n)

    def _local_or_reject(self, n: int) -> np.ndarray:
        if self.core.rejecting[n] or not self.core.part_mask(0)[n, 0]:
            return np.zeros(4, np.int64)  # rejected: the env runs nothing
        return self._complete(n, 0)

    # ------------------------------------------------------------ GMORL helpers
    def _gmorl_batch(self, obs, info) -> np.ndarray:
        """Reads present / load / frequency from ``obs`` and ``info`` when given, else the core."""
        if obs is None:
            c = self.core
            present = c.present
            load = (c.n_running + c.n_uploading).astype(np.float64)
            freq = c.freq_ghz
        else:
            o = np.asarray(obs)
            o = o.reshape(-1, *o.shape[-2:])
            mask = None if info is None else info.get("action_mask")
            present = (
                np.asarray(mask, bool).reshape(o.shape[0], -1)
                if mask is not None
                else o[:, _ROW_PRESENT] > 0
            )
            load = o[:, _ROW_RUNNING] + o[:, _ROW_UPLOADING]
            freq = o[:, _ROW_FREQ]
        if len(self.cursor) != len(present):
            self.cursor = np.full(len(present), -1, np.int64)
        return np.array(
            [self._server(present[n], load[n], freq[n], n) for n in range(len(present))],
            np.int64,
        )

    def _server(self, present: np.ndarray, load: np.ndarray, freq: np.ndarray, n: int) -> int:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, env={type(self._u).__name__}, num_envs={self.num_envs})"


def _batch_info(info):
    """A single env's info with its action mask given a leading batch axis."""
    if info is None or "action_mask" not in info:
        return info
    return {**info, "action_mask": np.asarray(info["action_mask"])[None]}


def _least_loaded_server(present, load, freq) -> int:
    """GMORL: the present server with the smallest load; ties: the faster CPU, then lower index."""
    idx = np.flatnonzero(present)
    best = np.lexsort((idx, -freq[idx], load[idx]))[0]
    return int(idx[best])


# ================================================================ the baselines
class Random(Baseline):
    name = "random"
    kinds = (LLM, GMORL)

    def _plan(self, n):
        c, rng = self.core, self.rng
        targets = np.flatnonzero(c.part_mask(0)[n])
        if c.rejecting[n] or targets.size == 0:
            return np.zeros(4, np.int64)
        g = rng.choice(targets)
        s = rng.choice(np.flatnonzero(c.ok_st[n, g].any(axis=1)))
        k = rng.choice(np.flatnonzero(c.ok_st[n, g, s]))
        p = rng.choice(np.flatnonzero(c.ok_p[n, g]))
        return np.array([g, s, k, p], np.int64)

    def _server(self, present, load, freq, n):
        return int(self.rng.choice(np.flatnonzero(present)))


class AllLocal(Baseline):
    name = "all-local"

    def _plan(self, n):
        if not self.core.rejecting[n] and self.core.part_mask(0)[n, 0]:
            return self._complete(n, 0)
        return self._offload(n)


class LeastLoaded(Baseline):
    name = "least-loaded"
    kinds = (LLM, GMORL)

    def _plan(self, n):
        return self._offload(n)

    def _server(self, present, load, freq, n):
        return _least_loaded_server(present, load, freq)


class AllOffload(LeastLoaded):
    name = "all-offload"


class AllCloud(Baseline):
    name = "all-cloud"
    kinds = (LLM, GMORL)

    def bind(self, env) -> None:
        super().bind(env)
        if self.kind == LLM:
            tiers = [s.tier for s in self._u.scenario.servers]
            self._cloud = np.array([t == "cloud" for t in tiers])

    def _plan(self, n):
        servers = self._open_servers(n)
        cloud = servers[self._cloud[servers - 1]]
        if cloud.size:
            return self._complete(n, self._least_loaded(n, cloud))
        return self._offload(n)

    def _server(self, present, load, freq, n):
        return 0


class RoundRobin(Baseline):
    name = "round-robin"
    kinds = (LLM, GMORL)

    def _plan(self, n):
        servers = self._open_servers(n)
        if servers.size == 0:
            return self._local_or_reject(n)
        after = servers[servers > self.cursor[n]]
        g = int(after[0] if after.size else servers[0])
        self.cursor[n] = g
        return self._complete(n, g)

    def _server(self, present, load, freq, n):
        servers = np.flatnonzero(present)
        after = servers[servers > self.cursor[n]]
        a = int(after[0] if after.size else servers[0])
        self.cursor[n] = a
        return a


class Greedy(Baseline):
    """Myopic: the action with the smallest preference-weighted predicted immediate cost."""

    name = "greedy"
    kinds = (LLM, GMORL)

    def act_batch(self, obs=None, info=None, weights=None) -> np.ndarray:
        if weights is not None:
            self.set_weights(weights)
        if self.kind == GMORL:  # needs the exact state: the core's
            if obs is not None:
                o = np.asarray(obs)
                if o.size != self.core.obs.size or not np.array_equal(
                    o.reshape(self.core.obs.shape), self.core.obs
                ):
                    raise ValueError(
                        "baseline 'greedy' reads the state of the env it was built with, and obs "
                        "differs from that env's current observation: bind it to the env you step"
                    )
            return np.array([self._gmorl_greedy(n) for n in range(self.num_envs)], np.int64)
        return super().act_batch(obs, info)  # weights already set

    def scores(self, n: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(actions, scalarised cost of each) for env n: the open plans (LLMOffload, (M, 4)) or
        the present servers (GMORL, (M,)). The chosen action is the first argmin."""
        c = self.core
        if self.kind == LLM:
            plans = c.open_plans(n)
            costs = c.plan_costs(plans, n)[:, c.objective_index]
            return plans, (costs / self.scale) @ self.weights[n]
        servers = np.flatnonzero(c.present[n])
        costs = gmorl_predicted_costs(c, n)[servers]
        costs = costs * np.array([gm.ALPHA_T_PER_S, gm.ALPHA_E_PER_J])  # = -reward
        return servers, (costs / self.scale) @ self.weights[n]

    def _plan(self, n):
        if self.core.rejecting[n]:
            return np.zeros(4, np.int64)
        plans, score = self.scores(n)
        return plans[np.argmin(score)] if len(plans) else np.zeros(4, np.int64)

    def _gmorl_greedy(self, n: int) -> int:
        servers, score = self.scores(n)
        return int(servers[np.argmin(score)])


class FlexGen(Baseline):
    name = "flexgen"

    def _plan(self, n):
        return self._offload(n, FLEXGEN_TIERS, ON_DEMAND_FIRST)


class InstInfer(Baseline):
    name = "instinfer"

    def _plan(self, n):
        servers = self._open_servers(n)
        csd = servers[self.core.ok_st[n, servers, :, CSD_TIER].any(axis=1)]
        if csd.size == 0:
            return self._offload(n)
        g = self._least_loaded(n, csd)
        s = int(np.flatnonzero(self.core.ok_st[n, g, :, CSD_TIER])[0])  # split 0 when open
        return self._complete(n, g, (CSD_TIER,), LRU_FIRST, split=s)


class LruExperts(Baseline):
    name = "lru-experts"

    def _plan(self, n):
        c = self.core
        servers = self._open_servers(n)
        whole = servers[c.ok_st[n, servers, 0].any(axis=1)]
        if whole.size == 0:
            return self._offload(n)
        warm = c.cache_model[n, whole - 1] == c.req_model[n]
        g = int(whole[np.lexsort((whole, ~warm, self._load(n, whole)))[0]])
        return self._complete(n, g, FASTEST_TIERS, LRU_FIRST)


BASELINES: dict[str, type[Baseline]] = {
    cls.name: cls
    for cls in (
        Random,
        AllLocal,
        AllOffload,
        LeastLoaded,
        AllCloud,
        RoundRobin,
        Greedy,
        FlexGen,
        InstInfer,
        LruExperts,
    )
}


def applicable_baselines(env) -> list[str]:
    """Names of the baselines that apply to ``env``'s kind."""
    kind, _ = _env_kind(env)
    return [name for name, cls in BASELINES.items() if kind in cls.kinds]


def make_baseline(name: str, env, weights=None, seed: int = 0) -> Baseline:
    """The baseline ``name`` acting in ``env`` (single or vector).

    Raises:
        ValueError: unknown name (the message lists the known ones), or a baseline that does
            not apply to the env (e.g. ``all-local`` on GMORL, which has no local execution).
    """
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
    return BASELINES[name](env, weights=weights, seed=seed)
