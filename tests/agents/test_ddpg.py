"""Multi-objective DDPG: actions in the box, learning the best target per preference, resuming."""

from __future__ import annotations

import copy
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch

import mec_env  # noqa: F401  (registers the environments)
from agents.ddpg import MODDPG, DDPGConfig
from mec_env.envs.llm_offload import decode_continuous

CONT = "mec_env/LLMOffloadContinuous-v0"
SMALL = dict(hidden=32, embed=16, batch_size=32, learning_starts=32)

# One phone, one A6000 edge server, TinyLlama only: running locally is slow (~2 s) but cheap
# (~17 J), offloading fast (~0.2 s) but dear (~55 J). No fading or shadowing, so the uplink, and
# with it the ranking of the two targets, barely varies between requests; requests are ~100 s
# apart, so the phone is almost always free. Return bounds make one request's costs O(1) after
# objective_scale (2.5 s, 50 J).
TWO_TARGETS = {
    "name": "two-targets",
    "devices": ["phone"],
    "servers": [{"preset": "edge-a6000", "name": "edge", "hosted_models": ["tinyllama-1.1b"]}],
    "models": ["tinyllama-1.1b"],
    "workload": {
        "mix": {"tinyllama-1.1b": 1.0},
        "arrival_rate_hz": 0.01,
        "prompt_tokens_median": 256,
        "prompt_tokens_sigma": 0.1,
        "output_tokens_median": 64,
        "output_tokens_sigma": 0.1,
    },
    "network": {"fading": "none", "shadowing_std_db": 0.0},
    "max_servers": 1,
    "episode_requests": 4,
    "objectives": {
        "names": ["latency", "energy"],
        "return_low": [-10.0, -200.0],
        "return_high": [0.0, 0.0],
        "reference_point": [-0.1, -0.1],
    },
}
LATENCY, ENERGY = np.array([1.0, 0.0]), np.array([0.0, 1.0])


@pytest.fixture(autouse=True)
def _quiet_single_thread():
    # one thread: on a busy 2-core machine, torch's intra-op threads can slow updates 50x
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the passive checker's "reward must be a float"
        yield
    torch.set_num_threads(threads)


def _fill(agent: MODDPG, envs, steps: int, seed: int = 0) -> None:
    """Store ``steps`` vector steps of exploring actions (no updates)."""
    obs, _ = envs.reset(seed=seed)
    w = np.random.default_rng(seed).dirichlet(np.ones(agent.reward_dim), envs.num_envs)
    for _ in range(steps):
        actions = agent.act(obs, None, w)
        next_obs, rewards, terminated, _, _ = envs.step(actions)
        agent.store(obs, actions, rewards, next_obs, terminated, w)
        obs = next_obs


