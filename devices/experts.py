"""Expert executor: a tiny MoE whose experts live in files and are cached in fast memory.

``TinyMoE`` is a stack of MoE feed-forward layers in plain PyTorch (no attention): per layer an
RMS norm, a linear router and ``num_experts`` GELU (tanh form) experts ``w2 @ gelu(w1 @ x)`` with
``w1: [ffn, hidden]`` and ``w2: [hidden, ffn]``, added to the residual stream.

Routing is *forced*: the experts of every token and layer come from the caller (normally
``mec_env.routing.RoutingGenerator(params, np.random.default_rng(seed)).generate(n)``), not from
the router's top-k. The router still runs and its logits, softmaxed over the forced experts,
weight the experts' outputs, so the layer is a real MoE layer whose expert *choice* follows the
simulator's routing stream.

Expert weights are written one file per (layer, expert) by :meth:`TinyMoE.save_experts` (raw
bytes, ``np.fromfile`` to read) and loaded on a miss across a :class:`devices.links.Link` (the
PCIe / NVMe link; counted and optionally paced). ``lowprec=True`` stores int8 weights with one
fp32 scale per output row (symmetric) and dequantises on load: ``numel + 4 * rows`` bytes per
expert instead of ``numel * elem_size``.

:class:`ExpertCache` reproduces the cache model of ``mec_env.routing`` exactly (read its module
docstring): one cache of ``capacity`` experts *per layer*; token ``t`` needs all of its ``k``
experts of a layer at once; an access (one top-k slot) hits when the expert is resident at the
start of the token, so an expert listed twice in one token's top-k counts two hits or two misses;
afterwards the layer keeps at most ``capacity`` experts from (resident | demanded):

* ``lru``: the ``capacity`` most recently used (slot ``j`` of token ``t`` is used at ``t*k + j``);
* ``lfu``: when ``capacity >= k`` all demanded experts, then the most frequently used others;
  otherwise the most frequently used of all candidates. Frequencies count tokens (an expert
  listed twice in one token counts once, as the simulator's fancy-indexed ``+= 1`` does); ties
  go to the more recently used;
* ``belady``: the ``capacity`` candidates whose next use is soonest (offline: needs the whole
  routing). Ties are broken by ``np.argpartition`` over the layer's score row, exactly as the
  simulator's ``_keep_smallest`` does, so hit counts match even when ties matter.

Demanded experts that the policy does not keep (``capacity < k``, or Belady declining one) are
loaded into a transient buffer for this token and dropped afterwards; every miss of a distinct
expert is one load across the link, so ``bytes_loaded = loads * expert_bytes`` and
``loads == misses`` whenever no token lists an expert twice (always true for the generator).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from devices.links import Link

__all__ = [
    "POLICIES",
    "ExpertCache",
    "ExpertExecutor",
    "ExpertStore",
    "TinyMoE",
    "dequantize_rows_int8",
    "quantize_rows_int8",
]

POLICIES = ("lru", "lfu", "belady")
_MANIFEST = "manifest.json"
_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}

ExpertWeights = tuple[torch.Tensor, torch.Tensor]  # (w1 [ffn, hidden], w2 [hidden, ffn])


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _dtype_name(dtype: torch.dtype) -> str:
    for name, dt in _DTYPES.items():
        if dt == dtype:
            return name
    raise ValueError(f"dtype must be one of {list(_DTYPES)}, got {dtype}")


# --------------------------------------------------------------------------------------------
# int8 row quantisation (lowprec experts)
# --------------------------------------------------------------------------------------------


def quantize_rows_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per output row: ``w ~ q * scale[:, None]``, ``|error| <= scale / 2``."""
    w32 = w.detach().to(torch.float32)
    amax = w32.abs().amax(dim=1)
    scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
    q = torch.clamp(torch.round(w32 / scale[:, None]), -127, 127).to(torch.int8)
    return q, scale


