"""Tests for mec_env.wrappers: LinearScalarization and PreferenceObservation."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

import mec_env
from mec_env.wrappers import LinearScalarization, PreferenceObservation, check_weights

# the rewards are vectors: Gymnasium's passive checker warns about that on the first step
pytestmark = pytest.mark.filterwarnings("ignore:.*reward returned by `step\\(\\)`:UserWarning")

DISCRETE = "mec_env/LLMOffload-v0"
CONTINUOUS = "mec_env/LLMOffloadContinuous-v0"


def make(env_id: str = DISCRETE, **kwargs) -> gym.Env:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gym.make(env_id, **kwargs)


def four_objective_env() -> gym.Env:
    data = mec_env.load_scenario("default").to_dict()
    data["objectives"] = {
        "names": ["latency", "energy", "cost", "accuracy"],
        "return_low": [-5000.0, -2e5, -10.0, -1.0],
        "return_high": [0.0, 0.0, 0.0, 0.0],
        "reference_point": [-0.1, -0.1, -0.1, -0.1],
    }
    return make(DISCRETE, scenario=data)


def steps(env: gym.Env, n: int, seed: int):
    """Yield ``n`` step results of sampled actions, resetting at truncation."""
    env.action_space.seed(seed)
    for _ in range(n):
        result = env.step(env.action_space.sample())
        yield result
        if result[3]:
            env.reset()


# ---------------------------------------------------------------------------------------------
# LinearScalarization
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "factory, weights",
    [
        (make, None),
        (make, [0.8, 0.2]),
        (make, [3.0, 0.0]),  # not normalised: the scalar is still w . r
        (lambda: make(CONTINUOUS), [0.1, 0.9]),
        (four_objective_env, [0.25, 0.25, 0.25, 0.25]),
        (four_objective_env, None),
    ],
)
def test_linear_scalarization_reward_is_weighted_sum(factory, weights):
    env = LinearScalarization(factory(), weights)
    dim = env.unwrapped.reward_dim
    expected_w = np.full(dim, 1.0 / dim) if weights is None else np.asarray(weights, float)
    np.testing.assert_array_equal(env.weights, expected_w)
    env.reset(seed=0)
    for _, reward, _, _, info in steps(env, 100, seed=0):
        assert type(reward) is float
        vector = info["vector_reward"]
        assert vector.shape == (dim,) and vector.dtype == np.float32
        assert env.unwrapped.reward_space.contains(vector)
        np.testing.assert_array_equal(info["weights"], expected_w)
        assert reward == pytest.approx(float(np.dot(expected_w, vector.astype(np.float64))))
        assert np.isfinite(reward)


def test_linear_scalarization_info_weights_are_copies():
    env = LinearScalarization(make(), [0.5, 0.5])
    env.reset(seed=0)
    env.action_space.seed(0)
    _, _, _, _, info = env.step(env.action_space.sample())
    info["weights"][:] = 0.0
    np.testing.assert_array_equal(env.weights, [0.5, 0.5])


def test_linear_scalarization_set_weights():
    env = LinearScalarization(make())
    env.reset(seed=0)
    env.set_weights([0.0, 1.0])
    env.action_space.seed(0)
    _, reward, _, _, info = env.step(env.action_space.sample())
    assert reward == pytest.approx(float(info["vector_reward"][1]))
    with pytest.raises(ValueError, match="weights"):
        env.set_weights([1.0, -1.0])
    np.testing.assert_array_equal(env.weights, [0.0, 1.0])  # unchanged by the failed call


def test_linear_scalarization_exposes_action_masks():
    env = LinearScalarization(make())
    _, info = env.reset(seed=0)
    np.testing.assert_array_equal(env.action_masks(), info["action_mask"])


BAD_WEIGHTS = [
    pytest.param([1.0], id="too-short"),
    pytest.param([0.3, 0.3, 0.4], id="too-long"),
    pytest.param([[0.5, 0.5]], id="2-d"),
    pytest.param([1.0, -0.1], id="negative"),
    pytest.param([np.nan, 1.0], id="nan"),
    pytest.param([np.inf, 1.0], id="inf"),
    pytest.param([0.0, 0.0], id="all-zero"),
    pytest.param([], id="empty"),
]


@pytest.mark.parametrize("weights", BAD_WEIGHTS)
def test_linear_scalarization_rejects_bad_weights(weights):
    with pytest.raises(ValueError, match="weights"):
        LinearScalarization(make(), weights)


@pytest.mark.parametrize("weights", BAD_WEIGHTS)
def test_check_weights_rejects_bad_weights(weights):
    with pytest.raises(ValueError, match="weights"):
        check_weights(weights, 2)


# ---------------------------------------------------------------------------------------------
# PreferenceObservation
# ---------------------------------------------------------------------------------------------


def test_preference_observation_space_and_layout():
    base = make()
    env = PreferenceObservation(base)
    dim = base.unwrapped.reward_dim
    box = env.observation_space
    assert isinstance(box, spaces.Box) and box.dtype == base.observation_space.dtype
    assert box.shape == (base.observation_space.shape[0] + dim,)
    np.testing.assert_array_equal(box.low[-dim:], 0.0)
    np.testing.assert_array_equal(box.high[-dim:], 1.0)
    np.testing.assert_array_equal(box.low[:-dim], base.observation_space.low)
    np.testing.assert_array_equal(box.high[:-dim], base.observation_space.high)


@pytest.mark.parametrize("factory", [make, four_objective_env])
def test_preference_fixed_within_episode_and_resampled_at_reset(factory):
    env = PreferenceObservation(factory())
    dim = env.unwrapped.reward_dim
    seen = []
    obs, info = env.reset(seed=3)
    env.action_space.seed(3)
    for _ in range(4):
        w = obs[-dim:].copy()
        assert w.sum() == pytest.approx(1.0, abs=1e-6)
        assert np.all(w >= 0)
        np.testing.assert_allclose(info["weights"], w, rtol=1e-6)
        assert env.observation_space.contains(obs)
        truncated = False
        while not truncated:
            obs, _, _, truncated, info = env.step(env.action_space.sample())
            assert env.observation_space.contains(obs)
            np.testing.assert_array_equal(obs[-dim:], w)  # fixed within the episode
            np.testing.assert_allclose(info["weights"], w, rtol=1e-6)
        seen.append(w)
        obs, info = env.reset()
    # resampled at each reset (Dirichlet(1): a repeat has probability zero)
    assert len({tuple(w) for w in seen}) == len(seen)


def test_preference_reproducible_with_seed():
    a, b = PreferenceObservation(make()), PreferenceObservation(make())
    for seed in (0, 1, 2):
        obs_a, _ = a.reset(seed=seed)
        obs_b, _ = b.reset(seed=seed)
        np.testing.assert_array_equal(obs_a, obs_b)
        # the next, unseeded reset continues the same stream
        np.testing.assert_array_equal(a.reset()[0][-2:], b.reset()[0][-2:])
    assert not np.array_equal(a.reset(seed=0)[0][-2:], a.reset(seed=1)[0][-2:])


@pytest.mark.parametrize("w", [[0.25, 0.75], [1.0, 0.0], [0.0, 1.0]])
def test_preference_options_weights_fix_the_preference(w):
    env = PreferenceObservation(make())
    for seed in (0, None):
        obs, info = env.reset(seed=seed, options={"weights": w})
        np.testing.assert_array_equal(obs[-2:], np.asarray(w, np.float32))
        np.testing.assert_array_equal(info["weights"], w)
        assert env.observation_space.contains(obs)
        obs, *_ = next(steps(env, 1, seed=0))
        np.testing.assert_array_equal(obs[-2:], np.asarray(w, np.float32))


def test_preference_options_weights_are_normalised():
    env = PreferenceObservation(make())
    obs, info = env.reset(seed=0, options={"weights": [2.0, 1.0]})
    assert env.observation_space.contains(obs)
    np.testing.assert_allclose(obs[-2:], [2 / 3, 1 / 3], rtol=1e-6)


@pytest.mark.parametrize("w", [[1.0, -1.0], [0.0, 0.0], [1.0], [np.nan, 1.0]])
def test_preference_options_weights_are_validated(w):
    env = PreferenceObservation(make())
    with pytest.raises(ValueError, match="weights"):
        env.reset(seed=0, options={"weights": w})


def test_preference_fixed_list_mode():
    prefs = [[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]  # normalised by the wrapper
    expected = {(1.0, 0.0), (0.0, 1.0), (0.5, 0.5)}
    env = PreferenceObservation(make(), preferences=prefs)
    picked = set()
    obs, _ = env.reset(seed=0)
    for _ in range(40):
        w = tuple(obs[-2:].astype(float).tolist())
        assert w in expected
        assert env.observation_space.contains(obs)
        picked.add(w)
        obs, _ = env.reset()
    assert picked == expected  # 40 uniform picks out of 3 miss one with probability ~1e-7


def test_preference_fixed_list_rejects_bad_entries():
    with pytest.raises(ValueError, match="preferences"):
        PreferenceObservation(make(), preferences=[[1.0, 0.0], [-1.0, 2.0]])
    with pytest.raises(ValueError, match="preferences"):
        PreferenceObservation(make(), preferences=[[1.0, 0.0, 0.0]])


def test_preference_scalarize():
    env = PreferenceObservation(make(), scalarize=True)
    obs, _ = env.reset(seed=5)
    w = obs[-2:].astype(np.float64)
    for _, reward, _, truncated, info in steps(env, 30, seed=5):
        if truncated:
            break
        assert type(reward) is float
        assert reward == pytest.approx(
            float(info["vector_reward"].astype(np.float64) @ w), rel=1e-6
        )


def test_preference_vector_reward_unchanged_without_scalarize():
    env = PreferenceObservation(make())
    env.reset(seed=0)
    _, reward, _, _, _ = next(steps(env, 1, seed=0))
    assert isinstance(reward, np.ndarray) and reward.shape == (2,)


def test_preference_observation_needs_1d_box():
    pytest.importorskip("mec_env.envs.gmorl", reason="GMORL does not import yet")
    env = make("mec_env/GMORLOffload-v0")  # (max_edges + 1, features) observation
    with pytest.raises(ValueError, match="1-D Box"):
        PreferenceObservation(env)


def test_preference_exposes_action_masks():
    env = PreferenceObservation(make())
    _, info = env.reset(seed=0)
    np.testing.assert_array_equal(env.action_masks(), info["action_mask"])
