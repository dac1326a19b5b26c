"""devices.kvstore: round trips, corruption detection, crash safety under SIGKILL."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from typing import Any

import numpy as np
import pytest
import torch

import devices.kvstore as kvstore_module
from devices.kvstore import HEADER_BYTES, TAIL_SLOTS, KVStore, TornPageError

L, H, D = 2, 2, 64  # GQA-like: 2 layers, 2 KV heads, head_dim 64

# Deterministic content from (sequence, token, layer, head, dim); exact in float16. Shared with
# the crash-test writer, which runs it without torch.
_EXPECTED_SRC = """
def expected(seq, start, count, L, H, D):
    i = np.arange(start, start + count)[:, None, None, None]
    base = (seq * 1009 + i * 37 + np.arange(L)[None, :, None, None] * 101
            + np.arange(H)[None, None, :, None] * 53 + np.arange(D)[None, None, None, :] * 7)
    k = ((base % 2039) - 1019) / 8
    v = (((base * 3 + 11) % 2027) - 1013) / 8
    return k.astype(np.float16), v.astype(np.float16)
"""
_ns: dict[str, Any] = {"np": np}
exec(_EXPECTED_SRC, _ns)
expected = _ns["expected"]


def _random_kv(T: int, dtype: torch.dtype, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(T, L, H, D, generator=g).to(dtype),
        torch.randn(T, L, H, D, generator=g).to(dtype),
    )


def _append_in_chunks(
    store: KVStore, seq_id: int, k: torch.Tensor, v: torch.Tensor, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    i = 0
    while i < len(k):
        step = int(rng.integers(1, 20))
        if step == 1:
            store.append(seq_id, k[i], v[i])  # the one-token [L, H, D] form
        else:
            store.append(seq_id, k[i : i + step], v[i : i + step])
        i = min(i + step, len(k))


def _assert_reads(store: KVStore, seq_id: int, k: torch.Tensor, v: torch.Tensor) -> None:
    T = len(k)
    P = store.page_tokens
    assert store.num_tokens(seq_id) == T
    assert store.num_pages(seq_id) == -(-T // P)
    for layer in range(L):
        for head in range(H):
            rk, rv = store.read_pages(seq_id, layer, head)
            assert rk.dtype == k.dtype and rk.shape == (T, D)
            assert torch.equal(rk, k[:, layer, head]) and torch.equal(rv, v[:, layer, head])
            for page, pk, pv in store.iter_pages(seq_id, layer, head):
                lo, hi = page * P, min(T, page * P + P)
                assert torch.equal(pk, k[lo:hi, layer, head])
                assert torch.equal(pv, v[lo:hi, layer, head])
    last = store.num_pages(seq_id) - 1
    rk, rv = store.read_pages(seq_id, L - 1, H - 1, [last, 0])
    first = k[:P, L - 1, H - 1]
    assert torch.equal(rk, torch.cat([k[last * P :, L - 1, H - 1], first]))
    assert torch.equal(rv[-len(first) :], v[:P, L - 1, H - 1])


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("T", [1, 15, 16, 17, 100])
def test_round_trip_across_page_boundaries_and_reopen(
    tmp_path: pathlib.Path, dtype: torch.dtype, T: int
) -> None:
    k, v = _random_kv(T + 20, dtype, seed=T)
    with KVStore(tmp_path, L, H, D, dtype) as store:
        _append_in_chunks(store, 7, k[:T], v[:T], seed=T)
        _assert_reads(store, 7, k[:T], v[:T])  # before any sync
        assert store.sync(7) == T
    with KVStore(tmp_path, L, H, D, dtype) as store:
        assert store.sequences() == [7]
        _assert_reads(store, 7, k[:T], v[:T])
        _append_in_chunks(store, 7, k[T:], v[T:], seed=T + 1)  # continue after reopen
        _assert_reads(store, 7, k, v)
    with KVStore(tmp_path, L, H, D, dtype, readonly=True) as store:  # unsynced, still there
        _assert_reads(store, 7, k, v)


def test_several_sequences_are_independent(tmp_path: pathlib.Path) -> None:
    data = {s: _random_kv(10 + 7 * s, torch.float16, seed=s) for s in range(4)}
    with KVStore(tmp_path, L, H, D) as store:
        for step in range(40):  # interleaved appends
            for s, (k, v) in data.items():
                if step < len(k):
                    store.append(s, k[step], v[step])
        assert store.sync() == sum(len(k) for k, _ in data.values())
        assert store.sequences() == [0, 1, 2, 3]
    with KVStore(tmp_path, L, H, D) as store:
        for s, (k, v) in data.items():
            _assert_reads(store, s, k, v)
        assert store.num_tokens(99) == 0 and store.num_pages(99) == 0
        empty_k, empty_v = store.read_pages(99, 0, 0)
        assert empty_k.shape == (0, D) and empty_v.shape == (0, D)


def test_numpy_append_matches_torch(tmp_path: pathlib.Path) -> None:
    k, v = expected(3, 0, 40, L, H, D)
    with KVStore(tmp_path / "np", L, H, D, "float16") as a, KVStore(tmp_path / "t", L, H, D) as b:
        a.append(3, k, v)
        b.append(3, torch.from_numpy(k), torch.from_numpy(v))
        for layer in range(L):
            ka, va = a.read_pages(3, layer, 1)
            kb, vb = b.read_pages(3, layer, 1)
            assert torch.equal(ka, kb) and torch.equal(va, vb)
            assert torch.equal(ka, torch.from_numpy(k[:, layer, 1]))
        assert a.path_of(3, 1, 1).read_bytes() == b.path_of(3, 1, 1).read_bytes()
    kb16, vb16 = _random_kv(5, torch.bfloat16, seed=0)
    with KVStore(tmp_path / "bf", L, H, D, torch.bfloat16) as store:
        store.append(0, kb16.view(torch.int16).numpy(), vb16.view(torch.int16).numpy())
        _assert_reads(store, 0, kb16, vb16)


def test_page_layout_and_sizes(tmp_path: pathlib.Path) -> None:
    with KVStore(tmp_path, L, H, D, torch.float16, page_tokens=16) as store:
        assert store.page_bytes() == 2 * 16 * D * 2  # 2 KiB of K + 2 KiB of V at d=64
        assert store.slot_bytes == HEADER_BYTES + store.page_bytes()
        path = store.path_of(5, 1, 0)
        assert path == tmp_path / "seq_5" / "l1_h0.kv"
        k, v = _random_kv(40, torch.float16, seed=1)
        store.append(5, k, v)
        # two tail slots + two full pages; the 8 tail tokens live in a tail slot
        assert path.stat().st_size == (TAIL_SLOTS + 2) * store.slot_bytes
        assert store.num_pages(5) == 3
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["page_tokens"] == 16 and meta["dtype"] == "float16" and meta["head_dim"] == D


def test_iter_pages_streams_one_page_at_a_time(tmp_path: pathlib.Path) -> None:
    k, v = _random_kv(64, torch.float16, seed=2)
    with KVStore(tmp_path, L, H, D) as store:
        store.append(0, k, v)
        pages = store.iter_pages(0, 1, 1)
        page, pk, _ = next(pages)
        assert page == 0 and torch.equal(pk, k[:16, 1, 1])
        _flip(store.path_of(0, 1, 1), (TAIL_SLOTS + 2) * store.slot_bytes + 100)
        page, _, _ = next(pages)  # page 1 is read only now, page 2 is still ahead
        assert page == 1
        with pytest.raises(TornPageError, match=r"l1_h1\.kv: page 2"):
            next(pages)


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("num_layers", {"num_layers": 3}),
        ("num_kv_heads", {"num_kv_heads": 4}),
        ("head_dim", {"head_dim": 128}),
        ("dtype", {"dtype": torch.float32}),
        ("page_tokens", {"page_tokens": 8}),
    ],
)
def test_reopen_with_other_shape_names_the_field(
    tmp_path: pathlib.Path, field: str, kwargs: dict[str, Any]
) -> None:
    KVStore(tmp_path, L, H, D).close()
    args: dict[str, Any] = {"num_layers": L, "num_kv_heads": H, "head_dim": D} | kwargs
    with pytest.raises(ValueError, match=field):
        KVStore(tmp_path, **args)


def test_invalid_arguments(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="num_layers must be an int >= 1, got 0"):
        KVStore(tmp_path, 0, H, D)
    with pytest.raises(ValueError, match="page_tokens"):
        KVStore(tmp_path, L, H, D, page_tokens=-1)
    with pytest.raises(ValueError, match="dtype"):
        KVStore(tmp_path, L, H, D, dtype=torch.int8)
    with pytest.raises(FileNotFoundError):
        KVStore(tmp_path / "nothing", L, H, D, readonly=True)
    store = KVStore(tmp_path, L, H, D)
    k, v = _random_kv(3, torch.float16, seed=0)
    with pytest.raises(ValueError, match=r"k must have shape .*got \[3, 2, 2, 32\]"):
        store.append(0, k[..., :32], v[..., :32])
    with pytest.raises(ValueError, match="v dtype must be float16"):
        store.append(0, k, v.float())
    with pytest.raises(ValueError, match="same number of tokens, got 3 and 2"):
        store.append(0, k, v[:2])
    with pytest.raises(TypeError, match="k must be a torch.Tensor or numpy.ndarray"):
        store.append(0, k.tolist(), v)
    with pytest.raises(ValueError, match="seq_id must be an int >= 0, got -1"):
        store.append(-1, k, v)
    store.append(0, k, v)
    with pytest.raises(ValueError, match="layer must be an int in"):
        store.read_pages(0, L, 0)
    with pytest.raises(ValueError, match="kv_head must be an int in"):
        store.read_pages(0, 0, -1)
    with pytest.raises(IndexError, match="pages must be in"):
        store.read_pages(0, 0, 0, [1])
    store.close()
    with pytest.raises(ValueError, match="closed"):
        store.append(0, k, v)
    with KVStore(tmp_path, L, H, D, readonly=True) as reader:
        with pytest.raises(ValueError, match="readonly"):
            reader.append(0, k, v)


def test_sync_returns_durable_counts(tmp_path: pathlib.Path) -> None:
    with KVStore(tmp_path, L, H, D) as store:
        k, v = _random_kv(30, torch.float16, seed=3)
        assert store.append(1, k[:10], v[:10]) == 10
        assert store.append(2, k[:20], v[:20]) == 20
        assert store.sync(1) == 10
        assert store.sync(9) == 0
        assert store.append(1, k[10:], v[10:]) == 30
        assert store.sync() == 50
        assert store.sync(1) == 30
        assert store.append(1, k[:0], v[:0]) == 30  # zero tokens: nothing to do


# ------------------------------------------------------------------ corruption detection


def _flip(path: pathlib.Path, offset: int, mask: int = 0x5A) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ mask]))


def _check_all_pages(store: KVStore, seq_id: int, k: np.ndarray, v: np.ndarray, P: int) -> int:
    """Every page reads back exactly or raises TornPageError; returns how many raised."""
    torn = 0
    n = store.num_tokens(seq_id)
    for layer in range(store.num_layers):
        for head in range(store.num_kv_heads):
            try:  # the fast path: the whole file at once
                rk, rv = store.read_pages(seq_id, layer, head)
            except TornPageError:
                pass
            else:
                assert np.array_equal(rk.numpy(), k[:n, layer, head])
                assert np.array_equal(rv.numpy(), v[:n, layer, head])
                continue
            for page in range(store.num_pages(seq_id)):
                try:
                    pk, pv = store.read_pages(seq_id, layer, head, [page])
                except TornPageError:
                    torn += 1
                    continue
                lo, hi = page * P, min(n, page * P + P)
                assert np.array_equal(pk.numpy(), k[lo:hi, layer, head])
                assert np.array_equal(pv.numpy(), v[lo:hi, layer, head])
    return torn


def _synced_store(
    root: pathlib.Path, T: int, P: int, Ls: int = 1, Hs: int = 2, Ds: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    k, v = expected(0, 0, T, Ls, Hs, Ds)
    with KVStore(root, Ls, Hs, Ds, "float16", P) as store:
        for i in range(0, T, 3):
            store.append(0, k[i : i + 3], v[i : i + 3])
            if i % 6 == 0:
                store.sync()
        store.sync()
    return k, v


def test_flipped_bytes_are_detected_or_harmless(tmp_path: pathlib.Path) -> None:
    P, T = 4, 23
    k, v = _synced_store(tmp_path, T, P)
    path = tmp_path / "seq_0" / "l0_h1.kv"
    pristine = path.read_bytes()
    rng = np.random.default_rng(0)
    detected = harmless = 0
    for trial in range(300):
        path.write_bytes(pristine)
        for offset in rng.integers(0, len(pristine), size=int(rng.integers(1, 4))):
            _flip(path, int(offset), int(rng.integers(1, 256)))
        with KVStore(tmp_path, 1, 2, 8, "float16", P, readonly=trial % 2 == 0) as store:
            assert store.num_tokens(0) == T  # all acknowledged: never dropped
            torn = _check_all_pages(store, 0, k, v, P)
        detected += torn > 0
        harmless += torn == 0
    assert detected > 200  # most flips land in live pages
    assert harmless > 0  # flips in the stale tail slot change nothing


def test_flips_while_open_are_detected(tmp_path: pathlib.Path) -> None:
    P = 4
    k, v = expected(0, 0, 30, 1, 1, 8)
    with KVStore(tmp_path, 1, 1, 8, "float16", P) as store:
        store.append(0, k, v)
        path = store.path_of(0, 0, 0)
        rng = np.random.default_rng(1)
        for _ in range(100):
            offset = int(rng.integers(0, path.stat().st_size))
            _flip(path, offset)
            page = offset // store.slot_bytes - TAIL_SLOTS
            if page >= 0:
                with pytest.raises(TornPageError, match=rf"page {page}"):
                    store.read_pages(0, 0, 0, [page])
            assert _check_all_pages(store, 0, k, v, P) <= 1
            _flip(path, offset)  # undo
        assert _check_all_pages(store, 0, k, v, P) == 0


def test_truncated_acknowledged_pages_are_detected(tmp_path: pathlib.Path) -> None:
    P, T = 4, 26
    k, v = _synced_store(tmp_path, T, P)
    path = tmp_path / "seq_0" / "l0_h0.kv"
    slot = HEADER_BYTES + 2 * P * 8 * 2
    pristine = path.read_bytes()
    for cut in range(1, len(pristine), 37):
        path.write_bytes(pristine[:cut])
        with KVStore(tmp_path, 1, 2, 8, "float16", P) as store:
            assert store.num_tokens(0) == T
            assert store.is_damaged(0)  # acknowledged pages are gone
            torn = _check_all_pages(store, 0, k, v, P)
            first_lost_page = max(0, cut // slot - TAIL_SLOTS)
            assert torn >= store.num_pages(0) - 1 - first_lost_page  # every lost full page
            with pytest.raises(TornPageError, match="damaged"):
                store.append(0, k[:1], v[:1])


def test_unacknowledged_torn_tail_is_dropped_cleanly(tmp_path: pathlib.Path) -> None:
    P = 4
    k, v = expected(0, 0, 40, 1, 2, 8)
    with KVStore(tmp_path, 1, 2, 8, "float16", P) as store:
        store.append(0, k[:10], v[:10])
        assert store.sync() == 10
        store.append(0, k[10:17], v[10:17])  # fills page 2, page 3 partial; not synced
        slot = store.slot_bytes
    path = tmp_path / "seq_0" / "l0_h1.kv"
    _flip(path, (TAIL_SLOTS + 2) * slot + HEADER_BYTES + 3)  # tear page 2 in one file
    with KVStore(tmp_path, 1, 2, 8, "float16", P) as store:
        report = store.recovery_report[0]
        assert store.num_tokens(0) == 10  # back to the acknowledged state, nothing torn read
        assert report["torn_slots"] == 1 and report["dropped_tokens"] == 7
        assert report["damaged"] is None
        assert _check_all_pages(store, 0, k, v, P) == 0
        store.append(0, k[10:40], v[10:40])  # continues from the recovered tail
        assert store.sync() == 40
    with KVStore(tmp_path, 1, 2, 8, "float16", P) as store:
        assert store.num_tokens(0) == 40
        assert _check_all_pages(store, 0, k, v, P) == 0
        assert path.stat().st_size == (TAIL_SLOTS + 10) * slot


def test_sequences_held_unequally_are_cut_to_the_shortest(tmp_path: pathlib.Path) -> None:
    P = 4
    k, v = expected(0, 0, 13, 1, 2, 8)
    with KVStore(tmp_path, 1, 2, 8, "float16", P) as store:
        store.append(0, k[:5], v[:5])
        store.sync()
        store.append(0, k[5:], v[5:])
    # Emulate a crash between the two files of the last append: file h1 back to 5 tokens.
    src = tmp_path / "seq_0" / "l0_h1.kv"
    with KVStore(tmp_path / "b", 1, 2, 8, "float16", P) as other:
        other.append(0, k[:5], v[:5])
        shutil.copyfile(other.path_of(0, 0, 1), src)
    with KVStore(tmp_path, 1, 2, 8, "float16", P) as store:
        assert store.num_tokens(0) == 5
        assert store.recovery_report[0]["repaired_files"] == 1
        assert _check_all_pages(store, 0, k, v, P) == 0
        store.append(0, k[5:], v[5:])
        assert _check_all_pages(store, 0, k, v, P) == 0


# ------------------------------------------------------------------ crash safety (SIGKILL)

_WRITER = (
    _EXPECTED_SRC
    + r"""
