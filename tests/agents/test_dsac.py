"""Multi-objective Discrete SAC: masks, the factorised closed forms, learning, checkpoints."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mec_env  # noqa: F401  (registers the environments)
from agents.common import ObsLayout, obs_layout
from agents.dsac import DiscreteSAC, DSACConfig
from agents.networks import (
    BranchingVectorCritic,
    ConditionalPlanCritic,
    ConditionalPlanPolicy,
    ServerSetEncoder,
    split_masks,
    split_plan_masks,
)

LLM = "mec_env/LLMOffload-v0"
GMORL = "mec_env/GMORLOffload-v0"
SMALL = dict(hidden=32, embed=16, batch_size=64, learning_starts=64)

# One phone, one A6000 edge server, TinyLlama only, short prompts: running locally is slow
# (~1 s) but cheap (~8 J), offloading fast (~0.1 s) but dear (~26 J). No fading or shadowing,
# so the uplink, and with it the ranking of the two targets, barely varies between requests.
TWO_PLANS = {
    "name": "two-plans",
    "devices": ["phone"],
    "servers": [{"preset": "edge-a6000", "name": "edge", "hosted_models": ["tinyllama-1.1b"]}],
    "models": ["tinyllama-1.1b"],
    "workload": {
        "mix": {"tinyllama-1.1b": 1.0},
        "arrival_rate_hz": 0.1,
        "prompt_tokens_median": 128,
        "prompt_tokens_sigma": 0.2,
        "prompt_tokens_min": 64,
        "prompt_tokens_max": 256,
        "output_tokens_median": 32,
        "output_tokens_sigma": 0.2,
        "output_tokens_min": 16,
        "output_tokens_max": 64,
    },
    "network": {"fading": "none", "shadowing_std_db": 0.0},
    "max_servers": 1,
    "episode_requests": 4,
    # return bounds set so that one request's costs are O(1) after objective_scale
    "objectives": {
        "names": ["latency", "energy"],
        "return_low": [-6.0, -120.0],
        "return_high": [0.0, 0.0],
        "reference_point": [-0.1, -0.1],
    },
}


@pytest.fixture(autouse=True)
def _quiet_single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the passive checker's "reward must be a float"
        yield
    torch.set_num_threads(threads)


def _chosen_open(actions: np.ndarray, masks: np.ndarray, nvec) -> np.ndarray:
    """(N, parts) bool: whether each part's choice is open in the flat masks."""
    a = actions.reshape(len(masks), -1)
    offsets = np.concatenate([[0], np.cumsum(nvec)])[:-1]
    return masks[np.arange(len(masks))[:, None], a + offsets]


# ---------------------------------------------------------------------------- masks and shapes
@pytest.mark.parametrize("env_id", [LLM, GMORL])
def test_actions_respect_random_masks(env_id):
    envs = gym.make_vec(env_id, num_envs=8)
    agent = DiscreteSAC(envs, DSACConfig(**SMALL), seed=0)
    obs, _ = envs.reset(seed=0)
    rng = np.random.default_rng(0)
    obs = np.repeat(obs, 64, axis=0)  # 512 rows
    nvec = agent.nvec
    masks = rng.random((len(obs), sum(nvec))) < 0.3
    for lo, hi in zip(np.cumsum([0, *nvec[:-1]]), np.cumsum(nvec), strict=True):
        rows = ~masks[:, lo:hi].any(axis=1)  # every part keeps an open choice
        masks[rows, lo + rng.integers(0, hi - lo, rows.sum())] = True
    w = rng.dirichlet(np.ones(2), len(obs))
    for deterministic in (False, True):
        actions = agent.act(obs, masks, w, deterministic=deterministic)
        assert actions.dtype == np.int64
        assert actions.shape == ((len(obs),) if agent.discrete else (len(obs), len(nvec)))
        assert _chosen_open(actions, masks, nvec).all()


@pytest.mark.parametrize("env_id,kwargs", [(LLM, {"scenario": "tiny"}), (GMORL, {})])
def test_env_loops_never_hit_a_mask(env_id, kwargs):
    """invalid_action="raise": the envs raise on any masked part the agent would choose."""
    vec = gym.make_vec(env_id, num_envs=4, invalid_action="raise", **kwargs)
    single = gym.make(env_id, invalid_action="raise", **kwargs)
    agent = DiscreteSAC(vec, DSACConfig(**SMALL), seed=1)
    w = np.array([0.3, 0.7], np.float32)
    obs, info = vec.reset(seed=0)
    for t in range(40):
        actions = agent.act(obs, info["action_mask"], w, deterministic=t % 2 == 0)
        assert actions.shape == ((4,) if agent.discrete else (4, len(agent.nvec)))
        obs, _, _, _, info = vec.step(actions)
    obs, info = single.reset(seed=0)
    for t in range(40):
        action = agent.act(obs, info["action_mask"], w, deterministic=t % 2 == 1)
        assert np.shape(action) == (() if agent.discrete else (len(agent.nvec),))
        obs, _, terminated, truncated, info = single.step(action)
        if terminated or truncated:
            obs, info = single.reset()


