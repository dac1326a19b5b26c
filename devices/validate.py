"""Validation: execute a policy's decisions on this machine and compare with the simulator.

``python evaluate.py --validate RUN_OR_BASELINE`` (see :func:`validate_main`):

1. **Hardware.** This machine is measured (:mod:`devices.profile`, or ``--profile PATH``) and
   calibrated where the decode step needs it: the fp32 matrix-vector rate (how fast a decode
   step reads weights) becomes the "HBM" bandwidth of every server and the memory bandwidth of
   every device; the measured fp32 matmul rate their FLOP/s. The links that the simulator
   models (GPU-host PCIe, SSD reads, the CSD's internal and external links) are emulated
   :class:`devices.links.Link` objects paced at rates derived from that bandwidth, with
   InstInfer's internal/external ratio (11.2 / 7 GB/s, REFERENCE_NUMBERS sec. 1), and the
   validation scenario states exactly those rates.
2. **Scenario.** The policy's scenario keeps its devices, servers, models and workload (so the
   checkpoint's observation and action spaces are unchanged), with the hardware replaced by
   the measured machine and every LLM scaled to ``VALIDATION_DIMS`` (fp32 weights and KV,
   split points rounded to whole layers, MoE models keep their expert count, top-k and
   routing statistics), contexts capped at ``MAX_CONTEXT_TOKENS``.
3. **Decisions.** The policy acts in that env; for each decision (a request and its plan:
   target, split, KV tier, expert policy) the backend executes ``steps`` decode steps of the
   request's model at the request's context on this machine: the tail layers' weights
   (matrix-vector products), attention over the KV where the plan puts it (``fast``/``dram``:
   tensors in memory, or moved over the paced PCIe link when the simulator says that is
   faster; ``ssd``: pages in a :class:`devices.kvstore.KVStore` read over the paced SSD link by
   :class:`devices.host.HostAttention`; ``csd``: the in-storage
   :class:`devices.worker.InStorageWorker`, internal link paced, q/k/v/o over the external
   link), MoE experts through an :class:`devices.experts.ExpertCache` with the simulator's
   capacity, loads over the paced PCIe link (int8 copies for ``lowprec``, in place on the host
   for ``cpu``), routing from the simulator's seeded generator; a split plan runs the head
   layers as the device and the tail as the server, one after the other.
4. **Report.** Per decision: the simulator's predicted decode-step time (its cost tables:
   ``work_coef`` + ``serial_coef`` per output token and per context token) against the median
   measured step, the bytes over the KV link predicted (:func:`mec_env.cost_model.
   kv_link_bytes_per_step`) and counted, and expert hits predicted (the steady-state hit rate
   x accesses) and counted; then the median and p90 relative latency error. The machine is
   shared and its speed drifts: the calibration's reference step (:class:`ReferenceStep`) is
   timed again just before and just after each decision, and the prediction scaled by how much slower (or
   faster) it runs then than at the calibration; the unscaled error is reported beside it.

What is *not* executed: the radio (uplink/downlink) and queueing between requests, which the
simulator computes analytically from the scenario; vision (CNN) requests (see
:mod:`devices.split` for the split executor); the prefetch policy's overlap (its misses are
loaded on demand, so its measured time is an upper bound of the predicted one).
"""

from __future__ import annotations

import csv
import json
import math
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from devices.attention import partial_attention
from devices.experts import ExpertCache
from devices.host import HostAttention
from devices.kvstore import KVStore
from devices.links import Link
from devices.worker import InStorageWorker
from mec_env.cost_model import kv_link_bytes_per_step
from mec_env.expert_hits import routing_params
from mec_env.models import MODEL_PRESETS
from mec_env.routing import RoutingGenerator

GB = 1e9
FP32 = 4
VALIDATION_DIMS = {"num_layers": 8, "hidden_size": 1024, "head_dim": 64}
MAX_CONTEXT_TOKENS = 4096
WARM_TOKENS = 64  # tokens through a new expert cache before it is measured (steady state)
CONTEXT_BUCKETS = (256, 512, 1024, 2048, 4096)  # KV prepared once per model and bucket
INSTINFER_INTERNAL_OVER_EXTERNAL = 11.2 / 7.0  # REFERENCE_NUMBERS sec. 1 (InstInfer)
TIER_NAMES = ("fast", "dram", "ssd", "csd")
POLICY_NAMES = ("on_demand", "lru", "prefetch", "lowprec", "cpu")


