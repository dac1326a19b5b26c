"""Decode attention on the real backend: in-storage worker vs host baseline, in one run.

Prints, for one sequence of ``--context-tokens`` tokens (``--layers`` layers, ``--kv-heads`` KV
heads, ``--q-heads`` query heads, fp16 or ``--dtype float32``):

(a) this machine's memory-read bandwidth (torch sum over a large fp32 tensor, best of n: on one
    thread, and on two threads at once, as many as the worker's scan uses) and the in-storage
    worker's KV scan rate (KV bytes attended per second, unpaced internal link, warm page
    cache), and their ratio to the memory bandwidth. Full pages are immutable, so the worker
    checks a page's crc32 only on its first read: the *first scan* (every page's crc32 checked,
    the worker's verified-page watermarks dropped before each repetition) and the
    *steady-state* scan of a decode step (``verify_checksums=True``, pages already verified:
    headers checked, no crc32) are printed separately, with ``verify_checksums=False`` for
    reference; the target (>= 50% of the memory bandwidth) compares the steady-state rate.
    With the native kernel (``--kernel``, default: native when it compiles here) the steady
    state runs on ``--scan-threads`` (2) threads that each read small pieces of pages into a
    cache-sized buffer and attend to them (:class:`devices.worker.ScanPool`); beside it, the
    same scan on one such thread, through the reader / compute pipeline (one thread reads, one
    computes: the path of the first scan and of a paced link), and with PyTorch's kernel (the
    pages gathered into K and V tensors), all in the same run; then the pieces alone: each
    attention kernel on KV already in memory, the torch path's scatter reads, and a plain
    ``pread`` of the files in the scan's piece size;
(b) with links paced to InstInfer's 11.2 GB/s internal vs 7 GB/s external scaled down to this
    machine (internal = 0.5 x the unpaced rate of the reader / compute pipeline, the path a
    paced link runs, external = internal * 7 / 11.2), the measured decode-step speedup of the
    in-storage path (scan over the internal link; q, k, v, o over the external link) over the
    host path (the KV pages cross the external link, then the host computes), next to the
    speedup the simulator predicts for the same profile with ``mec_env.cost_model`` (target:
    within 15%), and the bytes each path moved per step;
(c) the worker's peak RSS with a small page budget while the KV on disk is many times larger.

    python benchmarks/attention_backend.py [--dtype float32] [--kernel torch] [--quick]

Machines are shared: every figure is the best (rates) or the median (paced steps) of a few
repetitions. The scan runs on two threads (two scan threads, or a reader and a compute thread);
the target compares it with the one-thread bandwidth, as this script has since it was written,
and the ratio to the two-thread bandwidth is printed beside it.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import threading
import time

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from devices import native  # noqa: E402
from devices.attention import grouped_partial_attention  # noqa: E402
from devices.host import HostAttention  # noqa: E402
from devices.kvstore import KVStore  # noqa: E402
from devices.links import Link  # noqa: E402
from devices.worker import (  # noqa: E402
    InStorageWorker,
    PageReader,
    ScanPool,
    chunk_pages_for,
    plan_tasks,
)
from mec_env.cost_model import (  # noqa: E402
    GB,
    cpu_attention_time_s,
    csd_attention_time_s,
    kv_transfer_time_s,
)
from mec_env.hardware import CSDSpec  # noqa: E402

INSTINFER_INTERNAL_GBPS = 11.2
INSTINFER_EXTERNAL_GBPS = 7.0


def best_time(fn, reps: int) -> float:
    fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def memory_read_gbps(nbytes: int, reps: int, threads: int = 1) -> float:
    """Torch sum over a large fp32 tensor, one tensor per thread, ``threads`` threads at once
    (the worker's scan runs a reader and a compute thread: two threads is the bandwidth those
    could reach)."""
    xs = [torch.ones(nbytes // 4, dtype=torch.float32) for _ in range(threads)]

    def run_all() -> None:
        ts = [threading.Thread(target=x.sum) for x in xs[1:]]
        for t in ts:
            t.start()
        xs[0].sum()
        for t in ts:
            t.join()

    return threads * nbytes / best_time(run_all, reps) / GB


def kernel_gbps(
    nbytes: int, reps: int, head_dim: int, group: int, chunk_tokens: int, dtype: torch.dtype
) -> float:
    """The attention kernel alone (``grouped_partial_attention``, ``dtype``, one thread) over
    ``nbytes`` of K and V already in memory (DRAM-resident, no copy, no file), in chunks of
    ``chunk_tokens`` as the worker computes them: the rate no scan on one compute thread can
    beat."""
    elem = torch.empty(0, dtype=dtype).element_size()
    n = max(chunk_tokens, nbytes // (2 * elem * head_dim) // chunk_tokens * chunk_tokens)
    k = torch.randn(n, head_dim).to(dtype)
    v = torch.randn(n, head_dim).to(dtype)
    q = torch.randn(1, group, head_dim).to(dtype)

    def run_all() -> None:
        for a in range(0, n, chunk_tokens):
            grouped_partial_attention(
                q, k[None, a : a + chunk_tokens], v[None, a : a + chunk_tokens]
            )

    return 2 * n * head_dim * elem / best_time(run_all, reps) / GB


def native_kernel_gbps(
    nbytes: int, reps: int, head_dim: int, group: int, dtype: torch.dtype
) -> float:
    """The native kernel alone (:func:`devices.native.segment_attention`, one thread) over
    ``nbytes`` of K and V already in memory, in pages of 16 tokens, 512 pages per KV head,
    every head in one call: what a scan thread could reach if its reads cost nothing."""
    elem = torch.empty(0, dtype=dtype).element_size()
    per_head = 16 * 512
    F = max(1, nbytes // (2 * elem * head_dim * per_head))
    k = torch.randn(F, per_head, head_dim).to(dtype)
    v = torch.randn(F, per_head, head_dim).to(dtype)
    q = torch.randn(F, group, head_dim)
    pages = np.arange(F * 512, dtype=np.uint64) * (16 * head_dim * elem)
    segs = (
        np.arange(F + 1, dtype=np.int64) * 512,
        k.data_ptr() + pages,
        v.data_ptr() + pages,
        np.full(F * 512, 16, dtype=np.int32),
    )
    return (
        k.numel()
        * 2
        * elem
        / best_time(lambda: native.segment_attention(q, *segs, dtype), reps)
        / GB
    )


def pread_gbps(root, piece_bytes: int, reps: int) -> float:
    """Plain ``pread`` of every KV file under ``root`` (page cache warm) in pieces of
    ``piece_bytes`` into one reused buffer (one thread): the copy each scan-pool thread
    makes, without the header checks and the attention."""
    files = sorted(pathlib.Path(root).rglob("*.kv"))
    fds = [os.open(f, os.O_RDONLY) for f in files]
    buf = bytearray(piece_bytes)
    mv = memoryview(buf)
    total = sum(os.fstat(fd).st_size for fd in fds)
    try:

        def read_all() -> None:
            for fd in fds:
                off = 0
                while (n := os.preadv(fd, [mv], off)) > 0:
                    off += n

        return total / best_time(read_all, reps) / GB
    finally:
        for fd in fds:
            os.close(fd)


def reader_gbps(store: KVStore, chunk_pages: int, reps: int) -> float:
    """The worker's page reads alone (:class:`devices.worker.PageReader` with checksums on,
    pages verified once, the same chunks as the worker's unpaced scan) of sequence 0 of
    ``store``, no attention: the rate no scan whose reads run on one thread can beat."""
    reader = PageReader(store)
    try:
        units = [
            reader.units(0, layer, h)
            for layer in range(store.num_layers)
            for h in range(store.num_kv_heads)
        ]
        tasks = plan_tasks(units, chunk_pages)
        nbytes = 0

        def read_all() -> None:
            nonlocal nbytes
            nbytes = 0
            for task, _ in tasks:
                chunk = reader.read_units(task)
                nbytes += chunk.nbytes
                chunk.release()

        t = best_time(read_all, reps)  # sets nbytes
        return nbytes / t / GB
    finally:
        reader.close()


def matmul_flops(n: int, reps: int) -> float:
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    return 2 * n**3 / best_time(lambda: a @ b, reps)


def build_store(root, L, Hkv, D, N, seed, dtype, batch=2048) -> None:
    g = torch.Generator().manual_seed(seed)
    with KVStore(root, L, Hkv, D, dtype) as store:
        for i in range(0, N, batch):
            t = min(batch, N - i)
            k = torch.randn(t, L, Hkv, D, generator=g).to(dtype)
            v = torch.randn(t, L, Hkv, D, generator=g).to(dtype)
            store.append(0, k, v)
        store.sync()


def dir_bytes(root) -> int:
    return sum(p.stat().st_size for p in pathlib.Path(root).rglob("*.kv"))


def run(args) -> int:
    torch.set_num_threads(1)
    L, Hkv, Hq, D, N = args.layers, args.kv_heads, args.q_heads, args.head_dim, args.context_tokens
    dtype = getattr(torch, args.dtype)
    elem = torch.empty(0, dtype=dtype).element_size()
    reps = args.repeats
    tmp = tempfile.mkdtemp(prefix="attn-bench-", dir=args.tmpdir)
    rows: list[tuple[str, str]] = []

    def row(name: str, value: str) -> None:
        rows.append((name, value))
        print(f"  {name:<58} {value}", flush=True)

    try:
        print(
            f"attention backend benchmark: context {N} tokens, {L} layers, {Hq} q heads, "
            f"{Hkv} kv heads, head dim {D}, {args.dtype}, page budget {args.page_budget}",
            flush=True,
        )
        membw = memory_read_gbps(args.membw_mb << 20, reps + 2)
        membw2 = memory_read_gbps(args.membw_mb << 20, reps + 2, threads=2)
        flops = matmul_flops(512 if not args.quick else 256, reps + 2)
        kv_bytes = 2 * N * L * Hkv * D * elem  # read per decode step (the whole context)
        kv_new = 2 * L * Hkv * D * elem  # one token's k and v
        qkvo = L * (2 * Hq * D + 2 * Hkv * D) * elem
        flops_step = 4.0 * N * Hq * D * L

        t0 = time.perf_counter()
        build_store(os.path.join(tmp, "w"), L, Hkv, D, N, seed=1, dtype=dtype)
        shutil.copytree(os.path.join(tmp, "w"), os.path.join(tmp, "h"))
        build_s = time.perf_counter() - t0

        g = torch.Generator().manual_seed(2)
        q = torch.randn(L, Hq, D, generator=g).to(dtype)
        with InStorageWorker(
            os.path.join(tmp, "w"),
            L,
            Hkv,
            D,
            dtype=dtype,
            page_budget=args.page_budget,
            kernel=args.kernel,
            scan_threads=args.scan_threads,
        ) as worker:
            kernel = worker.stats()["kernel"]
            # (a) scan rate, unpaced, warm page cache
            first = []
            for _ in range(reps):  # every page's crc32 checked again: a fresh worker's scan
                worker.forget_verified()
                t0 = time.perf_counter()
                worker.attend_layers(0, q)
                first.append(time.perf_counter() - t0)
            scan_first = kv_bytes / min(first) / GB

            def steady() -> float:
                worker.attend_layers(0, q)  # every page verified (decode steps)
                return kv_bytes / best_time(lambda: worker.attend_layers(0, q), reps) / GB

            # steady state: verify_checksums=True, every page verified already (decode steps)
            scan_steady = steady()
            worker.configure(verify_checksums=False)
            scan_nocrc = steady()
            worker.configure(verify_checksums=True)
            scan_one = scan_torch = None
            scan_pipe = scan_steady  # the reader / compute pipeline's rate (the paced path)
            if kernel == "native":
                worker.configure(scan_threads=1)
                scan_one = steady()
                worker.configure(scan_threads=0)
                scan_pipe = steady()
                worker.configure(kernel="torch")
                scan_torch = steady()
                worker.configure(kernel=args.kernel, scan_threads=args.scan_threads)
            hstore = KVStore(os.path.join(tmp, "h"), L, Hkv, D, dtype)
            host_free = HostAttention(hstore, Link("host-unpaced"), device="cpu")
            chunk_pages = chunk_pages_for(args.page_budget, paced=False)  # the unpaced scan's
            kern = kernel_gbps(args.membw_mb << 20, reps, D, Hq // Hkv, 16 * chunk_pages, dtype)
            kern_native = (
                native_kernel_gbps(args.membw_mb << 20, reps, D, Hq // Hkv, dtype)
                if native.available()
                else None
            )
            reads = reader_gbps(hstore, chunk_pages, reps)
            piece = ScanPool.for_budget(
                args.scan_threads, args.page_budget, hstore.slot_bytes
            ).piece_pages
            preads = pread_gbps(os.path.join(tmp, "h"), piece * hstore.slot_bytes, reps)
            host_rate = kv_bytes / best_time(lambda: host_free.attend(0, q), reps) / GB
            host_free.close()

            print(f"(a) memory bandwidth and scan rate (worker kernel: {kernel})", flush=True)
            row("memory read bandwidth (torch sum, 1 thread)", f"{membw:8.2f} GB/s")
            row("memory read bandwidth (torch sum, 2 threads at once)", f"{membw2:8.2f} GB/s")
            row("fp32 matmul (1 thread)", f"{flops / 1e9:8.1f} GFLOP/s")
            row(
                "worker KV scan rate, first scan (every page crc32-checked)",
                f"{scan_first:8.2f} GB/s",
            )
            row(
                "worker KV scan rate, steady state (verified once; default)",
                f"{scan_steady:8.2f} GB/s",
            )
            row("worker KV scan rate, verify_checksums=False", f"{scan_nocrc:8.2f} GB/s")
            row("scan / memory bandwidth, steady state (the target)", f"{scan_steady / membw:8.1%}")
            row(
                "scan / 2-thread memory bandwidth, steady state",
                f"{scan_steady / membw2:8.1%}",
            )
            row("scan / memory bandwidth, first scan", f"{scan_first / membw:8.1%}")
            row("scan / memory bandwidth, verify_checksums=False", f"{scan_nocrc / membw:8.1%}")
            if scan_one is not None:
                row(
                    "steady-state scan on one scan thread (scan_threads=1)", f"{scan_one:8.2f} GB/s"
                )
                row("one scan thread / memory bandwidth", f"{scan_one / membw:8.1%}")
                row(
                    "steady-state scan, reader / compute pipeline (scan_threads=0)",
                    f"{scan_pipe:8.2f} GB/s",
                )
                row(
                    "steady-state scan, torch kernel (reader + compute thread)",
                    f"{scan_torch:8.2f} GB/s",
                )
                row(
                    "native scan / torch-kernel scan (same run)",
                    f"{scan_steady / scan_torch:8.2f} x",
                )
            row("torch attention kernel alone, KV in memory (1 thread)", f"{kern:8.2f} GB/s")
            row("torch kernel alone / memory bandwidth", f"{kern / membw:8.1%}")
            if kern_native is not None:
                row(
                    "native attention kernel alone, KV in memory (1 thread)",
                    f"{kern_native:8.2f} GB/s",
                )
                row("native kernel alone / memory bandwidth", f"{kern_native / membw:8.1%}")
            row("torch path's page reads alone (scatter preadv, 1 thread)", f"{reads:8.2f} GB/s")
            row("torch path's page reads alone / memory bandwidth", f"{reads / membw:8.1%}")
            row(
                f"plain pread in {piece}-page pieces alone (1 thread)",
                f"{preads:8.2f} GB/s",
            )
            row("plain pread alone / memory bandwidth", f"{preads / membw:8.1%}")
            row("host attention rate (unpaced link, verified reads)", f"{host_rate:8.2f} GB/s")

            # (b) paced links, InstInfer's ratio scaled to this machine
            # paced, the worker streams through its reader / link / compute pipeline: the link
            # is set to half of that pipeline's unpaced rate, so the link is what limits it
            internal = 0.5 * scan_pipe
            external = internal * INSTINFER_EXTERNAL_GBPS / INSTINFER_INTERNAL_GBPS
            worker.configure(internal_gbps=internal)
            worker.external = Link("external", external)
            host = HostAttention(hstore, Link("host-link", external), device="cpu")
            steps = [
                (
                    torch.randn(L, Hkv, D, generator=g).to(dtype),
                    torch.randn(L, Hkv, D, generator=g).to(dtype),
                )
                for _ in range(args.steps + 1)
            ]
            t_is, t_host, b_is, b_host = [], [], [], []
            for i, (k_new, v_new) in enumerate(steps):
                worker.external.reset()
                t0 = time.perf_counter()
                worker.decode_step(0, q, k_new, v_new)
                dt = time.perf_counter() - t0
                if i:  # the first step warms up
                    t_is.append(dt)
                    b_is.append(worker.external.bytes_total)
                host.link.reset()
                t0 = time.perf_counter()
                host.decode_step(0, q, k_new, v_new)
                dt = time.perf_counter() - t0
                if i:
                    t_host.append(dt)
                    b_host.append(host.link.bytes_total - kv_new)
            n_ctx = N + len(steps)  # context of the last step
            m_is, m_host = statistics.median(t_is), statistics.median(t_host)
            measured = m_host / m_is
            kv_mid = 2 * (N + 1 + len(steps) // 2) * L * Hkv * D * elem
            csd = CSDSpec(
                internal_gbps=internal,
                external_gbps=external,
                engine_flops=flops,
                dram_gb=args.page_budget * 2 * 16 * D * elem / GB,
                capacity_gb=1.0,
                power_w=0.0,
            )
            p_is = float(csd_attention_time_s(kv_mid, flops_step, qkvo, csd))
            p_host = float(
                kv_transfer_time_s(kv_mid + kv_new, external)
                + cpu_attention_time_s(kv_mid, flops_step, membw, flops)
            )
            predicted = p_host / p_is
            print(
                f"(b) paced links: internal {internal:.3f} GB/s, external {external:.3f} GB/s "
                f"(InstInfer 11.2 : 7 scaled by {internal / INSTINFER_INTERNAL_GBPS:.4f})",
                flush=True,
            )
            row("in-storage decode step, measured (median)", f"{m_is * 1e3:8.1f} ms")
            row("in-storage decode step, predicted (csd_attention_time_s)", f"{p_is * 1e3:8.1f} ms")
            row("host decode step, measured (median)", f"{m_host * 1e3:8.1f} ms")
            row("host decode step, predicted (transfer + cpu attention)", f"{p_host * 1e3:8.1f} ms")
            row("speedup in-storage over host, measured", f"{measured:8.2f} x")
            row("speedup in-storage over host, predicted", f"{predicted:8.2f} x")
            row("measured / predicted speedup", f"{measured / predicted:8.3f}")
            row(
                "external bytes per step, in-storage (= L(2HqD+2HkvD)2)",
                f"{statistics.median(b_is):>10.0f} (formula {qkvo})",
            )
            row(
                "link bytes per step, host (KV read, excl. the k,v write)",
                f"{statistics.median(b_host):>10.0f} (KV of ~{n_ctx} tokens)",
            )

            # (c) memory: small page budget, KV on disk much larger
            budget = args.small_budget
            worker.configure(internal_gbps=None, page_budget=budget)
            base = worker.reset_stats()
            worker.attend_layers(0, q)
            st = worker.stats()
            disk = dir_bytes(os.path.join(tmp, "w"))
            budget_bytes = budget * st["page_bytes"]
            print("(c) worker memory with a page budget", flush=True)
            row("KV on disk (worker store)", f"{disk / 1e6:8.1f} MB")
            row(f"page budget ({budget} pages)", f"{budget_bytes / 1e6:8.3f} MB")
            row("KV on disk / page budget", f"{disk / budget_bytes:8.0f} x")
            row("peak pages resident (reported by the worker)", f"{st['peak_pages_resident']:8d}")
            row("worker RSS before the scan", f"{base['rss_bytes'] / 1e6:8.1f} MB")
            row("worker peak RSS during the scan (VmHWM)", f"{st['peak_rss_bytes'] / 1e6:8.1f} MB")
            row(
                "peak RSS growth during the scan",
                f"{(st['peak_rss_bytes'] - base['rss_bytes']) / 1e6:8.1f} MB",
            )
            hstore.close()
            host.close()
        print(f"(store build {build_s:.1f} s)", flush=True)
        ok_scan = scan_steady / membw >= 0.5
        ok_speed = abs(measured / predicted - 1) <= 0.15
        print(
            "targets: steady-state scan (crc32 verified on first read) >= 50% of the 1-thread "
            f"memory bandwidth: {'met' if ok_scan else 'NOT met'} (steady state "
            f"{scan_steady / membw:.0%}, {scan_steady / membw2:.0%} of the 2-thread bandwidth; "
            f"first scan {scan_first / membw:.0%}, no crc32 {scan_nocrc / membw:.0%}); "
            "speedup within 15% of predicted: "
            f"{'met' if ok_speed else 'NOT met'} ({measured / predicted - 1:+.1%})",
            flush=True,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--context-tokens", type=int, default=32768)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--q-heads", type=int, default=32)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--page-budget", type=int, default=1024, help="worker pages resident, (a)-(b)")
    p.add_argument("--small-budget", type=int, default=48, help="worker page budget for (c)")
    p.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    p.add_argument(
        "--kernel",
        choices=("auto", "native", "torch"),
        default="auto",
        help="the worker's attention kernel (auto: native when it compiles here)",
    )
    p.add_argument("--scan-threads", type=int, default=2, help="the native scan's threads")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=5, help="paced decode steps per path")
    p.add_argument("--membw-mb", type=int, default=1024)
    p.add_argument("--tmpdir", default=None)
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    args = p.parse_args(argv)
    if args.quick:
        args.context_tokens = min(args.context_tokens, 2000)
        args.layers = min(args.layers, 2)
        args.kv_heads, args.q_heads, args.head_dim = 2, 8, 64
        args.page_budget = min(args.page_budget, 64)
        args.small_budget = min(args.small_budget, 6)
        args.repeats, args.steps, args.membw_mb = 1, 2, 64
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
