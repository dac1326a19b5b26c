"""Permutation-invariant networks over a set of servers, and factorised categorical heads.

Both environments describe every server by one row of identical features, padded with zero rows
up to a maximum (``agents.common.ObsLayout``); feature 0 of a row is ``present`` (LLMOffload's
server rows and GMORLOffload's columns alike). :class:`ServerSetEncoder` reads such an
observation as a *set* (DeepSets): one shared MLP embeds each row together with the global
(request) features and the preference, and a masked mean + max pooling over the present rows
gives a context vector. The same weights therefore serve any server count up to the maximum,
and the outputs do not depend on the order of the rows.

Heads for a factorised (MultiDiscrete) action, one per part:

* the **target** part (:class:`TargetHead`) scores "local" from the context and each server
  from its own embedding and the context, so its scores are *equivariant* to the server order
  (permuting the rows permutes the scores);
* every other part (split point, KV tier, expert policy: :class:`ContextHead`) is an MLP on the
  context.

A head returns ``(batch, choices, out_dim)``: ``out_dim = 1`` for policy logits, the number of
objectives for the advantages of a vector critic. :class:`FactorisedPolicy` and
:class:`BranchingVectorCritic` assemble them for :mod:`agents.dsac`.

Masks follow the environments' factorised form: one flat boolean vector, the per-part masks
concatenated (``sum(nvec)`` entries). Masked logits are set to :data:`MASKED_LOGIT`, a large
negative *finite* value, so a masked choice gets probability 0 after the softmax (the open
choices are renormalised) without producing NaN in ``p * log p`` or in gradients.

Public names (stable; ``agents.ddpg`` imports the encoder): ``ServerSetEncoder``,
``EncoderOutput``, ``TargetHead``, ``ContextHead``, ``build_part_heads``, ``FactorisedPolicy``,
``BranchingVectorCritic``, ``split_masks``, ``masked_log_softmax``, ``mlp``,
``target_has_local``, ``MASKED_LOGIT``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from agents.common import ObsLayout

__all__ = [
    "MASKED_LOGIT",
    "BranchingVectorCritic",
    "ConditionalPlanCritic",
    "ConditionalPlanPolicy",
    "ContextHead",
    "EncoderOutput",
    "FactorisedPolicy",
    "PlanHeads",
    "ServerSetEncoder",
    "TargetHead",
    "build_part_heads",
    "masked_log_softmax",
    "mlp",
    "plan_size",
    "split_masks",
    "split_plan_masks",
    "target_has_local",
]

RELATIVE_COST_INPUTS = 3  # per-row inputs added by ServerSetEncoder's relative costs
MASKED_LOGIT = -1e9  # logit of a masked choice: exp() underflows to exactly 0 in float32


def mlp(
    in_dim: int, hidden: int, out_dim: int, layers: int = 2, *, out_activation: bool = False
) -> nn.Sequential:
    """``layers`` hidden layers of ``hidden`` ReLU units (0: one linear map); ReLU on the output
    too if ``out_activation``."""
    modules: list[nn.Module] = []
    width = in_dim
    for _ in range(layers):
        modules += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    modules.append(nn.Linear(width, out_dim))
    if out_activation:
        modules.append(nn.ReLU())
    return nn.Sequential(*modules)


class EncoderOutput(NamedTuple):
    """What :class:`ServerSetEncoder` returns for a batch of B observations."""

    context: Tensor  # (B, context_dim): pooled servers + global features + preference
    servers: Tensor  # (B, num_servers, embed_dim): per-row embeddings, 0 on absent rows
    present: Tensor  # (B, num_servers) bool: rows whose ``present`` feature is 1


class ServerSetEncoder(nn.Module):
    """DeepSets encoder of a padded set of server rows, conditioned on a preference.

    ``phi(row_j, g, w)`` (a shared MLP, three layers of ``embed`` units, ReLU output) embeds each
    server row ``j`` with the global features ``g`` and the preference ``w`` appended; the
    embeddings of the present rows are pooled by a masked mean and max, and
    ``rho(mean, max, g, w)`` (two hidden layers of ``hidden`` units) gives the context.

    Args:
        layout: how a flat observation splits into global features and server rows
            (:func:`agents.common.obs_layout`).
        pref_dim: length of the preference vector (the number of objectives); 0 for none.
        hidden: width of the hidden layers, and the size of the context vector.
        embed: size of a server row's embedding.
        present_feature: index of the ``present`` flag in a row (0 in both environments).
        row_extra: length of optional per-row inputs given to ``forward`` as ``extra``
            (B, num_servers, row_extra), e.g. a critic's per-server action scores.

    Attributes:
        context_dim, embed_dim: sizes of the two outputs.

    Relative costs (``layout.cost_scale`` set, with ``layout.cost_features``): each present
    row also gets three inputs from the env's myopic per-objective costs ``c_j`` of sending the
    current task to server j, scalarised by the preference in the agent's units,
    ``u_j = sum_d w_d c_jd / cost_scale_d``: ``(u_j - min u) / (max u - min u)``,
    ``min u / u_j`` and ``[u_j = min u]`` (min and max over the present rows; all three 0 when
    no task waits). They are invariant to a common scale of the costs, so CPU frequencies or
    link rates outside the training ranges, which move the costs' magnitudes, leave them in
    [0, 1]; the product ``w * c``, which an MLP fed ``w`` and ``c`` separately only
    approximates inside the ranges it saw, is computed exactly. The scale is a buffer: a loaded
    network keeps the one it was trained with.

    Call ``encoder(obs, weights, extra=None)`` with ``obs`` (B, obs_dim) flat float (GMORL's
    (features, servers) observations flattened row-major) and ``weights`` (B, pref_dim): the
    preference, or any conditioning vector of that length (e.g. preference + action); returns an
    :class:`EncoderOutput`.
    """

    def __init__(
        self,
        layout: ObsLayout,
        pref_dim: int,
        hidden: int = 128,
        embed: int = 64,
        present_feature: int = 0,
        row_extra: int = 0,
    ) -> None:
        super().__init__()
        self.layout = layout
        self.row_extra = int(row_extra)
        self.pref_dim = int(pref_dim)
        self.present_feature = int(present_feature)
        self.context_dim = int(hidden)
        self.embed_dim = int(embed)
        cond = layout.global_dim + self.pref_dim
        self.relative_costs = bool(layout.cost_scale)
        if self.relative_costs:
            if len(layout.cost_scale) != len(layout.cost_features) or not layout.cost_features:
                raise ValueError(
                    f"layout.cost_scale {layout.cost_scale} needs one cost feature per "
                    f"objective, the layout has {layout.cost_features}"
                )
            if len(layout.cost_scale) > self.pref_dim:
                raise ValueError(
                    f"relative costs need the preference ({len(layout.cost_scale)} objectives) "
                    f"in the weights, pref_dim is {self.pref_dim}"
                )
            self.register_buffer("cost_scale", torch.tensor(layout.cost_scale, dtype=torch.float32))
            self.register_buffer(
                "cost_index",
                torch.tensor(layout.cost_features, dtype=torch.long),
                persistent=False,
            )
        row_in = (
            layout.server_dim
            + self.row_extra
            + (RELATIVE_COST_INPUTS if self.relative_costs else 0)
        )
        # phi's first layer on [row, g, w] = row part (per row) + condition part (once per sample)
        self.phi_row = nn.Linear(row_in, embed)
        self.phi_cond = nn.Linear(cond, embed, bias=False)
        self.phi = nn.Sequential(
            nn.ReLU(), nn.Linear(embed, embed), nn.ReLU(), nn.Linear(embed, embed), nn.ReLU()
        )
        self.rho = mlp(2 * embed + cond, hidden, hidden, out_activation=True)

    @property
    def obs_dim(self) -> int:
        """Length of a flat observation."""
        layout = self.layout
        if layout.transposed:
            return layout.server_dim * layout.num_servers
        return layout.server_start + layout.num_servers * layout.server_dim

    def split(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """(global (B, global_dim), servers (B, num_servers, server_dim)) of flat ``obs``."""
        layout, b = self.layout, obs.shape[0]
        if layout.transposed:
            servers = obs.reshape(b, layout.server_dim, layout.num_servers).transpose(1, 2)
            return obs.new_zeros(b, 0), servers
        end = layout.server_start + layout.num_servers * layout.server_dim
        servers = obs[:, layout.server_start : end].reshape(
            b, layout.num_servers, layout.server_dim
        )
        return obs[:, : layout.global_dim], servers

    def relative_cost_inputs(self, rows: Tensor, weights: Tensor, present: Tensor) -> Tensor:
        """(B, num_servers, 3) relative scalarised costs of the rows (class docstring)."""
        d = self.cost_scale.shape[0]
        costs = rows.index_select(-1, self.cost_index) / self.cost_scale  # (B, S, D)
        u = (costs * weights[:, None, :d]).sum(-1)  # (B, S)
        low = torch.where(present, u, torch.full_like(u, math.inf)).amin(1, keepdim=True)
        high = torch.where(present, u, torch.full_like(u, -math.inf)).amax(1, keepdim=True)
        low, high = low.clamp(min=0.0), high.clamp(min=0.0)  # no present row: 0
        has_task = (high > 0.0) & present
        spread = high - low
        gap = torch.where(spread > 0.0, (u - low) / spread.clamp(min=1e-12), torch.zeros_like(u))
        ratio = torch.where(u > 0.0, low / u.clamp(min=1e-12), torch.ones_like(u))
        best = (u <= low).to(u.dtype)
        out = torch.stack([gap, ratio, best], dim=-1)
        return out * has_task.unsqueeze(-1).to(u.dtype)

    def forward(self, obs: Tensor, weights: Tensor, extra: Tensor | None = None) -> EncoderOutput:
        g, rows = self.split(obs)
        cond = torch.cat([g, weights], dim=-1)  # (B, global + pref)
        present = rows[..., self.present_feature] > 0.5
        parts = [rows]
        if extra is not None:
            parts.append(extra)
        if self.relative_costs:
            parts.append(self.relative_cost_inputs(rows, weights, present))
        x = self.phi_row(parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1))
        x = x + self.phi_cond(cond).unsqueeze(1)
        emb = self.phi(x) * present.unsqueeze(-1)  # absent rows: 0 (embeddings are >= 0)
        count = present.sum(dim=1, keepdim=True).clamp(min=1)
        mean = emb.sum(dim=1) / count
        peak = emb.amax(dim=1)  # absent rows are 0, so they never raise the max
        context = self.rho(torch.cat([mean, peak, cond], dim=-1))
        return EncoderOutput(context, emb, present)


class TargetHead(nn.Module):
    """Scores of the target part: ``[local?, server_1 .. server_S]``, ``(B, local + S, out_dim)``.

    The local score is an MLP on the context; server j's is a shared MLP on (embedding_j,
    context), so the scores are equivariant to the order of the server rows.

    Args:
        context_dim, embed_dim: sizes of the encoder's outputs.
        hidden: hidden width.
        out_dim: values per choice (1 for logits, the number of objectives for a vector critic).
        local: whether choice 0 is "run locally" (LLMOffload) or the choices are the server rows
            only (GMORLOffload: 0 = cloud = row 0).
    """

    def __init__(
        self, context_dim: int, embed_dim: int, hidden: int, out_dim: int = 1, local: bool = True
    ) -> None:
        super().__init__()
        self.out_dim = int(out_dim)
        # one hidden layer of ``embed_dim`` units on [embedding_j, context], its context part
        # computed once per sample
        self.server_emb = nn.Linear(embed_dim, embed_dim)
        self.server_ctx = nn.Linear(context_dim, embed_dim, bias=False)
        self.server_out = nn.Sequential(nn.ReLU(), nn.Linear(embed_dim, out_dim))
        self.local = mlp(context_dim, hidden, out_dim, layers=1) if local else None

    def forward(self, context: Tensor, servers: Tensor) -> Tensor:
        h = self.server_emb(servers) + self.server_ctx(context).unsqueeze(1)
        scores = self.server_out(h)  # (B, S, out_dim)
        if self.local is None:
            return scores
        return torch.cat([self.local(context).unsqueeze(1), scores], dim=1)


class ContextHead(nn.Module):
    """Scores of a part that does not name a server (split, KV tier, expert policy): an MLP on
    the context, ``(B, choices, out_dim)``."""

    def __init__(self, context_dim: int, hidden: int, choices: int, out_dim: int = 1) -> None:
        super().__init__()
        self.choices, self.out_dim = int(choices), int(out_dim)
        self.net = mlp(context_dim, hidden, self.choices * self.out_dim, layers=1)

    def forward(self, context: Tensor, servers: Tensor | None = None) -> Tensor:
        return self.net(context).view(context.shape[0], self.choices, self.out_dim)


def target_has_local(layout: ObsLayout, nvec: Sequence[int]) -> bool:
    """Whether target choice 0 is "local" (``nvec[0] == 1 + rows``: LLMOffload) or the target
    choices are the server rows themselves (``nvec[0] == rows``: GMORLOffload)."""
    n0 = int(nvec[0])
    if n0 == layout.num_servers + 1:
        return True
    if n0 == layout.num_servers:
        return False
    raise ValueError(
        f"the first action part has {n0} choices; expected {layout.num_servers} server rows "
        f"or {layout.num_servers + 1} (local + rows)"
    )


def build_part_heads(
    encoder: ServerSetEncoder, nvec: Sequence[int], hidden: int, out_dim: int = 1
) -> nn.ModuleList:
    """One head per action part: a :class:`TargetHead` for part 0, :class:`ContextHead` for the
    rest. ``nvec``: choices per part (``[n]`` for a Discrete action over targets)."""
    local = target_has_local(encoder.layout, nvec)
    heads: list[nn.Module] = [
        TargetHead(encoder.context_dim, encoder.embed_dim, hidden, out_dim, local)
    ]
    heads += [ContextHead(encoder.context_dim, hidden, int(n), out_dim) for n in nvec[1:]]
    return nn.ModuleList(heads)


def split_masks(masks: Tensor | None, nvec: Sequence[int], batch: int, device=None) -> list[Tensor]:
    """Per-part bool masks ``[(B, n_i)]`` from flat masks (B, sum(nvec)) (None: all open).

    A part with no open choice (the environments then execute a fallback) gets choice 0 opened,
    so every part remains a proper distribution.
    """
    if masks is None:
        return [torch.ones(batch, int(n), dtype=torch.bool, device=device) for n in nvec]
    parts = list(torch.split(masks.bool(), [int(n) for n in nvec], dim=-1))
    out = []
    for m in parts:
        empty = ~m.any(dim=-1, keepdim=True)
        if bool(empty.any()):
            first = torch.zeros_like(m)
            first[:, 0] = True
            m = m | (empty & first)
        out.append(m)
    return out


def masked_log_softmax(logits: Tensor, mask: Tensor) -> Tensor:
    """log pi over the open choices (masked choices get ~MASKED_LOGIT, i.e. probability 0)."""
    return torch.log_softmax(logits.masked_fill(~mask, MASKED_LOGIT), dim=-1)


class FactorisedPolicy(nn.Module):
    """pi(a | s, w) = prod_i pi_i(a_i | s, w), one masked categorical per action part.

    ``policy(obs, weights, masks)`` with ``masks`` from :func:`split_masks` returns the list of
    per-part log-probabilities ``[(B, n_i)]``.
    """

    def __init__(
        self, layout: ObsLayout, nvec: Sequence[int], pref_dim: int, hidden: int, embed: int
    ) -> None:
        super().__init__()
        self.encoder = ServerSetEncoder(layout, pref_dim, hidden, embed)
        self.heads = build_part_heads(self.encoder, nvec, hidden, out_dim=1)

    def forward(self, obs: Tensor, weights: Tensor, masks: list[Tensor]) -> list[Tensor]:
        ctx, servers, _ = self.encoder(obs, weights)
        return [
            masked_log_softmax(head(ctx, servers).squeeze(-1), m)
            for head, m in zip(self.heads, masks, strict=True)
        ]

    @staticmethod
    def entropy(probs: list[Tensor], logp: list[Tensor]) -> Tensor:
        """H = -sum_i sum_{a_i} pi_i log pi_i (B,); masked choices (p = 0) add exactly 0."""
        return -sum((p * lp).sum(-1) for p, lp in zip(probs, logp, strict=True))

    @staticmethod
    def max_entropy(masks: list[Tensor]) -> Tensor:
        """sum_i log(open choices of part i) (B,): the entropy of the uniform open choices."""
        return sum(m.sum(-1).float().log() for m in masks)

    @staticmethod
    def select(logp: list[Tensor], noise=None) -> Tensor:
        """Actions (B, parts) long: with ``noise(shape)`` (Gumbel) a sample, without the most
        probable choice of every part."""
        if noise is not None:
            logp = [lp + noise(lp.shape) for lp in logp]
        return torch.stack([lp.argmax(dim=-1) for lp in logp], dim=-1)


class BranchingVectorCritic(nn.Module):
    """Branching dueling vector critic: ``Q(s, a, w) = V(s, w) + sum_i A_i(s, w, a_i)``.

    Every term is a vector with one value per objective. Each advantage is centred over the
    choices open in its part, ``A_i(a_i) = raw_i(a_i) - mean_{open b} raw_i(b)`` (closed choices
    get 0), so V is the value of the uniform open policy and the decomposition is identifiable.
    With one part (a Discrete action) this is an ordinary per-action Q.

    ``critic(obs, weights, masks)`` returns ``(V (B, D), [A_i (B, n_i, D)])``; combine them with
    :meth:`q_values` (for taken actions) or :meth:`expected` (under a factorised policy).
    """

    def __init__(
        self,
        layout: ObsLayout,
        nvec: Sequence[int],
        pref_dim: int,
        reward_dim: int,
        hidden: int,
        embed: int,
    ) -> None:
        super().__init__()
        self.encoder = ServerSetEncoder(layout, pref_dim, hidden, embed)
        self.value = mlp(self.encoder.context_dim, hidden, reward_dim, layers=1)
        self.heads = build_part_heads(self.encoder, nvec, hidden, out_dim=reward_dim)

    def forward(
        self, obs: Tensor, weights: Tensor, masks: list[Tensor]
    ) -> tuple[Tensor, list[Tensor]]:
        ctx, servers, _ = self.encoder(obs, weights)
        advantages = []
        for head, m in zip(self.heads, masks, strict=True):
            raw = head(ctx, servers)  # (B, n_i, D)
            open_ = m.unsqueeze(-1).to(raw.dtype)
            mean = (raw * open_).sum(dim=1, keepdim=True) / open_.sum(dim=1, keepdim=True)
            advantages.append((raw - mean) * open_)
        return self.value(ctx), advantages

    @staticmethod
    def q_values(value: Tensor, advantages: list[Tensor], actions: Tensor) -> Tensor:
        """Q(s, a, w) (B, D) of actions (B, parts) long."""
        q = value
        for i, adv in enumerate(advantages):
            idx = actions[:, i].view(-1, 1, 1).expand(-1, 1, adv.shape[-1])
            q = q + adv.gather(1, idx).squeeze(1)
        return q

    @staticmethod
    def expected(value: Tensor, advantages: list[Tensor], probs: list[Tensor]) -> Tensor:
        """E_{a ~ pi}[Q(s, a, w)] = V + sum_i sum_{a_i} pi_i(a_i) A_i(a_i), (B, D): exact for a
        factorised pi, since Q is a sum of one term per part."""
        q = value
        for adv, p in zip(advantages, probs, strict=True):
            q = q + (p.unsqueeze(-1) * adv).sum(dim=1)
        return q


# ---------------------------------------------------------------- plans conditional on the target
class PlanHeads(nn.Module):
    """Per-target scores of the rest of an LLMOffload plan given its target.

    Target g's hidden vector is an MLP on the context ("local") or on (embedding_g, context) (a
    server; shared weights, so the scores are equivariant to the row order), and two linear maps
    on it score the (split, KV tier) pairs and the expert policies *at that target*. Returns
    ``(pairs (B, G, NS * K, out_dim), policies (B, G, NP, out_dim))``, G = 1 + rows.
    """

    def __init__(
        self, context_dim: int, embed_dim: int, hidden: int, pairs: int, policies: int, out_dim: int
    ) -> None:
        super().__init__()
        self.pairs, self.policies, self.out_dim = int(pairs), int(policies), int(out_dim)
        self.local = nn.Linear(context_dim, hidden)
        self.server_emb = nn.Linear(embed_dim, hidden)
        self.server_ctx = nn.Linear(context_dim, hidden, bias=False)
        self.body = nn.Sequential(nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.pair_out = nn.Linear(hidden, self.pairs * self.out_dim)
        self.policy_out = nn.Linear(hidden, self.policies * self.out_dim)

    def forward(self, context: Tensor, servers: Tensor) -> tuple[Tensor, Tensor]:
        servers_h = self.server_emb(servers) + self.server_ctx(context).unsqueeze(1)
        h = self.body(torch.cat([self.local(context).unsqueeze(1), servers_h], dim=1))
        b, g = h.shape[:2]
        return (
            self.pair_out(h).view(b, g, self.pairs, self.out_dim),
            self.policy_out(h).view(b, g, self.policies, self.out_dim),
        )


def split_plan_masks(
    masks: Tensor | None, nvec: Sequence[int], batch: int, device=None
) -> list[Tensor]:
    """``[target (B, G), pairs (B, G, NS * K), policies (B, G, NP)]`` bool from the envs' flat
    ``plan_mask`` rows (B, G + G * NS * K + G * NP) (None: all open); a row with no open choice
    (a closed target) gets choice 0 opened, so every conditional is a proper distribution."""
    g, ns, k, np_ = (int(x) for x in nvec)
    if masks is None:
        shapes = [(batch, g), (batch, g, ns * k), (batch, g, np_)]
        return [torch.ones(s, dtype=torch.bool, device=device) for s in shapes]
    target, pairs, pol = torch.split(masks.bool(), [g, g * ns * k, g * np_], dim=-1)
    out = []
    for m in (target, pairs.reshape(-1, g, ns * k), pol.reshape(-1, g, np_)):
        empty = ~m.any(dim=-1, keepdim=True)
        if bool(empty.any()):
            first = torch.zeros_like(m)
            first[..., 0] = True
            m = m | (empty & first)
        out.append(m)
    return out


def plan_size(nvec: Sequence[int]) -> int:
    """Length of one ``plan_mask`` row for a MultiDiscrete ``nvec`` (target, split, tier, policy)."""
    g, ns, k, np_ = (int(x) for x in nvec)
    return g + g * ns * k + g * np_


class ConditionalPlanPolicy(nn.Module):
    """pi(g, s, k, p | o, w) = pi(g) pi((s, k) | g) pi(p | g): the target, then the (split, tier)
    pair and the expert policy *given the target*, each masked by the env's conditional
    ``plan_mask``, so every sampled plan is open (no fallback) and the rest of the plan can
    depend on where it runs.

    ``policy(obs, weights, masks)`` with masks from :func:`split_plan_masks` returns
    ``[log pi(g) (B, G), log pi(pair | g) (B, G, NS * K), log pi(p | g) (B, G, NP)]``.
    """

    def __init__(
        self, layout: ObsLayout, nvec: Sequence[int], pref_dim: int, hidden: int, embed: int
    ) -> None:
        super().__init__()
        if len(nvec) != 4 or not target_has_local(layout, nvec):
            raise ValueError(
                f"a conditional plan needs LLMOffload's 4-part action (local + rows, split, tier, "
                f"policy), got nvec {list(nvec)}"
            )
        self.nvec = [int(x) for x in nvec]
        self.encoder = ServerSetEncoder(layout, pref_dim, hidden, embed)
        self.target = TargetHead(self.encoder.context_dim, self.encoder.embed_dim, hidden, 1)
        g, ns, k, np_ = self.nvec
        self.rest = PlanHeads(
            self.encoder.context_dim, self.encoder.embed_dim, hidden, ns * k, np_, 1
        )

    def forward(self, obs: Tensor, weights: Tensor, masks: list[Tensor]) -> list[Tensor]:
        ctx, servers, _ = self.encoder(obs, weights)
        pairs, pol = self.rest(ctx, servers)
        return [
            masked_log_softmax(self.target(ctx, servers).squeeze(-1), masks[0]),
            masked_log_softmax(pairs.squeeze(-1), masks[1]),
            masked_log_softmax(pol.squeeze(-1), masks[2]),
        ]

    @staticmethod
    def entropy(probs: list[Tensor], logp: list[Tensor]) -> Tensor:
        """H(g) + sum_g pi(g) [H(pair | g) + H(p | g)], (B,): the entropy of the whole plan."""
        h_t = -(probs[0] * logp[0]).sum(-1)
        h_rest = -(probs[1] * logp[1]).sum(-1) - (probs[2] * logp[2]).sum(-1)  # (B, G)
        return h_t + (probs[0] * h_rest).sum(-1)

    @staticmethod
    def max_entropy(masks: list[Tensor]) -> Tensor:
        """log(number of open plans) (B,): the entropy of the uniform open plan."""
        open_plans = (masks[0] * masks[1].sum(-1) * masks[2].sum(-1)).sum(-1)
        return open_plans.clamp(min=1).float().log()

    def select(self, logp: list[Tensor], noise=None) -> Tensor:
        """Plans (B, 4) long: with ``noise(shape)`` (Gumbel), a sample (target, then the rest
        given it); without, the most probable whole plan (the joint mode)."""
        lt, lpair, lpol = logp
        if noise is None:
            best_pair, pair_idx = lpair.max(-1)
            best_pol, pol_idx = lpol.max(-1)
            g = (lt + best_pair + best_pol).argmax(-1)
            rows = torch.arange(g.shape[0], device=g.device)
            pair, p = pair_idx[rows, g], pol_idx[rows, g]
        else:
            g = (lt + noise(lt.shape)).argmax(-1)
            rows = torch.arange(g.shape[0], device=g.device)
            pair = (lpair[rows, g] + noise(lpair[rows, g].shape)).argmax(-1)
            p = (lpol[rows, g] + noise(lpol[rows, g].shape)).argmax(-1)
        k = self.nvec[2]
        return torch.stack([g, pair // k, pair % k, p], dim=-1)


class ConditionalPlanCritic(nn.Module):
    """Vector critic for :class:`ConditionalPlanPolicy`:
    ``Q(o, w, g, s, k, p) = V + A_t(g) + A_pair(g, (s, k)) + A_pol(g, p)``, each term a vector
    (one value per objective), the advantages centred over their open choices (per target for
    the two conditional ones), so :meth:`expected` is exact under the conditional policy.

    ``critic(obs, weights, masks)`` returns ``(V (B, D), [A_t (B, G, D), A_pair (B, G, NS * K,
    D), A_pol (B, G, NP, D)])``.
    """

    def __init__(
        self,
        layout: ObsLayout,
        nvec: Sequence[int],
        pref_dim: int,
        reward_dim: int,
        hidden: int,
        embed: int,
    ) -> None:
        super().__init__()
        self.nvec = [int(x) for x in nvec]
        g, ns, k, np_ = self.nvec
        self.encoder = ServerSetEncoder(layout, pref_dim, hidden, embed)
        c, e = self.encoder.context_dim, self.encoder.embed_dim
        self.value = mlp(c, hidden, reward_dim, layers=1)
        self.target = TargetHead(c, e, hidden, reward_dim)
        self.rest = PlanHeads(c, e, hidden, ns * k, np_, reward_dim)

    @staticmethod
    def _centre(raw: Tensor, mask: Tensor) -> Tensor:
        open_ = mask.unsqueeze(-1).to(raw.dtype)
        mean = (raw * open_).sum(dim=-2, keepdim=True) / open_.sum(dim=-2, keepdim=True)
        return (raw - mean) * open_

    def forward(
        self, obs: Tensor, weights: Tensor, masks: list[Tensor]
    ) -> tuple[Tensor, list[Tensor]]:
        ctx, servers, _ = self.encoder(obs, weights)
        pairs, pol = self.rest(ctx, servers)
        raws = (self.target(ctx, servers), pairs, pol)
        return self.value(ctx), [self._centre(r, m) for r, m in zip(raws, masks, strict=True)]

    def q_values(self, value: Tensor, advantages: list[Tensor], actions: Tensor) -> Tensor:
        """Q (B, D) of plans (B, 4) long."""
        a_t, a_pair, a_pol = advantages
        rows = torch.arange(actions.shape[0], device=actions.device)
        g = actions[:, 0]
        pair = actions[:, 1] * self.nvec[2] + actions[:, 2]
        return value + a_t[rows, g] + a_pair[rows, g, pair] + a_pol[rows, g, actions[:, 3]]

    @staticmethod
    def expected(value: Tensor, advantages: list[Tensor], probs: list[Tensor]) -> Tensor:
        """E_pi[Q] = V + sum_g pi(g) [A_t(g) + sum pi(pair | g) A_pair(g, .) + sum pi(p | g)
        A_pol(g, .)], (B, D)."""
        a_t, a_pair, a_pol = advantages
        p_t, p_pair, p_pol = probs
        rest = (p_pair.unsqueeze(-1) * a_pair).sum(-2) + (p_pol.unsqueeze(-1) * a_pol).sum(-2)
        return value + (p_t.unsqueeze(-1) * (a_t + rest)).sum(1)