# ---------------------------------------------------------------------------------------------
# Hardware: measure, calibrate, pace
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ValidationHardware:
    """The rates the validation scenario states and the backend's links are paced at."""

    matvec_gbps: float  # fp32 weight-read rate of a decode step (calibrated)
    attention_flops: float  # decode-attention FLOP/s (calibrated)
    fp32_flops: float  # fp32 matmul FLOP/s (the profile's)
    pcie_gbps: float  # paced: GPU <-> host link (KV moves, expert loads)
    ssd_gbps: float  # paced: SSD reads
    csd_internal_gbps: float  # paced: the CSD's internal scan
    csd_external_gbps: float  # paced: the CSD's host link (q, k, v, o)
    dram_gb: float

    @classmethod
    def from_profile(
        cls, profile: dict[str, Any], matvec_gbps: float, attention_flops: float
    ) -> ValidationHardware:
        measured = profile["measured"]
        flops = measured["cpu_matmul_flops"]
        fp32 = float(flops["float32"] if isinstance(flops, dict) else flops)
        # paced rates well below what this machine's readers sustain (the in-storage scan's
        # paced path ~5.4 GB/s fp16, host page reads ~2.5 GB/s here:
        # benchmarks/attention_backend.py), so that the emulated link, not the emulation's
        # own limits, sets the time
        internal = matvec_gbps / 12.0
        return cls(
            matvec_gbps=matvec_gbps,
            attention_flops=attention_flops,
            fp32_flops=fp32,
            pcie_gbps=matvec_gbps / 8.0,
            ssd_gbps=matvec_gbps / 24.0,
            csd_internal_gbps=internal,
            csd_external_gbps=internal / INSTINFER_INTERNAL_OVER_EXTERNAL,
            dram_gb=float(profile["server"]["host"]["dram_gb"]),
        )


class ReferenceStep:
    """The decode step the backend executes (a Llama-shaped validation model, KV in memory),
    for the calibration (:meth:`fit`) and, beside every decision, for this machine's speed at
    that moment relative to the calibration's (:meth:`drift`): the machine is shared, and a
    slow or fast spell between the calibration and a decision would otherwise show up as
    model error."""

    LO, HI = 256, 2048  # the two contexts of the fit

    def __init__(self) -> None:
        self.m = m = scaled_model(MODEL_PRESETS["llama-3-8b"])
        self.W = DecoderWeights(m, seed=0)
        self.g = g = torch.Generator().manual_seed(0)
        self.kv = {
            c: [
                (torch.randn(m.num_kv_heads, c, m.head_dim, generator=g),
                 torch.randn(m.num_kv_heads, c, m.head_dim, generator=g))
                for _ in range(m.num_layers)
            ]
            for c in (self.LO, self.HI)
        }  # fmt: skip
        self.t_lo: float | None = None

    def step(self, context: int) -> None:
        m = self.m
        x = torch.randn(m.hidden_size, generator=self.g)
        for lw, (k, v) in zip(self.W.layers, self.kv[context], strict=True):
            q = torch.mv(lw["q"], x).view(m.num_heads, m.head_dim)
            torch.mv(lw["k"], x)
            torch.mv(lw["v"], x)
            out, _ = partial_attention(q, k, v)
            x = x + torch.mv(lw["o"], out.reshape(-1))
            x = x + torch.mv(
                lw["w2"], torch.nn.functional.gelu(torch.mv(lw["w1"], x), approximate="tanh")
            )

    def timed(self, context: int) -> float:
        t0 = time.perf_counter()
        self.step(context)
        return time.perf_counter() - t0

    def fit(self, reps: int = 15) -> tuple[float, float]:
        """(weight-read GB/s, attention FLOP/s) of t(c) = weight bytes / rate + c x (attention
        FLOPs per context token) / FLOP rate, from ``reps`` pairs of steps at the two contexts
        after a warm-up: the median step at the short context, and the median paired
        difference for the slope (the contexts interleaved in alternating order, so a slow
        spell hits both of a pair alike)."""
        lo, hi = self.LO, self.HI
        self.step(lo)
        self.step(hi)
        t_los, diffs = [], []
        for r in range(reps):
            if r % 2:
                b = self.timed(hi)
                a = self.timed(lo)
            else:
                a = self.timed(lo)
                b = self.timed(hi)
            t_los.append(a)
            diffs.append(b - a)
        self.t_lo = t_lo = float(np.median(t_los))
        per_context_s = max(float(np.median(diffs)), 1e-9) / (hi - lo)
        m = self.m
        weight_bytes = sum(t.numel() for lw in self.W.layers for t in lw.values()) * FP32
        weights_s = max(t_lo - lo * per_context_s, 1e-9)
        flops_per_context = 4.0 * m.num_heads * m.head_dim * m.num_layers  # cost_model's
        return weight_bytes / weights_s / GB, flops_per_context / per_context_s

    def drift(self, reps: int = 5) -> float:
        """This machine's step time now over the calibration's (median of ``reps``; > 1: slower
        now). Call :meth:`fit` first."""
        if self.t_lo is None:
            raise RuntimeError("ReferenceStep.drift needs fit() first")
        return float(np.median([self.timed(self.LO) for _ in range(reps)])) / self.t_lo


# ---------------------------------------------------------------------------------------------
# The validation scenario
# ---------------------------------------------------------------------------------------------


