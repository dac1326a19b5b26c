"""Domain randomisation: randomised scenario variants and the mixed-scenario vector env."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import mec_env  # noqa: F401
from mec_env import load_scenario
from mec_env.randomisation import MixedScenarioVectorEnv, randomised_scenarios


def test_variants_scale_every_rate_within_the_spread_and_keep_the_structure():
    base = load_scenario("default")
    variants = randomised_scenarios(base, 4, seed=3, spread=0.2)
    assert len({v.name for v in variants}) == 4
    for v in variants:
        assert [s.name for s in v.servers] == [s.name for s in base.servers]
        assert v.models == base.models and v.objectives == base.objectives
        for s, b in zip(v.servers, base.servers, strict=True):
            for new, old in ((s.gpu.flops, b.gpu.flops), (s.gpu_host_gbps, b.gpu_host_gbps)):
                assert 0.8 * old <= new <= 1.2 * old
        assert 0.8 <= v.workload.arrival_rate_hz / base.workload.arrival_rate_hz <= 1.2
        env = gym.make("mec_env/LLMOffload-v0", scenario=v)
        assert (
            env.observation_space
            == gym.make("mec_env/LLMOffload-v0", scenario=base).observation_space
        )
    assert variants[0].servers[0].gpu.flops != variants[1].servers[0].gpu.flops
    again = randomised_scenarios(base, 4, seed=3, spread=0.2)
    assert again == variants  # seeded
    assert randomised_scenarios(base, 1, spread=0.0)[0].servers == base.servers


@pytest.mark.parametrize(("k", "spread"), [(0, 0.1), (2, 1.0), (2, -0.1)])
def test_bad_randomisation_arguments_name_the_field(k, spread):
    with pytest.raises(ValueError, match="k must|spread must"):
        randomised_scenarios("tiny", k, spread=spread)


def test_mixed_env_is_the_concatenation_of_its_scenarios_envs():
    a, b = randomised_scenarios("tiny", 2, seed=0)
    mixed = MixedScenarioVectorEnv([a, b], num_envs=5)
    solo = [
        gym.make_vec("mec_env/LLMOffload-v0", num_envs=3, scenario=a),
        gym.make_vec("mec_env/LLMOffload-v0", num_envs=2, scenario=b),
    ]
    obs, info = mixed.reset(seed=10)
    parts = [solo[0].reset(seed=10), solo[1].reset(seed=11)]
    assert np.array_equal(obs, np.concatenate([p[0] for p in parts]))
    rng = np.random.default_rng(0)
    for _ in range(40):
        mask = info["action_mask"]
        assert np.array_equal(mask, mixed.action_masks())
        offsets = np.cumsum([0, *mixed.single_action_space.nvec])
        actions = np.array(
            [
                [
                    rng.choice(np.flatnonzero(m[lo:hi]))
                    for lo, hi in zip(offsets[:-1], offsets[1:], strict=True)
                ]
                for m in mask
            ]
        )
        obs, reward, term, trunc, info = mixed.step(actions)
        ref = [solo[0].step(actions[:3]), solo[1].step(actions[3:])]
        assert np.array_equal(obs, np.concatenate([r[0] for r in ref]))
        assert np.array_equal(reward, np.concatenate([r[1] for r in ref]))
        assert np.array_equal(trunc, np.concatenate([r[3] for r in ref]))
    assert mixed.observation_space.shape[0] == 5 and mixed.reward_dim == 2


def test_mixed_env_rejects_scenarios_with_other_spaces():
    with pytest.raises(ValueError, match="single_observation_space|single_action_space"):
        MixedScenarioVectorEnv(["tiny", "default"], num_envs=4)
    with pytest.raises(ValueError, match="num_envs"):
        MixedScenarioVectorEnv(["tiny", "tiny"], num_envs=1)
