"""Tests for mec_env.envs.gmorl (GMORL's offloading world: single env, vector env, core)."""

from __future__ import annotations

import copy
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from mec_env.cost_model import ps_advance
from mec_env.envs.gmorl import (
    FEATURES,
    KAPPA,
    RANGES,
    TX_POWER_W,
    GMORLBatchedCore,
    GMORLOffloadEnv,
    GMORLVectorEnv,
)

ROW = {name: i for i, name in enumerate(FEATURES)}  # observation row of each feature


class ScalarisedReward(gym.Wrapper):
    """Linear scalarisation to a Python float (SB3's checker rejects vector / float32 rewards)."""

    def __init__(self, env: gym.Env, weights=(0.5, 0.5)) -> None:
        super().__init__(env)
        self.weights = np.asarray(weights, dtype=np.float64)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["vector_reward"] = reward
        return obs, float(self.weights @ reward), terminated, truncated, info


def random_valid(rng: np.random.Generator, mask: np.ndarray) -> int:
    return int(rng.choice(np.flatnonzero(mask)))


def rollout(env: GMORLOffloadEnv, seed: int, steps: int, action_seed: int = 0):
    """(obs, reward, info) of ``steps`` steps with random valid actions, resetting on truncation."""
    rng = np.random.default_rng(action_seed)
    obs, info = env.reset(seed=seed)
    out = [(obs, np.zeros(2, np.float32), info)]
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(random_valid(rng, info["action_mask"]))
        out.append((obs, reward, info))
        if terminated or truncated:
            obs, info = env.reset()
    return out


# --- API checkers ------------------------------------------------------------------------------


def test_gymnasium_check_env():
    env = GMORLOffloadEnv(render_mode="ansi", invalid_action="fallback")
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*reward returned by `step\\(\\)` must be a float"
        )
        warnings.filterwarnings("ignore", message=".*Not able to test alternative render modes")
        check_env(env, skip_render_check=False)


def test_sb3_check_env_on_scalarised_env():
    env = ScalarisedReward(GMORLOffloadEnv(invalid_action="fallback"))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*unconventional shape")
        sb3_check_env(env, warn=True)


@pytest.mark.filterwarnings("ignore:.*reward returned by `step\\(\\)` must be a float")
def test_registered_id_makes_the_env():
    env_id = "mec_env_test/GMORLOffloadTestOnly-v0"
    gym.register(
        id=env_id,
        entry_point="mec_env.envs.gmorl:GMORLOffloadEnv",
        vector_entry_point="mec_env.envs.gmorl:GMORLVectorEnv",
        max_episode_steps=None,
    )
    try:
        env = gym.make(env_id, num_edges=6, cloud_ghz=4.0, edge_ghz=2.0)
        obs, info = env.reset(seed=3)
        assert env.observation_space.contains(obs)
        assert env.unwrapped.reward_dim == 2
        env.step(0)
        envs = gym.make_vec(env_id, num_envs=3, vectorization_mode="vector_entry_point")
        obs, info = envs.reset(seed=3)
        assert obs.shape == (3, *env.observation_space.shape)
        _, rewards, *_ = envs.step(np.zeros(3, np.int64))
        assert rewards.shape == (3, 2)
    finally:
        gym.registry.pop(env_id)


# --- spaces and rollouts -----------------------------------------------------------------------


@pytest.mark.parametrize("ranges", ["train", "test"])
def test_random_steps_stay_in_spaces(ranges):
    env = GMORLOffloadEnv(ranges=ranges)
    steps = 5_000
    for obs, reward, info in rollout(env, seed=11, steps=steps):
        assert obs.dtype == np.float32 and env.observation_space.contains(obs)
        assert reward.dtype == np.float32 and reward.shape == (2,)
        assert env.reward_space.contains(reward), reward
        assert info["action_mask"][0] and info["action_mask"].dtype == bool


def test_reward_space_holds_at_the_rate_floor():
    """The worst links (every rate at the floor) still give rewards inside reward_space."""
    env = GMORLOffloadEnv(ranges="test", min_rate_bps=1e4)
    rng = np.random.default_rng(0)
    obs, info = env.reset(seed=5)
    env.unwrapped._core.rate_bps[:] = 1e4
    for _ in range(100):
        obs, reward, _, truncated, info = env.step(random_valid(rng, info["action_mask"]))
        assert env.reward_space.contains(reward) and np.all(reward <= 0)
    assert truncated


