"""The LLM/MoE offloading dynamics, written once and batched over a leading environment axis.

:class:`OffloadCore` holds the state of ``num_envs`` independent worlds of one scenario as compact
arrays and advances all of them with one call; the single environment is the view with
``num_envs = 1`` and the vector environment the view with many. The per-step loops over
environments, targets and slots run compiled (:mod:`mec_env._kernels`); nothing is allocated per
step.

State per environment (``R`` = slots per resource row; rows = the ``max_servers`` servers, then
one row per device for local execution):

* ``remaining_s[n, r, q]``: exclusive work left of the job in slot q (0 = empty); each row is kept
  sorted ascending, which processor sharing preserves, so advancing needs no sort;
* ``kv_bytes[n, r, q, k]``: KV held by that job on tier k, until the job ends;
* ``cache_model[n, j]``: the MoE model whose experts server j's expert cache holds (-1 none);
* ``battery_j[n, d]``; the clock ``now_s[n]``; the request counter ``t[n]``;
* a block of upcoming requests drawn from the env's Generator (arrival gap, device, model,
  lengths, channel gain), so a step only indexes arrays.

A step: replace masked parts of the plan (documented fallback), gather the plan's cost
coefficients (:mod:`mec_env.cost_model`), charge the network and processor-sharing delays, place
the job, advance every resource to the next arrival with exact processor sharing, then compute
the next request's masks and observation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from mec_env import _kernels as kern
from mec_env import network as net
from mec_env.cost_model import EXPERT_POLICIES, KV_TIERS, CostTables, build_cost_tables
from mec_env.expert_hits import steady_state_hit_rate
from mec_env.workload import load_trace, sample_requests

LOCAL_SLOTS = 4  # a device runs at most this many requests of its own at once
OBJECTIVE_INDEX = {"latency": 0, "energy": 1, "cost": 2, "accuracy": 3}
ACTION_PARTS = ("target", "split", "kv_tier", "expert_policy")
COST_NAMES = ("latency_s", "energy_j", "cost_usd", "accuracy_loss")
MAX_BLOCK = 256  # requests drawn per refill
PARALLEL_MIN_ENVS = 32  # below this, thread start-up costs more than it saves


@dataclass
class StepResult:
    """Per-environment outputs of :meth:`OffloadCore.step`: the core's reused buffers, valid
    until the next step (copy what you keep)."""

    reward: np.ndarray  # (N, num_objectives) float32, negated costs
    costs: np.ndarray  # (N, 4) float64: latency s, energy J, cost USD, accuracy loss
    plan: np.ndarray  # (N, 4) the plan executed (after fallback)
    fallback: np.ndarray  # (N, 4) bool: which parts were replaced
    rejected: np.ndarray  # (N,) bool: no target could take the request
    truncated: np.ndarray  # (N,) bool


class OffloadCore:
    """Batched simulator of one scenario. See the module docstring."""

    REQUEST_FEATURES = (  # names of obs[:15]
        "kind_dense", "kind_moe", "kind_cnn", "log_params", "active_fraction", "kv_mb_per_token",
        "log_prompt_tokens", "log_output_tokens", "device_log_flops", "device_mem_tbps",
        "battery_fraction", "local_busy_fraction", "local_open", "episode_progress",
        "log_uplink_rate",
    )  # fmt: skip
    SERVER_FEATURES_HEAD = (
        "present", "cloud", "open", "log_gpu_flops", "hbm_tbps", "log_rate", "rtt_10ms_units",
        "busy_fraction",
    )  # fmt: skip
    SERVER_FEATURES_TAIL = (
        "free_fast",
        "free_dram",
        "free_ssd",
        "free_csd",
        "hosts_model",
        "cache_holds_model",
    )

    def __init__(
        self, scenario, num_envs: int, parallel: bool | None = None, cost_features: bool = False
    ) -> None:
        """Args:
        scenario: a validated :class:`mec_env.scenario.Scenario`.
        num_envs: number of independent worlds stepped together.
        parallel: spread the envs of a step over numba's threads (the result is identical);
            None (default) does so from ``PARALLEL_MIN_ENVS`` envs up when numba has more than
            one thread (``NUMBA_NUM_THREADS``).
        cost_features: :meth:`observation` appends, to the request features (the local
            target) and to each server row, the cost model's predictions for that target
            (:meth:`target_cost_features`; not part of :attr:`obs`, which the kernels write).
        """
        if not isinstance(cost_features, (bool, np.bool_)):
            raise ValueError(f"cost_features must be a bool, got {cost_features!r}")
        self.cost_features = bool(cost_features)
        self.scenario = sc = scenario
        self.n = int(num_envs)
        if parallel is None:
            parallel = self.n >= PARALLEL_MIN_ENVS and numba.config.NUMBA_NUM_THREADS > 1
        self.parallel = bool(parallel)
        # the compiled step and its leading arguments (the threaded form takes a chunk count)
        if self.parallel:
            self._kernel, self._kernel_lead = (
                kern.step_parallel,
                (min(numba.get_num_threads(), self.n),),
            )
        else:
            self._kernel, self._kernel_lead = kern.step, ()
        self.tables: CostTables = build_cost_tables(sc, steady_state_hit_rate)
        t = self.tables
        self.num_devices = nd = len(sc.devices)
        ns_real = len(sc.servers)
        self.max_servers = S = sc.max_servers
        self.num_targets = G = S + 1
        self.num_splits = t.work_coef.shape[3]
        K, NP = len(KV_TIERS), len(EXPERT_POLICIES)
        self.nvec = np.array([G, self.num_splits, K, NP], dtype=np.int64)
        self.mask_offsets = np.concatenate([[0], np.cumsum(self.nvec)])
        self.objective_index = np.array(
            [OBJECTIVE_INDEX[o] for o in sc.objectives.names], dtype=np.int64
        )
        self.num_resources = S + nd
        slots = np.zeros(self.num_resources, dtype=np.int64)
        slots[:ns_real] = [x.max_running for x in sc.servers]
        slots[S:] = LOCAL_SLOTS
        self.slots_per_resource = slots
        self.R = int(slots.max())
        self.block_size = min(sc.episode_requests + 1, MAX_BLOCK)

        # factorised feasibility (exact: see cost_model.build_cost_tables; checked in the tests)
        f = t.feasible
        self.feas_split = f.any(axis=(4, 5))  # [d, g, m, s]
        self.feas_tp = np.concatenate(
            [f.any(axis=(0, 3, 5)), f.any(axis=(0, 3, 4))], axis=2
        )  # [g, m, k|p]
        # the tables regrouped as the kernels read them (column names in _kernels)
        shape6 = t.work_coef.shape[:6]
        cold = np.broadcast_to(t.cold_miss_s[None, :, :, None, None, :], shape6)
        self.plan_coef = np.ascontiguousarray(
            np.concatenate(
                [t.work_coef, t.energy_coef, t.accuracy_loss[..., None], cold[..., None]], axis=-1
            )
        )
        trips = np.broadcast_to(t.round_trips_coef[None, None], t.up_bytes_coef.shape[:4] + (2,))
        self.split_coef = np.ascontiguousarray(
            np.concatenate(
                [
                    t.up_bytes_coef,
                    t.kv_coef[..., None],
                    t.held_bytes[..., None],
                    t.serial_coef,
                    trips,
                ],
                axis=-1,
            )
        )

        # network and capacity per (device, target): wired bottleneck, round trip, tier capacity
        self.graph = net.build_graph(sc)
        wired_gbps, latency_s = net.wired_paths(self.graph, sc)
        self.dg = np.zeros((nd, G, kern.DG_CAP + K))
        self.dg[:, :, kern.DG_WIRED_BPS] = np.inf
        self.dg[:, 1 : ns_real + 1, kern.DG_WIRED_BPS] = wired_gbps * 8e9
        self.dg[:, 1 : ns_real + 1, kern.DG_RTT_S] = 2.0 * latency_s
        self.dg[:, :, kern.DG_LOG_WIRED] = np.minimum(
            np.log10(self.dg[:, :, kern.DG_WIRED_BPS]) / 11.0, 1.0
        )
        self.dg[:, :, kern.DG_CAP :] = t.tier_capacity_bytes
        self.res_of_target = np.empty((nd, G), dtype=np.int64)
        self.res_of_target[:, 0] = S + np.arange(nd)
        self.res_of_target[:, 1:] = np.arange(S)
        self.tgt_f = np.zeros((G, 2))
        self.tgt_f[1 : ns_real + 1, kern.TG_PRICE] = [
            x.gpu.price_per_hour_usd / 3600.0 for x in sc.servers
        ]
        self.tgt_f[1 : ns_real + 1, kern.TG_BUSY_W] = [x.gpu.power_busy_w for x in sc.servers]
        self.fp = np.zeros(kern.NUM_FP)
        self.fp[kern.FP_BANDWIDTH_HZ] = sc.network.wireless_bandwidth_hz
        self.fp[kern.FP_NOISE_W] = net.noise_power_w(sc.network)
        self.fp[kern.FP_MIN_RATE_BPS] = sc.network.min_rate_bps
        self.fp[kern.FP_PENALTY_S] = sc.rejection_penalty_s
        self.fp[kern.FP_HIST_MAX_S] = sc.histogram_max_s
        self.fp[kern.FP_EPISODE] = sc.episode_requests
        self.fp[kern.FP_NUM_SERVERS] = ns_real
        self._static_features()
        self.trace = load_trace(sc)
        self._alloc()

    def _static_features(self) -> None:
        """Per-model, per-device and per-server columns the kernels read (see _kernels)."""
        sc = self.scenario
        kinds = {"dense": 0, "moe": 1, "cnn": 2}
        mf = np.zeros((len(sc.models), kern.MF_SPLITS + 1))
        for i, m in enumerate(sc.models):
            mf[i, kinds[m.kind]] = 1.0
            mf[i, 3] = np.log10(m.params) / 12.0
            mf[i, 4] = m.active_params / m.params
            mf[i, 5] = m.kv_bytes_per_token / 1e6 if m.kind != "cnn" else 0.0
            mf[i, : kern.NUM_MODEL_FEAT] = np.clip(mf[i, : kern.NUM_MODEL_FEAT], 0.0, 1.0)
            mf[i, kern.MF_IS_MOE] = m.kind == "moe"
            mf[i, kern.MF_SPLITS] = len(m.split_points)
        self.model_f = mf
        dev = np.zeros((len(sc.devices), kern.DV_FEAT + 2))
        for i, x in enumerate(sc.devices):
            dev[i, : kern.DV_FEAT] = (
                x.tx_power_w,
                x.power_static_w,
                x.power_max_w - x.power_static_w,
                x.battery_j,
            )
            dev[i, kern.DV_FEAT] = min(np.log10(x.compute_flops) / 16.0, 1.0)
            dev[i, kern.DV_FEAT + 1] = min(x.mem_bandwidth_gbps / 1000.0, 1.0)
        self.dev_f = dev
        K = len(KV_TIERS)
        sf = np.zeros((self.max_servers, kern.SV_CAP + K + len(sc.models)))
        for j, x in enumerate(sc.servers):
            sf[j, :5] = (
                1.0,
                x.tier == "cloud",
                0.0,
                min(np.log10(x.gpu.flops) / 16.0, 1.0),
                min(x.gpu.hbm_gbps / 5000.0, 1.0),
            )
        sf[:, kern.SV_CAP : kern.SV_CAP + K] = self.dg[0, 1:, kern.DG_CAP :]  # device-independent
        sf[:, kern.SV_CAP + K :] = self.feas_split[:, 1:, :, 0].any(axis=0)  # hosts model
        self.srv_f = sf

    def observation_size(self) -> tuple[int, int, int]:
        """(request features, server rows, features per server row)."""
        per = (
            len(self.SERVER_FEATURES_HEAD)
            + self.scenario.histogram_bins
            + len(self.SERVER_FEATURES_TAIL)
        )
        return len(self.REQUEST_FEATURES), self.max_servers, per

    @property
    def num_cost_features(self) -> int:
        """Cost features per target in :meth:`observation` (0 without ``cost_features``): for
        each objective j, the costs of all O objectives of the target's plan cheapest in j
        (O x O), then for each j the cheapest target's cost in j over this target's (O)."""
        o = len(self.objective_index)
        return o * o + o if self.cost_features else 0

    def observation_layout(self) -> tuple[int, int, int]:
        """(request features, server rows, features per server row) of :meth:`observation`:
        :meth:`observation_size` plus :attr:`num_cost_features` in the request part and in
        each row."""
        nreq, ns, per = self.observation_size()
        f = self.num_cost_features
        return nreq + f, ns, per + f

    # ---------------------------------------------------------------- state
    def _alloc(self) -> None:
        n, nr, R, G = self.n, self.num_resources, self.R, self.num_targets
        K, NP = len(KV_TIERS), len(EXPERT_POLICIES)
        self.remaining_s = np.zeros((n, nr, R))
        self.kv_bytes = np.zeros((n, nr, R, K))
        self.used_bytes = np.zeros((n, nr, K))
        self.busy = np.zeros((n, nr), dtype=np.int64)
        self.cache_model = np.full((n, self.max_servers), -1, dtype=np.int64)
        self.battery_j = np.zeros((n, self.num_devices))
        # request count, position in the block, current request (device, model, P, O)
        self.env_i = np.zeros((n, 6), dtype=np.int64)
        self.distance_m = np.zeros((n, self.num_devices))
        self.shadowing_db = np.zeros((n, self.num_devices))
        self.trace_cursor = np.zeros(n, dtype=np.int64)
        self.blk_f = np.zeros((n, self.block_size, 2))  # gap s, channel gain
        self.blk_i = np.zeros((n, self.block_size, 4), dtype=np.int64)  # device, model, P, O
        self.env_f = np.zeros((n, kern.EF_RATE + G))
        self.ok_st = np.zeros((n, G, self.num_splits, K), dtype=bool)
        self.ok_p = np.zeros((n, G, NP), dtype=bool)
        self.masks = np.zeros((n, int(self.nvec.sum())), dtype=bool)
        self.flags = np.zeros((n, 3), dtype=bool)
        self.free_bytes = np.zeros((n, G, K))
        nreq, S, per = self.observation_size()
        self.obs = np.zeros((n, nreq + S * per), dtype=np.float32)
        O = len(self.objective_index)
        self.target_costs = np.full((n, G, O, O), np.inf)
        self._cost_bound = self.reward_bounds()[self.objective_index]
        nreq_c, _, per_c = self.observation_layout()
        self.obs_costs = np.zeros((n, nreq_c + S * per_c), dtype=np.float32)
        self.costs = np.zeros((n, 4))
        self.plan = np.zeros((n, 4), dtype=np.int64)
        self.fallback = np.zeros((n, 4), dtype=bool)
        self.reward = np.zeros((n, len(self.objective_index)), dtype=np.float32)
        self.result = StepResult(
            self.reward,
            self.costs,
            self.plan,
            self.fallback,
            self.flags[:, kern.FL_REJECTED],
            self.flags[:, kern.FL_TRUNCATED],
        )
        self.default_knobs = np.zeros((n, 2 + K))
        self.default_knobs[:, 0] = 1.0  # full frequency
        self.default_knobs[:, 2:] = -1.0  # one-hot tier of the action; tx power: device default
        self.all_envs = np.arange(n)
        # every array the step kernel reads or writes after (actions, nvec, knobs): built once,
        # since the arrays are only ever updated in place (saves ~1 us of attribute look-ups)
        self._kernel_rest = (
            self.block_size, self.fp, self.blk_f, self.blk_i, self.env_i, self.env_f,
            self.remaining_s, self.kv_bytes, self.used_bytes, self.busy, self.cache_model,
            self.battery_j, self.dg, self.res_of_target, self.plan_coef, self.split_coef,
            self.feas_split, self.feas_tp, self.model_f, self.dev_f, self.srv_f, self.tgt_f,
            self.slots_per_resource, self.tables.updates_cache, self.objective_index, self.ok_st,
            self.ok_p, self.masks, self.flags, self.free_bytes, self.obs, self.costs, self.plan,
            self.fallback, self.reward,
        )  # fmt: skip

    # every per-env array (leading axis = env) that makes up the state of a world, including the
    # drawn block of upcoming requests and the per-episode device placement: copying a row of
    # each copies the world (the step outputs ``costs``/``plan``/``fallback``/``reward`` are not
    # state). Used to branch worlds (mec_env.oracle).
    STATE_ARRAYS = (
        "remaining_s", "kv_bytes", "used_bytes", "busy", "cache_model", "battery_j", "env_i",
        "distance_m", "shadowing_db", "trace_cursor", "blk_f", "blk_i", "env_f", "ok_st", "ok_p",
        "masks", "flags", "free_bytes", "obs",
    )  # fmt: skip

    def get_state(self, idx=None) -> dict[str, np.ndarray]:
        """A copy of the state of the envs ``idx`` (an int array or slice; all if None): a dict
        name -> array with those rows, in order (see ``STATE_ARRAYS``)."""
        sel = slice(None) if idx is None else idx
        return {name: getattr(self, name)[sel].copy() for name in self.STATE_ARRAYS}

    def set_state(self, state: dict[str, np.ndarray], idx=None) -> None:
        """Write a :meth:`get_state` dict into the envs ``idx`` (all if None), in place; a state
        of one row is broadcast to every env selected. The scenario must be the same."""
        sel = slice(None) if idx is None else idx
        for name in self.STATE_ARRAYS:
            getattr(self, name)[sel] = state[name]
        self._update_cost_features()

    def copy_rows(self, src, dst) -> None:
        """Copy the state of envs ``src`` onto envs ``dst`` (int arrays of equal length, or an
        int and an array to broadcast one env; overlapping rows are safe)."""
        for name in self.STATE_ARRAYS:
            a = getattr(self, name)
            a[dst] = a[src]
        self._update_cost_features()

    # views by name
    @property
    def req(self) -> np.ndarray:
        """(N, 4) view of the current request: device, model, prompt tokens, output tokens."""
        return self.env_i[:, kern.RQ_DEVICE :]

    @property
    def req_device(self) -> np.ndarray:
        return self.env_i[:, kern.RQ_DEVICE]

    @property
    def req_model(self) -> np.ndarray:
        return self.env_i[:, kern.RQ_MODEL]

    @property
    def req_prompt(self) -> np.ndarray:
        return self.env_i[:, kern.RQ_PROMPT]

    @property
    def req_output(self) -> np.ndarray:
        return self.env_i[:, kern.RQ_OUTPUT]

    @property
    def t(self) -> np.ndarray:
        """Requests decided so far in the current episode, per env."""
        return self.env_i[:, kern.CT_T]

    @property
    def now_s(self) -> np.ndarray:
        return self.env_f[:, kern.EF_NOW]

    @property
    def rate_bps(self) -> np.ndarray:
        """(N, targets) path rate of the current request to each target (inf for local)."""
        return self.env_f[:, kern.EF_RATE :]

    @property
    def rejecting(self) -> np.ndarray:
        """(N,) no target can take the current request."""
        return self.flags[:, kern.FL_REJECTING]

    def reset(self, rng: np.random.Generator, which: np.ndarray | None = None) -> None:
        """Start new episodes in the environments selected by the bool mask ``which`` (all if None)."""
        idx = self.all_envs if which is None else np.flatnonzero(which)
        if idx.size == 0:
            return
        sc = self.scenario
        for a in (
            self.remaining_s,
            self.kv_bytes,
            self.used_bytes,
            self.busy,
            self.env_i,
            self.env_f,
        ):
            a[idx] = 0
        self.cache_model[idx] = -1
        self.battery_j[idx] = self.dev_f[:, kern.DV_BATTERY_J]
        self.distance_m[idx] = net.sample_distances_m(rng, sc.network, (idx.size, self.num_devices))
        self.shadowing_db[idx] = rng.normal(
            0.0, sc.network.shadowing_std_db, (idx.size, self.num_devices)
        )
        if self.trace is not None:
            self.trace_cursor[idx] = rng.integers(0, len(self.trace.time_s), idx.size)
        self._refill(rng, idx)
        self._prepare(idx, advance_first=False)
        self._update_cost_features()

    def _refill(self, rng: np.random.Generator, idx: np.ndarray) -> None:
        cursor = self.trace_cursor[idx] if self.trace is not None else None
        b = sample_requests(
            rng,
            self.scenario,
            self.block_size,
            self.distance_m[idx],
            self.shadowing_db[idx],
            cursor,
        )
        if cursor is not None:
            self.trace_cursor[idx] = cursor
        self.blk_f[idx] = np.stack([b.gap_s, b.gain], axis=-1)
        self.blk_i[idx] = np.stack([b.device, b.model, b.prompt_tokens, b.output_tokens], axis=-1)
        self.env_i[idx, kern.CT_POS] = 0

    def _prepare(self, idx: np.ndarray, advance_first: bool) -> None:
        kern.prepare(
            idx, self.fp, self.blk_f, self.blk_i, self.env_i, self.env_f,
            self.remaining_s, self.kv_bytes, self.used_bytes, self.busy, self.cache_model,
            self.battery_j, self.dg, self.res_of_target, self.split_coef, self.feas_split,
            self.feas_tp, self.model_f, self.dev_f, self.srv_f, self.slots_per_resource,
            self.ok_st, self.ok_p, self.masks, self.flags, self.free_bytes, self.obs, advance_first,
        )  # fmt: skip

    # ---------------------------------------------------------------- masks and observation
    def action_masks(self) -> np.ndarray:
        """(N, sum(nvec)) bool: the per-part masks concatenated (sb3-contrib's MultiDiscrete
        form). A view of an internal buffer: copy it to keep it past the next step."""
        return self.masks

    def part_mask(self, part: int) -> np.ndarray:
        """(N, nvec[part]) bool view of one part's mask."""
        o = self.mask_offsets
        return self.masks[:, o[part] : o[part + 1]]

    def plan_masks(self) -> np.ndarray:
        """(N, plan_mask_size) bool: the masks of the whole plan, conditional on the target (a
        copy). Three blocks, concatenated: the target mask (``nvec[0]``, as in
        :meth:`action_masks`); for each target g, its open (split, KV tier) pairs (``nvec[0] x
        nvec[1] x nvec[2]``, C order); for each target g, its open expert policies (``nvec[0] x
        nvec[3]``). Plan (g, s, k, p) is open, i.e. executed without fallback, exactly when all
        three say so (the rows of :meth:`open_plans`). When no target can take the request, only
        plan (0, 0, 0, 0) is open, as in the factorised masks."""
        n, G = self.n, self.num_targets
        st = self.ok_st.reshape(n, -1).copy()
        p = self.ok_p.reshape(n, -1).copy()
        target = self.masks[:, :G].copy()
        rejecting = self.rejecting.astype(bool)
        if rejecting.any():
            target[rejecting] = False
            target[rejecting, 0] = True
            st[rejecting] = False
            st[rejecting, 0] = True
            p[rejecting] = False
            p[rejecting, 0] = True
        return np.concatenate([target, st, p], axis=1)

    @property
    def plan_mask_size(self) -> int:
        """Length of one row of :meth:`plan_masks`."""
        G, NS, K, NP = (int(x) for x in self.nvec)
        return G + G * NS * K + G * NP

    def observe(self) -> np.ndarray:
        """(N, obs_dim) float32 in [0, 1] (a view of an internal buffer): request features,
        then one row per server slot; see ``LLMOffloadEnv``'s card for the layout."""
        return self.obs

    def observation(self) -> np.ndarray:
        """(N, obs_dim) float32 in [0, 1]: what the envs return, a view of an internal buffer.
        :attr:`obs` without ``cost_features``; with them, :attr:`obs` with
        :meth:`target_cost_features` appended to the request features (the local target) and
        to each server row (:meth:`observation_layout`)."""
        return self.obs_costs if self.cost_features else self.obs

    def target_cost_features(self) -> np.ndarray:
        """(N, targets, num_cost_features) float32 in [0, 1], from :attr:`target_costs` (the
        cost model's prediction for the current request, as greedy myopic sees it). Per
        objective j, first the costs c_i of all objectives i of the target's plan cheapest in
        j, as log1p(c_i / u_i) / log1p(1e4) with u_i = 1e-4 x the reward bound of i (1: closed
        target); then per j the cheapest open target's cost in j over this one's (1: this is
        the cheapest; 0: closed)."""
        c = self.target_costs  # (N, G, O, O)
        n, G, O, _ = c.shape
        bound = self._cost_bound
        with np.errstate(invalid="ignore", over="ignore"):
            absolute = np.log1p(c * (1e4 / bound)) / np.log1p(1e4)
        absolute = np.where(np.isfinite(absolute), np.clip(absolute, 0.0, 1.0), 1.0)
        own = c[:, :, np.arange(O), np.arange(O)]  # (N, G, O): each target's cheapest in j
        eps = bound * 1e-9
        best = own.min(axis=1, keepdims=True)
        with np.errstate(invalid="ignore"):
            ratio = np.where(np.isfinite(own), (best + eps) / (own + eps), 0.0)
        return np.concatenate(
            [absolute.reshape(n, G, O * O), np.clip(ratio, 0.0, 1.0)], axis=2
        ).astype(np.float32)

    def _update_cost_features(self) -> None:
        if not self.cost_features:
            return
        kern.target_costs(
            self.fp, self.env_i, self.env_f, self.remaining_s, self.busy, self.cache_model,
            self.dg, self.res_of_target, self.plan_coef, self.split_coef, self.model_f,
            self.dev_f, self.tgt_f, self.ok_st, self.ok_p, self.masks, self.flags,
            self.objective_index, self.target_costs,
        )  # fmt: skip
        feat = self.target_cost_features()
        nreq, S, per = self.observation_size()
        nf = feat.shape[2]
        out = self.obs_costs
        out[:, :nreq] = self.obs[:, :nreq]
        out[:, nreq : nreq + nf] = feat[:, 0]
        rows = out[:, nreq + nf :].reshape(self.n, S, per + nf)  # a view: one contiguous axis split
        rows[:, :, :per] = self.obs[:, nreq:].reshape(self.n, S, per)
        real = len(self.scenario.servers)
        rows[:, :real, per:] = feat[:, 1 : 1 + real]  # padded rows are never written: zero

    # ---------------------------------------------------------------- plans
    def open_plans(self, n: int = 0) -> np.ndarray:
        """(M, 4) every plan (target, split, tier, policy) open for env n's current request,
        parts chosen jointly (the conditional masks), in index order."""
        g, s, k = np.nonzero(self.ok_st[n] & self.part_mask(0)[n][:, None, None])
        plans = []
        for gi, si, ki in zip(g, s, k, strict=True):
            for p in np.flatnonzero(self.ok_p[n, gi]):
                plans.append((gi, si, ki, p))
        return np.array(plans, dtype=np.int64).reshape(-1, 4)

    def plan_costs(self, plans: np.ndarray, n: int = 0) -> np.ndarray:
        """(M, 4) predicted latency s, energy J, cost USD and accuracy loss of each plan for
        env n's current request, from the current state (what :meth:`step` would charge with
        the default knobs); inf for a plan that is not open. Changes nothing."""
        plans = np.ascontiguousarray(plans, dtype=np.int64).reshape(-1, 4)
        out = np.empty((plans.shape[0], 4))
        kern.plan_costs(
            n, plans, self.fp, self.env_i, self.env_f, self.remaining_s, self.busy,
            self.cache_model, self.dg, self.res_of_target, self.plan_coef, self.split_coef,
            self.model_f, self.dev_f, self.tgt_f, self.ok_st, self.ok_p, self.masks, self.flags, out,
        )  # fmt: skip
        return out

    # ---------------------------------------------------------------- step
    def step(
        self, actions: np.ndarray, rng: np.random.Generator, knobs: np.ndarray | None = None
    ) -> StepResult:
        """Apply one plan per environment and advance to the next request.

        Args:
            actions: (N, 4) int64: target, split, KV tier, expert policy; a part outside ``nvec``
                raises ValueError before anything changes.
            rng: the environments' Generator (used when a new block of requests is drawn).
            knobs: optional (N, 2 + 4) float64 continuous knobs: device frequency / max frequency
                (DVFS) in (0, 1], transmit power in W (<= 0: the device's default), and the KV
                share per tier (tiers not open for the executed plan get 0, the rest are
                renormalised; a negative first share means all on the action's tier).

        Returns:
            The core's reused :class:`StepResult` buffers (valid until the next step).
        """
        code = self._kernel(
            *self._kernel_lead, actions, self.nvec, self.default_knobs if knobs is None else knobs,
            *self._kernel_rest,
        )  # fmt: skip
        if code < 0:
            n, part = divmod(-1 - code, 4)
            raise ValueError(
                f"action[{part}] ({ACTION_PARTS[part]}) must be in [0, {self.nvec[part]}), got {actions[n, part]}"
            )
        if code:
            idx = np.flatnonzero(self.env_i[:, kern.CT_POS] >= self.block_size)
            self._refill(rng, idx)
            self._prepare(idx, advance_first=True)
        self._update_cost_features()
        return self.result

    # ---------------------------------------------------------------- reward bounds
    def reward_bounds(self) -> np.ndarray:
        """Per-request worst cost per objective (latency, energy, cost, accuracy), an upper bound
        every step's cost stays under: the reward space is [-bound, 0]."""
        sc, t = self.scenario, self.tables
        w = sc.workload
        if self.trace is None:
            p_max, o_max = float(w.prompt_tokens_max), float(w.output_tokens_max)
        else:
            p_max, o_max = (
                float(self.trace.prompt_tokens.max()),
                float(self.trace.output_tokens.max()),
            )
        x = np.array([p_max, o_max, o_max * p_max + o_max * (o_max - 1) / 2])
        f_min = min(d.freq_min_ghz / d.freq_max_ghz for d in sc.devices)
        feas = t.feasible
        work = np.where(feas, t.work_coef @ x, 0.0).max() / f_min + t.cold_miss_s.max()
        head = (t.serial_coef @ x).max() / f_min
        up = (t.up_bytes_coef @ x[:2]).max() * 8.0 / sc.network.min_rate_bps
        trips = (t.round_trips_coef @ np.array([1.0, o_max])).max() * self.dg[
            :, :, kern.DG_RTT_S
        ].max()
        latency = 2.0 * self.R * work + head + up + trips
        dev_power = max(d.power_max_w for d in sc.devices)
        tx_max = max(d.tx_power_max_w for d in sc.devices)
        energy = (
            np.where(feas, t.energy_coef @ x, 0.0).max()
            + t.cold_miss_s.max() * self.tgt_f[:, kern.TG_BUSY_W].max()
            + (work + head) * dev_power
            + up * tx_max
        )
        money = work * self.tgt_f[:, kern.TG_PRICE].max()
        accuracy = min(1.0, float(t.accuracy_loss.max()))
        bounds = np.array([max(latency, sc.rejection_penalty_s), energy, money, accuracy])
        return bounds * (1.0 + 1e-6) + 1e-9
