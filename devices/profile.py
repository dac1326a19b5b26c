"""Profiler: measure this machine into the hardware-profile format the scenarios use.

``python -m devices.profile --out PATH [--quick] [--tmpdir DIR] [--name NAME]`` writes a YAML
file with four sections:

* ``server``: a mapping :meth:`mec_env.hardware.ServerSpec.from_dict` accepts (paste it into a
  scenario's ``servers:`` list). On a CUDA machine ``gpu`` is the first CUDA device; on a
  CPU-only machine the "gpu" is the CPU itself: ``flops`` = best measured CPU matmul FLOP/s over
  fp32/bf16/fp16, ``hbm_gbps`` = measured DRAM read bandwidth, ``hbm_gb`` = DRAM size, and
  ``gpu_host_gbps`` = measured memcpy bandwidth (GPU and host share DRAM). ``host.cpu_flops`` =
  fp32 CPU matmul, ``host.dram_gbps`` = DRAM read bandwidth; ``ssd`` = the file-read and write
  bandwidth of ``--tmpdir``'s file system (see ``measured.disk_read_method``).
* ``measured``: the raw figures (GB/s are 1e9 bytes/s, FLOP/s counts 2 n^3 per n x n matmul),
  including ``link_pacing``: a :class:`devices.links.Link` paced at a few rates, requested vs
  achieved GB/s.
* ``machine``: CPU model, cores, memory, torch / numpy / Python versions, date (UTC).
* ``nominal``: powers and price. They cannot be measured here; the values are documented
  nominal figures (rules in ``NOMINAL``), not readings.

Every figure is the best of several repetitions (least disturbed by other load); ``--quick``
uses small sizes (a few seconds in all) and is meant for tests, not for numbers to report.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import mmap
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from devices.links import Link

if TYPE_CHECKING:  # torch and mec_env load lazily so that CLI errors come back fast
    import torch

    from mec_env.hardware import ServerSpec

__all__ = ["NOMINAL", "load_profile", "main", "measure", "profile_to_server_spec", "write_profile"]

GB = 1e9

# Nominal (not measured) power and price figures; each is an assumption stated here.
NOMINAL: dict[str, Any] = {
    # ~6-8 W per core at full load for server x86 CPUs (e.g. 28-40 cores at 205-270 W TDP);
    # idle taken as 2 W per core. Assumption, not a reading.
    "cpu_busy_w_per_core": 7.0,
    "cpu_idle_w_per_core": 2.0,
    # DDR4 RDIMMs draw ~3 W per 8 GB module under load. Assumption.
    "dram_w_per_gb": 0.375,
    # RN sec. 1 NVMe Gen4 SSD, ~7 W active (mec_env.hardware _NVME_GEN4).
    "ssd_w": 7.0,
    # Order of public on-demand cloud prices per vCPU-hour (assumption).
    "cpu_price_per_core_hour_usd": 0.04,
    # A CUDA GPU not among mec_env.hardware.GPU_PRESETS (assumption): 300 W busy, 30 W idle,
    # $2/h. A GPU whose name contains a preset's key (a6000, a100, h100, h20) takes that
    # preset's cited power and price.
    "gpu_busy_w": 300.0,
    "gpu_idle_w": 30.0,
    "gpu_price_per_hour_usd": 2.0,
}

_PRESET_MATCH = (("h100", "h100"), ("h20", "h20"), ("a100", "a100-80"), ("a6000", "a6000"))


def _sig(x: float, digits: int = 4) -> float:
    """``x`` rounded to ``digits`` significant digits (readable YAML)."""
    return float(f"{x:.{digits}g}")


def _best_time(fn: Callable[[], Any], reps: int, min_total_s: float, sync=None) -> float:
    """Best wall time of ``fn`` over at least ``reps`` calls (and ``min_total_s`` in all)."""
    fn()  # warm up
    if sync is not None:
        sync()
    best = float("inf")
    start = time.perf_counter()
    n = 0
    while n < reps or (time.perf_counter() - start < min_total_s and n < 50 * reps):
        t0 = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        best = min(best, time.perf_counter() - t0)
        n += 1
    return best


# --------------------------------------------------------------------------------------------
# CPU and memory
# --------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _dram_gb() -> float:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / GB
    except (ValueError, OSError, AttributeError):
        return 1.0


def _memory_bandwidths(size_bytes: int, reps: int) -> dict[str, float]:
    """DRAM read (sum of a large fp32 tensor) and memcpy (bytes copied / s), GB/s."""
    import torch

    src = torch.ones(size_bytes // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    read_s = _best_time(lambda: src.sum(), reps, 0.0)
    copy_s = _best_time(lambda: dst.copy_(src), reps, 0.0)
    return {"memory_read_gbps": size_bytes / read_s / GB, "memcpy_gbps": size_bytes / copy_s / GB}


def _matmul_flops(
    n: int, dtypes: Sequence[torch.dtype], device: str, reps: int, min_s: float
) -> dict[str, float]:
    """Best n x n matmul FLOP/s per dtype (2 n^3 per product); dtypes that fail are left out."""
    import torch

    out: dict[str, float] = {}
    sync = torch.cuda.synchronize if device == "cuda" else None
    for dt in dtypes:
        try:
            a = torch.randn(n, n, device=device).to(dt)
            b = torch.randn(n, n, device=device).to(dt)
            t0 = time.perf_counter()
            torch.matmul(a, b)
            if sync is not None:
                sync()
            single_s = time.perf_counter() - t0
            r = 1 if single_s > 1.0 else reps  # slow emulated dtype: keep the run short
            best = _best_time(lambda a=a, b=b: torch.matmul(a, b), r, min_s, sync)
        except (RuntimeError, TypeError):
            continue
        out[str(dt).removeprefix("torch.")] = 2.0 * n**3 / best
    return out


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------

_CHUNK = 4 << 20  # 4 MiB reads (a multiple of any O_DIRECT alignment)


def _read_all(fd: int, size: int, buf: Any) -> None:
    view = memoryview(buf)
    off = 0
    while off < size:
        n = os.preadv(fd, [view], off)
        if n <= 0:
            raise OSError(f"short read at offset {off} of {size}")
        off += n


def _file_bandwidths(size_bytes: int, directory: str, reps: int) -> dict[str, Any]:
    """Write (with fsync), page-cache read and best-effort disk read of a temp file, GB/s."""
    size = max(_CHUNK, size_bytes // _CHUNK * _CHUNK)
    chunk = np.random.default_rng(0).integers(0, 256, _CHUNK, dtype=np.uint8).tobytes()
    buf = mmap.mmap(-1, _CHUNK)  # page-aligned: usable for O_DIRECT
    fd_tmp, path = tempfile.mkstemp(prefix="devices-profile-", dir=directory)
    try:
        t0 = time.perf_counter()
        with os.fdopen(fd_tmp, "wb", buffering=0) as fh:
            for _ in range(size // _CHUNK):
                fh.write(chunk)
            os.fsync(fh.fileno())
        write_gbps = size / (time.perf_counter() - t0) / GB
        fd = os.open(path, os.O_RDONLY)
        try:
            cached_s = _best_time(lambda: _read_all(fd, size, buf), reps, 0.0)
        finally:
            os.close(fd)
        cached_gbps = size / cached_s / GB
        disk_gbps, method = _disk_read(path, size, buf, reps)
    finally:
        buf.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
    return {
        "file_write_gbps": write_gbps,
        "file_read_page_cache_gbps": cached_gbps,
        "file_read_disk_gbps": disk_gbps,
        "disk_read_method": method,
        "file_test_bytes": size,
        "file_test_dir": directory,
    }


def _disk_read(path: str, size: int, buf: Any, reps: int) -> tuple[float, str]:
    """Read bypassing the page cache: O_DIRECT, else fadvise(DONTNEED), else the page cache."""
    o_direct = getattr(os, "O_DIRECT", 0)
    if o_direct:
        try:
            fd = os.open(path, os.O_RDONLY | o_direct)
        except OSError:
            fd = -1
        if fd >= 0:
            try:
                best = _best_time(lambda: _read_all(fd, size, buf), max(1, reps // 2), 0.0)
                return size / best / GB, "o_direct"
            except OSError:
                pass
            finally:
                os.close(fd)
    if hasattr(os, "posix_fadvise"):
        fd = os.open(path, os.O_RDONLY)
        try:
            best = float("inf")
            for _ in range(max(1, reps // 2)):
                os.posix_fadvise(fd, 0, size, os.POSIX_FADV_DONTNEED)
                t0 = time.perf_counter()
                _read_all(fd, size, buf)
                best = min(best, time.perf_counter() - t0)
            return size / best / GB, "fadvise_dontneed (best effort: pages may stay cached)"
        finally:
            os.close(fd)
    fd = os.open(path, os.O_RDONLY)
    try:
        best = _best_time(lambda: _read_all(fd, size, buf), reps, 0.0)
    finally:
        os.close(fd)
    return size / best / GB, "page_cache (no way to bypass it here)"


# --------------------------------------------------------------------------------------------
# Links and CUDA
# --------------------------------------------------------------------------------------------


def _link_pacing(rates_gbps: Sequence[float], seconds_each: float, transfers: int) -> list[dict]:
    """Requested vs achieved GB/s of a paced :class:`Link` (wall clock around the transfers)."""
    rows = []
    for rate in rates_gbps:
        link = Link(f"pacing-{rate:g}", rate)
        nbytes = max(1, int(rate * GB * seconds_each / transfers))
        t0 = time.perf_counter()
        for _ in range(transfers):
            link.transfer(nbytes)
        elapsed = time.perf_counter() - t0
        achieved = nbytes * transfers / elapsed / GB
        rows.append(
            {
                "requested_gbps": _sig(rate),
                "achieved_gbps": _sig(achieved),
                "rel_error": _sig(achieved / rate - 1.0, 3),
                "transfer_bytes": nbytes,
                "transfers": transfers,
                "seconds": _sig(elapsed),
            }
        )
    return rows


def _cuda_read_s(size: int) -> float:
    """Best time to sum ``size`` bytes of fp32 on the GPU (HBM read)."""
    import torch

    x = torch.ones(size // 4, dtype=torch.float32, device="cuda")
    return _best_time(lambda: x.sum(), 5, 0.0, torch.cuda.synchronize)


def _cuda_host_copy_s(size: int) -> tuple[float, float]:
    """Best host-to-device and device-to-host times for ``size`` bytes of pinned memory."""
    import torch

    host = torch.empty(size, dtype=torch.uint8).pin_memory()
    dev = torch.empty(size, dtype=torch.uint8, device="cuda")
    sync = torch.cuda.synchronize
    h2d_s = _best_time(lambda: dev.copy_(host, non_blocking=True), 5, 0.0, sync)
    d2h_s = _best_time(lambda: host.copy_(dev, non_blocking=True), 5, 0.0, sync)
    return h2d_s, d2h_s


def _cuda_figures(quick: bool) -> dict[str, Any]:
    import torch

    props = torch.cuda.get_device_properties(0)
    n = 4096 if quick else 8192
    flops = _matmul_flops(
        n, (torch.float32, torch.bfloat16, torch.float16), "cuda", 3 if quick else 10, 0.0
    )
    size = (256 << 20) if quick else (2 << 30)
    h_size = (64 << 20) if quick else (512 << 20)
    read_s = _cuda_read_s(size)
    h2d_s, d2h_s = _cuda_host_copy_s(h_size)
    torch.cuda.empty_cache()
    return {
        "name": props.name,
        "memory_gb": props.total_memory / GB,
        "multiprocessors": props.multi_processor_count,
        "matmul_flops": flops,
        "matmul_n": n,
        "hbm_read_gbps": size / read_s / GB,
        "h2d_gbps": h_size / h2d_s / GB,
        "d2h_gbps": h_size / d2h_s / GB,
    }


# --------------------------------------------------------------------------------------------
# Profile
# --------------------------------------------------------------------------------------------


def _round_tree(x: Any) -> Any:
    if isinstance(x, float):
        return _sig(x)
    if isinstance(x, dict):
        return {k: _round_tree(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_round_tree(v) for v in x]
    return x


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "machine"


def measure(quick: bool = False, tmpdir: str | None = None, name: str | None = None) -> dict:
    """Measure this machine; returns the profile (``server``, ``measured``, ``machine``,
    ``nominal``) as plain data, ready for :func:`write_profile`."""
    import torch

    from mec_env.hardware import GPU_PRESETS

    directory = tmpdir if tmpdir is not None else tempfile.gettempdir()
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
        raise ValueError(f"tmpdir must be a writable directory, got {directory!r}")
    cores = os.cpu_count() or 1
    dram_gb = _dram_gb()
    measured: dict[str, Any] = {}
    mem_bytes = (64 << 20) if quick else (512 << 20)
    measured.update(_memory_bandwidths(mem_bytes, 5 if quick else 10))
    measured["memory_test_bytes"] = mem_bytes
    n = 512 if quick else 1024
    measured["cpu_matmul_flops"] = _matmul_flops(
        n, (torch.float32, torch.bfloat16, torch.float16), "cpu", 3, 0.05 if quick else 0.5
    )
    measured["cpu_matmul_n"] = n
    measured.update(_file_bandwidths((32 << 20) if quick else (512 << 20), directory, 3))
    disk = shutil.disk_usage(directory)
    measured["disk_total_gb"] = disk.total / GB
    measured["link_pacing"] = _link_pacing(
        (0.5, 2.0, 8.0), 0.02 if quick else 0.2, 4 if quick else 10
    )
    cuda = torch.cuda.is_available()
    if cuda:
        measured["gpu"] = _cuda_figures(quick)

    cpu_flops = measured["cpu_matmul_flops"]
    nominal = {"note": "assumptions, not readings (devices/profile.py NOMINAL)", **NOMINAL}
    if cuda:
        g = measured["gpu"]
        preset = next(
            (GPU_PRESETS[key] for sub, key in _PRESET_MATCH if sub in g["name"].lower()), None
        )
        half = [v for k, v in g["matmul_flops"].items() if k in ("bfloat16", "float16")]
        gpu = {
            "name": _slug(g["name"]),
            "flops": max(half or g["matmul_flops"].values()),
            "hbm_gbps": g["hbm_read_gbps"],
            "hbm_gb": g["memory_gb"],
            "power_busy_w": preset.power_busy_w if preset else NOMINAL["gpu_busy_w"],
            "power_idle_w": preset.power_idle_w if preset else NOMINAL["gpu_idle_w"],
            "price_per_hour_usd": (
                preset.price_per_hour_usd if preset else NOMINAL["gpu_price_per_hour_usd"]
            ),
        }
        nominal["gpu_power_source"] = (
            f"mec_env.hardware.GPU_PRESETS[{preset.name!r}]" if preset else "NOMINAL gpu_*"
        )
        gpu_host_gbps = g["h2d_gbps"]
        host_power_w = cores * NOMINAL["cpu_busy_w_per_core"] + dram_gb * NOMINAL["dram_w_per_gb"]
    else:
        gpu = {
            "name": f"cpu-{_slug(_cpu_model())}",
            "flops": max(cpu_flops.values()),
            "hbm_gbps": measured["memory_read_gbps"],
            "hbm_gb": dram_gb,
            "power_busy_w": cores * NOMINAL["cpu_busy_w_per_core"],
            "power_idle_w": cores * NOMINAL["cpu_idle_w_per_core"],
            "price_per_hour_usd": cores * NOMINAL["cpu_price_per_core_hour_usd"],
        }
        nominal["gpu_power_source"] = "NOMINAL cpu_*_w_per_core x cores (the CPU is the gpu)"
        gpu_host_gbps = measured["memcpy_gbps"]
        host_power_w = dram_gb * NOMINAL["dram_w_per_gb"]
    measured["gpu_flops_dtype"] = (
        "best of bfloat16/float16 on the GPU"
        if cuda
        else f"best CPU dtype: {max(cpu_flops, key=cpu_flops.__getitem__)}"
    )
    disk_read = measured["file_read_disk_gbps"]
    server = {
        "name": name or f"measured-{_slug(platform.node() or 'host')}",
        "gpu": gpu,
        "host": {
            "dram_gbps": measured["memory_read_gbps"],
            "dram_gb": dram_gb,
            "cpu_flops": cpu_flops.get("float32", max(cpu_flops.values())),
            "power_w": host_power_w,
        },
        "gpu_host_gbps": gpu_host_gbps,
        "ssd": {
            "read_gbps": disk_read,
            "write_gbps": measured["file_write_gbps"],
            "capacity_gb": measured["disk_total_gb"],
            "power_w": NOMINAL["ssd_w"],
        },
        "tier": "edge",
        "expert_cache_gb": 0.25 * gpu["hbm_gb"],  # a quarter of fast memory (assumption)
    }
    machine = {
        "cpu_model": _cpu_model(),
        "cores": cores,
        "dram_gb": dram_gb,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "numpy": str(np.__version__),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if cuda else None,
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "quick": bool(quick),
    }
    profile = {
        "server": _round_tree(server),
        "measured": _round_tree(measured),
        "machine": _round_tree(machine),
        "nominal": nominal,
    }
    profile_to_server_spec(profile)  # every figure must make a valid spec
    return profile


_HEADER = """\
# Hardware profile written by `python -m devices.profile` ({date}).
# server: a mec_env.hardware.ServerSpec mapping (paste into a scenario's servers: list).
# {gpu_note}
# Powers and price are NOMINAL (not measured): see nominal:. GB = 1e9 bytes.
"""


def write_profile(profile: Mapping[str, Any], path: str | os.PathLike[str]) -> str:
    """Write ``profile`` as commented YAML to ``path``; returns the text."""
    gpu_note = (
        "gpu: the CUDA device measured here."
        if profile["measured"].get("gpu")
        else "CPU-only machine: gpu is the CPU (flops = CPU matmul, hbm = DRAM)."
    )
    text = _HEADER.format(date=profile["machine"]["date_utc"], gpu_note=gpu_note)
    text += yaml.safe_dump(dict(profile), sort_keys=False, default_flow_style=False)
    Path(path).write_text(text)
    return text


def load_profile(path: str | os.PathLike[str]) -> dict:
    """Read a profile YAML; ValueError naming the file and problem if it is not one."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"profile {str(path)!r}: {err}".replace("\n", " ")) from None
    if not isinstance(data, dict) or not isinstance(data.get("server"), dict):
        raise ValueError(f"profile {str(path)!r} must be a mapping with a server: mapping")
    return data


