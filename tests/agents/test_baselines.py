"""Tests for agents.baselines: valid actions without fallback, determinism, and each heuristic's rule."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import mec_env  # noqa: F401  (registers the envs)
from agents.baselines import (
    BASELINES,
    Baseline,
    applicable_baselines,
    gmorl_predicted_costs,
    make_baseline,
)
from agents.common import objective_scale
from mec_env.envs.llm_offload import LLMOffloadEnv

LLM_ID, GMORL_ID = "mec_env/LLMOffload-v0", "mec_env/GMORLOffload-v0"
LLM_NAMES = [
    "random",
    "all-local",
    "all-offload",
    "least-loaded",
    "all-cloud",
    "round-robin",
    "greedy",
    "flexgen",
    "instinfer",
    "lru-experts",
]
GMORL_NAMES = ["random", "round-robin", "all-cloud", "least-loaded", "all-offload", "greedy"]
STEPS = 300


def make(env_id: str, num_envs: int | None = None, **kwargs):
    if num_envs is None:
        return gym.make(env_id, disable_env_checker=True, **kwargs)
    return gym.make_vec(env_id, num_envs=num_envs, **kwargs)


def masked_ok(u, actions: np.ndarray) -> np.ndarray:
    """LLMOffload: (N,) the plans are jointly open (or the request is rejected and plan = 0)."""
    c = u.core
    rows = np.arange(c.n)
    g, s, k, p = actions.T
    ok = c.part_mask(0)[rows, g] & c.ok_st[rows, g, s, k] & c.ok_p[rows, g, p]
    return np.where(c.rejecting, (actions == 0).all(axis=1), ok)


def test_registry_and_applicability():
    assert set(LLM_NAMES) | set(GMORL_NAMES) == set(BASELINES)
    assert sorted(applicable_baselines(make(LLM_ID))) == sorted(LLM_NAMES)
    assert sorted(applicable_baselines(make(GMORL_ID))) == sorted(GMORL_NAMES)
    for name in ("all-local", "flexgen", "instinfer", "lru-experts"):
        with pytest.raises(ValueError, match="does not apply"):
            make_baseline(name, make(GMORL_ID))


def test_unknown_name_raises_and_lists_known():
    with pytest.raises(ValueError, match="unknown baseline 'nope'") as e:
        make_baseline("nope", make(LLM_ID))
    assert all(name in str(e.value) for name in BASELINES)


def test_rejects_other_envs_and_bad_weights():
    with pytest.raises(ValueError, match="discrete plans"):
        make_baseline("random", make("mec_env/LLMOffloadContinuous-v0"))
    with pytest.raises(ValueError, match="no baselines"):
        make_baseline("random", gym.make("CartPole-v1"))
    env = make(LLM_ID)
    for bad in ([1.0, 0.0, 0.0], [-1.0, 1.0], [0.0, 0.0], [np.nan, 1.0]):
        with pytest.raises(ValueError, match="weights"):
            make_baseline("greedy", env, weights=bad)


@pytest.mark.parametrize("num_envs", [None, 4])
@pytest.mark.parametrize("name", LLM_NAMES)
def test_llm_baselines_valid_without_fallback(name, num_envs):
    env = make(LLM_ID, num_envs)
    u = env.unwrapped
    b = make_baseline(name, env, seed=1)
    obs, info = env.reset(seed=3)
    space = env.action_space
    for _ in range(STEPS):
        if num_envs is None:
            a = b.act(obs, info)
            assert a.shape == (4,) and a.dtype == np.int64 and space.contains(a)
            assert masked_ok(u, a[None]).all()
        else:
            a = b.act_batch(obs, info)
            assert a.shape == (num_envs, 4) and space.contains(a)
            assert masked_ok(u, a).all()
        obs, _, terminated, truncated, info = env.step(a)
        assert not np.any(info["fallback"]), (name, a, info["fallback"])
        if num_envs is None and (terminated or truncated):
            obs, info = env.reset()


@pytest.mark.parametrize("num_envs", [None, 4])
@pytest.mark.parametrize("name", GMORL_NAMES)
def test_gmorl_baselines_never_masked(name, num_envs):
    env = make(GMORL_ID, num_envs)
    b = make_baseline(name, env, seed=1)
    obs, info = env.reset(seed=3)
    for _ in range(STEPS):
        mask = np.asarray(env.unwrapped.action_masks()).reshape(-1, env.unwrapped._core.num_servers)
        if num_envs is None:
            a = b.act(obs, info)
            assert isinstance(a, int) and env.action_space.contains(a)
            acts = np.array([a])
        else:
            a = acts = b.act_batch(obs, info)
            assert a.shape == (num_envs,) and a.dtype == np.int64 and env.action_space.contains(a)
        assert mask[np.arange(len(acts)), acts].all()
        if name == "all-cloud":
            assert (acts == 0).all()
        obs, _, terminated, truncated, info = env.step(a)
        assert not np.any(info["fallback"])
        if num_envs is None and (terminated or truncated):
            obs, info = env.reset()


def test_rejected_requests_get_plan_zero():
    scenario = {
        "name": "nothing-fits",
        "devices": ["raspberry-pi-4"],
        "servers": [
            {"preset": "edge-a6000", "name": "tiny-only", "hosted_models": ["tinyllama-1.1b"]}
        ],
        "models": ["llama-3-8b", "tinyllama-1.1b"],
        "workload": {"mix": {"llama-3-8b": 1.0}},
        "max_servers": 2,
        "episode_requests": 4,
    }
    env = LLMOffloadEnv(scenario=scenario)
    obs, info = env.reset(seed=0)
    for name in LLM_NAMES:
        a = make_baseline(name, env).act(obs, info)
        assert (a == 0).all()
        _, _, _, _, step_info = env.step(a)
        assert step_info["rejected"] and not step_info["fallback"].any()
        obs, info = env.reset(seed=0)


def actions_of(name: str, env_id: str, seed: int, steps: int = 64, num_envs: int = 4):
    env = make(env_id, num_envs)
    b = make_baseline(name, env, seed=seed)
    obs, info = env.reset(seed=7)
    out = []
    for _ in range(steps):
        a = b.act_batch(obs, info)
        out.append(a.copy())
        obs, *_, info = env.step(a)
    return np.array(out)


@pytest.mark.parametrize("env_id", [LLM_ID, GMORL_ID])
def test_deterministic_with_seed(env_id):
    a = actions_of("random", env_id, seed=5)
    assert np.array_equal(a, actions_of("random", env_id, seed=5))
    assert not np.array_equal(a, actions_of("random", env_id, seed=6))
    assert np.array_equal(actions_of("greedy", env_id, 0), actions_of("greedy", env_id, 1))


def test_reset_restarts_the_generator():
    env = make(LLM_ID, 2)
    obs, info = env.reset(seed=0)
    b = make_baseline("random", env, seed=3)
    first = [b.act_batch(obs, info) for _ in range(5)]
    b.reset()
    assert np.array_equal(first, [b.act_batch(obs, info) for _ in range(5)])


def mean_costs(name: str, weights=None, episodes: int = 4) -> np.ndarray:
    env = make(LLM_ID, 4)
    b = make_baseline(name, env, weights=weights, seed=0)
    total, count = np.zeros(4), 0
    for ep in range(episodes // 4):
        obs, info = env.reset(seed=100 + ep)
        for _ in range(env.unwrapped.scenario.episode_requests):
            obs, _, _, _, info = env.step(b.act_batch(obs, info))
            total += info["costs"].sum(axis=0)
            count += len(info["costs"])
    return total / count


def test_greedy_beats_random_on_its_objective():
    rand = mean_costs("random")
    fast = mean_costs("greedy", weights=(1.0, 0.0))
    frugal = mean_costs("greedy", weights=(0.0, 1.0))
    assert fast[0] < rand[0]
    assert frugal[1] < rand[1]
    assert fast[0] < frugal[0] and frugal[1] < fast[1]


@pytest.mark.parametrize("weights", [None, (1.0, 0.0), (0.2, 0.8)])
def test_greedy_is_argmin_of_scalarised_plan_costs(weights):
    env = make(LLM_ID)
    u = env.unwrapped
    c = u.core
    b = make_baseline("greedy", env, weights=weights)
    w = np.full(2, 0.5) if weights is None else np.asarray(weights)
    scale = objective_scale(env)
    obs, info = env.reset(seed=11)
    for _ in range(40):
        plans = c.open_plans(0)
        costs = c.plan_costs(plans, 0)
        score = (costs[:, c.objective_index] / scale) @ w
        a = b.act(obs, info)
        i = int(np.flatnonzero((plans == a).all(axis=1))[0])
        assert score[i] == pytest.approx(score.min(), rel=1e-6)
        obs, _, _, _, info = env.step(a)
        assert np.allclose(info["costs"], costs[i], rtol=1e-9)  # the prediction is the charge


def test_greedy_set_weights_per_env():
    env = make(LLM_ID, 2)
    obs, info = env.reset(seed=2)
    b = make_baseline("greedy", env)
    b.set_weights([[1.0, 0.0], [0.0, 1.0]])
    a = b.act_batch(obs, info)
    c = env.unwrapped.core
    for n, w in enumerate(([1.0, 0.0], [0.0, 1.0])):
        plans = c.open_plans(n)
        score = (c.plan_costs(plans, n)[:, c.objective_index] / b.scale) @ np.array(w)
        assert np.array_equal(a[n], plans[np.argmin(score)])


def run_llm(name: str, steps: int = 200, num_envs: int = 4):
    """Yield (core, actions) before each step of a vector env driven by the baseline."""
    env = make(LLM_ID, num_envs)
    b = make_baseline(name, env, seed=0)
    obs, info = env.reset(seed=21)
    for _ in range(steps):
        a = b.act_batch(obs, info)
        yield env.unwrapped.core, a
        obs, _, _, _, info = env.step(a)


def test_instinfer_puts_kv_on_the_csd():
    hits = 0
    for c, a in run_llm("instinfer"):
        servers = c.scenario.servers
        for n in range(c.n):
            open_servers = np.flatnonzero(c.part_mask(0)[n, 1 : len(servers) + 1]) + 1
            csd_ok = [g for g in open_servers if c.ok_st[n, g, :, 3].any()]
            if csd_ok:
                hits += 1
                assert a[n, 2] == 3 and a[n, 0] in csd_ok
                assert servers[a[n, 0] - 1].csd is not None
            else:
                assert a[n, 2] != 3
    assert hits > 100


def test_flexgen_uses_host_dram():
    hits = 0
    for c, a in run_llm("flexgen"):
        for n in range(c.n):
            g, s, k, p = a[n]
            if g > 0 and c.ok_st[n, g, s, 1]:
                hits += 1
                assert k == 1
            if c.ok_p[n, g, 0]:
                assert p == 0  # experts on demand
    assert hits > 100


def test_all_local_runs_locally_when_open():
    local = 0
    for c, a in run_llm("all-local"):
        open_local = c.part_mask(0)[:, 0] & ~c.rejecting
        assert (a[open_local, 0] == 0).all()
        assert (a[~open_local & ~c.rejecting, 0] > 0).all()
        local += open_local.sum()
    assert local > 50


def test_least_loaded_and_lru_experts_rules():
    for c, a in run_llm("all-offload", steps=100):
        for n in range(c.n):
            servers = np.flatnonzero(c.part_mask(0)[n, 1 : len(c.scenario.servers) + 1]) + 1
            if servers.size:
                rows = c.res_of_target[c.req_device[n], servers]
                load = c.busy[n, rows] / c.slots_per_resource[rows]
                assert a[n, 0] == servers[np.argmin(load)]
                if c.ok_p[n, a[n, 0], 1]:
                    assert a[n, 3] == 1
    moe = 0
    for c, a in run_llm("lru-experts", steps=100):
        for n in range(c.n):
            if a[n, 0] > 0 and c.ok_p[n, a[n, 0], 1]:
                moe += 1
                assert a[n, 3] == 1 and a[n, 1] == 0
    assert moe > 10


def test_round_robin_cycles_over_open_servers():
    env = make(LLM_ID)
    c = env.unwrapped.core
    b = make_baseline("round-robin", env)
    obs, info = env.reset(seed=4)
    last = 0
    for _ in range(100):
        servers = np.flatnonzero(c.part_mask(0)[0, 1 : len(c.scenario.servers) + 1]) + 1
        a = b.act(obs, info)
        if servers.size:
            after = servers[servers > last]
            assert a[0] == (after[0] if after.size else servers[0])
            last = a[0]
        obs, _, _, _, info = env.step(a)


def test_baseline_refuses_another_envs_obs_and_can_rebind():
    env, other = make(LLM_ID, 2), make(LLM_ID, 2)
    env.reset(seed=0)
    obs, info = other.reset(seed=1)
    b = make_baseline("greedy", env)
    with pytest.raises(ValueError, match="bind"):
        b.act_batch(obs, info)
    b.bind(other)
    assert b.act_batch(obs, info).shape == (2, 4)
    with pytest.raises(ValueError, match="act_batch"):
        b.act(obs[0], info)


def test_gmorl_least_loaded_reads_obs_like_the_core():
    env = make(GMORL_ID, 4)
    b = make_baseline("least-loaded", env)
    core = env.unwrapped._core
    obs, info = env.reset(seed=0)
    for _ in range(100):
        from_obs = b.act_batch(obs, info)
        assert np.array_equal(from_obs, b.act_batch())  # no obs: the core's state
        load = core.n_running + core.n_uploading
        for n in range(4):
            assert load[n, from_obs[n]] == load[n][core.present[n]].min()
        obs, _, _, _, info = env.step(from_obs)


def test_gmorl_greedy_predicts_the_charged_reward():
    env = make(GMORL_ID, num_edges=6, cloud_ghz=4.0, edge_ghz=2.0)
    core = env.unwrapped._core
    b = make_baseline("greedy", env, weights=(1.0, 0.0))
    obs, info = env.reset(seed=0)
    for _ in range(100):
        a = b.act(obs, info)
        predicted = gmorl_predicted_costs(core, 0)
        assert predicted[a, 0] == predicted[core.present[0], 0].min()
        obs, reward, _, truncated, info = env.step(a)
        assert info["delay_s"] == pytest.approx(predicted[a, 0], rel=1e-9, abs=1e-12)
        assert info["energy_j"] == pytest.approx(predicted[a, 1], rel=1e-9, abs=1e-12)
        if truncated:
            obs, info = env.reset()


def test_gmorl_greedy_beats_random_on_delay():
    def mean_delay(name):
        env = make(GMORL_ID, 4, num_edges=6, cloud_ghz=4.0, edge_ghz=2.0)
        b = make_baseline(name, env, weights=(1.0, 0.0), seed=0)
        obs, info = env.reset(seed=0)
        total = 0.0
        for _ in range(100):
            obs, reward, _, _, info = env.step(b.act_batch(obs, info))
            total += info["delay_s"].sum()
        return total

    assert mean_delay("greedy") < mean_delay("random")


def test_baseline_base_class_is_abstract():
    env = make(LLM_ID)
    env.reset(seed=0)
    with pytest.raises(NotImplementedError):
        Baseline(env).act_batch()


def test_act_batch_is_an_evaluation_policy():
    from agents.evaluation import episode_returns

    prefs = np.array([[1.0, 0.0], [0.0, 1.0]])
    env = make(LLM_ID, 2)
    b = make_baseline("greedy", env)
    returns = episode_returns(env, b.act_batch, prefs, episodes=1, seed=0)
    assert np.array_equal(b.weights, prefs)
    assert returns[0, 0] > returns[1, 0] and returns[1, 1] > returns[0, 1]  # rewards: -cost
