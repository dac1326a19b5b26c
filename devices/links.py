"""Emulated links: every byte that crosses one is counted, and a link can be paced.

A paced link keeps a virtual clock: a transfer starts when both the caller and the link are free
(``start = max(now, free_at)``), occupies the link for ``latency_s + nbytes / (gbps * GB)`` and the
caller blocks until the link would have finished sending. Concurrent senders therefore queue as on
a real wire. The wait sleeps for the bulk and spins on :func:`time.perf_counter` for the last
~200 us, so a transfer of 1 ms or more ends within a few microseconds of its due time on an idle
machine. An unpaced link (``gbps=None``) only counts and never sleeps.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from typing import Any

GB = 1e9  # the project uses decimal GB/s everywhere

_SPIN_S = 200e-6  # the last stretch of a wait is spun, not slept: sleep() overshoots by ~50-100 us


def _payload_bytes(obj: Any) -> int:
    """Payload bytes of a tensor, array, bytes-like object, or a tuple/list of those."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    np = sys.modules.get("numpy")
    if np is not None and isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, (bytes, bytearray)):
        return len(obj)
    if isinstance(obj, memoryview):
        return obj.nbytes
    if isinstance(obj, (tuple, list)):
        return sum(_payload_bytes(item) for item in obj)
    raise TypeError(
        "obj must be a torch.Tensor, numpy.ndarray, bytes, bytearray, memoryview or a tuple/list "
        f"of those, got {type(obj).__name__}"
    )


def _wait_until(deadline: float) -> float:
    """Block until ``time.perf_counter() >= deadline``; return the time it returned at."""
    now = time.perf_counter()
    remaining = deadline - now
    if remaining > _SPIN_S:
        time.sleep(remaining - _SPIN_S)
    while (now := time.perf_counter()) < deadline:
        pass
    return now


class Link:
    """A named link that counts bytes and, when ``gbps`` is set, paces transfers (thread-safe)."""

    def __init__(self, name: str, gbps: float | None = None, latency_s: float = 0.0) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        if gbps is not None and not (
            isinstance(gbps, (int, float)) and math.isfinite(gbps) and gbps > 0
        ):
            raise ValueError(f"gbps must be > 0 and finite (or None for unpaced), got {gbps!r}")
        if not (
            isinstance(latency_s, (int, float)) and math.isfinite(latency_s) and latency_s >= 0
        ):
            raise ValueError(f"latency_s must be >= 0 and finite, got {latency_s!r}")
        self._name = name
        self._gbps = None if gbps is None else float(gbps)
        self._latency_s = float(latency_s)
        self._lock = threading.Lock()
        self._free_at = 0.0  # perf_counter time at which the link finishes its queued transfers
        self._bytes_total = 0
        self._transfers = 0
        self._busy_s = 0.0

    @property
    def name(self) -> str:
        return self._name

    @property
    def gbps(self) -> float | None:
        """Paced bandwidth in decimal GB/s, or None when the link only counts."""
        return self._gbps

    @property
    def latency_s(self) -> float:
        return self._latency_s

    @property
    def paced(self) -> bool:
        return self._gbps is not None

    @property
    def bytes_total(self) -> int:
        """Bytes counted since creation or the last :meth:`reset`."""
        return self._bytes_total

    @property
    def transfers(self) -> int:
        return self._transfers

    @property
    def busy_s(self) -> float:
        """Modelled seconds the link was occupied (latency + serialisation); 0.0 when unpaced."""
        return self._busy_s

    def transfer(self, nbytes: int, ready_at: float | None = None) -> float:
        """Count ``nbytes`` crossing the link; when paced, block until the link would have sent
        them. Return the seconds this call blocked (0.0 when unpaced). ``ready_at`` (a
        :func:`time.perf_counter` time, at most now): when the bytes were ready to send, if
        earlier than this call (a sender thread that woke late, on a machine with fewer cores
        than busy threads, does not leave the emulated link idle)."""
        if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
            raise ValueError(f"nbytes must be an int >= 0, got {nbytes!r}")
        called_at = time.perf_counter()
        ready = called_at if ready_at is None else min(called_at, ready_at)
        with self._lock:
            self._bytes_total += nbytes
            self._transfers += 1
            if self._gbps is None:
                return 0.0
            duration_s = self._latency_s + nbytes / (self._gbps * GB)
            start = max(ready, self._free_at)
            self._free_at = start + duration_s
            self._busy_s += duration_s
            deadline = self._free_at
        return _wait_until(deadline) - called_at

    def send(self, obj: Any) -> Any:
        """:meth:`transfer` the payload bytes of ``obj`` (tensor numel * element_size, array
        nbytes, bytes length, summed over a tuple/list) and return ``obj`` unchanged."""
        self.transfer(_payload_bytes(obj))
        return obj

    def reset(self) -> None:
        """Zero the counters and the link's clock."""
        with self._lock:
            self._free_at = 0.0
            self._bytes_total = 0
            self._transfers = 0
            self._busy_s = 0.0

    def stats(self) -> dict[str, Any]:
        """``{"name", "gbps", "bytes", "transfers", "busy_s"}``."""
        with self._lock:
            return {
                "name": self._name,
                "gbps": self._gbps,
                "bytes": self._bytes_total,
                "transfers": self._transfers,
                "busy_s": self._busy_s,
            }

    def __repr__(self) -> str:
        pace = "unpaced" if self._gbps is None else f"{self._gbps:g} GB/s"
        return f"Link({self._name!r}, {pace}, latency_s={self._latency_s:g})"


def pace_scale(
    internal_gbps: float,
    external_gbps: float,
    measured_read_gbps: float,
    target_fraction: float = 0.5,
) -> float:
    """Factor to multiply both link bandwidths by so the faster one runs at ``target_fraction``
    of this machine's measured read bandwidth, keeping their ratio (1.0 if they already fit).

    Pacing, not the machine's own storage, then sets the speed, so a CSD's internal/external
    bandwidth ratio is reproduced on any machine."""
    for field, value in (
        ("internal_gbps", internal_gbps),
        ("external_gbps", external_gbps),
        ("measured_read_gbps", measured_read_gbps),
    ):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{field} must be > 0 and finite, got {value!r}")
    if not (isinstance(target_fraction, (int, float)) and 0 < target_fraction <= 1):
        raise ValueError(f"target_fraction must be in (0, 1], got {target_fraction!r}")
    return min(1.0, target_fraction * measured_read_gbps / max(internal_gbps, external_gbps))
