"""In-storage attention worker: a separate process that owns a KV store and computes attention
next to it (InstInfer's computational storage drive, emulated on a CPU).

The parent (:class:`InStorageWorker`) starts the worker process itself (``python -m
devices.worker``, a fresh interpreter), talks to it over a socket pair and restarts it if it
dies. Two links model where the bytes cross:

* the **external** link (host <-> drive) lives in the parent, which sees every payload it sends
  and receives: per decode step exactly ``q``, the new token's ``k`` and ``v``, and the output
  ``o`` cross it, i.e. ``L * (2 Hq D + 2 Hkv D) * elem`` bytes
  (:attr:`mec_env.models.ModelSpec.qkvo_bytes_per_token`), whatever the context length. The
  log-sum-exp of each head is only needed to merge partial results (split-KV across tiers); it
  crosses the link, and is counted on it, only when the caller asks for it (``return_lse=True``:
  ``4 * L * Hq`` more bytes, fp32). Only tensor payloads are counted: the few dozen bytes of
  message headers (op name, sequence ids, lengths) are not. A request retried after a crash
  crosses (and is counted) again.
* the **internal** link (flash <-> drive engine) lives in the worker: every KV byte the worker
  reads from its store is counted (and paced, when ``internal_gbps`` is set) there; its counters
  come back with :meth:`InStorageWorker.stats`.

Inside the worker a :class:`PagePipeline` streams chunks of pages: a reader thread reads them
(:class:`PageReader`: batched scatter reads, headers checked, crc32 on first read), a link thread
makes each cross the internal link when it is paced (an unpaced link only counts, in the reader),
and the main thread computes on them. The KV heads of a request are not handled one by one: every
(sequence, layer, KV head) file is a read unit, and :func:`plan_tasks` packs consecutive units of
the same shape (all the KV heads of a layer, and the layers of a request, as far as the page
budget allows) into one task: one buffer ``[F, tokens, D]`` filled by scatter reads (one per
file and run of up to 341 pages) and one batched kernel call for all of them
(:func:`devices.attention.grouped_partial_attention`: PyTorch's fused CPU flash-attention kernel
when the query and KV dtypes match). A file larger than a chunk is split over several tasks and
its partial results merged exactly. So flash reads, the link and the engine overlap as in a
drive, the per-(layer, head) Python cost is gone, and at most ``page_budget`` pages are resident
whatever the size of the store on disk; the worker reports the peak number of pages it held and
its peak RSS.

Kernels (``kernel``): ``"native"`` (the default where :mod:`devices.native` compiles) reads
each run of pages with one plain ``pread`` into a buffer laid out as the file is
(:meth:`PageReader.read_slots`) and attends to the pages where they lie (no gather);
``"torch"`` gathers them into K and V tensors for PyTorch's kernel. With the native kernel and
an unpaced internal link, the steady state (every page of a unit verified before) leaves the
pipeline: ``scan_threads`` threads (:class:`ScanPool`) each read a task's pages in pieces of
~256 KB into a buffer that stays in their core's cache and attend to each piece before
reading the next, all in C (:func:`devices.native.scan_files`, headers checked, no GIL), so
both cores copy and compute instead of one reading while the other computes. First reads
(crc32 checked in Python) and paced links keep the pipeline.

Verification: every page header is checked on every read. Full pages (slot ``2 + p``) are
written once and never rewritten while the store is open, so the reader checks a full page's
crc32 only the first time it reads it and then keeps a per-file watermark "pages ``[0, w)``
verified" (:attr:`PageReader.verified`); steady-state decode scans pay nothing for crc32. With
``verify_checksums=True`` (the default) every page is still verified at least once, *before its
data is used*: a page torn on disk (a crash mid-write, a corrupted sector) raises
:class:`devices.kvstore.TornPageError` on its first read and is never marked verified, so it is
caught again on every later read. What this does not catch is a page that was verified and is
corrupted *afterwards* on the same open store (bit rot between two reads); pages read with
``verify_checksums=False`` are not marked verified, and :meth:`InStorageWorker.drop_page_cache` /
:meth:`InStorageWorker.forget_verified` (and any restart) drop the watermarks, so pages re-read
from the device are verified again. The partial tail page, rewritten by every append, is read
through the store's own path and verified on every read. ``stats()["pages_verified"]`` counts the
crc32 checks.

Crash handling: a request that finds the worker dead (broken pipe, end of file, process gone, or
no answer within ``timeout_s``) restarts the worker and is retried once. The store on disk
survives (the KV store's appends are crash-safe); appends carry the sequence length the parent
expects, so a retried append that had already reached the store is not applied twice.

Sparse mode (``keep_fraction < 1``) reads only the top pages of each KV head by a per-page key
summary kept in the worker's memory (:func:`devices.attention.topk_pages`); it is approximate.
"""

from __future__ import annotations

import ctypes
import math
import os
import pathlib
import queue
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
import weakref
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection

import numpy as np
import torch

from devices import native as _native
from devices.attention import (
    grouped_partial_attention,
    page_key_summary,
    topk_pages,
)

__all__ = ["InStorageWorker", "WorkerError", "WorkerCrashed", "read_proc_status"]


class WorkerError(RuntimeError):
    """The worker raised an exception while handling a request (not retried)."""


class WorkerCrashed(RuntimeError):
    """The worker died (or hung) and the retry after a restart failed too."""


# ---------------------------------------------------------------------------------------------
# wire format: tensors travel as numpy arrays (pickled inline, no shared memory)
# ---------------------------------------------------------------------------------------------

_VIEW_AS = {torch.bfloat16: torch.int16}  # numpy has no bfloat16: ship the raw bits


def _pack(t: torch.Tensor) -> tuple[str, np.ndarray]:
    t = t.detach().cpu().contiguous()
    name = str(t.dtype).removeprefix("torch.")
    if t.dtype in _VIEW_AS:
        t = t.view(_VIEW_AS[t.dtype])
    return name, t.numpy()


def _unpack(packed: tuple[str, np.ndarray]) -> torch.Tensor:
    name, arr = packed
    dtype = getattr(torch, name)
    t = torch.from_numpy(arr)
    if dtype in _VIEW_AS:
        t = t.view(dtype)
    return t


def read_proc_status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS / VmHWM (peak RSS) of a process in bytes, from ``/proc/<pid>/status`` (Linux)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    return out


# ---------------------------------------------------------------------------------------------
# fast verified page reads and the read -> link -> compute pipeline (shared with devices.host)
# ---------------------------------------------------------------------------------------------


def _libc_preadv():
    """libc's ``preadv`` through ctypes (it releases the GIL), taking a numpy array of
    ``struct iovec`` built in one vectorized step; None where unavailable (then
    :func:`os.preadv` with memoryviews)."""
    if sys.platform != "linux" or ctypes.sizeof(ctypes.c_void_p) != 8:
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).preadv
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int64]
    fn.restype = ctypes.c_ssize_t
    return fn


_PREADV = _libc_preadv()


class _Unit:
    """One read of one (sequence, layer, KV head) file: the full pages ``pages`` (a ``range``
    or a sorted list of page ids) and, when ``t > 0``, the first ``t`` tokens of the partial
    tail page ``tail_page``. ``uid`` indexes the unit's query group ``[G, D]`` in its ``block``
    of queries; ``whole`` is False for a slice of a file too large for one chunk (its partial
    results are merged)."""

    __slots__ = ("uid", "block", "seq_id", "layer", "head", "pages", "t", "tail_page", "whole")

    def __init__(self, uid, block, seq_id, layer, head, pages, t, tail_page, whole=True):
        self.uid, self.block, self.seq_id, self.layer, self.head = uid, block, seq_id, layer, head
        self.pages, self.t, self.tail_page, self.whole = pages, t, tail_page, whole

    @property
    def npages(self) -> int:
        return len(self.pages) + (1 if self.t else 0)

    def slice(self, pages, t, whole):
        return _Unit(
            self.uid,
            self.block,
            self.seq_id,
            self.layer,
            self.head,
            pages,
            t,
            self.tail_page,
            whole,
        )


def plan_tasks(units, chunk_pages: int | None) -> list:
    """Pack read units into pipeline tasks of at most ``chunk_pages`` pages (``None``: no
    limit): a list of ``(tuple_of_units, npages)``. Consecutive units of one query block with
    consecutive ``uid`` and the same shape (number of full pages, tail tokens) share a task, so
    one read fills one buffer ``[F, tokens, D]`` and one batched kernel computes all of them; a
    unit larger than a chunk is split into slices of ``chunk_pages`` pages (the tail page
    goes with the last one), one task each."""
    limit = chunk_pages if chunk_pages is not None else 1 << 62
    tasks: list = []
    cur: list = []
    n = 0
    for u in units:
        npg = u.npages
        if npg <= limit:
            subs = (u,)
        else:
            nf = len(u.pages)
            subs = []
            for a in range(0, npg, limit):
                b = min(npg, a + limit)
                subs.append(u.slice(u.pages[a : min(b, nf)], u.t if b == npg else 0, False))
        for su in subs:
            npg = su.npages
            if cur:
                last = cur[-1]
                if (
                    su.whole
                    and last.whole
                    and su.block == last.block
                    and su.uid == last.uid + 1
                    and su.t == last.t
                    and len(su.pages) == len(last.pages)
                    and n + npg <= limit
                ):
                    cur.append(su)
                    n += npg
                    continue
                tasks.append((tuple(cur), n))
            cur, n = [su], npg
    if cur:
        tasks.append((tuple(cur), n))
    return tasks


