"""The cost model against REFERENCE_NUMBERS.md sec. 3 (RN) and its own invariants."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mec_env import cost_model as cm
from mec_env import load_scenario
from mec_env.core import OffloadCore
from mec_env.hardware import GPU_PRESETS, SERVER_PRESETS
from mec_env.models import MODEL_PRESETS

OPT13B = MODEL_PRESETS["opt-13b"]
MIXTRAL = MODEL_PRESETS["mixtral-8x7b"]
CONTEXT = 32_768  # RN sec. 3 worked example: 13B, 40 layers, d = 5120, L = 32,768, batch 8, fp16
BATCH = 8
CSD = SERVER_PRESETS["edge-a6000-csd"].csd
HOST = SERVER_PRESETS["edge-a6000-csd"].host
NVME = SERVER_PRESETS["edge-a6000-csd"].ssd


def _kv_bytes() -> float:
    return cm.kv_bytes_per_step(OPT13B.kv_bytes_per_token, CONTEXT, BATCH)


def _attn_flops() -> float:
    return cm.attention_flops_per_step(OPT13B, CONTEXT, BATCH)


def test_worked_example_sizes():
    # RN: 214.7 GB of KV per step; attention 214.7 GFLOP per step; weights 25.7 GB (fp16 12.9B)
    assert _kv_bytes() == pytest.approx(214.7e9, rel=0.005)
    assert _attn_flops() == pytest.approx(214.7e9, rel=0.005)
    assert OPT13B.weight_bytes == pytest.approx(25.7e9, rel=0.01)


@pytest.mark.parametrize(
    ("row", "expected_s"),
    [
        ("hbm-a6000", 0.280),
        ("hbm-h100", 0.064),
        ("dram-over-pcie4", 6.7),
        ("cpu-in-dram", 1.05),
        ("nvme-gen4", 30.7),
        ("csd-dense", 19.2),
        ("csd-sparse-1/8", 2.4),
    ],
)
def test_kv_time_per_tier_matches_reference_table(row, expected_s):
    """RN sec. 3 table: KV time per decode step for each KV location, within 5 %."""
    kv, flops = _kv_bytes(), _attn_flops()
    qkvo = cm.kv_link_bytes_per_step("csd", OPT13B, CONTEXT, BATCH)
    got = {
        "hbm-a6000": lambda: cm.hbm_kv_time_s(kv, GPU_PRESETS["a6000"].hbm_gbps),
        "hbm-h100": lambda: cm.hbm_kv_time_s(kv, GPU_PRESETS["h100"].hbm_gbps),
        "dram-over-pcie4": lambda: cm.kv_transfer_time_s(
            kv, SERVER_PRESETS["edge-a6000-csd"].gpu_host_gbps
        ),
        "cpu-in-dram": lambda: cm.cpu_attention_time_s(kv, flops, HOST.dram_gbps, HOST.cpu_flops),
        "nvme-gen4": lambda: cm.kv_transfer_time_s(kv, NVME.read_gbps),
        "csd-dense": lambda: cm.csd_attention_time_s(kv, flops, qkvo, CSD),
        "csd-sparse-1/8": lambda: cm.csd_attention_time_s(
            kv, flops, qkvo, CSD.replace(sparse_keep_fraction=1 / 8)
        ),
    }[row]()
    assert float(got) == pytest.approx(expected_s, rel=0.05)


@pytest.mark.parametrize(("gpu", "tokens_per_s"), [("a6000", 26.0), ("h100", 111.0)])
def test_hbm_tokens_per_s_include_weights(gpu, tokens_per_s):
    """RN: batch 8 / (KV time + weights at HBM bandwidth) = ~26 (A6000) and ~111 (H100) tok/s."""
    bw = GPU_PRESETS[gpu].hbm_gbps
    step_s = cm.hbm_kv_time_s(_kv_bytes(), bw) + cm.weights_time_s(
        OPT13B.weight_bytes, 1.0, bw, 32.0
    )
    assert BATCH / step_s == pytest.approx(tokens_per_s, rel=0.05)


def test_dense_csd_between_host_dram_and_nvme():
    """RN lesson: one dense CSD is slower than host DRAM over PCIe 4.0 x16, faster than NVMe."""
    kv, flops = _kv_bytes(), _attn_flops()
    qkvo = cm.kv_link_bytes_per_step("csd", OPT13B, CONTEXT, BATCH)
    csd = cm.csd_attention_time_s(kv, flops, qkvo, CSD)
    dram = cm.kv_transfer_time_s(kv, 32.0)
    nvme = cm.kv_transfer_time_s(kv, NVME.read_gbps)
    assert dram < csd < nvme
    assert nvme / csd == pytest.approx(1.6, rel=0.05)  # "~1.6x a plain SSD"


def test_dense_csd_ordering_holds_in_the_env_tables():
    """The same ordering in the per-context-token attention coefficients the simulator uses."""
    sc = load_scenario(
        {
            "name": "csd",
            "devices": ["phone"],
            "servers": ["edge-a6000-csd"],
            "models": ["opt-13b"],
            "workload": {"mix": {"opt-13b": 1}},
        }
    )
    t = OffloadCore(sc, 1).tables
    fast, dram, ssd, csd = t.work_coef[0, 1, 0, 0, :, 0, 2]  # per context token, per tier
    assert fast < dram < csd < ssd


def test_only_qkvo_cross_the_link_on_the_csd_path():
    """RN: on the CSD path only q, k, v and the output cross the link (13 MB per step here);
    the host and SSD paths move the whole KV."""
    qkvo = cm.kv_link_bytes_per_step("csd", OPT13B, CONTEXT, BATCH)
    assert qkvo == pytest.approx(13.1e6, rel=0.01)
    assert cm.kv_link_bytes_per_step("csd", OPT13B, 1024, BATCH) == qkvo  # independent of context
    assert cm.kv_link_bytes_per_step("ssd", OPT13B, CONTEXT, BATCH) == pytest.approx(_kv_bytes())
    assert cm.kv_link_bytes_per_step("dram", OPT13B, CONTEXT, BATCH) == pytest.approx(_kv_bytes())
    assert cm.kv_link_bytes_per_step("fast", OPT13B, CONTEXT, BATCH) == 0.0
    with pytest.raises(ValueError, match="tier"):
        cm.kv_link_bytes_per_step("tape", OPT13B, CONTEXT, BATCH)


@pytest.mark.parametrize(
    ("hit", "fp16", "int4"),
    [(0.36, 1.7, 6.2), (0.62, 2.9, 10.1), (0.83, 6.2, 20.7), (0.99, 60.0, 99.0)],
)
def test_mixtral_hit_rate_to_tokens_per_s(hit, fp16, int4):
    """RN sec. 3: Mixtral on PCIe4 (25 GB/s), no overlap, resident part at H100 HBM: within 10 %."""
    hbm = GPU_PRESETS["h100"].hbm_gbps
    assert float(cm.moe_tokens_per_s(MIXTRAL, hit, hbm, 25.0)) == pytest.approx(fp16, rel=0.10)
    assert float(cm.moe_tokens_per_s(MIXTRAL, hit, hbm, 25.0, lowprec=True)) == pytest.approx(
        int4, rel=0.10
    )


def test_prefetch_hides_misses_up_to_the_slack():
    full = cm.moe_miss_time_s(1.0, 32, 0.01)
    assert full == pytest.approx(0.32)
    hidden = cm.moe_miss_time_s(1.0, 32, 0.01, slack_per_layer_s=0.01, hidden_fraction=1.0)
    assert hidden == pytest.approx(0.0)
    partial = cm.moe_miss_time_s(1.0, 32, 0.01, slack_per_layer_s=0.004, hidden_fraction=0.97)
    assert 0.0 < partial < full


# ---------------------------------------------------------------------------------------------
# processor sharing against a brute-force event simulation


def _event_ps(work: np.ndarray, dt: float) -> np.ndarray:
    """Remaining work after dt of processor sharing, by stepping from completion to completion."""
    x = work.astype(float).copy()
    t = 0.0
    while True:
        busy = x > 0
        n = int(busy.sum())
        if n == 0:
            return x
        shortest = x[busy].min()
        if t + shortest * n >= dt:
            x[busy] -= (dt - t) / n
            return np.maximum(x, 0.0)
        x[busy] -= shortest
        x[np.abs(x) < 1e-12] = 0.0
        t += shortest * n


def _finish_times(work: np.ndarray) -> np.ndarray:
    """Completion time of every job under processor sharing with no arrivals."""
    order = np.argsort(work)
    w = work[order]
    n = len(w)
    t = np.cumsum(np.diff(np.concatenate([[0.0], w])) * (n - np.arange(n)))
    out = np.empty(n)
    out[order] = t
    return out


jobs = st.lists(st.one_of(st.just(0.0), st.floats(0.01, 100.0)), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(jobs, st.floats(0.0, 300.0))
def test_ps_advance_matches_event_simulation(work, dt):
    w = np.array(work)
    got = cm.ps_advance(w, dt)
    np.testing.assert_allclose(got, _event_ps(w, dt), atol=1e-7)
    # work conserving: total service = min(dt, total work)
    assert (w - got).sum() == pytest.approx(min(dt, w.sum()), abs=1e-7)
    # presorted path agrees on sorted rows
    s = np.sort(w)
    np.testing.assert_allclose(cm.ps_advance(s, dt, presorted=True), np.sort(got), atol=1e-9)


@settings(max_examples=300, deadline=None)
@given(jobs, st.floats(0.01, 100.0))
def test_ps_own_and_added_delay_match_event_simulation(work, new):
    """GMORL's terms: the new job's completion time and the total delay it adds to the others."""
    w = np.array([x for x in work if x > 0] or [0.0])
    own, added = cm.ps_own_and_added_s(w[None, :], np.array([new]))
    busy = w[w > 0]
    with_new = _finish_times(np.concatenate([busy, [new]]))
    alone = _finish_times(busy) if busy.size else np.zeros(0)
    assert own[0] == pytest.approx(with_new[-1], rel=1e-9)
    assert added[0] == pytest.approx((with_new[:-1] - alone).sum(), rel=1e-9, abs=1e-9)


def test_two_equal_jobs_take_twice_as_long():
    own, added = cm.ps_own_and_added_s(np.array([[5.0, 0.0]]), np.array([5.0]))
    assert own[0] == pytest.approx(10.0)
    assert added[0] == pytest.approx(5.0)


# ---------------------------------------------------------------------------------------------
# tables and the compiled step


def test_feasibility_factorises_exactly():
    """The kernels use per-part feasibility; the full table must be their outer product."""
    for name in ("default",):
        core = OffloadCore(load_scenario(name), 1)
        f = core.tables.feasible
        K = f.shape[4]
        fs = core.feas_split[:, :, :, :, None, None]
        ft = core.feas_tp[None, :, :, None, :K, None]
        fp = core.feas_tp[None, :, :, None, None, K:]
        np.testing.assert_array_equal(f, fs & ft & fp)


def test_step_costs_equal_the_tables_on_an_empty_system():
    """With nothing running, the kernel's latency and energy equal the table formulas."""
    from mec_env.envs.llm_offload import LLMOffloadEnv

    env = LLMOffloadEnv("default")
    rng = np.random.default_rng(3)
    checked = 0
    for episode in range(40):
        env.reset(seed=episode)
        core = env.core
        d, m, P, O = (int(v) for v in core.req[0])
        open_targets = np.flatnonzero(core.part_mask(0)[0])
        g = int(rng.choice(open_targets))
        s = int(np.flatnonzero(core.ok_st[0, g].any(axis=1))[0])
        k = int(np.flatnonzero(core.ok_st[0, g, s])[0])
        p = int(np.flatnonzero(core.ok_p[0, g])[0])
        gain = core.env_f[0, 1]
        _, _, _, _, info = env.step(np.array([g, s, k, p]))
        assert not info["fallback"].any()
        t = core.tables
        x = np.array([P, O, O * P + O * (O - 1) / 2])
        work = t.work_coef[d, g, m, s, k, p] @ x
        if t.feasible[d, g, m, s, k, p] and core.scenario.models[m].kind == "moe" and g > 0:
            work += t.cold_miss_s[g, m, p]  # first request: every cache is cold
        head = t.serial_coef[d, g, m, s] @ x
        latency = work + head
        if g > 0:
            net = core.scenario.network
            dev = core.scenario.devices[d]
            rate = net.wireless_bandwidth_hz * np.log2(1 + dev.tx_power_w * gain / core.fp[1])
            rate = min(max(rate, net.min_rate_bps), core.dg[d, g, 0])
            up = t.up_bytes_coef[d, g, m, s] @ x[:2] * 8 / rate
            latency += up + (t.round_trips_coef[m, s] @ [1, O]) * core.dg[d, g, 1]
        assert info["costs"][0] == pytest.approx(latency, rel=1e-9)
        checked += 1
    assert checked == 40