# ---------------------------------------------------------------------------- networks
def test_expected_q_is_the_joint_expectation():
    """E_pi[Q] and the entropy in closed form equal the sums over all joint actions."""
    envs = gym.make_vec(LLM, num_envs=2, scenario="tiny")
    agent = DiscreteSAC(envs, DSACConfig(**SMALL), seed=0)
    obs, info = envs.reset(seed=3)
    o, w = torch.as_tensor(obs), torch.tensor([[0.2, 0.8], [0.9, 0.1]])
    masks = split_masks(torch.as_tensor(info["action_mask"]), agent.nvec, 2)
    with torch.no_grad():
        logp = agent.actor(o, w, masks)
        value, adv = agent.qf1(o, w, masks)
    probs = [lp.exp() for lp in logp]
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in agent.nvec], indexing="ij"), -1)
    joint = torch.as_tensor(grid.reshape(-1, len(agent.nvec)))
    for b in range(2):
        acts = joint.clone()
        q = BranchingVectorCritic.q_values(
            value[b : b + 1].expand(len(acts), -1),
            [a[b : b + 1].expand(len(acts), -1, -1) for a in adv],
            acts,
        )
        p = torch.ones(len(acts))
        for i, pi in enumerate(probs):
            p = p * pi[b, acts[:, i]]
        expected = BranchingVectorCritic.expected(value, adv, probs)[b]
        torch.testing.assert_close((p[:, None] * q).sum(0), expected, rtol=1e-4, atol=1e-5)
        entropy = -(p * torch.log(p.clamp(min=1e-30))).sum()
        parts = -sum((pi[b] * lp[b]).sum() for pi, lp in zip(probs, logp, strict=True))
        torch.testing.assert_close(entropy, parts, rtol=1e-4, atol=1e-5)
        # advantages are centred over the open choices, and closed choices have pi = 0
        for a, m, pi in zip(adv, masks, probs, strict=True):
            assert torch.allclose(a[b][m[b]].sum(0), torch.zeros(2), atol=1e-5)
            assert (pi[b][~m[b]] == 0).all()


def test_target_logits_are_equivariant_to_server_order():
    envs = gym.make_vec(LLM, num_envs=4)  # default: 4 of 8 server rows present
    agent = DiscreteSAC(envs, DSACConfig(**SMALL), seed=0)
    obs, info = envs.reset(seed=0)
    lay = agent.layout
    perm = np.random.default_rng(0).permutation(lay.num_servers)
    rows = obs[:, lay.server_start :].reshape(len(obs), lay.num_servers, lay.server_dim)
    obs_p = np.concatenate([obs[:, : lay.server_start], rows[:, perm].reshape(len(obs), -1)], 1)
    masks = info["action_mask"].copy()
    masks_p = masks.copy()
    masks_p[:, 1 : 1 + lay.num_servers] = masks[:, 1 + perm]
    w = torch.full((len(obs), 2), 0.5)
    with torch.no_grad():
        a = agent.actor(torch.as_tensor(obs), w, split_masks(torch.as_tensor(masks), agent.nvec, 4))
        b = agent.actor(
            torch.as_tensor(obs_p), w, split_masks(torch.as_tensor(masks_p), agent.nvec, 4)
        )
    target_p = torch.cat([a[0][:, :1], a[0][:, 1 + torch.as_tensor(perm)]], 1)
    torch.testing.assert_close(b[0], target_p, rtol=1e-5, atol=1e-5)
    for x, y in zip(a[1:], b[1:], strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------- conditional plans
def _joint_plans(nvec) -> torch.Tensor:
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in nvec], indexing="ij"), -1)
    return torch.as_tensor(grid.reshape(-1, len(nvec)))


