"""``cost_features=True`` on the main env: the cost model's per-target predictions appended to
the observation. Checked against a reference built from ``core.plan_costs`` (what greedy
myopic reads), and against the plain env: the features only append, never change the world."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_random_scenarios import scenarios  # the random-scenario strategy

import mec_env  # noqa: F401
from mec_env.envs.llm_offload import LLMOffloadEnv
from mec_env.masks import MaskSampler


def reference_target_costs(core, n: int = 0) -> np.ndarray:
    """(targets, O, O) from plan_costs over the open plans: row j = the costs of the target's
    plan cheapest in objective j (first on ties), inf for a target with no open plan."""
    O = len(core.objective_index)
    out = np.full((core.num_targets, O, O), np.inf)
    if core.rejecting[n]:
        return out
    plans = core.open_plans(n)
    if len(plans) == 0:
        return out
    costs = core.plan_costs(plans, n)[:, core.objective_index]
    for g in np.unique(plans[:, 0]):
        mine = costs[plans[:, 0] == g]
        for j in range(O):
            out[g, j] = mine[np.argmin(mine[:, j])]
    return out


def split_obs(env, obs):
    """(plain observation, request cost features, server rows' cost features) of one obs."""
    core = env.unwrapped.core
    nreq, S, per = core.observation_size()
    f = core.num_cost_features
    rows = obs[nreq + f :].reshape(S, per + f)
    plain = np.concatenate([obs[:nreq], rows[:, :per].ravel()])
    return plain, obs[nreq : nreq + f], rows[:, per:]


def step_both(scenario, seed, steps):
    """Yield (featured env, its obs, plain env's obs) along one random valid trajectory."""
    env = LLMOffloadEnv(scenario, cost_features=True)
    plain = LLMOffloadEnv(scenario)
    obs, info = env.reset(seed=seed)
    ref, _ = plain.reset(seed=seed)
    rng = np.random.default_rng(seed)
    sample = MaskSampler(env.action_space.nvec)
    for _ in range(steps):
        yield env, obs, ref
        action = sample(info["action_mask"], rng)
        obs, reward, _, truncated, info = env.step(action)
        ref, ref_reward, _, _, _ = plain.step(action)
        np.testing.assert_array_equal(reward, ref_reward)
        if truncated:
            obs, info = env.reset()
            ref, _ = plain.reset()


@pytest.mark.parametrize("scenario", ["default", "three-objective", "examples/rush-hour.yaml"])
def test_target_costs_are_each_targets_cheapest_open_plan(scenario):
    checked = 0
    for env, _, _ in step_both(scenario, 3, 150):
        core = env.core
        np.testing.assert_allclose(core.target_costs[0], reference_target_costs(core), rtol=1e-12)
        checked += np.isfinite(core.target_costs[0, :, 0, 0]).sum()
    assert checked > 150  # most steps have several open targets


@pytest.mark.parametrize("scenario", ["default", "three-objective", "examples/rush-hour.yaml"])
def test_features_only_append_to_the_plain_observation(scenario):
    saw_closed = False
    for env, obs, ref in step_both(scenario, 4, 150):
        core = env.core
        assert env.observation_space.contains(obs)
        plain, local, servers = split_obs(env, obs)
        np.testing.assert_array_equal(plain, ref)
        feat = core.target_cost_features()[0]
        np.testing.assert_array_equal(local, feat[0])
        real = len(core.scenario.servers)
        np.testing.assert_array_equal(servers[:real], feat[1 : 1 + real])
        assert not servers[real:].any()  # padded rows stay zero
        O = len(core.objective_index)
        ratio = feat[:, O * O :]
        is_open = np.isfinite(core.target_costs[0, :, 0, 0])
        if is_open.any():
            # the cheapest open target in each objective gets ratio 1, closed ones 0
            assert np.allclose(ratio[is_open].max(axis=0), 1.0)
        assert np.all(ratio[~is_open] == 0.0) and np.all(feat[~is_open, : O * O] == 1.0)
        saw_closed |= bool((~is_open[: 1 + real]).any())
    assert saw_closed


def test_features_order_targets_like_the_costs():
    """A cheaper prediction never gets a larger feature (the scaling is monotone)."""
    for env, _, _ in step_both("default", 5, 100):
        core = env.core
        c = core.target_costs[0].reshape(core.num_targets, -1)
        f = core.target_cost_features()[0][:, : c.shape[1]]
        for col in range(c.shape[1]):
            order = np.argsort(c[:, col], kind="stable")
            assert np.all(np.diff(f[order, col]) >= 0)


def test_layout_and_spaces():
    env = gym.make("mec_env/LLMOffload-v0", cost_features=True)
    plain = gym.make("mec_env/LLMOffload-v0")
    core = env.unwrapped.core
    O = len(core.objective_index)
    assert core.num_cost_features == O * O + O
    nreq, S, per = plain.unwrapped.obs_layout["servers"]
    f = core.num_cost_features
    assert env.unwrapped.obs_layout == {"request": (0, nreq + f), "servers": (nreq + f, S, per + f)}
    assert env.observation_space.shape[0] == plain.observation_space.shape[0] + f * (1 + S)
    with pytest.raises(ValueError, match="cost_features must be a bool, got 'yes'"):
        LLMOffloadEnv(cost_features="yes")


@pytest.mark.parametrize("env_id", ["mec_env/LLMOffload-v0", "mec_env/LLMOffloadContinuous-v0"])
def test_checkers_pass_with_cost_features(env_id):
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    from mec_env.wrappers import LinearScalarization

    env = gym.make(env_id, cost_features=True)
    env.action_space.seed(0)
    scalar = LinearScalarization(gym.make(env_id, cost_features=True))
    scalar.reset(seed=0)
    scalar.action_space.seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # vector rewards: Gymnasium's checker warns, fine
        check_env(env.unwrapped)
        sb3_check_env(scalar)


def test_vector_env_matches_single_envs():
    seeds = [11, 12, 13]
    vec = gym.make_vec("mec_env/LLMOffload-v0", num_envs=3, cost_features=True)
    singles = [LLMOffloadEnv(cost_features=True) for _ in seeds]
    obs, info = vec.reset(seed=seeds)
    for i, (env, s) in enumerate(zip(singles, seeds, strict=True)):
        np.testing.assert_array_equal(obs[i], env.reset(seed=s)[0])
    rng = np.random.default_rng(0)
    sample = MaskSampler(vec.single_action_space.nvec)
    for _ in range(40):
        actions = np.stack([sample(m, rng) for m in info["action_mask"]])
        obs, _, _, _, info = vec.step(actions)
        for i, env in enumerate(singles):
            np.testing.assert_array_equal(obs[i], env.step(actions[i])[0])


def test_copied_state_carries_its_features():
    """copy_rows / set_state (the oracle's branching) leave the features of the copied world."""
    vec = gym.make_vec("mec_env/LLMOffload-v0", num_envs=2, cost_features=True)
    vec.reset(seed=[1, 2])
    core = vec.unwrapped.core
    for _ in range(5):
        vec.step(np.zeros((2, 4), np.int64))  # local, falls back where local is closed
    core.copy_rows(np.array([0]), np.array([1]))
    np.testing.assert_array_equal(core.observation()[1], core.observation()[0])
    state = core.get_state(np.array([1]))
    vec.step(np.zeros((2, 4), np.int64))
    core.set_state(state, np.array([0]))
    np.testing.assert_array_equal(core.target_costs[0], reference_target_costs(core, 0))


def test_greedy_acts_in_an_env_with_cost_features():
    from agents.baselines import make_baseline

    env = gym.make("mec_env/LLMOffload-v0", cost_features=True)
    obs, info = env.reset(seed=0)
    greedy = make_baseline("greedy", env)
    for _ in range(10):
        obs, *_, info = env.step(greedy.act(obs, info))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios(), seed=st.integers(0, 2**32 - 1))
def test_random_scenarios_features_match_the_reference(scenario, seed):
    for env, obs, ref in step_both(scenario, seed, 10):
        assert env.observation_space.contains(obs)
        np.testing.assert_array_equal(split_obs(env, obs)[0], ref)
        np.testing.assert_allclose(
            env.core.target_costs[0], reference_target_costs(env.core), rtol=1e-12
        )