def test_simulator_hit_rates_come_from_the_fitted_routing_generator():
    """The env charges MoE misses at the LRU hit rate its presets' routing streams give:
    Mixtral .36 / .62 and DeepSeekMoE .27 / .40 at rho = 1 / 2 (RN sec. 4), within 0.05."""
    from mec_env.expert_hits import routing_params, steady_state_hit_rate
    from mec_env.routing import ROUTING_PRESETS

    for name, targets in (("mixtral-8x7b", (0.36, 0.62)), ("deepseek-moe-16b", (0.27, 0.40))):
        model = MODEL_PRESETS[name]
        assert routing_params(model) == ROUTING_PRESETS[name]
        for rho, target in zip((1, 2), targets, strict=True):
            assert steady_state_hit_rate(model, rho * model.top_k) == pytest.approx(
                target, abs=0.05
            )


def test_plan_costs_predict_what_the_step_charges():
    """core.plan_costs (used by the greedy baseline and the oracle) equals the step's costs."""
    from mec_env.envs.llm_offload import LLMOffloadEnv
    from mec_env.masks import MaskSampler

    env = LLMOffloadEnv("default")
    env.reset(seed=5)
    rng = np.random.default_rng(5)
    sample = MaskSampler(env.action_space.nvec)
    mask = env.core.masks[0].copy()
    checked = 0
    for _ in range(300):
        plans = env.core.open_plans()
        if env.core.rejecting[0] or len(plans) == 0:
            env.step(sample(mask, rng))
            mask = env.core.masks[0].copy()
            continue
        predicted = env.core.plan_costs(plans)
        assert np.all(np.isfinite(predicted))
        i = int(rng.integers(len(plans)))
        _, _, _, _, info = env.step(plans[i])
        assert not info["fallback"].any()
        np.testing.assert_allclose(info["costs"], predicted[i], rtol=1e-12)
        checked += 1
        mask = info["action_mask"]
    assert checked > 250
    closed = np.array([[env.core.nvec[0] - 1, 0, 0, 0]])  # a padded server slot
    assert np.all(np.isinf(env.core.plan_costs(closed)))