class _BufferPool:
    """Reusable read buffers (uint8 tensors; a fresh multi-MB buffer costs a page fault per
    4 KB). ``get`` hands out the smallest free buffer that fits (at most twice the size asked),
    else a new one rounded up by 1/8; at most ``max_buffers`` free buffers are kept (the
    largest)."""

    def __init__(self, max_buffers: int = 4):
        self._free: list[torch.Tensor] = []
        self._lock = threading.Lock()
        self.max_buffers = max_buffers

    def get(self, size: int) -> torch.Tensor:
        with self._lock:
            fits = [i for i, b in enumerate(self._free) if size <= b.numel() <= 2 * size]
            if fits:  # (by index: == on tensors compares elements)
                return self._free.pop(min(fits, key=lambda i: self._free[i].numel()))
        return torch.empty(max(64, size + size // 8), dtype=torch.uint8)

    def put(self, buf: torch.Tensor) -> None:
        with self._lock:
            self._free.append(buf)
            if len(self._free) > self.max_buffers:
                sizes = [b.numel() for b in self._free]
                self._free.pop(sizes.index(min(sizes)))

    def clear(self) -> None:
        with self._lock:
            self._free.clear()


class _Layout:
    """A read buffer for ``F`` units of ``m`` full pages and ``t`` tail tokens each:
    ``F * m`` page headers, then K ``[F, m * P + t, D]``, then V, each region contiguous
    (``k``, ``v``: tensor views of it in the store's dtype; ``iov``: the ``struct iovec``
    array ``[F, m, 3, 2]`` scattering each page's header, K and V there). The views and the
    iovecs are built once per buffer and shape, and cached on the (pooled) buffer."""

    __slots__ = (
        "F",
        "m",
        "t",
        "rows",
        "hdr_off",
        "k_off",
        "v_off",
        "buf",
        "np",
        "addr",
        "k",
        "v",
        "iov",
        "_pool",
    )

    def __init__(self, reader: PageReader, F: int, m: int, t: int, pooled: bool = True):
        self.F, self.m, self.t = F, m, t
        P = reader.pt
        self.rows = rows = m * P + t
        rb = reader.D * reader.elem
        self.hdr_off = 0
        self.k_off = -(-F * m * reader.hdr // 64) * 64
        self.v_off = self.k_off + F * rows * rb
        size = self.v_off + F * rows * rb
        self._pool = reader.pool if pooled else None
        self.buf = buf = (
            reader.pool.get(size) if pooled else torch.empty(max(64, size), dtype=torch.uint8)
        )
        cache = getattr(buf, "_views", None)
        if cache is None:
            cache = buf._views = {}
        views = cache.get((F, m, t))
        if views is None:
            addr = buf.data_ptr()
            shape = (F, rows, reader.D)
            k = buf[self.k_off : self.v_off].view(reader.dtype).view(shape)
            v = buf[self.v_off : size].view(reader.dtype).view(shape)
            iov = np.empty((F, m, 3, 2), dtype=np.uint64)
            if m:
                f = np.arange(F, dtype=np.uint64)[:, None]
                x = np.arange(m, dtype=np.uint64)[None, :]
                iov[:, :, 0, 0] = addr + self.hdr_off + (f * m + x) * reader.hdr
                iov[:, :, 0, 1] = reader.hdr
                kpos = (f * rows + x * P) * rb
                iov[:, :, 1, 0] = addr + self.k_off + kpos
                iov[:, :, 1, 1] = reader.kv_bytes
                iov[:, :, 2, 0] = addr + self.v_off + kpos
                iov[:, :, 2, 1] = reader.kv_bytes
            if len(cache) >= 8:
                cache.clear()
            views = cache[(F, m, t)] = (buf.numpy(), addr, k, v, iov)
        self.np, self.addr, self.k, self.v, self.iov = views

    def release(self) -> None:
        self.k = self.v = self.np = self.iov = None
        if self.buf is not None and self._pool is not None:
            self._pool.put(self.buf)
        self.buf = None


class _Chunk:
    """What one pipeline task read: ``k``, ``v`` ``[F, tokens, D]`` (views of a read buffer,
    or None when the data went into a layout the caller owns), holding the buffer until
    :meth:`release`."""

    __slots__ = ("k", "v", "nbytes", "npages", "segs", "ready_at", "_layout")

    def __init__(self, k, v, nbytes, npages, layout=None, segs=None):
        self.k, self.v, self.nbytes, self.npages, self._layout = k, v, nbytes, npages, layout
        self.segs = segs  # (seg_start, k_ptr, v_ptr, rows) of a slot read, else None
        self.ready_at = None  # when the read finished (perf_counter), for a paced link

    @property
    def pieces(self) -> list:
        """``[(k [tokens, D], v [tokens, D]), ...]``, one piece per unit."""
        if self.k is None:
            return []
        return [(self.k[f], self.v[f]) for f in range(self.k.shape[0])]

    def release(self) -> None:
        self.k = self.v = self.segs = None
        if self._layout is not None:
            self._layout.release()
        self._layout = None


class _SlotLayout:
    """A read buffer laid out as the files are, for ``F`` units of ``m`` full pages and ``t``
    tail tokens each: slot ``i * m + x`` holds unit ``i``'s ``x``-th full page (64-byte header,
    K, V), then, when ``t > 0``, slot ``F * m + i`` unit ``i``'s tail page. A run of consecutive
    pages is one plain ``pread`` (no scatter), and the KV is used where it lies: ``segs`` are
    the segments of every unit for :func:`devices.native.segment_attention` (``seg_start``,
    K and V addresses, rows: ``P`` per full page, ``t`` for the tail), built once per buffer
    and shape and cached on the (pooled) buffer."""

    __slots__ = ("F", "m", "t", "buf", "np", "segs", "_pool")

    def __init__(self, reader: PageReader, F: int, m: int, t: int):
        self.F, self.m, self.t = F, m, t
        per = m + (1 if t else 0)
        size = F * per * reader.slot
        self._pool = reader.pool
        self.buf = buf = reader.pool.get(size)
        cache = getattr(buf, "_slot_views", None)
        if cache is None:
            cache = buf._slot_views = {}
        views = cache.get((F, m, t))
        if views is None:
            idx = np.empty((F, per), dtype=np.uint64)
            idx[:, :m] = np.arange(F, dtype=np.uint64)[:, None] * m + np.arange(m, dtype=np.uint64)
            if t:
                idx[:, m] = F * m + np.arange(F, dtype=np.uint64)
            k_ptr = (buf.data_ptr() + reader.hdr + idx * reader.slot).ravel()
            rows = np.tile(np.array([reader.pt] * m + ([t] if t else []), dtype=np.int32), F)
            segs = (np.arange(F + 1, dtype=np.int64) * per, k_ptr, k_ptr + reader.kv_bytes, rows)
            if len(cache) >= 8:
                cache.clear()
            views = cache[(F, m, t)] = (buf.numpy(), segs)
        self.np, self.segs = views

    def release(self) -> None:
        self.np = self.segs = None
        if self.buf is not None:
            self._pool.put(self.buf)
        self.buf = None


class PageReader:
    """Batched, verified reads of a :class:`devices.kvstore.KVStore`'s pages.

    ``KVStore.read_pages`` reads and verifies one page per ``pread`` and returns a concatenated
    copy (~20 us per 8 KB page here). This reader reads the file format the store documents
    (slot ``2 + p`` = full page ``p``: a 64-byte header, then K, then V) for several files at
    once (:meth:`read_units`): one scatter ``preadv`` per run of up to 341 consecutive pages of
    a file (1023 iovecs, built with numpy and passed to libc's ``preadv``) makes the kernel's
    copy out of the page cache put the headers, the K rows and the V rows of every file into
    three contiguous regions of one reusable buffer, so the K of ``F`` files comes back as one
    ``[F, tokens, D]`` tensor (zero-copy views) that one batched attention kernel takes as it is.

    Every header is checked, vectorized over the whole read (magic, version, kind, sequence,
    layer, head, page index, token count). Full pages are immutable once written, so a page's
    crc32 (computed exactly as the store does) is checked only the first time this reader
    reads it: a per-file watermark records "pages ``[0, w)`` verified". With ``verify=True``
    every page is verified at least once *before its data is used* (a torn page raises
    :class:`devices.kvstore.TornPageError` on its first read, which never reaches the
    watermark); later scans of verified pages skip the crc (steady-state decode scans pay
    nothing for it). Pages read with ``verify=False`` are not marked verified.
    :meth:`forget_verified` drops the watermarks (e.g. after dropping the page cache, so data
    re-fetched from the device is verified again). :attr:`pages_verified` counts the crc checks.

    The partial last page (a shadow tail slot whose location only the store knows, rewritten
    on every append) is read through the store's own path (``store.read_pages``: header and
    crc checked on every read) and copied after the unit's full pages.
    """

    MAX_IOV = 1023  # IOV_MAX is 1024 on Linux; three iovecs per page
    HDR_CACHE_BYTES = 4 << 20  # expected headers kept for repeated reads (decode steps)

    def __init__(self, store, verify: bool = True, max_open: int = 256, pool_buffers: int = 4):
        from devices import kvstore as kvs

        self.store = store
        self.verify = verify
        self._kvs = kvs
        self.pool = _BufferPool(pool_buffers)
        self._fds: OrderedDict = OrderedDict()
        self._max_open = max_open
        self._fd_lock = threading.Lock()
        self._pins: dict[tuple[int, int, int], int] = {}
        self.slot = store.slot_bytes
        self.hdr = kvs.HEADER_BYTES
        self.pt = store.page_tokens
        self.D = store.head_dim
        self.dtype = store.dtype
        self.elem = torch.empty(0, dtype=self.dtype).element_size()
        self.kv_bytes = self.pt * self.D * self.elem  # K (or V) bytes of one page
        if self.slot != self.hdr + 2 * self.kv_bytes or self.hdr != 64:
            raise RuntimeError("devices.kvstore slot layout changed; update PageReader")
        if kvs._HEADER.size != 48 or kvs._CRC_OFFSET != 44:  # the layout this reader decodes
            raise RuntimeError("devices.kvstore page header layout changed; update PageReader")
        # header words (little-endian u64): 0 magic|version|kind, 1 seq, 2 layer|head<<32,
        # 3 page, 4 seqno, 5 n_tokens|crc<<32
        self._word0 = int.from_bytes(
            kvs._MAGIC + struct.pack("<HH", kvs.FORMAT_VERSION, kvs._KIND_FULL), "little"
        )
        self._hdr_mask = np.array([2**64 - 1] * 4 + [0, 2**32 - 1], dtype=np.uint64)
        self._hdr_cache: dict = {}
        self._hdr_cache_bytes = 0
        self.verified: dict[tuple[int, int, int], int] = {}  # file -> pages [0, w) verified
        self.pages_verified = 0

    def _fd(self, seq_id: int, layer: int, head: int) -> int:
        """The open file of (sequence, layer, head), from a cache of at most ``max_open``
        (least recently used closed first, never one pinned by :meth:`pin_fds`)."""
        key = (seq_id, layer, head)
        with self._fd_lock:
            fd = self._fds.get(key)
            if fd is None:
                fd = os.open(self.store.path_of(seq_id, layer, head), os.O_RDONLY)
                self._fds[key] = fd
                self._trim()
            else:
                self._fds.move_to_end(key)
            return fd

    def _trim(self) -> None:
        """Close the least recently used unpinned files beyond ``max_open`` (lock held)."""
        excess = len(self._fds) - self._max_open
        if excess > 0:
            for old in [k for k in self._fds if not self._pins.get(k)][:excess]:
                os.close(self._fds.pop(old))

    def pin_fds(self, units: Sequence[_Unit]) -> list[int]:
        """The files of ``units``, kept open until :meth:`unpin_fds` (for reads on other
        threads)."""
        fds = []
        for u in units:
            key = (u.seq_id, u.layer, u.head)
            with self._fd_lock:
                self._pins[key] = self._pins.get(key, 0) + 1
            fds.append(self._fd(*key))
        return fds

    def unpin_fds(self, units: Sequence[_Unit]) -> None:
        with self._fd_lock:
            for u in units:
                key = (u.seq_id, u.layer, u.head)
                n = self._pins.get(key, 0) - 1
                if n > 0:
                    self._pins[key] = n
                else:
                    self._pins.pop(key, None)
            self._trim()

    def is_verified(self, units: Sequence[_Unit]) -> bool:
        """Whether every full page of ``units`` has been verified (crc32) by this reader."""
        for u in units:
            if len(u.pages):
                wm = self.verified.get((u.seq_id, u.layer, u.head), 0)
                if (u.pages.stop if isinstance(u.pages, range) else u.pages[-1] + 1) > wm:
                    return False
        return True

    def close(self) -> None:
        with self._fd_lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
            self._pins.clear()
        self.pool.clear()

    def forget_verified(self) -> None:
        """Verify every page again on its next read."""
        self.verified.clear()

    # -- reads -----------------------------------------------------------------------------
    def units(self, seq_id: int, layer: int, head: int, pages: Sequence[int] | None = None):
        """The read unit of ``pages`` (default all) of one file (``uid`` 0)."""
        n_tok = self.store.num_tokens(seq_id)
        n_full, tail = divmod(n_tok, self.pt)
        n_pages = n_full + (1 if tail else 0)
        if pages is None:
            return _Unit(0, 0, seq_id, layer, head, range(n_full), tail, n_full)
        page_ids = sorted({int(p) for p in pages})
        for p in page_ids:
            if not 0 <= p < n_pages:
                raise IndexError(f"pages must be in [0, {n_pages}) for sequence {seq_id}, got {p}")
        full = [p for p in page_ids if p < n_full]
        t = tail if len(full) < len(page_ids) else 0
        return _Unit(0, 0, seq_id, layer, head, full, t, n_full)

    def read(
        self,
        seq_id: int,
        layer: int,
        head: int,
        pages: Sequence[int] | None = None,
        pooled: bool = True,
    ) -> _Chunk:
        """Pages (default all, in order) of one (sequence, layer, KV head): a chunk with
        ``k``, ``v`` ``[1, tokens, D]`` (full pages, then the tail's tokens)."""
        return self.read_units([self.units(seq_id, layer, head, pages)], pooled)

    def layout(self, F: int, m: int, t: int, pooled: bool = True) -> _Layout:
        return _Layout(self, F, m, t, pooled)

    def read_units(self, units: Sequence[_Unit], pooled: bool = True) -> _Chunk:
        """Read units of the same shape (as :func:`plan_tasks` groups them) into one buffer:
        a chunk with ``k``, ``v`` ``[len(units), tokens, D]``."""
        u0 = units[0]
        lay = _Layout(self, len(units), len(u0.pages), u0.t, pooled)
        try:
            nbytes = self.read_into(lay, 0, units)
        except BaseException:
            lay.release()
            raise
        return _Chunk(lay.k, lay.v, nbytes, len(units) * u0.npages, lay)

    def read_slots(self, units: Sequence[_Unit]) -> _Chunk:
        """Read units of the same shape into one buffer laid out as the files are
        (:class:`_SlotLayout`: one plain ``pread`` per run of consecutive pages, the tail
        slots copied after them), headers checked and pages verified as :meth:`read_units`
        does: a chunk with ``segs`` (and no ``k``, ``v``) for
        :func:`devices.native.segment_attention`."""
        u0 = units[0]
        F, m, t = len(units), len(u0.pages), u0.t
        lay = _SlotLayout(self, F, m, t)
        slot = self.slot
        try:
            mv = memoryview(lay.np)
            TS = self._kvs.TAIL_SLOTS
            for i, u in enumerate(units):
                if m:
                    fd = self._fd(u.seq_id, u.layer, u.head)
                    for a, b, first in self._runs(u.pages, 1 << 20):
                        o = (i * m + a) * slot
                        got = os.preadv(fd, [mv[o : o + (b - a) * slot]], (TS + first) * slot)
                        if got != (b - a) * slot:
                            raise self._kvs.TornPageError(
                                f"{self.store.path_of(u.seq_id, u.layer, u.head)}: file ends "
                                f"inside pages {first}..{first + b - a - 1}"
                            )
                if t:
                    o = (F * m + i) * slot
                    lay.np[o : o + slot] = self._tail_slot(u, t)[:slot]
            if m:
                w = lay.np[: F * m * slot].view("<u8").reshape(F, m, slot // 8)[:, :, :8]
                self._check_headers(units, m, w)
                if self.verify:

                    def crc_of(i: int, x: int) -> int:
                        o = (i * m + x) * slot
                        return zlib.crc32(mv[o + 48 : o + slot], zlib.crc32(mv[o : o + 44]))

                    self._verify(units, w, crc_of)
        except BaseException:
            lay.release()
            raise
        nbytes = 2 * F * (m * self.kv_bytes + t * self.D * self.elem)
        return _Chunk(None, None, nbytes, F * u0.npages, lay, lay.segs)

    def read_into(self, lay: _Layout, f0: int, units: Sequence[_Unit]) -> int:
        """Read ``units`` (each with ``lay.m`` full pages and ``lay.t`` tail tokens) into rows
        ``f0 ...`` of ``lay``; verify them; return the KV bytes read."""
        F, m, t = len(units), lay.m, lay.t
        P = self.pt
        nbytes = 0
        if m:
            self._read_full(lay, f0, units)
            nbytes += 2 * F * m * self.kv_bytes
        if t:
            rb = self.D * self.elem
            n = t * rb
            for i, u in enumerate(units):
                slot = self._tail_slot(u, t)
                ko = (f0 + i) * lay.rows * rb + m * P * rb
                lay.np[lay.k_off + ko : lay.k_off + ko + n] = slot[self.hdr : self.hdr + n]
                v0 = self.hdr + self.kv_bytes
                lay.np[lay.v_off + ko : lay.v_off + ko + n] = slot[v0 : v0 + n]
            nbytes += 2 * F * t * self.D * self.elem
        return nbytes

    def _tail_slot(self, u: _Unit, t: int) -> np.ndarray:
        """The verified slot (uint8) holding the tail page of ``u``, read through the store's
        own page path (header and crc checked on every read: the tail slots are rewritten by
        every append)."""
        store = self.store
        st = getattr(store, "_seqs", {}).get(u.seq_id)
        if st is None or not hasattr(store, "_load_page"):  # another store: its public API
            k, v = store.read_pages(u.seq_id, u.layer, u.head, [u.tail_page])
            got = k.shape[0]
            buf = np.zeros(self.slot, dtype=np.uint8)
            kv = torch.from_numpy(buf[self.hdr :]).view(self.dtype).view(2, self.pt, self.D)
            kv[0, :got].copy_(k)
            kv[1, :got].copy_(v)
        else:
            store._check_open()
            pf = st.files[u.layer * store.num_kv_heads + u.head]
            raw, got = store._load_page(st, pf, u.tail_page)
            buf = np.frombuffer(raw, dtype=np.uint8)
        if got != t:
            raise RuntimeError(
                f"sequence {u.seq_id} changed during a read: tail page {u.tail_page} holds "
                f"{got} tokens, {t} expected"
            )
        return buf

    @staticmethod
    def _runs(pages, limit: int):
        """``(index_start, index_stop, first_page)`` of runs of consecutive page ids."""
        if isinstance(pages, range) and pages.step == 1:
            return [
                (a, min(len(pages), a + limit), pages.start + a)
                for a in range(0, len(pages), limit)
            ]
        p = np.asarray(pages, dtype=np.int64)
        cuts = [0, *(np.nonzero(np.diff(p) != 1)[0] + 1).tolist(), len(p)]
        runs = []
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            runs.extend((x, min(b, x + limit), int(p[x])) for x in range(a, b, limit))
        return runs

    def _read_full(self, lay: _Layout, f0: int, units: Sequence[_Unit]) -> None:
        F, m = len(units), lay.m
        hb, slot = self.hdr, self.slot
        iov = lay.iov[f0 : f0 + F]
        base = iov.ctypes.data
        per_call = self.MAX_IOV // 3
        TS = self._kvs.TAIL_SLOTS
        mv = None if _PREADV is not None else memoryview(lay.np)
        for i, u in enumerate(units):
            fd = self._fd(u.seq_id, u.layer, u.head)
            for a, b, first in self._runs(u.pages, per_call):
                if _PREADV is not None:
                    got = _PREADV(fd, base + (i * m + a) * 48, 3 * (b - a), (TS + first) * slot)
                    if got < 0:
                        err = ctypes.get_errno()
                        raise OSError(err, os.strerror(err))
                else:
                    rel = iov[i, a:b].reshape(-1, 2) - np.uint64(lay.addr)
                    got = os.preadv(
                        fd,
                        [mv[int(o) : int(o) + int(n)] for o, n in rel.tolist()],
                        (TS + first) * slot,
                    )
                if got != (b - a) * slot:
                    raise self._kvs.TornPageError(
                        f"{self.store.path_of(u.seq_id, u.layer, u.head)}: file ends inside "
                        f"pages {first}..{first + b - a - 1}"
                    )
        # headers, vectorized over the read: words 0-3 and the token count of word 5
        hdr = lay.np[lay.hdr_off + f0 * m * hb : lay.hdr_off + (f0 + F) * m * hb]
        w = hdr.view("<u8").reshape(F, m, 8)
        self._check_headers(units, m, w)
        if self.verify:
            mv = memoryview(lay.np)
            rb = self.D * self.elem
            kb = self.kv_bytes

            def crc_of(i: int, x: int) -> int:
                h = lay.hdr_off + ((f0 + i) * m + x) * hb
                c = zlib.crc32(mv[h + 48 : h + hb], zlib.crc32(mv[h : h + 44]))
                ko = ((f0 + i) * lay.rows + x * self.pt) * rb
                c = zlib.crc32(mv[lay.k_off + ko : lay.k_off + ko + kb], c)
                return zlib.crc32(mv[lay.v_off + ko : lay.v_off + ko + kb], c)

            self._verify(units, w, crc_of)

    def _check_headers(self, units: Sequence[_Unit], m: int, w: np.ndarray) -> None:
        """Check the header words ``w [F, m, 8]`` (uint64) of the full pages just read."""
        exp = self._expected_headers(units, m)
        if not np.array_equal(w[:, :, :6] & self._hdr_mask, exp):
            bad = (w[:, :, :6] & self._hdr_mask) != exp
            i, xx = np.unravel_index(int(np.argmax(bad.any(axis=2))), bad.shape[:2])
            u = units[i]
            raise self._kvs.TornPageError(
                f"{self.store.path_of(u.seq_id, u.layer, u.head)}: page {u.pages[xx]} is torn: "
                "bad header"
            )

    def _expected_headers(self, units: Sequence[_Unit], m: int) -> np.ndarray:
        """Header words 0-5 ``[F, m, 6]`` the pages of ``units`` must hold (seqno and crc
        masked out), cached (decode steps read the same units again and again)."""
        p0 = units[0].pages
        pk = ("r", p0.start, p0.stop) if isinstance(p0, range) else tuple(p0)
        same = all(u.pages == p0 for u in units)
        key = (tuple((u.seq_id, u.layer, u.head) for u in units), pk if same else None, m)
        exp = self._hdr_cache.get(key) if same else None
        if exp is None:
            F = len(units)
            exp = np.zeros((F, m, 6), dtype=np.uint64)
            exp[:, :, 0] = self._word0
            exp[:, :, 1] = np.array([u.seq_id for u in units], dtype=np.uint64)[:, None]
            exp[:, :, 2] = np.array([u.layer | (u.head << 32) for u in units], dtype=np.uint64)[
                :, None
            ]
            if same:
                exp[:, :, 3] = (
                    np.arange(p0.start, p0.stop) if isinstance(p0, range) else np.asarray(p0)
                )[None, :]
            else:
                exp[:, :, 3] = np.array([list(u.pages) for u in units], dtype=np.uint64)
            exp[:, :, 5] = self.pt
            if same:
                if self._hdr_cache_bytes + exp.nbytes > self.HDR_CACHE_BYTES:
                    self._hdr_cache.clear()
                    self._hdr_cache_bytes = 0
                self._hdr_cache[key] = exp
                self._hdr_cache_bytes += exp.nbytes
        return exp

    def _verify(self, units: Sequence[_Unit], w: np.ndarray, crc_of) -> None:
        """crc32 of every page not verified before (``crc_of(i, x)``: the store's crc of unit
        ``i``'s ``x``-th page as read: header bytes [0, 44) and [48, 64), then K, then V),
        against the header words ``w``; advance the files' watermarks."""
        for i, u in enumerate(units):
            key = (u.seq_id, u.layer, u.head)
            wm = self.verified.get(key, 0)
            pages = u.pages
            m = len(pages)
            if isinstance(pages, range) and pages.step == 1:
                todo = range(max(0, wm - pages.start), m)
                new_wm = max(wm, pages.stop) if pages.start <= wm else wm
            else:
                todo = [x for x, p in enumerate(pages) if p >= wm]
                new_wm = wm
                for p in pages:
                    if p == new_wm:
                        new_wm += 1
                    elif p > new_wm:
                        break
            if not len(todo):
                continue
            want = (w[i, :, 5] >> np.uint64(32)).tolist()
            for x in todo:
                if crc_of(i, x) != want[x]:
                    raise self._kvs.TornPageError(
                        f"{self.store.path_of(*key)}: page {pages[x]} is torn: checksum mismatch"
                    )
            self.pages_verified += len(todo)
            self.verified[key] = new_wm


class PartialResults:
    """fp32 ``out [U, G, D]`` and ``lse [U, G]`` of ``U`` query groups, filled task by task:
    a group read whole is written once; the slices of a group split over several tasks are
    merged exactly (the log-sum-exp merge of :func:`devices.attention.merge_partials`) into its
    running result, ``max_pending`` slices at a time, all groups at once (so memory stays
    ``O(U + max_pending)`` whatever the number of slices). Call :meth:`finish` after the last
    slice. Groups never written (empty KV) stay ``(0, -inf)``."""

    def __init__(self, U: int, G: int, D: int, device=None, max_pending: int = 256):
        self.out = torch.zeros(U, G, D, dtype=torch.float32, device=device)
        self.lse = torch.full((U, G), -math.inf, dtype=torch.float32, device=device)
        self.max_pending = max_pending
        self._pending: list = []  # (group, out [G, D], lse [G])

    def add(self, u0: int, out: torch.Tensor, lse: torch.Tensor, whole: bool) -> None:
        if whole:
            self.out[u0 : u0 + out.shape[0]] = out
            self.lse[u0 : u0 + out.shape[0]] = lse
        else:
            self._pending.append((u0, out[0], lse[0]))
            if len(self._pending) >= self.max_pending:
                self._flush()

    def finish(self) -> PartialResults:
        self._flush()
        return self

    def _flush(self) -> None:
        if not self._pending:
            return
        dev = self.out.device
        groups = sorted({u for u, _, _ in self._pending})
        us = torch.tensor(groups, dtype=torch.long, device=dev)
        # the groups' running results (weight 0 while still (0, -inf)) and the new slices
        idx = torch.cat([us, torch.tensor([u for u, _, _ in self._pending], device=dev)])
        outs = torch.cat([self.out[us], torch.stack([o for _, o, _ in self._pending]).float()])
        lses = torch.cat([self.lse[us], torch.stack([l for _, _, l in self._pending]).float()])
        self._pending.clear()
        U, G = self.lse.shape
        m = torch.full((U, G), -math.inf, dtype=torch.float32, device=dev)
        m.scatter_reduce_(0, idx.unsqueeze(1).expand(-1, G), lses, "amax")
        m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        w = torch.exp(lses - m[idx])  # -inf -> 0
        denom = torch.zeros(U, G, dtype=torch.float32, device=dev).index_add_(0, idx, w)
        num = torch.zeros_like(self.out).index_add_(0, idx, w.unsqueeze(-1) * outs)
        d = denom[us]
        self.out[us] = num[us] / d.clamp_min(torch.finfo(torch.float32).tiny).unsqueeze(-1)
        self.lse[us] = m[us] + torch.log(d)


_END = object()


class PagePipeline:
    """Read -> link -> compute pipeline with a bound on the pages resident at once.

    A reader thread reads chunks (``read_fn``, e.g. :meth:`PageReader.read_units`), a link
    thread makes each chunk cross ``link`` (counted and paced), and the caller's thread consumes
    them in order (:meth:`run` is a generator). So the next chunk is read while the previous one
    is in flight and the one before is being computed on, as a drive's flash channels stream
    into its engine. An unpaced link (or none) only counts: the reader counts the bytes and
    hands the chunk straight to the consumer (:attr:`direct`, no link stage, and
    :meth:`chunk_pages` splits the budget in two chunks instead of three). A chunk's pages count
    as resident from the start of its read until the consumer is done with it; the reader waits
    while ``resident + chunk > max_resident_pages``, so the peak (:attr:`peak_pages`) never
    exceeds the budget.
    """

    def __init__(self, link=None, max_resident_pages: int | None = None):
        self.link = link
        # an unpaced link only counts: the reader counts, and hands chunks straight over
        self.direct = link is None or not getattr(link, "paced", True)
        self.budget = max_resident_pages
        self.resident = 0
        self.peak_pages = 0
        self._cv = threading.Condition()
        self._q_read: queue.SimpleQueue = queue.SimpleQueue()
        self._q_send: queue.SimpleQueue = queue.SimpleQueue()
        self._q_out: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def chunk_pages(self) -> int | None:
        """Pages per read that keep every stage busy within the budget (None: no budget)."""
        if self.budget is None:
            return None
        return chunk_pages_for(self.budget, paced=not self.direct)

    def _ensure_threads(self) -> None:
        if not self._threads:
            loops = (self._reader_loop,) if self.direct else (self._reader_loop, self._sender_loop)
            for fn in loops:
                t = threading.Thread(target=fn, daemon=True)
                t.start()
                self._threads.append(t)

    def close(self) -> None:
        if self._threads:
            self._q_read.put(None)
            for t in self._threads:
                t.join(5.0)
            self._threads = []

    def _acquire(self, n: int) -> None:
        with self._cv:
            while self.budget is not None and self.resident > 0 and self.resident + n > self.budget:
                self._cv.wait()
            self.resident += n
            self.peak_pages = max(self.peak_pages, self.resident)

    def _release(self, n: int) -> None:
        with self._cv:
            self.resident -= n
            self._cv.notify_all()

    def _reader_loop(self) -> None:
        out = self._q_out if self.direct else self._q_send
        while True:
            item = self._q_read.get()
            if item is None:
                if not self.direct:
                    self._q_send.put(None)
                return
            if item is _END:
                out.put(_END)
                continue
            task, npages, read_fn = item
            self._acquire(npages)
            try:
                chunk = read_fn(task)
                if self.direct and self.link is not None:
                    self.link.transfer(int(chunk.nbytes))
            except BaseException as e:  # handed to the consumer, which raises it
                self._release(npages)
                out.put((task, 0, e))
            else:
                chunk.ready_at = time.perf_counter()
                out.put((task, npages, chunk))

    def _sender_loop(self) -> None:
        while True:
            item = self._q_send.get()
            if item is None:
                return
            if (
                item is not _END
                and self.link is not None
                and not isinstance(item[2], BaseException)
            ):
                self.link.transfer(int(item[2].nbytes), item[2].ready_at)
            self._q_out.put(item)

    def run(self, tasks, read_fn):
        """Yield ``(task, chunk)`` for ``tasks`` (a list of ``(task, npages)``) in order."""
        self._ensure_threads()
        for task, npages in tasks:
            self._q_read.put((task, npages, read_fn))
        self._q_read.put(_END)
        finished = False
        try:
            while True:
                item = self._q_out.get()
                if item is _END:
                    finished = True
                    return
                task, npages, chunk = item
                if isinstance(chunk, BaseException):
                    raise chunk
                try:
                    yield task, chunk
                finally:
                    chunk.release()
                    self._release(npages)
        finally:
            if not finished:  # drain what is still in flight
                while (item := self._q_out.get()) is not _END:
                    if not isinstance(item[2], BaseException):
                        item[2].release()
                    self._release(item[1])


class ScanPool:
    """Threads that each read *and* attend whole tasks (the native steady-state scan,
    :func:`devices.native.scan_files`), so both cores copy pages out of the page cache and
    compute, instead of one reading while the other computes. Each thread owns one read
    buffer of ``piece_pages`` pages, small enough to stay in its core's cache; so at most
    ``threads * piece_pages`` pages are resident. :meth:`map` yields the results in task
    order."""

    PIECE_BYTES = 256 << 10  # a read piece: stays in a core's L2

    def __init__(self, threads: int, piece_pages: int, slot_bytes: int):
        self.threads = threads
        self.piece_pages = piece_pages
        self.slot_bytes = slot_bytes
        self._q_in: queue.SimpleQueue = queue.SimpleQueue()
        self._q_out: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    @classmethod
    def for_budget(cls, threads: int, page_budget: int, slot_bytes: int) -> ScanPool:
        threads = max(1, min(threads, page_budget))
        piece = max(1, min(page_budget // threads, cls.PIECE_BYTES // slot_bytes))
        return cls(threads, piece, slot_bytes)

    @property
    def resident_pages(self) -> int:
        return self.threads * self.piece_pages

    def _loop(self) -> None:
        buf = torch.empty(self.piece_pages * self.slot_bytes, dtype=torch.uint8)
        while True:
            item = self._q_in.get()
            if item is None:
                return
            i, fn, arg = item
            try:
                r = fn(arg, buf)
            except BaseException as e:  # handed to the consumer, which raises it
                r = e
            self._q_out.put((i, r))

    def map(self, fn, items):
        """Yield ``fn(item, buffer)`` for ``items`` in order (run on the pool's threads)."""
        if not self._threads:
            for _ in range(self.threads):
                t = threading.Thread(target=self._loop, daemon=True)
                t.start()
                self._threads.append(t)
        for i, item in enumerate(items):
            self._q_in.put((i, fn, item))
        done: dict = {}
        nxt = 0
        try:
            while nxt < len(items):
                while nxt not in done:
                    i, r = self._q_out.get()
                    done[i] = r
                r = done.pop(nxt)
                nxt += 1
                if isinstance(r, BaseException):
                    raise r
                yield r
        finally:
            for _ in range(len(items) - nxt - len(done)):  # drain what is still running
                self._q_out.get()

    def close(self) -> None:
        for _ in self._threads:
            self._q_in.put(None)
        for t in self._threads:
            t.join(5.0)
        self._threads = []


def chunk_pages_for(page_budget: int, paced: bool = True) -> int:
    """Pages per read so that three chunks (reading, in flight, computing) fit the budget, or
    two (reading, computing) when the link is unpaced (nothing is ever in flight on it)."""
    return max(1, page_budget // (3 if paced else 2))


# ---------------------------------------------------------------------------------------------
# the worker process
# ---------------------------------------------------------------------------------------------


_CONFIGURABLE = (
    "internal_gbps",
    "internal_latency_s",
    "page_budget",
    "keep_fraction",
    "verify_checksums",
    "block_tokens",
    "kernel",
    "scan_threads",
)
KERNELS = ("auto", "native", "torch")


@dataclass
class WorkerConfig:
    root: str
    num_layers: int
    num_kv_heads: int
    head_dim: int
    dtype: str = "float16"
    page_tokens: int = 16
    internal_gbps: float | None = None
    internal_latency_s: float = 0.0
    page_budget: int = 1024
    num_threads: int = 1
    keep_fraction: float = 1.0
    scale: float | None = None
    sync_appends: bool = False
    verify_checksums: bool = True
    block_tokens: int = 1024
    kernel: str = "auto"
    scan_threads: int = 2


def _check_choices(**kw) -> None:
    """``kernel`` one of :data:`KERNELS`, ``scan_threads`` a whole number >= 0."""
    if "kernel" in kw and kw["kernel"] not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kw['kernel']!r}")
    n = kw.get("scan_threads", 0)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"scan_threads must be a whole number >= 0, got {n!r}")


def _resolve_kernel(kernel: str, dtype: torch.dtype, head_dim: int) -> str:
    """The attention kernel a worker computes with: ``"native"`` (:mod:`devices.native`, on
    pages where the reads put them) or ``"torch"`` (pages gathered into K and V tensors, then
    :func:`devices.attention.grouped_partial_attention`). ``"auto"`` takes native when it
    compiled here and takes the store's dtype and head size; ``"native"`` raises when not."""
    from devices import native

    _check_choices(kernel=kernel)
    if kernel == "torch":
        return "torch"
    why = None
    if dtype not in native.DTYPES:
        why = f"dtype {dtype} not supported"
    elif head_dim > native.MAX_HEAD_DIM:
        why = f"head_dim {head_dim} > {native.MAX_HEAD_DIM}"
    elif not native.available():
        why = native.unavailable_reason()
    if why is None:
        return "native"
    if kernel == "native":
        raise RuntimeError(f"kernel='native' unavailable: {why}")
    return "torch"


class _WorkerServer:
    """Everything that runs inside the worker process."""

    def __init__(self, cfg: WorkerConfig):
        from devices.kvstore import KVStore
        from devices.links import Link

        self.cfg = cfg
        self.store = KVStore(
            cfg.root,
            cfg.num_layers,
            cfg.num_kv_heads,
            cfg.head_dim,
            dtype=getattr(torch, cfg.dtype),
            page_tokens=cfg.page_tokens,
        )
        self._Link = Link
        self.internal = Link("internal", cfg.internal_gbps, cfg.internal_latency_s)
        self.reader = PageReader(self.store, verify=cfg.verify_checksums)
        self.pipeline = PagePipeline(self.internal, cfg.page_budget)
        self.summaries: dict[tuple[int, int, int], tuple[int, torch.Tensor, torch.Tensor]] = {}
        self.kernel = _resolve_kernel(cfg.kernel, self.store.dtype, cfg.head_dim)
        self.scan_pool = self._scan_pool()
        self._reset_counters()

    def _scan_pool(self) -> ScanPool | None:
        if self.kernel != "native" or self.cfg.scan_threads < 1:
            return None
        return ScanPool.for_budget(
            self.cfg.scan_threads, self.cfg.page_budget, self.store.slot_bytes
        )

    def _reset_counters(self) -> None:
        self.pipeline.peak_pages = 0
        self.reader.pages_verified = 0
        self.pages_read = 0
        self.tokens_attended = 0
        self.attend_calls = 0
        self.decode_steps = 0
        self.attend_s = 0.0

    # -- store ------------------------------------------------------------------------------
    def append(self, seq_id: int, k: torch.Tensor, v: torch.Tensor, expect_len: int | None) -> int:
        n = self.store.num_tokens(seq_id)
        t = 1 if k.dim() == 3 else k.shape[0]
        if expect_len is None or n == expect_len:
            n = self.store.append(seq_id, k, v)
            if self.cfg.sync_appends:
                self.store.sync(seq_id)
        elif n != expect_len + t:  # n == expect_len + t: applied before a crash, not again
            raise RuntimeError(
                f"sequence {seq_id}: store holds {n} tokens, the parent expected {expect_len} "
                f"before this append of {t} (tokens lost in a crash before a sync?)"
            )
        return self.store.num_tokens(seq_id)

    def num_tokens(self, seq_ids: Sequence[int]) -> list[int]:
        return [self.store.num_tokens(s) for s in seq_ids]

    # -- reads through the internal link -----------------------------------------------------
    def _read_task(self, task) -> _Chunk:
        chunk = self.reader.read_units(task)
        self.pages_read += chunk.npages
        return chunk

    def _read_slots_task(self, task) -> _Chunk:
        chunk = self.reader.read_slots(task)
        self.pages_read += chunk.npages
        return chunk

    def _scan_task(self, job, buf: torch.Tensor):
        """One task of the steady-state native scan, on a :class:`ScanPool` thread: read the
        task's (verified) full pages in pieces into ``buf`` and attend to them as they come
        (:func:`devices.native.scan_files`), then the tails read beforehand."""
        task, q, scale, tails = job
        reader = self.reader
        fds = reader.pin_fds(task)
        try:
            run_start, run_first, run_pages = [0], [], []
            for u in task:
                for a, b, first in reader._runs(u.pages, 1 << 30):
                    run_first.append(first)
                    run_pages.append(b - a)
                run_start.append(len(run_first))
            try:
                return _native.scan_files(
                    q,
                    np.asarray(fds),
                    np.asarray(run_start),
                    np.asarray(run_first),
                    np.asarray(run_pages),
                    slot_bytes=reader.slot,
                    page_tokens=reader.pt,
                    header_word0=reader._word0,
                    seq=np.array([u.seq_id for u in task], dtype=np.uint64),
                    layerhead=np.array([u.layer | (u.head << 32) for u in task], dtype=np.uint64),
                    tails=tails,
                    buf=buf,
                    dtype=self.store.dtype,
                    scale=scale,
                )
            except _native.ScanError as e:
                u = task[e.unit]
                path = self.store.path_of(u.seq_id, u.layer, u.head)
                if e.code == -6:
                    raise OSError(e.errno, os.strerror(e.errno), str(path)) from None
                what = "file ends inside it" if e.code == -3 else "bad header"
                raise reader._kvs.TornPageError(f"{path}: page {e.page} is torn: {what}") from None
        finally:
            reader.unpin_fds(task)

    def _tails(self, task):
        """The tail pages of ``task``'s units, read (and verified) through the store here,
        for :meth:`_scan_task`: ``(k addresses, v addresses, rows)`` and the slots holding
        them (keep alive)."""
        k_ptr = np.zeros(len(task), dtype=np.uint64)
        rows = np.zeros(len(task), dtype=np.int32)
        slots = []
        for i, u in enumerate(task):
            if u.t:
                slot = np.ascontiguousarray(self.reader._tail_slot(u, u.t))
                slots.append(slot)
                k_ptr[i] = slot.ctypes.data + self.reader.hdr
                rows[i] = u.t
        return (k_ptr, k_ptr + np.uint64(self.reader.kv_bytes) * (rows > 0), rows), slots

    def _summary(self, seq_id: int, layer: int, head: int, n_tokens: int):
        """Per-page min/max keys of one (layer, head), kept in memory, extended lazily (the
        pages read for it cross the internal link too)."""
        pt = self.cfg.page_tokens
        key = (seq_id, layer, head)
        have, kmin, kmax = self.summaries.get(key, (0, None, None))
        if have == n_tokens:
            return kmin, kmax
        p0 = have // pt  # re-summarize from the (possibly partial) last summarized page
        n_full, t = divmod(n_tokens, pt)
        unit = _Unit(0, 0, seq_id, layer, head, range(p0, n_full), t, n_full)
        tasks = plan_tasks([unit], self.pipeline.chunk_pages())
        new_min, new_max = [], []
        for _, chunk in self.pipeline.run(tasks, self._read_task):
            a, b = page_key_summary(chunk.k[0], pt)
            new_min.append(a)
            new_max.append(b)
        if kmin is None:
            kmin, kmax = torch.cat(new_min), torch.cat(new_max)
        else:
            kmin = torch.cat([kmin[:p0], *new_min])
            kmax = torch.cat([kmax[:p0], *new_max])
        self.summaries[key] = (n_tokens, kmin, kmax)
        return kmin, kmax

    def _scan_fast(self, tasks, by_index) -> None:
        """Run verified ``tasks`` on the scan pool; fold their results into ``by_index``."""
        jobs, tail_slots = [], []  # the tails' memory, kept alive until the pool is done
        for task, _ in tasks:
            u = task[0]
            Q, scale, _ = by_index[u.block]
            tails, slots = self._tails(task)
            tail_slots.append(slots)
            jobs.append((task, Q[u.uid : u.uid + len(task)], scale, tails))
        pool = self.scan_pool
        self.pipeline.peak_pages = max(
            self.pipeline.peak_pages, min(pool.resident_pages, sum(n for _, n in tasks))
        )
        page, row = self.reader.kv_bytes, self.reader.D * self.reader.elem
        for (task, n), (out, lse) in zip(tasks, pool.map(self._scan_task, jobs), strict=True):
            u = task[0]
            by_index[u.block][2].add(u.uid, out, lse, u.whole)
            self.pages_read += n
            self.internal.transfer(2 * sum(len(x.pages) * page + x.t * row for x in task))

    def attend_many(self, reqs):
        """Streamed attention of each ``(seq_id, layer, q [Hq, D])`` over what the store holds:
        a list of fp32 ``(out [Hq, D], lse [Hq])``.

        Every (request, KV head) file is one read unit; :func:`plan_tasks` packs consecutive
        units (all KV heads of a layer, and the layers of the requests, as far as the page
        budget allows) into tasks that stream through one pipeline (reads overlap compute),
        each read into one buffer and computed by one batched kernel
        (:func:`devices.attention.grouped_partial_attention`). Files larger than a chunk are
        split and their partial results merged exactly."""
        Hkv = self.cfg.num_kv_heads
        pt = self.cfg.page_tokens
        sparse = self.cfg.keep_fraction < 1.0
        blocks: dict = {}  # (G, D, dtype) -> [index, queries, scale]
        where = []
        units = []
        for seq_id, layer, q in reqs:
            Hq, D = q.shape
            G = Hq // Hkv
            if G * Hkv != Hq:
                raise ValueError(f"query heads ({Hq}) must be a multiple of KV heads ({Hkv})")
            blk = blocks.get((G, D, q.dtype))
            if blk is None:
                scale = 1.0 / math.sqrt(D) if self.cfg.scale is None else self.cfg.scale
                blk = blocks[(G, D, q.dtype)] = [len(blocks), [], scale]
            i = len(blk[1])
            blk[1].append(q)
            where.append((blk, i))
            n = self.store.num_tokens(seq_id)
            if n == 0:
                continue
            n_full, t = divmod(n, pt)
            full = range(n_full)
            for h in range(Hkv):
                pages, tt = full, t
                if sparse:
                    kmin, kmax = self._summary(seq_id, layer, h, n)
                    qg = q[h * G : (h + 1) * G].float() * blk[2]
                    keep = topk_pages(qg, kmin, kmax, self.cfg.keep_fraction).tolist()
                    if len(keep) < n_full + (1 if t else 0):
                        pages = [p for p in keep if p < n_full]
                        tt = t if len(pages) < len(keep) else 0
                units.append(_Unit(i * Hkv + h, blk[0], seq_id, layer, h, pages, tt, n_full))
        by_index = {}
        for (G, D, _), (index, qs, scale) in blocks.items():
            Q = torch.stack(qs).reshape(len(qs) * Hkv, G, D)
            by_index[index] = (Q, scale, PartialResults(len(qs) * Hkv, G, D))
        bt = self.cfg.block_tokens
        native = self.kernel == "native" and all(
            Q.shape[1] <= _native.MAX_GROUP for Q, _, _ in by_index.values()
        )
        if native and self.scan_pool is not None and self.pipeline.direct:
            # steady state: units whose pages are all verified are read and attended on the
            # scan pool's threads (tasks as large as balance allows: the pool's memory is its
            # read pieces, whatever the task size); the others go through the pipeline below
            # (crc32 checked on their first read)
            ok = [not self.reader.verify or self.reader.is_verified((u,)) for u in units]
            fast = [u for u, f in zip(units, ok, strict=True) if f]
            units = [u for u, f in zip(units, ok, strict=True) if not f]
            if fast:
                total = sum(u.npages for u in fast)
                per = max(
                    self.pipeline.chunk_pages() or 1, -(-total // (4 * self.scan_pool.threads))
                )
                self._scan_fast(plan_tasks(fast, per), by_index)
        tasks = plan_tasks(units, self.pipeline.chunk_pages())
        read = self._read_slots_task if native else self._read_task
        dtype = self.store.dtype
        for task, chunk in self.pipeline.run(tasks, read):
            u = task[0]
            Q, scale, res = by_index[u.block]
            q = Q[u.uid : u.uid + len(task)]
            if native:
                out, lse = _native.segment_attention(q, *chunk.segs, dtype, scale)
            else:
                out, lse = grouped_partial_attention(q, chunk.k, chunk.v, scale, bt)
            res.add(u.uid, out, lse, u.whole)
        for _, _, res in by_index.values():
            res.finish()
        self.tokens_attended += sum(len(u.pages) * pt + u.t for u in units)
        results = []
        for blk, i in where:
            res = by_index[blk[0]][2]
            out = res.out[i * Hkv : (i + 1) * Hkv]
            lse = res.lse[i * Hkv : (i + 1) * Hkv]
            results.append((out.reshape(-1, out.shape[-1]), lse.reshape(-1)))
        return results

    # -- requests ----------------------------------------------------------------------------
    def handle(self, op: str, args):
        if op == "decode":  # [(seq, q [L, Hq, D], k, v, expect_len)], want_lse
            items, want_lse = args
            t0 = time.perf_counter()
            qs, lengths = [], []
            for seq_id, qp, kp, vp, expect in items:
                qs.append(_unpack(qp))
                lengths.append(self.append(seq_id, _unpack(kp), _unpack(vp), expect))
            reqs = [
                (item[0], layer, q[layer])
                for item, q in zip(items, qs, strict=True)
                for layer in range(q.shape[0])
            ]
            res = self.attend_many(reqs)
            replies, i = [], 0
            for q, n in zip(qs, lengths, strict=True):
                L = q.shape[0]
                out = torch.stack([r[0] for r in res[i : i + L]]).to(q.dtype)
                lse = _pack(torch.stack([r[1] for r in res[i : i + L]])) if want_lse else None
                replies.append((_pack(out), lse, n))
                i += L
            self.decode_steps += len(items)
            self.attend_s += time.perf_counter() - t0
            return replies
        if op == "attend":  # [(seq, layer | None, q)], want_lse
            items, want_lse = args
            t0 = time.perf_counter()
            qs = [_unpack(qp) for _, _, qp in items]
            reqs, spans = [], []
            for (seq_id, layer, _), q in zip(items, qs, strict=True):
                if layer is None:  # q [L, Hq, D]: every layer
                    spans.append((len(reqs), q.shape[0], True))
                    reqs.extend((seq_id, i, q[i]) for i in range(q.shape[0]))
                else:
                    spans.append((len(reqs), 1, False))
                    reqs.append((seq_id, layer, q))
            res = self.attend_many(reqs)
            replies = []
            for (i, L, stacked), q in zip(spans, qs, strict=True):
                if stacked:
                    o = torch.stack([r[0] for r in res[i : i + L]])
                    lse = torch.stack([r[1] for r in res[i : i + L]])
                else:
                    o, lse = res[i]
                replies.append((_pack(o.to(q.dtype)), _pack(lse) if want_lse else None))
            self.attend_calls += len(items)
            self.attend_s += time.perf_counter() - t0
            return replies
        if op == "append":
            seq_id, kp, vp, expect = args
            return self.append(seq_id, _unpack(kp), _unpack(vp), expect)
        if op == "sync":
            return self.store.sync(args)
        if op == "num_tokens":
            return self.num_tokens(args)
        if op == "sequences":
            return list(self.store.sequences())
        if op == "stats":
            return self.stats()
        if op == "reset_stats":
            self.internal.reset()
            self._reset_counters()
            try:  # "5" resets the peak RSS (VmHWM) to the current RSS (Linux >= 4.0)
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                pass
            return self.stats()
        if op == "configure":
            for key in args:
                if key not in _CONFIGURABLE:
                    raise ValueError(f"cannot configure {key!r}")
            kernel = _resolve_kernel(
                args.get("kernel", self.cfg.kernel), self.store.dtype, self.cfg.head_dim
            )
            for key, value in args.items():
                setattr(self.cfg, key, value)
            self.internal = self._Link(
                "internal", self.cfg.internal_gbps, self.cfg.internal_latency_s
            )
            self.pipeline.close()
            self.pipeline = PagePipeline(self.internal, self.cfg.page_budget)
            self.reader.verify = self.cfg.verify_checksums
            self.kernel = kernel
            if self.scan_pool is not None:
                self.scan_pool.close()
            self.scan_pool = self._scan_pool()
            return asdict(self.cfg)
        if op == "drop_page_cache":  # advise the kernel to drop this store's cached file pages
            self.reader.forget_verified()  # pages re-fetched from the device: verify again
            return self._drop_page_cache()
        if op == "forget_verified":
            self.reader.forget_verified()
            return None
        if op == "ping":
            return os.getpid()
        raise ValueError(f"unknown op {op!r}")

    def _drop_page_cache(self) -> int:
        n = 0
        for seq_id in self.store.sequences():
            for layer in range(self.cfg.num_layers):
                for h in range(self.cfg.num_kv_heads):
                    try:
                        fd = os.open(self.store.path_of(seq_id, layer, h), os.O_RDONLY)
                    except OSError:
                        continue
                    try:
                        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                        n += 1
                    finally:
                        os.close(fd)
        return n

    def stats(self) -> dict:
        proc = read_proc_status()
        return {
            "pid": os.getpid(),
            "internal": self.internal.stats(),
            "peak_pages_resident": self.pipeline.peak_pages,
            "page_budget": self.cfg.page_budget,
            "page_bytes": self.store.page_bytes(),
            "pages_read": self.pages_read,
            "pages_verified": self.reader.pages_verified,
            "files_verified": len(self.reader.verified),
            "tokens_attended": self.tokens_attended,
            "decode_steps": self.decode_steps,
            "attend_calls": self.attend_calls,
            "attend_s": self.attend_s,
            "summary_bytes": sum(
                a.numel() * a.element_size() * 2 for _, a, _ in self.summaries.values()
            ),
            "rss_bytes": proc.get("VmRSS", 0),
            "peak_rss_bytes": proc.get("VmHWM", 0),
            "num_threads": torch.get_num_threads(),
            "kernel": self.kernel,
        }

    def close(self) -> None:
        self.pipeline.close()
        if self.scan_pool is not None:
            self.scan_pool.close()
        self.reader.close()
        try:
            self.store.sync()
        finally:
            self.store.close()


def _worker_main(conn, cfg_dict: dict) -> None:
    """Entry point of the worker process."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent owns Ctrl-C
    cfg = WorkerConfig(**cfg_dict)
    torch.set_num_threads(cfg.num_threads)
    try:
        server = _WorkerServer(cfg)
    except Exception as e:  # report a failed start instead of dying silently
        conn.send(("err", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
        return
    conn.send(("ready", os.getpid()))
    try:
        while True:
            try:
                op, args = conn.recv()
            except (EOFError, OSError):
                break  # the parent is gone
            if op == "stop":
                break
            try:
                result = server.handle(op, args)
            except Exception as e:
                conn.send(("err", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
            else:
                conn.send(("ok", result))
    finally:
        try:
            server.close()
        finally:
            try:
                conn.send(("ok", None))
            except (OSError, ValueError):
                pass


def _child_entry(argv: list[str]) -> None:
    """``python -m devices.worker FD``: the worker process, talking over socket ``FD`` (the
    first message is the configuration)."""
    from multiprocessing.connection import Connection

    conn = Connection(int(argv[1]))
    try:
        cfg = conn.recv()
    except (EOFError, OSError):
        return
    _worker_main(conn, cfg)


# ---------------------------------------------------------------------------------------------
# the parent-side handle
# ---------------------------------------------------------------------------------------------


def _shutdown(proc, conn) -> None:
    """Finalizer: stop a worker process without waiting long (used by stop() and __del__)."""
    try:
        if proc is not None and proc.poll() is None:
            try:
                conn.send(("stop", None))
                if conn.poll(10.0):
                    conn.recv()
            except (OSError, EOFError, ValueError):
                pass
            try:
                proc.wait(5.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5.0)
    finally:
        try:
            conn.close()
        except Exception:
            pass


class InStorageWorker:
    """Parent-side handle of the in-storage attention worker (module doc).

    ``external`` is the host<->drive :class:`devices.links.Link` (made from ``external_gbps`` /
    ``external_latency_s`` when not given; ``None`` bandwidth = count only); the worker makes its
    internal link from ``internal_gbps`` / ``internal_latency_s``. ``page_budget``: most pages
    the worker holds at once (reads of ``page_budget // 3`` pages: one being read, one crossing
    the internal link, one being computed on; ``page_budget // 2`` when the internal link is
    unpaced: nothing is ever in flight on it). ``sync_appends``: sync the store after every
    append (durable against power loss; a killed process loses nothing the store has written
    either way). ``verify_checksums``: check every full page's crc32 before its data is first
    used (once per page: full pages are immutable; module doc) and the tail page's on every
    read (headers are always checked). ``num_threads``: torch threads in the worker (1 by
    default; the page reader runs in one more thread, and a paced internal link in another,
    mostly waiting, one). ``kernel``: ``"native"`` computes on the pages where its plain reads
    put them (:mod:`devices.native`), ``"torch"`` gathers them into K and V tensors for
    PyTorch's kernel, ``"auto"`` (default) takes native when it compiles here
    (``stats()["kernel"]`` says which runs). ``scan_threads``: with the native kernel and an
    unpaced internal link, pages already verified are read and attended by this many threads,
    each reading small pieces into its own cache-sized buffer and attending to them (a
    :class:`ScanPool`; 0: the reader / compute pipeline throughout). Use as a context manager,
    or call :meth:`start` / :meth:`stop`.
    """

    def __init__(
        self,
        root,
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype = torch.float16,
        page_tokens: int = 16,
        *,
        external=None,
        external_gbps: float | None = None,
        external_latency_s: float = 0.0,
        internal_gbps: float | None = None,
        internal_latency_s: float = 0.0,
        page_budget: int = 1024,
        num_threads: int = 1,
        keep_fraction: float = 1.0,
        scale: float | None = None,
        sync_appends: bool = False,
        verify_checksums: bool = True,
        block_tokens: int = 1024,
        kernel: str = "auto",
        scan_threads: int = 2,
        timeout_s: float = 300.0,
        start_timeout_s: float = 120.0,
        autostart: bool = True,
    ):
        from devices.links import Link

        if not 0.0 < keep_fraction <= 1.0:
            raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
        if page_budget < 1:
            raise ValueError(f"page_budget must be >= 1, got {page_budget}")
        _check_choices(kernel=kernel, scan_threads=scan_threads)
        self.config = WorkerConfig(
            root=str(root),
            num_layers=num_layers,
            num_kv_heads=num_kv_heads,
            head_dim=head_dim,
            dtype=str(dtype).removeprefix("torch."),
            page_tokens=page_tokens,
            internal_gbps=internal_gbps,
            internal_latency_s=internal_latency_s,
            page_budget=page_budget,
            num_threads=num_threads,
            keep_fraction=keep_fraction,
            scale=scale,
            sync_appends=sync_appends,
            verify_checksums=verify_checksums,
            block_tokens=block_tokens,
            kernel=kernel,
            scan_threads=scan_threads,
        )
        self.dtype = dtype
        self.external = (
            external
            if external is not None
            else Link("external", external_gbps, external_latency_s)
        )
        self.timeout_s = timeout_s
        self.start_timeout_s = start_timeout_s
        self.restarts = 0
        self._proc = None
        self._conn = None
        self._finalizer = None
        self._lengths: dict[int, int] = {}
        if autostart:
            self.start()

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> InStorageWorker:
        """Start the worker process (``python -m devices.worker``, a fresh interpreter: no fork
        of the parent's state and no re-import of the caller's main module, unlike
        multiprocessing's spawn) and wait until it has opened its store."""
        if self.alive:
            return self
        parent_sock, child_sock = socket.socketpair()
        env = dict(os.environ)
        root = str(pathlib.Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "devices.worker", str(child_sock.fileno())],
                pass_fds=(child_sock.fileno(),),
                env=env,
                stdin=subprocess.DEVNULL,
            )
        finally:
            child_sock.close()
        conn = Connection(parent_sock.detach())
        self._proc, self._conn = proc, conn
        self._finalizer = weakref.finalize(self, _shutdown, proc, conn)
        try:
            conn.send(asdict(self.config))
            kind, payload = self._recv(self.start_timeout_s)
        except Exception:
            self._kill()
            raise
        if kind != "ready":
            self._kill()
            raise WorkerError(f"the worker failed to start: {payload}")
        return self

    def stop(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # runs _shutdown once
        self._proc = self._conn = self._finalizer = None

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10.0)
        self.stop()

    def restart(self) -> None:
        self._kill()
        self.restarts += 1
        self.start()

    def __enter__(self) -> InStorageWorker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self) -> None:
        try:
            self.stop()
        except Exception:
            pass

    # -- transport ---------------------------------------------------------------------------
    def _recv(self, timeout: float):
        deadline = time.monotonic() + timeout
        while True:
            if self._conn.poll(0.5):
                return self._conn.recv()  # EOFError if the worker died
            if self._proc.poll() is not None:
                raise EOFError(f"the worker process is gone (exit code {self._proc.returncode})")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no answer from the worker within {timeout} s")

    def _call(self, op: str, args=None, on_retry=None):
        """Send a request; on a dead or hung worker restart it and retry once."""
        for attempt in (0, 1):
            if not self.alive:
                self.restart()
            try:
                self._conn.send((op, args))
                kind, payload = self._recv(self.timeout_s)
            except (EOFError, OSError, TimeoutError) as e:  # BrokenPipe is an OSError
                if attempt == 1:
                    raise WorkerCrashed(f"the worker died twice on {op!r}: {e}") from e
                self.restart()
                if on_retry is not None:
                    on_retry()
                continue
            if kind == "err":
                raise WorkerError(payload)
            return payload
        raise AssertionError("unreachable")

    # -- store -------------------------------------------------------------------------------
    def _known_lengths(self, seq_ids) -> list[int]:
        missing = sorted({s for s in seq_ids if s not in self._lengths})
        if missing:
            for s, n in zip(missing, self._call("num_tokens", missing), strict=True):
                self._lengths[s] = n
        return [self._lengths[s] for s in seq_ids]

    def append(self, seq_id: int, k: torch.Tensor, v: torch.Tensor) -> int:
        """Append token(s) ``k, v`` (``[L, Hkv, D]`` or ``[T, L, Hkv, D]``) to a sequence; the
        payload crosses (and is counted on) the external link. Returns the new length."""
        (expect,) = self._known_lengths([seq_id])
        payload = (_pack(k.to(self.dtype)), _pack(v.to(self.dtype)))
        self.external.send((k, v))
        n = self._call(
            "append", (seq_id, *payload, expect), on_retry=lambda: self.external.send((k, v))
        )
        self._lengths[seq_id] = n
        return n

    def sync(self, seq_id: int | None = None) -> int:
        return self._call("sync", seq_id)

    def num_tokens(self, seq_id: int) -> int:
        return self._call("num_tokens", [seq_id])[0]

    def sequences(self) -> list[int]:
        return self._call("sequences")

    # -- attention ---------------------------------------------------------------------------
    def attend(self, batch, return_lse: bool = True):
        """Attention over what the store holds, no append. ``batch``: a list of
        ``(seq_id, layer, q [Hq, D])``, or ``(seq_id, None, q [L, Hq, D])`` for every layer.
        q crosses the external link, the output (and lse when ``return_lse``) comes back over it.
        Returns a list of ``(out, lse)`` (``lse`` None unless ``return_lse``)."""
        items = [(s, layer, _pack(q)) for s, layer, q in batch]
        qs = tuple(q for _, _, q in batch)
        self.external.send(qs)
        replies = self._call("attend", (items, return_lse), on_retry=lambda: self.external.send(qs))
        results = []
        for op, lp in replies:
            out = _unpack(op)
            lse = _unpack(lp) if lp is not None else None
            self.external.send(out if lse is None else (out, lse))
            results.append((out, lse))
        return results

    def attend_layers(self, seq_id: int, q: torch.Tensor, return_lse: bool = False):
        """Every layer of one sequence: ``q [L, Hq, D]`` -> ``out [L, Hq, D]`` (and lse)."""
        ((out, lse),) = self.attend([(seq_id, None, q)], return_lse=return_lse)
        return (out, lse) if return_lse else out

    def decode_batch(self, items, return_lse: bool = False):
        """One decode step of several sequences in one round trip. ``items``: a list of
        ``(seq_id, q [L, Hq, D], k_new [L, Hkv, D], v_new [L, Hkv, D])``. The worker appends
        each new token and attends over every layer. Returns a list of ``out [L, Hq, D]`` (or
        ``(out, lse [L, Hq])`` when ``return_lse``)."""
        seq_ids = [it[0] for it in items]
        expects = self._known_lengths(seq_ids)
        if len(set(seq_ids)) != len(seq_ids):
            raise ValueError("decode_batch takes each sequence at most once")
        wire = [
            (s, _pack(q), _pack(k.to(self.dtype)), _pack(v.to(self.dtype)), n)
            for (s, q, k, v), n in zip(items, expects, strict=True)
        ]
        sent = tuple(x for _, q, k, v in items for x in (q, k, v))
        self.external.send(sent)
        replies = self._call(
            "decode", (wire, return_lse), on_retry=lambda: self.external.send(sent)
        )
        results = []
        for s, (op, lp, n) in zip(seq_ids, replies, strict=True):
            self._lengths[s] = n
            out = _unpack(op)
            lse = _unpack(lp) if lp is not None else None
            self.external.send(out if lse is None else (out, lse))
            results.append((out, lse) if return_lse else out)
        return results

    def decode_step(self, seq_id: int, q, k_new, v_new, return_lse: bool = False):
        """One decode step of one sequence: exactly q, k, v out and o back over the external
        link (:attr:`ModelSpec.qkvo_bytes_per_token`); ``return_lse`` adds ``4 * L * Hq``."""
        return self.decode_batch([(seq_id, q, k_new, v_new)], return_lse=return_lse)[0]

    # -- control -----------------------------------------------------------------------------
    def stats(self) -> dict:
        """The worker's counters (internal link, peak pages resident, peak RSS, ...), plus the
        parent's external link and restart count."""
        s = self._call("stats")
        s["external"] = self.external.stats()
        s["restarts"] = self.restarts
        return s

    def reset_stats(self) -> dict:
        """Reset both links' counters, the worker's peaks (including its peak RSS)."""
        self.external.reset()
        return self._call("reset_stats")

    def configure(self, **kwargs) -> dict:
        """Change any of :data:`_CONFIGURABLE` (``internal_gbps``, ``internal_latency_s``,
        ``page_budget``, ``keep_fraction``, ``verify_checksums``, ``block_tokens``, ``kernel``)
        of the running worker (kept across restarts)."""
        for key in kwargs:
            if key not in _CONFIGURABLE:
                raise ValueError(f"cannot configure {key!r}; one of {_CONFIGURABLE}")
        _check_choices(**{k: v for k, v in kwargs.items() if k in ("kernel", "scan_threads")})
        for key, value in kwargs.items():
            setattr(self.config, key, value)
        return self._call("configure", kwargs)

    def drop_page_cache(self) -> int:
        """Ask the kernel to drop the store's cached file pages (cold reads); best effort. The
        worker forgets which pages it verified: pages re-read from the device are verified
        again."""
        return self._call("drop_page_cache")

    def forget_verified(self) -> None:
        """Make the worker verify every full page's crc32 again on its next read (the first
        scan after a start; for benchmarks and tests)."""
        self._call("forget_verified")


if __name__ == "__main__":
    _child_entry(sys.argv)
