"""LLM/MoE offloading environments: discrete, continuous and natively batched views of one core."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from mec_env.core import ACTION_PARTS, COST_NAMES, OffloadCore
from mec_env.cost_model import EXPERT_POLICIES, KV_TIERS
from mec_env.scenario import OBJECTIVES, load_scenario

__all__ = [
    "LLMOffloadEnv",
    "LLMOffloadContinuousEnv",
    "LLMOffloadVectorEnv",
    "LLMOffloadContinuousVectorEnv",
]

INVALID_ACTION_MODES = ("fallback", "raise")


def _check_discrete_actions(actions, nvec: np.ndarray) -> np.ndarray:
    """(N, 4) int64 array of ``actions``, or ValueError naming the problem. The range of each part
    is checked by the core before it changes anything."""
    a = np.asarray(actions)
    if a.dtype.kind not in "iu" and not _integral(a):
        raise ValueError(
            f"action must be integers (target, split, kv_tier, expert_policy), got {actions!r}"
        )
    if a.shape[-1:] != (len(nvec),) or a.ndim > 2:
        raise ValueError(
            f"action must have shape ({len(nvec)},) or (N, {len(nvec)}), got shape {a.shape}"
        )
    return np.ascontiguousarray(a.reshape(-1, len(nvec)), dtype=np.int64)


def _integral(a: np.ndarray) -> bool:
    return (
        np.issubdtype(a.dtype, np.floating)
        and bool(np.all(np.isfinite(a)))
        and bool(np.all(a == np.round(a)))
    )


def continuous_action_slices(nvec: np.ndarray) -> np.ndarray:
    """Offsets of the parts of a continuous action: target, split, tier, policy scores, tx, freq."""
    return np.cumsum([0, nvec[0], nvec[1], nvec[2], nvec[3], 1, 1])


def check_continuous_actions(actions, dim: int) -> np.ndarray:
    """(N, dim) float64 of ``actions`` in [-1, 1], or ValueError naming the problem."""
    a = np.asarray(actions, dtype=np.float64)
    if a.shape[-1:] != (dim,) or a.ndim > 2 or not np.all(np.isfinite(a)):
        raise ValueError(f"action must be a finite array of shape ({dim},), got {actions!r}")
    a = a.reshape(-1, dim)
    if np.any(np.abs(a) > 1.0 + 1e-6):
        row, col = np.argwhere(np.abs(a) > 1.0 + 1e-6)[0]
        raise ValueError(f"action[{col}] must be in [-1, 1], got {a[row, col]}")
    return a


def decode_continuous(core: OffloadCore, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Plans (N, 4) and knobs (N, 6) for continuous actions ``a`` (N, dim) in [-1, 1].

    Each part is chosen among the choices open given the parts already chosen (target, then
    split, tier and policy on that target); the KV shares are a softmax (temperature 1/4) of
    the tier scores, transmit power maps [-1, 1] to [1 %, 100 %] of the device's maximum, and
    frequency to [freq_min_ghz, freq_max_ghz].
    """
    sl = continuous_action_slices(core.nvec)
    rows = np.arange(a.shape[0])
    masked = np.where(core.part_mask(0), a[:, sl[0] : sl[1]], -np.inf)
    g = np.argmax(masked, axis=1)
    splits_open = core.ok_st[rows, g].any(axis=2)
    s = np.argmax(np.where(splits_open, a[:, sl[1] : sl[2]], -np.inf), axis=1)
    tiers_open = core.ok_st[rows, g, s]
    k = np.argmax(np.where(tiers_open, a[:, sl[2] : sl[3]], -np.inf), axis=1)
    p = np.argmax(np.where(core.ok_p[rows, g], a[:, sl[3] : sl[4]], -np.inf), axis=1)
    plans = np.stack([g, s, k, p], axis=1).astype(np.int64)
    tiers = a[:, sl[2] : sl[3]]
    share = np.exp(4.0 * (tiers - tiers.max(axis=1, keepdims=True)))  # a gap of 1: ~98 % on one
    d = core.req_device
    dev = core.scenario.devices
    tx_max = np.array([x.tx_power_max_w for x in dev])[d]
    f_min = np.array([x.freq_min_ghz for x in dev])[d]
    f_max = np.array([x.freq_max_ghz for x in dev])[d]
    tx = np.maximum(0.01, (a[:, sl[4]] + 1.0) / 2.0) * tx_max
    ghz = f_min + (a[:, sl[5]] + 1.0) / 2.0 * (f_max - f_min)
    knobs = np.column_stack([ghz / f_max, tx, share / share.sum(axis=1, keepdims=True)])
    return plans, np.ascontiguousarray(knobs)


