"""The clairvoyant oracle (mec_env.oracle): exact fronts on tiny instances, beam search beyond.

* every front point's action sequence, replayed in a fresh env reset with the same seed,
  reproduces its return vector exactly (also across a refill of the request block, and for a
  sub-env of a vector env);
* on tiny instances the exhaustive front weakly dominates the return of every baseline and of
  random valid policies, and its per-preference points bound ``episode_returns``;
* beam search equals exhaustive search when the beam is wide enough, and a narrow beam stays
  dominated by the exhaustive front;
* instances too big for exhaustive search and bad arguments raise ValueError.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import mec_env
from agents.baselines import applicable_baselines, make_baseline
from agents.common import objective_scale
from agents.evaluation import episode_returns
from mec_env import oracle, pareto
from mec_env.core import OffloadCore
from mec_env.masks import MaskSampler
from mec_env.oracle import episode_return, oracle_front, oracle_fronts, oracle_points

pytestmark = pytest.mark.filterwarnings("ignore:.*reward returned by `step\\(\\)`:UserWarning")

ENV_ID = "mec_env/LLMOffload-v0"
TOL = 1e-9


@functools.cache
def tiny(requests: int):
    return mec_env.load_scenario("tiny").replace(episode_requests=requests)


@functools.cache
def exhaustive(requests: int, seed: int) -> oracle.OracleResult:
    return oracle_front(tiny(requests), seed, mode="exhaustive")


def dominated_by(front: np.ndarray, point: np.ndarray) -> bool:
    """Some front point is >= ``point`` in every objective (tolerance TOL)."""
    return bool(np.any(np.all(front >= point - TOL, axis=1)))


def run_episode(scenario, seed: int, act) -> np.ndarray:
    """Return vector of ``act(env, obs, info) -> plan`` over one single-env episode."""
    env = gym.make(ENV_ID, scenario=scenario)
    obs, info = env.reset(seed=seed)
    total = np.zeros(env.unwrapped.reward_dim)
    done = False
    while not done:
        obs, reward, terminated, truncated, info = env.step(act(env, obs, info))
        total += reward
        done = terminated or truncated
    env.close()
    return total


def policy_returns(scenario, seed: int) -> dict[str, np.ndarray]:
    """Return vectors of every applicable baseline (greedy under several preferences) and of
    20 random valid-action policies, for one seed's episode."""
    out = {}
    probe = gym.make(ENV_ID, scenario=scenario)
    names = applicable_baselines(probe)
    sampler = MaskSampler(probe.unwrapped.action_space.nvec)
    probe.close()
    for name in names:
        weights = pareto.simplex_weights(2, 5) if name == "greedy" else [None]
        for w in weights:
            holder = {}

            def act(env, obs, info, name=name, w=w, holder=holder):
                if "b" not in holder:
                    holder["b"] = make_baseline(name, env, weights=w, seed=seed)
                return holder["b"].act(obs, info)

            out[f"{name}{'' if w is None else list(w)}"] = run_episode(scenario, seed, act)
    for k in range(20):
        rng = np.random.default_rng(1000 + k)
        out[f"random-mask-{k}"] = run_episode(
            scenario, seed, lambda env, obs, info, rng=rng: sampler(info["action_mask"], rng)
        )
    return out


# ------------------------------------------------------------------ replay
@pytest.mark.parametrize(("requests", "seed"), [(3, 0), (3, 1), (4, 0)])
def test_exhaustive_front_replays_exactly(requests, seed):
    r = exhaustive(requests, seed)
    assert r.mode == "exhaustive" and r.exact
    assert r.actions.shape == (len(r.front), requests, 4)
    assert pareto.pareto_mask(r.front).all()  # distinct and non-dominated
    assert np.all(np.diff(r.front[:, 0]) > 0)  # sorted by the first objective
    assert r.leaves <= r.nodes
    for i in range(len(r.front)):
        np.testing.assert_array_equal(r.replay(i), r.front[i])
        np.testing.assert_array_equal(episode_return(r.scenario, seed, r.actions[i]), r.front[i])