def _plan_open(plans: np.ndarray, plan_mask: np.ndarray, nvec) -> np.ndarray:
    """(N,) whether each plan (N, 4) is open in its flat plan_mask row (N, size)."""
    g, ns, k, np_ = (int(x) for x in nvec)
    rows = np.arange(len(plans))
    t = plan_mask[rows, plans[:, 0]]
    st = plan_mask[rows, g + (plans[:, 0] * ns + plans[:, 1]) * k + plans[:, 2]]
    p = plan_mask[rows, g + g * ns * k + plans[:, 0] * np_ + plans[:, 3]]
    return t & st & p


def test_conditional_closed_forms_are_the_joint_sums():
    """E_pi[Q], the entropy, log(open plans) and the deterministic plan of the conditional head
    equal the sums / argmax over every joint plan, pi(g, s, k, p) = pi(g) pi(s, k | g) pi(p | g);
    closed plans get probability 0 and the advantages are centred over the open choices."""
    envs = gym.make_vec(LLM, num_envs=3, scenario="examples/rush-hour.yaml")
    agent = DiscreteSAC(envs, DSACConfig(**SMALL, plan_head="conditional"), seed=0)
    assert isinstance(agent.actor, ConditionalPlanPolicy)
    assert isinstance(agent.qf1, ConditionalPlanCritic)
    obs, info = envs.reset(seed=4)
    for _ in range(5):  # a few busy states
        obs, _, _, _, info = envs.step(agent.act(obs, info["plan_mask"], [0.5, 0.5]))
    o, w = torch.as_tensor(obs), torch.tensor([[0.2, 0.8], [0.9, 0.1], [0.5, 0.5]])
    masks = split_plan_masks(torch.as_tensor(info["plan_mask"]), agent.nvec, 3)
    with torch.no_grad():
        logp = agent.actor(o, w, masks)
        value, adv = agent.qf1(o, w, masks)
        mode = agent.actor.select(logp)
    probs = [lp.exp() for lp in logp]
    plans = _joint_plans(agent.nvec)
    g, pair, p = plans[:, 0], plans[:, 1] * agent.nvec[2] + plans[:, 2], plans[:, 3]
    for b in range(3):
        pj = probs[0][b, g] * probs[1][b, g, pair] * probs[2][b, g, p]
        is_open = _plan_open(
            plans.numpy(), np.repeat(info["plan_mask"][b : b + 1], len(plans), 0), agent.nvec
        )
        assert (pj[~torch.as_tensor(is_open)] == 0).all()
        torch.testing.assert_close(pj.sum(), torch.tensor(1.0))
        q = agent.qf1.q_values(
            value[b : b + 1].expand(len(plans), -1),
            [a[b : b + 1].expand(len(plans), *a.shape[1:]) for a in adv],
            plans,
        )
        expected = ConditionalPlanCritic.expected(value, adv, probs)[b]
        torch.testing.assert_close((pj[:, None] * q).sum(0), expected, rtol=1e-4, atol=1e-4)
        entropy = -(pj * torch.log(pj.clamp(min=1e-30))).sum()
        got = ConditionalPlanPolicy.entropy(probs, logp)[b]
        torch.testing.assert_close(got, entropy, rtol=1e-4, atol=1e-5)
        open_count = int(is_open.sum())
        assert open_count == len(envs.unwrapped.core.open_plans(b))
        got_max = ConditionalPlanPolicy.max_entropy(masks)[b]
        torch.testing.assert_close(got_max, torch.tensor(float(np.log(open_count))))
        assert torch.equal(mode[b], plans[pj.argmax()])
        a_t, a_pair, a_pol = (a[b] for a in adv)
        assert torch.allclose(a_t[masks[0][b]].sum(0), torch.zeros(2), atol=1e-5)
        for gi in np.flatnonzero(masks[0][b].numpy()):
            assert torch.allclose(a_pair[gi][masks[1][b, gi]].sum(0), torch.zeros(2), atol=1e-5)
            assert torch.allclose(a_pol[gi][masks[2][b, gi]].sum(0), torch.zeros(2), atol=1e-5)