class _OffloadBase:
    """Spaces, checks and rendering shared by the single-env views."""

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def _setup(
        self, scenario, render_mode, invalid_action, num_envs, parallel=None, cost_features=False
    ):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}"
            )
        if invalid_action not in INVALID_ACTION_MODES:
            raise ValueError(
                f"invalid_action must be one of {INVALID_ACTION_MODES}, got {invalid_action!r}"
            )
        self.scenario = load_scenario(scenario)
        self.core = OffloadCore(self.scenario, num_envs, parallel, cost_features)
        self.render_mode = render_mode
        self.invalid_action = invalid_action
        nreq, ns, per = self.core.observation_layout()
        self.obs_layout = {"request": (0, nreq), "servers": (nreq, ns, per)}
        self.single_obs_space = spaces.Box(0.0, 1.0, (nreq + ns * per,), np.float32)
        bounds = self.core.reward_bounds()[self.core.objective_index]
        self.reward_space = spaces.Box(
            -bounds.astype(np.float32), np.zeros(len(bounds), np.float32), dtype=np.float32
        )
        self.reward_dim = len(bounds)
        self.objective_names = self.scenario.objectives.names
        self.objective_units = tuple(OBJECTIVES[o] for o in self.objective_names)
        self._last: dict[str, Any] | None = None

    def _info(self, result=None) -> dict[str, Any]:
        """``action_mask`` (for the next request); after a step also ``plan`` (executed),
        ``fallback`` (bool per part), ``rejected`` and ``costs`` (latency s, energy J, cost USD,
        accuracy loss: the positive per-request costs, all four whatever the objectives)."""
        c = self.core
        info: dict[str, Any] = {"action_mask": c.masks[0].copy(), "plan_mask": c.plan_masks()[0]}
        if result is not None:
            info["plan"] = result.plan[0].copy()
            info["fallback"] = result.fallback[0].copy()
            info["rejected"] = bool(result.rejected[0])
            info["costs"] = result.costs[0].copy()
        return info

    def _enforce_masks(self, a: np.ndarray) -> None:
        """``invalid_action="raise"``: a part outside the space or masked raises ValueError."""
        nvec = self.core.nvec
        for part in range(len(ACTION_PARTS)):
            value = a[0, part]
            if not 0 <= value < nvec[part]:
                raise ValueError(
                    f"action[{part}] ({ACTION_PARTS[part]}) must be in [0, {nvec[part]}), got {value}"
                )
            mask = self.core.part_mask(part)[0]
            if not mask[value]:
                raise ValueError(
                    f"action[{part}] ({ACTION_PARTS[part]}) = {value} is masked for this request "
                    f"(open: {np.flatnonzero(mask).tolist()})"
                )

    def _render_text(self, i: int = 0) -> str:
        c, sc = self.core, self.scenario
        m = sc.models[int(c.req[i, 1])]
        lines = [
            f"t={c.now_s[i]:.2f}s request {int(c.t[i])}/{sc.episode_requests}: device {int(c.req[i, 0])} "
            f"({sc.devices[int(c.req[i, 0])].name}) asks {m.name} ({m.kind}) prompt={int(c.req[i, 2])} "
            f"output={int(c.req[i, 3])}",
        ]
        if self._last is not None:
            plan = self._last["plan"]
            costs = dict(zip(COST_NAMES, self._last["costs"], strict=True))
            replaced = [p for p, f in zip(ACTION_PARTS, self._last["fallback"], strict=True) if f]
            split = sc.models[self._last["model"]].split_points
            split_name = split[plan[1]].name if plan[1] < len(split) else str(plan[1])
            target = "local" if plan[0] == 0 else sc.servers[plan[0] - 1].name
            lines.append(
                f"last plan ({sc.models[self._last['model']].name}): target={target} split={split_name} "
                f"kv={KV_TIERS[plan[2]]} experts={EXPERT_POLICIES[plan[3]]} -> "
                + ", ".join(f"{k}={v:.4g}" for k, v in costs.items())
                + (f" fallback={replaced}" if replaced else "")
            )
        for j, server in enumerate(sc.servers):
            rem = c.remaining_s[i, j]
            busy = rem[rem > 0]
            free = c.free_bytes[i, j + 1] / 1e9
            cache = c.cache_model[i, j]
            lines.append(
                f"  [{j + 1}] {server.name:<16} running {busy.size:>2}/{server.max_running} "
                f"work left {busy.sum():8.2f}s free GB fast={free[0]:.1f} dram={free[1]:.0f} ssd={free[2]:.0f} "
                f"csd={free[3]:.0f} cache={sc.models[cache].name if cache >= 0 else '-'}"
            )
        return "\n".join(lines) + "\n"


