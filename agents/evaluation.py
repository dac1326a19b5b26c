"""Evaluating a policy over a set of preferences: mean vector returns, front, hypervolume.

Used by ``train.py``'s periodic evaluation (and by ``evaluate.py``). A policy is any callable
``policy(obs, info, weights) -> actions`` over a vector env, e.g. a learning agent's
deterministic ``act`` or a baseline's ``act_batch``.
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np

from mec_env import pareto

__all__ = ["episode_returns", "front_metrics", "return_bounds"]


def return_bounds(env) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(low, high, reference point) of episode returns used to normalise fronts: the scenario's
    published bounds (LLMOffload envs); for envs without a scenario, the reward space times
    the episode length, reference point -0.1 in normalised units."""
    u = getattr(env, "unwrapped", env)
    scenario = getattr(u, "scenario", None)
    if scenario is not None:
        o = scenario.objectives
        return np.array(o.return_low), np.array(o.return_high), np.array(o.reference_point)
    steps = getattr(u, "episode_steps", None) or getattr(
        getattr(u, "_core", None), "episode_steps", 100
    )
    space = u.reward_space
    low, high = np.asarray(space.low, float), np.asarray(space.high, float)
    if low.ndim == 2:  # a vector env's batched reward space: every row is the same
        low, high = low[0], high[0]
    low, high = low * steps, high * steps
    return low, high, np.full(low.shape, -0.1)


def episode_returns(
    env: gym.vector.VectorEnv,
    policy: Callable[[np.ndarray, dict, np.ndarray], np.ndarray],
    preferences: np.ndarray,
    episodes: int = 1,
    seed: int = 0,
) -> np.ndarray:
    """Mean vector return (raw units) of ``policy`` for each preference, (P, reward_dim).

    ``env`` is a vector env with one sub-env per preference; it runs ``episodes`` full
    episodes with seeds ``seed .. seed + episodes - 1``, every preference on the same episodes
    (each sub-env reset with the same seed), so the points differ only by the policy's
    response to the preference (the caller closes it).
    """
    prefs = np.asarray(preferences, dtype=np.float32)
    if env.num_envs != len(prefs):
        raise ValueError(
            f"env has {env.num_envs} sub-envs, one per preference needed ({len(prefs)})"
        )
    total = np.zeros((len(prefs), int(env.reward_dim)))
    for ep in range(episodes):
        obs, info = env.reset(seed=[seed + ep] * len(prefs))
        done = np.zeros(len(prefs), bool)
        while not done.all():
            actions = policy(obs, info, prefs)
            obs, reward, terminated, truncated, info = env.step(actions)
            total[~done] += reward[~done]
            done |= terminated | truncated
    return total / episodes


def front_metrics(returns: np.ndarray, low, high, ref_point) -> dict[str, float]:
    """Normalised hypervolume, expected utility, sparsity and cardinality of mean returns."""
    norm = pareto.normalise(
        np.asarray(returns, float), np.asarray(low, float), np.asarray(high, float)
    )
    front = pareto.pareto_front(norm)
    return {
        "hypervolume": float(pareto.hypervolume(front, np.asarray(ref_point, float))),
        "expected_utility": float(pareto.expected_utility(front)),
        "sparsity": float(pareto.sparsity(front)),
        "cardinality": float(pareto.cardinality(front)),
    }
