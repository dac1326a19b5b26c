"""A hand-written decode-attention kernel for KV in pages, in place (``devices/kvattn.c``).

PyTorch's CPU attention wants K and V as dense tensors, so a paged KV must first be gathered
(copied) into one; and its kernels reach ~40 % (fp16) and ~60 % (fp32) of one thread's memory
bandwidth on decode shapes (``benchmarks/attention_backend.py``). This kernel takes the KV as a
list of *segments* (pointers to runs of contiguous K rows and V rows, e.g. each page of a
read buffer laid out as on disk), so the in-storage worker computes straight out of the buffer
its reads fill, with fp32 accumulation, an online softmax and software prefetch across pages.

The C source ships with the package and is compiled on first use with the system's C compiler
(``$CC``, else ``cc``; ``-O3 -march=native``) into a cache directory (``$MEC_NATIVE_CACHE``, else
``~/.cache/mec_env/native``), keyed by the source, the flags, the compiler and the CPU, and
loaded with ctypes. Where no compiler works, :func:`available` is False,
:func:`unavailable_reason` says why, and callers fall back to PyTorch; ``MEC_NATIVE=0`` turns it
off. Tests check it against ``torch.nn.functional.scaled_dot_product_attention`` (vectorised and
plain-C builds).
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile
import threading

import numpy as np
import torch

__all__ = [
    "ScanError",
    "scan_files",
    "available",
    "unavailable_reason",
    "simd",
    "segment_attention",
    "MAX_SEGMENT_ROWS",
    "DTYPES",
]

SOURCE = pathlib.Path(__file__).with_name("kvattn.c")
MAX_SEGMENT_ROWS = 256  # BT in kvattn.c
MAX_GROUP = 64  # MAXG
MAX_HEAD_DIM = 512  # MAXD
DTYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
_FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-shared", "-fPIC")
_FLAGS_PORTABLE = ("-O3", "-fno-math-errno", "-shared", "-fPIC")

_lock = threading.Lock()
_libs: dict[tuple[str, ...], ctypes.CDLL] = {}
_errors: dict[tuple[str, ...], str] = {}


def _cpu_key() -> str:
    """What the compiled code depends on: the machine and its CPU's feature flags."""
    flags = ""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = line
                break
    except OSError:
        pass
    return platform.machine() + flags


def _cache_dir() -> pathlib.Path:
    env = os.environ.get("MEC_NATIVE_CACHE")
    if env:
        return pathlib.Path(env)
    return pathlib.Path.home() / ".cache" / "mec_env" / "native"