def test_episode_truncates_after_T_steps():
    env = GMORLOffloadEnv()
    obs, info = env.reset(seed=0)
    for t in range(100):
        obs, reward, terminated, truncated, info = env.step(0)
        assert not terminated
        assert truncated == (t == 99)
    assert obs[ROW["time"], 0] == 1.0
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)


def test_empty_task_gives_zero_reward():
    env = GMORLOffloadEnv()
    seen = 0
    rng = np.random.default_rng(0)
    info = env.reset(seed=2)[1]
    for _ in range(400):
        empty = info["task_mbit"] == 0.0
        _, reward, _, truncated, info = env.step(random_valid(rng, info["action_mask"]))
        if empty:
            seen += 1
            np.testing.assert_array_equal(reward, [0.0, 0.0])
        if truncated:
            info = env.reset()[1]
    assert seen > 0  # Poisson(1) arrivals leave the queue empty now and then


# --- determinism -------------------------------------------------------------------------------


def test_same_seed_same_trajectory_different_seed_differs():
    a = rollout(GMORLOffloadEnv(), seed=7, steps=250)
    b = rollout(GMORLOffloadEnv(), seed=7, steps=250)
    c = rollout(GMORLOffloadEnv(), seed=8, steps=250)
    for (oa, ra, ia), (ob, rb, ib) in zip(a, b, strict=True):
        np.testing.assert_array_equal(oa, ob)
        np.testing.assert_array_equal(ra, rb)
        assert ia["task_mbit"] == ib["task_mbit"]
    assert any(not np.array_equal(oa, oc) for (oa, _, _), (oc, _, _) in zip(a, c, strict=True))


def test_reset_uses_only_the_env_generator():
    np.random.seed(0)  # noqa: NPY002 - numpy's global RNG must not matter
    first = GMORLOffloadEnv().reset(seed=4)[0]
    np.random.seed(1)  # noqa: NPY002
    second = GMORLOffloadEnv().reset(seed=4)[0]
    np.testing.assert_array_equal(first, second)


def test_vector_env_with_one_env_matches_single_env():
    single = GMORLOffloadEnv(ranges="test")
    vector = GMORLVectorEnv(1, ranges="test")
    rng = np.random.default_rng(1)
    obs_s, info_s = single.reset(seed=21)
    obs_v, info_v = vector.reset(seed=21)
    for _ in range(230):  # two truncations: autoreset must line up with reset()
        np.testing.assert_array_equal(obs_s, obs_v[0])
        np.testing.assert_array_equal(info_s["action_mask"], vector.action_masks()[0])
        action = random_valid(rng, info_s["action_mask"])
        obs_s, r_s, _, trunc_s, info_s = single.step(action)
        obs_v, r_v, _, trunc_v, info_v = vector.step(np.array([action]))
        np.testing.assert_array_equal(r_s, r_v[0])
        assert trunc_s == trunc_v[0]
        if trunc_s:
            obs_s, info_s = single.reset()
            obs_v, r_v, _, trunc_v, _ = vector.step(np.array([0]))  # NEXT_STEP autoreset
            np.testing.assert_array_equal(r_v, [[0.0, 0.0]])
            assert not trunc_v[0]


# --- vector env ---------------------------------------------------------------------------------


def test_vector_env_shapes_spaces_and_autoreset():
    n = 16
    envs = GMORLVectorEnv(n, ranges="train")
    assert envs.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    obs, info = envs.reset(seed=0)
    assert obs.shape == (n, *envs.single_observation_space.shape)
    assert envs.observation_space.contains(obs)
    assert envs.action_masks().shape == (n, envs.single_action_space.n)
    assert len(set(envs.unwrapped._core.num_edges.tolist())) > 1  # per-env randomisation
    rng = np.random.default_rng(0)
    for t in range(201):
        masks = envs.action_masks()
        actions = np.array([random_valid(rng, m) for m in masks])
        assert envs.action_space.contains(actions)
        obs, rewards, terminated, truncated, info = envs.step(actions)
        assert rewards.shape == (n, 2) and rewards.dtype == np.float32
        assert np.isfinite(rewards).all() and envs.reward_space.contains(rewards)
        assert envs.observation_space.contains(obs)
        assert not terminated.any()
        assert truncated.all() == (t in (99, 200))
        if t == 100:  # the step after the truncation reset every env
            np.testing.assert_array_equal(rewards, 0.0)
            assert (obs[:, ROW["time"], 0] == 0).all()