def _oracle_targets(core, w: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(N,) target of the plan minimising w . cost / scale among each env's open plans."""
    best = []
    for n in range(core.n):
        plans = core.open_plans(n)
        costs = core.plan_costs(plans, n)[:, :2] / scale
        best.append(plans[np.argmin(costs @ w), 0])
    return np.array(best)


# ---------------------------------------------------------------------------- acting
def test_actions_in_box_and_deterministic_has_no_noise():
    envs = gym.make_vec(CONT, num_envs=8)
    agent = MODDPG(envs, DDPGConfig(**SMALL, noise_sigma=0.5), seed=0)
    obs, _ = envs.reset(seed=0)
    w = np.random.default_rng(0).dirichlet([1.0, 1.0], 8)
    space = envs.single_action_space
    greedy = agent.act(obs, None, w, deterministic=True)
    assert greedy.shape == (8, space.shape[0]) and greedy.dtype == np.float32
    state = agent.rng.bit_generator.state
    np.testing.assert_array_equal(agent.act(obs, None, w, deterministic=True), greedy)
    assert agent.rng.bit_generator.state == state  # no noise drawn
    with torch.no_grad():
        mu = agent.actor(torch.as_tensor(obs), torch.as_tensor(w, dtype=torch.float32))
    np.testing.assert_allclose(greedy, mu.numpy(), rtol=0, atol=1e-6)
    noisy = agent.act(obs, None, w)
    assert not np.allclose(noisy, greedy)
    for a in (greedy, noisy):
        assert np.all(a >= -1.0) and np.all(a <= 1.0)
        assert all(space.contains(row) for row in a)
    envs.step(noisy)  # the env accepts them

    # one observation of the single env; masks are accepted and ignored
    env = gym.make(CONT)
    o, info = env.reset(seed=1)
    a = agent.act(o, info["action_mask"], w[0])
    assert a.shape == space.shape and env.action_space.contains(a)
    env.step(a)

    # no noise at all: exploring equals greedy; warm-up: uniform actions
    quiet = MODDPG(envs, DDPGConfig(**SMALL, noise_sigma=0.0), seed=0)
    np.testing.assert_array_equal(quiet.act(obs, None, w), quiet.act(obs, None, w, True))
    warm = MODDPG(envs, DDPGConfig(**SMALL, random_steps=100), seed=0)
    u = warm.act(obs, None, w)
    assert np.all(np.abs(u) <= 1.0) and not np.allclose(u, warm.act(obs, None, w, True))


def test_noise_decays_linearly():
    envs = gym.make_vec(CONT, num_envs=4)
    cfg = DDPGConfig(**SMALL, noise_sigma=0.4, noise_sigma_final=0.1, noise_decay_steps=8)
    agent = MODDPG(envs, cfg, seed=0)
    assert agent.noise_sigma() == pytest.approx(0.4)
    _fill(agent, envs, 1)  # 4 transitions
    assert agent.noise_sigma() == pytest.approx(0.25)
    _fill(agent, envs, 3)
    assert agent.noise_sigma() == pytest.approx(0.1)


def test_update_waits_for_learning_starts_and_rejects_bad_input():
    envs = gym.make_vec(CONT, num_envs=4)
    agent = MODDPG(envs, DDPGConfig(**{**SMALL, "learning_starts": 16}), seed=0)
    _fill(agent, envs, 3)
    assert agent.update() == {} and agent.num_updates == 0
    _fill(agent, envs, 1)
    logs = agent.update()
    assert set(logs) == {"critic_loss", "actor_loss", "q", "noise_sigma"}
    assert all(np.isfinite(v) for v in logs.values())
    with pytest.raises(ValueError, match="weights"):
        agent.act(envs.reset(seed=0)[0], None, None)
    with pytest.raises(ValueError, match="Box"):
        MODDPG(gym.make_vec("mec_env/LLMOffload-v0", num_envs=2))
    with pytest.raises(ValueError, match="gamma"):
        DDPGConfig(gamma=1.5)


def test_target_scores_are_equivariant_to_server_order():
    envs = gym.make_vec(CONT, num_envs=4)  # default scenario: several servers
    agent = MODDPG(envs, DDPGConfig(**SMALL), seed=0)
    layout = agent.structure.layout
    assert agent.structure.server_slots == layout.num_servers
    obs, _ = envs.reset(seed=0)
    w = np.full((4, 2), 0.5, np.float32)
    rows = obs[:, layout.server_start :].reshape(4, layout.num_servers, layout.server_dim)
    perm = np.random.default_rng(0).permutation(layout.num_servers)
    permuted = np.concatenate([obs[:, : layout.server_start], rows[:, perm].reshape(4, -1)], 1)
    a, b = agent.act(obs, None, w, True), agent.act(permuted, None, w, True)
    k = layout.num_servers
    servers = np.s_[1 : 1 + k]
    np.testing.assert_allclose(b[:, servers], a[:, servers][:, perm], atol=1e-5)
    np.testing.assert_allclose(np.delete(b, servers, 1), np.delete(a, servers, 1), atol=1e-5)


@pytest.mark.parametrize("twin", [False, True], ids=["single", "twin"])
def test_update_follows_the_equations(twin):
    envs = gym.make_vec(CONT, num_envs=4, scenario=TWO_TARGETS)
    agent = MODDPG(envs, DDPGConfig(**SMALL, gamma=0.7, tau=0.1, twin=twin), seed=0)
    _fill(agent, envs, 10)
    agent.buffer.terminated[::3] = 1.0  # some terminal transitions (the env never terminates)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # targets that differ from the online networks
        for p in [*agent.actor_target.parameters(), *agent.critic_target.parameters()]:
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    b = agent.buffer.sample(agent.config.batch_size, copy.deepcopy(agent.rng))  # update's batch
    t = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in b.items()}
    w = t["weights"]
    with torch.no_grad():
        q_next = agent.critic_target(t["next_obs"], agent.actor_target(t["next_obs"], w), w)
        if twin:  # per sample, the twin with the lower w . Q'
            q_next = q_next[(q_next * w).sum(2).argmin(0), torch.arange(len(w))]
        else:
            q_next = q_next[0]
        y = t["rewards"] / agent.scale + 0.7 * (1.0 - t["terminated"])[:, None] * q_next
        q = agent.critic(t["obs"], t["actions"], w)
        expected = ((q - y) ** 2).sum(2).mean(1).sum()
    before = [p.clone() for p in agent.critic_target.parameters()]
    logs = agent.update()
    assert logs["critic_loss"] == pytest.approx(float(expected), rel=1e-5)
    for old, new, online in zip(
        before, agent.critic_target.parameters(), agent.critic.parameters(), strict=True
    ):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * online)


