"""Sampling from factorised MultiDiscrete action masks (random valid actions, baselines)."""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["MaskSampler", "sample_masked", "split_masks"]


@njit(cache=True)
def _sample(masks, offsets, u, out):
    for n in range(masks.shape[0]):
        for i in range(offsets.shape[0] - 1):
            count = 0
            for j in range(offsets[i], offsets[i + 1]):
                count += masks[n, j]
            pick = min(int(u[n, i] * count), count - 1) if count > 0 else 0
            out[n, i] = 0
            for j in range(offsets[i], offsets[i + 1]):
                if masks[n, j]:
                    if pick == 0:
                        out[n, i] = j - offsets[i]
                        break
                    pick -= 1
    return out


class MaskSampler:
    """Draws a uniformly random open choice per part of a factorised MultiDiscrete mask.

    ``sampler(masks, rng)`` takes one mask (1-D, ``sum(nvec)``) or a batch (N, ``sum(nvec)``) and
    returns int64 actions of shape (len(nvec),) or (N, len(nvec)); a part with no open choice
    gets 0. Built once per action space, so a call costs a few microseconds.
    """

    def __init__(self, nvec) -> None:
        self.nvec = np.asarray(nvec, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.nvec)])
        self.parts = len(self.nvec)

    def __call__(self, masks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        single = masks.ndim == 1
        m = masks[None] if single else masks
        if m.shape[1] != self.offsets[-1]:
            raise ValueError(
                f"masks must have {int(self.offsets[-1])} columns (sum of nvec), got {m.shape[1]}"
            )
        out = _sample(
            m,
            self.offsets,
            rng.random((m.shape[0], self.parts)),
            np.empty((m.shape[0], self.parts), np.int64),
        )
        return out[0] if single else out


def sample_masked(masks: np.ndarray, nvec, rng: np.random.Generator) -> np.ndarray:
    """One-off form of :class:`MaskSampler` (build a sampler to call it many times)."""
    return MaskSampler(nvec)(np.asarray(masks, dtype=np.bool_), rng)


def split_masks(masks: np.ndarray, nvec) -> tuple[np.ndarray, ...]:
    """The per-part masks as int8 arrays, the form ``MultiDiscrete.sample(mask=...)`` takes."""
    offsets = np.cumsum(np.asarray(nvec))[:-1]
    return tuple(part.astype(np.int8) for part in np.split(np.asarray(masks), offsets, axis=-1))