@pytest.mark.parametrize("trace", [False, True])
@pytest.mark.parametrize("vector", [False, True])
def test_beam_replays_across_a_refill_of_the_request_block(vector, trace, tmp_path):
    # 260 requests: the block holds 256, so a new block is drawn mid-episode from the env's
    # Generator (or read on from the trace); every branch must see what the env itself draws
    sc = mec_env.load_scenario("tiny")
    if trace:
        rng = np.random.default_rng(0)
        lines = ["time_s,device,model,prompt_tokens,output_tokens"] + [
            f"{3.0 * i:.1f},0,{['tinyllama-1.1b', 'mixtral-8x7b'][i % 2]},"
            f"{rng.integers(16, 2048)},{rng.integers(8, 256)}"
            for i in range(97)
        ]
        (tmp_path / "trace.csv").write_text("\n".join(lines) + "\n")
        sc = sc.replace(workload=sc.workload.replace(trace_path=str(tmp_path / "trace.csv")))
    kw = dict(num_envs=3, env_index=1) if vector else {}
    r = oracle_front(sc, 5, mode="beam", beam_width=2, episode_requests=260, **kw)
    assert r.mode == "beam" and not r.exact and r.scenario.episode_requests == 260
    for i in range(len(r.front)):
        np.testing.assert_array_equal(r.replay(i), r.front[i])


def test_vector_sub_env_episode_of_an_int_seed_replays_exactly():
    r = oracle_front(tiny(3), 2, mode="exhaustive", num_envs=4, env_index=3)
    assert (r.num_envs, r.env_index) == (4, 3)
    assert not np.array_equal(r.front, exhaustive(3, 2).front)  # another episode
    for i in range(len(r.front)):
        np.testing.assert_array_equal(r.replay(i), r.front[i])


# ------------------------------------------------------------------ upper bound
@pytest.mark.parametrize(("requests", "seed"), [(3, 0), (3, 1), (3, 2), (4, 0), (4, 3)])
def test_front_weakly_dominates_baselines_and_random_policies(requests, seed):
    front = exhaustive(requests, seed).front
    returns = policy_returns(tiny(requests), seed)
    assert len(returns) >= 20 + 9
    for name, R in returns.items():
        assert dominated_by(front, R), f"{name}: return {R} not dominated by the oracle {front}"


def test_oracle_fronts_bound_mean_returns_over_seeds():
    seeds = (0, 1, 2)
    prefs = pareto.simplex_weights(2, 5)
    fronts = oracle_fronts(tiny(3), seeds, prefs, mode="exhaustive")
    assert fronts.exact and len(fronts.results) == 3 and fronts.points.shape == (5, 2)
    np.testing.assert_array_equal(
        fronts.points, oracle_points(tiny(3), seeds, prefs, mode="exhaustive")
    )
    per_seed = [policy_returns(tiny(3), s) for s in seeds]
    for name in per_seed[0]:
        mean = np.mean([p[name] for p in per_seed], axis=0)
        assert dominated_by(fronts.mean_front, mean), name
        # the per-preference points bound every policy's scalarised mean return
        score = (mean / fronts.scale) @ prefs.T
        bound = np.einsum("pd,pd->p", fronts.points / fronts.scale, prefs)
        assert np.all(score <= bound + TOL), name


def test_oracle_points_bound_episode_returns():
    # episode_returns resets every sub-env with the same seed: the single env's episodes
    sc, prefs, episodes = tiny(3), pareto.simplex_weights(2, 5), 3
    env = gym.make_vec(ENV_ID, num_envs=len(prefs), scenario=sc)
    scale = objective_scale(env)
    R = {
        name: episode_returns(env, make_baseline(name, env, seed=1).act_batch, prefs, episodes, 0)
        for name in ("greedy", "random", "least-loaded")
    }
    env.close()
    fronts = oracle_fronts(sc, range(episodes), prefs, scale=scale, mode="exhaustive")
    for name, returns in R.items():
        for j, w in enumerate(prefs):
            assert w @ (returns[j] / scale) <= w @ (fronts.points[j] / scale) + TOL, (name, w)
            assert dominated_by(fronts.mean_front, returns[j]), (name, w)


def test_greedy_is_not_the_oracle():
    # myopic greedy misses part of the exact front somewhere on these tiny instances
    missed = 0
    for requests, seed in [(3, 0), (3, 1), (3, 2), (4, 0)]:
        front = exhaustive(requests, seed).front
        greedy = [R for name, R in policy_returns(tiny(requests), seed).items() if "greedy" in name]
        missed += sum(not any(np.allclose(f, g) for g in greedy) for f in front)
    assert missed > 0


# ------------------------------------------------------------------ beam search
@pytest.mark.parametrize(("requests", "seed", "width"), [(3, 0, 400), (3, 1, 400), (4, 0, 8000)])
def test_beam_equals_exhaustive_when_wide_enough(requests, seed, width):
    e = exhaustive(requests, seed)
    b = oracle_front(tiny(requests), seed, mode="beam", beam_width=width)
    assert b.mode == "beam" and b.exact  # nothing was pruned
    assert b.nodes == e.nodes and b.leaves == e.leaves
    np.testing.assert_array_equal(b.front, e.front)
    np.testing.assert_array_equal(b.actions, e.actions)