# ---------------------------------------------------------------------------- learning
def test_learns_the_best_target_for_each_pure_preference():
    envs = gym.make_vec(CONT, num_envs=16, scenario=TWO_TARGETS)
    core = envs.unwrapped.core
    envs.reset(seed=0)
    # the scenario does what it says: the best plan's target differs between the preferences
    costs = core.plan_costs(core.open_plans(0))
    best = core.open_plans(0)[np.argmin(costs[:, :2], axis=0), 0]  # per objective
    assert tuple(best) == (1, 0)  # latency: the server; energy: the phone

    cfg = DDPGConfig(
        hidden=64, embed=32, batch_size=128, learning_starts=256, updates_per_step=4,
        gamma=0.9, tau=0.01, actor_lr=1e-3,
    )  # fmt: skip
    agent = MODDPG(envs, cfg, seed=0)
    logs = agent.learn(envs, 4000, seed=0)
    # every fifth vector step only resets the envs (NEXT_STEP autoreset): not stored
    assert logs["env_steps"] == 200 * 16 and logs["updates"] > 900

    evals = gym.make_vec(CONT, num_envs=64, scenario=TWO_TARGETS)
    ecore, scale = evals.unwrapped.core, agent.scale.numpy()
    for w, expected in ((LATENCY, 1), (ENERGY, 0)):
        obs, _ = evals.reset(seed=123)
        right, typical = [], []
        for _ in range(4):  # fresh states at several points of the episodes
            actions = agent.act(obs, None, w, deterministic=True)
            plans, _ = decode_continuous(ecore, actions.astype(np.float64))
            oracle = _oracle_targets(ecore, w, scale)
            right.append(plans[:, 0] == oracle)
            typical.append(oracle == expected)
            obs, *_ = evals.step(actions)
        assert np.mean(typical) >= 0.9  # the oracle agrees with the scenario's story
        assert np.mean(right) >= 0.9, f"w={w}: right target on {np.mean(right):.0%} of states"


# ---------------------------------------------------------------------------- checkpoints
def _params(agent: MODDPG) -> list[torch.Tensor]:
    return [
        p.detach().clone()
        for net in (agent.actor, agent.critic, agent.actor_target, agent.critic_target)
        for p in net.parameters()
    ]