def test_vector_env_partial_reset_keeps_other_envs():
    envs = GMORLVectorEnv(4)
    envs.reset(seed=1)
    for _ in range(10):
        envs.step(np.zeros(4, np.int64))
    core = envs.unwrapped._core
    before = core.step_index.copy()
    obs, _ = envs.reset(options={"reset_mask": np.array([True, False, True, False])})
    np.testing.assert_array_equal(core.step_index, [0, before[1], 0, before[3]])
    assert envs.observation_space.contains(obs)
    for t in range(90):  # envs 1 and 3 reach T = 100 first
        obs, rewards, _, truncated, info = envs.step(np.zeros(4, np.int64))
        assert envs.observation_space.contains(obs) and rewards.shape == (4, 2)
        np.testing.assert_array_equal(truncated, [False, t == 89, False, t == 89])
    obs, rewards, _, truncated, info = envs.step(np.zeros(4, np.int64))  # partial autoreset
    np.testing.assert_array_equal(core.step_index, [91, 0, 91, 0])
    np.testing.assert_array_equal(rewards[[1, 3]], 0.0)
    np.testing.assert_array_equal(info["delay_s"][[1, 3]], 0.0)
    assert not truncated.any() and envs.observation_space.contains(obs)
    np.testing.assert_array_equal(obs[[1, 3], ROW["time"], 0], 0.0)


# --- physics -----------------------------------------------------------------------------------


def _core_with_edge(edge_ghz: float = 2.0) -> GMORLBatchedCore:
    """A reset core with one 2 GHz edge (mu = 2 Mbit/s) and no tasks anywhere."""
    core = GMORLBatchedCore(1, num_edges=1, cloud_ghz=4.0, edge_ghz=edge_ghz)
    core.reset(np.random.default_rng(0))
    return core


def _run_tasks_on_edge(core: GMORLBatchedCore, works_mbit, until_s: float) -> int:
    """Put tasks on edge 1 (uploads done at t = 0), run to ``until_s``; return how many run."""
    for slot, work in enumerate(works_mbit):
        core.task_server[0, slot] = 1
        core.task_work_mbit[0, slot] = work
        core.upload_done_s[0, slot] = 0.0
        core.n_uploading[0, 1] += 1
    core._run_until(np.array([until_s]))
    return int(core.n_running[0, 1])


@pytest.mark.parametrize("tasks", [1, 2, 3])
def test_processor_sharing_n_equal_tasks_take_n_times_as_long(tasks):
    alone_s = 4.0 / 2.0  # 4 Mbit at 2 Mbit/s
    assert _run_tasks_on_edge(_core_with_edge(), [4.0] * tasks, tasks * alone_s - 1e-6) == tasks
    assert _run_tasks_on_edge(_core_with_edge(), [4.0] * tasks, tasks * alone_s + 1e-6) == 0


@settings(max_examples=60, deadline=None)
@given(
    works=hnp.arrays(np.float64, st.integers(1, 8), elements=st.floats(0.1, 30.0)),
    until_s=st.floats(0.0, 80.0),
)
def test_processor_sharing_matches_cost_model_ps_advance(works, until_s):
    core = _core_with_edge()
    _run_tasks_on_edge(core, works, until_s)
    left = np.maximum(core.task_finish_mbit[0, : len(works)] - core.v_mbit[0, 1], 0.0)
    left[left <= 1e-9] = 0.0
    expected = ps_advance(works, until_s * 2.0)  # 2 Mbit/s of service
    np.testing.assert_allclose(left, expected, atol=1e-7)
    assert core.n_running[0, 1] == np.count_nonzero(expected > 1e-9)


def test_processor_sharing_reward_of_a_task_joining_an_equal_one():
    """Own delay 2w/mu and added delay w/mu when the running task has the same work left."""
    core = _core_with_edge()
    _run_tasks_on_edge(core, [6.0], until_s=1.0)  # 4 Mbit left on edge 1 at t = 1 s
    core.rate_bps[:] = 1e18  # negligible upload time
    core.task_mbit[:] = 4.0
    core.step_index[:] = 1
    core.step(np.array([1]))
    np.testing.assert_allclose(core.delay_s, [4.0 + 2.0], rtol=1e-9)  # own 4 s + added 2 s


