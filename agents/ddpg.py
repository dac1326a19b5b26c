"""Multi-objective DDPG: one preference-conditioned deterministic policy for every trade-off.

For the continuous offloading env (``mec_env/LLMOffloadContinuous-v0`` and its vector env), whose
``Box(-1, 1)`` action decodes into a placement plan plus continuous knobs (KV shares, transmit
power, device frequency). With preference w on the simplex, normalised vector reward
``r_hat = r / objective_scale(env)`` and ``D`` objectives:

* actor ``mu(s, w) = tanh(f(s, w))`` in ``[-1, 1]^dim``; exploration adds Gaussian noise of std
  ``sigma_t`` (optionally decaying linearly) and clips to the box;
* vector critic ``Q(s, a, w)`` in ``R^D``, one expected discounted return per objective;
* critic target, per objective: ``y = r_hat + gamma (1 - terminated) Q'(s', mu'(s', w), w)``,
  loss ``sum_d (Q_d(s, a, w) - y_d)^2`` averaged over the batch;
* actor loss ``-E[w . Q(s, mu(s, w), w)] + lambda E[|f(s, w)|^2] / dim`` (a small penalty on the
  pre-tanh action keeps it out of tanh's flat tails, where an argmax-decoded choice would
  freeze);
* targets ``theta' <- tau theta + (1 - tau) theta'`` after each actor step.

With ``twin=True`` (TD3-style) two critics are trained on one target built from the twin whose
*scalarised* value ``w . Q'`` is lower; ``policy_delay`` and ``target_noise`` add TD3's delayed
actor and target-policy smoothing. The default (``twin=False``, delay 1, no smoothing) is DDPG.

Networks (:mod:`agents.networks`): a permutation-invariant
:class:`~agents.networks.ServerSetEncoder` reads the request features and the padded server rows
of ``obs_layout(env)``; the actor scores each server target from that server's own embedding
(:class:`~agents.networks.TargetHead`: the target scores are equivariant to the server order, so
one policy serves any number of servers), and the critic feeds each server's target score into
that server's row (the other action entries and w condition the encoder). Observations without a
known layout get plain MLPs.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

from agents.buffer import ReplayBuffer
from agents.common import CheckpointMixin, ObsLayout, objective_scale, obs_layout, resolve_device
from agents.networks import ServerSetEncoder, TargetHead, mlp, target_has_local
from agents.preferences import PREFERENCE_MODES, PreferenceSampler

__all__ = ["DDPGConfig", "MODDPG"]

CHECKPOINT_VERSION = 1


@dataclass
class DDPGConfig:
    """Hyper-parameters of :class:`MODDPG`: DDPG (Lillicrap et al. 2016) with TD3's learning
    rates and Gaussian exploration (Fujimoto et al. 2018); the TD3 options are off by default.

    Attributes:
        hidden: width of every hidden layer and of the encoder's context vector.
        embed: size of a server row's embedding in :class:`agents.networks.ServerSetEncoder`.
        architecture: ``"set"`` (permutation-invariant server encoder; falls back to ``"mlp"``
            when the env has no observation layout) or ``"mlp"``.
        actor_lr: Adam learning rate of the actor.
        critic_lr: Adam learning rate of the critic(s).
        gamma: discount per request (as :class:`agents.dsac.DSACConfig`, GMORL's 0.95).
        tau: Polyak coefficient of the target networks (fraction of the online weights mixed in).
        batch_size: transitions per gradient step.
        buffer_size: replay capacity in transitions.
        learning_starts: transitions stored before :meth:`MODDPG.update` takes a step.
        updates_per_step: gradient steps per step of the vector env (i.e. per ``num_envs``
            transitions) in :meth:`MODDPG.learn`.
        preferences: how :meth:`MODDPG.learn` draws preferences
            (:data:`agents.preferences.PREFERENCE_MODES`: "uniform" or "gmorl").
        random_steps: transitions stored before the behaviour policy stops acting uniformly at
            random (exploratory warm-up; 0 disables it).
        noise_sigma: std of the Gaussian exploration noise on each action entry at the start.
        noise_sigma_final: the std reached after ``noise_decay_steps`` transitions.
        noise_decay_steps: transitions over which the std decays linearly (0: constant std).
        twin: two critics and the min (by scalarised value) of their targets (TD3).
        policy_delay: critic steps per actor and target step (TD3: 2).
        target_noise: std of the smoothing noise on the target action (TD3: 0.2; 0 for DDPG).
        target_noise_clip: the smoothing noise is clipped to +- this.
        action_penalty: weight of the mean squared pre-tanh action in the actor loss; keeps the
            scores out of tanh's flat tails, where their gradient vanishes and an argmax-decoded
            choice could no longer change.
        grad_clip: max global gradient norm per network (None: no clipping).
        weight_decay: L2 penalty of the critic's optimiser.
        device: torch device ("cpu", or "cuda" when available; falls back to the CPU with a
            warning).
    """

    hidden: int = 128
    embed: int = 64
    architecture: str = "set"
    actor_lr: float = 3e-4
    critic_lr: float = 1e-3
    gamma: float = 0.95
    tau: float = 0.005
    batch_size: int = 256
    buffer_size: int = 100_000
    learning_starts: int = 1_000
    updates_per_step: int = 1
    preferences: str = "uniform"
    random_steps: int = 0
    noise_sigma: float = 0.2
    noise_sigma_final: float = 0.05
    noise_decay_steps: int = 0
    twin: bool = False
    policy_delay: int = 1
    target_noise: float = 0.0
    target_noise_clip: float = 0.5
    action_penalty: float = 1e-2
    grad_clip: float | None = None
    weight_decay: float = 0.0
    device: str = "cpu"

    def __post_init__(self) -> None:
        checks = {
            "hidden": self.hidden >= 1,
            "embed": self.embed >= 1,
            "actor_lr": self.actor_lr > 0,
            "critic_lr": self.critic_lr > 0,
            "gamma": 0 <= self.gamma < 1,
            "tau": 0 < self.tau <= 1,
            "batch_size": self.batch_size >= 1,
            "buffer_size": self.buffer_size >= 1,
            "learning_starts": self.learning_starts >= 0,
            "updates_per_step": self.updates_per_step >= 0,
            "random_steps": self.random_steps >= 0,
            "noise_sigma": self.noise_sigma >= 0,
            "noise_sigma_final": self.noise_sigma_final >= 0,
            "noise_decay_steps": self.noise_decay_steps >= 0,
            "policy_delay": self.policy_delay >= 1,
            "target_noise": self.target_noise >= 0,
            "target_noise_clip": self.target_noise_clip >= 0,
            "action_penalty": self.action_penalty >= 0,
            "grad_clip": self.grad_clip is None or self.grad_clip > 0,
            "weight_decay": self.weight_decay >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"DDPGConfig.{name} is out of range, got {getattr(self, name)!r}")
        if self.preferences not in PREFERENCE_MODES:
            raise ValueError(
                f"DDPGConfig.preferences must be one of {PREFERENCE_MODES}, got {self.preferences!r}"
            )
        if self.architecture not in ("set", "mlp"):
            raise ValueError(
                f"DDPGConfig.architecture must be 'set' or 'mlp', got {self.architecture!r}"
            )


class _Structure(NamedTuple):
    """How the networks read an env: its observation layout (None: plain MLPs) and whether the
    first ``1 + rows`` action entries are target scores ("local", then one per server row)."""

    layout: ObsLayout | None
    server_slots: int  # rows scored by the equivariant target head (0: no target head)


def _structure(env, act_dim: int, architecture: str) -> _Structure:
    if architecture == "mlp":
        return _Structure(None, 0)
    try:
        layout = obs_layout(env)
    except ValueError:
        return _Structure(None, 0)
    core = getattr(getattr(env, "unwrapped", env), "core", None)
    nvec = getattr(core, "nvec", None)
    slots = 0
    if nvec is not None and not layout.transposed and 1 + layout.num_servers <= act_dim:
        slots = layout.num_servers if target_has_local(layout, nvec) else 0
    return _Structure(layout, slots)


class _Actor(nn.Module):
    """``mu(s, w) = tanh(f(s, w))``. With a layout: the server-set encoder, a
    :class:`~agents.networks.TargetHead` for the target scores (equivariant to the server order)
    and an MLP on the context for the other entries; otherwise an MLP on (s, w)."""

    def __init__(
        self, obs_dim: int, act_dim: int, pref_dim: int, st: _Structure, cfg: DDPGConfig
    ) -> None:
        super().__init__()
        self.st = st
        h = cfg.hidden
        if st.layout is None:
            self.net = mlp(obs_dim + pref_dim, h, act_dim)
            return
        self.encoder = ServerSetEncoder(st.layout, pref_dim, h, cfg.embed)
        targets = 1 + st.server_slots if st.server_slots else 0
        if targets:
            self.target = TargetHead(self.encoder.context_dim, self.encoder.embed_dim, h)
        self.rest = mlp(self.encoder.context_dim, h, act_dim - targets, layers=1)

    def pre(self, obs: Tensor, w: Tensor) -> Tensor:
        """``f(s, w)``, the action before the tanh."""
        if self.st.layout is None:
            return self.net(torch.cat([obs, w], dim=1))
        ctx, servers, _ = self.encoder(obs, w)
        if not self.st.server_slots:
            return self.rest(ctx)
        return torch.cat([self.target(ctx, servers).squeeze(2), self.rest(ctx)], dim=1)

    def forward(self, obs: Tensor, w: Tensor) -> Tensor:
        return torch.tanh(self.pre(obs, w))


class _Critic(nn.Module):
    """``Q(s, a, w)`` in R^D. With a layout: the server-set encoder conditioned on (w, the
    action's non-server entries), each server row extended by its own target score, and an MLP
    on the context; otherwise an MLP on (s, a, w)."""

    def __init__(
        self, obs_dim: int, act_dim: int, pref_dim: int, st: _Structure, cfg: DDPGConfig
    ) -> None:
        super().__init__()
        self.st = st
        h = cfg.hidden
        if st.layout is None:
            self.net = mlp(obs_dim + act_dim + pref_dim, h, pref_dim)
            return
        k = st.server_slots
        self.encoder = ServerSetEncoder(
            st.layout, pref_dim + act_dim - k, h, cfg.embed, row_extra=1 if k else 0
        )
        self.head = mlp(self.encoder.context_dim, h, pref_dim, layers=1)

    def forward(self, obs: Tensor, a: Tensor, w: Tensor) -> Tensor:
        if self.st.layout is None:
            return self.net(torch.cat([obs, a, w], dim=1))
        k = self.st.server_slots
        if k:
            cond = torch.cat([w, a[:, :1], a[:, 1 + k :]], dim=1)
            ctx = self.encoder(obs, cond, a[:, 1 : 1 + k].unsqueeze(2)).context
        else:
            ctx = self.encoder(obs, torch.cat([w, a], dim=1)).context
        return self.head(ctx)


class _Critics(nn.Module):
    """One critic, or TD3's twins; ``forward`` returns (twins, B, D)."""

    def __init__(self, twins: int, *args) -> None:
        super().__init__()
        self.qs = nn.ModuleList(_Critic(*args) for _ in range(twins))

    def forward(self, obs: Tensor, a: Tensor, w: Tensor) -> Tensor:
        return torch.stack([q(obs, a, w) for q in self.qs])


class MODDPG(CheckpointMixin):
    """Multi-objective DDPG (see the module docstring for the equations).

    Args:
        env: the continuous env or its vector env (``Box(-1, 1)`` actions); its spaces,
            observation layout, number of objectives and reward scale are read from it (nothing
            is stepped).
        config: hyper-parameters (default :class:`DDPGConfig`).
        seed: seeds the network initialisation, the numpy Generator (exploration noise, warm-up
            actions, replay sampling, preferences in :meth:`learn`) and the torch Generator
            (target-policy smoothing).

    The interface of :mod:`agents.common`: :meth:`act`, :meth:`store`, :meth:`update`,
    :meth:`state_dict` / :meth:`load_state_dict`, plus :meth:`save` / :meth:`load` and a
    training loop :meth:`learn`. The ``masks`` arguments are accepted and ignored: the
    continuous decoder only picks open choices.
    """

    CONFIG_CLASS = DDPGConfig
    mask_key = "action_mask"  # the info key act() takes masks from (it ignores them)

    def __init__(self, env, config: DDPGConfig | None = None, seed: int = 0) -> None:
        self.config = cfg = config or DDPGConfig()
        self.device = resolve_device(cfg.device)
        obs_space = getattr(env, "single_observation_space", None) or env.observation_space
        act_space = getattr(env, "single_action_space", None) or env.action_space
        if (
            not isinstance(act_space, spaces.Box)
            or len(act_space.shape) != 1
            or not (np.all(act_space.low == -1.0) and np.all(act_space.high == 1.0))
        ):
            raise ValueError(f"MODDPG needs a Box(-1, 1, (dim,)) action space, got {act_space}")
        self.obs_shape = tuple(obs_space.shape)
        self.obs_dim = int(np.prod(self.obs_shape))
        self.act_dim = int(act_space.shape[0])
        self.reward_dim = int(getattr(env, "unwrapped", env).reward_dim)
        self.scale = torch.tensor(objective_scale(env), dtype=torch.float32, device=self.device)
        self.structure = _structure(env, self.act_dim, cfg.architecture)

        args = (self.obs_dim, self.act_dim, self.reward_dim, self.structure, cfg)
        with torch.random.fork_rng(devices=[]):  # leaves the global torch RNG untouched
            torch.manual_seed(seed)
            self.actor = _Actor(*args).to(self.device)
            self.critic = _Critics(2 if cfg.twin else 1, *args).to(self.device)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), cfg.actor_lr, foreach=True)
        self.critic_optimizer = torch.optim.Adam(
            self.critic.parameters(), cfg.critic_lr, weight_decay=cfg.weight_decay, foreach=True
        )
        self.buffer = ReplayBuffer(
            cfg.buffer_size, self.obs_dim, (self.act_dim,), np.float32, self.reward_dim
        )
        self.rng = np.random.default_rng(seed)
        self.torch_rng = torch.Generator().manual_seed(seed)  # CPU: identical on every device
        self.num_env_steps = 0  # transitions stored
        self.num_updates = 0  # critic steps
        self.num_actor_updates = 0
        self._actor_loss = math.nan  # the latest, for the logs between delayed actor steps

    # ------------------------------------------------------------------ acting
    def noise_sigma(self) -> float:
        """The exploration std after :attr:`num_env_steps` stored transitions."""
        c = self.config
        if c.noise_decay_steps == 0:
            return c.noise_sigma
        frac = min(1.0, self.num_env_steps / c.noise_decay_steps)
        return c.noise_sigma + frac * (c.noise_sigma_final - c.noise_sigma)

    def _tensor(self, x) -> Tensor:
        return torch.as_tensor(np.asarray(x, dtype=np.float32), device=self.device)

    def _weights(self, weights, n: int) -> np.ndarray:
        w = np.asarray(weights, dtype=np.float32)
        if w.shape[-1:] != (self.reward_dim,):
            raise ValueError(f"weights must have {self.reward_dim} entries, got shape {w.shape}")
        return np.broadcast_to(w.reshape(-1, self.reward_dim), (n, self.reward_dim)).copy()

    def act(self, obs, masks=None, weights=None, deterministic: bool = False) -> np.ndarray:
        """Actions in [-1, 1] for a batch (or one) of observations under preferences ``weights``.

        Args:
            obs: (N, *obs_shape) or one observation.
            masks: ignored (the continuous decoder only picks open choices).
            weights: preferences, (N, reward_dim) or one (broadcast over the batch); required.
            deterministic: ``mu(s, w)`` itself: no noise, no warm-up randomness, no RNG draw.

        Returns:
            float32 actions (N, dim), or (dim,) for one observation. While fewer than
            ``random_steps`` transitions are stored, exploring actions are uniform on the box;
            after that ``clip(mu(s, w) + N(0, sigma^2), -1, 1)``.
        """
        if weights is None:
            raise ValueError("act() needs the preference weights")
        obs = np.asarray(obs, dtype=np.float32)
        single = obs.ndim == len(self.obs_shape)
        obs = obs.reshape(-1, self.obs_dim)
        n = obs.shape[0]
        w = self._weights(weights, n)
        if not deterministic and self.num_env_steps < self.config.random_steps:
            actions = self.rng.uniform(-1.0, 1.0, (n, self.act_dim)).astype(np.float32)
        else:
            with torch.no_grad():
                actions = self.actor(self._tensor(obs), self._tensor(w)).cpu().numpy()
            sigma = self.noise_sigma()
            if not deterministic and sigma > 0:
                noise = self.rng.standard_normal(actions.shape, dtype=np.float32)
                actions = np.clip(actions + sigma * noise, -1.0, 1.0)
        return actions[0] if single else actions

    def store(
        self, obs, actions, rewards, next_obs, terminated, weights, masks=None, next_masks=None
    ) -> None:
        """Add N transitions with *raw* rewards (scaled inside :meth:`update`); masks ignored.

        Pass real transitions only: with the vector envs' NEXT_STEP autoreset, drop the rows of
        the step that follows an episode's end (its action was ignored and its reward is 0), as
        :meth:`learn` does. Truncation is not termination: pass ``terminated`` only.
        """
        n = len(actions)
        self.buffer.add(
            np.asarray(obs, np.float32).reshape(n, self.obs_dim),
            np.asarray(actions, np.float32).reshape(n, self.act_dim),
            np.asarray(rewards, np.float32).reshape(n, self.reward_dim),
            np.asarray(next_obs, np.float32).reshape(n, self.obs_dim),
            np.asarray(terminated, np.float32).reshape(n),
            self._weights(weights, n),
        )
        self.num_env_steps += n

    # ------------------------------------------------------------------ learning
    def update(self) -> dict[str, float]:
        """One critic step, and an actor and target step every ``policy_delay`` critic steps.

        Returns:
            ``critic_loss``, ``actor_loss`` (the latest actor step's), ``q`` (mean ``w . Q`` on
            the batch, normalised units) and ``noise_sigma``; an empty dict, changing nothing,
            while fewer than ``max(learning_starts, 1)`` transitions are stored.
        """
        cfg = self.config
        if len(self.buffer) < max(cfg.learning_starts, 1):
            return {}
        b = self.buffer.sample(cfg.batch_size, self.rng)
        obs, next_obs = self._tensor(b["obs"]), self._tensor(b["next_obs"])
        actions = self._tensor(b["actions"])
        r = self._tensor(b["rewards"]) / self.scale  # (B, D) normalised
        not_done = 1.0 - self._tensor(b["terminated"]).unsqueeze(1)
        w = self._tensor(b["weights"])

        # critic: y = r + gamma (1 - d) Q'(s', mu'(s', w) [+ clipped noise], w), per objective
        with torch.no_grad():
            next_a = self.actor_target(next_obs, w)
            if cfg.target_noise > 0:
                eps = torch.randn(next_a.shape, generator=self.torch_rng).to(self.device)
                eps = (cfg.target_noise * eps).clamp(-cfg.target_noise_clip, cfg.target_noise_clip)
                next_a = (next_a + eps).clamp(-1.0, 1.0)
            q_next = self.critic_target(next_obs, next_a, w)  # (twins, B, D)
            if len(q_next) > 1:  # per sample, the twin with the lower scalarised value
                first = ((q_next[0] * w).sum(1) <= (q_next[1] * w).sum(1)).unsqueeze(1)
                q_next = torch.where(first, q_next[0], q_next[1])
            else:
                q_next = q_next[0]
            y = r + cfg.gamma * not_done * q_next
        q = self.critic(obs, actions, w)  # (twins, B, D)
        critic_loss = (q - y).pow(2).sum(dim=2).mean(dim=1).sum()
        self.critic_optimizer.zero_grad()
        critic_loss.backward()
        self._clip(self.critic)
        self.critic_optimizer.step()
        self.num_updates += 1

        if self.num_updates % cfg.policy_delay == 0:
            # actor: -E[w . Q_1(s, mu(s, w), w)] + lambda E[f(s, w)^2] (critic not stepped)
            pre = self.actor.pre(obs, w)
            self.critic.requires_grad_(False)  # gradients flow through Q to the action only
            q_pi = self.critic.qs[0](obs, torch.tanh(pre), w)
            actor_loss = -(w * q_pi).sum(dim=1).mean() + cfg.action_penalty * pre.pow(2).mean()
            self.actor_optimizer.zero_grad()
            actor_loss.backward()
            self.critic.requires_grad_(True)
            self._clip(self.actor)
            self.actor_optimizer.step()
            self.num_actor_updates += 1
            self._actor_loss = float(actor_loss.detach())
            # targets: theta' <- tau theta + (1 - tau) theta'
            with torch.no_grad():
                for net, target in (
                    (self.actor, self.actor_target),
                    (self.critic, self.critic_target),
                ):
                    torch._foreach_lerp_(list(target.parameters()), list(net.parameters()), cfg.tau)
        return {
            "critic_loss": float(critic_loss.detach()),
            "actor_loss": self._actor_loss,
            "q": float((w * q[0].detach()).sum(dim=1).mean()),
            "noise_sigma": self.noise_sigma(),
        }

    def _clip(self, net: nn.Module) -> None:
        if self.config.grad_clip is not None:
            nn.utils.clip_grad_norm_(net.parameters(), self.config.grad_clip)

    def learn(self, envs, total_steps: int, seed: int | None = None) -> dict[str, float]:
        """Collect ``total_steps`` transitions from a vector env and train on them.

        Preferences are drawn per parallel env and episode (``config.preferences``); after
        ``config.learning_starts`` stored transitions, every vector step is followed by
        ``config.updates_per_step`` calls to :meth:`update`. ``seed`` resets the envs (None:
        their own state). Returns the last update's log (empty before any update) with
        ``env_steps`` and ``updates``.
        """
        cfg = self.config
        n = int(envs.num_envs)
        obs, _ = envs.reset(seed=seed)
        sampler = PreferenceSampler(cfg.preferences, self.reward_dim, n, self.rng)
        just_reset = np.zeros(n, bool)  # NEXT_STEP autoreset: this step only resets the env
        logs: dict[str, float] = {}
        for _ in range(math.ceil(total_steps / n)):
            w = sampler.weights.copy()
            actions = self.act(obs, None, w)
            next_obs, rewards, terminated, truncated, _ = envs.step(actions)
            keep = ~just_reset
            if keep.any():
                self.store(
                    obs[keep], actions[keep], rewards[keep], next_obs[keep], terminated[keep],
                    w[keep],
                )  # fmt: skip
            just_reset = np.asarray(terminated) | np.asarray(truncated)
            sampler.resample(just_reset)
            obs = next_obs
            if len(self.buffer) >= max(cfg.learning_starts, 1):
                for _ in range(cfg.updates_per_step):
                    logs = self.update()
        return {**logs, "env_steps": float(self.num_env_steps), "updates": float(self.num_updates)}

    # ------------------------------------------------------------------ checkpoints
    def _modules(self) -> dict[str, Any]:
        return {
            "actor": self.actor,
            "critic": self.critic,
            "actor_target": self.actor_target,
            "critic_target": self.critic_target,
            "actor_optimizer": self.actor_optimizer,
            "critic_optimizer": self.critic_optimizer,
        }

    def _spaces(self) -> dict[str, Any]:
        return {"obs_dim": self.obs_dim, "act_dim": self.act_dim, "reward_dim": self.reward_dim}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training: networks, target networks, optimisers, the
        replay buffer, the numpy and torch RNG states and the counters (deep copies, so
        continuing to train does not change a state already taken)."""
        state = {name: copy.deepcopy(obj.state_dict()) for name, obj in self._modules().items()}
        state.update(
            version=CHECKPOINT_VERSION,
            config=asdict(self.config),
            spaces=self._spaces(),
            buffer=self.buffer.state_dict(),
            numpy_rng=copy.deepcopy(self.rng.bit_generator.state),
            torch_rng=self.torch_rng.get_state(),
            num_env_steps=self.num_env_steps,
            num_updates=self.num_updates,
            num_actor_updates=self.num_actor_updates,
            actor_loss=self._actor_loss,
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (the env's spaces and the architecture must match the
        checkpoint's; ValueError otherwise)."""
        if state.get("version") != CHECKPOINT_VERSION:
            raise ValueError(
                f"checkpoint version {state.get('version')} is not {CHECKPOINT_VERSION}"
            )
        if state["spaces"] != self._spaces():
            raise ValueError(f"checkpoint spaces {state['spaces']} do not match {self._spaces()}")
        mine = asdict(self.config)
        for key in ("hidden", "embed", "architecture", "twin", "buffer_size"):
            if state["config"][key] != mine[key]:
                raise ValueError(
                    f"checkpoint has {key}={state['config'][key]!r}, this agent {mine[key]!r}"
                )
        for name, obj in self._modules().items():
            obj.load_state_dict(state[name])
        self.buffer.load_state_dict(state["buffer"])
        self.rng.bit_generator.state = state["numpy_rng"]
        self.torch_rng.set_state(state["torch_rng"])
        self.num_env_steps = int(state["num_env_steps"])
        self.num_updates = int(state["num_updates"])
        self.num_actor_updates = int(state["num_actor_updates"])
        self._actor_loss = float(state["actor_loss"])