class LLMOffloadEnv(_OffloadBase, gym.Env):
    """## Description

    Each step one LLM, MoE or vision request arrives at a mobile device and the agent chooses its
    placement plan: where it runs (locally or on one of the edge/cloud servers), where the model
    is split between device and server, where the KV cache lives (GPU memory, host DRAM, an NVMe
    SSD, or a computational storage drive that computes attention in storage) and how MoE
    experts are cached (on demand, LRU, predictive prefetch, low-precision misses, misses on the
    CPU). The reward is a vector of negated costs (latency, energy and optionally money and
    accuracy loss). Dynamics: :mod:`mec_env.core`; every formula: :mod:`mec_env.cost_model`.

    ## Action space

    ``MultiDiscrete([1 + max_servers, num_splits, 4, 5])``

    | index | part | values |
    |---|---|---|
    | 0 | target | 0 = the requesting device, j = server j (padded to ``max_servers``) |
    | 1 | split | index into the model's ``split_points``; 0 = whole model on the target |
    | 2 | KV tier | 0 fast (GPU HBM / device RAM), 1 host DRAM, 2 NVMe SSD, 3 CSD (in-storage attention) |
    | 3 | expert policy | 0 on demand, 1 LRU, 2 prefetch, 3 low-precision misses, 4 misses on CPU |

    ``action_masks()`` (and ``info["action_mask"]``) gives the concatenated per-part masks of
    length ``sum(nvec)``. Parts that do not apply are masked (a dense model has only policy 0, a
    vision model only tier 0, local execution only split 0), and so are full servers and tiers
    without room for the request's KV. The masks are factorised, so a part is open when it is
    feasible with at least one open target. **Masked actions:** with ``invalid_action="fallback"``
    (default) a masked part is replaced: target -> the first open target, split -> "none", tier
    -> the fastest tier that fits, policy -> the first allowed one; ``info["fallback"]`` names the
    replaced parts. With ``invalid_action="raise"`` a masked part raises ``ValueError``. An action
    outside the space always raises ``ValueError`` naming the part and the value. When no
    target can take a request, only action 0 is open and the request is rejected with the
    scenario's ``rejection_penalty_s`` as its latency.

    ``info["plan_mask"]`` gives the masks of the whole plan, conditional on the target
    (``OffloadCore.plan_masks``): the target mask, then each target's open (split, tier) pairs,
    then each target's open expert policies. A plan is open, and runs without fallback, exactly
    when all three say so; a policy that picks the split, tier and policy given its target can
    use them to never trigger a fallback.

    ## Observation space

    ``Box(0, 1, (15 + max_servers * (14 + histogram_bins),), float32)``; ``obs_layout`` gives the
    slices. Request part (index: meaning): 0-2 model kind one-hot (dense, moe, cnn); 3 log10
    params / 12; 4 active / total params; 5 KV MB per token; 6-7 log2(prompt, output tokens + 1)
    / 21; 8 device log10 FLOP/s / 16; 9 device memory TB/s; 10 battery fraction; 11 local busy
    fraction; 12 local execution open; 13 episode progress; 14 log10 uplink bps / 11. Then one
    row per server slot (padded rows are zero, so one policy serves 1..max_servers servers):
    present, cloud, open (target mask), log10 GPU FLOP/s / 16, HBM TB/s / 5, log10 rate / 11,
    round trip in units of 10 ms, busy slots fraction, GMORL's histogram of remaining work
    (``histogram_bins`` bins over [0, ``histogram_max_s``], count / slots), free fraction per KV
    tier (fast, dram, ssd, csd), hosts the requested model, expert cache holds the requested
    model. Rows are encoded identically, so a permutation-invariant network can pool them.

    With ``cost_features=True`` (not the default) the request part (for the local target) and
    every server row end with ``O * O + O`` more entries, O the number of objectives: what the
    cost model predicts for sending the current request to that target now, the knowledge
    greedy myopic acts on (``OffloadCore.target_cost_features``): for each objective j, the
    costs of every objective of the target's open plan cheapest in j, as log1p(cost / u) /
    log1p(1e4) with u = 1e-4 x that objective's reward bound (1: closed target); then for each
    j the cheapest open target's cost in j over this target's (1: cheapest; 0: closed). The
    costs are ``OffloadCore.plan_costs``'s: all KV on the plan's tier, full device frequency,
    default transmit power (the continuous env's knobs can do better or worse).

    ## Rewards

    ``float32`` vector, one entry per ``scenario.objectives.names`` (default latency, energy),
    each the negated per-request cost: latency (s) = network + device head compute +
    processor-sharing completion + the delay this request adds to requests already running on
    the target (GMORL); energy (J) = server energy + device compute (DVFS) + radio; cost (USD) =
    GPU price x busy time; accuracy = loss from low-precision experts, bottlenecks and sparse
    attention. ``reward_space`` bounds every reward; ``reward_dim`` its length.

    ## Starting state

    Empty servers and caches, full batteries; device distances and shadowing drawn per episode.

    ## Episode end

    Never terminates; truncates after ``scenario.episode_requests`` requests.

    ## Arguments

    ``scenario`` (preset name, YAML path, mapping or Scenario; default ``"default"``),
    ``render_mode`` (``None`` or ``"ansi"``), ``invalid_action`` (``"fallback"`` or ``"raise"``),
    ``cost_features`` (``False``; ``True`` appends the cost model's predictions, above).

    ## Version history

    * v0: initial release.
    """

    def __init__(
        self,
        scenario="default",
        render_mode: str | None = None,
        invalid_action: str = "fallback",
        cost_features: bool = False,
    ) -> None:
        self._setup(scenario, render_mode, invalid_action, 1, cost_features=cost_features)
        self.observation_space = self.single_obs_space
        self.action_space = spaces.MultiDiscrete(self.core.nvec)
        self._action = np.zeros((1, len(ACTION_PARTS)), dtype=np.int64)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.core.reset(self.np_random)
        self._last = None
        return self.core.observation()[0].copy(), self._info()

    def _step(self, a: np.ndarray, knobs: np.ndarray | None = None):
        if self.invalid_action == "raise":
            self._enforce_masks(a)
        core = self.core
        model = int(core.env_i[0, 3]) if self.render_mode is not None else -1
        result = core.step(a, self.np_random, knobs)
        info = {
            "action_mask": core.masks[0].copy(),
            "plan_mask": core.plan_masks()[0],
            "plan": result.plan[0].copy(),
            "fallback": result.fallback[0].copy(),
            "rejected": bool(result.rejected[0]),
            "costs": result.costs[0].copy(),
        }
        if self.render_mode is not None:
            self._last = {
                "plan": info["plan"],
                "model": model,
                "costs": info["costs"],
                "fallback": info["fallback"],
            }
        return (
            core.observation()[0].copy(),
            result.reward[0].copy(),
            False,
            bool(result.truncated[0]),
            info,
        )

    def step(self, action):
        a = self._action
        if type(action) is np.ndarray and action.dtype == np.int64 and action.shape == (4,):
            a[0] = action  # fast path; the core checks the range
        else:
            a = _check_discrete_actions(action, self.core.nvec)
            if np.shape(action) != (len(ACTION_PARTS),):
                raise ValueError(
                    f"action must have shape ({len(ACTION_PARTS)},), got shape {np.shape(action)}"
                )
        return self._step(a)

    def action_masks(self) -> np.ndarray:
        """Concatenated per-part masks (sb3-contrib MaskablePPO's MultiDiscrete format)."""
        return self.core.masks[0].copy()

    def render(self):
        if self.render_mode == "ansi":
            return self._render_text()
        return None