@pytest.mark.parametrize("td3", [False, True], ids=["ddpg", "td3"])
def test_resume_reproduces_training(tmp_path, td3):
    envs = gym.make_vec(CONT, num_envs=4, scenario=TWO_TARGETS)
    extra = dict(twin=True, policy_delay=2, target_noise=0.2) if td3 else {}
    cfg = DDPGConfig(**SMALL, updates_per_step=2, noise_decay_steps=200, **extra)
    agent = MODDPG(envs, cfg, seed=3)
    agent.learn(envs, 96, seed=0)
    assert agent.num_updates > 0
    path = tmp_path / "ddpg.pt"
    agent.save(path)
    resumed = MODDPG.load(path, envs)

    for a, b in zip(_params(agent), _params(resumed), strict=True):
        assert torch.equal(a, b)
    for name in ("actor_optimizer", "critic_optimizer"):
        sa, sb = getattr(agent, name).state_dict(), getattr(resumed, name).state_dict()
        assert sa["param_groups"] == sb["param_groups"]
        for key, st in sa["state"].items():
            for field, value in st.items():
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(sb["state"][key][field]))
    for name in ("obs", "next_obs", "actions", "rewards", "terminated", "weights"):
        np.testing.assert_array_equal(
            getattr(agent.buffer, name)[: len(agent.buffer)],
            getattr(resumed.buffer, name)[: len(resumed.buffer)],
        )
    assert (agent.buffer.pos, len(agent.buffer)) == (resumed.buffer.pos, len(resumed.buffer))
    assert (agent.num_env_steps, agent.num_updates, agent.num_actor_updates) == (
        resumed.num_env_steps,
        resumed.num_updates,
        resumed.num_actor_updates,
    )
    assert agent.rng.bit_generator.state == resumed.rng.bit_generator.state

    # K more updates, then more acting and learning: identical numbers on both
    logs = [agent.update() for _ in range(5)]
    assert [resumed.update() for _ in range(5)] == logs
    obs, _ = envs.reset(seed=9)
    w = np.full((4, 2), 0.5)
    np.testing.assert_array_equal(agent.act(obs, None, w), resumed.act(obs, None, w))
    assert agent.learn(envs, 32, seed=1) == resumed.learn(envs, 32, seed=1)
    for a, b in zip(_params(agent), _params(resumed), strict=True):
        assert torch.equal(a, b)

    # the in-memory state_dict round trip too
    fresh = MODDPG(envs, cfg, seed=99)
    fresh.load_state_dict(agent.state_dict())
    for a, b in zip(_params(agent), _params(fresh), strict=True):
        assert torch.equal(a, b)
    assert fresh.update() == agent.update()


def test_checkpoint_rejects_another_env_or_architecture(tmp_path):
    envs = gym.make_vec(CONT, num_envs=2, scenario=TWO_TARGETS)
    agent = MODDPG(envs, DDPGConfig(**SMALL), seed=0)
    other = MODDPG(gym.make_vec(CONT, num_envs=2), DDPGConfig(**SMALL), seed=0)
    with pytest.raises(ValueError, match="spaces"):
        other.load_state_dict(agent.state_dict())
    twin = MODDPG(envs, DDPGConfig(**SMALL, twin=True), seed=0)
    with pytest.raises(ValueError, match="twin"):
        twin.load_state_dict(agent.state_dict())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_device_is_honoured():
    envs = gym.make_vec(CONT, num_envs=4, scenario=TWO_TARGETS)
    agent = MODDPG(envs, DDPGConfig(**SMALL, device="cuda", twin=True, target_noise=0.2), seed=0)
    assert all(p.is_cuda for p in agent.actor.parameters())
    logs = agent.learn(envs, 64, seed=0)
    assert np.isfinite(logs["critic_loss"])
