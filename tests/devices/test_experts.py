"""Expert executor: cache counts equal the routing simulator's; outputs equal the all-resident
model's; bytes over the link equal loads times the expert's file size."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch

from devices.experts import (
    POLICIES,
    ExpertCache,
    ExpertExecutor,
    ExpertStore,
    TinyMoE,
    dequantize_rows_int8,
    quantize_rows_int8,
)
from devices.links import Link
from mec_env.routing import (
    ROUTING_PRESETS,
    RoutingGenerator,
    RoutingParams,
    belady_hit_rate,
    lfu_hit_rate,
    lru_hit_rate,
)

SIMULATORS = {"lru": lru_hit_rate, "lfu": lfu_hit_rate, "belady": belady_hit_rate}

SMALL = RoutingParams(
    num_layers=3,
    num_experts=8,
    top_k=2,
    p_stay=0.12,
    zipf_s=0.75,
    num_topics=2,
    topic_switch_prob=0.05,
)


def simulated_hits(routing: np.ndarray, capacity: int, policy: str, warmup: int, E: int) -> int:
    """Hits the simulator reports (its hit rate times its access count, an exact ratio)."""
    T, L, k = routing.shape
    rate = SIMULATORS[policy](routing, capacity, warmup, E)
    total = (T - warmup) * L * k
    hits = rate * total
    assert abs(hits - round(hits)) < 1e-6
    return round(hits)


def cache_hits(routing: np.ndarray, E: int, capacity: int, policy: str, warmup: int) -> int:
    T, L, _ = routing.shape
    cache = ExpertCache(L, E, capacity, policy)
    if policy == "belady":
        cache.set_future(routing)
    hits = 0
    for t in range(T):
        for layer in range(L):
            _, h, _ = cache.serve(t, layer, routing[t, layer].tolist(), lambda e: e)
            hits += h if t >= warmup else 0
    return hits


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cache_hits_equal_simulator_on_generator_routing(policy: str, seed: int) -> None:
    params = (
        SMALL
        if seed != 2
        else dataclasses.replace(ROUTING_PRESETS["deepseek-moe-16b"], num_layers=2)
    )
    E = params.num_experts
    routing = RoutingGenerator(params, np.random.default_rng(seed)).generate(120)
    caps = sorted({0, 1, params.top_k, params.capacity(1.5), params.capacity(2.0), E - 1, E})
    for capacity in caps:
        for warmup in (0, 12):
            want = simulated_hits(routing, capacity, policy, warmup, E)
            got = cache_hits(routing, E, capacity, policy, warmup)
            assert got == want, (policy, seed, capacity, warmup)


@pytest.mark.parametrize("policy", POLICIES)
def test_cache_counts_a_repeated_expert_in_one_token_like_the_simulator(policy: str) -> None:
    # A routing with repeats inside a token's top-k and many Belady ties.
    routing = np.random.default_rng(7).integers(0, 5, size=(80, 2, 3))
    assert any(len(set(row)) < 3 for row in routing.reshape(-1, 3))
    for capacity in range(0, 6):
        want = simulated_hits(routing, capacity, policy, 5, 5)
        assert cache_hits(routing, 5, capacity, policy, 5) == want, capacity


def test_cache_loads_each_missing_expert_once_and_drops_transients() -> None:
    cache = ExpertCache(1, 6, 1, "lru")
    loaded: list[int] = []
    values, hits, loads = cache.serve(0, 0, [2, 4], lambda e: loaded.append(e) or f"w{e}")
    assert (values, hits, loads, loaded) == (["w2", "w4"], 0, 2, [2, 4])
    assert cache.resident_experts(0) == [4]  # capacity 1 < k: the later slot is kept
    values, hits, loads = cache.serve(1, 0, [4, 4], lambda e: loaded.append(e) or f"w{e}")
    assert (values, hits, loads) == (["w4", "w4"], 2, 0)
    with pytest.raises(ValueError, match="token"):
        cache.serve(1, 0, [4, 1], lambda e: e)
    with pytest.raises(ValueError, match="experts"):
        cache.serve(2, 0, [6], lambda e: e)
    with pytest.raises(ValueError, match="layer"):
        cache.serve(2, 1, [0], lambda e: e)


@pytest.fixture(scope="module")
def model() -> TinyMoE:
    return TinyMoE(num_layers=3, num_experts=8, hidden=32, ffn=64, top_k=2, seed=3)


@pytest.fixture(scope="module")
def store(model: TinyMoE, tmp_path_factory: pytest.TempPathFactory) -> ExpertStore:
    return model.save_experts(tmp_path_factory.mktemp("experts"))


def test_expert_files_one_per_layer_and_expert(model: TinyMoE, store: ExpertStore) -> None:
    files = sorted(p for p in os.listdir(store.directory) if p.endswith(".bin"))
    assert len(files) == model.num_layers * model.num_experts
    assert store.expert_bytes == 2 * 32 * 64 * 4
    for name in files:
        assert os.path.getsize(store.directory / name) == store.expert_bytes
    w1, w2 = store.load(2, 5)
    assert torch.equal(w1, model.experts[2][5][0]) and torch.equal(w2, model.experts[2][5][1])


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("seed,capacity", [(10, 0), (11, 1), (12, 2), (13, 3), (14, 8)])
def test_executor_matches_simulator_and_uncached_outputs(
    model: TinyMoE, store: ExpertStore, policy: str, seed: int, capacity: int
) -> None:
    routing = RoutingGenerator(SMALL, np.random.default_rng(seed)).generate(60)
    reference = model.forward(model.inputs(60, seed), routing)  # every expert resident
    link = Link("pcie")
    ex = ExpertExecutor(model, store, capacity, policy, link=link)
    res = ex.run(routing, warmup_tokens=6, input_seed=seed)
    assert torch.equal(res["outputs"], reference)
    assert res["hits"] == simulated_hits(routing, capacity, policy, 6, 8)
    assert res["hits"] + res["misses"] == (60 - 6) * 3 * 2
    for layer in range(3):  # caches are per layer: each layer alone is a 1-layer simulation
        one = routing[:, layer : layer + 1]
        assert res["per_layer_hits"][layer] == simulated_hits(one, capacity, policy, 6, 8)
    cold = simulated_hits(routing, capacity, policy, 0, 8)
    assert res["misses_total"] == 60 * 3 * 2 - cold
    assert res["loads"] == res["misses_total"]  # the generator never repeats an expert
    assert res["bytes_loaded"] == res["loads"] * store.expert_bytes == link.bytes_total
    assert link.transfers == res["loads"]


def test_executor_repeated_run_starts_cold(model: TinyMoE, store: ExpertStore) -> None:
    routing = RoutingGenerator(SMALL, np.random.default_rng(5)).generate(30)
    ex = ExpertExecutor(model, store, 2, "lru")
    first, second = ex.run(routing), ex.run(routing)
    for key in ("hits", "misses", "loads", "bytes_loaded"):
        assert first[key] == second[key]
    assert torch.equal(first["outputs"], second["outputs"])


def test_paced_link_bounds_load_time(model: TinyMoE, store: ExpertStore) -> None:
    routing = RoutingGenerator(SMALL, np.random.default_rng(6)).generate(20)
    gbps = 0.05  # 16 KiB experts: ~0.33 ms each
    res = ExpertExecutor(model, store, 2, "lfu", link=Link("nvme", gbps)).run(routing)
    paced_s = res["bytes_loaded"] / (gbps * 1e9)
    assert res["load_s"] >= 0.99 * paced_s
    assert res["wall_s"] >= res["load_s"] > 0 and res["compute_s"] > 0


def test_bfloat16_model_cache_outputs_equal_uncached(tmp_path) -> None:
    m = TinyMoE(2, 6, 16, 32, 3, dtype=torch.bfloat16, seed=1)
    params = RoutingParams(num_layers=2, num_experts=6, top_k=3, p_stay=0.2)
    routing = RoutingGenerator(params, np.random.default_rng(0)).generate(25)
    ex = ExpertExecutor.from_model(m, tmp_path / "bf16", 2, "belady")
    res = ex.run(routing)
    assert res["outputs"].dtype == torch.bfloat16
    assert torch.equal(res["outputs"], m.forward(m.inputs(25), routing))
    assert ex.store.expert_bytes == 2 * 16 * 32 * 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("policy", POLICIES)
def test_cuda_cache_matches_simulator_and_resident_outputs(
    model: TinyMoE, store: ExpertStore, policy: str
) -> None:
    gpu_model = model.to("cuda")
    routing = RoutingGenerator(SMALL, np.random.default_rng(21)).generate(50)
    res = ExpertExecutor(gpu_model, store, 3, policy).run(routing)
    assert res["outputs"].device.type == "cuda"
    assert torch.equal(res["outputs"], gpu_model.forward(gpu_model.inputs(50), routing))
    assert res["hits"] == simulated_hits(routing, 3, policy, 0, 8)
    assert res["bytes_loaded"] == res["loads"] * store.expert_bytes


def test_lowprec_experts_fewer_bytes_exact_against_dequantised_model(
    model: TinyMoE, tmp_path
) -> None:
    routing = RoutingGenerator(SMALL, np.random.default_rng(9)).generate(40)
    ex = ExpertExecutor.from_model(model, tmp_path / "int8", 3, "lru", lowprec=True)
    res = ex.run(routing)
    assert ex.store.expert_bytes == 2 * 32 * 64 + 4 * (64 + 32)  # int8 + fp32 row scales
    assert res["bytes_loaded"] == res["loads"] * ex.store.expert_bytes
    assert torch.equal(res["outputs"], ex.reference_model().forward(model.inputs(40), routing))
    full = model.forward(model.inputs(40), routing)
    # int8 weights: each weight within scale/2 = max|row|/254; outputs within 3% of the range.
    err = (res["outputs"] - full).abs().max().item()
    assert err <= 0.03 * full.abs().max().item(), err


def test_row_quantisation_error_bound() -> None:
    w = torch.randn(17, 9, generator=torch.Generator().manual_seed(0))
    w[3] = 0.0
    q, scale = quantize_rows_int8(w)
    assert q.dtype == torch.int8 and scale.shape == (17,)
    err = (dequantize_rows_int8(q, scale, torch.float32) - w).abs()
    assert torch.all(err <= scale[:, None] / 2 + 1e-7)
    assert torch.all(dequantize_rows_int8(q, scale, torch.float32)[3] == 0)


def test_errors_name_the_field(model: TinyMoE, store: ExpertStore, tmp_path) -> None:
    with pytest.raises(ValueError, match="policy"):
        ExpertCache(2, 4, 1, "fifo")
    with pytest.raises(ValueError, match="capacity_per_layer"):
        ExpertCache(2, 4, -1, "lru")
    with pytest.raises(ValueError, match="top_k"):
        TinyMoE(2, 4, 8, 8, top_k=5)
    ex = ExpertExecutor(model, store, 2)
    with pytest.raises(ValueError, match="routing expert ids"):
        ex.run(np.full((3, 3, 2), 8))
    with pytest.raises(ValueError, match="routing must have shape"):
        ex.run(np.zeros((3, 2, 2), dtype=int))
    with pytest.raises(ValueError, match="warmup_tokens"):
        ex.run(np.zeros((3, 3, 2), dtype=int), warmup_tokens=3)
    other = TinyMoE(3, 8, 16, 64, 2).save_experts(tmp_path / "other")
    with pytest.raises(ValueError, match="store.hidden"):
        ExpertExecutor(model, other, 2)
    with pytest.raises(ValueError, match="belady needs set_future"):
        ExpertCache(1, 4, 1, "belady").serve(0, 0, [1], lambda e: e)
