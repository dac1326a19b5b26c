"""Random valid scenarios (Hypothesis): the env builds and steps inside its spaces.

Scenarios are kept small (1-3 devices, servers and models, 4-8 requests per episode) so that
500 examples run in a few seconds; they draw hardware and models from the presets and every
workload, network, objective and server knob from its valid range.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mec_env.envs.llm_offload import LLMOffloadContinuousEnv, LLMOffloadEnv
from mec_env.hardware import DEVICE_PRESETS, SERVER_PRESETS
from mec_env.models import MODEL_PRESETS

OBJECTIVES = ("latency", "energy", "cost", "accuracy")


def floats(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


def log_floats(lo_exp: float, hi_exp: float) -> st.SearchStrategy[float]:
    """10 ** u for u uniform in [lo_exp, hi_exp]: spans orders of magnitude."""
    return floats(lo_exp, hi_exp).map(lambda u: float(10.0**u))


@st.composite
def servers(draw, models: list[str], count: int) -> list[dict]:
    out = []
    for j in range(count):
        server: dict = {"preset": draw(st.sampled_from(sorted(SERVER_PRESETS))), "name": f"s{j}"}
        hosted = draw(st.none() | st.lists(st.sampled_from(models), unique=True))
        if hosted is not None:
            server["hosted_models"] = hosted  # [] means "all models", like omitting it
        if draw(st.booleans()):
            server["expert_cache_gb"] = draw(st.just(0.0) | floats(0.0, 120.0))
        if draw(st.booleans()):
            server["max_running"] = draw(st.integers(1, 64))
        out.append(server)
    return out


@st.composite
def workloads(draw, models: list[str]) -> dict:
    keys = draw(st.lists(st.sampled_from(models), min_size=1, unique=True))
    mix = {k: draw(floats(0.0, 1.0)) for k in keys}
    mix[keys[0]] = draw(floats(1e-3, 1.0))  # weights sum to > 0
    p_min = draw(st.integers(1, 64))
    o_min = draw(st.integers(1, 64))
    return {
        "mix": mix,
        "arrival_rate_hz": draw(log_floats(-3, 2)),
        "prompt_tokens_median": draw(log_floats(0, 4)),
        "prompt_tokens_sigma": draw(floats(0.0, 5.0)),
        "prompt_tokens_min": p_min,
        "prompt_tokens_max": p_min + draw(st.integers(0, 1 << 16)),
        "output_tokens_median": draw(log_floats(0, 3.5)),
        "output_tokens_sigma": draw(floats(0.0, 5.0)),
        "output_tokens_min": o_min,
        "output_tokens_max": o_min + draw(st.integers(0, 4096)),
    }


@st.composite
def networks(draw) -> dict:
    d_min = draw(floats(1.0, 1000.0))
    return {
        "wireless_bandwidth_hz": draw(log_floats(5, 9)),
        "noise_dbm_per_hz": draw(floats(-200.0, -100.0)),
        "path_loss_at_1km_db": draw(floats(0.0, 160.0)),
        "path_loss_slope_db": draw(floats(1.0, 60.0)),
        "shadowing_std_db": draw(floats(0.0, 15.0)),
        "fading": draw(st.sampled_from(["rayleigh", "none"])),
        "distance_min_m": d_min,
        "distance_max_m": d_min + draw(floats(0.0, 2000.0)),
        "min_rate_bps": draw(log_floats(3, 8)),
        "wireless_latency_s": draw(floats(0.0, 0.05)),
        "num_access_points": draw(st.integers(1, 8)),
        "edge_link_gbps": draw(log_floats(-2, 2)),
        "edge_link_latency_s": draw(floats(0.0, 0.01)),
        "cloud_link_gbps": draw(log_floats(-3, 1)),
        "cloud_link_latency_s": draw(floats(0.0, 0.2)),
    }


@st.composite
def objectives(draw) -> dict:
    names = draw(st.permutations(OBJECTIVES))[: draw(st.integers(1, 4))]
    low = [-draw(log_floats(0, 6)) for _ in names]
    return {
        "names": list(names),
        "return_low": low,
        "return_high": [lo + draw(log_floats(-1, 6)) for lo in low],
        "reference_point": [-draw(floats(0.01, 1.0)) for _ in names],
    }


@st.composite
def scenarios(draw) -> dict:
    models = draw(
        st.lists(st.sampled_from(sorted(MODEL_PRESETS)), min_size=1, max_size=3, unique=True)
    )
    n_servers = draw(st.integers(1, 3))
    return {
        "name": "random",
        "devices": draw(st.lists(st.sampled_from(sorted(DEVICE_PRESETS)), min_size=1, max_size=3)),
        "servers": draw(servers(models, n_servers)),
        "models": models,
        "workload": draw(workloads(models)),
        "network": draw(networks()),
        "objectives": draw(objectives()),
        "max_servers": n_servers + draw(st.integers(0, 4)),
        "episode_requests": draw(st.integers(4, 8)),
        "histogram_bins": draw(st.integers(1, 16)),
        "histogram_max_s": draw(log_floats(-1, 3)),
        "rejection_penalty_s": draw(log_floats(-1, 4)),
    }


def check_step(env, obs, reward, info) -> None:
    assert obs.dtype == np.float32 and env.observation_space.contains(obs), (
        f"observation outside its space: min {obs.min()} max {obs.max()}"
    )
    assert reward.dtype == np.float32 and reward.shape == (env.reward_dim,)
    assert np.all(np.isfinite(reward)), reward
    assert env.reward_space.contains(reward), (reward, env.reward_space)
    assert np.all(np.isfinite(info["costs"])) and np.all(info["costs"] >= 0), info["costs"]


@settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenario=scenarios(), seed=st.integers(0, 2**32 - 1))
def test_random_scenarios_step_inside_spaces(scenario, seed):
    env = LLMOffloadEnv(scenario=scenario)
    assert env.reward_dim == len(scenario["objectives"]["names"])
    assert env.action_space.nvec[0] == 1 + scenario["max_servers"]
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    assert env.observation_space.contains(obs)
    off = env.core.mask_offsets
    for t in range(12):
        mask = info["action_mask"]
        if t < 10:  # valid: each part uniformly among its open entries
            action = np.array(
                [rng.choice(np.flatnonzero(mask[off[p] : off[p + 1]])) for p in range(4)]
            )
        else:  # any action in the space (masked parts fall back)
            action = rng.integers(0, env.action_space.nvec)
        obs, reward, terminated, truncated, info = env.step(action)
        assert terminated is False
        check_step(env, obs, reward, info)
        if info["rejected"]:
            assert info["costs"][0] == env.scenario.rejection_penalty_s
            event("a request was rejected")
        if info["fallback"].any():
            event("a part fell back")
        if info["plan"][0] == 0:
            event("ran locally")
        if truncated:
            obs, info = env.reset()
            assert env.observation_space.contains(obs)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios(), seed=st.integers(0, 2**32 - 1))
def test_random_scenarios_continuous_env(scenario, seed):
    env = LLMOffloadContinuousEnv(scenario=scenario)
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    for _ in range(8):
        # extremes and interior points: tx power floor, lowest frequency, ties in the scores
        action = np.where(
            rng.random(env.action_space.shape) < 0.3,
            rng.choice([-1.0, 1.0], env.action_space.shape),
            rng.uniform(-1.0, 1.0, env.action_space.shape),
        ).astype(np.float32)
        obs, reward, _, truncated, info = env.step(action)
        check_step(env, obs, reward, info)
        if truncated:
            env.reset()


def _plans_of(plan_mask: np.ndarray, nvec) -> set[tuple[int, ...]]:
    g, ns, k, np_ = (int(x) for x in nvec)
    target = plan_mask[:g]
    pairs = plan_mask[g : g + g * ns * k].reshape(g, ns, k)
    pol = plan_mask[g + g * ns * k :].reshape(g, np_)
    joint = target[:, None, None, None] & pairs[..., None] & pol[:, None, None, :]
    return set(map(tuple, np.argwhere(joint).tolist()))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios(), seed=st.integers(0, 2**32 - 1))
def test_plan_mask_is_exactly_the_plans_that_run_without_fallback(scenario, seed):
    """info["plan_mask"] lists exactly the core's open plans (plan (0, 0, 0, 0) alone when the
    request is rejected), and any plan it opens runs with no part replaced."""
    env = LLMOffloadEnv(scenario=scenario, invalid_action="raise")
    rng = np.random.default_rng(seed)
    _, info = env.reset(seed=seed)
    for _ in range(12):
        mask = info["plan_mask"]
        assert mask.shape == (env.core.plan_mask_size,) and mask.dtype == np.bool_
        plans = _plans_of(mask, env.action_space.nvec)
        if env.core.rejecting[0]:
            assert plans == {(0, 0, 0, 0)}
            event("rejecting")
        else:
            assert plans == set(map(tuple, env.core.open_plans(0).tolist()))
        action = np.array(sorted(plans)[rng.integers(len(plans))])
        _, _, _, truncated, info = env.step(action)
        assert not info["fallback"].any()
        if truncated:
            _, info = env.reset()