@pytest.mark.parametrize(("requests", "seed"), [(3, 2), (4, 0), (4, 3)])
@pytest.mark.parametrize("width", [1, 4, 16])
def test_narrow_beam_is_dominated_by_exhaustive(requests, seed, width):
    e = exhaustive(requests, seed)
    b = oracle_front(tiny(requests), seed, mode="beam", beam_width=width)
    assert not b.exact and b.nodes < e.nodes
    for i, point in enumerate(b.front):
        assert dominated_by(e.front, point)
        np.testing.assert_array_equal(b.replay(i), point)


def test_auto_mode_picks_exhaustive_or_beam():
    small = oracle_front(tiny(3), 0)
    assert small.mode == "exhaustive"
    np.testing.assert_array_equal(small.front, exhaustive(3, 0).front)
    big = oracle_front("tiny", 0, beam_width=16)  # 8 requests: ~1e10 sequences
    assert big.mode == "beam" and big.beam_width == 16 and big.scenario.episode_requests == 8
    # too big for max_nodes though estimated small enough: falls back to beam
    fallback = oracle_front(tiny(3), 0, max_nodes=5000, beam_width=16)
    assert fallback.mode == "beam"


# ------------------------------------------------------------------ errors
def test_too_big_for_exhaustive_names_max_nodes_and_count():
    with pytest.raises(ValueError, match=r"max_nodes=100\b.*\b420\b"):
        oracle_front(tiny(3), 0, mode="exhaustive", max_nodes=100)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(mode="dfs"), "mode"),
        (dict(beam_width=0), "beam_width"),
        (dict(max_nodes=-1), "max_nodes"),
        (dict(episode_requests=0), "episode_requests"),
        (dict(seed=-1), "seed"),
        (dict(num_envs=2, env_index=2), "env_index"),
        (dict(env_id="mec_env/LLMOffloadContinuous-v0"), "discrete plans"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    kwargs = {"seed": 0, **kwargs}
    with pytest.raises(ValueError, match=match):
        oracle_front(tiny(3), **kwargs)


def test_oracle_fronts_arguments():
    with pytest.raises(ValueError, match="seeds"):
        oracle_fronts(tiny(3), [])
    with pytest.raises(ValueError, match="preferences"):
        oracle_fronts(tiny(3), [0], np.ones((2, 3)), mode="exhaustive")
    with pytest.raises(ValueError, match="scale"):
        oracle_fronts(tiny(3), [0], scale=[1.0, 0.0], mode="exhaustive")


def test_replay_of_a_wrong_length_sequence_raises():
    r = exhaustive(3, 0)
    with pytest.raises(ValueError, match="ended after 3 requests"):
        episode_return(r.scenario, 0, np.concatenate([r.actions[0], r.actions[0]]))


# ------------------------------------------------------------------ core state copies
def test_core_state_copy_and_restore():
    sc, n = tiny(4), 7
    core = OffloadCore(sc, n)
    core.reset(np.random.default_rng(7))
    saved = core.get_state(np.array([0]))
    core.copy_rows(0, np.arange(1, n))  # identical worlds
    plans = core.open_plans(0)
    a = np.stack([plans[0]] * (n - 1) + [plans[-1]])
    r = core.step(a, np.random.default_rng(0))
    assert np.array_equal(r.reward[0], r.reward[1]) and not np.array_equal(
        r.reward[0], r.reward[-1]
    )
    for name in OffloadCore.STATE_ARRAYS:
        assert np.array_equal(getattr(core, name)[0], getattr(core, name)[1]), name
    core.set_state(saved, np.array([0, 1]))  # back to the saved state
    for name in OffloadCore.STATE_ARRAYS:
        np.testing.assert_array_equal(getattr(core, name)[:2], np.repeat(saved[name], 2, 0))
    # every per-env array the core allocates is covered by STATE_ARRAYS or is a step output
    outputs = {"costs", "plan", "fallback", "reward", "default_knobs", "all_envs"}
    outputs |= {"target_costs", "obs_costs"}  # derived: set_state / copy_rows recompute them
    other = OffloadCore(sc, n + 1)  # per-env arrays: those whose first axis follows num_envs
    per_env = {
        k
        for k, v in vars(core).items()
        if isinstance(v, np.ndarray) and v.shape[:1] == (n,) and len(getattr(other, k)) == n + 1
    }
    assert per_env - outputs == set(OffloadCore.STATE_ARRAYS)


def test_mec_env_oracle_does_not_import_agents_or_devices():
    tree = ast.parse(Path(oracle.__file__).read_text())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
    assert not [m for m in names if m.split(".")[0] in ("agents", "devices")]