def scaled_model(m):
    """``m`` at ``VALIDATION_DIMS`` with fp32 weights and KV; the head/KV-head ratio, MoE expert
    count, top-k and routing statistics kept; split points rounded to whole layers."""
    if m.kind == "cnn":
        return m
    L, hidden, D = (VALIDATION_DIMS[k] for k in ("num_layers", "hidden_size", "head_dim"))
    heads = hidden // D
    group = max(1, m.num_heads // max(m.num_kv_heads, 1))
    kv_heads = max(1, heads // min(group, heads))
    attn = hidden * (heads * D) * 2 + hidden * (kv_heads * D) * 2  # q, o; k, v
    splits = []
    for sp in m.split_points:
        layers = min(L - 1, round(sp.head_fraction * L))
        splits.append(
            sp.replace(
                head_fraction=layers / L,
                transfer_bytes=hidden * FP32 if layers else sp.transfer_bytes,
            )
        )
    changes: dict[str, Any] = dict(
        num_layers=L,
        hidden_size=hidden,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=D,
        bytes_per_param=float(FP32),
        kv_bytes_per_value=float(FP32),
        split_points=tuple(splits),
    )
    if m.kind == "dense":
        ffn = 4 * hidden
        params = L * (attn + 2 * hidden * ffn)
        changes |= dict(params=float(params), active_params=float(params))
    else:
        ffn_e = expert_ffn(m)
        expert = 2 * hidden * ffn_e
        router = hidden * m.num_experts
        params = L * (attn + router + m.num_experts * expert)
        active = L * (attn + router + m.top_k * expert)
        lowprec = (expert + 4 * (ffn_e + hidden)) / expert  # int8 rows + an fp32 scale per row
        changes |= dict(
            params=float(params),
            active_params=float(active),
            expert_params=float(expert),
            lowprec_bytes_per_param=float(lowprec),
        )
    return m.replace(**changes)


def expert_ffn(m) -> int:
    """Expert FFN width at validation scale: the experts of one token take about as many
    parameters as a dense FFN of 4 x hidden."""
    return max(128, (4 * VALIDATION_DIMS["hidden_size"]) // (2 * m.top_k) // 64 * 64)


def validation_scenario(scenario, hw: ValidationHardware):
    """``scenario`` with every device and server replaced by this machine (module doc)."""
    devices = [
        d.replace(
            compute_flops=hw.attention_flops,
            mem_bandwidth_gbps=hw.matvec_gbps,
            mem_capacity_gb=max(d.mem_capacity_gb, 4.0),
        )
        for d in scenario.devices
    ]
    models = [scaled_model(m) for m in scenario.models]
    servers = []
    for s in scenario.servers:
        moe = [
            m
            for m in models
            if m.kind == "moe" and (not s.hosted_models or m.name in s.hosted_models)
        ]
        # half of each hosted MoE model's experts per layer fit the cache (the largest sets it)
        cache_gb = (
            max(0.5 * m.num_experts * m.num_layers * m.expert_bytes for m in moe) / GB
            if moe and s.expert_cache_gb > 0
            else 0.0
        )
        changes: dict[str, Any] = dict(
            gpu=s.gpu.replace(flops=hw.fp32_flops, hbm_gbps=hw.matvec_gbps, hbm_gb=64.0),
            host=s.host.replace(
                dram_gbps=hw.matvec_gbps, cpu_flops=hw.fp32_flops, dram_gb=max(s.host.dram_gb, 64.0)
            ),
            gpu_host_gbps=hw.pcie_gbps,
            expert_cache_gb=cache_gb,
        )
        if s.ssd is not None:
            changes["ssd"] = s.ssd.replace(read_gbps=hw.ssd_gbps, write_gbps=hw.ssd_gbps)
        if s.csd is not None:
            changes["csd"] = s.csd.replace(
                internal_gbps=hw.csd_internal_gbps,
                external_gbps=hw.csd_external_gbps,
                engine_flops=hw.attention_flops,
                sparse_keep_fraction=1.0,
            )
        servers.append(s.replace(**changes))
    w = scenario.workload
    workload = w.replace(
        prompt_tokens_max=min(w.prompt_tokens_max, MAX_CONTEXT_TOKENS // 2),
        prompt_tokens_median=min(w.prompt_tokens_median, MAX_CONTEXT_TOKENS // 4),
        output_tokens_max=min(w.output_tokens_max, MAX_CONTEXT_TOKENS // 2),
        output_tokens_median=min(w.output_tokens_median, MAX_CONTEXT_TOKENS // 8),
    )
    return scenario.replace(
        name=f"{scenario.name}-validation",
        devices=tuple(devices),
        servers=tuple(servers),
        models=tuple(models),
        workload=workload,
    )


# ---------------------------------------------------------------------------------------------
# The backend: executes one decision's decode steps
# ---------------------------------------------------------------------------------------------


class DecoderWeights:
    """fp32 weights of a scaled LLM (module doc): per layer q, k, v, o projections, a dense FFN
    or a router; MoE experts live in a host copy (and an int8 copy) the cache loads from."""

    def __init__(self, m, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        H, Hkv, D, h = m.num_heads, m.num_kv_heads, m.head_dim, m.hidden_size

        def w(rows, cols):
            return torch.randn(rows, cols, generator=g) / math.sqrt(cols)

        self.model = m
        self.layers = []
        for _ in range(m.num_layers):
            layer = {"q": w(H * D, h), "k": w(Hkv * D, h), "v": w(Hkv * D, h), "o": w(h, H * D)}
            if m.kind == "dense":
                layer["w1"], layer["w2"] = w(4 * h, h), w(h, 4 * h)
            else:
                layer["router"] = w(m.num_experts, h)
            self.layers.append(layer)
        self.experts: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
        self.experts_int8: list[list[tuple]] = []
        if m.kind == "moe":
            ffn = expert_ffn(m)
            for _ in range(m.num_layers):
                row, row8 = [], []
                for _ in range(m.num_experts):
                    w1, w2 = w(ffn, h), w(h, ffn)
                    row.append((w1, w2))
                    row8.append((_q8(w1), _q8(w2)))
                self.experts.append(row)
                self.experts_int8.append(row8)


def _q8(w: torch.Tensor):
    scale = w.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127.0
    return torch.round(w / scale).to(torch.int8), scale


class Backend:
    """Executes decode steps of the validation scenario's models on this machine."""

    def __init__(self, scenario, hw: ValidationHardware, workdir: Path, seed: int = 0) -> None:
        self.scenario, self.hw, self.workdir = scenario, hw, workdir
        self.weights = {
            m.name: DecoderWeights(m, seed + i)
            for i, m in enumerate(scenario.models)
            if m.kind != "cnn"
        }
        self.pcie = Link("pcie-kv", hw.pcie_gbps)  # KV moved to the GPU (dram tier)
        self.expert_link = Link("pcie-experts", hw.pcie_gbps)  # expert loads (same PCIe rate)
        self.ssd_link = Link("ssd", min(hw.ssd_gbps, hw.pcie_gbps))
        self._kv_mem: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self._stores: dict[str, Any] = {}
        self._hosts: dict[str, Any] = {}
        self._workers: dict[str, Any] = {}
        self._seqs: dict[tuple[str, str, int], int] = {}
        self.caches: dict[tuple[int, str, int], Any] = {}
        self.routers: dict[tuple[int, str], Any] = {}
        self._tokens: dict[tuple[int, str, int], int] = {}
        self.seed = seed
        self._scratch: dict[tuple, torch.Tensor] = {}

    # -- KV on each tier ------------------------------------------------------------------
    def _kv(self, m, context: int) -> tuple[torch.Tensor, torch.Tensor]:
        key = (m.name, context)
        if key not in self._kv_mem:
            g = torch.Generator().manual_seed(zlib.crc32(f"{m.name}:{context}".encode()))
            shape = (m.num_layers, m.num_kv_heads, context, m.head_dim)
            self._kv_mem[key] = (torch.randn(shape, generator=g), torch.randn(shape, generator=g))
        return self._kv_mem[key]

    def _store(self, m):
        if m.name not in self._stores:
            root = self.workdir / f"ssd-{m.name}"
            self._stores[m.name] = KVStore(
                root, m.num_layers, m.num_kv_heads, m.head_dim, torch.float32
            )
            # page_budget: transfer and compute overlap, as a GPU pipeline would (the cost
            # model charges the transfer alone)
            self._hosts[m.name] = HostAttention(
                self._stores[m.name], self.ssd_link, device="cpu", page_budget=1024
            )
        return self._stores[m.name], self._hosts[m.name]

    def _worker(self, m):
        if m.name not in self._workers:
            self._workers[m.name] = InStorageWorker(
                self.workdir / f"csd-{m.name}",
                m.num_layers,
                m.num_kv_heads,
                m.head_dim,
                torch.float32,
                external_gbps=self.hw.csd_external_gbps,
                internal_gbps=self.hw.csd_internal_gbps,
                page_budget=1024,
            )
        return self._workers[m.name]

    def _sequence(self, tier: str, m, context: int) -> int:
        """A sequence of ``context`` tokens on the ssd store or the csd worker (made once)."""
        key = (tier, m.name, context)
        if key not in self._seqs:
            seq = len(self._seqs)
            k, v = self._kv(m, context)
            kt, vt = k.permute(2, 0, 1, 3).contiguous(), v.permute(2, 0, 1, 3).contiguous()
            if tier == "ssd":
                store, _ = self._store(m)
                store.append(seq, kt, vt)
                store.sync(seq)
            else:
                worker = self._worker(m)
                worker.append(seq, kt, vt)
                worker.sync(seq)
            self._seqs[key] = seq
        return self._seqs[key]

    # -- experts --------------------------------------------------------------------------
    def _cache(self, target: int, m, policy: int, capacity: int):
        """The server's expert cache for ``m`` under ``policy``, warmed to steady state: the
        simulator's hit rates are steady-state LRU hit rates, so ``WARM_TOKENS`` tokens of the
        same routing stream pass through the cache first (not timed, not counted)."""
        key = (target, m.name, policy)
        if key not in self.caches:
            cache = ExpertCache(m.num_layers, m.num_experts, capacity, "lru")
            W = self.weights[m.name]
            routing = self._routing(target, m, WARM_TOKENS)
            for t in range(WARM_TOKENS):
                for layer in range(m.num_layers):
                    cache.serve(
                        t + 1,
                        layer,
                        [int(e) for e in routing[t, layer]],
                        lambda e, layer=layer: self._resident(W, layer, e, policy),
                    )
            self.caches[key] = cache
            self._tokens[key] = WARM_TOKENS
        return self.caches[key]

    @staticmethod
    def _resident(W: DecoderWeights, layer: int, e: int, policy: int):
        return W.experts_int8[layer][e] if policy == 3 else W.experts[layer][e]

    def _routing(self, target: int, m, tokens: int) -> np.ndarray:
        key = (target, m.name)
        if key not in self.routers:
            rng = np.random.default_rng(self.seed + 7919 * target + len(self.routers))
            self.routers[key] = RoutingGenerator(routing_params(m), rng)
        return self.routers[key].generate(tokens)

    # -- one decode step --------------------------------------------------------------------
    def decode_steps(self, plan: dict[str, Any], context: int, steps: int) -> dict[str, Any]:
        """Run ``steps`` decode steps of ``plan`` (module doc); times are per step."""
        m = plan["model"]
        W = self.weights[m.name]
        L = m.num_layers
        head_layers = round(plan["head_fraction"] * L)
        tier, policy, target = plan["tier"], plan["policy"], plan["target"]
        pcie0, ssd0 = self.pcie.bytes_total, self.ssd_link.bytes_total
        experts0 = self.expert_link.bytes_total
        worker = self._worker(m) if (target > 0 and tier == "csd") else None
        ext0 = worker.external.bytes_total if worker else 0
        seq = None
        if target > 0 and tier in ("ssd", "csd"):
            seq = self._sequence(tier, m, context)
        k_mem, v_mem = self._kv(m, context)
        hits = accesses = 0
        routing = None
        cache = None
        if m.kind == "moe":
            routing = self._routing(target, m, steps)
            capacity = plan["expert_capacity"]
            cache = self._cache(target, m, policy, capacity)
        times = []
        g = torch.Generator().manual_seed(context)
        for step in range(steps):
            x = torch.randn(m.hidden_size, generator=g)
            t0 = time.perf_counter()
            new_k, new_v = [], []
            remote: dict[int, torch.Tensor] = {}
            if seq is not None:
                # storage tiers: one request per decode step for every tail layer (this
                # emulation's round trip costs ~ms, a drive's command ~10 us); the tail's q
                # come from the step's input, the same work and bytes as layer by layer
                tail = list(range(head_layers, L))
                qs = torch.stack([torch.mv(W.layers[i]["q"], x) for i in tail])
                qs = qs.view(len(tail), m.num_heads, m.head_dim)
                if tier == "ssd":
                    outs = self._store(m)[1]._attend_layers(seq, qs, tail)[0]
                else:
                    outs = [
                        o
                        for o, _ in worker.attend(
                            [(seq, i, qs[j]) for j, i in enumerate(tail)], return_lse=False
                        )
                    ]
                remote = {i: outs[j] for j, i in enumerate(tail)}
            for layer in range(L):
                lw = W.layers[layer]
                on_server = target > 0 and layer >= head_layers
                q = None if layer in remote else torch.mv(lw["q"], x).view(m.num_heads, m.head_dim)
                kk = torch.mv(lw["k"], x).view(m.num_kv_heads, m.head_dim)
                vv = torch.mv(lw["v"], x).view(m.num_kv_heads, m.head_dim)
                if on_server:
                    new_k.append(kk)
                    new_v.append(vv)
                where = tier if on_server else "fast"
                if where in ("fast", "dram"):
                    if where == "dram" and plan["dram_moves_kv"]:
                        self.pcie.transfer((k_mem[layer].numel() + v_mem[layer].numel()) * FP32)
                    out, _ = partial_attention(q, k_mem[layer], v_mem[layer])
                else:  # ssd / csd: attended above
                    out = remote[layer]
                x = x + torch.mv(lw["o"], out.reshape(-1).to(torch.float32))
                if m.kind == "dense":
                    x = x + torch.mv(
                        lw["w2"],
                        torch.nn.functional.gelu(torch.mv(lw["w1"], x), approximate="tanh"),
                    )
                else:
                    torch.mv(lw["router"], x)  # the router runs; routing itself is forced
                    experts = [int(e) for e in routing[step, layer]]
                    if on_server:
                        tok = self._tokens[(target, m.name, policy)] + 1
                        values, h, _ = cache.serve(
                            tok,
                            layer,
                            experts,
                            lambda e, layer=layer: self._load(W, layer, e, policy),
                        )
                        hits += h
                        accesses += len(experts)
                    else:  # local / head layers: every expert in device memory
                        values = [W.experts[layer][e] for e in experts]
                    y = torch.zeros_like(x)
                    for w1, w2 in values:
                        if w1[0].dtype == torch.int8:  # lowprec: dequantised at use
                            w1, w2 = self._dequant(w1, 0), self._dequant(w2, 1)
                        y += torch.mv(
                            w2, torch.nn.functional.gelu(torch.mv(w1, x), approximate="tanh")
                        )
                    x = x + y / len(values)
            if cache is not None:
                self._tokens[(target, m.name, policy)] += 1
            if worker is not None:
                # the new token's k, v of the tail layers cross the external link once per step
                # (counted and paced; not appended, so the context stays at its bucket)
                worker.external.transfer(sum(t.numel() for t in new_k + new_v) * FP32)
            times.append(time.perf_counter() - t0)
        return {
            "step_s": float(np.median(times)),
            "kv_link_bytes": (
                (self.pcie.bytes_total - pcie0)
                + (self.ssd_link.bytes_total - ssd0)
                + ((worker.external.bytes_total - ext0) if worker else 0)
            )
            / steps,
            "expert_link_bytes": (self.expert_link.bytes_total - experts0) / steps,
            "expert_hits": hits,
            "expert_accesses": accesses,
        }

    def _dequant(self, pair, which: int) -> torch.Tensor:
        """int8 rows x fp32 scale into a reused fp32 buffer (no allocation per use)."""
        q, scale = pair
        key = (which, tuple(q.shape))
        buf = self._scratch.get(key)
        if buf is None:
            buf = self._scratch[key] = torch.empty(q.shape, dtype=torch.float32)
        buf.copy_(q)
        return buf.mul_(scale)

    def _load(self, W: DecoderWeights, layer: int, e: int, policy: int):
        """A miss: the expert crosses the paced PCIe link (counted). The emulated link carries
        the bytes' time; the tensors themselves are the host copy (a memcpy here would add a
        CPU cost a DMA engine does not have)."""
        if policy == 4:  # misses run next to the host copy: read in place, nothing moves
            return W.experts[layer][e]
        value = self._resident(W, layer, e, policy)  # int8 pair for lowprec
        nbytes = sum(
            (p[0].numel() + p[1].numel() * FP32) if isinstance(p, tuple) else p.numel() * FP32
            for p in value
        )
        self.expert_link.transfer(nbytes)
        return value

    def close(self) -> None:
        for w in self._workers.values():
            w.stop()
        for h in self._hosts.values():
            h.close()
        for s in self._stores.values():
            s.close()


# ---------------------------------------------------------------------------------------------
# Predictions and the run
# ---------------------------------------------------------------------------------------------


def predicted_step(
    core, device: int, plan_idx: tuple[int, int, int, int], model_idx: int, context: int
) -> dict[str, Any]:
    """The simulator's decode-step time and KV-link bytes for this plan at ``context``."""
    g, s, tier, pol = plan_idx
    t = core.tables
    work = t.work_coef[device, g, model_idx, s, tier, pol]
    serial = t.serial_coef[device, g, model_idx, s] if g > 0 else np.zeros(3)
    m = core.scenario.models[model_idx]
    f = m.split_points[s].head_fraction if g > 0 else 0.0
    step_s = float(work[1] + serial[1] + context * (work[2] + serial[2]))
    kv_bytes = 0.0
    if g > 0 and tier > 0:
        name = TIER_NAMES[tier]
        if name == "dram":
            # the simulator takes the faster of moving the KV and computing where it lives
            srv = core.scenario.servers[g - 1]
            moved = (1 - f) * m.kv_bytes_per_token * context / (srv.gpu_host_gbps * GB)
            local = (1 - f) * m.kv_bytes_per_token * context / (srv.host.dram_gbps * GB)
            kv_bytes = (1 - f) * m.kv_bytes_per_token * context if moved < local else 0.0
        else:
            kv_bytes = (1 - f) * kv_link_bytes_per_step(name, m, context)
    hit = float(t.hit_rate[g, model_idx, pol]) if (m.kind == "moe" and g > 0) else float("nan")
    return {"step_s": step_s, "kv_link_bytes": kv_bytes, "hit_rate": hit}


def expert_capacity(scenario, target: int, m, policy: int) -> int:
    """The per-layer expert capacity the simulator gives ``m`` on server ``target``."""
    if target == 0 or m.kind != "moe":
        return 0
    if policy == 0:
        return m.top_k
    server = scenario.servers[target - 1]
    return int(
        np.clip(
            server.expert_cache_gb * GB // max(m.num_layers * m.expert_bytes, 1.0), 0, m.num_experts
        )
    )


def run_validation(
    env,
    policy_fn,
    hw: ValidationHardware,
    decisions: int,
    steps: int,
    seed: int,
    progress=None,
    reference: ReferenceStep | None = None,
) -> list[dict[str, Any]]:
    """Play ``env`` (a one-env ``LLMOffload-v0`` vector env on the validation scenario) with
    ``policy_fn(obs, info)`` and execute each decision on the backend (module doc). With a
    fitted ``reference``, each prediction is also scaled by the machine's speed measured just
    before and just after its decision (``speed_drift``; ``relative_error`` then compares with the scaled
    prediction, ``relative_error_unscaled`` with the raw one)."""
    core = env.core
    scenario = core.scenario
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="mec-validate-") as tmp:
        backend = Backend(scenario, hw, Path(tmp), seed)
        try:
            obs, info = env.reset(seed=[seed])
            while len(rows) < decisions:
                d = int(core.req_device[0])
                mi = int(core.req_model[0])
                prompt, output = int(core.req_prompt[0]), int(core.req_output[0])
                action = np.asarray(policy_fn(obs, info))
                obs, _, _, _, info = env.step(action)
                g, s, tier, pol = (int(x) for x in info["plan"][0])
                m = scenario.models[mi]
                if m.kind == "cnn" or info["rejected"][0]:
                    continue
                context = int(min(prompt + output // 2, MAX_CONTEXT_TOKENS))
                context = min(CONTEXT_BUCKETS, key=lambda c: abs(c - context))
                pred = predicted_step(core, d, (g, s, tier, pol), mi, context)
                plan = {
                    "model": m,
                    "target": g,
                    "tier": TIER_NAMES[tier] if g > 0 else "fast",
                    "policy": pol,
                    "head_fraction": m.split_points[s].head_fraction if g > 0 else 0.0,
                    "expert_capacity": expert_capacity(scenario, g, m, pol),
                    "dram_moves_kv": pred["kv_link_bytes"] > 0,
                }
                backend.decode_steps(plan, context, 1)  # warm-up: KV prepared, caches warm
                before = reference.drift() if reference is not None else 1.0
                meas = backend.decode_steps(plan, context, steps)
                # the machine's speed during the decision: the mean of just before and after
                drift = 0.5 * (before + reference.drift()) if reference is not None else 1.0
                raw = (meas["step_s"] - pred["step_s"]) / pred["step_s"]
                err = (meas["step_s"] - pred["step_s"] * drift) / (pred["step_s"] * drift)
                hits_pred = pred["hit_rate"] * meas["expert_accesses"]
                rows.append(
                    {
                        "decision": len(rows),
                        "model": m.name,
                        "model_kind": m.kind,
                        "target": "local" if g == 0 else scenario.servers[g - 1].name,
                        "split": m.split_points[s].name if g > 0 else "none",
                        "kv_tier": plan["tier"],
                        "expert_policy": POLICY_NAMES[pol] if m.kind == "moe" and g > 0 else "",
                        "context_tokens": context,
                        "predicted_step_s": pred["step_s"],
                        "measured_step_s": meas["step_s"],
                        "speed_drift": drift,
                        "relative_error": err,
                        "relative_error_unscaled": raw,
                        "predicted_kv_link_bytes": pred["kv_link_bytes"],
                        "measured_kv_link_bytes": meas["kv_link_bytes"],
                        "predicted_expert_hits": hits_pred if m.kind == "moe" and g > 0 else None,
                        "measured_expert_hits": meas["expert_hits"]
                        if m.kind == "moe" and g > 0
                        else None,
                        "expert_accesses": meas["expert_accesses"]
                        if m.kind == "moe" and g > 0
                        else None,
                    }
                )
                if progress is not None:
                    progress(rows[-1])
        finally:
            backend.close()
    return rows


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    err = np.abs([r["relative_error"] for r in rows])
    moe = [r for r in rows if r["expert_accesses"]]
    out = {
        "decisions": len(rows),
        "median_abs_relative_error": float(np.median(err)),
        "p90_abs_relative_error": float(np.percentile(err, 90)),
        "median_signed_relative_error": float(np.median([r["relative_error"] for r in rows])),
        "speed_drift_min": float(min(r["speed_drift"] for r in rows)),
        "speed_drift_max": float(max(r["speed_drift"] for r in rows)),
        "median_abs_relative_error_unscaled": float(
            np.median(np.abs([r["relative_error_unscaled"] for r in rows]))
        ),
        "p90_abs_relative_error_unscaled": float(
            np.percentile(np.abs([r["relative_error_unscaled"] for r in rows]), 90)
        ),
        "kv_link_bytes_predicted": float(sum(r["predicted_kv_link_bytes"] for r in rows)),
        "kv_link_bytes_measured": float(sum(r["measured_kv_link_bytes"] for r in rows)),
    }
    if moe:
        out["expert_hits_predicted"] = float(sum(r["predicted_expert_hits"] for r in moe))
        out["expert_hits_measured"] = float(sum(r["measured_expert_hits"] for r in moe))
        out["expert_accesses"] = int(sum(r["expert_accesses"] for r in moe))
    kinds: dict[str, list[float]] = {}
    for r in rows:
        kinds.setdefault(r["model_kind"], []).append(abs(r["relative_error"]))
    out["median_abs_relative_error_by_model_kind"] = {
        k: float(np.median(v)) for k, v in sorted(kinds.items())
    }
    by: dict[str, list[float]] = {}
    for r in rows:
        by.setdefault(r["kv_tier"] if r["target"] != "local" else "local", []).append(
            abs(r["relative_error"])
        )
    out["median_abs_relative_error_by_tier"] = {
        k: float(np.median(v)) for k, v in sorted(by.items())
    }
    return out


def validate_main(args, runs, out: Path) -> int:
    """``evaluate.py --validate``: the policy is a run directory or a baseline name."""
    from agents.baselines import BASELINES, make_baseline
    from evaluate import fail, load_run  # the CLI's conventions (exit 2, one line)
    from mec_env import load_scenario

    target = args.validate
    run = None
    if target in BASELINES:
        source = args.scenario or "default"
        try:
            scenario = load_scenario(source)
        except (ValueError, OSError) as e:
            fail(f"--scenario {source!r}: {e}")
    else:
        run = load_run(target)
        if run.env != "llm-offload":
            fail(
                f"--validate: run {target!r} was trained on --env {run.env}; validation executes LLMOffload decisions"
            )
        scenario = run.scenario
    if args.profile:
        from devices.profile import load_profile

        try:
            profile = load_profile(args.profile)
        except (OSError, ValueError, KeyError) as e:
            fail(f"--profile {args.profile!r}: {e}")
    else:
        from devices.profile import measure

        print("measuring this machine (devices.profile) ...", flush=True)
        profile = measure(quick=False)
    reference = ReferenceStep()
    hw = ValidationHardware.from_profile(profile, *reference.fit())
    vscenario = validation_scenario(scenario, hw)
    import gymnasium as gym

    import mec_env  # noqa: F401

    probe = gym.make_vec("mec_env/LLMOffload-v0", num_envs=1, scenario=vscenario, parallel=False)
    if run is not None:
        from evaluate import EnvSpec, make_policy

        act = make_policy(
            run, EnvSpec("llm-offload", vscenario, label="the validation scenario"), probe
        )
        weights = np.full(
            (1, len(vscenario.objectives.names)), 1.0 / len(vscenario.objectives.names), np.float32
        )

        def policy_fn(obs, info):
            return act(obs, info, weights)

        label = run.label
    else:
        baseline = make_baseline(target, probe, seed=args.seed)

        def policy_fn(obs, info):
            return baseline.act_batch(obs, info)

        label = target

    def progress(row):
        if not args.no_progress:
            print(
                f"  {row['decision']:3d} {row['model']:<18} {row['target']:<16} {row['kv_tier']:<5} "
                f"{row['expert_policy']:<9} ctx {row['context_tokens']:5d}: predicted {1e3 * row['predicted_step_s']:8.2f} ms, "
                f"measured {1e3 * row['measured_step_s']:8.2f} ms ({100 * row['relative_error']:+.1f} %)",
                flush=True,
            )

    try:
        rows = run_validation(
            probe,
            policy_fn,
            hw,
            args.validate_decisions,
            steps=3,
            seed=args.seed,
            progress=progress,
            reference=reference,
        )
    finally:
        probe.close()
    summary = summarise(rows)
    doc = {
        "policy": label,
        "scenario": vscenario.name,
        "hardware": hw.__dict__,
        "profile_machine": profile.get("machine", {}),
        "summary": summary,
        "decisions": rows,
    }
    (out / "validation.json").write_text(json.dumps(doc, indent=1))

    with (out / "validation.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["decision"])
        w.writeheader()
        w.writerows(rows)
    print(
        f"validated {label} on {vscenario.name}: {summary['decisions']} decisions; latency relative error "
        f"median {100 * summary['median_abs_relative_error']:.1f} %, p90 {100 * summary['p90_abs_relative_error']:.1f} %"
    )
    print(
        f"  (each prediction scaled by this machine's speed beside its decision, "
        f"{summary['speed_drift_min']:.2f}-{summary['speed_drift_max']:.2f}x the calibration's "
        f"step time; unscaled: median {100 * summary['median_abs_relative_error_unscaled']:.1f} %, "
        f"p90 {100 * summary['p90_abs_relative_error_unscaled']:.1f} %)"
    )
    print(
        f"KV-link bytes: predicted {summary['kv_link_bytes_predicted']:.4g}, measured {summary['kv_link_bytes_measured']:.4g}"
    )
    if "expert_hits_measured" in summary:
        print(
            f"expert hits: predicted {summary['expert_hits_predicted']:.0f}, measured {summary['expert_hits_measured']:.0f} "
            f"of {summary['expert_accesses']} accesses"
        )
    print(
        "median error by model kind: "
        + ", ".join(
            f"{k} {100 * v:.1f} %"
            for k, v in summary["median_abs_relative_error_by_model_kind"].items()
        )
    )
    print(
        "median error by where the KV lives: "
        + ", ".join(
            f"{k} {100 * v:.1f} %" for k, v in summary["median_abs_relative_error_by_tier"].items()
        )
    )
    print(f"results: {out / 'validation.json'}, {out / 'validation.csv'}")
    return 0
