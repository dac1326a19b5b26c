"""Decode attention math: pure functions on tensors, shared by the host and in-storage paths.

One decode step attends one new query token per sequence over that sequence's whole KV. The
functions here return, next to the output, the log-sum-exp (``lse``) of the scaled scores of every
query head, so that partial results over disjoint pieces of the KV (tiers, workers, page batches)
merge *exactly* (split-KV / flash-decoding):

    out = sum_i exp(lse_i - lse) * out_i,   lse = log sum_i exp(lse_i)

Shapes (``D`` head dim, ``Hq`` query heads, ``Hkv`` KV heads, ``G = Hq / Hkv``, ``N`` tokens):

* ``q``: ``[Hq, D]`` (one sequence) or ``[B, Hq, D]`` (a batch, one decode token each);
* ``k``, ``v``: ``[Hkv, N, D]`` (or ``[B, Hkv, N, D]`` with a batched ``q``); a 2-D ``[N, D]`` is
  read as one KV head;
* grouped-query attention: query head ``h`` uses KV head ``h // G``;
* ``out`` comes back in ``q``'s dtype, ``lse`` in fp32 with ``q``'s shape minus ``D``; every
  computation runs in fp32 whatever the storage dtype.

An empty KV (``N = 0``) gives ``out = 0`` and ``lse = -inf``, the neutral element of the merge.

Sparse mode (:func:`topk_pages`, :func:`sparse_attention`) reads only a fraction of the KV pages,
chosen by a cheap per-page upper bound of ``q . k`` computed from a per-page key summary (the
element-wise min and max key of the page, Quest-style). It is **approximate**: the softmax mass of
the pages it skips is dropped, so its output differs from dense attention unless every skipped
page's weight is negligible; ``keep_fraction = 1`` is exactly dense attention.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence

import torch

__all__ = [
    "partial_attention",
    "merge_partials",
    "streamed_attention",
    "OnlineSoftmax",
    "grouped_partial_attention",
    "page_key_summary",
    "page_scores",
    "topk_pages",
    "sparse_attention",
    "reference_attention",
]

Tensor = torch.Tensor


def _default_scale(head_dim: int, scale: float | None) -> float:
    return 1.0 / math.sqrt(head_dim) if scale is None else float(scale)


def _as_batched(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor, bool]:
    """Bring q to ``[B, Hq, D]`` and k, v to ``[B, Hkv, N, D]``; report whether q was 2-D."""
    if q.dim() not in (2, 3):
        raise ValueError(f"q must be [Hq, D] or [B, Hq, D], got shape {tuple(q.shape)}")
    if k.shape != v.shape:
        raise ValueError(
            f"k and v must have the same shape, got {tuple(k.shape)}, {tuple(v.shape)}"
        )
    unbatched = q.dim() == 2
    if k.dim() == 2:  # [N, D]: one KV head
        k, v = k.unsqueeze(0), v.unsqueeze(0)
    if unbatched:
        if k.dim() != 3:
            raise ValueError(f"with q [Hq, D], k must be [Hkv, N, D], got {tuple(k.shape)}")
        q, k, v = q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0)
    elif k.dim() == 3:  # the same KV for every sequence of the batch
        k, v = k.unsqueeze(0), v.unsqueeze(0)
    if k.dim() != 4:
        raise ValueError(f"k must be [Hkv, N, D] or [B, Hkv, N, D], got {tuple(k.shape)}")
    B, Hq, D = q.shape
    Hkv = k.shape[1]
    if k.shape[-1] != D:
        raise ValueError(f"head dim mismatch: q has {D}, k has {k.shape[-1]}")
    if Hq % Hkv:
        raise ValueError(f"query heads ({Hq}) must be a multiple of KV heads ({Hkv})")
    if k.shape[0] not in (1, B):
        raise ValueError(f"batch mismatch: q has {B}, k has {k.shape[0]}")
    return q, k, v, unbatched


def _grouped_query(q: Tensor, num_kv_heads: int, scale: float) -> Tensor:
    """``[B, Hq, D]`` -> fp32 ``[B, Hkv, G, D]``, pre-multiplied by the softmax scale."""
    B, Hq, D = q.shape
    return (q.float() * scale).reshape(B, num_kv_heads, Hq // num_kv_heads, D)


def partial_attention(
    q: Tensor, k: Tensor, v: Tensor, scale: float | None = None
) -> tuple[Tensor, Tensor]:
    """Attention of ``q`` over the KV ``(k, v)``, with the log-sum-exp of the scaled scores.

    Returns ``(out, lse)``: ``out`` in ``q``'s dtype and shape, ``lse`` fp32 of shape
    ``q.shape[:-1]``. ``N = 0`` gives zeros and ``-inf``.
    """
    qb, kb, vb, unbatched = _as_batched(q, k, v)
    B, Hq, D = qb.shape
    Hkv, N = kb.shape[1], kb.shape[2]
    if N == 0:
        out = torch.zeros_like(qb)
        lse = torch.full((B, Hq), -math.inf, dtype=torch.float32, device=q.device)
    else:
        qg = _grouped_query(qb, Hkv, _default_scale(D, scale))  # [B, Hkv, G, D]
        s = torch.matmul(qg, kb.float().transpose(-1, -2))  # [B, Hkv, G, N]
        lse = torch.logsumexp(s, dim=-1)
        p = torch.exp(s - lse.unsqueeze(-1))
        out = torch.matmul(p, vb.float()).reshape(B, Hq, D).to(q.dtype)
        lse = lse.reshape(B, Hq)
    if unbatched:
        return out[0], lse[0]
    return out, lse


def merge_partials(parts: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Exact merge of partial attentions over disjoint KV pieces (split-KV).

    Each part is ``(out_i, lse_i)`` for the same queries; weights are ``exp(lse_i - lse_max)``.
    Parts with ``lse = -inf`` (empty KV) get weight 0; if every part is empty the result is
    ``(0, -inf)``. ``out`` keeps the first part's dtype, ``lse`` is fp32.
    """
    if len(parts) == 0:
        raise ValueError("merge_partials needs at least one part")
    if len(parts) == 1:
        out, lse = parts[0]
        return out, lse.float()
    dtype = parts[0][0].dtype
    outs = torch.stack([o.float() for o, _ in parts])
    lses = torch.stack([lse.float() for _, lse in parts])
    m = lses.amax(dim=0)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    w = torch.exp(lses - m)  # -inf -> 0
    denom = w.sum(dim=0)
    out = (w.unsqueeze(-1) * outs).sum(dim=0) / denom.clamp_min(
        torch.finfo(torch.float32).tiny
    ).unsqueeze(-1)
    lse = m + torch.log(denom)  # log 0 = -inf for all-empty
    return out.to(dtype), lse