class LLMOffloadContinuousEnv(LLMOffloadEnv):
    """The same dynamics as ``LLMOffload-v0`` with a ``Box(-1, 1)`` action (for DDPG).

    ## Action space

    ``Box(-1, 1, (1 + max_servers + num_splits + 4 + 5 + 2,), float32)``, decoded into a plan:

    | slice | meaning |
    |---|---|
    | target scores (1 + max_servers) | the highest-scoring *open* target runs the request |
    | split scores (num_splits) | the highest-scoring split open on that target |
    | KV tier scores (4) | softmax (temperature 1/4) over the tiers open for that target and split = the share of KV on each tier (tiers scan their share in parallel; partial attention merges exactly) |
    | expert policy scores (5) | the highest-scoring policy open on that target |
    | transmit power (1) | [-1, 1] -> [0, tx_power_max_w] of the device (floored at 1 % of max) |
    | device frequency (1) | [-1, 1] -> [freq_min_ghz, freq_max_ghz] (DVFS; power static + dynamic x (f/f_max)^3) |

    Decoding picks each part among the choices open given the parts already picked, so the
    continuous env never falls back (unless the request is rejected). Everything else
    (observation, rewards, episode) is as in ``LLMOffload-v0``.
    """

    def __init__(
        self, scenario="default", render_mode: str | None = None, cost_features: bool = False
    ) -> None:
        super().__init__(scenario, render_mode, "fallback", cost_features)
        self.slices = continuous_action_slices(self.core.nvec)
        self.action_space = spaces.Box(-1.0, 1.0, (int(self.slices[-1]),), np.float32)

    def decode(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The plan (1, 4) and the knobs (1, 6): frequency ratio, transmit power W, KV shares."""
        if np.shape(action) != self.action_space.shape:
            raise ValueError(
                f"action must have shape {self.action_space.shape}, got shape {np.shape(action)}"
            )
        return decode_continuous(
            self.core, check_continuous_actions(action, self.action_space.shape[0])
        )

    def step(self, action):
        plan, knobs = self.decode(action)
        return self._step(plan, knobs)


class LLMOffloadVectorEnv(gym.vector.VectorEnv):
    """``num_envs`` copies of ``LLMOffload-v0`` stepped as one batch by the same core.

    Rewards have shape ``(num_envs, reward_dim)``. Autoreset follows Gymnasium's default
    NEXT_STEP mode: the step after an episode ends resets that sub-environment (its action is
    ignored, its reward is 0). ``action_masks()`` returns ``(num_envs, sum(nvec))``. All
    sub-environments draw from one Generator seeded by ``reset(seed=int)``; ``reset(seed=[s_0,
    ..., s_{n-1}])`` gives each sub-environment its own Generator instead, so sub-environment
    i plays exactly the episodes a single ``LLMOffload-v0`` reset with ``s_i`` plays (with
    equal seeds, every sub-environment plays the same episode: the evaluation protocol).

    ``parallel``: spread the sub-environments of a step over numba's threads (identical
    results); default: from 32 envs up when numba has more than one thread.
    """

    metadata = {"render_modes": ["ansi"], "autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}
    continuous = False

    def __init__(
        self,
        num_envs: int = 8,
        scenario="default",
        render_mode: str | None = None,
        invalid_action: str = "fallback",
        parallel: bool | None = None,
        cost_features: bool = False,
    ) -> None:
        if (
            isinstance(num_envs, bool)
            or not isinstance(num_envs, (int, np.integer))
            or num_envs < 1
        ):
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        self._base = _OffloadBase()
        self._base.metadata = LLMOffloadEnv.metadata
        self._base._setup(
            scenario, render_mode, invalid_action, int(num_envs), parallel, cost_features
        )
        self.core = self._base.core
        self.scenario = self._base.scenario
        self.num_envs = int(num_envs)
        self.render_mode = render_mode
        self.single_observation_space = self._base.single_obs_space
        if self.continuous:
            dim = int(continuous_action_slices(self.core.nvec)[-1])
            self.single_action_space = spaces.Box(-1.0, 1.0, (dim,), np.float32)
        else:
            self.single_action_space = spaces.MultiDiscrete(self.core.nvec)
        self.observation_space = gym.vector.utils.batch_space(
            self.single_observation_space, self.num_envs
        )
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        self.reward_space = self._base.reward_space
        self.reward_dim = self._base.reward_dim
        self.objective_names = self._base.objective_names
        self._autoreset = np.zeros(self.num_envs, dtype=bool)
        self._terminated = np.zeros(self.num_envs, dtype=bool)  # episodes never terminate
        self._rng = np.random.default_rng()
        self._rngs: list[np.random.Generator] | None = None  # per-sub-env seeds

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        if seed is not None and not isinstance(seed, (int, np.integer)):
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"seed must be an int or {self.num_envs} ints, got {seed!r}")
            if self.core.block_size <= self.scenario.episode_requests:
                raise ValueError(
                    f"per-sub-env seeds need episode_requests < {self.core.block_size}, got {self.scenario.episode_requests}"
                )
            self._rngs = [np.random.default_rng(s) for s in seeds]
        elif seed is not None:
            self._rng = np.random.default_rng(seed)
            self._rngs = None
        self._reset_rows(np.ones(self.num_envs, bool))
        self._autoreset[:] = False
        return self.core.observation().copy(), {
            "action_mask": self.core.masks.copy(),
            "plan_mask": self.core.plan_masks(),
        }

    def _reset_rows(self, which: np.ndarray) -> None:
        if self._rngs is None:
            self.core.reset(self._rng, None if which.all() else which)
            return
        # each sub-env from its own Generator; a whole episode is drawn at reset
        # (block_size > episode_requests), so step never draws from self._rng
        for i in np.flatnonzero(which):
            one = np.zeros(self.num_envs, bool)
            one[i] = True
            self.core.reset(self._rngs[i], one)

    def step(self, actions):
        if self.continuous:
            a = check_continuous_actions(actions, self.single_action_space.shape[0])
            if a.shape[0] != self.num_envs:
                raise ValueError(f"actions must have {self.num_envs} rows, got {a.shape[0]}")
            plans, knobs = decode_continuous(self.core, a)
            return self._finish(self.core.step(plans, self._rng, knobs))
        a = _check_discrete_actions(actions, self.core.nvec)
        if a.shape[0] != self.num_envs:
            raise ValueError(f"actions must have {self.num_envs} rows, got {a.shape[0]}")
        if self.invalid_action_raise:
            bad = (a < 0) | (a >= self.core.nvec)
            if bad.any():
                row, col = np.argwhere(bad)[0]
                raise ValueError(
                    f"actions[{row}, {col}] ({ACTION_PARTS[col]}) must be in [0, {self.core.nvec[col]}), got {a[row, col]}"
                )
            offsets = self.core.mask_offsets[:-1]
            bad = (
                ~self.core.masks[np.arange(self.num_envs)[:, None], a + offsets]
                & ~self._autoreset[:, None]
            )
            if bad.any():
                row, col = np.argwhere(bad)[0]
                raise ValueError(
                    f"actions[{row}, {col}] ({ACTION_PARTS[col]}) = {a[row, col]} is masked"
                )
        return self._finish(self.core.step(a, self._rng))

    def _finish(self, result):
        reward = result.reward.copy()
        truncated = result.truncated.copy()
        if self._autoreset.any():
            reward[self._autoreset] = 0.0
            truncated[self._autoreset] = False
            self._reset_rows(self._autoreset)
        self._autoreset = truncated.copy()
        info = {
            "action_mask": self.core.masks.copy(),
            "plan_mask": self.core.plan_masks(),
            "rejected": result.rejected.copy(),
            "costs": result.costs.copy(),
            "plan": result.plan.copy(),
            "fallback": result.fallback.copy(),
        }
        return self.core.observation().copy(), reward, self._terminated.copy(), truncated, info

    @property
    def invalid_action_raise(self) -> bool:
        return self._base.invalid_action == "raise"

    def action_masks(self) -> np.ndarray:
        return self.core.masks.copy()

    def render(self):
        if self.render_mode == "ansi":
            return "".join(
                f"--- env {i}\n" + self._base._render_text(i) for i in range(self.num_envs)
            )
        return None


class LLMOffloadContinuousVectorEnv(LLMOffloadVectorEnv):
    """``num_envs`` copies of ``LLMOffloadContinuous-v0`` stepped as one batch (see
    :class:`LLMOffloadVectorEnv`); actions (num_envs, dim) in [-1, 1] decode as in the single
    continuous env."""

    continuous = True
