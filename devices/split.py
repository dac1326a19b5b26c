"""Split executor: head and tail of a real network in two processes, joined by a paced link.

The network is a small residual CNN (:func:`build_tiny_resnet`, CIFAR-sized 3x32x32 input) given
as an ``nn.Sequential`` of blocks; ``split_index = s`` runs ``blocks[:s]`` (the head, "device")
in one process and ``blocks[s:]`` (the tail, "server") in another. ``s = 0`` sends the raw input,
``s = len(blocks)`` sends the logits. Both processes are started with multiprocessing ``spawn``
by :class:`SplitExecutor` (a context manager) and build the model from the same
``model_builder(seed)``, so the split model equals the unsplit one.

The head sends each activation across a :class:`devices.links.Link` of ``link_gbps`` GB/s (1e9
bytes/s; counted and paced in the head process), then through a pipe as raw bytes. Bytes counted
on the link per request: fp32 ``numel * 4``; with the int8 bottleneck ``numel * 1 + 4 * scales``
(one fp32 scale per tensor, or one per channel = dim 1). Quantisation is symmetric,
``scale = max|x| / 127``, so each dequantised element is within ``scale / 2`` of the original.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import torch
from torch import nn

from devices.links import Link

__all__ = [
    "GRANULARITIES",
    "SplitExecutor",
    "build_tiny_resnet",
    "dequantize_int8",
    "quantize_int8",
    "split_model",
]

GRANULARITIES = ("tensor", "channel")
INPUT_SHAPE = (3, 32, 32)  # per sample, for build_tiny_resnet


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with batch norm and a (projected) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


def build_tiny_resnet(seed: int = 0, num_classes: int = 10) -> nn.Sequential:
    """A tiny ResNet for 3x32x32 inputs, in eval mode; blocks and their output shapes:

    0 stem 16x32x32, 1 block 16x32x32, 2 block 32x16x16, 3 block 64x8x8, 4 pool+flatten 64,
    5 linear ``num_classes``. Batch-norm statistics are randomised so they are not identity.
    """
    g = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed))
    model = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()),
        BasicBlock(16, 16),
        BasicBlock(16, 32, stride=2),
        BasicBlock(32, 64, stride=2),
        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
        nn.Linear(64, num_classes),
    )
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
            m.weight.data.copy_(1.0 + 0.1 * torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(m.num_features, generator=g))
    return model.eval()


def split_model(model: nn.Sequential, split_index: int) -> tuple[nn.Sequential, nn.Sequential]:
    """``(blocks[:split_index], blocks[split_index:])``; ValueError naming a bad index."""
    n = len(model)
    if isinstance(split_index, bool) or not isinstance(split_index, (int, np.integer)):
        raise ValueError(f"split_index must be an integer in [0, {n}], got {split_index!r}")
    if not 0 <= split_index <= n:
        raise ValueError(f"split_index must be in [0, {n}], got {split_index}")
    return model[:split_index], model[split_index:]


# --------------------------------------------------------------------------------------------
# int8 bottleneck
# --------------------------------------------------------------------------------------------


def quantize_int8(
    x: torch.Tensor, granularity: str = "tensor"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8: ``(q, scale)`` with ``x ~ q * scale``; scale fp32, ``[]`` or ``[C]``."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {list(GRANULARITIES)}, got {granularity!r}")
    x32 = x.detach().to(torch.float32)
    if granularity == "tensor" or x32.ndim < 2:
        amax = x32.abs().amax() if x32.numel() else torch.tensor(0.0)
    else:
        dims = [d for d in range(x32.ndim) if d != 1]
        amax = x32.abs().amax(dim=dims)
    scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
    q = torch.clamp(torch.round(x32 / _bcast(scale, x32)), -127, 127).to(torch.int8)
    return q, scale


def dequantize_int8(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """fp32 ``q * scale`` (inverse of :func:`quantize_int8`)."""
    return q.to(torch.float32) * _bcast(scale, q)


def _bcast(scale: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if scale.ndim == 0:
        return scale
    return scale.view([1, -1] + [1] * (x.ndim - 2))


# --------------------------------------------------------------------------------------------
# Wire format: raw bytes through the pipe
# --------------------------------------------------------------------------------------------


def _pack(t: torch.Tensor) -> tuple[bytes, tuple[int, ...], str]:
    a = t.detach().contiguous().numpy()
    return a.tobytes(), tuple(a.shape), a.dtype.str


def _unpack(packed: tuple[bytes, tuple[int, ...], str]) -> torch.Tensor:
    data, shape, dtype = packed
    return torch.from_numpy(np.frombuffer(data, dtype=np.dtype(dtype)).copy().reshape(shape))


# --------------------------------------------------------------------------------------------
# Workers (module level: spawn pickles them by reference)
# --------------------------------------------------------------------------------------------


def _head_worker(
    conn_in: Connection,
    conn_out: Connection,
    builder: Callable[[int], nn.Sequential],
    seed: int,
    split_index: int,
    link_gbps: float | None,
    latency_s: float,
    int8: bool,
    granularity: str,
    num_threads: int,
) -> None:
    try:
        torch.set_num_threads(num_threads)
        head, _ = split_model(builder(seed), split_index)
        link = Link("split", link_gbps, latency_s)
        conn_out.send(("ready", "head"))
        while True:
            msg = conn_in.recv()
            if msg is None:
                conn_out.send(("stop", link.stats()))
                return
            idx, packed = msg
            x = _unpack(packed)
            t0 = time.perf_counter()
            with torch.no_grad():
                act = head(x)
            head_s = time.perf_counter() - t0
            if int8:
                q, scale = quantize_int8(act, granularity)
                nbytes = q.numel() * q.element_size() + scale.numel() * scale.element_size()
                payload = (_pack(q), _pack(scale))
            else:
                nbytes = act.numel() * act.element_size()
                payload = (_pack(act), None)
            quant_s = time.perf_counter() - t0 - head_s
            link_s = link.transfer(nbytes)
            t1 = time.perf_counter()
            conn_out.send(("item", idx, payload, head_s, quant_s, link_s, nbytes, t1))
    except Exception:  # report to the parent through the tail, then exit
        conn_out.send(("error", "head", traceback.format_exc()))


def _tail_worker(
    conn_in: Connection,
    conn_out: Connection,
    builder: Callable[[int], nn.Sequential],
    seed: int,
    split_index: int,
    num_threads: int,
) -> None:
    try:
        torch.set_num_threads(num_threads)
        _, tail = split_model(builder(seed), split_index)
        conn_out.send(("ready", "tail"))
        while True:
            msg = conn_in.recv()
            if msg[0] != "item":
                conn_out.send(msg)  # ready / stop / error from the head: forward
                if msg[0] in ("stop", "error"):
                    return
                continue
            _, idx, (main, scale), head_s, quant_s, link_s, nbytes, t_sent = msg
            ipc_s = time.perf_counter() - t_sent
            t0 = time.perf_counter()
            act = _unpack(main)
            if scale is not None:
                act = dequantize_int8(act, _unpack(scale))
            dequant_s = time.perf_counter() - t0
            with torch.no_grad():
                out = tail(act)
            tail_s = time.perf_counter() - t0 - dequant_s
            timing = {
                "head_s": head_s,
                "quant_s": quant_s,
                "link_s": link_s,
                "ipc_s": ipc_s,
                "transfer_s": link_s + ipc_s,
                "dequant_s": dequant_s,
                "tail_s": tail_s,
                "bytes": nbytes,
            }
            conn_out.send(("item", idx, _pack(out), timing))
    except Exception:
        conn_out.send(("error", "tail", traceback.format_exc()))


# --------------------------------------------------------------------------------------------
# Executor
# --------------------------------------------------------------------------------------------


class SplitExecutor:
    """Head and tail of ``model_builder(seed)`` in two spawned processes (context manager).

    ``run(inputs)`` sends each input tensor (one request, a batch ``[N, 3, 32, 32]`` for the
    default model) through head -> link -> tail and returns the outputs in order with stats.
    Requests are pipelined: the head works on request ``i + 1`` while the tail runs ``i``.
    """

    def __init__(
        self,
        split_index: int,
        link_gbps: float | None = None,
        int8: bool = False,
        granularity: str = "tensor",
        model_builder: Callable[[int], nn.Sequential] = build_tiny_resnet,
        seed: int = 0,
        latency_s: float = 0.0,
        num_threads: int = 1,
        timeout_s: float = 120.0,
    ) -> None:
        split_model(model_builder(seed), split_index)  # validates split_index in this process
        if link_gbps is not None and not link_gbps > 0:
            raise ValueError(f"link_gbps must be > 0 or None, got {link_gbps}")
        if not latency_s >= 0:
            raise ValueError(f"latency_s must be >= 0, got {latency_s}")
        if granularity not in GRANULARITIES:
            raise ValueError(
                f"granularity must be one of {list(GRANULARITIES)}, got {granularity!r}"
            )
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"num_threads must be an integer >= 1, got {num_threads!r}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.split_index = int(split_index)
        self.link_gbps = link_gbps
        self.int8 = bool(int8)
        self.granularity = granularity
        self.model_builder = model_builder
        self.seed = int(seed)
        self.latency_s = float(latency_s)
        self.num_threads = num_threads
        self.timeout_s = float(timeout_s)
        self._procs: list[Any] = []
        self._to_head: Connection | None = None
        self._from_tail: Connection | None = None
        self._lock = threading.Lock()

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> SplitExecutor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return bool(self._procs) and all(p.is_alive() for p in self._procs)

    def start(self) -> None:
        """Spawn the head and tail processes and wait until both have built their half."""
        if self._procs:
            return
        ctx = mp.get_context("spawn")
        head_in_r, head_in_w = ctx.Pipe(duplex=False)
        h2t_r, h2t_w = ctx.Pipe(duplex=False)
        out_r, out_w = ctx.Pipe(duplex=False)
        head = ctx.Process(
            target=_head_worker,
            args=(
                head_in_r,
                h2t_w,
                self.model_builder,
                self.seed,
                self.split_index,
                self.link_gbps,
                self.latency_s,
                self.int8,
                self.granularity,
                self.num_threads,
            ),
            name=f"split-head-{self.split_index}",
            daemon=True,
        )
        tail = ctx.Process(
            target=_tail_worker,
            args=(h2t_r, out_w, self.model_builder, self.seed, self.split_index, self.num_threads),
            name=f"split-tail-{self.split_index}",
            daemon=True,
        )
        self._procs = [head, tail]
        for p in self._procs:
            p.start()
        for c in (head_in_r, h2t_r, h2t_w, out_w):
            c.close()  # the children hold their own ends
        self._to_head, self._from_tail = head_in_w, out_r
        try:
            got = {self._recv()[1] for _ in range(2)}
            if got != {"head", "tail"}:
                raise RuntimeError(f"split workers did not start: got {sorted(got)}")
        except BaseException:
            self._kill()
            raise

    def close(self) -> dict | None:
        """Stop both processes; returns the head's final link stats (None if not running)."""
        if not self._procs:
            return None
        stats = None
        try:
            if self.running:
                assert self._to_head is not None
                self._to_head.send(None)
                msg = self._recv()
                stats = msg[1] if msg[0] == "stop" else None
        except (OSError, EOFError, RuntimeError, TimeoutError):
            stats = None
        finally:
            for p in self._procs:
                p.join(timeout=5.0)
            self._kill()
        return stats

    def _kill(self) -> None:
        for p in self._procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=5.0)
        for c in (self._to_head, self._from_tail):
            if c is not None:
                c.close()
        self._procs = []
        self._to_head = self._from_tail = None

    def _recv(self) -> tuple:
        assert self._from_tail is not None
        if not self._from_tail.poll(self.timeout_s):
            codes = [p.exitcode for p in self._procs]
            raise TimeoutError(
                f"split workers sent nothing for timeout_s={self.timeout_s} (exit codes {codes})"
            )
        try:
            msg = self._from_tail.recv()
        except EOFError:
            codes = [p.exitcode for p in self._procs]
            raise RuntimeError(f"split workers exited (exit codes {codes})") from None
        if msg[0] == "error":
            raise RuntimeError(f"split {msg[1]} worker failed:\n{msg[2]}")
        return msg

    # -- running ----------------------------------------------------------------------------

    def run(
        self, inputs: torch.Tensor | Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor | list[torch.Tensor], dict]:
        """Outputs for ``inputs`` (one tensor or a sequence of request tensors) and stats.

        Stats: ``requests`` (per request: ``head_s``, ``quant_s``, ``link_s`` (paced wait),
        ``ipc_s`` (pipe), ``transfer_s = link_s + ipc_s``, ``dequant_s``, ``tail_s``, ``bytes``),
        their totals ``head_s``, ``transfer_s``, ``tail_s``, ``bytes_sent``, and ``wall_s``.
        """
        single = isinstance(inputs, torch.Tensor)
        items = [inputs] if single else list(inputs)
        for i, x in enumerate(items):
            if not isinstance(x, torch.Tensor) or x.dtype != torch.float32:
                raise ValueError(f"inputs[{i}] must be a float32 tensor, got {x!r:.60}")
        if not self.running:
            raise RuntimeError("SplitExecutor is not running: use it as a context manager")
        with self._lock:
            t0 = time.perf_counter()
            sender_error: list[BaseException] = []

            def send_all() -> None:
                try:
                    assert self._to_head is not None
                    for i, x in enumerate(items):
                        self._to_head.send((i, _pack(x)))
                except BaseException as err:  # surfaced after the receive loop
                    sender_error.append(err)

            sender = threading.Thread(target=send_all, daemon=True)
            sender.start()
            outputs: list[torch.Tensor | None] = [None] * len(items)
            timings: list[dict | None] = [None] * len(items)
            try:
                for _ in items:
                    _, idx, packed, timing = self._recv()
                    outputs[idx] = _unpack(packed)
                    timings[idx] = timing
            except BaseException:
                self._kill()
                raise
            sender.join()
            if sender_error:
                raise RuntimeError(f"sending inputs failed: {sender_error[0]!r}")
            wall_s = time.perf_counter() - t0
        reqs = [t for t in timings if t is not None]
        stats = {
            "split_index": self.split_index,
            "int8": self.int8,
            "granularity": self.granularity if self.int8 else None,
            "link_gbps": self.link_gbps,
            "requests": reqs,
            "head_s": sum(t["head_s"] for t in reqs),
            "transfer_s": sum(t["transfer_s"] for t in reqs),
            "link_s": sum(t["link_s"] for t in reqs),
            "tail_s": sum(t["tail_s"] for t in reqs),
            "bytes_sent": sum(t["bytes"] for t in reqs),
            "wall_s": wall_s,
        }
        outs = [o for o in outputs if o is not None]
        return (outs[0] if single else outs), stats
