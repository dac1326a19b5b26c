"""Arrivals (Poisson and trace), request lengths, the model mix, and the network paths."""

from __future__ import annotations

import numpy as np
import pytest

from mec_env import load_scenario
from mec_env import network as net
from mec_env.cost_model import shannon_rate_bps
from mec_env.envs.llm_offload import LLMOffloadEnv
from mec_env.workload import sample_requests

BASE = {
    "name": "w",
    "devices": ["phone", "phone", "jetson-agx-orin"],
    "servers": ["edge-a6000-csd", "cloud-h100"],
    "models": ["tinyllama-1.1b", "llama-3-8b", "resnet-50"],
    "workload": {
        "mix": {"tinyllama-1.1b": 1.0, "llama-3-8b": 3.0, "resnet-50": 0.0},
        "arrival_rate_hz": 0.5,
        "prompt_tokens_median": 300,
        "prompt_tokens_sigma": 1.2,
        "prompt_tokens_min": 32,
        "prompt_tokens_max": 2000,
        "output_tokens_median": 50,
        "output_tokens_min": 10,
        "output_tokens_max": 80,
    },
}


def _block(scenario, n_envs=4, count=5000, seed=0):
    rng = np.random.default_rng(seed)
    nd = len(scenario.devices)
    dist = net.sample_distances_m(rng, scenario.network, (n_envs, nd))
    shadow = rng.normal(0, scenario.network.shadowing_std_db, (n_envs, nd))
    return sample_requests(rng, scenario, count, dist, shadow)


def test_poisson_arrivals_lengths_and_mix():
    sc = load_scenario(BASE)
    b = _block(sc)
    # merged Poisson process of 3 devices at 0.5 Hz each: mean gap 1/1.5 s, exponential (cv = 1)
    assert b.gap_s.mean() == pytest.approx(1 / 1.5, rel=0.03)
    assert b.gap_s.std() / b.gap_s.mean() == pytest.approx(1.0, rel=0.05)
    # devices uniform, the mix by weight (resnet-50 has weight 0)
    assert np.bincount(b.device.ravel(), minlength=3) / b.device.size == pytest.approx(
        [1 / 3] * 3, abs=0.02
    )
    shares = np.bincount(b.model.ravel(), minlength=3) / b.model.size
    assert shares == pytest.approx([0.25, 0.75, 0.0], abs=0.02)
    # log-normal lengths, rounded and clipped to [min, max]
    w = sc.workload
    assert (
        b.prompt_tokens.min() >= w.prompt_tokens_min
        and b.prompt_tokens.max() <= w.prompt_tokens_max
    )
    assert (
        b.output_tokens.min() >= w.output_tokens_min
        and b.output_tokens.max() <= w.output_tokens_max
    )
    assert np.median(b.prompt_tokens) == pytest.approx(300, rel=0.05)
    assert (b.output_tokens == w.output_tokens_max).mean() > 0.1  # the clip binds
    assert np.all(b.gain > 0)


def test_vision_requests_have_no_prompt():
    sc = load_scenario({**BASE, "workload": {**BASE["workload"], "mix": {"resnet-50": 1.0}}})
    b = _block(sc, count=200)
    assert np.all(b.prompt_tokens == 0) and np.all(b.output_tokens >= 1)


def _write_trace(path, rows):
    path.write_text(
        "time_s,device,model,prompt_tokens,output_tokens\n"
        + "".join(",".join(map(str, r)) + "\n" for r in rows)
    )
    return path