def test_step_energy_and_delay_on_an_idle_server():
    env = GMORLOffloadEnv(num_edges=3, cloud_ghz=4.0, edge_ghz=2.0)
    obs, info = env.reset(seed=9)
    core = env.unwrapped._core
    while info["task_mbit"] == 0.0:
        obs, _, _, _, info = env.step(0)
    size_mbit, user = info["task_mbit"], int(core.task_user[0])
    target = int(np.argmin(core.n_running[0, 1:4] + core.n_uploading[0, 1:4])) + 1
    idle = core.n_running[0, target] == 0
    rate = core.rate_bps[0, target, user]
    _, reward, _, _, info = env.step(target)
    tx_s = size_mbit * 1e6 / rate
    energy_j = TX_POWER_W * tx_s + KAPPA * 1e3 * (2e9) ** 2 * size_mbit * 1e6
    np.testing.assert_allclose(info["energy_j"], energy_j, rtol=1e-12)
    np.testing.assert_allclose(reward[1], -50.0 * energy_j, rtol=1e-6)
    if idle:
        np.testing.assert_allclose(info["delay_s"], tx_s + size_mbit / 2.0, rtol=1e-9)


def test_channel_models():
    paper = GMORLBatchedCore(64, channel="paper")
    paper.reset(np.random.default_rng(0))
    old = GMORLBatchedCore(64, channel="predecessor")
    old.reset(np.random.default_rng(0))
    assert np.median(paper.rate_bps[:, 0]) < 1e6  # the cloud 1-2 km away: kbit/s
    assert np.median(paper.rate_bps[:, 1][paper.present[:, 1]]) > 1e6  # edges: Mbit/s
    assert np.median(old.rate_bps[:, 0]) > 1e8  # predecessor code: every link fast
    assert (paper.rate_bps >= paper.min_rate_bps).all()


# --- domain randomisation ------------------------------------------------------------------


@pytest.mark.parametrize("ranges", ["train", "test"])
def test_domain_randomisation_stays_in_ranges(ranges):
    core = GMORLBatchedCore(512, ranges=ranges)
    core.reset(np.random.default_rng(3))
    box = RANGES[ranges]
    e = core.num_edges
    assert e.min() == box["num_edges"][0] and e.max() == box["num_edges"][1]
    f0, fe = core.freq_ghz[:, 0], core.freq_ghz[:, 1:]
    assert (box["cloud_ghz"][0] <= f0).all() and (f0 <= box["cloud_ghz"][1]).all()
    used = core.present[:, 1:]
    assert (box["edge_ghz"][0] <= fe[used]).all() and (fe[used] <= box["edge_ghz"][1]).all()
    assert (fe[~used] == 0).all() and (core.present.sum(1) == e + 1).all()
    # 100 % load: mean task size (Mbit) = sum of GHz at eta = 1000 cycles/bit, lambda U = 1
    np.testing.assert_allclose(core.mean_task_mbit, core.freq_ghz.sum(1))
    assert (core.stream_mbit >= 0.1).all() and (core.stream_mbit <= 100.0).all()


def test_fixed_values_override_randomisation():
    core = GMORLBatchedCore(8, num_edges=6, cloud_ghz=4.0, edge_ghz=2.0)
    core.reset(np.random.default_rng(0))
    assert (core.num_edges == 6).all()
    np.testing.assert_allclose(core.mean_task_mbit, 16.0)  # RN sec. 5: 16 Mbit
    with pytest.raises(ValueError, match="num_edges"):
        GMORLBatchedCore(1, num_edges=11)
    with pytest.raises(ValueError, match="max_edges=8"):
        GMORLBatchedCore(1, ranges="test", max_edges=8)
    with pytest.raises(ValueError, match="edge_ghz"):
        GMORLBatchedCore(1, edge_ghz=-1.0)


# --- invalid actions ---------------------------------------------------------------------------


def test_masked_action_raises_naming_action_and_mask():
    env = GMORLOffloadEnv(num_edges=2, invalid_action="raise")
    obs, info = env.reset(seed=0)
    np.testing.assert_array_equal(env.action_masks(), [True, True, True] + [False] * 8)
    np.testing.assert_array_equal(info["action_mask"], env.action_masks())
    with pytest.raises(ValueError, match=r"action 5 is masked.*action_mask=\[1, 1, 1, 0"):
        env.step(5)


