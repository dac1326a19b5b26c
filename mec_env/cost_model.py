"""The analytic cost model: every formula of the simulator, with its unit and source.

Two layers:

1. *Physics* functions on numpy arrays (broadcasting), each a roofline term of DESIGN sec. 5 and
   ``shared/REFERENCE_NUMBERS.md`` (RN) sec. 3: KV read time per tier, MoE miss time, prefill,
   processor sharing. Tests check them against RN's worked examples.
2. :func:`build_cost_tables` evaluates the physics once per scenario for every (device, target,
   model, split, KV tier, expert policy) and stores per-request costs as coefficients of the
   request's token counts, so a step costs a gather and a few multiply-adds (no Python loops):

       x = c_prompt * P + c_output * O + c_context * C,   C = sum_{i<O} (P + i) = O*P + O(O-1)/2

   where P = prompt tokens, O = output tokens (frames for a vision model) and C the context summed
   over decode steps (attention reads the whole KV at every step).

Conventions: GB = 1e9 bytes, GB/s = 1e9 B/s, time in s, energy in J, money in USD.
Simplifications (documented, tested for consistency): a server is one processor-shared resource
(its running requests share it equally, GMORL's model), decode runs at batch 1 per request, and
the network is not shared between requests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from mec_env.hardware import DeviceSpec, ServerSpec
from mec_env.models import ModelSpec

GB = 1e9  # bytes
FLOPS_PER_PARAM_PER_TOKEN = 2.0  # one multiply-add per weight per token (RN sec. 5 "2 * params")
USABLE_HBM_FRACTION = 0.8  # FlexGen's usable-memory factor (RN sec. 1, FlexGen constants)
PREFETCH_ACCURACY = 0.97  # Fate-like expert prefetch accuracy (RN sec. 3/4)
SPARSE_ATTENTION_ACCURACY_LOSS = 0.001  # SparF: "negligible accuracy loss" (RN sec. 1); assumed

KV_TIERS = ("fast", "dram", "ssd", "csd")  # fast = GPU HBM on a server, device RAM when local
EXPERT_POLICIES = ("on_demand", "lru", "prefetch", "lowprec", "cpu")

# ---------------------------------------------------------------------------------------------
# 1. Physics (each returns seconds unless named otherwise)
# ---------------------------------------------------------------------------------------------


def kv_bytes_per_step(
    kv_bytes_per_token: float, context_tokens: float, batch: float = 1.0
) -> float:
    """KV bytes read by one decode step: RN sec. 3 "2 * L * n_kv * d_head * bytes" per layer."""
    return kv_bytes_per_token * context_tokens * batch


def attention_flops_per_step(model: ModelSpec, context_tokens: float, batch: float = 1.0) -> float:
    """RN sec. 3: ~4 * L * n_heads * d_head FLOPs per layer per sequence (q.K and p.V)."""
    return 4.0 * context_tokens * model.num_heads * model.head_dim * model.num_layers * batch


def hbm_kv_time_s(kv_bytes, hbm_gbps):
    """KV in GPU memory: memory-bound read at HBM bandwidth (RN sec. 3 table, rows 1-2)."""
    return kv_bytes / (hbm_gbps * GB)


def kv_transfer_time_s(kv_bytes, link_gbps):
    """KV moved to the GPU over a link (host DRAM over PCIe, NVMe): RN sec. 3 rows 3 and 5."""
    return kv_bytes / (link_gbps * GB)


def cpu_attention_time_s(kv_bytes, attention_flops, dram_gbps, cpu_flops):
    """Attention on the host CPU where the KV lives (FlexGen): roofline max of read and compute."""
    return np.maximum(kv_bytes / (dram_gbps * GB), attention_flops / cpu_flops)


def csd_attention_time_s(kv_bytes, attention_flops, qkvo_bytes, csd):
    """In-storage attention (InstInfer): KV scanned at the drive's internal bandwidth, compute on
    the engine, only q, k, v and the output cross the external link (RN sec. 3 rows 6-7)."""
    keep = csd.sparse_keep_fraction
    scan = np.maximum(
        keep * kv_bytes / (csd.internal_gbps * GB), keep * attention_flops / csd.engine_flops
    )
    return scan + qkvo_bytes / (csd.external_gbps * GB)


def kv_link_bytes_per_step(
    tier: str, model: ModelSpec, context_tokens: float, batch: float = 1.0
) -> float:
    """Bytes crossing the GPU's link to where the KV lives, per decode step (all layers).

    ``fast`` (HBM): none; ``dram`` moved to the GPU, ``ssd``: the whole KV; ``csd``: only q, k, v
    and the attention output (InstInfer), independent of the context length (RN sec. 3).
    """
    if tier == "fast":
        return 0.0
    if tier in ("dram", "ssd"):
        return kv_bytes_per_step(model.kv_bytes_per_token, context_tokens, batch)
    if tier == "csd":
        return model.qkvo_bytes_per_token * batch
    raise ValueError(f"tier must be one of {KV_TIERS}, got {tier!r}")


def weights_time_s(weight_bytes, gpu_fraction, hbm_gbps, link_gbps):
    """Weights read once per decode step: the GPU-resident part at HBM bandwidth, the rest
    streamed over the GPU-host link (FlexGen weight offloading)."""
    return weight_bytes * (gpu_fraction / (hbm_gbps * GB) + (1.0 - gpu_fraction) / (link_gbps * GB))


def prefill_time_s(active_params, prompt_tokens, flops):
    """Compute-bound prefill: 2 * params * prompt FLOPs (DESIGN sec. 5)."""
    return FLOPS_PER_PARAM_PER_TOKEN * active_params * prompt_tokens / flops


def moe_miss_time_s(
    misses_per_layer, num_layers, miss_cost_s, slack_per_layer_s=0.0, hidden_fraction=0.0
):
    """Per-token MoE miss time, RN sec. 3: sum_l max(0, m_l * t_miss - slack_l) for the part a
    prefetcher hides (``hidden_fraction`` of misses), plus the rest in full."""
    m = np.asarray(misses_per_layer, dtype=float)
    hidden = np.maximum(0.0, hidden_fraction * m * miss_cost_s - slack_per_layer_s)
    return num_layers * (hidden + (1.0 - hidden_fraction) * m * miss_cost_s)


def moe_tokens_per_s(model: ModelSpec, hit_rate, hbm_gbps, link_gbps, lowprec=False):
    """Decode rate with on-demand expert loading, no overlap (RN sec. 3 Mixtral table):
    T = active bytes / HBM + layers * top_k * (1 - h) * expert bytes / link."""
    t_resident = model.active_params * model.bytes_per_param / (hbm_gbps * GB)
    expert = model.expert_lowprec_bytes if lowprec else model.expert_bytes
    misses = model.top_k * (1.0 - np.asarray(hit_rate, dtype=float))
    return 1.0 / (t_resident + moe_miss_time_s(misses, model.num_layers, expert / (link_gbps * GB)))


def shannon_rate_bps(bandwidth_hz, tx_power_w, channel_gain, noise_w):
    """C = W log2(1 + p |h|^2 / (W N0)) (RN sec. 5, GMORL's channel)."""
    return bandwidth_hz * np.log2(1.0 + tx_power_w * channel_gain / noise_w)


@njit(cache=True)
def ps_row_own_added(remaining_s, work_s):
    """Processor sharing with no further arrivals (GMORL's two delay terms), for one server.

    A new job of exclusive work ``w`` joins jobs with remaining exclusive work ``w_i`` (0 = empty
    slot). Each job i receives min(w_i, w) of service while the new one runs, so the new job
    completes after ``w + sum_i min(w_i, w)`` and delays the others by ``sum_i min(w_i, w)``.
    Returns (own completion time, total delay added to the running jobs), in seconds.
    """
    added = 0.0
    for q in range(remaining_s.shape[0]):
        added += min(remaining_s[q], work_s)
    return work_s + added, added


@njit(cache=True)
def ps_row_served(sorted_s, dt_s):
    """Service each job of one server receives during ``dt_s`` of exact processor sharing.

    ``sorted_s`` is ascending (empty slots, 0, first). Jobs finish in order; while job i (rank
    among busy jobs) is being finished, ``n - i`` jobs share the processor, so it ends at
    t_i = sum_{j<=i} (w_(j) - w_(j-1)) * (n - j). Every survivor receives the same service;
    returns inf when every job finishes within ``dt_s``.
    """
    num = sorted_s.shape[0]
    t = 0.0
    prev = 0.0
    for q in range(num):
        w = sorted_s[q]
        if w <= 0.0:
            continue
        jobs = num - q
        step = (w - prev) * jobs
        if t + step > dt_s:
            return prev + (dt_s - t) / jobs
        t += step
        prev = w
    return math.inf


def ps_own_and_added_s(remaining_s, work_s):
    """Vectorised :func:`ps_row_own_added` over leading axes (last axis = slots)."""
    remaining_s = np.asarray(remaining_s, dtype=float)
    added = np.minimum(remaining_s, np.asarray(work_s, dtype=float)[..., None]).sum(axis=-1)
    return work_s + added, added


def ps_advance(remaining_s, dt_s, presorted: bool = False):
    """Remaining exclusive work after ``dt_s`` of exact processor sharing (last axis = slots,
    0 = empty), for every leading index; :func:`ps_row_served` per row. Slot order is kept."""
    rem = np.asarray(remaining_s, dtype=float)
    w = rem if presorted else np.sort(rem, axis=-1)
    flat = np.ascontiguousarray(w.reshape(-1, w.shape[-1]))
    dt = np.broadcast_to(np.asarray(dt_s, dtype=float), rem.shape[:-1] + (1,)).reshape(-1)
    served = _served_rows(flat, np.ascontiguousarray(dt)).reshape(rem.shape[:-1] + (1,))
    return np.maximum(rem - served, 0.0)


@njit(cache=True)
def _served_rows(rows, dt):
    out = np.empty(rows.shape[0])
    for i in range(rows.shape[0]):
        out[i] = ps_row_served(rows[i], dt[i])
    return out


# ---------------------------------------------------------------------------------------------
# 2. Per-scenario coefficient tables
# ---------------------------------------------------------------------------------------------


@dataclass
class CostTables:
    """Per-request cost coefficients, indexed ``[device, target, model, split, tier, policy]``.

    ``target`` 0 is the requesting device itself (local), 1..S the servers (padded to
    ``max_servers``). Each ``*_coef`` array has a trailing axis of 3: (per prompt token, per
    output token, per context token), see the module docstring.
    """

    work_coef: np.ndarray  # s of exclusive service on the target (processor-shared)
    serial_coef: np.ndarray  # [d, g, m, s, 3] s of device-side head compute (split), not shared
    energy_coef: np.ndarray  # J on the server (device compute and radio are added per step)
    accuracy_loss: np.ndarray  # fraction (per request, not per token)
    kv_coef: np.ndarray  # [d, g, m, s] KV bytes held on the target tier per (prompt + output) token
    held_bytes: np.ndarray  # [d, g, m, s] bytes held whatever the length (local: the weights)
    up_bytes_coef: np.ndarray  # [device, target, model, split, 2]: uplink bytes per P, per O
    round_trips_coef: np.ndarray  # [model, split, 2]: round trips fixed, per output token
    cold_miss_s: np.ndarray  # [target, model, policy]: extra work of a cold expert cache
    feasible: np.ndarray  # bool [device, target, model, split, tier, policy]
    tier_capacity_bytes: np.ndarray  # [device, target, tier]
    hit_rate: np.ndarray  # [target, model, policy] steady-state expert hit rate
    updates_cache: np.ndarray  # bool [policy]: the policy keeps the expert cache warm


def server_memory_plan(
    server: ServerSpec, models: tuple[ModelSpec, ...]
) -> tuple[float, float, float]:
    """(fraction of hosted weights resident in HBM, HBM bytes left for KV, DRAM bytes left for KV).

    The usable HBM (FlexGen's 0.8) holds the expert cache, then the hosted models' non-expert
    weights; what does not fit stays in host DRAM and streams over the GPU-host link each step
    (FlexGen). Host DRAM also holds the full fp16 copy of every hosted MoE model's experts.
    """
    hosted = [m for m in models if not server.hosted_models or m.name in server.hosted_models]
    need = sum(m.dense_part_bytes if m.kind == "moe" else m.weight_bytes for m in hosted)
    experts = sum(m.weight_bytes - m.dense_part_bytes for m in hosted if m.kind == "moe")
    budget = USABLE_HBM_FRACTION * server.gpu.hbm_gb * GB - server.expert_cache_gb * GB
    fraction = 1.0 if need <= 0 else float(np.clip(budget / need, 0.0, 1.0))
    hbm_kv = max(budget - need * fraction, 0.0)
    dram_kv = max(server.host.dram_gb * GB - experts - need * (1.0 - fraction), 0.0)
    return fraction, hbm_kv, dram_kv


def build_cost_tables(scenario, hit_rate_fn) -> CostTables:
    """Evaluate the physics for every plan of ``scenario``.

    Args:
        scenario: a :class:`mec_env.scenario.Scenario`.
        hit_rate_fn: ``(model, capacity_per_layer) -> steady-state LRU hit rate`` (from the
            routing generator; see :mod:`mec_env.routing`).
    """
    devices, servers, models = scenario.devices, scenario.servers, scenario.models
    nd, nt, nm = len(devices), 1 + scenario.max_servers, len(models)
    ns = max(len(m.split_points) for m in models)
    ntier, npol = len(KV_TIERS), len(EXPERT_POLICIES)
    shape = (nd, nt, nm, ns, ntier, npol)
    work = np.zeros(shape + (3,))
    energy = np.zeros(shape + (3,))
    acc = np.zeros(shape)
    kv = np.zeros(shape[:4])
    held = np.zeros(shape[:4])
    serial = np.zeros(shape[:4] + (3,))
    feasible = np.zeros(shape, dtype=bool)
    up = np.zeros((nd, nt, nm, ns, 2))
    trips = np.zeros((nm, ns, 2))
    cold = np.zeros((nt, nm, npol))
    hit = np.zeros((nt, nm, npol))
    cap = np.zeros((nd, nt, ntier))
    updates_cache = np.array([False, True, True, True, True])

    for mi, m in enumerate(models):
        for si in range(len(m.split_points)):
            if si == 0:  # whole request on the target: prompt (ids or frame) up, output back
                trips[mi, si] = (1.0, 0.0)
            else:  # every decode step crosses the split both ways (frames are pipelined)
                trips[mi, si] = (1.0, 0.0) if m.kind == "cnn" else (1.0, 1.0)

    # servers: the tail's costs do not depend on the device; evaluate once, broadcast
    for ti, server in enumerate(servers, start=1):
        gpu_frac, hbm_kv, dram_kv = server_memory_plan(server, models)
        cap[:, ti] = (
            hbm_kv,
            dram_kv,
            server.ssd.capacity_gb * GB if server.ssd else 0.0,
            server.csd.capacity_gb * GB if server.csd else 0.0,
        )
        for mi, m in enumerate(models):
            if server.hosted_models and m.name not in server.hosted_models:
                continue
            for si, sp in enumerate(m.split_points):
                f = sp.head_fraction
                head_fits = np.array(
                    [si == 0 or f * m.weight_bytes <= d.mem_capacity_gb * GB for d in devices]
                )
                for di, dev in enumerate(devices):
                    up[di, ti, mi, si] = _uplink_bytes(m, sp, si)
                    serial[di, ti, mi, si] = _local_coefs(dev, m, f) if si > 0 else 0.0
                kv[:, ti, mi, si] = (1.0 - f) * m.kv_bytes_per_token if m.kind != "cnn" else 0.0
                for tier in range(ntier):
                    for pi in range(npol):
                        t = _server_coefs(server, m, 1.0 - f, tier, pi, gpu_frac, hit_rate_fn)
                        if t is None:
                            continue
                        idx = (slice(None), ti, mi, si, tier, pi)
                        feasible[idx] = head_fits
                        work[idx] = t["time"]
                        energy[idx] = t["energy"]
                        acc[idx] = sp.accuracy_loss + t["accuracy"]
                        if si == 0:
                            hit[ti, mi, pi] = t["hit"]
                            cold[ti, mi, pi] = t["cold"]
    # local: whole model on the device, weights and KV in device memory, no split/tier/policy
    for di, dev in enumerate(devices):
        cap[di, 0, 0] = dev.mem_capacity_gb * GB
        for mi, m in enumerate(models):
            if m.weight_bytes > dev.mem_capacity_gb * GB:
                continue
            feasible[di, 0, mi, 0, 0, 0] = True
            work[di, 0, mi, 0, 0, 0] = _local_coefs(
                dev, m, 1.0
            )  # energy: time x DVFS power, per step
            kv[di, 0, mi, 0] = m.kv_bytes_per_token if m.kind != "cnn" else 0.0
            held[di, 0, mi, 0] = m.weight_bytes  # a local job holds its weights until it ends
    return CostTables(
        work_coef=work,
        serial_coef=serial,
        energy_coef=energy,
        accuracy_loss=acc,
        kv_coef=kv,
        held_bytes=held,
        up_bytes_coef=up,
        round_trips_coef=trips,
        cold_miss_s=cold,
        feasible=feasible,
        tier_capacity_bytes=cap,
        hit_rate=hit,
        updates_cache=updates_cache,
    )


def _uplink_bytes(m: ModelSpec, sp, si: int) -> tuple[float, float]:
    """Uplink bytes (per prompt token, per output token / frame) for split ``si``."""
    if m.kind == "cnn":
        return (0.0, sp.transfer_bytes)  # one frame (raw or split tensor) per output frame
    if si == 0:
        return (m.input_bytes, 0.0)  # prompt token ids once; output streams down (negligible)
    return (sp.transfer_bytes, sp.transfer_bytes)  # prefill activations, then one per token


def _local_coefs(dev: DeviceSpec, m: ModelSpec, fraction: float) -> np.ndarray:
    """Device time coefficients for running ``fraction`` of the model at full frequency."""
    if m.kind == "cnn":
        return np.array([0.0, fraction * m.flops_per_frame / dev.compute_flops, 0.0])
    bw = dev.mem_bandwidth_gbps * GB
    prefill = fraction * FLOPS_PER_PARAM_PER_TOKEN * m.active_params / dev.compute_flops
    weights = fraction * np.maximum(
        m.active_params * m.bytes_per_param / bw,
        FLOPS_PER_PARAM_PER_TOKEN * m.active_params / dev.compute_flops,
    )
    # roofline of attention where the KV lives, as on a server's fast tier (the memory-only
    # form underestimated it by ~2x where decode attention is compute-bound: devices/validate.py)
    attention = fraction * np.maximum(
        m.kv_bytes_per_token / bw, attention_flops_per_step(m, 1.0) / dev.compute_flops
    )
    return np.array([prefill, weights, attention])


def _server_coefs(
    server: ServerSpec,
    m: ModelSpec,
    fraction: float,
    tier: int,
    policy: int,
    gpu_frac: float,
    hit_rate_fn,
):
    """Time/energy coefficients of running ``fraction`` (the tail) of ``m`` on ``server`` with
    the KV on ``tier`` and expert ``policy``; None when the combination does not exist."""
    gpu, host = server.gpu, server.host
    if m.kind == "cnn":
        if tier != 0 or policy != 0:
            return None
        t = fraction * m.flops_per_frame / gpu.flops
        return {
            "time": np.array([0.0, t, 0.0]),
            "energy": np.array([0.0, t * gpu.power_busy_w, 0.0]),
            "accuracy": 0.0,
            "hit": 0.0,
            "cold": 0.0,
        }
    if m.kind == "dense" and policy != 0:
        return None
    if (tier == 2 and server.ssd is None) or (tier == 3 and server.csd is None):
        return None
    link = server.gpu_host_gbps
    prefill = fraction * prefill_time_s(m.active_params, 1.0, gpu.flops)
    # per output token: weights (MoE: the dense part plus the routed experts read from HBM)
    resident_bytes = fraction * m.active_params * m.bytes_per_param
    w_time = weights_time_s(resident_bytes, gpu_frac, gpu.hbm_gbps, link)
    # per context token: KV read and attention where the KV lives
    kv_b = fraction * m.kv_bytes_per_token
    flops = fraction * attention_flops_per_step(m, 1.0)
    kv_power = gpu.power_idle_w
    if tier == 0:
        attn = np.maximum(hbm_kv_time_s(kv_b, gpu.hbm_gbps), flops / gpu.flops)
        kv_power = gpu.power_busy_w
        kv_write = 0.0
    elif tier == 1:  # the faster of moving the KV over PCIe and computing on the CPU (FlexGen)
        attn = np.minimum(
            kv_transfer_time_s(kv_b, link),
            cpu_attention_time_s(kv_b, flops, host.dram_gbps, host.cpu_flops),
        )
        kv_power += host.power_w
        kv_write = 0.0
    elif tier == 2:
        attn = kv_transfer_time_s(kv_b, min(server.ssd.read_gbps, link))
        kv_power += server.ssd.power_w
        kv_write = kv_b / (server.ssd.write_gbps * GB)
    else:
        attn = csd_attention_time_s(kv_b, flops, 0.0, server.csd)
        kv_power += server.csd.power_w
        kv_write = kv_b / (server.csd.external_gbps * GB)
    per_token_fixed = w_time
    if tier == 3:  # q, k, v, o cross the CSD's external link once per decode step
        link_bytes = fraction * kv_link_bytes_per_step("csd", m, context_tokens=1.0)
        per_token_fixed = per_token_fixed + link_bytes / (server.csd.external_gbps * GB)
    accuracy = (
        SPARSE_ATTENTION_ACCURACY_LOSS if tier == 3 and server.csd.sparse_keep_fraction < 1 else 0.0
    )
    moe_t = 0.0
    hit = 0.0
    cold = 0.0
    moe_power = gpu.power_idle_w
    if m.kind == "moe":
        layers = m.num_layers
        capacity = int(
            np.clip(
                server.expert_cache_gb * GB // max(layers * m.expert_bytes, 1.0), 0, m.num_experts
            )
        )
        if policy == 0:  # on demand: only the current token's experts stay in HBM
            capacity = m.top_k
        if capacity < m.top_k and policy != 0:
            return None  # the cache cannot even hold one token's experts
        hit = float(hit_rate_fn(m, capacity))
        misses = fraction * m.top_k * (1.0 - hit)  # per layer per token (tail share)
        full = m.expert_bytes / (link * GB)
        slack = w_time / layers
        if policy in (0, 1):
            miss_cost = full
            moe_t = moe_miss_time_s(misses, layers, full)
        elif policy == 2:
            miss_cost = full
            moe_t = moe_miss_time_s(misses, layers, full, slack, PREFETCH_ACCURACY)
        elif policy == 3:
            miss_cost = m.expert_lowprec_bytes / (link * GB)
            moe_t = moe_miss_time_s(misses, layers, miss_cost)
            accuracy += m.lowprec_accuracy_loss * (1.0 - hit)
        else:  # misses run on the CPU next to the DRAM copy (Fiddler-style)
            miss_cost = m.expert_bytes / (host.dram_gbps * GB)
            moe_t = moe_miss_time_s(misses, layers, miss_cost)
            moe_power += host.power_w
        cold = fraction * layers * capacity * miss_cost if policy != 0 else 0.0
        per_token_fixed = per_token_fixed + moe_t
    time = np.array([prefill + kv_write, per_token_fixed, attn])
    compute_power = gpu.power_busy_w
    energy = np.array(
        [
            prefill * compute_power + kv_write * kv_power,
            w_time * compute_power
            + moe_t * moe_power
            + (per_token_fixed - w_time - moe_t) * kv_power,
            attn * kv_power,
        ]
    )
    return {"time": time, "energy": energy, "accuracy": accuracy, "hit": hit, "cold": cold}