def _compiler_version(cc: str) -> str:
    try:
        r = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
        return r.stdout.splitlines()[0] if r.returncode == 0 and r.stdout else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def _build(defines: tuple[str, ...]) -> ctypes.CDLL:
    cc = os.environ.get("CC") or "cc"
    if shutil.which(cc) is None:
        raise RuntimeError(f"no C compiler ({cc!r} not found; set CC)")
    src = SOURCE.read_bytes()
    version = _compiler_version(cc)
    errors = []
    for flags in (_FLAGS, _FLAGS_PORTABLE):
        key = hashlib.sha256(
            b"\0".join(
                [src, " ".join((*flags, *defines)).encode(), version.encode(), _cpu_key().encode()]
            )
        ).hexdigest()[:20]
        cache = _cache_dir()
        lib = cache / f"kvattn-{key}.so"
        if not lib.exists():
            cache.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache)
            os.close(fd)
            try:
                r = subprocess.run(
                    [cc, *flags, *defines, str(SOURCE), "-o", tmp, "-lm"],
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                if r.returncode != 0:
                    errors.append(f"{cc} {' '.join(flags)}: {r.stderr.strip()[-300:]}")
                    continue
                os.replace(tmp, lib)  # atomic: a concurrent builder sees a whole library
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        dll = ctypes.CDLL(str(lib))
        dll.kvattn_segments.restype = ctypes.c_int
        dll.kvattn_segments.argtypes = [ctypes.c_int] * 4 + [ctypes.c_void_p] * 7
        dll.kvattn_scan.restype = ctypes.c_int
        dll.kvattn_scan.argtypes = (
            [ctypes.c_int] * 5
            + [ctypes.c_void_p] * 5
            + [ctypes.c_int64, ctypes.c_uint64]
            + [ctypes.c_void_p] * 6
            + [ctypes.c_int]
            + [ctypes.c_void_p] * 4
        )
        dll.kvattn_simd.restype = ctypes.c_int
        return dll
    raise RuntimeError("could not compile devices/kvattn.c: " + " | ".join(errors))


def _lib(scalar: bool = False) -> ctypes.CDLL | None:
    defines = ("-DKVATTN_SCALAR",) if scalar else ()
    lib = _libs.get(defines)  # loaded: no lock (called for every task of a scan)
    if lib is not None:
        return lib
    with _lock:
        if defines in _libs:
            return _libs[defines]
        if defines in _errors:
            return None
        if os.environ.get("MEC_NATIVE", "1") == "0":
            _errors[defines] = "turned off (MEC_NATIVE=0)"
            return None
        try:
            _libs[defines] = _build(defines)
        except (OSError, RuntimeError, subprocess.SubprocessError) as e:
            _errors[defines] = str(e)
            return None
        return _libs[defines]


def available() -> bool:
    """Whether the kernel compiled and loaded here (compiles it on the first call)."""
    return _lib() is not None


def unavailable_reason() -> str | None:
    """Why :func:`available` is False (None when it is True)."""
    return None if available() else _errors.get(())


def simd() -> bool:
    """Whether the loaded build uses its AVX2/F16C/FMA loops (else plain C)."""
    lib = _lib()
    return bool(lib is not None and lib.kvattn_simd())


def _prepare(q: torch.Tensor, dtype: torch.dtype, scale: float | None, scalar: bool = False):
    """The loaded library, and for ``q [F, G, D]``: the scaled fp32 query and the fp32
    ``out [F, G, D]``, ``lse [F, G]`` to fill; raises on an unavailable kernel or bad shapes."""
    lib = _lib(scalar)
    if lib is None:
        why = _errors.get(("-DKVATTN_SCALAR",) if scalar else ())
        raise RuntimeError(f"native attention kernel unavailable: {why}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(map(str, DTYPES))}, got {dtype}")
    F, G, D = q.shape
    if not (1 <= G <= MAX_GROUP and 1 <= D <= MAX_HEAD_DIM):
        raise ValueError(
            f"q [F, G, D] needs G <= {MAX_GROUP} and D <= {MAX_HEAD_DIM}, got {tuple(q.shape)}"
        )
    sc = 1.0 / math.sqrt(D) if scale is None else float(scale)
    qs = (q.detach().to("cpu", torch.float32) * sc).contiguous()
    out = torch.empty(F, G, D, dtype=torch.float32)
    lse = torch.empty(F, G, dtype=torch.float32)
    return lib, qs, out, lse


def segment_attention(
    q: torch.Tensor,
    seg_start: np.ndarray,
    k_ptr: np.ndarray,
    v_ptr: np.ndarray,
    rows: np.ndarray,
    dtype: torch.dtype,
    scale: float | None = None,
    *,
    scalar: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode attention of ``q [F, G, D]`` over ``F`` KV heads given as segments.

    KV head ``f`` is segments ``seg_start[f] .. seg_start[f + 1] - 1`` (``seg_start``: int64
    ``[F + 1]``); segment ``i`` holds ``rows[i]`` (int32, at most :data:`MAX_SEGMENT_ROWS`) rows
    of ``D`` elements of ``dtype`` (fp32, fp16 or bf16), K contiguous at address ``k_ptr[i]`` and V
    at ``v_ptr[i]`` (uint64). The caller keeps that memory alive and unchanged during the call.
    Returns fp32 ``(out [F, G, D], lse [F, G])`` as
    :func:`devices.attention.grouped_partial_attention` does (``scale`` default ``1/sqrt(D)``;
    empty heads give zeros and ``-inf``). ``scalar=True`` uses the plain-C build (tests).
    """
    lib, qs, out, lse = _prepare(q, dtype, scale, scalar)
    F, G, D = q.shape
    seg_start = np.ascontiguousarray(seg_start, dtype=np.int64)
    k_ptr = np.ascontiguousarray(k_ptr, dtype=np.uint64)
    v_ptr = np.ascontiguousarray(v_ptr, dtype=np.uint64)
    rows = np.ascontiguousarray(rows, dtype=np.int32)
    S = int(seg_start[-1]) if len(seg_start) else 0
    if len(seg_start) != F + 1 or min(len(k_ptr), len(v_ptr), len(rows)) < S:
        raise ValueError(f"seg_start must have F + 1 = {F + 1} entries and the pointer arrays {S}")
    rc = lib.kvattn_segments(
        F,
        G,
        D,
        DTYPES[dtype],
        qs.data_ptr(),
        seg_start.ctypes.data,
        k_ptr.ctypes.data,
        v_ptr.ctypes.data,
        rows.ctypes.data,
        out.data_ptr(),
        lse.data_ptr(),
    )
    if rc != 0:
        raise ValueError(
            f"kvattn_segments rejected its arguments (code {rc}): segments must "
            f"hold 0..{MAX_SEGMENT_ROWS} rows"
        )
    return out, lse


class ScanError(RuntimeError):
    """:func:`scan_files` stopped: ``code`` -3 (a file ends inside a run), -4 (a bad page
    header) or -6 (a read error, ``errno``); ``unit`` and ``page`` say where."""

    def __init__(self, code: int, unit: int, page: int):
        what = {-3: "file ends inside a run", -4: "bad page header", -6: "read error"}
        super().__init__(f"{what.get(code, f'code {code}')}: unit {unit}, page {page}")
        self.code, self.unit, self.page = code, unit, page
        self.errno = page if code == -6 else None


def scan_files(
    q: torch.Tensor,
    fds: np.ndarray,
    run_start: np.ndarray,
    run_first: np.ndarray,
    run_pages: np.ndarray,
    *,
    slot_bytes: int,
    page_tokens: int,
    header_word0: int,
    seq: np.ndarray,
    layerhead: np.ndarray,
    tails: tuple[np.ndarray, np.ndarray, np.ndarray],
    buf: torch.Tensor,
    dtype: torch.dtype,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read and attend in one pass (``kvattn_scan`` in ``kvattn.c``): unit ``f`` of ``q [F, G,
    D]`` attends to the full pages of the KV file ``fds[f]`` listed as runs ``run_start[f] ..
    run_start[f + 1] - 1`` (``run_first``: first page, ``run_pages``: pages), read with
    ``pread`` in pieces of ``buf.numel() // slot_bytes`` pages into ``buf`` (uint8, reused:
    it stays in cache) with each page's header checked (word 0 ``header_word0``, sequence
    ``seq[f]``, ``layerhead[f]`` = layer | head << 32, the page index, ``page_tokens`` tokens;
    not the crc32: the caller verified these pages before), then its tail segment ``tails``
    (K and V addresses, rows; 0 rows for none). The GIL is released for the whole call.
    Returns fp32 ``(out [F, G, D], lse [F, G])``; raises :class:`ScanError`."""
    lib, qs, out, lse = _prepare(q, dtype, scale)
    F, G, D = q.shape
    buf_pages = buf.numel() // slot_bytes
    if buf.dtype != torch.uint8 or not buf.is_contiguous() or buf_pages < 1:
        raise ValueError("buf must be a contiguous uint8 tensor of at least one slot")
    arrs = [
        np.ascontiguousarray(a, dtype=t)
        for a, t in (
            (fds, np.int32),
            (run_start, np.int64),
            (run_first, np.int64),
            (run_pages, np.int32),
            (seq, np.uint64),
            (layerhead, np.uint64),
            (tails[0], np.uint64),
            (tails[1], np.uint64),
            (tails[2], np.int32),
        )
    ]
    if len(arrs[1]) != F + 1 or any(len(arrs[i]) != F for i in (0, 4, 5, 6, 7, 8)):
        raise ValueError(f"scan_files: per-unit arrays must have F = {F} entries")
    err = np.zeros(2, dtype=np.int64)
    rc = lib.kvattn_scan(
        F,
        G,
        D,
        DTYPES[dtype],
        page_tokens,
        qs.data_ptr(),
        arrs[0].ctypes.data,
        arrs[1].ctypes.data,
        arrs[2].ctypes.data,
        arrs[3].ctypes.data,
        slot_bytes,
        header_word0,
        arrs[4].ctypes.data,
        arrs[5].ctypes.data,
        arrs[6].ctypes.data,
        arrs[7].ctypes.data,
        arrs[8].ctypes.data,
        buf.data_ptr(),
        buf_pages,
        out.data_ptr(),
        lse.data_ptr(),
        err.ctypes.data,
        err.ctypes.data + 8,
    )
    if rc in (-3, -4, -6):
        raise ScanError(rc, int(err[0]), int(err[1]))
    if rc != 0:
        raise ValueError(f"kvattn_scan rejected its arguments (code {rc})")
    return out, lse
