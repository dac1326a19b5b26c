"""Host baseline: the KV pages cross the link to the host, then attention runs on the host's
device (CUDA when available, else the CPU). Also the split-KV (merged) path: part of the KV in
a fast tier on the host, the rest in storage (read over the link here, or attended inside the
drive by an :class:`devices.worker.InStorageWorker`), the partial results merged exactly with
:func:`devices.attention.merge_partials`.

Bytes on the link (``link``, a :class:`devices.links.Link`): :meth:`HostAttention.attend` moves
exactly the KV of the sequence, ``2 * n_tokens * Hkv * D * elem`` per layer (the valid tokens of
every page, the last page possibly partial), and nothing else: q and the output stay on the host.
:meth:`HostAttention.decode_step` first writes the new token to storage, which crosses the link
too (``2 * L * Hkv * D * elem``, the k and v of one token), then reads every layer's KV, the new
token included. The in-storage path counts the same k and v (they are part of q, k, v, o).
"""

from __future__ import annotations

import math

import torch

from devices.attention import grouped_partial_attention, merge_partials, partial_attention
from devices.worker import (
    PagePipeline,
    PageReader,
    PartialResults,
    _Chunk,
    _Unit,
    plan_tasks,
)

__all__ = ["HostAttention", "resolve_device"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: CUDA when available, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class HostAttention:
    """Attention on the host over KV held in a :class:`devices.kvstore.KVStore`.

    Pages are read with the same batched, verified :class:`devices.worker.PageReader` as the
    in-storage worker (crc32 checked on a page's first read, headers on every read) and cross
    ``link`` through a :class:`devices.worker.PagePipeline` (on a paced link the read of the
    next KV head overlaps the link transfer of the previous one: reading storage *is* the
    transfer). All the KV heads of a layer land in one buffer and are computed by one batched
    kernel (:func:`devices.attention.grouped_partial_attention`). ``page_budget=None`` (the
    baseline): a whole layer crosses the link, then the host computes it, so link time and
    compute time add up as in the cost model's ``kv_transfer_time_s + attention``.
    ``page_budget=n``: at most ``n`` pages resident, and the host computes on each chunk (the
    heads of one or more layers, or a slice of a large file) as it arrives (transfer and compute
    overlap).
    """

    def __init__(
        self,
        store,
        link,
        device: str | torch.device = "auto",
        page_budget: int | None = None,
        scale: float | None = None,
        verify_checksums: bool = True,
        block_tokens: int | None = None,
    ):
        self.store = store
        self.link = link
        self.device = resolve_device(device)
        self.page_budget = page_budget
        self.scale = scale
        self.reader = PageReader(store, verify=verify_checksums)
        self.pipeline = PagePipeline(link, page_budget)
        if block_tokens is None:  # CPU: cache-sized blocks; GPU: one block per chunk
            block_tokens = 1024 if self.device.type == "cpu" else 1 << 30
        self.block_tokens = block_tokens

    def close(self) -> None:
        self.pipeline.close()
        self.reader.close()

    # -- geometry ----------------------------------------------------------------------------
    @property
    def num_kv_heads(self) -> int:
        return self.store.num_kv_heads

    def _scale(self, head_dim: int) -> float:
        return 1.0 / math.sqrt(head_dim) if self.scale is None else self.scale

    # -- store -------------------------------------------------------------------------------
    def append(self, seq_id: int, k: torch.Tensor, v: torch.Tensor) -> int:
        """Write token(s) to storage; the k and v cross the link (counted)."""
        self.link.send((k, v))
        dt = self.store.dtype
        return self.store.append(seq_id, k.detach().cpu().to(dt), v.detach().cpu().to(dt))

    def _read_task(self, task):
        return self.reader.read_units(task)

    def _read_into(self, task):
        lay, f, units = task
        npages = sum(u.npages for u in units)
        return _Chunk(None, None, self.reader.read_into(lay, f, units), npages)

    def _to_device(self, k, v):
        if self.device.type == "cpu":
            return k, v
        return k.to(self.device), v.to(self.device)

    # -- attention ---------------------------------------------------------------------------
    def _attend_layers(self, seq_id: int, q: torch.Tensor, layers: list[int]):
        """fp32 ``(out [len(layers), Hq, D], lse [len(layers), Hq])`` on the device.

        Every KV head of a layer is read into one buffer and computed by one batched kernel
        (:func:`devices.attention.grouped_partial_attention`); with a page budget, the chunks
        (all the heads of one or more layers, or a slice of a large file) are computed as they
        arrive."""
        Hq, D = q.shape[-2:]
        Hkv = self.num_kv_heads
        G = Hq // Hkv
        if G * Hkv != Hq:
            raise ValueError(f"query heads ({Hq}) must be a multiple of KV heads ({Hkv})")
        scale = self._scale(D)
        nl = len(layers)
        Q = q.to(self.device).reshape(nl * Hkv, G, D)
        res = PartialResults(nl * Hkv, G, D, self.device)
        n = self.store.num_tokens(seq_id)
        if n:
            n_full, t = divmod(n, self.store.page_tokens)
            full = range(n_full)
            units = [
                _Unit(i * Hkv + h, 0, seq_id, layer, h, full, t, n_full)
                for i, layer in enumerate(layers)
                for h in range(Hkv)
            ]
            bt = self.block_tokens
            if self.page_budget is None:
                # per layer: all its pages cross the link, then the host computes. On a paced
                # link each KV head is a task of its own (the read of the next head overlaps
                # the transfer of the previous one); unpaced, the layer is one read.
                per = Hkv if self.pipeline.direct else 1
                for i in range(nl):
                    lay = self.reader.layout(Hkv, n_full, t)
                    try:
                        tasks = [
                            (
                                (lay, h, units[i * Hkv + h : i * Hkv + h + per]),
                                per * units[0].npages,
                            )
                            for h in range(0, Hkv, per)
                        ]
                        for _ in self.pipeline.run(tasks, self._read_into):
                            pass
                        k, v = self._to_device(lay.k, lay.v)
                        out, lse = grouped_partial_attention(
                            Q[i * Hkv : (i + 1) * Hkv], k, v, scale, bt
                        )
                        res.add(i * Hkv, out, lse, True)
                    finally:
                        lay.release()
            else:
                tasks = plan_tasks(units, self.pipeline.chunk_pages())
                for task, chunk in self.pipeline.run(tasks, self._read_task):
                    u = task[0]
                    k, v = self._to_device(chunk.k, chunk.v)
                    out, lse = grouped_partial_attention(
                        Q[u.uid : u.uid + len(task)], k, v, scale, bt
                    )
                    res.add(u.uid, out, lse, u.whole)
                res.finish()
        return res.out.reshape(nl, Hq, D), res.lse.reshape(nl, Hq)

    def attend_layer(self, seq_id: int, layer: int, q: torch.Tensor):
        """``q [Hq, D]`` over one layer of the stored sequence -> ``(out, lse)`` on the device
        (out in q's dtype)."""
        out, lse = self._attend_layers(seq_id, q.unsqueeze(0), [layer])
        return out[0].to(q.dtype), lse[0]

    def attend(self, seq_id: int, q: torch.Tensor, return_lse: bool = False):
        """Every layer: ``q [L, Hq, D]`` -> ``out [L, Hq, D]`` (and ``lse [L, Hq]``), on
        ``q``'s device. Moves exactly the sequence's KV bytes across the link."""
        out, lse = self._attend_layers(seq_id, q, list(range(q.shape[0])))
        out = out.to(device=q.device, dtype=q.dtype)
        return (out, lse.to(q.device)) if return_lse else out

    def decode_step(self, seq_id: int, q, k_new, v_new, return_lse: bool = False):
        """Same contract as :meth:`InStorageWorker.decode_step`: append the new token (its k, v
        cross the link to storage), then attend every layer over the whole KV (read back over
        the link)."""
        self.append(seq_id, k_new, v_new)
        return self.attend(seq_id, q, return_lse=return_lse)

    def attend_fast(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        """KV already in the fast tier (on the device; no link bytes): ``q [L, Hq, D]``,
        ``k, v [L, Hkv, n, D]`` -> ``(out [L, Hq, D], lse [L, Hq])``."""
        return partial_attention(
            q.to(self.device), k.to(self.device), v.to(self.device), self.scale
        )

    def merged_attend(
        self,
        q: torch.Tensor,
        *,
        fast_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        seq_id: int | None = None,
        worker=None,
        worker_seq_id: int | None = None,
        return_lse: bool = False,
    ):
        """Split-KV decode attention over up to three disjoint pieces of one sequence's KV:

        * ``fast_kv = (k, v)``, ``[L, Hkv, n, D]``: the fast tier (host/GPU memory; no link);
        * ``seq_id``: tokens in this host's store, read over ``self.link`` (host baseline);
        * ``worker, worker_seq_id``: tokens in an in-storage worker's store, attended inside
          the drive; q goes out and ``(out, lse)`` comes back over the worker's external link.

        The partials are merged with :func:`merge_partials`; the result equals attention over
        the concatenated KV (the order of tokens does not matter to attention).
        """
        parts = []
        if fast_kv is not None:
            parts.append(self.attend_fast(q, *fast_kv))
        if seq_id is not None:
            parts.append(self.attend(seq_id, q, return_lse=True))
        if worker is not None:
            if worker_seq_id is None:
                raise ValueError("worker_seq_id is required with worker")
            parts.append(worker.attend_layers(worker_seq_id, q, return_lse=True))
        if not parts:
            raise ValueError("merged_attend needs at least one of fast_kv, seq_id, worker")
        parts = [(o.to(self.device), l.to(self.device)) for o, l in parts]
        out, lse = merge_partials(parts)
        out = out.to(device=q.device, dtype=q.dtype)
        return (out, lse.to(q.device)) if return_lse else out