def test_masked_action_falls_back_to_cloud():
    env = GMORLOffloadEnv(num_edges=2, invalid_action="fallback", channel="paper")
    obs, info = env.reset(seed=0)
    while info["task_mbit"] == 0.0:
        obs, _, _, _, info = env.step(0)
    core = env.unwrapped._core
    uploading_before = core.n_uploading[0, 0]
    _, _, _, _, info = env.step(7)
    assert info["fallback"] is True
    assert core.n_uploading[0, 0] == uploading_before + 1  # the cloud link is slow: still going
    _, _, _, _, info = env.step(1)
    assert info["fallback"] is False


def test_vector_env_masked_actions():
    envs = GMORLVectorEnv(3, num_edges=1, invalid_action="raise")
    envs.reset(seed=0)
    with pytest.raises(ValueError, match="action 4 of env 1 is masked"):
        envs.step(np.array([0, 4, 1]))
    envs = GMORLVectorEnv(3, num_edges=1, invalid_action="fallback")
    envs.reset(seed=0)
    *_, info = envs.step(np.array([0, 4, 1]))
    np.testing.assert_array_equal(info["fallback"], [False, True, False])
    with pytest.raises(ValueError, match="action 11 of env 1 is outside"):
        envs.step(np.array([0, 11, 1]))


@pytest.mark.parametrize("action", [-1, 11, 2.5, "1", True, np.array([1, 2]), np.float32(1.0)])
def test_out_of_space_action_raises_naming_the_value(action):
    env = GMORLOffloadEnv(invalid_action="fallback")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action .*(outside|not an integer)") as err:
        env.step(action)
    assert str(action).split()[0].strip("[]") in str(err.value)


def test_numpy_integer_actions_are_accepted():
    env = GMORLOffloadEnv()
    env.reset(seed=0)
    env.step(np.int64(0))
    env.step(np.array(0))


# --- rendering ---------------------------------------------------------------------------------


def test_render_ansi_shows_task_action_and_servers():
    env = GMORLOffloadEnv(render_mode="ansi", num_edges=2)
    env.reset(seed=0)
    env.step(1)
    text = env.render()
    assert "task:" in text and "last action: 1 (edge 1)" in text
    assert "cloud" in text and "edge 2" in text and "edge 3" not in text
    assert GMORLOffloadEnv().render() is None


# --- optional cost features ----------------------------------------------------------------------


def test_cost_features_pass_the_gymnasium_checker_and_keep_the_paper_rows():
    env = GMORLOffloadEnv(cost_features=True)
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*reward returned by `step\\(\\)` must be a float"
        )
        check_env(env, skip_render_check=True)
    plain = GMORLOffloadEnv()
    assert env.observation_space.shape == (plain.observation_space.shape[0] + 2, 11)
    # the same episode with the same actions: the paper's rows are unchanged
    for (o1, r1, _), (o2, r2, _) in zip(rollout(env, 5, 150), rollout(plain, 5, 150), strict=True):
        np.testing.assert_array_equal(o1[:-2], o2)
        np.testing.assert_array_equal(r1, r2)


@pytest.mark.parametrize("ranges", ["train", "test"])
def test_cost_features_are_minus_the_reward_each_action_would_get(ranges):
    env = GMORLOffloadEnv(cost_features=True, ranges=ranges)
    rng = np.random.default_rng(1)
    obs, info = env.reset(seed=7)
    charged = 0
    for _ in range(250):
        rows = obs[-2:]
        mask = info["action_mask"]
        assert (rows[:, ~mask] == 0).all()
        assert env.observation_space.contains(obs)
        for a in np.flatnonzero(mask):
            probe = copy.deepcopy(env)
            _, reward, *_ = probe.step(int(a))
            np.testing.assert_allclose(rows[:, a], -reward, rtol=1e-5, atol=1e-9)
            charged += bool(reward[0] < 0)
        obs, _, _, truncated, info = env.step(random_valid(rng, mask))
        if truncated:
            obs, info = env.reset()
    assert charged > 100  # tasks were waiting, not only empty steps


def test_vector_env_cost_features_match_the_single_env():
    vec = GMORLVectorEnv(3, cost_features=True, num_edges=4)
    obs, _ = vec.reset(seed=[11, 11, 11])
    single = GMORLOffloadEnv(cost_features=True, num_edges=4)
    o1, _ = single.reset(seed=11)
    for i in range(3):
        np.testing.assert_array_equal(obs[i], o1)
    with pytest.raises(ValueError, match="cost_features must be a bool, got 'yes'"):
        GMORLVectorEnv(2, cost_features="yes")
