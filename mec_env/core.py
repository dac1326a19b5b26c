"""The LLM/MoE offloading dynamics, written once and batched over a leading environment axis.

:class:`OffloadCore` holds the state of ``num_envs`` independent worlds of one scenario as compact
arrays and advances all of them with one call; the single environment is the view with
``num_envs = 1`` and the vector environment the view with many. No step loops in Python over
environments, requests, servers or slots.

State per environment (``R`` = slots per resource; resources = the ``max_servers`` server rows,
then one row per device for local execution):

* ``remaining_s[n, r, k]``: exclusive work left of the job in slot k (0 = empty); each row is kept
  sorted ascending, which processor sharing preserves, so advancing needs no sort;
* ``kv_bytes[n, r, k]`` / ``kv_tier[n, r, k]``: KV held by that job and the tier it sits on, held
  until the job ends;
* ``cache_model[n, s]``: the MoE model whose experts server s's expert cache holds (-1 none);
* ``battery_j[n, d]``; the clock ``now_s[n]``; the request counter ``t[n]``;
* a block of upcoming requests drawn at reset (arrival gap, device, model, lengths, channel gain).

A step: decode the plan (target, split, KV tier, expert policy), apply the documented fallback to
any masked part, gather the plan's cost coefficients (:mod:`mec_env.cost_model`), charge the
network and processor-sharing delays, place the job, then advance every resource to the next
arrival with exact processor sharing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mec_env import network as net
from mec_env.cost_model import (
    EXPERT_POLICIES,
    KV_TIERS,
    CostTables,
    build_cost_tables,
    ps_advance,
    ps_own_and_added_s,
)
from mec_env.expert_hits import steady_state_hit_rate
from mec_env.workload import load_trace, sample_requests

LOCAL_SLOTS = 4  # a device runs at most this many requests of its own at once
OBJECTIVE_INDEX = {"latency": 0, "energy": 1, "cost": 2, "accuracy": 3}
ACTION_PARTS = ("target", "split", "kv_tier", "expert_policy")


@dataclass
class StepResult:
    """Per-environment outputs of :meth:`OffloadCore.step` (arrays with leading axis N)."""

    reward: np.ndarray  # (N, num_objectives) float32, negated costs
    costs: np.ndarray  # (N, 4) float64: latency s, energy J, cost USD, accuracy loss
    plan: np.ndarray  # (N, 4) the plan executed (after fallback)
    fallback: np.ndarray  # (N, 4) bool: which parts were replaced
    rejected: np.ndarray  # (N,) bool: no target could take the request
    truncated: np.ndarray  # (N,) bool


class OffloadCore:
    """Batched simulator of one scenario. See the module docstring."""

    def __init__(self, scenario, num_envs: int, block_size: int = 256) -> None:
        self.scenario = sc = scenario
        self.n = n = int(num_envs)
        self.tables: CostTables = build_cost_tables(sc, steady_state_hit_rate)
        t = self.tables
        self.num_devices = nd = len(sc.devices)
        self.num_servers = ns_real = len(sc.servers)
        self.max_servers = S = sc.max_servers
        self.num_targets = S + 1
        self.num_splits = t.work_coef.shape[3]
        self.nvec = np.array(
            [S + 1, self.num_splits, len(KV_TIERS), len(EXPERT_POLICIES)], dtype=np.int64
        )
        self.objective_index = np.array([OBJECTIVE_INDEX[o] for o in sc.objectives.names])
        self.num_resources = S + nd
        slots = np.zeros(self.num_resources, dtype=np.int64)
        slots[:ns_real] = [s.max_running for s in sc.servers]
        slots[S:] = LOCAL_SLOTS
        self.slots_per_resource = slots
        self.R = R = int(slots.max())
        self.block_size = int(min(block_size, sc.episode_requests))

        # factorised feasibility (exact: see cost_model; checked in the tests)
        f = t.feasible
        self.feas_split = f.any(axis=(4, 5))  # [d, tgt, m, s]
        self.feas_tier = f.any(axis=(0, 3, 5))  # [tgt, m, tier]
        self.feas_policy = f.any(axis=(0, 3, 4))  # [tgt, m, p]
        self.kv_coef = t.kv_coef.max(axis=(4, 5))  # [d, tgt, m, s]

        # network constants: per (device, target)
        graph = net.build_graph(sc)
        self.graph = graph
        wired_gbps, latency_s = net.wired_paths(graph, sc)
        self.wired_bps = np.full((nd, S + 1), np.inf)
        self.wired_bps[:, 1 : ns_real + 1] = wired_gbps * 8e9
        self.rtt_s = np.zeros((nd, S + 1))
        self.rtt_s[:, 1 : ns_real + 1] = 2.0 * latency_s
        self.tx_power_w = np.array([d.tx_power_w for d in sc.devices])
        self.noise_w = net.noise_power_w(sc.network)
        self.price_per_s = np.zeros(S + 1)
        self.price_per_s[1 : ns_real + 1] = [x.gpu.price_per_hour_usd / 3600.0 for x in sc.servers]
        self.device_static_w = np.array([x.power_static_w for x in sc.devices])
        self.device_dynamic_w = np.array([x.power_max_w - x.power_static_w for x in sc.devices])
        self.busy_power_w = np.zeros(S + 1)
        self.busy_power_w[1 : ns_real + 1] = [x.gpu.power_busy_w for x in sc.servers]
        self.server_present = np.zeros(S, dtype=bool)
        self.server_present[:ns_real] = True

        # resource row of each target, per device: target 0 -> the device's own row
        self.res_of_target = np.empty((nd, S + 1), dtype=np.int64)
        self.res_of_target[:, 0] = S + np.arange(nd)
        self.res_of_target[:, 1:] = np.arange(S)
        self.cap = t.tier_capacity_bytes  # [d, tgt, tier]
        self.is_moe = np.array([m.kind == "moe" for m in sc.models])
        self.trace = load_trace(sc)
        self.battery_full_j = np.array([x.battery_j for x in sc.devices])
        self._alloc()

    # ---------------------------------------------------------------- state
    def _alloc(self) -> None:
        n, nr, R = self.n, self.num_resources, self.R
        self.remaining_s = np.zeros((n, nr, R))
        self.kv_bytes = np.zeros((n, nr, R, len(KV_TIERS)))
        self.cache_model = np.full((n, self.max_servers), -1, dtype=np.int64)
        self.battery_j = np.zeros((n, self.num_devices))
        self.now_s = np.zeros(n)
        self.t = np.zeros(n, dtype=np.int64)
        self.distance_m = np.zeros((n, self.num_devices))
        self.shadowing_db = np.zeros((n, self.num_devices))
        self.trace_cursor = np.zeros(n, dtype=np.int64)
        self.block_pos = np.zeros(n, dtype=np.int64)
        k = self.block_size
        self.blk_gap = np.zeros((n, k))
        self.blk_device = np.zeros((n, k), dtype=np.int64)
        self.blk_model = np.zeros((n, k), dtype=np.int64)
        self.blk_prompt = np.zeros((n, k), dtype=np.int64)
        self.blk_output = np.ones((n, k), dtype=np.int64)
        self.blk_gain = np.ones((n, k))
        self.rows = np.arange(n)

    def reset(self, rng: np.random.Generator, which: np.ndarray | None = None) -> None:
        """Start new episodes in the environments selected by the bool mask ``which`` (all if None)."""
        idx = np.arange(self.n) if which is None else np.flatnonzero(which)
        if idx.size == 0:
            return
        sc = self.scenario
        self.remaining_s[idx] = 0.0
        self.kv_bytes[idx] = 0.0
        self.cache_model[idx] = -1
        self.battery_j[idx] = [d.battery_j for d in sc.devices]
        self.now_s[idx] = 0.0
        self.t[idx] = 0
        self.distance_m[idx] = net.sample_distances_m(rng, sc.network, (idx.size, self.num_devices))
        self.shadowing_db[idx] = rng.normal(
            0.0, sc.network.shadowing_std_db, (idx.size, self.num_devices)
        )
        if self.trace is not None:
            self.trace_cursor[idx] = rng.integers(0, len(self.trace.time_s), idx.size)
        self._refill(rng, idx)
        self._set_current()

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
        self.blk_gap[idx] = b.gap_s
        self.blk_device[idx] = b.device
        self.blk_model[idx] = b.model
        self.blk_prompt[idx] = b.prompt_tokens
        self.blk_output[idx] = b.output_tokens
        self.blk_gain[idx] = b.gain
        self.block_pos[idx] = 0

    def _set_current(self) -> None:
        """Expose the request at the head of each block as ``self.req_*``; compute its masks."""
        r, p = self.rows, self.block_pos
        self.req_device = d = self.blk_device[r, p]
        self.req_model = m = self.blk_model[r, p]
        self.req_prompt = self.blk_prompt[r, p]
        self.req_output = self.blk_output[r, p]
        self.req_gain = gain = self.blk_gain[r, p]
        wireless = self.scenario.network.wireless_bandwidth_hz * np.log2(
            1.0 + self.tx_power_w[d] * gain / self.noise_w
        )
        wireless = np.maximum(wireless, self.scenario.network.min_rate_bps)
        self.req_rate_bps = np.minimum(wireless[:, None], self.wired_bps[d])  # [n, tgt]
        self.req_rate_bps[:, 0] = np.inf
        self.req_res = self.res_of_target[d]  # [n, tgt] resource row
        self._compute_masks()

    def _compute_masks(self) -> None:
        d, m = self.req_device, self.req_model
        r = self.rows
        tokens = (self.req_prompt + self.req_output).astype(float)
        # capacity left per (target, tier) and slot availability
        res = self.req_res
        rem = self.remaining_s[r[:, None], res]  # [n, tgt, R]
        used = self.kv_bytes[r[:, None], res].sum(axis=2)  # [n, tgt, tier]
        free = self.cap[d] - used
        busy = (rem > 0).sum(-1)
        slot_free = busy < self.slots_per_resource[res]
        need = self.kv_coef[d, :, m] * tokens[:, None, None]  # [n, tgt, s]
        ok_st = (
            self.feas_split[d, :, m][..., None]
            & self.feas_tier[:, m].transpose(1, 0, 2)[:, :, None, :]
        )
        ok_st &= need[..., None] <= free[:, :, None, :]
        ok_st &= slot_free[:, :, None, None]
        ok_p = self.feas_policy[:, m].transpose(1, 0, 2)  # [n, tgt, p]
        target_ok = ok_st.any(axis=(2, 3)) & ok_p.any(axis=2)
        self.ok_st, self.ok_p = ok_st, ok_p
        self.busy = busy
        self.free_bytes = free
        self.rejecting = ~target_ok.any(axis=1)
        tm = target_ok.copy()
        tm[self.rejecting, 0] = True  # documented: only action 0 stays open; the step rejects
        self.mask_target = tm
        valid = target_ok[:, :, None]
        self.mask_split = (ok_st.any(axis=3) & valid).any(axis=1)
        self.mask_tier = (ok_st.any(axis=2) & valid).any(axis=1)
        self.mask_policy = (ok_p & valid).any(axis=1)
        for mk in (self.mask_split, self.mask_tier, self.mask_policy):
            mk[self.rejecting, 0] = True

    def action_masks(self) -> np.ndarray:
        """(N, sum(nvec)) bool: the per-part masks concatenated (sb3-contrib's MultiDiscrete form)."""
        return np.concatenate(
            [self.mask_target, self.mask_split, self.mask_tier, self.mask_policy], axis=1
        )

    # ---------------------------------------------------------------- step
    def _fallback(self, plan: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Replace masked parts: target -> the first open target (local first); split -> the
        chosen one if it has a feasible tier, else 'none'; tier -> the chosen one if it fits,
        else the fastest that fits; policy -> the chosen one if allowed, else the first allowed."""
        r = self.rows
        tgt, s, k, p = plan.T
        fb = np.zeros(plan.shape, dtype=bool)
        t_ok = self.mask_target[r, tgt] & ~self.rejecting
        fb[:, 0] = ~self.mask_target[r, tgt]
        tgt = np.where(t_ok | self.rejecting, tgt, np.argmax(self.mask_target, axis=1))
        tgt = np.where(self.rejecting, 0, tgt)
        st = self.ok_st[r, tgt]  # [n, s, tier]
        s_ok = st[r, s].any(axis=1)
        fb[:, 1] = ~s_ok
        s = np.where(s_ok, s, np.argmax(st.any(axis=2), axis=1))
        tiers = st[r, s]
        k_ok = tiers[r, k]
        fb[:, 2] = ~k_ok
        k = np.where(k_ok, k, np.argmax(tiers, axis=1))
        pol = self.ok_p[r, tgt]
        p_ok = pol[r, p]
        fb[:, 3] = ~p_ok
        p = np.where(p_ok, p, np.argmax(pol, axis=1))
        fb &= ~self.rejecting[:, None]
        return np.stack([tgt, s, k, p], axis=1), fb

    def step(
        self,
        actions: np.ndarray,
        rng: np.random.Generator,
        tier_fraction: np.ndarray | None = None,
        tx_power_w: np.ndarray | None = None,
        freq_ratio: np.ndarray | None = None,
    ) -> StepResult:
        """Apply one plan per environment and advance to the next request.

        Args:
            actions: (N, 4) ints inside ``nvec``: target, split, KV tier, expert policy.
            rng: the environments' Generator (used when a new block of requests is drawn).
            tier_fraction: optional (N, 4) share of the KV on each tier (continuous variant);
                tiers not open for the executed plan get 0, the rest are renormalised; when nothing
                is left the executed tier gets all. Default: all on the action's tier.
            tx_power_w: optional (N,) transmit power, default the device's ``tx_power_w``.
            freq_ratio: optional (N,) device frequency / max frequency (DVFS) in (0, 1].
        """
        sc = self.scenario
        r = self.rows
        plan, fallback = self._fallback(np.asarray(actions, dtype=np.int64))
        tgt, s, k, p = plan.T
        d, m = self.req_device, self.req_model
        P, O = self.req_prompt.astype(float), self.req_output.astype(float)
        C = O * P + O * (O - 1.0) / 2.0
        x = np.stack([P, O, C], axis=1)  # [n, 3]
        t = self.tables
        # KV share per tier: only tiers open for (target, split) of the executed plan
        open_tiers = self.ok_st[r, tgt, s]  # [n, tier]
        onehot = np.zeros((self.n, len(KV_TIERS)))
        onehot[r, k] = 1.0
        if tier_fraction is None:
            frac = onehot
        else:
            frac = np.where(open_tiers, np.clip(tier_fraction, 0.0, None), 0.0)
            total = frac.sum(axis=1, keepdims=True)
            frac = np.where(total > 0, frac / np.where(total > 0, total, 1.0), onehot)
        freq = np.ones(self.n) if freq_ratio is None else np.asarray(freq_ratio, dtype=float)
        tx = self.tx_power_w[d] if tx_power_w is None else np.asarray(tx_power_w, dtype=float)
        # exclusive work on the target: tiers scan their KV share in parallel (split-KV attention)
        wc = t.work_coef[d, tgt, m, s, :, p]  # [n, tier, 3]
        work = (
            np.einsum("nk,nk->n", frac, wc[:, :, 0]) * P
            + np.einsum("nk,nk->n", frac, wc[:, :, 1]) * O
            + (frac * wc[:, :, 2]).max(axis=1) * C
        )
        local = tgt == 0
        work = np.where(local, work / freq, work)
        cold = self.is_moe[m] & ~local & (self.cache_model[r, np.maximum(tgt - 1, 0)] != m)
        cold_s = np.where(cold, t.cold_miss_s[tgt, m, p], 0.0)
        work = work + cold_s
        server_j = (
            np.einsum("nk,nkc,nc->n", frac, t.energy_coef[d, tgt, m, s, :, p], x)
            + cold_s * self.busy_power_w[tgt]
        )
        head_s = np.einsum("nc,nc->n", t.serial_coef[d, tgt, m, s, k, p], x) / freq
        dev_power = self.device_static_w[d] + self.device_dynamic_w[d] * freq**3  # DVFS cube law
        money = work * self.price_per_s[tgt]
        accuracy = t.accuracy_loss[d, tgt, m, s, k, p]
        # network: uplink bytes at the path rate, and the round trips a split pays per token
        up_bytes = np.einsum("nc,nc->n", t.up_bytes_coef[d, tgt, m, s], x[:, :2])
        wireless = sc.network.wireless_bandwidth_hz * np.log2(
            1.0 + tx * self.req_gain / self.noise_w
        )
        rate = np.minimum(np.maximum(wireless, sc.network.min_rate_bps), self.wired_bps[d, tgt])
        up_s = np.where(local, 0.0, up_bytes * 8.0 / rate)
        trips = t.round_trips_coef[m, s, 0] + t.round_trips_coef[m, s, 1] * O
        net_s = up_s + trips * self.rtt_s[d, tgt]
        device_j = np.where(local, work * dev_power, head_s * dev_power) + up_s * tx
        # processor sharing on the target resource
        res = self.req_res[r, tgt]
        own, added = ps_own_and_added_s(self.remaining_s[r, res], work)
        rej = self.rejecting
        costs = np.stack(
            [
                own + added + head_s + net_s,
                np.where(local, 0.0, server_j) + device_j,
                money,
                accuracy,
            ],
            axis=1,
        )
        costs[rej] = (sc.rejection_penalty_s, 0.0, 0.0, 0.0)
        # place the job (rows stay sorted ascending, empties first)
        place = ~rej
        kv_total = self.kv_coef[d, tgt, m, s] * (P + O)
        self._insert(res, work, kv_total, frac, place)
        moe_cached = place & self.is_moe[m] & ~local & t.updates_cache[p]
        self.cache_model[r[moe_cached], tgt[moe_cached] - 1] = m[moe_cached]
        self.battery_j[r, d] = np.maximum(
            self.battery_j[r, d] - np.where(place, device_j, 0.0), 0.0
        )
        # next request and time advance
        self.t += 1
        self.block_pos += 1
        need = self.block_pos >= self.block_size
        if need.any():
            self._refill(rng, np.flatnonzero(need))
        gap = self.blk_gap[r, self.block_pos]
        self.now_s += gap
        self.remaining_s = ps_advance(self.remaining_s, gap[:, None], presorted=True)
        self.kv_bytes *= (self.remaining_s > 0.0)[..., None]
        self._set_current()
        reward = (-costs[:, self.objective_index]).astype(np.float32)
        plan[:, 2] = np.where(tier_fraction is None, plan[:, 2], frac.argmax(axis=1))
        return StepResult(reward, costs, plan, fallback, rej, self.t >= sc.episode_requests)

    def _insert(self, res, work, kv_total, frac, place) -> None:
        """Insert each placed job into an empty slot of its row, keeping the row sorted."""
        r = self.rows[place]
        res = res[place]
        rem = self.remaining_s[r, res]  # [n', R]
        kvb = self.kv_bytes[r, res]  # [n', R, tier]
        # sorted with empties first, and the mask guaranteed a free slot: slot 0 is empty
        rem[:, 0] = work[place]
        kvb[:, 0] = kv_total[place, None] * frac[place]
        order = np.argsort(rem, axis=1, kind="stable")
        self.remaining_s[r, res] = np.take_along_axis(rem, order, axis=1)
        self.kv_bytes[r, res] = np.take_along_axis(kvb, order[..., None], axis=1)

    # ---------------------------------------------------------------- observation
    REQUEST_FEATURES = (
        "kind_dense",
        "kind_moe",
        "kind_cnn",
        "log_params",
        "active_fraction",
        "kv_mb_per_token",
        "log_prompt_tokens",
        "log_output_tokens",
        "device_log_flops",
        "device_mem_tbps",
        "battery_fraction",
        "local_busy_fraction",
        "local_feasible",
        "episode_progress",
        "log_uplink_rate",
    )
    SERVER_FEATURES_HEAD = (
        "present",
        "cloud",
        "open",
        "log_gpu_flops",
        "hbm_tbps",
        "log_rate",
        "rtt_10ms_units",
        "busy_fraction",
    )
    SERVER_FEATURES_TAIL = (
        "free_fast",
        "free_dram",
        "free_ssd",
        "free_csd",
        "hosts_model",
        "cache_holds_model",
    )

    def observation_size(self) -> tuple[int, int, int]:
        """(request features, server rows, features per server row)."""
        per = (
            len(self.SERVER_FEATURES_HEAD)
            + self.scenario.histogram_bins
            + len(self.SERVER_FEATURES_TAIL)
        )
        return len(self.REQUEST_FEATURES), self.max_servers, per

    def _static_features(self) -> None:
        sc = self.scenario
        kinds = {"dense": 0, "moe": 1, "cnn": 2}
        mf = np.zeros((len(sc.models), 6))
        for i, m in enumerate(sc.models):
            mf[i, kinds[m.kind]] = 1.0
            mf[i, 3] = np.log10(m.params) / 12.0
            mf[i, 4] = m.active_params / m.params
            mf[i, 5] = m.kv_bytes_per_token / 1e6 if m.kind != "cnn" else 0.0
        self.model_features = np.clip(mf, 0.0, 1.0)
        self.device_features = np.clip(
            np.array(
                [
                    [np.log10(x.compute_flops) / 16.0, x.mem_bandwidth_gbps / 1000.0]
                    for x in sc.devices
                ]
            ),
            0.0,
            1.0,
        )
        sf = np.zeros((self.max_servers, 5))
        for j, x in enumerate(sc.servers):
            sf[j] = (
                1.0,
                x.tier == "cloud",
                0.0,
                np.log10(x.gpu.flops) / 16.0,
                x.gpu.hbm_gbps / 5000.0,
            )
        self.server_static = np.clip(sf, 0.0, 1.0)
        self.hosts = self.feas_split[:, 1:, :, 0].any(axis=0)  # [server, model]
        cap = self.cap[0, 1:]  # [server, tier]: server capacities do not depend on the device
        self.cap_server = np.where(cap > 0, cap, 1.0)
        self.has_tier = cap > 0

    def observe(self) -> np.ndarray:
        """(N, obs_dim) float32 in [0, 1]: request features, then one row per server slot."""
        if not hasattr(self, "model_features"):
            self._static_features()
        sc = self.scenario
        r, d, m = self.rows, self.req_device, self.req_model
        S, B = self.max_servers, sc.histogram_bins
        nreq, _, per = self.observation_size()
        obs = np.zeros((self.n, nreq + S * per), dtype=np.float32)
        req = obs[:, :nreq]
        req[:, 0:6] = self.model_features[m]
        req[:, 6] = np.log2(self.req_prompt + 1.0) / 21.0
        req[:, 7] = np.log2(self.req_output + 1.0) / 21.0
        req[:, 8:10] = self.device_features[d]
        req[:, 10] = self.battery_j[r, d] / self.battery_full_j[d]
        req[:, 11] = self.busy[:, 0] / LOCAL_SLOTS
        req[:, 12] = self.mask_target[:, 0] & ~self.rejecting
        req[:, 13] = np.minimum(self.t / sc.episode_requests, 1.0)
        edge_rate = self.req_rate_bps[:, 1:].min(axis=1) if S else np.ones(self.n)
        req[:, 14] = np.log10(edge_rate) / 11.0
        srv = obs[:, nreq:].reshape(self.n, S, per)
        nh = len(self.SERVER_FEATURES_HEAD)
        srv[:, :, 0:5] = self.server_static
        srv[:, :, 2] = self.mask_target[:, 1:] & ~self.rejecting[:, None]
        srv[:, :, 5] = np.log10(np.minimum(self.req_rate_bps[:, 1:], 1e11)) / 11.0
        srv[:, :, 6] = self.rtt_s[d, 1:] * 100.0
        srv[:, :, 7] = self.busy[:, 1:] / np.maximum(self.slots_per_resource[:S], 1)
        # histogram of remaining work per server (GMORL): counts per bin / slots
        rem = self.remaining_s[:, :S]
        bins = np.minimum((rem * (B / sc.histogram_max_s)).astype(np.int64), B - 1)
        flat = ((r[:, None, None] * S + np.arange(S)[None, :, None]) * B + bins)[rem > 0]
        hist = np.bincount(flat, minlength=self.n * S * B).reshape(self.n, S, B)
        srv[:, :, nh : nh + B] = hist / np.maximum(self.slots_per_resource[:S], 1)[:, None]
        free = self.free_bytes[:, 1:] / self.cap_server  # [n, S, tier]
        srv[:, :, nh + B : nh + B + 4] = np.where(self.has_tier, free, 0.0)
        srv[:, :, nh + B + 4] = self.hosts[:, m].T
        srv[:, :, nh + B + 5] = self.cache_model == m[:, None]
        np.clip(obs, 0.0, 1.0, out=obs)
        return obs

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
        head = np.where(feas, t.serial_coef @ x, 0.0).max() / f_min
        up = (t.up_bytes_coef @ x[:2]).max() * 8.0 / sc.network.min_rate_bps
        trips = (t.round_trips_coef @ np.array([1.0, o_max])).max() * self.rtt_s.max()
        latency = 2.0 * self.R * work + head + up + trips
        dev_power = max(d.power_max_w for d in sc.devices)
        tx_max = max(d.tx_power_max_w for d in sc.devices)
        energy = (
            np.where(feas, t.energy_coef @ x, 0.0).max()
            + t.cold_miss_s.max() * self.busy_power_w.max()
            + (work + head) * dev_power
            + up * tx_max
        )
        money = work * self.price_per_s.max()
        accuracy = min(1.0, float(t.accuracy_loss.max()))
        bounds = np.array([max(latency, sc.rejection_penalty_s), energy, money, accuracy])
        return bounds * (1.0 + 1e-6) + 1e-9
