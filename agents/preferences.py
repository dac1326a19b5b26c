"""Preferences over objectives: sampling for training, fixed sets for evaluation.

* ``uniform``: w ~ Dirichlet(1), uniform on the simplex, drawn per episode and per parallel env;
* ``gmorl``: GMORL's evenly spaced set (for 2 objectives: w_i = (i / (n - 1), 1 - i / (n - 1)));
  each parallel env keeps one preference of the set, as the paper spreads its 64 envs;
* ``fixed``: one given preference for every env and episode (GMORL's per-preference policies).
"""

from __future__ import annotations

import numpy as np

from mec_env.pareto import simplex_weights

__all__ = ["PREFERENCE_MODES", "PreferenceSampler", "evaluation_preferences"]

PREFERENCE_MODES = ("uniform", "gmorl", "fixed")


def evaluation_preferences(reward_dim: int, count: int | None = None) -> np.ndarray:
    """Evenly spaced preferences: 101 for 2 objectives by default, a simplex lattice otherwise."""
    if reward_dim == 1:
        return np.ones((1, 1))
    if reward_dim == 2:
        return simplex_weights(2, count or 101)
    return simplex_weights(reward_dim, count or 13)


class PreferenceSampler:
    """Keeps one preference per parallel env and redraws it when that env's episode ends.

    Args:
        mode: ``uniform`` or ``gmorl`` (see the module docstring).
        reward_dim: number of objectives.
        num_envs: parallel envs.
        rng: the Generator to draw from.
    """

    def __init__(
        self,
        mode: str,
        reward_dim: int,
        num_envs: int,
        rng: np.random.Generator,
        fixed: np.ndarray | None = None,
    ) -> None:
        if mode not in PREFERENCE_MODES:
            raise ValueError(f"preferences must be one of {PREFERENCE_MODES}, got {mode!r}")
        self.mode, self.reward_dim, self.num_envs, self.rng = mode, reward_dim, num_envs, rng
        if mode == "fixed":
            w = np.asarray(fixed if fixed is not None else [], dtype=np.float64).ravel()
            if w.shape != (reward_dim,) or (w < 0).any() or not w.sum() > 0:
                raise ValueError(
                    f"fixed preference must be {reward_dim} non-negative weights with a positive sum, got {fixed!r}"
                )
            self.weights = np.tile(w / w.sum(), (num_envs, 1)).astype(np.float32)
        elif mode == "gmorl":
            grid = (
                simplex_weights(reward_dim, num_envs)
                if reward_dim == 2
                else evaluation_preferences(reward_dim)
            )
            self.weights = grid[np.arange(num_envs) % len(grid)].astype(np.float32)
        else:
            self.weights = rng.dirichlet(np.ones(reward_dim), num_envs).astype(np.float32)

    def resample(self, done: np.ndarray) -> np.ndarray:
        """Draw new preferences for the envs whose episode ended (``gmorl`` keeps its set)."""
        if self.mode == "uniform" and done.any():
            self.weights[done] = self.rng.dirichlet(np.ones(self.reward_dim), int(done.sum()))
        return self.weights