import importlib.util, os, struct, sys, time
import numpy as np
spec = importlib.util.spec_from_file_location("kvstore_standalone", sys.argv[1])
kvstore = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(kvstore)
root, ack_path = sys.argv[2], sys.argv[3]
seed, L, H, D, P, chunk, nseq = (int(x) for x in sys.argv[4:11])
sync_prob = float(sys.argv[11])
rng = np.random.default_rng(seed)
store = kvstore.KVStore(root, L, H, D, "float16", P, write_chunk_bytes=chunk)
ack = os.open(ack_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
assert "torch" not in sys.modules
sys.stdout.write("ready\n")
sys.stdout.flush()
seqs = [s for s in range(nseq) if not store.is_damaged(s)]
deadline = time.monotonic() + 5.0
while time.monotonic() < deadline:
    s = int(rng.choice(seqs))
    n0 = store.num_tokens(s)
    T = int(rng.integers(1, 2 * P + 2) if rng.random() < 0.7 else rng.integers(1, 16 * P))
    k, v = expected(s, n0, T, L, H, D)
    store.append(s, k, v)
    if rng.random() < sync_prob:
        os.write(ack, struct.pack("<QQQ", 0, s, store.num_tokens(s)))  # intent
        n = store.sync(s)
        os.write(ack, struct.pack("<QQQ", 1, s, n))  # acknowledged
        os.fsync(ack)
"""
)

_CL, _CH, _CD, _CP, _CHUNK, _NSEQ = 2, 2, 8, 4, 8, 3


def _run_and_kill(
    root: pathlib.Path,
    ack_path: pathlib.Path,
    seed: int,
    rng: np.random.Generator,
    sync_prob: float = 0.07,
    anywhere_prob: float = 0.2,
) -> None:
    """Start a writer and SIGKILL it at a random point (mostly while it appends and syncs)."""
    args = [
        sys.executable,
        "-c",
        _WRITER,
        kvstore_module.__file__,
        str(root),
        str(ack_path),
        str(seed),
        str(_CL),
        str(_CH),
        str(_CD),
        str(_CP),
        str(_CHUNK),
        str(_NSEQ),
        str(sync_prob),
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if rng.random() < anywhere_prob:  # anywhere, recovery and repair included
            time.sleep(float(rng.uniform(0.02, 0.3)))
        else:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            assert line == "ready\n", proc.communicate()[1]
            time.sleep(float(rng.uniform(0.0, 0.06)))
        proc.send_signal(signal.SIGKILL)
    finally:
        _, err = proc.communicate()
    assert proc.returncode in (-signal.SIGKILL, 0), err


def _acks(ack_path: pathlib.Path) -> tuple[dict[int, int], dict[int, int]]:
    """(acknowledged, possibly acknowledged) token count per sequence from the writer's log."""
    data = ack_path.read_bytes() if ack_path.exists() else b""
    acked: dict[int, int] = {}
    intent: dict[int, int] = {}
    for off in range(0, len(data) - 23, 24):
        kind, s, n = struct.unpack_from("<QQQ", data, off)
        target = acked if kind == 1 else intent
        target[s] = max(target.get(s, 0), n)
    for s, n in acked.items():
        intent[s] = max(intent.get(s, 0), n)
    return acked, intent


def _torn_slots_on_disk(root: pathlib.Path) -> int:
    """Slots of the documented format whose crc does not match (zero-filled holes excluded)."""
    slot = HEADER_BYTES + 2 * _CP * _CD * 2
    torn = 0
    for path in root.glob("seq_*/*.kv"):
        data = path.read_bytes()
        for off in range(0, len(data), slot):
            buf = data[off : off + slot]
            if not any(buf):
                continue
            crc = zlib.crc32(buf[48:], zlib.crc32(buf[:44]))
            torn += len(buf) < slot or struct.unpack_from("<I", buf, 44)[0] != crc
    return torn


def _check_after_crash(
    root: pathlib.Path, acked: dict[int, int], readonly: bool
) -> tuple[int, int]:
    """Reopen, check every acknowledged token is there and every page exact; return
    (torn slots recovery found, pages that raised TornPageError)."""
    torn_reads = 0
    with KVStore(root, _CL, _CH, _CD, "float16", _CP, readonly=readonly) as store:
        for s in range(_NSEQ):
            n = store.num_tokens(s)
            assert n >= acked.get(s, 0), (s, n, acked)
            k, v = expected(s, 0, n, _CL, _CH, _CD)
            torn_reads += _check_all_pages(store, s, k, v, _CP)
        torn_slots = sum(r["torn_slots"] for r in store.recovery_report.values())
    return torn_slots, torn_reads


def _crash_loop(tmp_path: pathlib.Path, kills: int) -> None:
    root, ack_path = tmp_path / "store", tmp_path / "acks"
    rng = np.random.default_rng(1234)
    torn_slots = on_disk = 0
    for kill in range(kills):
        _run_and_kill(root, ack_path, seed=kill, rng=rng)
        if not (root / "meta.json").exists():
            continue  # killed before the store existed
        acked, _ = _acks(ack_path)
        on_disk += _torn_slots_on_disk(root)
        found, torn_reads = _check_after_crash(root, acked, readonly=True)
        assert torn_reads == 0  # a crash alone never leaves a torn page inside the count
        torn_slots += found
    acked, _ = _acks(ack_path)
    assert sum(acked.values()) > 0
    _, torn_reads = _check_after_crash(root, acked, readonly=False)  # repairs in this process
    assert torn_reads == 0
    with KVStore(root, _CL, _CH, _CD, "float16", _CP) as store:  # and writing goes on
        for s in range(_NSEQ):
            n = store.num_tokens(s)
            store.append(s, *expected(s, n, 9, _CL, _CH, _CD))
        store.sync()
    assert _check_after_crash(root, acked, readonly=True)[1] == 0
    print(
        f"\ncrash: {kills} kills, {sum(acked.values())} tokens acknowledged, "
        f"{on_disk} torn slots on disk after the kills, {torn_slots} of them met and skipped "
        "by recovery (the rest lay beyond every commit record)"
    )


def _fault_loop(tmp_path: pathlib.Path, rounds: int) -> None:
    """SIGKILL, then damage the end of one file (truncate or overwrite random bytes): only
    unacknowledged data, acknowledged full pages, or anywhere near the end, in turn."""
    rng = np.random.default_rng(99)
    slot = HEADER_BYTES + 2 * _CP * _CD * 2
    stats = {"unacked_only": 0, "acked_hit": 0, "detected": 0, "torn_reads": 0}
    for r in range(rounds):
        root, ack_path = tmp_path / f"store{r}", tmp_path / f"acks{r}"
        mode = r % 3  # 0: unacknowledged data only, 1: acknowledged full pages, 2: anywhere
        for attempt in range(6):  # kill (and recover) until there is data of the wanted kind
            _run_and_kill(
                root,
                ack_path,
                seed=1000 * r + attempt,
                rng=rng,
                sync_prob=0.05 if mode == 0 else 0.3,
                anywhere_prob=0.0,
            )
            acked, intent = _acks(ack_path)
            s = max(range(_NSEQ), key=lambda seq: acked.get(seq, 0))
            files = [f for f in sorted((root / f"seq_{s}").glob("*.kv")) if f.stat().st_size]
            if not files:
                continue
            path = files[int(rng.integers(len(files)))]
            before = path.read_bytes()
            size = len(before)
            A, A_max = acked.get(s, 0), intent.get(s, 0)
            acked_end = (TAIL_SLOTS + A // _CP) * slot  # end of the full pages of acked tokens
            unacked_from = (TAIL_SLOTS + A_max // _CP) * slot  # beyond what a sync may cover
            if (
                (mode == 0 and unacked_from < size)
                or (mode == 1 and acked_end > TAIL_SLOTS * slot)
                or mode == 2
            ):
                break
        if not files:
            continue
        layer, head = (int(x) for x in path.stem[1:].split("_h"))
        lo, hi = max(0, size - 6 * slot), size
        if mode == 0 and unacked_from < size:
            lo = max(lo, unacked_from)
        elif mode == 1 and acked_end > TAIL_SLOTS * slot:
            lo, hi = max(TAIL_SLOTS * slot, acked_end - 3 * slot), acked_end
        start = int(rng.integers(lo, hi))
        if rng.random() < 0.5:
            os.truncate(path, start)
        else:
            end = min(size, start + int(rng.integers(1, slot + 1)))
            with open(path, "r+b") as f:
                f.seek(start)
                f.write(rng.integers(0, 256, end - start, dtype=np.uint8).tobytes())
        after = path.read_bytes()
        unacked_only = start >= unacked_from
        hit_pages = [
            p
            for p in range(A // _CP)
            if before[(TAIL_SLOTS + p) * slot : (TAIL_SLOTS + p + 1) * slot]
            != after[(TAIL_SLOTS + p) * slot : (TAIL_SLOTS + p + 1) * slot]
        ]
        for readonly in (r % 2 == 1, True):  # the writable open repairs; then reopen
            with KVStore(root, _CL, _CH, _CD, "float16", _CP, readonly=readonly) as store:
                for seq in range(_NSEQ):
                    assert store.num_tokens(seq) >= acked.get(seq, 0)
                    k, v = expected(seq, 0, store.num_tokens(seq), _CL, _CH, _CD)
                    torn = _check_all_pages(store, seq, k, v, _CP)
                    stats["torn_reads"] += torn
                    if unacked_only:
                        assert torn == 0 and not store.is_damaged(seq)
                for p in hit_pages:  # damage to acknowledged pages is always detected
                    with pytest.raises(TornPageError):
                        store.read_pages(s, layer, head, [p])
        stats["unacked_only"] += unacked_only
        stats["acked_hit"] += bool(hit_pages)
        stats["detected"] += len(hit_pages)
    print(f"\nfault: {rounds} kills + damage, {stats}")
    assert stats["unacked_only"] > 0 and stats["acked_hit"] > 0


def test_crash_kill_recovers_acknowledged_tokens(tmp_path: pathlib.Path) -> None:
    _crash_loop(tmp_path, kills=10)


def test_crash_kill_then_damage_detected_or_dropped(tmp_path: pathlib.Path) -> None:
    _fault_loop(tmp_path, rounds=9)


@pytest.mark.slow
def test_crash_kill_many(tmp_path: pathlib.Path) -> None:
    _crash_loop(tmp_path, kills=100)


@pytest.mark.slow
def test_crash_kill_then_damage_many(tmp_path: pathlib.Path) -> None:
    _fault_loop(tmp_path, rounds=100)
