"""The in-storage attention worker (devices.worker): a separate process, checked against
torch.nn.functional.scaled_dot_product_attention, for the bytes on its links, its page budget,
crash recovery, and the split-KV merge with the host paths."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from devices.host import HostAttention
from devices.kvstore import KVStore, TornPageError
from devices.links import Link
from devices.worker import (
    InStorageWorker,
    PageReader,
    WorkerConfig,
    WorkerError,
    _Unit,
    _WorkerServer,
    plan_tasks,
)
from mec_env.models import ModelSpec, SplitSpec

L, HQ, HKV, D = 2, 8, 2, 32
TOL = {torch.float16: 1e-3, torch.float32: 1e-5}
ROOT = Path(__file__).resolve().parents[2]


def model_spec(dtype) -> ModelSpec:
    return ModelSpec(
        name="tiny",
        kind="dense",
        params=1e6,
        active_params=1e6,
        split_points=(SplitSpec("none", 0.0, 0.0),),
        num_layers=L,
        hidden_size=HQ * D,
        num_heads=HQ,
        num_kv_heads=HKV,
        head_dim=D,
        kv_bytes_per_value=float(torch.empty(0, dtype=dtype).element_size()),
    )


def ref_layers(q, k, v):
    """SDPA per layer (fp32): q [L, Hq, D], k/v [N, L, Hkv, D] -> [L, Hq, D]."""
    return F.scaled_dot_product_attention(
        q.float().unsqueeze(2),
        k.float().permute(1, 2, 0, 3),
        v.float().permute(1, 2, 0, 3),
        enable_gqa=True,
    ).squeeze(2)


def assert_close(out, ref, dtype):
    tol = TOL[dtype]
    torch.testing.assert_close(out.float(), ref.to(dtype).float(), atol=tol, rtol=tol)


def data(N, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(N, L, HKV, D, generator=g).to(dtype)
    v = torch.randn(N, L, HKV, D, generator=g).to(dtype)
    q = torch.randn(L, HQ, D, generator=g).to(dtype)
    return q, k, v


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    """One fp16 worker for the module (starting a process costs a second or two)."""
    root = tmp_path_factory.mktemp("worker16")
    w = InStorageWorker(root, L, HKV, D, torch.float16, page_budget=3)
    yield w
    w.stop()
    assert not w.alive


@pytest.mark.parametrize("N", [1, 16, 17, 40])
def test_decode_step_matches_sdpa_fp16(worker, N):
    q, k, v = data(N, torch.float16, seed=N)
    seq = 100 + N
    if N > 1:
        worker.append(seq, k[:-1], v[:-1])
    out = worker.decode_step(seq, q, k[-1], v[-1])
    assert out.dtype == torch.float16 and out.shape == (L, HQ, D)
    assert_close(out, ref_layers(q, k, v), torch.float16)
    assert worker.num_tokens(seq) == N
    # the lse comes back when asked (for merging) and matches logsumexp of the scores
    out2, lse = worker.attend_layers(seq, q, return_lse=True)
    assert_close(out2, ref_layers(q, k, v), torch.float16)
    kr = k.float().permute(1, 2, 0, 3).repeat_interleave(HQ // HKV, dim=1)  # [L, Hq, N, D]
    s = torch.einsum("lhd,lhnd->lhn", q.float(), kr) / D**0.5
    torch.testing.assert_close(lse, torch.logsumexp(s, -1), atol=1e-4, rtol=1e-4)


def test_decode_step_fp32_and_batched_attend(tmp_path):
    dtype = torch.float32
    with InStorageWorker(tmp_path / "w32", L, HKV, D, dtype, page_budget=4) as w:
        outs = {}
        for seq, N in ((1, 1), (2, 33), (3, 70)):
            q, k, v = data(N, dtype, seed=seq)
            if N > 1:
                w.append(seq, k[:-1], v[:-1])
            out = w.decode_step(seq, q, k[-1], v[-1])
            assert_close(out, ref_layers(q, k, v), dtype)
            outs[seq] = (q, k, v)
        # several sequences and layers in one round trip
        batch = [(seq, layer, outs[seq][0][layer]) for seq in (3, 1, 2) for layer in range(L)]
        res = w.attend(batch, return_lse=True)
        for (seq, layer, _), (o, lse) in zip(batch, res, strict=True):
            q, k, v = outs[seq]
            assert_close(o, ref_layers(q, k, v)[layer], dtype)
            assert lse.shape == (HQ,)
        q, k, v = data(5, dtype, seed=9)
        res = w.decode_batch([(7, q, k[0], v[0]), (8, q, k[1], v[1])])
        assert_close(res[0], ref_layers(q, k[:1], v[:1]), dtype)
        assert_close(res[1], ref_layers(q, k[1:2], v[1:2]), dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_external_bytes_are_exactly_qkvo_whatever_the_context(tmp_path, dtype):
    elem = torch.empty(0, dtype=dtype).element_size()
    qkvo = model_spec(dtype).qkvo_bytes_per_token
    assert qkvo == L * (2 * HQ * D + 2 * HKV * D) * elem
    with InStorageWorker(tmp_path / "w", L, HKV, D, dtype) as w:
        for seq, N in ((1, 5), (2, 300)):
            q, k, v = data(N, dtype, seed=N)
            w.append(seq, k[:-1], v[:-1])
            w.reset_stats()
            w.decode_step(seq, q, k[-1], v[-1])
            st = w.stats()
            assert st["external"]["bytes"] == qkvo  # independent of N
            # the scan stays inside: every KV byte of the context crossed the internal link
            assert st["internal"]["bytes"] == 2 * N * D * elem * L * HKV
            w.reset_stats()
            w.decode_step(seq, q, k[-1], v[-1], return_lse=True)
            assert w.stats()["external"]["bytes"] == qkvo + 4 * L * HQ  # + the fp32 lse


def test_page_budget_is_respected(worker):
    q, k, v = data(300, torch.float16, seed=3)  # 19 pages per (layer, head), budget 3
    worker.append(50, k, v)
    worker.reset_stats()
    out = worker.attend_layers(50, q)
    assert_close(out, ref_layers(q, k, v), torch.float16)
    st = worker.stats()
    assert 1 <= st["peak_pages_resident"] <= st["page_budget"] == 3
    assert st["pages_read"] == 19 * L * HKV


def _flip_byte(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def test_pages_are_verified_once_and_a_torn_page_is_caught_on_its_first_read(tmp_path, monkeypatch):
    """Full pages are immutable: the worker checks a page's crc32 on its first read only (a
    per-file watermark), so a second scan of clean pages calls no crc32 at all; a page torn on
    disk is still caught (TornPageError) on its first read, before its data is used, and is
    never marked verified."""
    dtype = torch.float32
    q, k, v = data(64, dtype, seed=31)  # 4 full pages per (layer, head), no tail page
    root = tmp_path / "v"
    with KVStore(root, L, HKV, D, dtype) as store:
        store.append(0, k, v)
        store.append(1, k, v)
        store.sync()
        slot, path = store.slot_bytes, store.path_of(1, 1, 0)
    _flip_byte(path, (2 + 2) * slot + 64 + 7)  # a K byte of full page 2 (seq 1, layer 1, head 0)
    server = _WorkerServer(WorkerConfig(str(root), L, HKV, D, dtype="float32"))
    calls = []
    real_crc32 = zlib.crc32

    def counting_crc32(*args):
        calls.append(1)
        return real_crc32(*args)

    monkeypatch.setattr(zlib, "crc32", counting_crc32)
    reqs = [(0, layer, q[layer]) for layer in range(L)]
    first = server.attend_many(reqs)
    assert calls and server.reader.pages_verified == 4 * L * HKV
    calls.clear()
    second = server.attend_many(reqs)
    assert not calls  # steady state: no crc32 at all
    assert server.reader.pages_verified == 4 * L * HKV
    ref = ref_layers(q, k, v)
    for layer, ((o1, _), (o2, _)) in enumerate(zip(first, second, strict=True)):
        torch.testing.assert_close(o1, o2, rtol=0, atol=0)
        assert_close(o1, ref[layer], dtype)
    for _ in range(2):  # caught on the first read, and again: a torn page is never verified
        with pytest.raises(TornPageError, match="page 2 is torn: checksum mismatch"):
            server.attend_many([(1, 1, q[1])])
    ((o, _),) = server.attend_many([(1, 0, q[0])])  # the other files of the sequence are fine
    assert_close(o, ref[0], dtype)
    # verify_checksums=False reads without marking anything verified
    server.reader.forget_verified()
    server.reader.verify = False
    calls.clear()
    server.attend_many(reqs)
    assert not calls and not server.reader.verified
    server.reader.verify = True
    server.attend_many(reqs)
    assert server.reader.pages_verified == 2 * 4 * L * HKV + 4 * HKV  # + seq 1, layer 0
    server.close()


def test_worker_process_counts_verifications_and_reports_torn_pages(tmp_path):
    dtype = torch.float16
    q, k, v = data(50, dtype, seed=32)  # 3 full pages and a tail page of 2 tokens
    with InStorageWorker(tmp_path / "w", L, HKV, D, dtype) as w:
        w.append(0, k, v)
        w.reset_stats()
        for _ in range(2):
            assert_close(w.attend_layers(0, q), ref_layers(q, k, v), dtype)
            assert w.stats()["pages_verified"] == 3 * L * HKV  # full pages, first read only
        w.forget_verified()
        w.attend_layers(0, q)
        assert w.stats()["pages_verified"] == 2 * 3 * L * HKV
        # a page torn on disk after the append, before the worker ever read it
        w.append(1, k[:40], v[:40])
        w.sync()
        store = KVStore(tmp_path / "w", L, HKV, D, dtype, readonly=True)
        _flip_byte(store.path_of(1, 0, 1), (2 + 1) * store.slot_bytes + 100)
        store.close()
        with pytest.raises(WorkerError, match="TornPageError"):
            w.attend_layers(1, q)
        assert w.alive


def test_plan_tasks_batches_heads_and_splits_large_files(tmp_path):
    """Consecutive units of the same shape share a task (one read, one kernel call) up to the
    chunk; a file larger than the chunk is split, its tail page going with the last slice."""
    units = [_Unit(h, 0, 0, 0, h, range(3), 5, 3) for h in range(5)]  # 4 pages each
    tasks = plan_tasks(units, 9)
    assert [[u.uid for u in t] for t, _ in tasks] == [[0, 1], [2, 3], [4]]
    assert [n for _, n in tasks] == [8, 8, 4]
    big = _Unit(0, 0, 0, 0, 0, range(10), 3, 10)  # 11 pages
    tasks = plan_tasks([big], 4)
    assert [(list(t[0].pages), t[0].t, t[0].whole, n) for t, n in tasks] == [
        ([0, 1, 2, 3], 0, False, 4),
        ([4, 5, 6, 7], 0, False, 4),
        ([8, 9], 3, False, 3),
    ]
    # the reader returns every unit's K as one [F, tokens, D] tensor
    _, k, v = data(37, torch.float32, seed=4)
    store = KVStore(tmp_path / "s", L, HKV, D, torch.float32)
    store.append(0, k, v)
    reader = PageReader(store)
    units = [reader.units(0, layer, h) for layer in range(L) for h in range(HKV)]
    chunk = reader.read_units(units)
    assert chunk.k.shape == (L * HKV, 37, D) and chunk.npages == L * HKV * 3
    assert chunk.nbytes == 2 * 37 * D * 4 * L * HKV
    torch.testing.assert_close(chunk.k, k.permute(1, 2, 0, 3).reshape(L * HKV, 37, D))
    torch.testing.assert_close(chunk.v, v.permute(1, 2, 0, 3).reshape(L * HKV, 37, D))
    chunk.release()
    sparse = reader.read(0, 1, 1, pages=[0, 2])  # a full page and the tail page
    torch.testing.assert_close(sparse.k[0], torch.cat([k[:16, 1, 1], k[32:, 1, 1]]))
    sparse.release()
    reader.close()
    store.close()


def test_worker_restarts_after_sigkill_and_the_store_survives(tmp_path):
    dtype = torch.float16
    q, k, v = data(41, dtype, seed=11)
    with InStorageWorker(tmp_path / "crash", L, HKV, D, dtype, page_budget=2) as w:
        w.append(0, k[:39], v[:39])
        out = w.decode_step(0, q, k[39], v[39])
        assert_close(out, ref_layers(q, k[:40], v[:40]), dtype)
        pid = w.pid
        os.kill(pid, signal.SIGKILL)  # between calls, no sync since the appends
        deadline = time.monotonic() + 10
        while w.alive and time.monotonic() < deadline:
            time.sleep(0.01)
        out = w.decode_step(0, q, k[40], v[40])  # detected, restarted, retried
        assert w.restarts == 1 and w.pid != pid
        assert_close(out, ref_layers(q, k, v), dtype)
        assert w.num_tokens(0) == 41  # nothing lost, nothing appended twice
        os.kill(w.pid, signal.SIGKILL)
        time.sleep(0.2)
        assert w.stats()["restarts"] == 2


def test_hung_worker_times_out_and_is_replaced(tmp_path):
    """A worker that stops answering (SIGSTOP) is killed after timeout_s and the request is
    retried on a fresh one."""
    dtype = torch.float32
    q, k, v = data(20, dtype, seed=12)
    with InStorageWorker(tmp_path / "hang", L, HKV, D, dtype, timeout_s=1.0) as w:
        w.append(0, k, v)
        pid = w.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            out = w.attend_layers(0, q)
        finally:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        assert w.restarts == 1 and w.pid != pid
        assert_close(out, ref_layers(q, k, v), dtype)


def test_retried_append_is_not_applied_twice(tmp_path):
    """The worker side of the retry: an append that reached the store before a crash is
    recognized by the length the parent expected, and skipped."""
    server = _WorkerServer(WorkerConfig(str(tmp_path / "s"), L, HKV, D))
    _, k, v = data(3, torch.float16, seed=1)
    assert server.append(0, k[0], v[0], expect_len=0) == 1
    assert server.append(0, k[0], v[0], expect_len=0) == 1  # the retry: already applied
    assert server.append(0, k[1:3], v[1:3], expect_len=1) == 3
    with pytest.raises(RuntimeError, match="expected"):
        server.append(0, k[0], v[0], expect_len=7)
    server.close()


def test_merged_split_kv_across_fast_tier_host_store_and_worker(worker, tmp_path):
    """Three disjoint pieces of one sequence's KV: fast tier (memory), the host's store (read
    over its link), the in-storage worker (out and lse over the external link); merged with
    merge_partials they equal attention over the whole KV."""
    dtype = torch.float16
    q, k, v = data(90, dtype, seed=21)
    store = KVStore(tmp_path / "host", L, HKV, D, dtype)
    store.append(0, k[10:35], v[10:35])
    worker.append(77, k[35:], v[35:])
    host = HostAttention(store, Link("pcie"), device="cpu")
    fast = (k[:10].permute(1, 2, 0, 3), v[:10].permute(1, 2, 0, 3))
    worker.external.reset()
    out, lse = host.merged_attend(
        q, fast_kv=fast, seq_id=0, worker=worker, worker_seq_id=77, return_lse=True
    )
    assert_close(out, ref_layers(q, k, v), dtype)
    # q out, (out, lse) back: the merge path pays for the lse, and says so
    assert worker.external.bytes_total == 2 * L * HQ * D * 2 + 4 * L * HQ
    assert host.link.bytes_total == 2 * 25 * D * 2 * L * HKV
    host.close()
    store.close()


def test_sparse_mode_reads_fewer_pages(tmp_path):
    """keep_fraction < 1: only the top pages by the per-page key bound are scanned
    (approximate; exact here because the planted page holds almost all the mass)."""
    dtype = torch.float32
    q, k, v = data(320, dtype, seed=5)  # 20 pages
    G = HQ // HKV
    for layer in range(L):
        for h in range(HKV):
            k[96:112, layer, h] = 30.0 * q[layer, h * G : (h + 1) * G].mean(0)
    with InStorageWorker(tmp_path / "sp", L, HKV, D, dtype, keep_fraction=0.1) as w:
        w.append(0, k, v)
        w.attend_layers(0, q)  # builds the per-page summaries (a full scan, counted)
        w.reset_stats()
        out = w.attend_layers(0, q)
        torch.testing.assert_close(out, ref_layers(q, k, v), atol=1e-3, rtol=1e-3)
        st = w.stats()
        assert st["pages_read"] == 2 * L * HKV  # ceil(0.1 * 20) pages per (layer, head)
        assert st["internal"]["bytes"] == 2 * 16 * 2 * D * 4 * L * HKV
        assert st["summary_bytes"] > 0
        # appends extend the summaries (the partial last page is re-summarized)
        _, k2, v2 = data(20, dtype, seed=6)
        for i in range(20):
            out = w.decode_step(0, q, k2[i], v2[i])
        kk, vv = torch.cat([k, k2]), torch.cat([v, v2])
        torch.testing.assert_close(out, ref_layers(q, kk, vv), atol=1e-3, rtol=1e-3)
        assert w.num_tokens(0) == 340


def test_rss_stays_bounded_by_the_page_budget(tmp_path):
    """KV on disk ~85x the resident budget (48 pages of 8 KB): the worker's peak RSS grows by
    far less than the KV it scans (pages are streamed, not loaded)."""
    dtype, Lb, Hkvb, Db, N = torch.float16, 2, 2, 128, 16384  # 33.5 MB of KV
    store = KVStore(tmp_path / "big", Lb, Hkvb, Db, dtype)
    g = torch.Generator().manual_seed(0)
    for _ in range(0, N, 4096):
        kv = torch.randn(4096, Lb, Hkvb, Db, generator=g).to(dtype)
        store.append(0, kv, kv)
    store.sync()
    store.close()
    kv_bytes = 2 * N * Lb * Hkvb * Db * 2
    q = torch.randn(Lb, 4, Db).to(dtype)
    with InStorageWorker(tmp_path / "big", Lb, Hkvb, Db, dtype, page_budget=48) as w:
        w.attend_layers(0, q)  # warm up: lazily loaded kernels, buffers, thread stacks
        base = w.reset_stats()  # also resets the peak RSS (VmHWM) to the current RSS
        w.attend_layers(0, q)
        st = w.stats()
        assert st["internal"]["bytes"] == kv_bytes
        assert st["peak_pages_resident"] <= 48
        growth = st["peak_rss_bytes"] - base["rss_bytes"]
        assert growth < kv_bytes / 4, (growth, kv_bytes)


def test_worker_api_errors_and_lifecycle(tmp_path):
    w = InStorageWorker(tmp_path / "e", L, HKV, D, autostart=False)
    assert not w.alive and w.pid is None
    w.start()
    assert w.alive
    with pytest.raises(ValueError):
        w.configure(num_layers=3)
    q, k, v = data(4, torch.float16, seed=0)
    w.append(0, k, v)
    with pytest.raises(Exception, match="multiple of KV heads"):
        w.attend([(0, 0, torch.randn(3, D).half())])
    assert w.alive  # an error inside a request is not a crash
    proc = w._proc
    del w  # __del__ stops the process (and reaps it)
    assert proc.returncode is not None


def test_benchmark_quick_smoke():
    """benchmarks/attention_backend.py --quick runs and prints every figure."""
    res = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "attention_backend.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    for needle in (
        "memory read bandwidth",
        "worker KV scan rate",
        "scan / memory bandwidth",
        "speedup in-storage over host, measured",
        "speedup in-storage over host, predicted",
        "external bytes per step, in-storage",
        "worker peak RSS",
        "targets:",
    ):
        assert needle in out, out


def test_without_a_c_compiler_the_worker_uses_the_torch_kernel(tmp_path):
    """devices.native compiles on first use; with no compiler it says why, ``kernel="auto"``
    falls back to PyTorch's kernel and ``kernel="native"`` is refused with the reason."""
    code = """
import torch
from devices import native
from devices.worker import _resolve_kernel
assert not native.available()
print("reason:", native.unavailable_reason())
assert _resolve_kernel("auto", torch.float16, 64) == "torch"
try:
    _resolve_kernel("native", torch.float16, 64)
except RuntimeError as e:
    print("refused:", e)
"""
    env = {
        **os.environ,
        "CC": str(tmp_path / "no-such-cc"),
        "MEC_NATIVE_CACHE": str(tmp_path / "cache"),
    }
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert "reason: no C compiler" in r.stdout and "no-such-cc" in r.stdout
    assert "refused: kernel='native' unavailable: no C compiler" in r.stdout
