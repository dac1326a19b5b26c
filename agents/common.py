"""What every agent and baseline shares: the interfaces, reward scaling, observation layout.

Interfaces (batched over parallel envs, leading axis N):

* a **learning agent** (``agents.dsac.DiscreteSAC``, ``agents.ddpg.MODDPG``) has
  ``act(obs, masks, weights, deterministic) -> actions``,
  ``store(obs, actions, rewards, next_obs, terminated, weights, masks, next_masks)``,
  ``update() -> dict[str, float]`` (one gradient step; losses and entropy for the logs),
  ``state_dict()`` / ``load_state_dict()`` (networks, optimisers, entropy coefficient, replay
  buffer, RNG state, counters: everything needed to continue training);
* a **baseline** (``agents.baselines``) has ``act(obs, info) -> action`` for one env, and
  ``act_batch(obs, info) -> actions`` for a vector env.

Rewards are learned in normalised units: each objective is divided by its per-request scale
(:func:`objective_scale`), so that a preference weighs objectives of very different units
(seconds and joules) on comparable terms. Evaluation and fronts always use the raw rewards.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ObsLayout", "objective_scale", "obs_layout"]


def objective_scale(env) -> np.ndarray:
    """Per-objective reward scale: the scenario's return range / episode length (LLMOffload
    envs), or ones (envs whose rewards are already scaled, e.g. GMORLOffload's alpha_T, alpha_E)."""
    u = getattr(env, "unwrapped", env)
    scenario = getattr(u, "scenario", None)
    dim = int(u.reward_dim)
    if scenario is None:
        return np.ones(dim, np.float32)
    o = scenario.objectives
    span = np.asarray(o.return_high, float) - np.asarray(o.return_low, float)
    return (span / scenario.episode_requests).astype(np.float32)


@dataclass(frozen=True)
class ObsLayout:
    """How a flat observation splits into a global part and per-server rows.

    ``global_slice``: the request / device features; ``servers``: (rows, features per row) read
    from ``server_start`` on, row-major (LLMOffload) or, when ``transposed``, an observation of
    shape (features, rows) as GMORLOffload's.
    """

    global_dim: int
    num_servers: int
    server_dim: int
    server_start: int = 0
    transposed: bool = False

    def split(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(global (N, global_dim), servers (N, num_servers, server_dim)) of a batch."""
        n = obs.shape[0]
        if self.transposed:
            servers = obs.reshape(n, self.server_dim, self.num_servers).transpose(0, 2, 1)
            return np.zeros((n, 0), obs.dtype), servers
        g = obs[:, : self.global_dim]
        s = obs[:, self.server_start :].reshape(n, self.num_servers, self.server_dim)
        return g, s


def obs_layout(env) -> ObsLayout:
    """The layout of ``env``'s observations (LLMOffload's ``obs_layout``, or GMORL's columns)."""
    u = getattr(env, "unwrapped", env)
    base = getattr(u, "_base", u)  # the vector env keeps its spaces on a helper object
    layout = getattr(base, "obs_layout", None)
    if layout is not None:
        start, nreq = layout["request"]
        server_start, rows, per = layout["servers"]
        return ObsLayout(
            global_dim=nreq - start, num_servers=rows, server_dim=per, server_start=server_start
        )
    space = getattr(u, "single_observation_space", None) or u.observation_space
    if len(space.shape) == 2:  # GMORLOffload: (features, servers)
        features, rows = space.shape
        return ObsLayout(global_dim=0, num_servers=rows, server_dim=features, transposed=True)
    raise ValueError(f"no known observation layout for {type(u).__name__} with space {space}")
