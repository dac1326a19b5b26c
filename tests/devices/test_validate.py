"""Validation (evaluate.py --validate): scaled models, the measured-hardware scenario, and
predicted against counted bytes and hits for executed decisions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import mec_env  # noqa: F401
from devices.validate import (
    TIER_NAMES,
    VALIDATION_DIMS,
    ReferenceStep,
    ValidationHardware,
    predicted_step,
    run_validation,
    scaled_model,
    summarise,
    validation_scenario,
)
from mec_env import load_scenario
from mec_env.cost_model import _local_coefs
from mec_env.models import MODEL_PRESETS

REPO = Path(__file__).resolve().parents[2]
HW = ValidationHardware(
    matvec_gbps=20.0,
    attention_flops=2e10,
    fp32_flops=1.5e11,
    pcie_gbps=2.5,
    ssd_gbps=1.25,
    csd_internal_gbps=3.3,
    csd_external_gbps=3.3 / 1.6,
    dram_gb=16.0,
)


@pytest.mark.parametrize("name", sorted(MODEL_PRESETS))
def test_scaled_models_keep_what_the_simulator_reads(name):
    m = MODEL_PRESETS[name]
    s = scaled_model(m)
    assert s.kind == m.kind
    if m.kind == "cnn":
        assert s == m
        return
    L = VALIDATION_DIMS["num_layers"]
    assert s.num_layers == L and s.bytes_per_param == 4 and s.kv_bytes_per_value == 4
    assert s.num_heads % s.num_kv_heads == 0
    assert len(s.split_points) == len(m.split_points)
    for sp in s.split_points:  # whole layers on each side
        assert sp.head_fraction * L == pytest.approx(round(sp.head_fraction * L))
    if m.kind == "moe":
        assert (s.num_experts, s.top_k) == (m.num_experts, m.top_k)
        assert (s.routing_p_stay, s.routing_zipf_s) == (m.routing_p_stay, m.routing_zipf_s)
        assert s.active_params < s.params


def test_validation_scenario_keeps_the_spaces_of_the_policy_it_validates():
    base = load_scenario("default")
    v = validation_scenario(base, HW)
    a = gym.make("mec_env/LLMOffload-v0", scenario=base)
    b = gym.make("mec_env/LLMOffload-v0", scenario=v)
    assert a.observation_space == b.observation_space
    assert a.action_space == b.action_space
    for s in v.servers:
        assert s.gpu.hbm_gbps == HW.matvec_gbps and s.gpu_host_gbps == HW.pcie_gbps
        if s.csd is not None:
            assert s.csd.internal_gbps / s.csd.external_gbps == pytest.approx(11.2 / 7.0)


def test_local_prediction_is_the_cost_models_local_coefficients():
    v = validation_scenario(load_scenario("tiny"), HW)
    env = gym.make_vec("mec_env/LLMOffload-v0", num_envs=1, scenario=v)
    m = v.models[0]
    coefs = _local_coefs(v.devices[0], m, 1.0)
    for context in (256, 2048):
        p = predicted_step(env.core, 0, (0, 0, 0, 0), 0, context)
        assert p["step_s"] == pytest.approx(coefs[1] + context * coefs[2])
        assert p["kv_link_bytes"] == 0.0


def test_executed_decisions_move_the_predicted_bytes_and_count_hits(tmp_path):
    """Every tier and expert policy of the tiny scenario, executed: the bytes over the KV link
    equal the simulator's exactly; latencies are measured (their accuracy is a benchmark)."""
    v = validation_scenario(load_scenario("tiny"), HW)
    env = gym.make_vec("mec_env/LLMOffload-v0", num_envs=1, scenario=v, parallel=False)
    plans = iter(
        [(1, 0, tier, pol) for pol in (0, 1, 3, 4) for tier in range(4)] + [(0, 0, 0, 0)] * 50
    )

    def policy(obs, info):  # walk through the plans, falling back to an open one
        want = next(plans)
        mask = info["action_mask"][0]
        offsets = np.cumsum([0, *env.single_action_space.nvec])
        action = [
            w if mask[offsets[i] + w] else int(np.flatnonzero(mask[offsets[i] : offsets[i + 1]])[0])
            for i, w in enumerate(want)
        ]
        return np.array([action])

    rows = run_validation(env, policy, HW, decisions=10, steps=1, seed=0)
    env.close()
    assert len(rows) == 10
    tiers = {r["kv_tier"] for r in rows if r["target"] != "local"}
    assert {"ssd", "csd"} <= tiers
    for r in rows:
        assert r["measured_kv_link_bytes"] == pytest.approx(r["predicted_kv_link_bytes"], rel=1e-12)
        assert np.isfinite(r["relative_error"]) and r["measured_step_s"] > 0
        if r["kv_tier"] == "csd":  # q, k, v, o of every layer, independent of the context
            model = next(m for m in v.models if m.name == r["model"])
            assert r["measured_kv_link_bytes"] == model.qkvo_bytes_per_token
        if r["expert_accesses"]:
            assert 0 <= r["measured_expert_hits"] <= r["expert_accesses"]
    assert set(TIER_NAMES) >= tiers


def test_predictions_are_scaled_by_the_machine_speed_beside_each_decision():
    """With a reference, each prediction is scaled by the mean of the machine's speed just
    before and just after its decision; the unscaled error is kept beside it."""

    class Reference:  # slower by 2x before, 4x after: the decision ran at 3x
        calls = 0

        def drift(self):
            self.calls += 1
            return 2.0 if self.calls % 2 else 4.0

    v = validation_scenario(load_scenario("tiny"), HW)
    env = gym.make_vec("mec_env/LLMOffload-v0", num_envs=1, scenario=v, parallel=False)
    ref = Reference()
    rows = run_validation(
        env, lambda obs, info: np.zeros((1, 4), int), HW, 3, 1, seed=0, reference=ref
    )
    env.close()
    assert ref.calls == 2 * len(rows) == 6
    for r in rows:
        pred, meas = r["predicted_step_s"], r["measured_step_s"]
        assert r["speed_drift"] == 3.0
        assert r["relative_error"] == pytest.approx((meas - 3 * pred) / (3 * pred))
        assert r["relative_error_unscaled"] == pytest.approx((meas - pred) / pred)
    s = summarise(rows)
    assert s["speed_drift_min"] == s["speed_drift_max"] == 3.0


def test_reference_step_fits_positive_rates_and_measures_drift():
    ref = ReferenceStep()
    with pytest.raises(RuntimeError, match="fit"):
        ref.drift()
    gbps, flops = ref.fit(reps=3)
    assert gbps > 0 and flops > 0
    assert 0.1 < ref.drift(reps=3) < 10  # the same machine, moments later


def test_validate_cli_writes_the_report(tmp_path):
    profile = tmp_path / "profile.yaml"
    made = subprocess.run(
        [sys.executable, "-m", "devices.profile", "--quick", "--out", str(profile)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr[-2000:]
    out = tmp_path / "val"
    result = subprocess.run(
        [sys.executable, "evaluate.py", "--validate", "random", "--scenario", "tiny",
         "--validate-decisions", "4", "--profile", str(profile), "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    doc = json.loads((out / "validation.json").read_text())
    assert doc["summary"]["decisions"] == 4 and len(doc["decisions"]) == 4
    assert "median" in result.stdout and (out / "validation.csv").is_file()
    bad = subprocess.run(
        [sys.executable, "evaluate.py", "--validate", "/no/such/run", "--out", str(tmp_path / "b")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