def test_trace_workload_replays_the_file(tmp_path):
    rows = [
        (0.0, 0, "llama-3-8b", 100, 20),
        (1.5, 2, "tinyllama-1.1b", 40, 10),
        (4.0, 1, "resnet-50", 0, 3),
        (4.5, 0, "llama-3-8b", 700, 60),
    ]
    trace = _write_trace(tmp_path / "trace.csv", rows)
    sc = load_scenario({**BASE, "workload": {**BASE["workload"], "trace_path": str(trace)}})
    env = LLMOffloadEnv(sc)
    env.reset(seed=3)
    names = [m.name for m in sc.models]
    seen = []
    for _ in range(8):
        d, m, p, o = (int(v) for v in env.core.req[0])
        seen.append((d, names[m], p, o, float(env.core.now_s[0])))
        env.step(np.zeros(4, dtype=np.int64))
    # consecutive requests follow the file (from a random start), cycling
    keys = [(d, m, p, o) for d, m, p, o, _ in seen]
    file_keys = [(d, m, p, o) for _, d, m, p, o in rows]
    start = file_keys.index(keys[0])
    assert keys == [file_keys[(start + i) % 4] for i in range(8)]
    # the clock advances by the trace's gaps (the wrap-around gap is the mean gap: 4.5 / 3)
    gaps = np.diff([t for *_, t in seen])
    expected = [np.diff([0.0, 1.5, 4.0, 4.5, 4.5 + 1.5])[(start + i) % 4] for i in range(7)]
    np.testing.assert_allclose(gaps, expected, rtol=1e-12)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("time_s,device,model\n0,0,llama-3-8b\n", "columns"),
        ("time_s,device,model,prompt_tokens,output_tokens\n0,0,gpt-9,10,10\n", "line 2: model"),
        (
            "time_s,device,model,prompt_tokens,output_tokens\n0,zero,llama-3-8b,10,10\n",
            "line 2: bad number",
        ),
        (
            "time_s,device,model,prompt_tokens,output_tokens\n0,7,llama-3-8b,10,10\n",
            "line 2: values out of range",
        ),
        ("time_s,device,model,prompt_tokens,output_tokens\n", "no requests"),
    ],
)
def test_bad_trace_files_name_the_problem(tmp_path, content, fragment):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    sc = load_scenario({**BASE, "workload": {**BASE["workload"], "trace_path": str(path)}})
    with pytest.raises(ValueError, match=fragment) as err:
        LLMOffloadEnv(sc)
    assert "workload.trace_path" in str(err.value)


def test_missing_trace_file_is_a_value_error(tmp_path):
    sc = load_scenario(
        {**BASE, "workload": {**BASE["workload"], "trace_path": str(tmp_path / "none.csv")}}
    )
    with pytest.raises(ValueError, match="workload.trace_path"):
        LLMOffloadEnv(sc)


def test_network_graph_paths():
    sc = load_scenario({**BASE, "network": {"num_access_points": 2}})
    g = net.build_graph(sc)
    assert {g.nodes[n]["kind"] for n in g} == {"ap", "device", "edge", "cloud"}
    gbps, latency = net.wired_paths(g, sc)
    n = sc.network
    # edge server: wireless hop + edge backhaul; cloud: wireless hop + WAN (bottleneck = WAN)
    np.testing.assert_allclose(gbps[:, 0], n.edge_link_gbps)
    np.testing.assert_allclose(gbps[:, 1], n.cloud_link_gbps)
    np.testing.assert_allclose(latency[:, 0], n.wireless_latency_s + n.edge_link_latency_s)
    np.testing.assert_allclose(latency[:, 1], n.wireless_latency_s + n.cloud_link_latency_s)


def test_wireless_rate_is_shannon_with_a_floor():
    n = load_scenario(BASE).network
    gain = np.array([1e-16, 1e-12, 1e-9])
    rate = net.wireless_rate_bps(n, 0.2, gain)
    noise = net.noise_power_w(n)
    assert noise == pytest.approx(10 ** ((-174 - 30) / 10) * 16.6e6)
    expected = np.maximum(n.wireless_bandwidth_hz * np.log2(1 + 0.2 * gain / noise), n.min_rate_bps)
    np.testing.assert_allclose(rate, expected)
    assert rate[0] == n.min_rate_bps and np.all(np.diff(rate) > 0)
    assert shannon_rate_bps(1.0, 1.0, 1.0, 1.0) == pytest.approx(1.0)  # log2(2)


def test_channel_gain_follows_path_loss_on_average():
    n = load_scenario({**BASE, "network": {"shadowing_std_db": 0.0}}).network
    rng = np.random.default_rng(0)
    d = np.full(200_000, 1000.0)
    gain = net.sample_channel_gain(rng, n, d, np.zeros_like(d))
    # Rayleigh |h|^2 ~ Exp(1): mean gain = 10^(-PL(1 km) / 10)
    assert gain.mean() == pytest.approx(10 ** (-n.path_loss_at_1km_db / 10), rel=0.01)