def profile_to_server_spec(profile: Mapping[str, Any] | str | os.PathLike[str]) -> ServerSpec:
    """The profile's ``server`` section as a validated :class:`ServerSpec` (or a path to one)."""
    from mec_env.hardware import ServerSpec

    if not isinstance(profile, Mapping):
        profile = load_profile(profile)
    if "server" not in profile:
        raise ValueError(f"profile must have a server: mapping, got keys {sorted(profile)}")
    return ServerSpec.from_dict(profile["server"], "server")


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _check_out(path: str) -> None:
    from mec_env.cli import fail

    p = Path(path)
    if p.is_dir():
        fail(f"--out must be a file path, got the directory {path!r}")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        fail(f"--out {path!r}: directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        fail(f"--out {path!r} is not writable")


def build_parser() -> argparse.ArgumentParser:
    from mec_env.cli import OneLineArgumentParser

    ap = OneLineArgumentParser(
        prog="python -m devices.profile",
        description=__doc__.splitlines()[0],
    )
    ap.add_argument("--out", required=True, help="YAML file to write")
    ap.add_argument("--quick", action="store_true", help="small sizes (seconds; for tests)")
    ap.add_argument(
        "--tmpdir", default=None, help="directory whose file system is measured (default: TMP)"
    )
    ap.add_argument("--name", default=None, help="server name (default: measured-<hostname>)")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    from mec_env.cli import fail

    args = build_parser().parse_args(argv)
    _check_out(args.out)
    if args.tmpdir is not None and not (
        os.path.isdir(args.tmpdir) and os.access(args.tmpdir, os.W_OK)
    ):
        fail(f"--tmpdir must be a writable directory, got {args.tmpdir!r}")
    try:
        profile = measure(quick=args.quick, tmpdir=args.tmpdir, name=args.name)
    except ValueError as err:
        fail(str(err))
    try:
        write_profile(profile, args.out)
    except OSError as err:
        fail(f"--out {args.out!r}: {err.strerror or err}")
    s, m = profile["server"], profile["measured"]
    print(
        f"wrote {args.out}: gpu {s['gpu']['name']} {s['gpu']['flops'] / 1e12:.3g} TFLOP/s, "
        f"{s['gpu']['hbm_gbps']:.3g} GB/s; DRAM read {m['memory_read_gbps']:.3g} GB/s; "
        f"file read {m['file_read_page_cache_gbps']:.3g} GB/s cached, "
        f"{m['file_read_disk_gbps']:.3g} GB/s {m['disk_read_method'].split()[0]}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
