"""Replay buffer for multi-objective off-policy agents (vector rewards, masks, preferences).

A ring buffer of numpy arrays filled a batch of transitions at a time (one per parallel env).
``state_dict()`` holds everything needed to continue training from a checkpoint.

The state holds the arrays as CPU tensors (copies), not numpy arrays: ``torch.save`` writes a
tensor's storage as it is, but pickles a numpy array through a bytes copy that it grows in
memory. For a full GMORL buffer (100,000 x 781 floats twice) that made every checkpoint 7.5x
slower (idle machine; 10-12x beside a training run), with 1.3M page faults, and a third larger
(``benchmarks/checkpoint.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["ReplayBuffer"]


class ReplayBuffer:
    """Transitions (obs, action, vector reward, next obs, terminated, masks, preference).

    Args:
        capacity: transitions kept (oldest overwritten).
        obs_dim: observation length.
        action_shape: shape of one action ((parts,) for MultiDiscrete, (dim,) for Box, () for
            Discrete).
        action_dtype: ``np.int64`` for discrete actions, ``np.float32`` for continuous ones.
        reward_dim: objectives.
        mask_dim: length of the action mask (0: no masks stored).
    """

    def __init__(
        self,
        capacity: int,
        obs_dim: int,
        action_shape: tuple[int, ...],
        action_dtype,
        reward_dim: int,
        mask_dim: int = 0,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.actions = np.zeros((capacity, *action_shape), action_dtype)
        self.rewards = np.zeros((capacity, reward_dim), np.float32)
        self.terminated = np.zeros(capacity, np.float32)
        self.weights = np.zeros((capacity, reward_dim), np.float32)
        self.masks = np.ones((capacity, mask_dim), bool)
        self.next_masks = np.ones((capacity, mask_dim), bool)
        self.pos = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(
        self, obs, actions, rewards, next_obs, terminated, weights, masks=None, next_masks=None
    ) -> None:
        """Add N transitions (leading axis N on every argument)."""
        n = len(obs)
        idx = (self.pos + np.arange(n)) % self.capacity
        self.obs[idx] = obs
        self.actions[idx] = actions
        self.rewards[idx] = rewards
        self.next_obs[idx] = next_obs
        self.terminated[idx] = terminated
        self.weights[idx] = weights
        if self.masks.shape[1]:
            self.masks[idx] = masks
            self.next_masks[idx] = next_masks
        self.pos = int((self.pos + n) % self.capacity)
        self.size = int(min(self.size + n, self.capacity))

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """A uniform batch (with replacement) as a dict of numpy arrays."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty buffer")
        idx = rng.integers(0, self.size, batch_size)
        batch = {
            "obs": self.obs[idx],
            "actions": self.actions[idx],
            "rewards": self.rewards[idx],
            "next_obs": self.next_obs[idx],
            "terminated": self.terminated[idx],
            "weights": self.weights[idx],
        }
        if self.masks.shape[1]:
            batch["masks"] = self.masks[idx]
            batch["next_masks"] = self.next_masks[idx]
        return batch

    _ARRAYS = (
        "obs",
        "next_obs",
        "actions",
        "rewards",
        "terminated",
        "weights",
        "masks",
        "next_masks",
    )

    def state_dict(self) -> dict[str, Any]:
        """Only the filled part, so a checkpoint of a young buffer stays small; each array a
        CPU tensor holding a copy (module docstring), so adding transitions later does not
        change a state already taken."""
        state: dict[str, Any] = {
            name: torch.from_numpy(getattr(self, name)[: self.size].copy()) for name in self._ARRAYS
        }
        state.update(pos=self.pos, size=self.size, capacity=self.capacity)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["capacity"] != self.capacity:
            raise ValueError(
                f"buffer capacity {self.capacity} does not match the checkpoint's {state['capacity']}"
            )
        size = int(state["size"])
        for name in self._ARRAYS:
            arr = getattr(self, name)
            saved = np.asarray(state[name])  # a tensor, or a numpy array in older checkpoints
            if saved.shape[1:] != arr.shape[1:]:
                raise ValueError(
                    f"buffer field {name} has shape {arr.shape[1:]}, checkpoint {saved.shape[1:]}"
                )
            arr[:size] = saved
        self.pos, self.size = int(state["pos"]), size
