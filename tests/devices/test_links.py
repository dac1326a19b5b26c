"""devices.links: byte counting, pacing accuracy, validation."""

from __future__ import annotations

import statistics
import threading
import time

import numpy as np
import pytest
import torch

from devices import links
from devices.links import GB, Link, pace_scale


@pytest.mark.parametrize(
    ("dtype", "shape"),
    [
        (torch.float16, (3, 5)),
        (torch.bfloat16, (7,)),
        (torch.float32, (2, 3, 4)),
        (torch.int8, (1000,)),
        (torch.int64, (4, 4)),
        (torch.float64, ()),
        (torch.float32, (0, 8)),
    ],
)
def test_send_counts_tensor_payload_exactly(dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    link = Link("pcie")
    x = torch.zeros(shape, dtype=dtype)
    assert link.send(x) is x
    assert link.bytes_total == x.numel() * x.element_size()
    assert link.transfers == 1


def test_send_counts_views_not_storage() -> None:
    link = Link("pcie")
    base = torch.zeros(100, 64, dtype=torch.float16)
    link.send(base[10:20, ::2])  # a strided view: only its own elements cross
    assert link.bytes_total == 10 * 32 * 2


def test_send_counts_arrays_bytes_and_nested_tuples() -> None:
    link = Link("net")
    k = torch.ones(4, 16, dtype=torch.float16)
    v = torch.ones(4, 16, dtype=torch.float16)
    arr = np.zeros((3, 3), dtype=np.float32)
    payload = (k, [v, arr], b"abcde", bytearray(7), memoryview(bytes(11)))
    assert link.send(payload) is payload
    assert link.bytes_total == 128 + 128 + 36 + 5 + 7 + 11
    assert link.transfers == 1
    link.send(())
    assert link.transfers == 2 and link.bytes_total == 315


def test_send_rejects_unknown_types() -> None:
    with pytest.raises(TypeError, match="got int"):
        Link("net").send(3)


def test_unpaced_link_never_sleeps(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(_s: float) -> None:
        raise AssertionError("an unpaced link slept")

    monkeypatch.setattr(links.time, "sleep", boom)
    link = Link("count-only")
    t0 = time.perf_counter()
    blocked = [link.transfer(10**9) for _ in range(100)]
    assert time.perf_counter() - t0 < 0.05
    assert blocked == [0.0] * 100
    assert link.bytes_total == 100 * 10**9
    assert link.busy_s == 0.0


def test_paced_link_total_time_matches_bandwidth() -> None:
    link = Link("csd-external", gbps=1.0)
    nbytes, n = 1_000_000, 20
    predicted_s = n * nbytes / (1.0 * GB)  # 20 ms
    t0 = time.perf_counter()
    blocked = [link.transfer(nbytes) for _ in range(n)]
    elapsed_s = time.perf_counter() - t0
    assert 0.97 * predicted_s <= elapsed_s <= 1.5 * predicted_s
    assert sum(blocked) == pytest.approx(elapsed_s, rel=0.05)
    assert link.busy_s == pytest.approx(predicted_s, rel=1e-12)
    assert link.bytes_total == n * nbytes and link.transfers == n


def test_paced_single_transfer_accuracy() -> None:
    link = Link("ssd", gbps=2.0)
    ratios = []
    for _ in range(15):
        link.reset()  # a fresh clock: each transfer starts now
        ratios.append(link.transfer(2_000_000) / 1e-3)  # 1 ms each
    # Never early; the median is close even on a shared 2-core machine (generous bound).
    assert min(ratios) >= 0.999
    assert statistics.median(ratios) <= 1.2


def test_latency_added_once_per_transfer() -> None:
    link = Link("wan", gbps=10.0, latency_s=2e-3)
    t0 = time.perf_counter()
    for _ in range(5):
        link.transfer(1_000_000)  # 0.1 ms of serialisation + 2 ms latency
    elapsed_s = time.perf_counter() - t0
    predicted_s = 5 * (2e-3 + 1e-4)
    assert 0.97 * predicted_s <= elapsed_s <= 1.5 * predicted_s
    assert link.busy_s == pytest.approx(predicted_s)


def test_concurrent_senders_share_the_link() -> None:
    link = Link("shared", gbps=1.0)

    def sender() -> None:
        for _ in range(5):
            link.send(np.zeros(1_000_000, dtype=np.uint8))

    threads = [threading.Thread(target=sender) for _ in range(4)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed_s = time.perf_counter() - t0
    assert link.bytes_total == 20_000_000 and link.transfers == 20
    assert 0.97 * 0.020 <= elapsed_s <= 1.5 * 0.020


def test_idle_gap_is_not_credited() -> None:
    link = Link("x", gbps=1.0)
    link.transfer(1_000_000)
    time.sleep(0.01)  # the link sat idle; the next transfer still takes its full 1 ms
    assert link.transfer(1_000_000) >= 0.999e-3


def test_bytes_ready_before_a_late_sender_are_sent_back_to_back() -> None:
    """A sender that calls late (its thread was descheduled) with bytes that were ready
    earlier does not leave the link idle: they start when the link was free, not at the call;
    without ``ready_at`` the gap counts as idle."""
    mb = 1_000_000
    for ready in (True, False):
        link = Link("l", gbps=1.0)  # 1 ms per MB
        link.transfer(mb)
        free_at = link._free_at
        time.sleep(0.005)  # the sender is late by ~4 ms
        link.transfer(mb, ready_at=free_at - 0.0005 if ready else None)
        gap = link._free_at - free_at - mb / GB
        if ready:
            assert gap == pytest.approx(0.0, abs=1e-9)
        else:
            assert gap > 0.003


def test_reset_and_stats() -> None:
    link = Link("pcie", gbps=100.0, latency_s=1e-5)
    link.send(torch.zeros(1000, dtype=torch.float32))
    stats = link.stats()
    assert stats == {
        "name": "pcie",
        "gbps": 100.0,
        "bytes": 4000,
        "transfers": 1,
        "busy_s": pytest.approx(1e-5 + 4000 / (100.0 * GB)),
    }
    link.reset()
    assert link.stats() == {
        "name": "pcie",
        "gbps": 100.0,
        "bytes": 0,
        "transfers": 0,
        "busy_s": 0.0,
    }


@pytest.mark.parametrize("gbps", [0, -1, float("nan"), float("inf"), "1"])
def test_invalid_gbps_raises(gbps: object) -> None:
    with pytest.raises(ValueError, match="gbps"):
        Link("x", gbps=gbps)  # type: ignore[arg-type]


@pytest.mark.parametrize("latency_s", [-1e-3, float("nan"), float("inf")])
def test_invalid_latency_raises(latency_s: float) -> None:
    with pytest.raises(ValueError, match="latency_s"):
        Link("x", gbps=1.0, latency_s=latency_s)


@pytest.mark.parametrize("nbytes", [-1, 1.5, True])
def test_invalid_nbytes_raises(nbytes: object) -> None:
    with pytest.raises(ValueError, match="nbytes"):
        Link("x").transfer(nbytes)  # type: ignore[arg-type]


def test_invalid_name_raises() -> None:
    with pytest.raises(ValueError, match="name"):
        Link("")


def test_pace_scale_keeps_ratio_under_read_bandwidth() -> None:
    # A CSD with 8 GB/s inside and 2 GB/s outside on a machine that reads at 4 GB/s.
    s = pace_scale(8.0, 2.0, 4.0, target_fraction=0.5)
    assert s == pytest.approx(0.25)
    assert 8.0 * s == pytest.approx(2.0) and (8.0 * s) / (2.0 * s) == pytest.approx(4.0)
    assert pace_scale(1.0, 0.5, 100.0) == 1.0  # already slower than the machine
    with pytest.raises(ValueError, match="measured_read_gbps"):
        pace_scale(1.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="target_fraction"):
        pace_scale(1.0, 1.0, 1.0, target_fraction=1.5)