def test_conditional_scores_are_equivariant_to_server_order():
    """Permuting the server rows (and the plan masks with them) permutes the target scores and
    each target's conditional scores, and leaves local's unchanged."""
    envs = gym.make_vec(LLM, num_envs=4)  # default: 4 of 8 server rows present
    agent = DiscreteSAC(envs, DSACConfig(**SMALL, plan_head="conditional"), seed=0)
    obs, info = envs.reset(seed=0)
    lay, (g, ns, k, np_) = agent.layout, agent.nvec
    perm = np.random.default_rng(0).permutation(lay.num_servers)
    order = np.concatenate([[0], 1 + perm])  # target order after the permutation
    rows = obs[:, lay.server_start :].reshape(len(obs), lay.num_servers, lay.server_dim)
    obs_p = np.concatenate([obs[:, : lay.server_start], rows[:, perm].reshape(len(obs), -1)], 1)
    m = info["plan_mask"]
    t, pairs, pol = m[:, :g], m[:, g : g + g * ns * k], m[:, g + g * ns * k :]
    m_p = np.concatenate(
        [
            t[:, order],
            pairs.reshape(-1, g, ns * k)[:, order].reshape(len(m), -1),
            pol.reshape(-1, g, np_)[:, order].reshape(len(m), -1),
        ],
        1,
    )
    w = torch.full((len(obs), 2), 0.5)
    with torch.no_grad():
        a = agent.actor(
            torch.as_tensor(obs), w, split_plan_masks(torch.as_tensor(m), agent.nvec, 4)
        )
        b = agent.actor(
            torch.as_tensor(obs_p), w, split_plan_masks(torch.as_tensor(m_p), agent.nvec, 4)
        )
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(y, x[:, torch.as_tensor(order)], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("deterministic", [False, True])
def test_conditional_plans_never_fall_back(deterministic):
    """Busy rush-hour episodes: every plan the conditional head picks is open (no fallback),
    sampled or deterministic; with invalid_action="raise" nothing it picks is masked."""
    envs = gym.make_vec(
        LLM, num_envs=8, scenario="examples/rush-hour.yaml", invalid_action="raise", parallel=False
    )
    agent = DiscreteSAC(envs, DSACConfig(**SMALL, plan_head="conditional"), seed=2)
    rng = np.random.default_rng(0)
    obs, info = envs.reset(seed=0)
    rejected = 0
    for _ in range(150):
        actions = agent.act(obs, info["plan_mask"], rng.dirichlet([1, 1], 8), deterministic)
        assert _plan_open(actions, info["plan_mask"], agent.nvec).all()
        obs, _, _, _, info = envs.step(actions)
        assert not info["fallback"].any()
        rejected += int(info["rejected"].sum())
    assert rejected > 0  # the rush hour does reject: the rejecting masks were exercised


def test_conditional_head_needs_the_plan_env():
    with pytest.raises(ValueError, match="plan_head"):
        DSACConfig(plan_head="joint")
    with pytest.raises(ValueError, match="continuation"):
        DSACConfig(continuation="future")
    with pytest.raises(ValueError, match="split_reward"):
        DSACConfig(continuation="target")
    with pytest.raises(ValueError, match="MultiDiscrete"):
        DiscreteSAC(gym.make_vec(GMORL, num_envs=2), DSACConfig(**SMALL, plan_head="conditional"))
    agent = DiscreteSAC(gym.make_vec(LLM, num_envs=2, scenario="tiny"), DSACConfig(**SMALL))
    with pytest.raises(ValueError, match="columns"):  # a factorised mask given to the other head
        other = DiscreteSAC(
            gym.make_vec(LLM, num_envs=2, scenario="tiny"),
            DSACConfig(**SMALL, plan_head="conditional"),
        )
        obs, info = gym.make_vec(LLM, num_envs=2, scenario="tiny").reset(seed=0)
        other.act(obs, info["action_mask"], [0.5, 0.5])
    assert agent.mask_key == "action_mask" and other.mask_key == "plan_mask"


# ---------------------------------------------------------------------------- learning
@pytest.mark.parametrize(
    ("plan_head", "split_reward", "continuation"),
    [
        ("factorised", False, "plan"),
        ("conditional", False, "plan"),
        ("conditional", True, "target"),
    ],
)
def test_learns_the_best_target_for_each_pure_preference(plan_head, split_reward, continuation):
    """Uniform preferences in training; then w = (1, 0) must offload and w = (0, 1) run locally."""
    config = DSACConfig(
        hidden=64, embed=32, batch_size=128, lr=1e-3, alpha_lr=1e-3,
        learning_starts=256, updates_per_step=4, plan_head=plan_head, split_reward=split_reward,
        continuation=continuation,
    )  # fmt: skip
    envs = gym.make_vec(LLM, num_envs=8, scenario=TWO_PLANS)
    agent = DiscreteSAC(envs, config, seed=0)
    logs = agent.learn(envs, 2400, seed=0)
    assert logs["updates"] >= 1000 and np.isfinite(logs["critic_loss"])

    # parallel=False: numba's OpenMP layer would otherwise change torch's thread count
    test = gym.make_vec(LLM, num_envs=32, scenario=TWO_PLANS, parallel=False)
    core = test.unwrapped.core
    obs, info = test.reset(seed=123)
    hits = {(1.0, 0.0): [], (0.0, 1.0): []}
    rng = np.random.default_rng(0)
    key = agent.mask_key
    for _ in range(5):  # 160 fresh states, of which those where both targets are open count
        both = info["action_mask"][:, :2].all(axis=1)
        for k, w in enumerate(hits):
            acts = agent.act(obs, info[key], np.array(w), deterministic=True)
            for n in np.flatnonzero(both):
                plans = core.open_plans(n)
                best = plans[np.argmin(core.plan_costs(plans, n)[:, k]), 0]
                assert best == (1 if k == 0 else 0)  # offload for latency, local for energy
                hits[w].append(acts[n, 0] == best)
        obs, _, _, _, info = test.step(agent.act(obs, info[key], rng.dirichlet([1, 1])))
    for w, h in hits.items():
        assert len(h) >= 100
        assert np.mean(h) >= 0.9, f"w={w}: right target on {np.mean(h):.0%} of {len(h)} states"


def test_split_reward_critic_learns_each_plans_immediate_cost():
    """With split_reward the critic's first half regresses on the reward itself: after training,
    its prediction for every open plan of fresh states matches the cost model's charge."""
    config = DSACConfig(
        hidden=64, embed=32, batch_size=128, lr=1e-3, alpha_lr=1e-3,
        learning_starts=256, updates_per_step=4, plan_head="conditional", split_reward=True,
    )  # fmt: skip
    envs = gym.make_vec(LLM, num_envs=8, scenario=TWO_PLANS)
    agent = DiscreteSAC(envs, config, seed=0)
    agent.learn(envs, 2400, seed=0)
    test = gym.make_vec(LLM, num_envs=16, scenario=TWO_PLANS, parallel=False)
    core = test.unwrapped.core
    obs, info = test.reset(seed=321)
    w = torch.full((16, 2), 0.5)
    masks = split_plan_masks(torch.as_tensor(info["plan_mask"]), agent.nvec, 16)
    with torch.no_grad():
        value, adv = agent.qf1(torch.as_tensor(obs), w, masks)
    errors, scale = [], agent.scale.numpy()
    for n in range(16):
        plans = core.open_plans(n)
        charged = -core.plan_costs(plans, n)[:, core.objective_index] / scale
        with torch.no_grad():
            q = agent.qf1.q_values(
                value[n : n + 1].expand(len(plans), -1),
                [a[n : n + 1].expand(len(plans), *a.shape[1:]) for a in adv],
                torch.as_tensor(plans),
            )
        errors.append(np.abs(q[:, :2].numpy() - charged) / np.abs(charged).clip(min=0.1))
    errors = np.concatenate(errors)
    assert np.median(errors) < 0.15, np.median(errors, axis=0)


@pytest.mark.parametrize("plan_head", ["factorised", "conditional"])
def test_target_continuation_ranks_the_rest_of_the_plan_by_its_reward(plan_head):
    """continuation="target": at a given target, Q - R is the same for every (split, tier,
    policy), so the rest of the plan is ranked by the immediate reward alone; with "plan" it
    is not."""
    envs = gym.make_vec(LLM, num_envs=2, scenario="examples/rush-hour.yaml")
    obs, info = envs.reset(seed=0)
    plans = _joint_plans(envs.single_action_space.nvec)
    spread = {}
    for continuation in ("plan", "target"):
        config = DSACConfig(
            **SMALL, plan_head=plan_head, split_reward=True, continuation=continuation
        )
        agent = DiscreteSAC(envs, config, seed=0)
        mask = info[agent.mask_key]
        masks = agent._split_masks(torch.as_tensor(mask), agent.nvec, 2)
        with torch.no_grad():
            value, adv = agent._q(agent.qf1, torch.as_tensor(obs), torch.full((2, 2), 0.5), masks)
            q = agent.qf1.q_values(
                value[:1].expand(len(plans), -1),
                [a[:1].expand(len(plans), *a.shape[1:]) for a in adv],
                plans,
            )
        future = q[:, 2:]  # the continuation half
        spread[continuation] = max(
            float((future[plans[:, 0] == g] - future[plans[:, 0] == g][0]).abs().max())
            for g in range(int(agent.nvec[0]))
        )
    assert spread["target"] == 0.0
    assert spread["plan"] > 1e-4


def test_gmorl_smoke_run():
    envs = gym.make_vec(GMORL, num_envs=8, invalid_action="raise")
    config = DSACConfig(**{**SMALL, "learning_starts": 256, "preferences": "gmorl"})
    agent = DiscreteSAC(envs, config, seed=0)
    logs = agent.learn(envs, 8 * 300, seed=0)  # ~270 updates
    assert logs["updates"] >= 250
    assert all(np.isfinite(v) for v in logs.values())
    for net in (agent.actor, agent.qf1, agent.qf2, agent.qf1_target):
        assert all(torch.isfinite(p).all() for p in net.parameters())
    stored = agent.buffer.actions[: len(agent.buffer)]
    masks = agent.buffer.masks[: len(agent.buffer)]
    assert masks[np.arange(len(stored)), stored].all()


# ---------------------------------------------------------------------------- checkpoints
def _same_state(a: DiscreteSAC, b: DiscreteSAC) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    for name in ("actor", "qf1", "qf2", "qf1_target", "qf2_target"):
        for k in sa[name]:
            assert torch.equal(sa[name][k], sb[name][k]), f"{name}.{k}"
    for name in ("actor_optimizer", "critic_optimizer", "alpha_optimizer"):
        for k, state in sa[name]["state"].items():
            for key, v in state.items():
                assert torch.equal(torch.as_tensor(v), torch.as_tensor(sb[name]["state"][k][key]))
    for k, v in sa["buffer"].items():
        assert np.array_equal(v, sb["buffer"][k]), k
    assert torch.equal(sa["log_alpha"], sb["log_alpha"])
    assert sa["numpy_rng"] == sb["numpy_rng"]
    assert torch.equal(sa["torch_rng"], sb["torch_rng"])
    assert (sa["num_updates"], sa["num_env_steps"]) == (sb["num_updates"], sb["num_env_steps"])


@pytest.mark.parametrize("plan_head", ["factorised", "conditional"])
def test_resume_reproduces_training(tmp_path, plan_head):
    torch.use_deterministic_algorithms(True)
    try:
        envs = gym.make_vec(LLM, num_envs=8, scenario="tiny")
        config = DSACConfig(
            **{**SMALL, "buffer_size": 4096, "updates_per_step": 2, "plan_head": plan_head}
        )
        agent = DiscreteSAC(envs, config, seed=7)
        assert agent.update() == {}  # nothing stored yet: no step
        agent.learn(envs, 8 * 40, seed=0)  # 320 transitions, ~64 updates
        assert agent.num_updates > 0
        agent.save(tmp_path / "dsac.pt")
        resumed = DiscreteSAC.load(tmp_path / "dsac.pt", envs)
        _same_state(agent, resumed)

        obs, info = envs.reset(seed=1)
        w = np.array([0.5, 0.5])
        for a in (agent, resumed):
            logs = [a.update() for _ in range(5)]
            a.last = (logs, a.act(obs, info[a.mask_key], w))
        assert agent.last[0] == resumed.last[0]
        assert np.array_equal(agent.last[1], resumed.last[1])
        _same_state(agent, resumed)
    finally:
        torch.use_deterministic_algorithms(False)


def test_checkpoint_rejects_another_env(tmp_path):
    agent = DiscreteSAC(gym.make_vec(LLM, num_envs=2, scenario="tiny"), DSACConfig(**SMALL))
    agent.save(tmp_path / "a.pt")
    with pytest.raises(ValueError, match="spaces"):
        DiscreteSAC.load(tmp_path / "a.pt", gym.make_vec(GMORL, num_envs=2))
    other = DiscreteSAC(
        gym.make_vec(LLM, num_envs=2, scenario="tiny"), DSACConfig(**SMALL, plan_head="conditional")
    )
    with pytest.raises(ValueError, match="plan_head"):
        other.load_state_dict(agent.state_dict())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback without CUDA")
def test_cuda_falls_back_to_cpu_without_cuda():
    envs = gym.make_vec(GMORL, num_envs=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        agent = DiscreteSAC(envs, DSACConfig(**SMALL, device="cuda"))
    assert agent.device.type == "cpu" and any("CUDA" in str(c.message) for c in caught)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_trains_on_cuda():
    envs = gym.make_vec(LLM, num_envs=8, scenario="tiny")
    agent = DiscreteSAC(envs, DSACConfig(**SMALL, device="cuda"), seed=0)
    logs = agent.learn(envs, 8 * 20, seed=0)
    assert agent.device.type == "cuda" and logs["updates"] > 0
    assert all(np.isfinite(v) for v in logs.values())


# ---------------------------------------------------------------------------- relative costs
@settings(max_examples=60, deadline=None)
@given(
    costs=st.lists(
        st.tuples(st.floats(0.01, 100.0), st.floats(0.01, 100.0)), min_size=1, max_size=6
    ),
    absent=st.lists(st.booleans(), min_size=6, max_size=6),
    w_delay=st.floats(0.0, 1.0),
    factor=st.floats(0.05, 20.0),
)
def test_relative_costs_mark_the_cheapest_server_and_ignore_a_common_scale(
    costs, absent, w_delay, factor
):
    """Rows (features, servers) = [present, delay, energy]: the inputs name the server with the
    least w . c / scale, lie in [0, 1], are 0 on absent rows, and do not move when every cost
    is multiplied by the same factor (what faster or slower CPUs do to their magnitudes)."""
    s = len(costs)
    present = np.array([not absent[j] for j in range(s)])
    present[0] = True
    layout = ObsLayout(
        global_dim=0, num_servers=s, server_dim=3, transposed=True,
        cost_features=(1, 2), cost_scale=(0.5, 4.0),
    )  # fmt: skip
    enc = ServerSetEncoder(layout, pref_dim=2, hidden=8, embed=8)
    c = np.array(costs, dtype=np.float32) * present[:, None]
    w = torch.tensor([[w_delay, 1.0 - w_delay]])

    def inputs(scale: float) -> np.ndarray:
        obs = np.concatenate([present[None].astype(np.float32), scale * c.T]).reshape(1, -1)
        _, rows = enc.split(torch.as_tensor(obs))
        return enc.relative_cost_inputs(rows, w, rows[..., 0] > 0.5)[0].numpy()

    x = inputs(1.0)
    u = (c / np.array([0.5, 4.0])) @ np.array([w_delay, 1.0 - w_delay])
    u_min = u[present].min()
    assert ((x >= 0) & (x <= 1 + 1e-6)).all()
    assert (x[~present] == 0).all()
    if u_min > 0:
        cheapest = present & (u <= u_min * (1 + 1e-5))
        assert x[np.flatnonzero(x[:, 2])].shape[0] >= 1
        assert cheapest[np.flatnonzero(x[:, 2])].all()
        assert x[present, 1] == pytest.approx(u_min / u[present], rel=1e-4)
    np.testing.assert_allclose(inputs(factor), x, atol=1e-4)


def test_relative_costs_are_zero_when_no_task_waits():
    layout = ObsLayout(
        global_dim=0, num_servers=3, server_dim=3, transposed=True,
        cost_features=(1, 2), cost_scale=(1.0, 1.0),
    )  # fmt: skip
    enc = ServerSetEncoder(layout, pref_dim=2, hidden=8, embed=8)
    obs = torch.zeros(1, 3, 3)
    obs[0, 0] = 1.0  # three present servers, no costs
    _, rows = enc.split(obs.reshape(1, -1))
    x = enc.relative_cost_inputs(rows, torch.tensor([[0.5, 0.5]]), rows[..., 0] > 0.5)
    assert torch.equal(x, torch.zeros(1, 3, 3))


def test_relative_costs_need_the_cost_rows_and_keep_their_training_scale(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="relative_costs needs"):
        DiscreteSAC(gym.make_vec(GMORL, num_envs=2), DSACConfig(**SMALL, relative_costs=True))
    train_env = gym.make_vec(GMORL, num_envs=2, cost_features=True, num_edges=3)
    assert obs_layout(train_env).cost_features == (69, 70)
    agent = DiscreteSAC(train_env, DSACConfig(**SMALL, relative_costs=True), seed=0)
    agent.save(tmp_path / "a.pt")
    # where the env loaded into measures another objective_scale, the networks keep the
    # training one
    test_env = gym.make_vec(GMORL, num_envs=2, cost_features=True, num_edges=3, ranges="test")
    monkeypatch.setattr("agents.dsac.objective_scale", lambda env: np.array([9.0, 0.1]))
    fresh = DiscreteSAC(test_env, agent.config)
    assert torch.equal(fresh.actor.encoder.cost_scale, torch.tensor([9.0, 0.1]))
    loaded = DiscreteSAC.load(tmp_path / "a.pt", test_env)
    for net in (loaded.actor, loaded.qf1, loaded.qf2_target):
        assert torch.equal(net.encoder.cost_scale, agent.actor.encoder.cost_scale)
    obs, info = test_env.reset(seed=3)
    w = np.array([0.3, 0.7])
    assert np.array_equal(agent.act(obs, None, w, True), loaded.act(obs, None, w, True))


# ------------------------------------------------------------ observed immediate reward (GMORL)
def test_observed_immediate_reward_is_what_each_action_gets():
    """immediate="observed": the critics' immediate-reward half of the action taken is the
    reward the env then pays, exactly, before any training (unseen frequency ranges)."""
    envs = gym.make_vec(GMORL, num_envs=8, cost_features=True, num_edges=4, ranges="test")
    config = DSACConfig(**SMALL, split_reward=True, immediate="observed")
    agent = DiscreteSAC(envs, config, seed=0)
    scale = agent.scale.numpy()
    obs, info = envs.reset(seed=5)
    rng = np.random.default_rng(0)
    w = torch.as_tensor(rng.dirichlet([1, 1], 8), dtype=torch.float32)
    checked = 0
    for _ in range(40):
        mask = info["action_mask"]
        masks = split_masks(torch.as_tensor(mask), agent.nvec, 8)
        with torch.no_grad():
            value, adv = agent._q(agent.qf1, torch.as_tensor(obs), w, masks)
        actions = np.array([rng.choice(np.flatnonzero(m)) for m in mask])
        q_r = agent.qf1.q_values(value, adv, torch.as_tensor(actions)[:, None])[:, :2].numpy()
        obs, r, _, _, info = envs.step(actions)
        np.testing.assert_allclose(q_r * scale, r, rtol=1e-5, atol=1e-6)
        checked += 8
    assert checked == 320


def test_observed_immediate_reward_is_exact_for_every_open_action():
    envs = gym.make_vec(GMORL, num_envs=4, cost_features=True, num_edges=5)
    agent = DiscreteSAC(envs, DSACConfig(**SMALL, split_reward=True, immediate="observed"))
    obs, info = envs.reset(seed=11)
    masks = split_masks(torch.as_tensor(info["action_mask"]), agent.nvec, 4)
    with torch.no_grad():
        value, adv = agent._q(agent.qf1, torch.as_tensor(obs), torch.full((4, 2), 0.5), masks)
    scale = agent.scale.numpy()
    costs = obs[:, 69:71, :].transpose(0, 2, 1)  # (N, servers, D): predicted delay, energy
    for n in range(4):
        for a in np.flatnonzero(info["action_mask"][n]):
            r = (value[n, :2] + adv[0][n, a, :2]).numpy()
            np.testing.assert_allclose(r, -costs[n, a] / scale, rtol=1e-5, atol=1e-6)


def test_observed_immediate_reward_needs_the_cost_rows():
    with pytest.raises(ValueError, match="immediate must be"):
        DSACConfig(split_reward=True, immediate="guessed")
    with pytest.raises(ValueError, match="needs split_reward"):
        DSACConfig(immediate="observed")
    config = DSACConfig(**SMALL, split_reward=True, immediate="observed")
    with pytest.raises(ValueError, match="immediate='observed' needs"):
        DiscreteSAC(gym.make_vec(GMORL, num_envs=2), config)
    with pytest.raises(ValueError, match="immediate='observed' needs"):
        DiscreteSAC(gym.make_vec(LLM, num_envs=2, scenario="tiny", cost_features=True), config)


def test_observed_immediate_reward_picks_the_cheapest_server_for_energy():
    """With the immediate reward read from the cost rows, a short run mostly sends the task to
    the server whose energy is least now at w = (0, 1), what greedy does there (6,000 steps:
    78 % of the tasks; 57-59 % with a learned immediate reward or none, a scratch comparison)."""
    envs = gym.make_vec(GMORL, num_envs=16, cost_features=True, num_edges=4)
    config = DSACConfig(
        hidden=64, embed=32, batch_size=128, lr=1e-3, alpha_lr=1e-3, learning_starts=256,
        updates_per_step=2, split_reward=True, immediate="observed", relative_costs=True,
    )  # fmt: skip
    agent = DiscreteSAC(envs, config, seed=0)
    agent.learn(envs, 6000, seed=0)
    test = gym.make_vec(GMORL, num_envs=32, cost_features=True, num_edges=4)
    obs, info = test.reset(seed=77)
    hits = []
    for _ in range(20):
        acts = agent.act(obs, info["action_mask"], np.array([0.0, 1.0]), deterministic=True)
        energy = np.where(info["action_mask"], obs[:, 70, :], np.inf)
        waiting = obs[:, 70, :].max(1) > 0
        best = energy.min(1)
        hits += list(energy[np.arange(32), acts][waiting] <= best[waiting] * (1 + 1e-6))
        obs, _, _, _, info = test.step(acts)
    assert len(hits) >= 200
    assert np.mean(hits) >= 0.7, f"cheapest server on {np.mean(hits):.0%} of {len(hits)} tasks"
