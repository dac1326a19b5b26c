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

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from agents.common import ObsLayout

__all__ = [
    "MASKED_LOGIT",
    "BranchingVectorCritic",
    "ContextHead",
    "EncoderOutput",
    "FactorisedPolicy",
    "ServerSetEncoder",
    "TargetHead",
    "build_part_heads",
    "masked_log_softmax",
    "mlp",
    "split_masks",
    "target_has_local",
]

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
        # phi's first layer on [row, g, w] = row part (per row) + condition part (once per sample)
        self.phi_row = nn.Linear(layout.server_dim + self.row_extra, embed)
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

    def forward(self, obs: Tensor, weights: Tensor, extra: Tensor | None = None) -> EncoderOutput:
        g, rows = self.split(obs)
        cond = torch.cat([g, weights], dim=-1)  # (B, global + pref)
        present = rows[..., self.present_feature] > 0.5
        x = self.phi_row(rows if extra is None else torch.cat([rows, extra], dim=-1))
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
