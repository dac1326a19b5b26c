"""Request arrivals: Poisson per device (or a CSV trace), log-normal lengths, a model mix.

Requests are drawn in blocks for many environments at once (leading axis = environment), from the
Generator the environment was reset with, so a step only indexes arrays.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mec_env import network as net

__all__ = ["RequestBlock", "Trace", "load_trace", "sample_requests"]


@dataclass
class RequestBlock:
    """``count`` upcoming requests for each of ``N`` environments; arrays of shape (N, count)."""

    gap_s: np.ndarray  # time from the previous request to this one
    device: np.ndarray  # int, index into scenario.devices
    model: np.ndarray  # int, index into scenario.models
    prompt_tokens: np.ndarray  # int (0 for vision models)
    output_tokens: np.ndarray  # int (frames for vision models)
    gain: np.ndarray  # linear channel power gain of the device's wireless hop


@dataclass(frozen=True)
class Trace:
    time_s: np.ndarray
    device: np.ndarray
    model: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray


@functools.lru_cache(maxsize=16)
def _read_trace(path: str, mtime: float, models: tuple[str, ...], num_devices: int) -> Trace:
    rows = []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        need = {"time_s", "device", "model", "prompt_tokens", "output_tokens"}
        if reader.fieldnames is None or not need <= set(reader.fieldnames):
            raise ValueError(
                f"workload.trace_path {path!r} must have the columns {sorted(need)}, got {reader.fieldnames}"
            )
        for line, row in enumerate(reader, start=2):
            try:
                t, d = float(row["time_s"]), int(row["device"])
                p, o = int(row["prompt_tokens"]), int(row["output_tokens"])
            except ValueError:
                raise ValueError(
                    f"workload.trace_path {path!r} line {line}: bad number in {dict(row)}"
                ) from None
            if row["model"] not in models:
                raise ValueError(
                    f"workload.trace_path {path!r} line {line}: model must be one of {list(models)}, got {row['model']!r}"
                )
            if not 0 <= d < num_devices or p < 0 or o < 1 or not np.isfinite(t):
                raise ValueError(
                    f"workload.trace_path {path!r} line {line}: values out of range in {dict(row)}"
                )
            rows.append((t, d, models.index(row["model"]), p, o))
    if not rows:
        raise ValueError(f"workload.trace_path {path!r} has no requests")
    arr = np.array(rows, dtype=float)
    order = np.argsort(arr[:, 0], kind="stable")
    arr = arr[order]
    return Trace(
        arr[:, 0],
        arr[:, 1].astype(np.int64),
        arr[:, 2].astype(np.int64),
        arr[:, 3].astype(np.int64),
        arr[:, 4].astype(np.int64),
    )


def load_trace(scenario) -> Trace | None:
    """The scenario's trace (cached), or None for Poisson arrivals."""
    path = scenario.workload.trace_path
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"workload.trace_path must name an existing CSV file, got {path!r}")
    return _read_trace(
        str(p.resolve()),
        p.stat().st_mtime,
        tuple(m.name for m in scenario.models),
        len(scenario.devices),
    )


def _lognormal_tokens(rng, shape, median, sigma, lo, hi) -> np.ndarray:
    z = rng.standard_normal(shape)
    return np.clip(np.rint(median * np.exp(sigma * z)), lo, hi).astype(np.int64)


def sample_requests(
    rng: np.random.Generator,
    scenario,
    count: int,
    distance_m: np.ndarray,
    shadowing_db: np.ndarray,
    trace_cursor: np.ndarray | None = None,
) -> RequestBlock:
    """Draw ``count`` requests for each environment.

    Args:
        rng: the environments' Generator.
        scenario: the scenario.
        count: requests per environment.
        distance_m, shadowing_db: (N, num_devices) per-episode device placement.
        trace_cursor: (N,) int positions in the trace (advanced in place), for trace workloads.
    """
    w = scenario.workload
    n = distance_m.shape[0]
    shape = (n, count)
    is_cnn = np.array([m.kind == "cnn" for m in scenario.models])
    trace = load_trace(scenario)
    if trace is None:
        total_rate_hz = w.arrival_rate_hz * len(scenario.devices)
        gap = rng.exponential(1.0 / total_rate_hz, shape)
        device = rng.integers(0, len(scenario.devices), shape)
        names = [m.name for m in scenario.models]
        weights = np.array([w.mix.get(name, 0.0) for name in names])
        model = rng.choice(len(names), size=shape, p=weights / weights.sum())
        prompt = _lognormal_tokens(
            rng,
            shape,
            w.prompt_tokens_median,
            w.prompt_tokens_sigma,
            w.prompt_tokens_min,
            w.prompt_tokens_max,
        )
        output = _lognormal_tokens(
            rng,
            shape,
            w.output_tokens_median,
            w.output_tokens_sigma,
            w.output_tokens_min,
            w.output_tokens_max,
        )
    else:
        m = len(trace.time_s)
        idx = (trace_cursor[:, None] + np.arange(count)) % m
        prev = (idx - 1) % m
        span = (
            trace.time_s[-1]
            - trace.time_s[0]
            + (trace.time_s[-1] - trace.time_s[0]) / max(m - 1, 1)
        )
        gap = np.where(
            idx > 0,
            trace.time_s[idx] - trace.time_s[prev],
            trace.time_s[0] + span - trace.time_s[-1],
        )
        gap = np.maximum(gap, 0.0)
        device, model = trace.device[idx], trace.model[idx]
        prompt, output = trace.prompt_tokens[idx], trace.output_tokens[idx]
        trace_cursor += count
    prompt = np.where(is_cnn[model], 0, prompt)
    rows = np.arange(n)[:, None]
    gain = net.sample_channel_gain(
        rng, scenario.network, distance_m[rows, device], shadowing_db[rows, device]
    )
    return RequestBlock(gap, device, model, prompt, output, gain)
