"""Paged KV cache in files, with an append path that survives a crash at any point.

Layout under ``root``::

    meta.json                      shape, dtype and page size (checked on every open)
    sync.log                       acknowledged counts: 24-byte records (magic, seq_id, tokens, crc)
    seq_<id>/l<layer>_h<head>.kv   one file per (sequence, layer, kv_head)

A ``.kv`` file is an array of fixed-size slots of ``slot_bytes = 64 + 2 * page_tokens * head_dim
* elem_size``: a 64-byte header (magic ``KVPG``, format version, kind, seq_id, layer, kv_head, page
index, seqno, n_tokens, crc32 over the header and the payload) and the payload, K
``[page_tokens, head_dim]`` then V. Slot ``2 + p`` holds full page ``p``, written once. Slots 0 and
1 are two shadow copies of the partial tail page (shadow paging): every ``append`` writes its full
pages first, then the tail page (with ``page = tokens // page_tokens``, ``n_tokens = tokens %
page_tokens``) as the commit record, always into the slot that does *not* hold the last synced
version, so the version ``sync()`` made durable is never overwritten before a newer one is durable.
``sync()`` fsyncs the data files (and new directories), then appends ``(seq_id, tokens)`` to
``sync.log`` and fsyncs it; only then are the tokens acknowledged.

Recovery on open, per sequence: ``floor`` = the last acknowledged count in ``sync.log``. In each
file the valid tail records (header and crc check) are tried newest seqno first; a record is
accepted when every full page it claims beyond the floor verifies (pages below the floor were
fsynced before the acknowledgement; a record whose full slots lie beyond the end of the file is
rejected). The sequence keeps the smallest accepted count over its files
(never less than the floor), and files that hold more, stale slots or a torn tail are repaired: a
fresh tail record for the recovered count goes into the slot not holding the data it was taken
from, then the file is truncated after its last full page. If acknowledged data is damaged the
sequence is marked damaged: it keeps the acknowledged count, reads of the damaged pages raise
:class:`TornPageError` and appends are refused. Every page read checks header and crc, so a read
never returns a silently wrong page. One writer per root and one thread per instance; other
processes may open it with ``readonly=True`` (no repair) to read what was written before they
opened it (reopen to see later appends).

Only the read path needs torch: the write path takes numpy arrays too (raw int16/uint16 bits for a
bfloat16 store), so a writer process can run without importing torch.
"""

from __future__ import annotations

import json
import os
import pathlib
import struct
import sys
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

HEADER_BYTES = 64
TAIL_SLOTS = 2  # slots 0 and 1: the two shadow copies of the tail page; full page p is slot 2 + p
FORMAT_VERSION = 1

_MAGIC = b"KVPG"
# magic, format version, kind, seq_id, layer, kv_head, page, seqno, n_tokens, crc32
_HEADER = struct.Struct("<4sHHQIIQQII")
_CRC_OFFSET = 44
_KIND_FULL = 0
_KIND_TAIL = 1
_SYNC_MAGIC = b"KVSY"
_SYNC = struct.Struct("<4sQQI")  # magic, seq_id, tokens, crc32 of the first 20 bytes
_SYNC_COMPACT_BYTES = 1 << 20
_META_NAME = "meta.json"
_SYNC_NAME = "sync.log"
_MAX_OPEN_FILES = 512
# dtype name -> (numpy dtype the bytes are handled as, element bytes)
_DTYPES: dict[str, tuple[type[np.generic], int]] = {
    "float16": (np.float16, 2),
    "bfloat16": (np.int16, 2),  # raw bits: numpy has no bfloat16
    "float32": (np.float32, 4),
}


class TornPageError(RuntimeError):
    """A page whose header or checksum does not match what the store expects."""


def _dtype_name(dtype: Any) -> str:
    torch_mod = sys.modules.get("torch")
    if isinstance(dtype, str):
        name = dtype.removeprefix("torch.")
    elif torch_mod is not None and isinstance(dtype, torch_mod.dtype):
        name = str(dtype).removeprefix("torch.")
    else:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = repr(dtype)
    if name not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    return name


