"""Clairvoyant oracle for ``mec_env/LLMOffload-v0``: the front of episode returns for one seed.

An episode of ``LLMOffload-v0`` is fixed by the seed given to ``reset``: the device placement,
the arrivals, the request lengths and every channel draw come from the env's Generator, and a
step draws nothing but a new block of requests every ``mec_env.core.MAX_BLOCK`` (256) requests, a
draw that does not depend on the actions (episodes shorter than that are drawn whole at reset).
The search keeps a copy of the Generator per level and draws those blocks as the env would. The oracle knows all of that in advance and searches over whole
sequences of plans for that seed's episode:

* ``mode="exhaustive"`` enumerates **every** sequence of open plans. At each step the
  candidates of a node are the plans ``(target, split, tier, policy)`` open under the
  conditional masks (``core.ok_st``, ``core.ok_p`` and the target mask, i.e.
  ``core.open_plans``); a rejected request has the single plan 0. Any action of the discrete
  env, masked parts included, executes one of these plans (masked parts fall back to open ones),
  so the returns reachable by *any* policy of ``LLMOffload-v0`` for that seed are exactly the
  returns of the enumerated sequences: the front found is the exact Pareto front of episode
  returns, and every policy's return vector for that seed is weakly dominated by a point of it.
  "Exact" means exact for the discrete env, whose continuous knobs are fixed to their defaults
  (full device frequency, the device's default transmit power, all KV on the plan's tier);
  ``LLMOffloadContinuous-v0`` can reach more. Nothing is pruned (pruning partial returns by
  dominance is not exact: future costs depend on the state). Cost: with ``b_t`` open plans at
  step t, ``sum_t prod_{u <= t} b_u`` simulated decisions (about ``b ** T``, ~2 us each; the
  tiny preset has b = 16..20: 3 requests take ~8 000 decisions, 4 ~170 000 (0.4 s), 5 ~2.5
  million (6-9 s)). The tree is walked depth first over chunks of ``CHUNK_ROWS`` children, so
  memory stays at about ``T * CHUNK_ROWS`` states (a few KB each). ``max_nodes`` caps the
  decisions: past it, ``ValueError`` naming ``max_nodes`` and the count reached.
* ``mode="beam"``: a breadth-first search keeping at most ``beam_width`` nodes per level.
  The nodes kept are chosen for diversity over the objectives: for evenly spaced preference
  weights ``w`` (``pareto.simplex_weights``) the children are ranked by ``w . (partial return /
  span)`` (span = the scenario's ``return_high - return_low``; ties: the larger sum), and the
  rankings are merged round robin (rank 0 of every weight, then rank 1, ...), distinct nodes,
  until ``beam_width`` are kept (and simulated once more to get their states; partial returns
  alone guide the choice, no lookahead). The children of the last level are all evaluated.
  Cost: about ``T * beam_width * (b + 1)`` decisions. With ``beam_width`` at least the number of children at every
  level nothing is pruned and the result equals the exhaustive one (``result.exact`` is then
  True). A beam front is a set of achievable returns (a lower bound on the front), not an upper
  bound.
* ``mode="auto"``: exhaustive, or beam when the exhaustive search would exceed ``max_nodes``
  (beam at once when the size estimated from the branching along one sequence is over ten times
  ``max_nodes``).

Branching uses the batched core: the nodes of a level are rows of one ``OffloadCore`` (copied
with ``get_state``/``set_state``) and every child is simulated by the same compiled step, one call
per chunk of rows. The returns are summed as the env's users sum them (float32 rewards added
into a float64 total, in step order), so replaying a front point's action sequence in a fresh
``gym.make(env_id, scenario=result.scenario)`` reset with the same seed reproduces its return
vector exactly (:func:`episode_return`).

For comparisons over several seeds, :func:`oracle_fronts` gives each seed's front, the front
of *mean* returns over the seeds (the Minkowski average of the per-seed fronts: every
policy's mean return over those seeds is weakly dominated by a point of it), and, for
preference-conditioned policies, :func:`oracle_points`: for each preference ``w``, the mean over
the seeds of each seed's ``w``-optimal front point, which bounds ``w . mean return / scale`` of
every policy over the same seeds (both exact bounds when the searches are exhaustive).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from mec_env import _kernels as kern
from mec_env import pareto
from mec_env.core import OffloadCore
from mec_env.scenario import Scenario, load_scenario
from mec_env.workload import sample_requests

__all__ = [
    "DEFAULT_BEAM_WIDTH",
    "DEFAULT_MAX_NODES",
    "OracleFronts",
    "OracleResult",
    "episode_return",
    "oracle_front",
    "oracle_fronts",
    "oracle_points",
]

DEFAULT_ENV_ID = "mec_env/LLMOffload-v0"
DEFAULT_MAX_NODES = 1_000_000
DEFAULT_BEAM_WIDTH = 64
MODES = ("auto", "exhaustive", "beam")
CHUNK_ROWS = 4096  # children simulated per kernel call (bounds the memory: ~T chunks of states)
MAX_BEAM_WEIGHTS = 32  # preference weights used to pick the beam


@dataclass
class OracleResult:
    """The front found for one seed.

    ``front`` (k, reward_dim) float64: the distinct non-dominated episode return vectors (raw
    units, higher is better), sorted by the first objective; ``actions`` (k, T, 4) int64: for
    each, a sequence of plans reaching it; ``nodes``: partial sequences (children) evaluated;
    ``leaves``: complete sequences evaluated; ``exact``: True when nothing was pruned (always for ``"exhaustive"``).
    The episode is ``seed``'s of ``scenario`` (episode length included) in ``env_id``, or of
    sub-env ``env_index`` of a vector env of ``num_envs``; :meth:`replay` reproduces a point.
    """

    front: np.ndarray
    actions: np.ndarray
    mode: str
    exact: bool
    nodes: int
    leaves: int
    seed: int
    scenario: Scenario
    env_id: str
    num_envs: int
    env_index: int
    beam_width: int | None
    seconds: float
    objective_names: tuple[str, ...]

    def replay(self, i: int) -> np.ndarray:
        """Front point ``i``'s return, from playing its actions in a fresh env
        (:func:`episode_return`); equal to ``front[i]``."""
        return episode_return(
            self.scenario,
            self.seed,
            self.actions[i],
            env_id=self.env_id,
            num_envs=self.num_envs,
            env_index=self.env_index,
        )

    def __repr__(self) -> str:
        return (
            f"OracleResult(mode={self.mode!r}, exact={self.exact}, points={len(self.front)}, "
            f"nodes={self.nodes}, leaves={self.leaves}, seed={self.seed}, "
            f"episode_requests={self.scenario.episode_requests}, seconds={self.seconds:.3f})"
        )


@dataclass
class OracleFronts:
    """Oracle fronts of several seeds of one scenario (:func:`oracle_fronts`).

    ``results``: one :class:`OracleResult` per seed; ``mean_front`` (k, d): the front of mean
    returns over the seeds (Minkowski average of the per-seed fronts); ``preferences``
    (P, d) and ``points`` (P, d): for each preference, the mean over the seeds of each seed's
    front point maximising ``w . (R / scale)``; ``front``: the non-dominated ``points``;
    ``scale`` (d,): the per-objective scale used.
    """

    results: list[OracleResult]
    preferences: np.ndarray
    points: np.ndarray
    front: np.ndarray
    mean_front: np.ndarray
    scale: np.ndarray
    exact: bool = field(default=True)


class _BranchCore(OffloadCore):
    """A core whose rows are branches of ONE episode, all at the same step.

    A new block of requests is drawn as the env being reproduced draws it (for all of its
    ``P`` sub-envs at once, from their device placements ``peer_distance``/``peer_shadowing``)
    and row ``peer_index`` of the draw is given to every branch: the branches share the
    requests, and the Generator advances as the env's does.
    """

    peer_distance: np.ndarray  # (P, devices)
    peer_shadowing: np.ndarray  # (P, devices)
    peer_cursor0: np.ndarray  # (P,) trace cursors right after the reset
    peer_index: int

    def _refill(self, rng: np.random.Generator, idx: np.ndarray) -> None:
        i, first = self.peer_index, idx[0]
        cursor = None
        if self.trace is not None:  # the sub-envs' cursors advance in step with this one's
            cursor = self.peer_cursor0 + (self.trace_cursor[first] - self.peer_cursor0[i])
        b = sample_requests(
            rng, self.scenario, self.block_size, self.peer_distance, self.peer_shadowing, cursor
        )
        if cursor is not None:
            self.trace_cursor[idx] = cursor[i]
        self.blk_f[idx] = np.stack([b.gap_s[i], b.gain[i]], axis=-1)
        self.blk_i[idx] = np.stack(
            [b.device[i], b.model[i], b.prompt_tokens[i], b.output_tokens[i]], axis=-1
        )
        self.env_i[idx, kern.CT_POS] = 0


def _make_env(scenario, env_id: str, num_envs: int = 1):
    """``gym.make`` (num_envs 1) or ``gym.make_vec``; the env and its unwrapped view."""
    if num_envs == 1:
        env = gym.make(env_id, scenario=scenario)
    else:
        env = gym.make_vec(env_id, num_envs=num_envs, scenario=scenario)
    u = getattr(env, "unwrapped", env)
    space = u.single_action_space if num_envs > 1 else u.action_space
    if not isinstance(getattr(u, "core", None), OffloadCore) or not isinstance(
        space, spaces.MultiDiscrete
    ):
        env.close()
        raise ValueError(
            f"the oracle searches the discrete plans of an LLMOffload env, got env_id={env_id!r} "
            f"({type(u).__name__})"
        )
    return env, u


def _check_vector(num_envs, env_index) -> tuple[int, int]:
    num_envs = _positive_int(num_envs, "num_envs")
    if (
        isinstance(env_index, bool)
        or not isinstance(env_index, (int, np.integer))
        or not 0 <= env_index < num_envs
    ):
        raise ValueError(f"env_index must be an integer in [0, {num_envs}), got {env_index!r}")
    return num_envs, int(env_index)


def _scenario(scenario, episode_requests: int | None) -> Scenario:
    sc = load_scenario(scenario)
    if episode_requests is not None:
        sc = sc.replace(episode_requests=_positive_int(episode_requests, "episode_requests"))
    return sc


def episode_return(
    scenario,
    seed: int,
    actions,
    *,
    env_id: str = DEFAULT_ENV_ID,
    num_envs: int = 1,
    env_index: int = 0,
) -> np.ndarray:
    """The return vector (float64, raw units) of playing ``actions`` ((T, 4) plans) in a fresh
    env reset with ``seed``, summed as float32 rewards into a float64 total (as
    ``agents.evaluation.episode_returns`` sums them): ``gym.make(env_id, scenario=scenario)``,
    or with ``num_envs > 1`` sub-env ``env_index`` of ``gym.make_vec(env_id, num_envs,
    scenario=scenario)`` (the other sub-envs play plan 0). ValueError when the episode does not
    end with the last action."""
    acts = np.asarray(actions, dtype=np.int64)
    num_envs, env_index = _check_vector(num_envs, env_index)
    env, u = _make_env(load_scenario(scenario), env_id, num_envs)
    try:
        env.reset(seed=int(seed))
        total = np.zeros(u.reward_dim)
        batch = np.zeros((num_envs, 4), np.int64)
        for t, a in enumerate(acts):
            if num_envs == 1:
                _, reward, terminated, truncated, _ = env.step(a)
            else:
                batch[env_index] = a
                _, rewards, term, trunc, _ = env.step(batch)
                reward, terminated, truncated = (
                    rewards[env_index],
                    term[env_index],
                    trunc[env_index],
                )
            total += reward
            if (terminated or truncated) != (t == len(acts) - 1):
                raise ValueError(
                    f"the episode ended after {t + 1} requests, the sequence has {len(acts)}"
                )
        return total
    finally:
        env.close()


def _children(state: dict[str, np.ndarray], num_targets: int) -> tuple[np.ndarray, np.ndarray]:
    """(parent row, plan) of every open plan of every row of ``state`` (core.open_plans' order;
    a rejected request: plan 0)."""
    ok_st, ok_p = state["ok_st"], state["ok_p"]
    target_open = state["masks"][:, :num_targets]
    joint = (
        ok_st[:, :, :, :, None] & ok_p[:, :, None, None, :] & target_open[:, :, None, None, None]
    )
    rej = state["flags"][:, kern.FL_REJECTING] | ~joint.reshape(len(joint), -1).any(axis=1)
    if rej.any():
        joint[rej] = False
        joint[rej, 0, 0, 0, 0] = True
    n, g, s, k, p = np.nonzero(joint)
    return n, np.stack([g, s, k, p], axis=1).astype(np.int64)


def _beam_weights(d: int, width: int) -> np.ndarray:
    if d == 1:
        return np.ones((1, 1))
    limit = max(1, min(width, MAX_BEAM_WEIGHTS))
    p = 2
    while len(pareto.simplex_weights(d, p + 1)) <= limit:
        p += 1
    return pareto.simplex_weights(d, p)


def _select(z: np.ndarray, width: int, weights: np.ndarray) -> np.ndarray:
    """Indices (ascending) of ``width`` rows of normalised partial returns ``z`` (C, d): the
    per-weight rankings merged round robin."""
    tie = -z.sum(axis=1)
    order = np.stack([np.lexsort((tie, -(z @ w))) for w in weights], axis=1)  # (C, n_w)
    seq = order.ravel()  # rank 0 of every weight, then rank 1, ...
    _, first = np.unique(seq, return_index=True)
    return np.sort(seq[np.sort(first)][:width])


class _Search:
    def __init__(
        self, sc: Scenario, seed: int, env_id: str, parallel: bool, num_envs: int, env_index: int
    ) -> None:
        self.sc, self.seed, self.env_id, self.parallel = sc, int(seed), env_id, parallel
        env, u = _make_env(sc, env_id, num_envs)
        try:
            env.reset(seed=self.seed)
            core = u.core
            self.root = core.get_state(np.array([env_index]))
            # the Generator the env steps with (the single env's np_random, the vector env's)
            self.rng = copy.deepcopy(u.np_random if num_envs == 1 else u._rng)
            self.num_targets = int(core.num_targets)
            self.objective_names = tuple(u.objective_names)
            self.peers = (
                core.distance_m.copy(), core.shadowing_db.copy(), core.trace_cursor.copy(),
                env_index,
            )  # fmt: skip
        finally:
            env.close()
        self.d = len(self.objective_names)
        o = sc.objectives
        self.span = np.asarray(o.return_high, float) - np.asarray(o.return_low, float)
        self._cores: dict[int, _BranchCore] = {}

    def _core(self, rows: int) -> _BranchCore:
        cap = 1 << max(0, int(rows - 1).bit_length())
        if cap not in self._cores:
            core = _BranchCore(self.sc, cap, self.parallel)
            core.peer_distance, core.peer_shadowing, core.peer_cursor0, core.peer_index = self.peers
            self._cores[cap] = core
        return self._cores[cap]

    def _simulate(self, t: int, state, parents, plans, keep_states: bool):
        """Rewards (C, d) float32 of the children (parent row, plan) of level-``t`` nodes
        ``state``, and their states when ``keep_states`` (else None)."""
        C = len(parents)
        rewards = np.empty((C, self.d), np.float32)
        states = []
        for start in range(0, C, CHUNK_ROWS):
            par = parents[start : start + CHUNK_ROWS]
            m = len(par)
            core = self._core(m)
            rows = np.full(core.n, par[0])  # padding rows: valid copies, stepped and ignored
            rows[:m] = par
            core.set_state({k: v[rows] for k, v in state.items()})
            actions = np.broadcast_to(plans[start], (core.n, 4)).copy()
            actions[:m] = plans[start : start + m]
            rng = copy.deepcopy(self.rngs[t])  # every chunk draws what the single env would
            result = core.step(actions, rng)
            del self.rngs[t + 1 :]
            self.rngs.append(rng)
            rewards[start : start + m] = result.reward[:m]
            if keep_states:
                states.append(core.get_state(slice(0, m)))
        if not keep_states:
            return rewards, None
        if len(states) == 1:
            return rewards, states[0]
        return rewards, {k: np.concatenate([s[k] for s in states]) for k in states[0]}

    def _merge(self, ret: np.ndarray, paths: np.ndarray) -> None:
        """Add complete sequences to the running front (earlier ones win ties)."""
        if self.front is not None:
            ret = np.concatenate([self.front, ret])
            paths = np.concatenate([self.paths, paths])
        keep = pareto.pareto_mask(ret)
        self.front, self.paths = ret[keep], paths[keep]

    def _count(self, children: int, t: int) -> None:
        self.nodes += children
        if self.max_nodes is not None and self.nodes > self.max_nodes:
            raise _TooBig(self.nodes, t, self.sc.episode_requests, self.max_nodes)

    def _exhaustive(self, t: int, state, ret: np.ndarray, paths: np.ndarray) -> None:
        """Every sequence from the level-``t`` nodes ``state``, depth first over chunks of
        children (lexicographic order of the sequences; memory ~ T chunks of states)."""
        T = self.sc.episode_requests
        parents, plans = _children(state, self.num_targets)
        self._count(len(parents), t)
        last = t == T - 1
        for start in range(0, len(parents), CHUNK_ROWS):
            par, pl = parents[start : start + CHUNK_ROWS], plans[start : start + CHUNK_ROWS]
            rewards, child = self._simulate(t, state, par, pl, keep_states=not last)
            child_ret = ret[par] + rewards.astype(np.float64)
            child_paths = np.concatenate([paths[par], pl[:, None]], axis=1)
            if last:
                self.leaves += len(par)
                self._merge(child_ret, child_paths)
            else:
                self._exhaustive(t + 1, child, child_ret, child_paths)

    def _beam(self, width: int) -> None:
        T = self.sc.episode_requests
        weights = _beam_weights(self.d, width)
        state, ret, paths = self.root, np.zeros((1, self.d)), np.zeros((1, 0, 4), np.int64)
        for t in range(T):
            parents, plans = _children(state, self.num_targets)
            self._count(len(parents), t)
            last = t == T - 1
            prune = not last and len(parents) > width
            rewards, child = self._simulate(t, state, parents, plans, not (last or prune))
            child_ret = ret[parents] + rewards.astype(np.float64)
            if prune:  # keep `width` children, then simulate them again for their states
                self.exact = False
                keep = _select(child_ret / self.span, width, weights)
                parents, plans, child_ret = parents[keep], plans[keep], child_ret[keep]
                _, child = self._simulate(t, state, parents, plans, keep_states=True)
            paths = np.concatenate([paths[parents], plans[:, None]], axis=1)
            if last:
                self.leaves += len(parents)
                self._merge(child_ret, paths)
            state, ret = child, child_ret

    def estimate(self) -> float:
        """Exhaustive size estimated from the branching along the sequence of first plans:
        ``sum_t prod_{u <= t} b_u``."""
        self.rngs = [copy.deepcopy(self.rng)]
        state, total, prod = self.root, 0.0, 1.0
        T = self.sc.episode_requests
        for t in range(T):
            parents, plans = _children(state, self.num_targets)
            prod *= len(parents)
            total += prod
            if t < T - 1:
                _, state = self._simulate(t, state, parents[:1], plans[:1], keep_states=True)
        return total

    def run(self, width: int | None, max_nodes: int | None):
        """(front, actions, nodes, leaves, exact); ``width`` None: exhaustive."""
        self.rngs = [copy.deepcopy(self.rng)]
        self.front = self.paths = None
        self.nodes = self.leaves = 0
        self.exact = True
        self.max_nodes = max_nodes
        if width is None:
            self._exhaustive(0, self.root, np.zeros((1, self.d)), np.zeros((1, 0, 4), np.int64))
        else:
            self._beam(width)
        order = np.lexsort(self.front.T[::-1])  # sorted by the first objective
        return self.front[order], self.paths[order], self.nodes, self.leaves, self.exact


class _TooBig(Exception):
    def __init__(self, count: int, t: int, T: int, max_nodes: int) -> None:
        super().__init__(
            f"exhaustive search needs more than max_nodes={max_nodes} simulated decisions: "
            f"the count reached {count} at request {t + 1} of {T} with sequences left; use "
            "mode='beam', fewer episode_requests or a larger max_nodes"
        )


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def oracle_front(
    scenario="tiny",
    seed: int = 0,
    *,
    env_id: str = DEFAULT_ENV_ID,
    mode: str = "auto",
    beam_width: int = DEFAULT_BEAM_WIDTH,
    max_nodes: int = DEFAULT_MAX_NODES,
    episode_requests: int | None = None,
    num_envs: int = 1,
    env_index: int = 0,
    parallel: bool = False,
) -> OracleResult:
    """The front of episode returns of ``scenario``'s episode for ``seed`` (see the module).

    Args:
        scenario: anything ``load_scenario`` takes (preset name, YAML path, mapping, Scenario).
        seed: the seed given to ``env.reset``.
        env_id: an ``LLMOffload`` env id with discrete plans (the default).
        mode: ``"exhaustive"``, ``"beam"`` or ``"auto"`` (exhaustive, beam when too big).
        beam_width: nodes kept per level in beam mode.
        max_nodes: the most decisions an exhaustive search may simulate.
        episode_requests: overrides the scenario's episode length (``Scenario.replace``).
        num_envs, env_index: the episode of sub-env ``env_index`` of the vector env
            ``gym.make_vec(env_id, num_envs=num_envs, scenario=...)`` reset with the int
            ``seed`` (one Generator for all sub-envs: their episodes are rows of one joint
            draw and differ from the single env's). Default: the single env
            ``gym.make(env_id, scenario=...)``, whose episode is also that of every sub-env of
            a vector env reset with ``seed=[seed] * num_envs`` (as
            ``agents.evaluation.episode_returns`` does).
        parallel: step the branches on numba's threads (same result).

    Raises:
        ValueError: an invalid argument, an env that is not an LLMOffload env with discrete
            plans, or (``mode="exhaustive"``) an instance needing more than ``max_nodes``
            decisions (the message names max_nodes and the count reached).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    beam_width = _positive_int(beam_width, "beam_width")
    max_nodes = _positive_int(max_nodes, "max_nodes")
    num_envs, env_index = _check_vector(num_envs, env_index)
    sc = _scenario(scenario, episode_requests)
    start = time.perf_counter()
    search = _Search(sc, int(seed), env_id, bool(parallel), num_envs, env_index)
    used_mode, width = mode, None
    if mode == "beam" or (mode == "auto" and search.estimate() > 10 * max_nodes):
        used_mode, width = "beam", beam_width
    try:
        out = search.run(width, max_nodes if width is None else None)
    except _TooBig as err:
        if mode == "exhaustive":
            raise ValueError(str(err)) from None
        used_mode, width = "beam", beam_width
        out = search.run(width, None)
    else:
        if used_mode == "auto":
            used_mode = "exhaustive"
    front, actions, nodes, leaves, exact = out
    return OracleResult(
        front=front,
        actions=actions,
        mode=used_mode,
        exact=exact,
        nodes=nodes,
        leaves=leaves,
        seed=int(seed),
        scenario=sc,
        env_id=env_id,
        num_envs=num_envs,
        env_index=env_index,
        beam_width=width,
        seconds=time.perf_counter() - start,
        objective_names=search.objective_names,
    )


def _minkowski_mean(fronts: list[np.ndarray]) -> np.ndarray:
    acc = fronts[0]
    for f in fronts[1:]:
        acc = pareto.pareto_front((acc[:, None, :] + f[None, :, :]).reshape(-1, acc.shape[1]))
    return acc / len(fronts)


def oracle_fronts(
    scenario="tiny",
    seeds=(0,),
    preferences=None,
    *,
    scale=None,
    **kwargs,
) -> OracleFronts:
    """:func:`oracle_front` for each seed's (single-env) episode, and the fronts of mean
    returns over the seeds.

    Args:
        scenario, kwargs: as :func:`oracle_front` (``env_id``, ``mode``, ``beam_width``,
            ``max_nodes``, ``episode_requests``, ``parallel``).
        seeds: the reset seeds. ``agents.evaluation.episode_returns(env, policy, preferences,
            episodes, seed)`` resets every sub-env with the same seed from its own Generator,
            so its episodes are these for ``seeds = range(seed, seed + episodes)``.
        preferences: (P, d) non-negative weights; default ``pareto.simplex_weights(d, 11)``.
        scale: (d,) positive per-objective scale the preference weighs ``R / scale`` with;
            default the scenario's ``return_high - return_low``. Pass the scale a policy's
            preference refers to (e.g. ``agents.common.objective_scale(env)``) to compare
            with it per preference.

    The point for preference ``w`` is the mean over the seeds of ``argmax_{f in front_s}
    w . (f / scale)`` (ties: the first in front order): any policy's ``w . (mean return /
    scale)`` over the same episodes is at most ``w . (point / scale)``. ``mean_front``: the
    front of mean returns over the seeds (the Minkowski average of the per-seed fronts): any
    policy's mean return vector over those episodes is weakly dominated by one of its points.
    Both bounds are exact when every search is exhaustive (``exact``).
    """
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds must not be empty")
    for bad in ("num_envs", "env_index", "seed"):
        if bad in kwargs:
            raise ValueError(f"oracle_fronts sets {bad} itself (pass seeds=)")
    results = [oracle_front(scenario, seeds[0], **kwargs)]
    sc = results[0].scenario
    d = len(sc.objectives.names)
    if scale is None:
        o = sc.objectives
        scale = np.asarray(o.return_high, float) - np.asarray(o.return_low, float)
    scale = np.asarray(scale, dtype=np.float64).reshape(-1)
    if scale.shape != (d,) or not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise ValueError(f"scale must be {d} positive finite numbers, got {scale.tolist()}")
    prefs = pareto.simplex_weights(d, 11) if preferences is None else preferences
    prefs = np.asarray(prefs, dtype=np.float64)
    if (
        prefs.ndim != 2
        or prefs.shape[1] != d
        or not np.all(np.isfinite(prefs))
        or np.any(prefs < 0)
    ):
        raise ValueError(
            f"preferences must be non-negative weights of shape (P, {d}), got {prefs.tolist()}"
        )
    results += [oracle_front(scenario, s, **kwargs) for s in seeds[1:]]
    points = np.zeros((len(prefs), d))
    for r in results:
        points += r.front[np.argmax((r.front / scale) @ prefs.T, axis=0)]
    points /= len(results)
    return OracleFronts(
        results=results,
        preferences=prefs,
        points=points,
        front=pareto.pareto_front(points),
        mean_front=_minkowski_mean([r.front for r in results]),
        scale=scale,
        exact=all(r.exact for r in results),
    )


def oracle_points(scenario="tiny", seeds=(0,), preferences=None, **kwargs) -> np.ndarray:
    """(P, d): for each preference, the mean over ``seeds`` of the preference-optimal oracle
    point of each seed's episode (:func:`oracle_fronts`'s ``points``): the upper bound to set
    beside a preference-conditioned policy's mean returns per preference over the same seeds
    (``agents.evaluation.episode_returns`` with ``seed .. seed + episodes - 1``)."""
    return oracle_fronts(scenario, seeds, preferences, **kwargs).points
