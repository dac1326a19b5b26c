"""Views of the vector-reward environments for agents that need something else.

* :class:`LinearScalarization`: a float64 scalar reward ``w . r`` (SB3, single-objective agents);
  the vector stays in ``info["vector_reward"]`` and the weights in ``info["weights"]``.
* :class:`PreferenceObservation`: samples a preference per episode (uniform on the simplex, or
  from a fixed list) and appends it to the observation, for preference-conditioned agents.
"""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = ["LinearScalarization", "PreferenceObservation", "check_weights"]


def check_weights(weights, reward_dim: int, name: str = "weights") -> np.ndarray:
    """A float64 preference of length ``reward_dim``, non-negative and summing to > 0."""
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (reward_dim,) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(
            f"{name} must be {reward_dim} finite non-negative numbers with a positive sum, got {weights!r}"
        )
    return w


class LinearScalarization(gym.Wrapper):
    """Scalar reward ``float(weights . vector_reward)``; ``reward_range`` follows ``reward_space``."""

    def __init__(self, env: gym.Env, weights: Sequence[float] | None = None) -> None:
        super().__init__(env)
        dim = env.unwrapped.reward_dim
        self.weights = check_weights(np.full(dim, 1.0 / dim) if weights is None else weights, dim)

    def set_weights(self, weights: Sequence[float]) -> None:
        self.weights = check_weights(weights, len(self.weights))

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        vector = np.asarray(reward, dtype=np.float64)
        info = dict(info, vector_reward=np.asarray(reward), weights=self.weights.copy())
        return obs, float(vector @ self.weights), terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        return self.env.unwrapped.action_masks()


class PreferenceObservation(gym.Wrapper):
    """Appends the episode's preference ``w`` (sampled at reset) to a Box observation.

    Args:
        env: an environment with ``reward_dim`` and a 1-D Box observation.
        preferences: optional fixed list of preferences to cycle through at random (e.g. GMORL's
            evenly spaced set); default: uniform on the simplex (Dirichlet(1)).
        scalarize: also return the scalar ``w . r`` as the reward (vector kept in ``info``).
    """

    def __init__(
        self,
        env: gym.Env,
        preferences: Sequence[Sequence[float]] | None = None,
        scalarize: bool = False,
    ) -> None:
        super().__init__(env)
        dim = env.unwrapped.reward_dim
        box = env.observation_space
        if not isinstance(box, spaces.Box) or len(box.shape) != 1:
            raise ValueError(f"PreferenceObservation needs a 1-D Box observation space, got {box}")
        self.reward_dim = dim
        self.preferences = (
            None
            if preferences is None
            else np.stack([check_weights(p, dim, "preferences[i]") for p in preferences])
        )
        if self.preferences is not None:
            self.preferences = self.preferences / self.preferences.sum(axis=1, keepdims=True)
        self.scalarize = scalarize
        self.observation_space = spaces.Box(
            np.concatenate([box.low, np.zeros(dim, box.dtype)]),
            np.concatenate([box.high, np.ones(dim, box.dtype)]),
            dtype=box.dtype,
        )
        self.weights = np.full(dim, 1.0 / dim)

    def _sample(self) -> np.ndarray:
        rng = self.env.unwrapped.np_random
        if self.preferences is not None:
            return self.preferences[rng.integers(len(self.preferences))]
        return rng.dirichlet(np.ones(self.reward_dim))

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        given = None if options is None else options.get("weights")
        if given is not None:
            w = check_weights(given, self.reward_dim, "options['weights']")
            self.weights = w / w.sum()
        else:
            self.weights = self._sample()
        info = dict(info, weights=self.weights.copy())
        return self._obs(obs), info

    def _obs(self, obs):
        return np.concatenate([obs, self.weights.astype(obs.dtype)])

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        info = dict(info, weights=self.weights.copy())
        if self.scalarize:
            info["vector_reward"] = np.asarray(reward)
            reward = float(np.asarray(reward, dtype=np.float64) @ self.weights)
        return self._obs(obs), reward, terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        return self.env.unwrapped.action_masks()
