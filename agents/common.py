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

Rewards are learned in normalised units: each objective is divided by its typical per-request
magnitude (:func:`objective_scale`), so that a preference weighs objectives of very different
units (seconds and joules) on comparable terms. Evaluation and fronts always use raw rewards.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from mec_env.envs.gmorl import COST_FEATURES, NUM_FEATURES

__all__ = [
    "CheckpointMixin",
    "ObsLayout",
    "first_line",
    "objective_scale",
    "obs_layout",
    "resolve_device",
]


SCALE_EPISODES = 4  # random-policy episodes that measure the typical per-request cost
SCALE_SEED = 0


def objective_scale(env) -> np.ndarray:
    """Per-objective reward scale for learning: the mean magnitude of a request's reward under
    a uniformly random valid policy, measured once on a fresh copy of the env's scenario
    (``SCALE_EPISODES`` episodes, fixed seed, so the scale is a property of the scenario).
    GMORLOffload (no scenario) gets the same measure on its own world (the training ranges):
    its alpha_T and alpha_E leave a step's delay reward ~10x smaller than its energy reward,
    which would let the entropy bonus drown the delay objective. Other envs without a scenario
    get ones. Dividing by it puts a second of latency and a joule of energy on comparable terms
    before a preference weighs them."""
    u = getattr(env, "unwrapped", env)
    scenario = getattr(u, "scenario", None)
    dim = int(u.reward_dim)
    if scenario is None:
        from mec_env.envs.gmorl import GMORLBatchedCore

        if isinstance(getattr(u, "_core", None), GMORLBatchedCore):
            return _gmorl_scale().copy()
        return np.ones(dim, np.float32)
    return _scenario_scale(scenario).copy()


@functools.lru_cache(maxsize=1)
def _gmorl_scale() -> np.ndarray:
    from mec_env.envs.gmorl import GMORLOffloadEnv

    return _random_policy_scale(
        GMORLOffloadEnv(), lambda mask, rng: int(rng.choice(np.flatnonzero(mask)))
    )


@functools.lru_cache(maxsize=32)
def _scenario_scale(scenario) -> np.ndarray:
    from mec_env.envs.llm_offload import LLMOffloadEnv
    from mec_env.masks import MaskSampler

    env = LLMOffloadEnv(scenario)
    return _random_policy_scale(env, MaskSampler(env.action_space.nvec))


def _random_policy_scale(env, sample) -> np.ndarray:
    """Mean |reward| per objective over ``SCALE_EPISODES`` episodes of ``sample(mask, rng)``
    (a uniformly random valid action), read-only."""
    rng = np.random.default_rng(SCALE_SEED)
    total, count = np.zeros(env.reward_dim), 0
    for episode in range(SCALE_EPISODES):
        _, info = env.reset(seed=SCALE_SEED + episode)
        done = False
        while not done:
            _, reward, terminated, truncated, info = env.step(sample(info["action_mask"], rng))
            total += np.abs(reward)
            count += 1
            done = terminated or truncated
    scale = np.maximum(total / count, 1e-6).astype(np.float32)
    scale.setflags(write=False)
    return scale


@dataclass(frozen=True)
class ObsLayout:
    """How a flat observation splits into a global part and per-server rows.

    ``global_slice``: the request / device features; ``servers``: (rows, features per row) read
    from ``server_start`` on, row-major (LLMOffload) or, when ``transposed``, an observation of
    shape (features, rows) as GMORLOffload's.

    ``cost_features``: positions in a row of the per-objective myopic costs of sending the
    current task to that server (-reward of that action; GMORLOffload with
    ``cost_features=True``), () when the env has none. ``cost_scale``: per-objective divisors
    that turn them into the agent's utility units; when set (one per objective), the encoder
    adds the relative scalarised cost inputs of :class:`agents.networks.ServerSetEncoder`.
    """

    global_dim: int
    num_servers: int
    server_dim: int
    server_start: int = 0
    transposed: bool = False
    cost_features: tuple[int, ...] = ()
    cost_scale: tuple[float, ...] = ()

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
        core = getattr(u, "core", None)
        costs: tuple[int, ...] = ()
        if getattr(core, "cost_features", False):
            costs = tuple(range(NUM_FEATURES, NUM_FEATURES + len(COST_FEATURES)))
        return ObsLayout(
            global_dim=0,
            num_servers=rows,
            server_dim=features,
            transposed=True,
            cost_features=costs,
        )
    raise ValueError(f"no known observation layout for {type(u).__name__} with space {space}")


def first_line(err: BaseException) -> str:
    """The first line of ``err``'s message, or its type's name when it has none: what a CLI's
    one-line error quotes of a deeper failure (a state dict that does not fit, say)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def resolve_device(name: str):
    """``torch.device(name)``, or the CPU with a warning when CUDA is asked for but absent."""
    import warnings

    import torch

    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        warnings.warn(
            f"device {name!r} asked for but CUDA is not available; using the CPU", stacklevel=3
        )
        return torch.device("cpu")
    return device


class CheckpointMixin:
    """``save`` / ``load`` of a learning agent's :meth:`state_dict` with ``torch.save``.

    The file loads with ``weights_only=True``: the replay buffer's state holds tensors
    (:meth:`agents.buffer.ReplayBuffer.state_dict`). A subclass names its config dataclass in
    ``CONFIG_CLASS``.
    """

    CONFIG_CLASS: type

    def save(self, path) -> None:
        """Write :meth:`state_dict` with ``torch.save`` (loadable with ``weights_only=True``)."""
        import torch

        torch.save(self.state_dict(), path)

    @classmethod
    def load(cls, path, env, device: str | None = None):
        """An agent for ``env`` restored from :meth:`save` (its config; ``device`` overrides)."""
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True)
        config = cls.CONFIG_CLASS(**state["config"])
        if device is not None:
            config.device = device
        agent = cls(env, config)
        agent.load_state_dict(state)
        return agent