def _check_int(field_name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{field_name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _crc(buf: bytearray | memoryview) -> int:
    view = memoryview(buf)
    return zlib.crc32(view[_CRC_OFFSET + 4 :], zlib.crc32(view[:_CRC_OFFSET]))


def _fsync_dir(path: pathlib.Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class _PageFile:
    """In-memory state of one (sequence, layer, kv_head) file."""

    path: pathlib.Path
    layer: int
    kv_head: int
    tail: np.ndarray  # [2, page_tokens, head_dim]: K and V rows of the current tail page
    tail_slot: int | None = None  # slot holding the newest on-disk copy of the tail page
    synced_slot: int | None = None  # tail slot made durable by the last sync (never overwritten)
    seqno: int = 0
    dirty: bool = False


@dataclass
class _Seq:
    seq_id: int
    files: list[_PageFile]
    n_tokens: int = 0
    synced_tokens: int = 0
    new_dir: bool = False
    damaged: str | None = None
    report: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Record:
    seqno: int
    slot: int
    page: int
    n_tokens: int


class KVStore:
    """Paged K/V cache of many sequences in files; see the module docstring for the format."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype | str = "float16",
        page_tokens: int = 16,
        *,
        readonly: bool = False,
        write_chunk_bytes: int | None = None,
    ) -> None:
        """Open (creating if needed) the store at ``root`` and recover its sequences.

        ``readonly`` opens without repairing anything (for readers in other processes);
        ``write_chunk_bytes`` splits every write into pieces of that size (crash tests)."""
        self.num_layers = _check_int("num_layers", num_layers, 1)
        self.num_kv_heads = _check_int("num_kv_heads", num_kv_heads, 1)
        self.head_dim = _check_int("head_dim", head_dim, 1)
        self.page_tokens = _check_int("page_tokens", page_tokens, 1)
        if write_chunk_bytes is not None:
            write_chunk_bytes = _check_int("write_chunk_bytes", write_chunk_bytes, 1)
        self.dtype_name = _dtype_name(dtype)
        self._np_dtype, self._elem_bytes = _DTYPES[self.dtype_name]
        self.readonly = bool(readonly)
        self.root = pathlib.Path(root)
        self._write_chunk_bytes = write_chunk_bytes
        self._page_elems = self.page_tokens * self.head_dim
        self.slot_bytes = HEADER_BYTES + 2 * self._page_elems * self._elem_bytes
        self._fds: OrderedDict[pathlib.Path, int] = OrderedDict()
        self._seqs: dict[int, _Seq] = {}
        self._root_dirty = False
        self._sync_fd: int | None = None
        self._closed = False
        try:
            self._open_meta()
            floors = self._recover_sync_log()
            self.recovery_report: dict[int, dict[str, Any]] = {}
            acknowledged = {seq_id for seq_id, n in floors.items() if n}
            seq_ids = sorted(set(self._scan_sequences()) | acknowledged)
            self._root_dirty = not self.readonly and bool(seq_ids)  # their entries: fsync once
            for seq_id in seq_ids:
                st = self._recover_seq(seq_id, floors.get(seq_id, 0))
                self._seqs[seq_id] = st
                self.recovery_report[seq_id] = st.report
        except BaseException:
            self.close()
            raise

    # ----------------------------------------------------------------- public API

    @property
    def dtype(self) -> torch.dtype:
        import torch

        return getattr(torch, self.dtype_name)

    def page_bytes(self) -> int:
        """Bytes of K+V payload of one full page of one (layer, head)."""
        return 2 * self._page_elems * self._elem_bytes

    def path_of(self, seq_id: int, layer: int, kv_head: int) -> pathlib.Path:
        """The file holding the pages of (``seq_id``, ``layer``, ``kv_head``)."""
        seq_id = _check_int("seq_id", seq_id, 0)
        self._check_layer_head(layer, kv_head)
        return self.root / f"seq_{seq_id}" / f"l{layer}_h{kv_head}.kv"

    def sequences(self) -> list[int]:
        return sorted(self._seqs)

    def num_tokens(self, seq_id: int) -> int:
        """Tokens of ``seq_id`` (0 for a sequence never appended to)."""
        st = self._seqs.get(_check_int("seq_id", seq_id, 0))
        return 0 if st is None else st.n_tokens

    def num_pages(self, seq_id: int) -> int:
        return -(-self.num_tokens(seq_id) // self.page_tokens)

    def is_damaged(self, seq_id: int) -> bool:
        """True when recovery found acknowledged data of ``seq_id`` damaged."""
        st = self._seqs.get(_check_int("seq_id", seq_id, 0))
        return st is not None and st.damaged is not None

    def append(self, seq_id: int, k: Any, v: Any) -> int:
        """Append tokens: ``k``, ``v`` are ``[num_layers, num_kv_heads, head_dim]`` (one token) or
        ``[T, num_layers, num_kv_heads, head_dim]`` torch tensors or numpy arrays of the store's
        dtype. Returns the sequence's token count (durable only after :meth:`sync`)."""
        self._check_writable()
        seq_id = _check_int("seq_id", seq_id, 0)
        k_rows = self._rows("k", k)
        v_rows = self._rows("v", v)
        if k_rows.shape != v_rows.shape:
            raise ValueError(
                "k and v must hold the same number of tokens, got "
                f"{k_rows.shape[2]} and {v_rows.shape[2]}"
            )
        st = self._seqs.get(seq_id)
        if st is None:
            st = self._new_seq(seq_id)
        if st.damaged is not None:
            raise TornPageError(f"sequence {seq_id} is damaged, appends refused: {st.damaged}")
        n_new = k_rows.shape[2]
        if n_new == 0:
            return st.n_tokens
        for pf in st.files:
            self._append_file(
                seq_id, pf, k_rows[pf.layer, pf.kv_head], v_rows[pf.layer, pf.kv_head], st.n_tokens
            )
        st.n_tokens += n_new
        return st.n_tokens

    def sync(self, seq_id: int | None = None) -> int:
        """Make everything appended so far durable; return the durable token count of ``seq_id``
        (or the total over all sequences when None). Tokens covered by it are acknowledged."""
        self._check_open()
        if seq_id is None:
            targets = list(self._seqs.values())
        else:
            st = self._seqs.get(_check_int("seq_id", seq_id, 0))
            targets = [] if st is None else [st]
        pending = [
            st
            for st in targets
            if st.damaged is None
            and (st.n_tokens != st.synced_tokens or any(pf.dirty for pf in st.files))
        ]
        if pending:
            self._check_writable()
            for st in pending:
                for pf in st.files:
                    if pf.dirty:
                        os.fsync(self._fd(pf.path))
                if st.new_dir:
                    _fsync_dir(self.root / f"seq_{st.seq_id}")
            if self._root_dirty:
                _fsync_dir(self.root)
                self._root_dirty = False
            log = b"".join(self._sync_record(st.seq_id, st.n_tokens) for st in pending)
            self._write_all(self._sync_log_fd(), log, None)
            os.fsync(self._sync_log_fd())
            for st in pending:
                for pf in st.files:
                    pf.synced_slot = pf.tail_slot
                    pf.dirty = False
                st.new_dir = False
                st.synced_tokens = st.n_tokens
        if seq_id is None:
            return sum(st.synced_tokens for st in self._seqs.values())
        return targets[0].synced_tokens if targets else 0

    def read_pages(
        self, seq_id: int, layer: int, kv_head: int, pages: Sequence[int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V of ``pages`` (default all) concatenated, ``[n_tokens, head_dim]`` each, in the
        store's dtype. Every page is verified; a mismatch raises :class:`TornPageError`."""
        import torch

        ks: list[torch.Tensor] = []
        vs: list[torch.Tensor] = []
        for _, k, v in self.iter_pages(seq_id, layer, kv_head, pages):
            ks.append(k)
            vs.append(v)
        if not ks:
            empty = torch.empty(0, self.head_dim, dtype=self.dtype)
            return empty, empty.clone()
        if len(ks) == 1:
            return ks[0], vs[0]
        return torch.cat(ks), torch.cat(vs)

    def iter_pages(
        self, seq_id: int, layer: int, kv_head: int, pages: Sequence[int] | None = None
    ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """Stream ``(page_id, k [t, head_dim], v [t, head_dim])`` one verified page at a time."""
        self._check_open()
        self.path_of(seq_id, layer, kv_head)  # validates the arguments
        st = self._seqs.get(seq_id)
        n_pages = self.num_pages(seq_id)
        if pages is None:
            page_ids = list(range(n_pages))
        else:
            page_ids = [int(p) for p in pages]
            for p in page_ids:
                if not 0 <= p < n_pages:
                    raise IndexError(
                        f"pages must be in [0, {n_pages}) for sequence {seq_id}, got {p}"
                    )
        if st is None:
            return iter(())
        pf = st.files[layer * self.num_kv_heads + kv_head]
        return self._iter_pages(st, pf, page_ids)

    def close(self) -> None:
        """Close every file; appended but unsynced tokens stay in the OS page cache."""
        self._closed = True
        fds = list(self._fds.values())
        self._fds.clear()
        if self._sync_fd is not None:
            fds.append(self._sync_fd)
            self._sync_fd = None
        for fd in fds:
            os.close(fd)

    def __enter__(self) -> KVStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"KVStore({str(self.root)!r}, num_layers={self.num_layers}, "
            f"num_kv_heads={self.num_kv_heads}, head_dim={self.head_dim}, "
            f"dtype={self.dtype_name}, page_tokens={self.page_tokens})"
        )

    # ----------------------------------------------------------------- checks and conversion

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"store at {self.root} is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self.readonly:
            raise ValueError(f"store at {self.root} was opened with readonly=True")

    def _check_layer_head(self, layer: int, kv_head: int) -> None:
        if (
            isinstance(layer, bool)
            or not isinstance(layer, (int, np.integer))
            or not (0 <= layer < self.num_layers)
        ):
            raise ValueError(f"layer must be an int in [0, {self.num_layers}), got {layer!r}")
        if (
            isinstance(kv_head, bool)
            or not isinstance(kv_head, (int, np.integer))
            or not (0 <= kv_head < self.num_kv_heads)
        ):
            raise ValueError(f"kv_head must be an int in [0, {self.num_kv_heads}), got {kv_head!r}")

    def _rows(self, name: str, x: Any) -> np.ndarray:
        """``x`` as a numpy array ``[num_layers, num_kv_heads, T, head_dim]`` of the store's
        storage dtype."""
        torch_mod = sys.modules.get("torch")
        if torch_mod is not None and isinstance(x, torch_mod.Tensor):
            got = str(x.dtype).removeprefix("torch.")
            if got != self.dtype_name:
                raise ValueError(f"{name} dtype must be {self.dtype_name} (the store's), got {got}")
            t = x.detach().to("cpu")
            if self.dtype_name == "bfloat16":
                t = t.view(torch_mod.int16)
            arr = t.numpy()
        elif isinstance(x, np.ndarray):
            if self.dtype_name == "bfloat16":
                if x.dtype not in (np.int16, np.uint16):
                    raise ValueError(
                        f"{name}: a bfloat16 store takes numpy arrays of raw bits "
                        f"(int16 or uint16), got {x.dtype}"
                    )
                arr = x.view(np.int16)
            elif x.dtype != self._np_dtype:
                raise ValueError(
                    f"{name} dtype must be {self.dtype_name} (the store's), got {x.dtype}"
                )
            else:
                arr = x
        else:
            raise TypeError(
                f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}"
            )
        expected = (self.num_layers, self.num_kv_heads, self.head_dim)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or tuple(arr.shape[1:]) != expected:
            raise ValueError(
                f"{name} must have shape [num_layers, num_kv_heads, head_dim] = "
                f"{list(expected)} or [T, *that], got {list(arr.shape)}"
            )
        return np.ascontiguousarray(arr.transpose(1, 2, 0, 3))

    # ----------------------------------------------------------------- files

    def _fd(self, path: pathlib.Path, create: bool = False) -> int:
        fd = self._fds.get(path)
        if fd is not None:
            self._fds.move_to_end(path)
            return fd
        flags = os.O_RDONLY if self.readonly else os.O_RDWR
        if create:
            flags |= os.O_CREAT
        fd = os.open(path, flags, 0o644)
        self._fds[path] = fd
        if len(self._fds) > _MAX_OPEN_FILES:  # closing keeps written data; sync() reopens
            _, old = self._fds.popitem(last=False)
            os.close(old)
        return fd

    def _write_all(self, fd: int, data: bytes | bytearray, offset: int | None) -> None:
        """Write ``data`` at ``offset`` (append when None), in ``write_chunk_bytes`` pieces."""
        view = memoryview(data)
        chunk = self._write_chunk_bytes or len(view) or 1
        done = 0
        while done < len(view):
            piece = view[done : done + chunk]
            if offset is None:
                done += os.write(fd, piece)
            else:
                done += os.pwrite(fd, piece, offset + done)

    def _pack_slot(
        self, seq_id: int, pf: _PageFile, kind: int, page: int, n_tokens: int, payload: np.ndarray
    ) -> bytearray:
        buf = bytearray(self.slot_bytes)
        pf.seqno += 1
        _HEADER.pack_into(
            buf,
            0,
            _MAGIC,
            FORMAT_VERSION,
            kind,
            seq_id,
            pf.layer,
            pf.kv_head,
            page,
            pf.seqno,
            n_tokens,
            0,
        )
        buf[HEADER_BYTES:] = payload.tobytes()
        struct.pack_into("<I", buf, _CRC_OFFSET, _crc(buf))
        return buf

    def _check_slot(
        self, buf: bytearray, seq_id: int, pf: _PageFile, slot: int, page: int | None
    ) -> tuple[int, int, int] | str:
        """(page, seqno, n_tokens) of a valid slot, or why it is not valid."""
        magic, version, kind, h_seq, h_layer, h_head, h_page, seqno, n_tokens, crc = (
            _HEADER.unpack_from(buf)
        )
        expected_kind = _KIND_TAIL if slot < TAIL_SLOTS else _KIND_FULL
        if magic != _MAGIC or version != FORMAT_VERSION or kind != expected_kind:
            return "bad magic, version or kind"
        if (h_seq, h_layer, h_head) != (seq_id, pf.layer, pf.kv_head):
            return f"header names sequence {h_seq} layer {h_layer} head {h_head}"
        if slot >= TAIL_SLOTS and (h_page != slot - TAIL_SLOTS or n_tokens != self.page_tokens):
            return f"header says page {h_page} with {n_tokens} tokens"
        if slot < TAIL_SLOTS and n_tokens >= self.page_tokens:
            return f"tail header says {n_tokens} tokens"
        if page is not None and h_page != page:
            return f"header says page {h_page}"
        if crc != _crc(buf):
            return "checksum mismatch"
        return h_page, seqno, n_tokens

    def _read_slot(self, fd: int, slot: int) -> bytearray | None:
        buf = bytearray(self.slot_bytes)
        n = os.preadv(fd, [buf], slot * self.slot_bytes)
        return buf if n == self.slot_bytes else None

    def _load_page(self, st: _Seq, pf: _PageFile, page: int) -> tuple[bytearray, int]:
        """The verified slot of ``page`` and the number of its tokens in the sequence."""
        q, t = divmod(st.n_tokens, self.page_tokens)
        if page < q:
            slot, need = TAIL_SLOTS + page, self.page_tokens
        else:
            slot, need = pf.tail_slot, t
        if slot is None:
            raise TornPageError(
                f"{pf.path}: page {page}: no valid copy of the tail page ({st.damaged})"
            )
        try:
            buf = self._read_slot(self._fd(pf.path), slot)
        except FileNotFoundError:
            raise TornPageError(f"{pf.path}: page {page}: file is missing") from None
        if buf is None:
            raise TornPageError(f"{pf.path}: page {page}: file ends inside slot {slot}")
        got = self._check_slot(buf, st.seq_id, pf, slot, page)
        if isinstance(got, str):
            raise TornPageError(f"{pf.path}: page {page} (slot {slot}) is torn: {got}")
        if got[2] < need and slot < TAIL_SLOTS:
            raise TornPageError(
                f"{pf.path}: page {page} (slot {slot}) holds {got[2]} tokens, {need} expected"
            )
        return buf, need

    def _iter_pages(
        self, st: _Seq, pf: _PageFile, page_ids: list[int]
    ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        import torch

        dtype = self.dtype
        v_offset = HEADER_BYTES + self._page_elems * self._elem_bytes
        for page in page_ids:
            buf, t = self._load_page(st, pf, page)
            count = t * self.head_dim
            k = torch.frombuffer(buf, dtype=dtype, count=count, offset=HEADER_BYTES)
            v = torch.frombuffer(buf, dtype=dtype, count=count, offset=v_offset)
            yield page, k.view(t, self.head_dim), v.view(t, self.head_dim)

    # ----------------------------------------------------------------- append

    def _new_page_file(self, seq_id: int, layer: int, kv_head: int) -> _PageFile:
        tail = np.zeros((2, self.page_tokens, self.head_dim), dtype=self._np_dtype)
        return _PageFile(self.path_of(seq_id, layer, kv_head), layer, kv_head, tail)

    def _new_seq(self, seq_id: int) -> _Seq:
        seq_dir = self.root / f"seq_{seq_id}"
        seq_dir.mkdir(exist_ok=True)
        self._root_dirty = True
        files = [
            self._new_page_file(seq_id, layer, head)
            for layer in range(self.num_layers)
            for head in range(self.num_kv_heads)
        ]
        st = _Seq(seq_id, files, new_dir=True)
        self._seqs[seq_id] = st
        return st

    def _append_file(
        self, seq_id: int, pf: _PageFile, k_rows: np.ndarray, v_rows: np.ndarray, n_before: int
    ) -> None:
        P = self.page_tokens
        fd = self._fd(pf.path, create=True)
        n, i, total = n_before, 0, len(k_rows)
        full = bytearray()
        first_full: int | None = None
        while i < total:
            pos = n % P
            take = min(P - pos, total - i)
            pf.tail[0, pos : pos + take] = k_rows[i : i + take]
            pf.tail[1, pos : pos + take] = v_rows[i : i + take]
            i += take
            n += take
            if n % P == 0:
                page = n // P - 1
                first_full = page if first_full is None else first_full
                full += self._pack_slot(seq_id, pf, _KIND_FULL, page, P, pf.tail)
                pf.tail[:] = 0
        pf.dirty = True
        if first_full is not None:
            self._write_all(fd, full, (TAIL_SLOTS + first_full) * self.slot_bytes)
        # The commit record: never into the slot holding the last synced version.
        slot = 0 if pf.synced_slot is None else 1 - pf.synced_slot
        record = self._pack_slot(seq_id, pf, _KIND_TAIL, n // P, n % P, pf.tail)
        pf.tail_slot = None  # until the record is fully written
        self._write_all(fd, record, slot * self.slot_bytes)
        pf.tail_slot = slot

    # ----------------------------------------------------------------- metadata and sync log

    def _meta(self) -> dict[str, Any]:
        return {
            "format": "mec-kvstore",
            "version": FORMAT_VERSION,
            "num_layers": self.num_layers,
            "num_kv_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "dtype": self.dtype_name,
            "page_tokens": self.page_tokens,
        }

    def _open_meta(self) -> None:
        meta_path = self.root / _META_NAME
        wanted = self._meta()
        if meta_path.exists():
            found = json.loads(meta_path.read_text())
            for key, value in wanted.items():
                if found.get(key) != value:
                    raise ValueError(
                        f"{key} does not match the store at {self.root}: it holds "
                        f"{found.get(key)!r}, got {value!r}"
                    )
            return
        if self.readonly:
            raise FileNotFoundError(f"no KV store at {self.root} ({_META_NAME} missing)")
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / (_META_NAME + ".tmp")
        with open(tmp, "w") as f:
            json.dump(wanted, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, meta_path)
        _fsync_dir(self.root)

    def _sync_record(self, seq_id: int, n_tokens: int) -> bytes:
        head = struct.pack("<4sQQ", _SYNC_MAGIC, seq_id, n_tokens)
        return head + struct.pack("<I", zlib.crc32(head))

    def _sync_log_fd(self) -> int:
        if self._sync_fd is None:
            self._sync_fd = os.open(
                self.root / _SYNC_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
            )
            self._root_dirty = True
        return self._sync_fd

    def _recover_sync_log(self) -> dict[int, int]:
        """Acknowledged token count per sequence; drops a torn last record, compacts."""
        path = self.root / _SYNC_NAME
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return {}
        floors: dict[int, int] = {}
        valid_end = 0
        for off in range(0, len(data) - _SYNC.size + 1, _SYNC.size):
            magic, seq_id, n_tokens, crc = _SYNC.unpack_from(data, off)
            if magic != _SYNC_MAGIC or crc != zlib.crc32(data[off : off + _SYNC.size - 4]):
                break
            floors[seq_id] = max(floors.get(seq_id, 0), n_tokens)
            valid_end = off + _SYNC.size
        if self.readonly:
            return floors
        if valid_end > _SYNC_COMPACT_BYTES:
            tmp = self.root / (_SYNC_NAME + ".tmp")
            with open(tmp, "wb") as f:
                f.write(b"".join(self._sync_record(s, n) for s, n in sorted(floors.items())))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            _fsync_dir(self.root)
        elif valid_end != len(data):
            os.truncate(path, valid_end)
            fd = os.open(path, os.O_WRONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        return floors

    # ----------------------------------------------------------------- recovery

    def _scan_sequences(self) -> list[int]:
        ids = []
        for entry in self.root.iterdir():
            name = entry.name
            if entry.is_dir() and name.startswith("seq_") and name[4:].isdigit():
                ids.append(int(name[4:]))
        return sorted(ids)

    def _scan_file(
        self, seq_id: int, pf: _PageFile, floor: int, report: dict[str, Any]
    ) -> tuple[int, list[_Record], _Record | None, int]:
        """(tokens this file holds durably, its valid tail records newest first, the record
        that count comes from, file size)."""
        try:
            size = pf.path.stat().st_size
        except FileNotFoundError:
            return 0, [], None, -1
        fd = self._fd(pf.path)
        records: list[_Record] = []
        for slot in range(TAIL_SLOTS):
            if slot * self.slot_bytes >= size:
                continue
            buf = self._read_slot(fd, slot)
            got = "short" if buf is None else self._check_slot(buf, seq_id, pf, slot, None)
            if isinstance(got, str):
                if buf is None or any(buf):  # an all-zero slot was never written
                    report["torn_slots"] += 1
                continue
            records.append(_Record(got[1], slot, got[0], got[2]))
        records.sort(key=lambda r: r.seqno, reverse=True)
        verified: dict[int, bool] = {}
        for rec in records:
            if rec.page and size < (TAIL_SLOTS + rec.page) * self.slot_bytes:
                continue  # full pages it claims are missing (truncated)
            ok = True
            for page in range(floor // self.page_tokens, rec.page):
                if page not in verified:
                    buf = self._read_slot(fd, TAIL_SLOTS + page)
                    verified[page] = buf is not None and not isinstance(
                        self._check_slot(buf, seq_id, pf, TAIL_SLOTS + page, page), str
                    )
                    report["torn_slots"] += not verified[page]
                if not verified[page]:
                    ok = False
                    break
            if ok:
                return rec.page * self.page_tokens + rec.n_tokens, records, rec, size
        return 0, records, None, size

    def _recover_seq(self, seq_id: int, floor: int) -> _Seq:
        P = self.page_tokens
        files = [
            self._new_page_file(seq_id, layer, head)
            for layer in range(self.num_layers)
            for head in range(self.num_kv_heads)
        ]
        st = _Seq(seq_id, files, synced_tokens=floor, new_dir=not self.readonly)
        report: dict[str, Any] = {"acknowledged": floor, "torn_slots": 0, "repaired_files": 0}
        scans = [self._scan_file(seq_id, pf, floor, report) for pf in files]
        held = min(scan[0] for scan in scans)
        st.n_tokens = max(held, floor)
        if held < floor:
            st.damaged = f"acknowledged tokens [{held}, {floor}) are damaged"
        q, t = divmod(st.n_tokens, P)
        for pf, (own, records, src, size) in zip(files, scans, strict=True):
            pf.seqno = max((r.seqno for r in records), default=0)
            # Where the tail page's first t tokens are now: a tail record of page q or full page q.
            if src is not None and src.page == q and own >= st.n_tokens:
                pf.tail_slot = src.slot
            elif src is not None and src.page > q:
                pf.tail_slot = TAIL_SLOTS + q
            else:
                pf.tail_slot = next(
                    (r.slot for r in records if r.page == q and r.n_tokens >= t), None
                )
                if pf.tail_slot is None and any(r.page > q for r in records):
                    pf.tail_slot = TAIL_SLOTS + q
            if st.damaged is not None or self.readonly:
                continue
            if t:  # the tail page's rows, for the next append
                try:
                    buf, _ = self._load_page(st, pf, q)
                except TornPageError as exc:  # verified by the scan: only a concurrent writer
                    st.damaged = str(exc)
                    continue
                payload = np.frombuffer(buf, dtype=self._np_dtype, offset=HEADER_BYTES)
                pf.tail[:, :t] = payload.reshape(2, P, self.head_dim)[:, :t]
            if st.n_tokens == 0 and size <= 0:
                continue
            end = (TAIL_SLOTS + q) * self.slot_bytes
            canonical = (
                src is not None
                and src is records[0]
                and src.page == q
                and src.n_tokens == t
                and (size == end or (q == 0 and size < end))
            )
            if canonical:
                # Durable before the next append may overwrite the other (older) copy.
                os.fsync(self._fd(pf.path))
                pf.synced_slot = pf.tail_slot
            else:
                self._repair_file(st, pf, src, records)
                report["repaired_files"] += 1
        report["tokens"] = st.n_tokens
        report["dropped_tokens"] = max(0, max(scan[0] for scan in scans) - st.n_tokens)
        report["damaged"] = st.damaged
        st.report = report
        return st

    def _repair_file(
        self, st: _Seq, pf: _PageFile, src: _Record | None, records: list[_Record]
    ) -> None:
        """Rewrite the tail record for the recovered count, then drop every slot after it."""
        q, t = divmod(st.n_tokens, self.page_tokens)
        fd = self._fd(pf.path)
        if st.n_tokens == 0:
            os.ftruncate(fd, 0)
            os.fsync(fd)
            pf.tail_slot = pf.synced_slot = None
            return
        if src is not None and src.slot < TAIL_SLOTS:
            slot = 1 - src.slot  # keep the copy the data came from until the new one is durable
        else:
            slot = 1 - records[0].slot if records else 0
        record = self._pack_slot(st.seq_id, pf, _KIND_TAIL, q, t, pf.tail)
        self._write_all(fd, record, slot * self.slot_bytes)
        os.fsync(fd)
        os.ftruncate(fd, (TAIL_SLOTS + q) * self.slot_bytes)
        os.fsync(fd)
        pf.tail_slot = pf.synced_slot = slot