_SCRATCH = threading.local()
# PyTorch's fused CPU flash-attention kernel (returns the log-sum-exp too); internal to aten,
# so looked up defensively: without it the plain tensor-op path runs.
_FUSED_CPU = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def _scratch(numel: int, device: torch.device) -> Tensor:
    """A per-thread fp32 buffer of at least ``numel`` elements on ``device`` (reused: fresh
    multi-hundred-KB allocations cost page faults on every call)."""
    bufs = getattr(_SCRATCH, "bufs", None)
    if bufs is None:
        bufs = _SCRATCH.bufs = {}
    key = str(device)
    b = bufs.get(key)
    if b is None or b.numel() < numel:
        b = bufs[key] = torch.empty(numel, dtype=torch.float32, device=device)
    return b


class OnlineSoftmax:
    """Running (flash-decoding) attention state of a group of queries over KV chunks.

    ``qg`` is the fp32, pre-scaled query ``[..., G, D]``; :meth:`update` takes a chunk
    ``k, v`` of shape ``[..., n, D]`` (any dtype; converted to fp32) whose leading dims broadcast
    with ``qg``'s. Memory is one chunk plus ``O(G * D)`` state. :meth:`result` returns the
    normalized fp32 output ``[..., G, D]`` and lse ``[..., G]``.
    """

    __slots__ = ("qg", "q", "scale", "m", "l", "acc", "tokens")

    def __init__(self, qg: Tensor, q: Tensor | None = None, scale: float | None = None):
        self.qg = qg
        self.q = q  # the raw query [G, D], for the fused CPU kernel (optional)
        self.scale = scale
        self.m: Tensor | None = None  # running max of the scores [..., G]
        self.l: Tensor | None = None  # running sum of exp(s - m)  [..., G]
        self.acc: Tensor | None = None  # running sum of exp(s - m) v  [..., G, D]
        self.tokens = 0

    def merge_partial(self, out: Tensor, lse: Tensor, n_tokens: int = 0) -> None:
        """Fold a normalized partial result (fp32 ``out [..., G, D]``, ``lse [..., G]``)."""
        if self.m is None:
            self.m, self.l, self.acc = lse, torch.ones_like(lse), out
        else:
            m_new = torch.maximum(self.m, lse)
            alpha = torch.exp(self.m - m_new)
            beta = torch.exp(lse - m_new)
            self.l = self.l * alpha + beta
            self.acc = self.acc * alpha.unsqueeze(-1) + out * beta.unsqueeze(-1)
            self.m = m_new
        self.tokens += n_tokens

    def update(self, k: Tensor, v: Tensor) -> None:
        n = k.shape[-2]
        if n == 0:
            return
        kf = k if k.dtype == torch.float32 else k.float()
        vf = v if v.dtype == torch.float32 else v.float()
        s = torch.matmul(self.qg, kf.transpose(-1, -2))  # [..., G, n]
        m_c = s.amax(dim=-1)
        if self.m is None:
            m_new = m_c
        else:
            m_new = torch.maximum(self.m, m_c)
        s.sub_(m_new.unsqueeze(-1)).exp_()  # p = exp(s - m_new), in place
        l_c = s.sum(dim=-1)
        o_c = torch.matmul(s, vf)  # [..., G, D]
        self._absorb(m_new, l_c, o_c, n)

    def _absorb(self, m_new: Tensor, l_c: Tensor, o_c: Tensor, n: int) -> None:
        """Fold a chunk's running max, exp-sum and unnormalised output into the state."""
        if self.m is None:
            self.l, self.acc = l_c, o_c
        else:
            alpha = torch.exp(self.m - m_new)
            self.l = self.l * alpha + l_c
            self.acc = self.acc * alpha.unsqueeze(-1) + o_c
        self.m = m_new
        self.tokens += n

    def update_blocks(self, pieces: Sequence[tuple[Tensor, Tensor]], block_tokens: int = 1024):
        """Fold a chunk of KV given as pieces into the state (2-D ``qg [G, D]`` only).

        Each piece is ``(k, v)`` of shape ``[n, D]`` or ``[pages, t, D]`` (any dtype and strides,
        e.g. zero-copy views of page slots in a read buffer). The chunk is processed two-pass in
        blocks of at most ``block_tokens``, each converted to fp32 into one reused scratch
        buffer that stays in cache: the scores of every block, one softmax step for the whole
        chunk, then ``p @ V`` block by block. Same result as :meth:`update` on the concatenation.
        """
        qg = self.qg
        if qg.dim() != 2:
            raise ValueError("update_blocks needs a 2-D qg [G, D]")
        G, D = qg.shape
        if self.q is not None and _FUSED_CPU is not None:
            rest = []
            for k, v in pieces:
                if not self._fused(k, v):
                    rest.append((k, v))
            pieces = rest
        blocks: list[tuple[Tensor, Tensor]] = []
        for k, v in pieces:
            if k.dim() == 3:
                per = max(1, block_tokens // max(1, k.shape[1]))
                blocks.extend((k[i : i + per], v[i : i + per]) for i in range(0, k.shape[0], per))
            else:
                blocks.extend(
                    (k[a : a + block_tokens], v[a : a + block_tokens])
                    for a in range(0, k.shape[0], block_tokens)
                )
        sizes = [k.numel() // D for k, _ in blocks]
        n_total = sum(sizes)
        if n_total == 0:
            return
        buf = _scratch(max(sizes) * D, qg.device)

        def fp32(x: Tensor, n: int) -> Tensor:
            if x.dtype == torch.float32 and x.is_contiguous():
                return x.reshape(n, D)
            out = buf[: n * D]
            out.view(x.shape).copy_(x)
            return out.view(n, D)

        # scores [G, n] (q @ K^T: the fast GEMM orientation for G << n), block by block
        scores = [
            torch.mm(qg, fp32(k, n).t()) for (k, _), n in zip(blocks, sizes, strict=True) if n
        ]
        s = scores[0] if len(scores) == 1 else torch.cat(scores, dim=1)
        del scores
        m_c = s.amax(dim=-1)
        m_new = m_c if self.m is None else torch.maximum(self.m, m_c)
        s.sub_(m_new.unsqueeze(-1)).exp_()
        l_c = s.sum(dim=-1)
        o_c = torch.zeros(G, D, dtype=torch.float32, device=qg.device)
        off = 0
        for (_, v), n in zip(blocks, sizes, strict=True):
            if n:
                o_c.addmm_(s[:, off : off + n], fp32(v, n))
            off += n
        self._absorb(m_new, l_c, o_c, n_total)

    def _fused(self, k: Tensor, v: Tensor) -> bool:
        """PyTorch's fused CPU flash-attention kernel on one contiguous piece (the G query
        heads of a KV head as G query rows; fp32 accumulation inside, out rounded to the KV
        dtype). Returns False when the piece does not qualify (then the caller's path runs)."""
        q = self.q
        if (
            k.dim() != 2
            or k.device.type != "cpu"
            or k.dtype != q.dtype
            or k.dtype not in (torch.float16, torch.float32)
            or not (k.is_contiguous() and v.is_contiguous())
        ):
            return False
        n = k.shape[0]
        if n == 0:
            return True
        G, D = q.shape
        out, lse = _FUSED_CPU(
            q.reshape(1, 1, G, D),
            k.view(1, 1, n, D),
            v.view(1, 1, n, D),
            0.0,
            False,
            scale=self.scale,
        )
        self.merge_partial(out.view(G, D).float(), lse.view(G), n)
        return True

    def result(self) -> tuple[Tensor, Tensor]:
        if self.m is None:
            shape = self.qg.shape
            return (
                torch.zeros(shape, dtype=torch.float32, device=self.qg.device),
                torch.full(shape[:-1], -math.inf, dtype=torch.float32, device=self.qg.device),
            )
        out = self.acc / self.l.unsqueeze(-1)
        lse = self.m + torch.log(self.l)
        return out, lse


def grouped_partial_attention(
    q: Tensor, k: Tensor, v: Tensor, scale: float | None = None, block_tokens: int = 1024
) -> tuple[Tensor, Tensor]:
    """Attention of ``F`` groups of queries over ``F`` KV heads in one call (the batched kernel
    of the page readers: every KV head of a layer, or of several layers, at once).

    ``q [F, G, D]`` (raw, unscaled; the G query heads sharing a KV head), ``k``, ``v``
    ``[F, n, D]`` in any dtype and any strides with a contiguous last dim (e.g. views of a read
    buffer). Returns fp32 ``(out [F, G, D], lse [F, G])``, normalized (merge partial results
    with :func:`merge_partials`); ``n = 0`` gives zeros and ``-inf``. On the CPU, when q and the
    KV share a dtype (fp16 or fp32), PyTorch's fused flash-attention kernel runs every head in
    one call (fp32 accumulation; ``out`` rounded to that dtype); otherwise a blocked tensor-op
    path runs in fp32, ``block_tokens`` KV rows at a time.
    """
    F, G, D = q.shape
    n = k.shape[-2]
    sc = _default_scale(D, scale)
    if n == 0:
        return (
            torch.zeros(F, G, D, dtype=torch.float32, device=q.device),
            torch.full((F, G), -math.inf, dtype=torch.float32, device=q.device),
        )
    if (
        _FUSED_CPU is not None
        and k.device.type == "cpu"
        and q.dtype == k.dtype == v.dtype
        and k.dtype in (torch.float16, torch.float32)
        and k.stride(-1) == 1
        and v.stride(-1) == 1
    ):
        out, lse = _FUSED_CPU(
            q.contiguous().unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0), 0.0, False, scale=sc
        )[:2]
        return out[0].float(), lse[0].float()
    qf = q.float() * sc
    bt = max(1, int(block_tokens))
    blocks = [(a, min(n, a + bt)) for a in range(0, n, bt)]

    def fp32(x: Tensor) -> Tensor:
        return x if x.dtype == torch.float32 else x.float()

    if len(blocks) == 1:
        s = torch.bmm(qf, fp32(k).transpose(1, 2))
    else:
        s = torch.cat([torch.bmm(qf, fp32(k[:, a:b]).transpose(1, 2)) for a, b in blocks], dim=2)
    m = s.amax(dim=-1)
    s.sub_(m.unsqueeze(-1)).exp_()
    l = s.sum(dim=-1)
    if len(blocks) == 1:
        o = torch.bmm(s, fp32(v))
    else:
        o = torch.zeros(F, G, D, dtype=torch.float32, device=q.device)
        for a, b in blocks:
            o.baddbmm_(s[:, :, a:b], fp32(v[:, a:b]))
    return o.div_(l.unsqueeze(-1)), m + torch.log(l)


def streamed_attention(
    q: Tensor, pages_iter: Iterable, scale: float | None = None
) -> tuple[Tensor, Tensor]:
    """Online-softmax attention over an iterator of KV pages (or batches of pages).

    Each item is ``(K, V)`` or ``(page_id, K, V)`` (the shape :meth:`KVStore.iter_pages` yields),
    with ``K``, ``V`` ``[Hkv, t, D]`` (``[B, Hkv, t, D]`` for a batched ``q``; ``[t, D]`` for one
    KV head). Only one item is resident at a time, so memory is bounded by the page (batch)
    size. Same result as :func:`partial_attention` on the concatenated KV, up to fp32 rounding.
    """
    batched = q.dim() == 3
    qb = q if batched else q.unsqueeze(0)
    B, Hq, D = qb.shape
    sc = _default_scale(D, scale)
    state: OnlineSoftmax | None = None
    hkv = None
    for item in pages_iter:
        K, V = item[-2], item[-1]
        if K.dim() == 2:
            K, V = K.unsqueeze(0), V.unsqueeze(0)
        if K.dim() == 3:
            K, V = K.unsqueeze(0), V.unsqueeze(0)  # [1 or B, Hkv, t, D]
        if state is None:
            hkv = K.shape[1]
            if Hq % hkv:
                raise ValueError(f"query heads ({Hq}) must be a multiple of KV heads ({hkv})")
            state = OnlineSoftmax(_grouped_query(qb, hkv, sc))
        elif K.shape[1] != hkv:
            raise ValueError(f"pages disagree on the KV head count: {hkv} vs {K.shape[1]}")
        state.update(K, V)
    if state is None:
        out = torch.zeros_like(qb)
        lse = torch.full((B, Hq), -math.inf, dtype=torch.float32, device=q.device)
    else:
        o, lse = state.result()
        out = o.reshape(B, Hq, D).to(q.dtype)
        lse = lse.reshape(B, Hq)
    if batched:
        return out, lse
    return out[0], lse[0]


# ---------------------------------------------------------------------------------------------
# Sparse mode (approximate): read only the top pages by a cheap upper bound of q . k
# ---------------------------------------------------------------------------------------------


def page_key_summary(k: Tensor, page_tokens: int = 16) -> tuple[Tensor, Tensor]:
    """Per-page element-wise min and max of the keys: ``k [..., N, D]`` -> two ``[..., P, D]``
    (``P = ceil(N / page_tokens)``; the last page may be partial). This is the small summary a
    sparse reader keeps in memory (2 * D values per page instead of 2 * page_tokens * D)."""
    N, D = k.shape[-2], k.shape[-1]
    P = -(-N // page_tokens)
    pad = P * page_tokens - N
    kf = k.float()
    if pad:
        last = kf[..., -1:, :].expand(*kf.shape[:-2], pad, D)  # repeat a real key: min/max intact
        kf = torch.cat([kf, last], dim=-2)
    kp = kf.reshape(*kf.shape[:-2], P, page_tokens, D)
    return kp.amin(dim=-2), kp.amax(dim=-2)


def page_scores(q: Tensor, kmin: Tensor, kmax: Tensor) -> Tensor:
    """Upper bound of ``max_{k in page} q . k`` per page: ``sum_d max(q_d kmin_d, q_d kmax_d)``.

    ``q [G, D]`` (the query heads sharing one KV head) or ``[D]``; ``kmin, kmax [P, D]``.
    Returns ``[P]``: the max over the G heads of each head's bound.
    """
    qf = q.float()
    if qf.dim() == 1:
        qf = qf.unsqueeze(0)
    qe = qf.unsqueeze(1)  # [G, 1, D]
    bound = torch.maximum(qe * kmin.float().unsqueeze(0), qe * kmax.float().unsqueeze(0)).sum(-1)
    return bound.amax(dim=0)


def topk_pages(
    q: Tensor, kmin: Tensor, kmax: Tensor, keep_fraction: float, keep_last: bool = True
) -> Tensor:
    """The pages sparse attention reads: the ``ceil(keep_fraction * P)`` pages with the highest
    :func:`page_scores`, plus the last (most recent) page when ``keep_last``; sorted page ids
    (int64). ``keep_fraction >= 1`` returns every page. Approximate by design (module doc)."""
    if not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
    P = kmin.shape[0]
    if P == 0:
        return torch.zeros(0, dtype=torch.long)
    n_keep = min(P, max(1, math.ceil(keep_fraction * P)))
    if n_keep >= P:
        return torch.arange(P, dtype=torch.long)
    scores = page_scores(q, kmin, kmax).cpu()
    if keep_last:
        scores[P - 1] = math.inf
    idx = torch.topk(scores, n_keep).indices
    return torch.sort(idx).values


def sparse_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    keep_fraction: float,
    page_tokens: int = 16,
    scale: float | None = None,
    keep_last: bool = True,
) -> tuple[Tensor, Tensor]:
    """Reference sparse decode attention (approximate), one sequence: ``q [Hq, D]``,
    ``k, v [Hkv, N, D]``. Per KV head, reads the pages :func:`topk_pages` picks for that head's
    query group and attends over them only."""
    if q.dim() != 2 or k.dim() != 3:
        raise ValueError("sparse_attention takes q [Hq, D] and k, v [Hkv, N, D]")
    Hq, D = q.shape
    Hkv, N, _ = k.shape
    G = Hq // Hkv
    outs, lses = [], []
    for h in range(Hkv):
        qh = q[h * G : (h + 1) * G]
        kmin, kmax = page_key_summary(k[h], page_tokens)
        pages = topk_pages(qh, kmin, kmax, keep_fraction, keep_last)
        tok = (pages.unsqueeze(1) * page_tokens + torch.arange(page_tokens)).reshape(-1)
        tok = tok[tok < N].to(k.device)
        o, lse = partial_attention(qh, k[h, tok].unsqueeze(0), v[h, tok].unsqueeze(0), scale)
        outs.append(o)
        lses.append(lse)
    return torch.cat(outs), torch.cat(lses)


def reference_attention(q: Tensor, k: Tensor, v: Tensor, scale: float | None = None) -> Tensor:
    """``torch.nn.functional.scaled_dot_product_attention`` on the same layout (fp32, the KV
    heads repeated for grouped-query attention): the ground truth the tests compare with."""
    qb, kb, vb, unbatched = _as_batched(q, k, v)
    B, Hq, D = qb.shape
    Hkv, N = kb.shape[1], kb.shape[2]
    if N == 0:
        out = torch.zeros_like(qb)
    else:
        G = Hq // Hkv
        kr = kb.float().expand(B, -1, -1, -1).repeat_interleave(G, dim=1)
        vr = vb.float().expand(B, -1, -1, -1).repeat_interleave(G, dim=1)
        out = (
            torch.nn.functional.scaled_dot_product_attention(
                qb.float().unsqueeze(2), kr, vr, scale=scale
            )
            .squeeze(2)
            .to(q.dtype)
        )
    return out[0] if unbatched else out
