"""Multi-objective Discrete Soft Actor-Critic with one preference-conditioned policy (GMORL).

One policy ``pi(a | s, w)`` serves every preference ``w`` on the simplex; twin critics predict a
value *per objective*, ``Q(s, a, w)`` in R^D, and the preference only enters through
scalarisation ``w . Q`` and as a network input. The MultiDiscrete plan of ``LLMOffload-v0``
(target, split, KV tier, expert policy) is handled by a factorised policy and a branching
dueling critic, so every expectation over the joint action stays in closed form; the Discrete
action of ``GMORLOffload-v0`` is the one-part case. Networks: :mod:`agents.networks`.

Notation: parts i = 1..P with n_i choices and masks m_i(s); pi(a | s, w) = prod_i pi_i(a_i | s, w)
(masked choices have probability 0); H(s, w) = -sum_i sum_{a_i} pi_i log pi_i; r = raw reward /
``objective_scale(env)`` (per objective); alpha = exp(log_alpha).

Critics (k = 1, 2; targets Q'_k are Polyak copies)::

    Q_k(s, a, w) = V_k(s, w) + sum_i A_k,i(s, w, a_i)        A_k,i centred over the open a_i
    E_pi[Q_k](s, w) = V_k(s, w) + sum_i sum_{a_i} pi_i(a_i | s, w) A_k,i(s, w, a_i)    (exact)

Target (per objective; the twin is chosen per sample by its scalarised value)::

    k* = argmin_k  w . E_pi[Q'_k](s', w)
    y = r + gamma (1 - terminated) (E_pi[Q'_k*](s', w) + alpha H(s', w) 1 / sum(w))

(adding the entropy bonus alpha H / sum(w) to every objective makes the scalarised target
``w . y`` the usual soft value ``min_k w . E_pi[Q'_k] + alpha H``.)

Losses, on a batch of transitions (s, a, r, s', terminated, w, masks)::

    L_Q     = mean_b,d (Q_1(s, a, w) - y)^2 + mean_b,d (Q_2(s, a, w) - y)^2
    L_pi    = mean_s sum_a pi(a | s, w) (alpha log pi(a | s, w) - w . Q(s, a, w))
            = mean_s [ -alpha H(s, w) - min_k w . E_pi[Q_k](s, w) ]
    L_alpha = mean_s alpha (H(s, w) - H_target(s)),
              H_target(s) = target_entropy_ratio * sum_i log(number of open choices of part i)

(in L_pi the critics' outputs are those of the same step, taken before their update and
detached; the twin minimum is taken on the scalarised expectation, which keeps the sum over a
in closed form), then ``Q'_k <- tau Q_k + (1 - tau) Q'_k``. :meth:`DiscreteSAC.update` does these in this order,
like CleanRL's ``sac_atari.py``.

Factorised masks: the environments' masks are per part (a part is open if it is feasible with
some open target), so a sampled combination can still be infeasible; the environment then
replaces the offending part (its documented fallback) and the critic learns the value of the
action as taken, fallback included.

Conditional plans (``plan_head="conditional"``, LLMOffload only): the factorised policy cannot
make the split, tier or expert policy depend on the target it picks, and 18-30 % of its plans
hit a fallback (measured on rush-hour). With the conditional head the policy is
pi(g) pi((s, k) | g) pi(p | g), masked by the env's ``info["plan_mask"]`` (exactly the open
plans), and the critic ``V + A_t(g) + A_pair(g, (s, k)) + A_pol(g, p)``
(:class:`agents.networks.ConditionalPlanCritic`); the equations above hold with H the entropy of
the whole plan, E_pi[Q] summed over the targets, and H_target = ratio * log(open plans).

Split reward (``split_reward=True``): each critic outputs two vectors per action, the immediate
reward R_k(s, a, w) and the continuation C_k(s, a, w), with Q_k = R_k + C_k everywhere above;
the critic loss regresses R_k on r and C_k on y - r (the sum of the two losses has the same
minimiser for Q_k). The ranking of plans by what they cost now, which a myopic greedy gets
exactly from the cost model, is then learnt from a target without the variance of the future
term. With ``continuation="target"`` the continuation's advantages of every part but the target
are 0: where a request runs shapes the future (slots, caches, queues), the rest of the plan is
ranked by what it costs now (an approximation: a KV tier also holds capacity until the request
ends). On rush-hour (150,000 steps) the conditional head, the split and the target continuation
took the hypervolume from 0.8247 to 0.8285, 0.8326 and 0.8348 (greedy 0.8391); at 300,000
steps (10 episodes) seeds 0, 1, 2 give 0.8437, 0.8342, 0.8364 against greedy's 0.8365, a
ranking within the noise of ten episodes: with the env's cost features at 450,000 steps, all
three seeds are above greedy on those episodes and 0.4-0.6 % below it on fifty others; README.

Observed immediate reward (``immediate="observed"``, GMORLOffload with ``cost_features=True``):
the env's cost rows hold, for every server, exactly -r of sending the current task there now,
so R needs no learning: the critics' R half is replaced by those rewards (in the agent's units,
centred over the open actions like every advantage) and only C is learnt. The ranking of the
servers by what they cost now is then exact, as greedy's is, and what the critics learn is what
a choice does to later tasks (not in GMORL).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from torch import Tensor, nn

from agents.buffer import ReplayBuffer
from agents.common import CheckpointMixin, objective_scale, obs_layout, resolve_device
from agents.networks import (
    BranchingVectorCritic,
    ConditionalPlanCritic,
    ConditionalPlanPolicy,
    FactorisedPolicy,
    plan_size,
    split_masks,
    split_plan_masks,
)
from agents.preferences import PreferenceSampler

__all__ = ["DSACConfig", "DiscreteSAC"]

CHECKPOINT_VERSION = 1
PLAN_HEADS = ("factorised", "conditional")
CONTINUATIONS = ("plan", "target")
IMMEDIATE = ("learned", "observed")


@dataclass
class DSACConfig:
    """Hyper-parameters of :class:`DiscreteSAC` (GMORL's values noted where they differ).

    Attributes:
        lr: Adam learning rate of the policy and the critics.
        alpha_lr: Adam learning rate of log(alpha).
        adam_eps: Adam epsilon of all three optimisers.
        gamma: discount per request (GMORL: 0.95).
        tau: Polyak factor of the target critics, applied after every update.
        batch_size: transitions per gradient step (GMORL: 4096; smaller suits a CPU).
        buffer_size: replay capacity in transitions (GMORL: 1e5).
        hidden: width of the context MLP of :class:`agents.networks.ServerSetEncoder` (and of
            the context vector) and of the hidden layer of the heads on the context.
        embed: width of the per-server MLP, of a server row's embedding and of the hidden layer
            of the per-server target scores (the per-row work scales with it).
        initial_alpha: entropy coefficient before tuning.
        target_entropy_ratio: target entropy as a fraction of the maximum entropy over the open
            choices, ``sum_i log(open choices of part i)``, per state.
        learning_starts: transitions stored before :meth:`DiscreteSAC.update` takes a step.
        updates_per_step: gradient steps per step of the vector env (i.e. per ``num_envs``
            transitions) in :meth:`DiscreteSAC.learn`.
        grad_clip: max global L2 norm of the policy's and the critics' gradients (None: off).
        preferences: how :meth:`DiscreteSAC.learn` draws preferences
            (:data:`agents.preferences.PREFERENCE_MODES`: "uniform" or "gmorl").
        plan_head: "factorised" (one independent head per action part, the env's factorised
            ``action_mask``) or "conditional" (LLMOffload: the split, tier and expert policy
            given the target, masked by ``info["plan_mask"]``; module docstring).
        split_reward: each critic predicts the immediate reward R(s, a, w) and the
            continuation C(s, a, w) as two vectors, Q = R + C; R regresses on r itself and C
            on y - r (module docstring).
        continuation: with ``split_reward``, whether the continuation C depends on the whole
            plan ("plan") or on the target only ("target": the rest of the plan is then ranked
            by its immediate reward alone; the target still by R + C).
        immediate: with ``split_reward``, where the immediate reward R comes from: "learned" (a
            critic output regressed on r) or "observed" (GMORLOffload with
            ``cost_features=True`` only: the env's cost rows, which are exactly -r of sending
            the current task to each server, so only the continuation C is learnt; module
            docstring). Five GMORL seeds: as precise as greedy where delay is free, but an
            unseen-frequency gap of -4.3 / 2.4 / 2.7 / 3.3 / 3.5 % (README).
        relative_costs: GMORLOffload with ``cost_features=True`` only: give every server row the
            preference-scalarised myopic cost relative to the best server's
            (:class:`agents.networks.ServerSetEncoder`), inputs whose range does not move with
            the CPU frequencies and link rates (not in GMORL). Unseen-frequency gap over five
            seeds: -0.57 / 6.0 / -0.15 / 3.1 / 0.9 % (README, "Relative costs").
        device: torch device ("cpu", or "cuda" when available; falls back to CPU with a warning).
    """

    lr: float = 3e-4
    alpha_lr: float = 3e-4
    adam_eps: float = 1e-8
    gamma: float = 0.95
    tau: float = 0.005
    batch_size: int = 256
    buffer_size: int = 100_000
    hidden: int = 128
    embed: int = 64
    initial_alpha: float = 0.1
    target_entropy_ratio: float = 0.5
    learning_starts: int = 1_000
    updates_per_step: int = 1
    grad_clip: float | None = 10.0
    preferences: str = "uniform"
    plan_head: str = "factorised"
    split_reward: bool = False
    continuation: str = "plan"
    immediate: str = "learned"
    relative_costs: bool = False
    device: str = "cpu"

    def __post_init__(self) -> None:
        positive = ("lr", "alpha_lr", "adam_eps", "batch_size", "buffer_size", "hidden", "embed")
        for name in (*positive, "initial_alpha"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 <= self.gamma < 1.0:
            raise ValueError(f"gamma must be in [0, 1), got {self.gamma}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau must be in (0, 1], got {self.tau}")
        if not 0.0 <= self.target_entropy_ratio <= 1.0:
            raise ValueError(
                f"target_entropy_ratio must be in [0, 1], got {self.target_entropy_ratio}"
            )
        if self.learning_starts < 0 or self.updates_per_step < 0:
            raise ValueError("learning_starts and updates_per_step must be >= 0")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip}")
        if self.plan_head not in PLAN_HEADS:
            raise ValueError(f"plan_head must be one of {PLAN_HEADS}, got {self.plan_head!r}")
        if self.continuation not in CONTINUATIONS:
            raise ValueError(
                f"continuation must be one of {CONTINUATIONS}, got {self.continuation!r}"
            )
        if self.continuation != "plan" and not self.split_reward:
            raise ValueError("continuation='target' needs split_reward=True")
        if self.immediate not in IMMEDIATE:
            raise ValueError(f"immediate must be one of {IMMEDIATE}, got {self.immediate!r}")
        if self.immediate == "observed" and not self.split_reward:
            raise ValueError("immediate='observed' needs split_reward=True")


class DiscreteSAC(CheckpointMixin):
    """Multi-objective Discrete SAC (see the module docstring for the equations).

    Args:
        env: a single env or a vector env of ``LLMOffload-v0`` (MultiDiscrete) or
            ``GMORLOffload-v0`` (Discrete); its spaces, observation layout, number of objectives
            and reward scale are read from it (nothing is stepped).
        config: hyper-parameters (default :class:`DSACConfig`).
        seed: seeds the network initialisation, the numpy Generator (replay sampling,
            preferences in :meth:`learn`) and the torch Generator (action sampling).

    The interface of :mod:`agents.common`: :meth:`act`, :meth:`store`, :meth:`update`,
    :meth:`state_dict` / :meth:`load_state_dict`, plus :meth:`save` / :meth:`load` and a
    training loop :meth:`learn`.
    """

    CONFIG_CLASS = DSACConfig

    def __init__(self, env, config: DSACConfig | None = None, seed: int = 0) -> None:
        self.config = cfg = config or DSACConfig()
        self.device = resolve_device(cfg.device)
        obs_space = getattr(env, "single_observation_space", None) or env.observation_space
        act_space = getattr(env, "single_action_space", None) or env.action_space
        if isinstance(act_space, spaces.MultiDiscrete):
            self.discrete = False
            self.nvec = [int(n) for n in np.asarray(act_space.nvec).ravel()]
        elif isinstance(act_space, spaces.Discrete):
            if int(act_space.start) != 0:
                raise ValueError(f"Discrete actions must start at 0, got {act_space}")
            self.discrete = True
            self.nvec = [int(act_space.n)]
        else:
            raise ValueError(
                f"DiscreteSAC needs a Discrete or MultiDiscrete action, got {act_space}"
            )
        self.obs_shape = tuple(obs_space.shape)
        self.obs_dim = int(np.prod(self.obs_shape))
        self.layout = obs_layout(env)
        self.reward_dim = int(getattr(env, "unwrapped", env).reward_dim)
        scale = objective_scale(env)
        self.scale = torch.as_tensor(scale, dtype=torch.float32, device=self.device)
        if cfg.relative_costs:
            if len(self.layout.cost_features) != self.reward_dim:
                raise ValueError(
                    "relative_costs needs an env whose observation holds one myopic cost per "
                    "objective (GMORLOffload with cost_features=True)"
                )
            # the scale is also a buffer of the encoders: a loaded agent keeps its training one
            self.layout = replace(self.layout, cost_scale=tuple(float(x) for x in scale))
        if cfg.immediate == "observed" and not (
            self.discrete
            and self.layout.transposed
            and len(self.layout.cost_features) == self.reward_dim
            and int(self.nvec[0]) == self.layout.num_servers
        ):
            raise ValueError(
                "immediate='observed' needs an env whose observation holds, for every action, "
                "the reward it gets now (GMORLOffload with cost_features=True)"
            )

        conditional = cfg.plan_head == "conditional"
        if conditional and self.discrete:
            raise ValueError("plan_head='conditional' needs LLMOffload's MultiDiscrete plan")
        policy_cls, critic_cls = (
            (ConditionalPlanPolicy, ConditionalPlanCritic)
            if conditional
            else (FactorisedPolicy, BranchingVectorCritic)
        )
        self._split_masks = split_plan_masks if conditional else split_masks
        self.mask_key = "plan_mask" if conditional else "action_mask"
        self.mask_dim = plan_size(self.nvec) if conditional else sum(self.nvec)
        with torch.random.fork_rng(devices=[]):  # leaves the global torch RNG untouched
            torch.manual_seed(seed)
            args = (self.layout, self.nvec, self.reward_dim, cfg.hidden, cfg.embed)
            self.actor = policy_cls(*args).to(self.device)
            # with split_reward every critic output holds (immediate reward, continuation)
            out = self.reward_dim * (2 if cfg.split_reward else 1)
            self.qf1 = critic_cls(*args[:3], out, *args[3:]).to(self.device)
            self.qf2 = critic_cls(*args[:3], out, *args[3:]).to(self.device)
        self.qf1_target = copy.deepcopy(self.qf1).requires_grad_(False)
        self.qf2_target = copy.deepcopy(self.qf2).requires_grad_(False)
        self.log_alpha = nn.Parameter(
            torch.tensor(math.log(cfg.initial_alpha), dtype=torch.float32, device=self.device)
        )
        self.actor_optimizer = torch.optim.Adam(
            self.actor.parameters(), cfg.lr, eps=cfg.adam_eps, fused=True
        )
        self.critic_optimizer = torch.optim.Adam(
            [*self.qf1.parameters(), *self.qf2.parameters()], cfg.lr, eps=cfg.adam_eps, fused=True
        )
        self.alpha_optimizer = torch.optim.Adam(
            [self.log_alpha], cfg.alpha_lr, eps=cfg.adam_eps, fused=True
        )

        self.buffer = ReplayBuffer(
            cfg.buffer_size,
            self.obs_dim,
            () if self.discrete else (len(self.nvec),),
            np.int64,
            self.reward_dim,
            mask_dim=self.mask_dim,
        )
        self.rng = np.random.default_rng(seed)
        self.torch_rng = torch.Generator().manual_seed(seed)  # CPU: identical on every device
        self.num_updates = 0
        self.num_env_steps = 0  # transitions stored

    # ------------------------------------------------------------------ acting
    @property
    def alpha(self) -> float:
        return float(self.log_alpha.exp())

    def _tensor(self, x, dtype=torch.float32) -> Tensor:
        return torch.as_tensor(np.asarray(x), dtype=dtype, device=self.device)

    def act(self, obs, masks=None, weights=None, deterministic: bool = False) -> np.ndarray:
        """Actions for a batch (or one) of observations under preferences ``weights``.

        Args:
            obs: (N, *obs_shape) or one observation.
            masks: the environments' flat masks, (N, mask_dim) or one, ``info[agent.mask_key]``
                (``action_mask``, or ``plan_mask`` for the conditional head); None: all open.
            weights: preferences, (N, reward_dim) or one (broadcast over the batch); required.
            deterministic: the most probable choice of every part, instead of a sample.

        Returns:
            int64 actions: (N, parts) for MultiDiscrete, (N,) for Discrete; without the batch
            axis for one observation. A masked choice is never returned.
        """
        if weights is None:
            raise ValueError("act() needs the preference weights")
        obs = np.asarray(obs, dtype=np.float32)
        single = obs.ndim == len(self.obs_shape)
        obs = obs.reshape(-1, self.obs_dim)
        n = obs.shape[0]
        w = np.broadcast_to(np.asarray(weights, dtype=np.float32), (n, self.reward_dim)).copy()
        m = None if masks is None else self._tensor(np.asarray(masks).reshape(n, -1), torch.bool)
        if m is not None and m.shape[1] != self.mask_dim:
            raise ValueError(
                f"masks must have {self.mask_dim} columns (info[{self.mask_key!r}]), got {m.shape[1]}"
            )
        with torch.no_grad():
            part_masks = self._split_masks(m, self.nvec, n, self.device)
            logp = self.actor(self._tensor(obs), self._tensor(w), part_masks)
            # Gumbel-max sampling; masked logits stay ~ -1e9
            noise = None if deterministic else self._gumbel
            actions = self.actor.select(logp, noise).cpu().numpy()
        if self.discrete:
            actions = actions[:, 0]
        return actions[0] if single else actions

    def _gumbel(self, shape) -> Tensor:
        u = torch.rand(shape, generator=self.torch_rng).clamp_(1e-10, 1.0 - 1e-7)
        return (-torch.log(-torch.log(u))).to(self.device)

    def store(
        self, obs, actions, rewards, next_obs, terminated, weights, masks=None, next_masks=None
    ) -> None:
        """Add N transitions with *raw* rewards (scaled inside :meth:`update`).

        Pass real transitions only: with the vector envs' NEXT_STEP autoreset, drop the rows of
        the step that follows an episode's end (its action was ignored and its reward is 0), as
        :meth:`learn` does. Truncation is not termination: pass ``terminated`` only.
        """
        n = len(actions)
        ones = np.ones((n, self.mask_dim), bool)
        self.buffer.add(
            np.asarray(obs, np.float32).reshape(n, self.obs_dim),
            np.asarray(actions, np.int64).reshape((n,) if self.discrete else (n, len(self.nvec))),
            np.asarray(rewards, np.float32).reshape(n, self.reward_dim),
            np.asarray(next_obs, np.float32).reshape(n, self.obs_dim),
            np.asarray(terminated, np.float32).reshape(n),
            np.broadcast_to(np.asarray(weights, np.float32), (n, self.reward_dim)),
            ones if masks is None else np.asarray(masks, bool).reshape(n, -1),
            ones if next_masks is None else np.asarray(next_masks, bool).reshape(n, -1),
        )
        self.num_env_steps += n

    # ------------------------------------------------------------------ learning
    def update(self) -> dict[str, float]:
        """One gradient step on the critics, the policy and alpha (module docstring).

        Returns:
            ``critic_loss``, ``policy_loss``, ``alpha`` (the coefficient used in this step) and
            ``entropy`` (mean over the batch, nats, summed over the parts); an empty dict,
            changing nothing, while fewer than ``max(learning_starts, 1)`` transitions are stored.
        """
        cfg = self.config
        if len(self.buffer) < max(cfg.learning_starts, 1):
            return {}
        b = self.buffer.sample(cfg.batch_size, self.rng)
        obs, next_obs = self._tensor(b["obs"]), self._tensor(b["next_obs"])
        actions = self._tensor(b["actions"], torch.long).view(cfg.batch_size, -1)
        r = self._tensor(b["rewards"]) / self.scale  # (B, D) normalised
        not_done = 1.0 - self._tensor(b["terminated"]).unsqueeze(-1)
        w = self._tensor(b["weights"])
        masks = self._split_masks(self._tensor(b["masks"], torch.bool), self.nvec, cfg.batch_size)
        next_masks = self._split_masks(
            self._tensor(b["next_masks"], torch.bool), self.nvec, cfg.batch_size
        )
        critic, actor = self.qf1, self.actor
        alpha = self.log_alpha.exp().detach()

        # critics: y = r + gamma (1 - d) (E_pi[Q'_k*](s') + alpha H(s') / sum(w))
        with torch.no_grad():
            next_logp = self.actor(next_obs, w, next_masks)
            next_probs = [lp.exp() for lp in next_logp]
            next_entropy = actor.entropy(next_probs, next_logp)
            v1 = self._total(
                critic.expected(*self._q(self.qf1_target, next_obs, w, next_masks), next_probs)
            )
            v2 = self._total(
                critic.expected(*self._q(self.qf2_target, next_obs, w, next_masks), next_probs)
            )
            first = ((v1 * w).sum(-1) <= (v2 * w).sum(-1)).unsqueeze(-1)
            bonus = alpha * next_entropy / w.sum(-1).clamp(min=1e-6)
            y = r + cfg.gamma * not_done * (torch.where(first, v1, v2) + bonus.unsqueeze(-1))
        value1, adv1 = self._q(self.qf1, obs, w, masks)
        value2, adv2 = self._q(self.qf2, obs, w, masks)
        q1 = critic.q_values(value1, adv1, actions)
        q2 = critic.q_values(value2, adv2, actions)
        if cfg.split_reward:  # the reward part learns r itself, the continuation the rest of y
            target = torch.cat([r, y - r], dim=-1)
            critic_loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
        else:
            critic_loss = F.mse_loss(q1, y) + F.mse_loss(q2, y)
        self.critic_optimizer.zero_grad()
        critic_loss.backward()
        self._clip(self.critic_optimizer)
        self.critic_optimizer.step()

        # policy: mean_s [ -alpha H(s) - min_k w . E_pi[Q_k](s) ], critics detached
        logp = self.actor(obs, w, masks)
        probs = [lp.exp() for lp in logp]
        entropy = actor.entropy(probs, logp)
        e1 = self._total(critic.expected(value1.detach(), [a.detach() for a in adv1], probs))
        e2 = self._total(critic.expected(value2.detach(), [a.detach() for a in adv2], probs))
        soft_q = torch.minimum((e1 * w).sum(-1), (e2 * w).sum(-1))
        policy_loss = (-alpha * entropy - soft_q).mean()
        self.actor_optimizer.zero_grad()
        policy_loss.backward()
        self._clip(self.actor_optimizer)
        self.actor_optimizer.step()

        # entropy coefficient: alpha (H(s) - H_target(s)), H_target from the open choices
        target_entropy = cfg.target_entropy_ratio * actor.max_entropy(masks)
        alpha_loss = (self.log_alpha.exp() * (entropy.detach() - target_entropy)).mean()
        self.alpha_optimizer.zero_grad()
        alpha_loss.backward()
        self.alpha_optimizer.step()

        # target critics: Q' <- tau Q + (1 - tau) Q'
        with torch.no_grad():
            for net, target in ((self.qf1, self.qf1_target), (self.qf2, self.qf2_target)):
                for p, tp in zip(net.parameters(), target.parameters(), strict=True):
                    tp.lerp_(p, cfg.tau)
        self.num_updates += 1
        return {
            "critic_loss": float(critic_loss.detach()),
            "policy_loss": float(policy_loss.detach()),
            "alpha": float(alpha),
            "entropy": float(entropy.mean().detach()),
        }

    def _q(self, net, obs: Tensor, w: Tensor, masks: list[Tensor]):
        """A critic's (V, advantages); with ``split_reward`` and ``continuation="target"`` the
        continuation half of every advantage but the target's is 0: where the request runs
        shapes the future, the rest of the plan only what the request costs now."""
        value, adv = net(obs, w, masks)
        if self.config.immediate == "observed":
            value, adv = self._observed_immediate(obs, value, adv, masks)
        if self.config.split_reward and self.config.continuation == "target":
            d = self.reward_dim
            adv = [adv[0]] + [
                torch.cat([a[..., :d], torch.zeros_like(a[..., d:])], -1) for a in adv[1:]
            ]
        return value, adv

    def _observed_immediate(self, obs: Tensor, value: Tensor, adv: list[Tensor], masks):
        """Replace the immediate-reward half of a critic's (V, [A]) by the rewards the env's
        cost rows say each action gets now (-cost / scale, in the agent's units), in the same
        centred form: V_R = the mean over the open actions, A_R(a) = R(a) - V_R (0 if closed)."""
        d, layout = self.reward_dim, self.layout
        rows = obs.view(obs.shape[0], layout.server_dim, layout.num_servers)
        costs = rows[:, list(layout.cost_features)]  # (B, D, S)
        reward = -costs.transpose(1, 2) / self.scale  # (B, S, D)
        open_ = masks[0].unsqueeze(-1).to(reward.dtype)
        mean = (reward * open_).sum(1) / open_.sum(1).clamp(min=1.0)  # (B, D)
        value = torch.cat([mean, value[..., d:]], dim=-1)
        a_r = (reward - mean.unsqueeze(1)) * open_
        return value, [torch.cat([a_r, adv[0][..., d:]], dim=-1)]

    def _total(self, q: Tensor) -> Tensor:
        """Q (B, D) from a critic output: itself, or with ``split_reward`` the sum of its
        immediate-reward and continuation halves."""
        if not self.config.split_reward:
            return q
        d = self.reward_dim
        return q[..., :d] + q[..., d:]

    def _clip(self, optimizer: torch.optim.Optimizer) -> None:
        if self.config.grad_clip is not None:
            params = [p for g in optimizer.param_groups for p in g["params"]]
            nn.utils.clip_grad_norm_(params, self.config.grad_clip)

    def learn(
        self,
        envs,
        total_steps: int,
        seed: int | None = None,
        callback: Callable[[dict[str, float]], bool | None] | None = None,
    ) -> dict[str, float]:
        """Collect ``total_steps`` transitions from a vector env and train on them.

        The envs are reset first (``seed``: their seed, None: their own state). Preferences are
        drawn per parallel env and episode (``config.preferences``); after
        ``config.learning_starts`` stored transitions, every vector step is followed by
        ``config.updates_per_step`` calls to :meth:`update`. ``callback(logs)`` is called after
        every vector step; returning False stops. Returns the last update's log (no losses
        before the first update) with ``env_steps`` and ``updates``.
        """
        cfg = self.config
        n = int(envs.num_envs)
        obs, info = envs.reset(seed=seed)
        masks = info[self.mask_key]
        sampler = PreferenceSampler(cfg.preferences, self.reward_dim, n, self.rng)
        just_reset = np.zeros(n, bool)  # NEXT_STEP autoreset: this step only resets the env
        logs: dict[str, float] = {}
        for _ in range(math.ceil(total_steps / n)):
            w = sampler.weights.copy()
            actions = self.act(obs, masks, w)
            next_obs, rewards, terminated, truncated, info = envs.step(actions)
            next_masks = info[self.mask_key]
            keep = ~just_reset
            if keep.any():
                self.store(
                    obs[keep], actions[keep], rewards[keep], next_obs[keep], terminated[keep],
                    w[keep], masks[keep], next_masks[keep],
                )  # fmt: skip
            just_reset = np.asarray(terminated) | np.asarray(truncated)
            sampler.resample(just_reset)
            obs, masks = next_obs, next_masks
            if len(self.buffer) >= max(cfg.learning_starts, 1):
                for _ in range(cfg.updates_per_step):
                    logs = self.update()
            logs.update(env_steps=float(self.num_env_steps), updates=float(self.num_updates))
            if callback is not None and callback(logs) is False:
                break
        return {**logs, "env_steps": float(self.num_env_steps), "updates": float(self.num_updates)}

    # ------------------------------------------------------------------ checkpoints
    def _modules(self) -> dict[str, Any]:
        return {
            "actor": self.actor,
            "qf1": self.qf1,
            "qf2": self.qf2,
            "qf1_target": self.qf1_target,
            "qf2_target": self.qf2_target,
            "actor_optimizer": self.actor_optimizer,
            "critic_optimizer": self.critic_optimizer,
            "alpha_optimizer": self.alpha_optimizer,
        }

    def _spaces(self) -> dict[str, Any]:
        return {
            "obs_dim": self.obs_dim,
            "nvec": list(self.nvec),
            "discrete": self.discrete,
            "reward_dim": self.reward_dim,
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training: networks, target networks, optimisers,
        log(alpha), the replay buffer, the numpy and torch RNG states and the counters (deep
        copies, so continuing to train does not change a state already taken)."""
        state = {name: copy.deepcopy(obj.state_dict()) for name, obj in self._modules().items()}
        state.update(
            version=CHECKPOINT_VERSION,
            config=asdict(self.config),
            spaces=self._spaces(),
            log_alpha=self.log_alpha.detach().cpu().clone(),
            buffer=self.buffer.state_dict(),
            numpy_rng=copy.deepcopy(self.rng.bit_generator.state),
            torch_rng=self.torch_rng.get_state(),
            num_updates=self.num_updates,
            num_env_steps=self.num_env_steps,
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (the env's spaces must match the checkpoint's)."""
        if state.get("version") != CHECKPOINT_VERSION:
            raise ValueError(
                f"checkpoint version {state.get('version')} is not {CHECKPOINT_VERSION}"
            )
        if state["spaces"] != self._spaces():
            raise ValueError(f"checkpoint spaces {state['spaces']} do not match {self._spaces()}")
        head = state.get("config", {}).get("plan_head", "factorised")
        if head != self.config.plan_head:
            raise ValueError(
                f"checkpoint has plan_head {head!r}, this agent {self.config.plan_head!r}"
            )
        for name, obj in self._modules().items():
            obj.load_state_dict(state[name])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.buffer.load_state_dict(state["buffer"])
        self.rng.bit_generator.state = state["numpy_rng"]
        self.torch_rng.set_state(state["torch_rng"])
        self.num_updates = int(state["num_updates"])
        self.num_env_steps = int(state["num_env_steps"])