def dequantize_rows_int8(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Inverse of :func:`quantize_rows_int8`, cast to ``dtype``."""
    return (q.to(torch.float32) * scale[:, None]).to(dtype)


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


class TinyMoE:
    """A stack of MoE FFN layers with one ``(w1, w2)`` tensor pair per (layer, expert).

    Weights are drawn from ``torch.Generator().manual_seed(seed)`` (scaled normal init), so equal
    arguments give equal models.
    """

    def __init__(
        self,
        num_layers: int,
        num_experts: int,
        hidden: int,
        ffn: int,
        top_k: int,
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
    ) -> None:
        self.num_layers = _check_int("num_layers", num_layers, 1)
        self.num_experts = _check_int("num_experts", num_experts, 1)
        self.hidden = _check_int("hidden", hidden, 1)
        self.ffn = _check_int("ffn", ffn, 1)
        self.top_k = _check_int("top_k", top_k, 1)
        if top_k > num_experts:
            raise ValueError(f"top_k must be <= num_experts ({num_experts}), got {top_k}")
        _dtype_name(dtype)
        self.dtype = dtype
        self.seed = int(seed)
        g = torch.Generator().manual_seed(self.seed)

        def init(*shape: int, fan_in: int) -> torch.Tensor:
            return (torch.randn(*shape, generator=g) / math.sqrt(fan_in)).to(dtype)

        self.routers: list[torch.Tensor] = []
        self.experts: list[list[ExpertWeights]] = []
        for _ in range(self.num_layers):
            self.routers.append(init(num_experts, hidden, fan_in=hidden))
            self.experts.append(
                [
                    (init(ffn, hidden, fan_in=hidden), init(hidden, ffn, fan_in=ffn))
                    for _ in range(num_experts)
                ]
            )

    @property
    def expert_params(self) -> int:
        """Parameters of one expert (``w1`` and ``w2``)."""
        return 2 * self.hidden * self.ffn

    def expert_bytes(self, lowprec: bool = False) -> int:
        """Bytes of one expert's file: ``numel * elem_size``, or int8 + fp32 row scales."""
        if lowprec:
            return self.expert_params + 4 * (self.ffn + self.hidden)
        return self.expert_params * torch.empty((), dtype=self.dtype).element_size()

    @property
    def device(self) -> torch.device:
        """Where the resident weights live (CPU unless :meth:`to` moved them)."""
        return self.routers[0].device

    def to(self, device: str | torch.device) -> TinyMoE:
        """A copy with every tensor on ``device`` (e.g. ``"cuda"``)."""
        clone = TinyMoE.__new__(TinyMoE)
        clone.__dict__.update(self.__dict__)
        clone.routers = [w.to(device) for w in self.routers]
        clone.experts = [[(w1.to(device), w2.to(device)) for w1, w2 in lay] for lay in self.experts]
        return clone

    def lowprec_copy(self) -> TinyMoE:
        """The same model with every expert quantised to int8 and dequantised (routers kept)."""
        clone = TinyMoE.__new__(TinyMoE)
        clone.__dict__.update(self.__dict__)
        clone.experts = [
            [
                tuple(dequantize_rows_int8(*quantize_rows_int8(w), self.dtype) for w in pair)
                for pair in layer
            ]
            for layer in self.experts
        ]
        return clone

    def inputs(self, num_tokens: int, seed: int = 0) -> torch.Tensor:
        """Deterministic token activations ``[num_tokens, hidden]`` for a run."""
        _check_int("num_tokens", num_tokens, 0)
        g = torch.Generator().manual_seed(int(seed))
        x = torch.randn(num_tokens, self.hidden, generator=g)
        return x.to(device=self.device, dtype=self.dtype)

    def check_routing(self, routing: np.ndarray) -> np.ndarray:
        """Validate ``routing`` (int ``[tokens, num_layers, k]``); returns it as int64."""
        r = np.asarray(routing)
        if r.ndim != 3 or r.shape[1] != self.num_layers:
            raise ValueError(
                f"routing must have shape (tokens, {self.num_layers}, top_k), got {r.shape}"
            )
        if not np.issubdtype(r.dtype, np.integer):
            raise ValueError(f"routing must be an integer array, got dtype {r.dtype}")
        if r.size and (r.min() < 0 or r.max() >= self.num_experts):
            raise ValueError(
                f"routing expert ids must be in [0, {self.num_experts}), got {r.min()}..{r.max()}"
            )
        return r.astype(np.int64, copy=False)

    def layer_token(
        self, layer: int, h: torch.Tensor, experts: Sequence[int], weights: Sequence[ExpertWeights]
    ) -> torch.Tensor:
        """One token ``h [hidden]`` through MoE layer ``layer`` with forced ``experts``."""
        x = h * torch.rsqrt(h.float().pow(2).mean() + 1e-6).to(h.dtype)
        logits = self.routers[layer] @ x  # the router runs; its top-k is overridden
        gates = torch.softmax(logits[list(experts)].float(), dim=0).to(h.dtype)
        out = torch.zeros_like(h)
        for j, (w1, w2) in enumerate(weights):
            out = out + gates[j] * (w2 @ F.gelu(w1 @ x, approximate="tanh"))
        return h + out

    def forward(
        self,
        x: torch.Tensor,
        routing: np.ndarray,
        fetch: Callable[[int, int, np.ndarray], list[ExpertWeights]] | None = None,
    ) -> torch.Tensor:
        """Run ``x [tokens, hidden]`` token by token with forced ``routing``.

        ``fetch(token, layer, experts)`` returns the slots' weights; default: resident weights.
        """
        r = self.check_routing(routing)
        if x.ndim != 2 or x.shape[0] != r.shape[0] or x.shape[1] != self.hidden:
            raise ValueError(
                f"x must have shape ({r.shape[0]}, {self.hidden}), got {tuple(x.shape)}"
            )
        if fetch is None:

            def fetch(t: int, layer: int, experts: np.ndarray) -> list[ExpertWeights]:
                return [self.experts[layer][int(e)] for e in experts]

        out = torch.empty_like(x)
        with torch.no_grad():
            for t in range(r.shape[0]):
                h = x[t]
                for layer in range(self.num_layers):
                    experts = r[t, layer]
                    h = self.layer_token(layer, h, experts.tolist(), fetch(t, layer, experts))
                out[t] = h
        return out

    def save_experts(self, directory: str | os.PathLike[str], lowprec: bool = False) -> ExpertStore:
        """Write one file per (layer, expert) plus a manifest; returns the store."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        for layer, experts in enumerate(self.experts):
            for e, (w1, w2) in enumerate(experts):
                path = d / ExpertStore.file_name(layer, e)
                with open(path, "wb") as fh:
                    if lowprec:
                        (q1, s1), (q2, s2) = quantize_rows_int8(w1), quantize_rows_int8(w2)
                        for t in (q1, q2, s1, s2):
                            fh.write(t.contiguous().numpy().tobytes())
                    else:
                        for w in (w1, w2):
                            fh.write(w.contiguous().view(torch.uint8).numpy().tobytes())
        manifest = {
            "num_layers": self.num_layers,
            "num_experts": self.num_experts,
            "hidden": self.hidden,
            "ffn": self.ffn,
            "dtype": _dtype_name(self.dtype),
            "lowprec": bool(lowprec),
            "expert_bytes": self.expert_bytes(lowprec),
        }
        (d / _MANIFEST).write_text(json.dumps(manifest, indent=1))
        return ExpertStore(d)


# --------------------------------------------------------------------------------------------
# Expert files
# --------------------------------------------------------------------------------------------


class ExpertStore:
    """Expert weight files written by :meth:`TinyMoE.save_experts` (slow memory: disk)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        path = self.directory / _MANIFEST
        if not path.is_file():
            raise ValueError(f"directory {str(self.directory)!r} has no {_MANIFEST}")
        m = json.loads(path.read_text())
        self.num_layers = int(m["num_layers"])
        self.num_experts = int(m["num_experts"])
        self.hidden = int(m["hidden"])
        self.ffn = int(m["ffn"])
        self.dtype = _DTYPES[m["dtype"]]
        self.lowprec = bool(m["lowprec"])
        self.expert_bytes = int(m["expert_bytes"])

    @staticmethod
    def file_name(layer: int, expert: int) -> str:
        return f"layer{layer:03d}_expert{expert:05d}.bin"

    def read(self, layer: int, expert: int) -> bytes:
        """Raw bytes of one expert's file (checked against ``expert_bytes``)."""
        if not (0 <= layer < self.num_layers and 0 <= expert < self.num_experts):
            raise ValueError(f"(layer, expert) out of range, got ({layer}, {expert})")
        data = (self.directory / self.file_name(layer, expert)).read_bytes()
        if len(data) != self.expert_bytes:
            raise ValueError(
                f"expert file ({layer}, {expert}) has {len(data)} bytes, "
                f"expected expert_bytes={self.expert_bytes}"
            )
        return data

    def decode(self, data: bytes) -> ExpertWeights:
        """Weights ``(w1, w2)`` from a file's bytes (dequantised when ``lowprec``)."""
        h, f = self.hidden, self.ffn
        raw = np.frombuffer(data, dtype=np.uint8)
        if self.lowprec:
            n = h * f
            q = torch.from_numpy(raw[: 2 * n].copy().view(np.int8))
            s = torch.from_numpy(raw[2 * n :].copy().view(np.float32))
            w1 = dequantize_rows_int8(q[:n].view(f, h), s[:f], self.dtype)
            w2 = dequantize_rows_int8(q[n:].view(h, f), s[f:], self.dtype)
            return w1, w2
        flat = torch.from_numpy(raw.copy()).view(self.dtype)
        return flat[: h * f].view(f, h), flat[h * f :].view(h, f)

    def load(self, layer: int, expert: int) -> ExpertWeights:
        return self.decode(self.read(layer, expert))


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------


class ExpertCache:
    """Per-layer expert cache with the simulator's replacement semantics (module docstring).

    ``serve(token, layer, experts, load)`` counts the token's hits in that layer against the
    residency at the start of the token, calls ``load(expert)`` once per distinct missing expert
    and updates the residency. Tokens must be served in order; layers are independent. Belady
    needs ``set_future(routing)`` first (the whole routing the tokens come from).
    """

    def __init__(
        self, num_layers: int, num_experts: int, capacity_per_layer: int, policy: str = "lru"
    ) -> None:
        self.num_layers = _check_int("num_layers", num_layers, 1)
        self.num_experts = _check_int("num_experts", num_experts, 1)
        self.capacity = _check_int("capacity_per_layer", capacity_per_layer, 0)
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {list(POLICIES)}, got {policy!r}")
        self.policy = policy
        self._next_use: np.ndarray | None = None
        self.reset()

    def reset(self) -> None:
        """Empty every layer and forget the frequencies."""
        L, E = self.num_layers, self.num_experts
        self.resident: list[dict[int, object]] = [{} for _ in range(L)]
        self._last = np.full((L, E), -1, dtype=np.int64)  # LRU / LFU recency stamp
        self._count = np.zeros((L, E), dtype=np.int64)  # LFU frequency (tokens)
        self._token = np.full(L, -1, dtype=np.int64)  # last token served per layer
        self._clock = np.zeros(L, dtype=np.int64)  # slots served per layer (recency stamps)

    def set_future(self, routing: np.ndarray) -> None:
        """Give Belady the routing ``[tokens, num_layers, k]`` it will be served."""
        r = np.asarray(routing, dtype=np.int64)
        if r.ndim != 3 or r.shape[1] != self.num_layers:
            raise ValueError(
                f"routing must have shape (tokens, {self.num_layers}, k), got {r.shape}"
            )
        T = r.shape[0]
        if r.size and (r.min() < 0 or r.max() >= self.num_experts):
            raise ValueError(
                f"routing expert ids must be in [0, {self.num_experts}), got {r.min()}..{r.max()}"
            )
        nxt = np.full((T, self.num_layers, self.num_experts), T, dtype=np.int32)
        upcoming = np.full((self.num_layers, self.num_experts), T, dtype=np.int32)
        rows = np.arange(self.num_layers)[:, None]
        for t in range(T - 1, -1, -1):
            nxt[t] = upcoming  # first use strictly after t
            upcoming[rows, r[t]] = t
        self._next_use = nxt

    def resident_experts(self, layer: int) -> list[int]:
        return sorted(self.resident[layer])

    def serve(
        self, token: int, layer: int, experts: Sequence[int], load: Callable[[int], object]
    ) -> tuple[list[object], int, int]:
        """Serve one token's ``experts`` in ``layer``: ``(values per slot, hits, loads)``."""
        slots = [int(e) for e in experts]
        if not slots or min(slots) < 0 or max(slots) >= self.num_experts:
            raise ValueError(
                f"experts must be a non-empty list in [0, {self.num_experts}), got {slots}"
            )
        if not 0 <= layer < self.num_layers:
            raise ValueError(f"layer must be in [0, {self.num_layers}), got {layer}")
        if token <= self._token[layer]:
            raise ValueError(
                f"token must increase per layer, got {token} after {self._token[layer]}"
            )
        self._token[layer] = token
        res = self.resident[layer]
        hits = sum(e in res for e in slots)
        values: dict[int, object] = {}
        for e in slots:
            if e not in values:
                values[e] = res[e] if e in res else load(e)
        keep = self._keep(token, layer, slots)
        new = {e: (values[e] if e in values else res[e]) for e in keep}
        self.resident[layer] = new
        loads = sum(e not in res for e in values)
        return [values[e] for e in slots], hits, loads

    def _keep(self, token: int, layer: int, slots: list[int]) -> list[int]:
        res = self.resident[layer]
        k = len(slots)
        demanded = list(dict.fromkeys(slots))
        cand = set(res) | set(demanded)
        cap = self.capacity
        if self.policy == "belady":
            if self._next_use is None or token >= self._next_use.shape[0]:
                raise ValueError(f"belady needs set_future(routing) covering token {token}")
            if cap >= self.num_experts:
                return sorted(cand)
            if cap == 0:
                return []
            # Same computation as mec_env.routing._keep_smallest on this layer's row.
            score = np.where(self._cand_mask(cand), self._next_use[token, layer], np.inf)
            keep = np.argpartition(score, cap - 1)[:cap]
            return [int(e) for e in keep if int(e) in cand]
        stamp = int(self._clock[layer])  # slot j of this token is used at stamp + j
        self._clock[layer] += k
        for j, e in enumerate(slots):  # a repeated expert keeps its last slot's stamp
            self._last[layer, e] = stamp + j
        if self.policy == "lfu":
            for e in demanded:
                self._count[layer, e] += 1
        if cap == 0:
            return []
        last = self._last[layer]
        if self.policy == "lru":
            return sorted(cand, key=lambda e: -last[e])[:cap]
        count = self._count[layer]
        if cap >= k:  # LFU keeps every demanded expert, then the most frequent others
            others = sorted(cand - set(demanded), key=lambda e: (-count[e], -last[e]))
            return demanded + others[: cap - len(demanded)]
        return sorted(cand, key=lambda e: (-count[e], -last[e]))[:cap]

    def _cand_mask(self, cand: set[int]) -> np.ndarray:
        mask = np.zeros(self.num_experts, dtype=bool)
        mask[list(cand)] = True
        return mask


# --------------------------------------------------------------------------------------------
# Executor
# --------------------------------------------------------------------------------------------


@dataclass
class _Counters:
    hits: np.ndarray
    misses: np.ndarray
    misses_total: int = 0  # including warmup tokens
    loads: int = 0
    load_s: float = 0.0


class ExpertExecutor:
    """Runs a :class:`TinyMoE` with experts loaded from an :class:`ExpertStore` through a cache.

    Every load reads the expert's file and crosses ``link`` (``Link("expert-load")`` by default,
    counting only; give ``Link(name, gbps)`` to pace it like PCIe / NVMe). The cache (fast
    memory) lives on ``model.device``: pass ``model.to("cuda")`` to cache experts in GPU memory;
    a load then decodes the file on the host and copies the weights to the GPU.
    """

    def __init__(
        self,
        model: TinyMoE,
        store: ExpertStore,
        capacity_per_layer: int,
        policy: str = "lru",
        link: Link | None = None,
    ) -> None:
        for name in ("num_layers", "num_experts", "hidden", "ffn", "dtype"):
            if getattr(store, name) != getattr(model, name):
                raise ValueError(
                    f"store.{name} must equal model.{name} ({getattr(model, name)}), "
                    f"got {getattr(store, name)}"
                )
        self.model = model
        self.store = store
        self.cache = ExpertCache(model.num_layers, model.num_experts, capacity_per_layer, policy)
        self.link = link if link is not None else Link("expert-load")

    @classmethod
    def from_model(
        cls,
        model: TinyMoE,
        directory: str | os.PathLike[str],
        capacity_per_layer: int,
        policy: str = "lru",
        link: Link | None = None,
        lowprec: bool = False,
    ) -> ExpertExecutor:
        """Save ``model``'s experts under ``directory`` and build an executor over them."""
        return cls(model, model.save_experts(directory, lowprec), capacity_per_layer, policy, link)

    def reference_model(self) -> TinyMoE:
        """The all-resident model this executor must reproduce (dequantised when lowprec)."""
        return self.model.lowprec_copy() if self.store.lowprec else self.model

    def run(
        self,
        routing: np.ndarray,
        inputs: torch.Tensor | None = None,
        warmup_tokens: int = 0,
        input_seed: int = 0,
    ) -> dict:
        """Forward ``inputs`` (default ``model.inputs(T, input_seed)``) with forced ``routing``.

        The cache starts empty. Hits and misses count slots of tokens ``>= warmup_tokens`` (as
        the simulator's ``warmup_tokens``); ``misses_total``, loads, bytes and times cover the
        whole run (``bytes_loaded == loads * expert_bytes``). Returns ``outputs`` [tokens,
        hidden] and the counters below; times in seconds (``load_s`` includes link pacing).
        """
        r = self.model.check_routing(routing)
        T, L, k = r.shape
        w = _check_int("warmup_tokens", warmup_tokens, 0)
        if T and w >= T:
            raise ValueError(f"warmup_tokens must be < number of tokens ({T}), got {w}")
        x = self.model.inputs(T, input_seed) if inputs is None else inputs.to(self.model.device)
        self.cache.reset()
        if self.cache.policy == "belady":
            self.cache.set_future(r)
        link_bytes0 = self.link.bytes_total
        device = self.model.device
        c = _Counters(hits=np.zeros(L, dtype=np.int64), misses=np.zeros(L, dtype=np.int64))

        def fetch(t: int, layer: int, experts: np.ndarray) -> list[ExpertWeights]:
            def load(e: int) -> ExpertWeights:
                t0 = time.perf_counter()
                data = self.store.read(layer, e)
                self.link.transfer(len(data))
                w1, w2 = self.store.decode(data)
                weights = (w1.to(device), w2.to(device))
                c.load_s += time.perf_counter() - t0
                return weights

            values, hits, loads = self.cache.serve(t, layer, experts.tolist(), load)
            c.loads += loads
            c.misses_total += len(experts) - hits
            if t >= w:
                c.hits[layer] += hits
                c.misses[layer] += len(experts) - hits
            return values  # type: ignore[return-value]

        t0 = time.perf_counter()
        outputs = self.model.forward(x, r, fetch)
        wall_s = time.perf_counter() - t0
        hits, misses = int(c.hits.sum()), int(c.misses.sum())
        return {
            "outputs": outputs,
            "policy": self.cache.policy,
            "capacity_per_layer": self.cache.capacity,
            "tokens": T,
            "warmup_tokens": w,
            "accesses": hits + misses,
            "hits": hits,
            "misses": misses,
            "hit_rate": hits / (hits + misses) if hits + misses else float("nan"),
            "per_layer_hits": c.hits.tolist(),
            "per_layer_misses": c.misses.tolist(),
            "misses_total": c.misses_total,
            "loads": c.loads,
            "expert_bytes": self.store.expert_bytes,
            "bytes_loaded": self.link.bytes_total - link_bytes0,
            "load_s": c.load_s,
            "compute_s": wall_s - c.load_s,
            "wall_s": wall_s,
        }
