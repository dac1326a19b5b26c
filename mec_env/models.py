"""Model presets: dense LLMs, MoE LLMs and a split-able vision network.

Architecture numbers come from ``shared/REFERENCE_NUMBERS.md`` (RN) sec. 2 (LLMs, MoE experts) and
sec. 6 (ResNet-50 split table). ``split_points[0]`` is always "none": the whole model runs on the
chosen target. A later split point ``s`` runs the fraction ``head_fraction`` of the model on the
device and the rest on the target server, sending ``transfer_bytes`` across the boundary per
token (LLMs: d_model fp16 values) or per frame (vision).
"""

from __future__ import annotations

from dataclasses import dataclass

from mec_env._schema import Spec, SpecError, bounded, choice
from mec_env.routing import ROUTING_PRESETS

__all__ = ["ModelSpec", "SplitSpec", "MODEL_PRESETS", "llm_split_points"]

FP16_BYTES = 2.0  # bytes per fp16 value
TOKEN_ID_BYTES = 4.0  # an int32 token id on the wire


@dataclass(frozen=True)
class SplitSpec(Spec):
    """One split option: head on the device, tail on the target."""

    name: str
    head_fraction: float = bounded(ge=0, lt=1)  # fraction of FLOPs and weights on the device
    transfer_bytes: float = bounded(ge=0)  # per token (LLM) or per frame (vision), boundary size
    accuracy_loss: float = bounded(0.0, ge=0, le=1)  # top-1 / quality loss of this split


@dataclass(frozen=True)
class ModelSpec(Spec):
    """A model a request can ask for. ``kind`` is ``dense``, ``moe`` or ``cnn``."""

    name: str
    kind: str = choice(choices=("dense", "moe", "cnn"))
    params: float = bounded(gt=0)  # total parameters
    active_params: float = bounded(gt=0)  # parameters touched per token / frame
    split_points: tuple[SplitSpec, ...] = bounded(min_len=1)
    bytes_per_param: float = bounded(FP16_BYTES, gt=0, le=8)
    # transformer shape (0 for cnn)
    num_layers: int = bounded(1, ge=1)
    hidden_size: int = bounded(0, ge=0)
    num_heads: int = bounded(0, ge=0)
    num_kv_heads: int = bounded(0, ge=0)
    head_dim: int = bounded(0, ge=0)
    kv_bytes_per_value: float = bounded(FP16_BYTES, gt=0, le=8)
    # MoE (0 experts for dense / cnn)
    num_experts: int = bounded(0, ge=0)
    top_k: int = bounded(0, ge=0)
    expert_params: float = bounded(0.0, ge=0)  # per expert per layer
    lowprec_bytes_per_param: float = bounded(
        0.53125, gt=0, le=8
    )  # int4, group 128: 4 + 32/128 bits
    lowprec_accuracy_loss: float = bounded(0.02, ge=0, le=1)  # if every expert ran low precision
    routing_p_stay: float = bounded(0.12, ge=0, le=1)
    routing_zipf_s: float = bounded(0.25, ge=0, le=5)
    routing_num_topics: int = bounded(4, ge=1, le=64)
    routing_topic_switch_prob: float = bounded(0.01, ge=0, le=1)
    # vision
    flops_per_frame: float = bounded(0.0, ge=0)
    input_bytes: float = bounded(0.0, ge=0)  # raw frame (or prompt token) bytes sent with no split

    def _check(self) -> None:
        if self.active_params > self.params:
            raise SpecError("active_params", f"must be <= params, got {self.active_params}")
        if self.split_points[0].head_fraction != 0.0:
            raise SpecError(
                "split_points[0].head_fraction",
                f"must be 0 (the 'none' split), got {self.split_points[0].head_fraction}",
            )
        if self.kind in ("dense", "moe"):
            for name in ("hidden_size", "num_heads", "num_kv_heads", "head_dim"):
                if getattr(self, name) < 1:
                    raise SpecError(name, f"must be >= 1 for a {self.kind} model, got 0")
            if self.num_heads % self.num_kv_heads:
                raise SpecError(
                    "num_kv_heads",
                    f"must divide num_heads ({self.num_heads}), got {self.num_kv_heads}",
                )
        if self.kind == "moe":
            if self.num_experts < 2:
                raise SpecError(
                    "num_experts", f"must be >= 2 for a moe model, got {self.num_experts}"
                )
            if not 1 <= self.top_k <= self.num_experts:
                raise SpecError("top_k", f"must be in [1, num_experts], got {self.top_k}")
            if self.expert_params <= 0:
                raise SpecError(
                    "expert_params", f"must be > 0 for a moe model, got {self.expert_params}"
                )
            if self.expert_params * self.num_experts * self.num_layers > self.params:
                raise SpecError(
                    "expert_params",
                    f"experts exceed params ({self.params}), got {self.expert_params}",
                )
        if self.kind == "cnn" and self.flops_per_frame <= 0:
            raise SpecError(
                "flops_per_frame", f"must be > 0 for a cnn model, got {self.flops_per_frame}"
            )

    # derived quantities (bytes, FLOPs), used by the cost model
    @property
    def kv_bytes_per_token(self) -> float:
        """RN sec. 2: 2 (K and V) * layers * kv_heads * head_dim * bytes."""
        return 2.0 * self.num_layers * self.num_kv_heads * self.head_dim * self.kv_bytes_per_value

    @property
    def weight_bytes(self) -> float:
        return self.params * self.bytes_per_param

    @property
    def expert_bytes(self) -> float:
        return self.expert_params * self.bytes_per_param

    @property
    def expert_lowprec_bytes(self) -> float:
        return self.expert_params * self.lowprec_bytes_per_param

    @property
    def dense_part_bytes(self) -> float:
        """Weights outside the routed experts (attention, embeddings, shared experts)."""
        return (
            self.params - self.expert_params * self.num_experts * self.num_layers
        ) * self.bytes_per_param

    @property
    def qkvo_bytes_per_token(self) -> float:
        """Bytes of q, k, v and the attention output per token over all layers (CSD path)."""
        q_o = 2 * self.num_heads * self.head_dim
        k_v = 2 * self.num_kv_heads * self.head_dim
        return float(self.num_layers * (q_o + k_v) * self.kv_bytes_per_value)


def llm_split_points(
    num_layers: int, hidden_size: int, layer_counts: tuple[int, ...]
) -> tuple[SplitSpec, ...]:
    """ "none" plus a split after each of ``layer_counts`` layers; d_model fp16 per token crosses.

    RN sec. 6: each decode step sends d_model values per token across the split boundary.
    """
    points = [SplitSpec(name="none", head_fraction=0.0, transfer_bytes=TOKEN_ID_BYTES)]
    for n in layer_counts:
        points.append(
            SplitSpec(
                name=f"after-layer-{n}",
                head_fraction=n / num_layers,
                transfer_bytes=hidden_size * FP16_BYTES,
            )
        )
    return tuple(points)


def _routing(preset: str) -> dict[str, float]:
    """The fitted routing-generator parameters of ``mec_env.routing.ROUTING_PRESETS[preset]``."""
    r = ROUTING_PRESETS[preset]
    return {
        "routing_p_stay": r.p_stay,
        "routing_zipf_s": r.zipf_s,
        "routing_num_topics": r.num_topics,
        "routing_topic_switch_prob": r.topic_switch_prob,
    }


def _llm(
    name: str,
    layers: int,
    hidden: int,
    heads: int,
    kv_heads: int,
    head_dim: int,
    params: float,
    **moe: float,
) -> ModelSpec:
    kind = "moe" if moe else "dense"
    return ModelSpec(
        name=name,
        kind=kind,
        params=params,
        active_params=moe.pop("active_params", params),
        split_points=llm_split_points(layers, hidden, (layers // 8, layers // 4, layers // 2)),
        num_layers=layers,
        hidden_size=hidden,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        input_bytes=TOKEN_ID_BYTES,
        **moe,
    )


_KIB = 1024.0
# RN sec. 6, ResNet-50 at 224x224 (torchvision layout): tensor size at each split (fp16 KiB,
# int8 KiB for bottlenecks). head_fraction = cumulative share of the 4.1 GMAC forward pass up to
# that point (D: summed from torchvision's per-stage MACs: conv1+pool 0.12, layer1 0.68, layer2
# 1.03, layer3 1.47, layer4 0.81 GMAC). Bottleneck accuracy losses: BottleFit reports <= 0.6 %
# top-1 loss at 77.1 % compression (RN sec. 6); smaller C assumed to cost more (assumption).
_RESNET50_SPLITS = (
    SplitSpec(name="none", head_fraction=0.0, transfer_bytes=294 * _KIB),
    SplitSpec(name="conv1", head_fraction=0.029, transfer_bytes=1568 * _KIB),
    SplitSpec(name="maxpool", head_fraction=0.030, transfer_bytes=392 * _KIB),
    SplitSpec(name="layer1", head_fraction=0.195, transfer_bytes=1568 * _KIB),
    SplitSpec(name="layer2", head_fraction=0.446, transfer_bytes=784 * _KIB),
    SplitSpec(name="layer3", head_fraction=0.804, transfer_bytes=392 * _KIB),
    SplitSpec(name="layer4", head_fraction=0.9995, transfer_bytes=196 * _KIB),
    SplitSpec(
        name="bottleneck-c3", head_fraction=0.10, transfer_bytes=2.5 * _KIB, accuracy_loss=0.030
    ),
    SplitSpec(
        name="bottleneck-c6", head_fraction=0.10, transfer_bytes=4.9 * _KIB, accuracy_loss=0.015
    ),
    SplitSpec(
        name="bottleneck-c9", head_fraction=0.10, transfer_bytes=7.4 * _KIB, accuracy_loss=0.009
    ),
    SplitSpec(
        name="bottleneck-c12", head_fraction=0.10, transfer_bytes=9.9 * _KIB, accuracy_loss=0.006
    ),
)

MODEL_PRESETS: dict[str, ModelSpec] = {
    # RN sec. 2 rows (layers, hidden, heads / kv heads, head_dim, params).
    "opt-13b": _llm("opt-13b", 40, 5120, 40, 40, 128, 12.9e9),
    "llama-2-7b": _llm("llama-2-7b", 32, 4096, 32, 32, 128, 6.7e9),
    "llama-2-13b": _llm("llama-2-13b", 40, 5120, 40, 40, 128, 13.0e9),
    "llama-3-8b": _llm("llama-3-8b", 32, 4096, 32, 8, 128, 8.0e9),
    "tinyllama-1.1b": _llm("tinyllama-1.1b", 22, 2048, 32, 4, 64, 1.1e9),
    "qwen2-0.5b": _llm("qwen2-0.5b", 24, 896, 14, 2, 64, 0.49e9),
    "phi-2": _llm("phi-2", 32, 2560, 32, 32, 80, 2.7e9),
    # RN sec. 2: Mixtral-8x7B 8 experts top-2, 46.7B total / 12.9B active; expert = 3 x 4096 x
    # 14336 = 176.2M params (352.3 MB fp16). Routing: mec_env.routing's fit to the moe-lrc LRU
    # hit rates .36/.62/.83 at rho = 1/2/3 (RN sec. 4).
    "mixtral-8x7b": _llm(
        "mixtral-8x7b",
        32,
        4096,
        32,
        8,
        128,
        46.7e9,
        active_params=12.9e9,
        num_experts=8,
        top_k=2,
        expert_params=176.2e6,
        **_routing("mixtral-8x7b"),
    ),
    # RN sec. 2: DeepSeek-MoE-16B, 64 routed (+2 shared) experts, top-6, 16.4B / ~2.8B active;
    # expert 17.3 MB fp16 -> 8.65M params. Routing: fitted to LRU .27/.40/.51 (RN sec. 4).
    "deepseek-moe-16b": _llm(
        "deepseek-moe-16b",
        28,
        2048,
        16,
        16,
        128,
        16.4e9,
        active_params=2.8e9,
        num_experts=64,
        top_k=6,
        expert_params=8.65e6,
        **_routing("deepseek-moe-16b"),
    ),
    # RN sec. 6 and torchvision's ResNet-50: 25.6M params, 4.1 GMAC = 8.2 GFLOP per 224x224 frame.
    "resnet-50": ModelSpec(
        name="resnet-50",
        kind="cnn",
        params=25.6e6,
        active_params=25.6e6,
        split_points=_RESNET50_SPLITS,
        num_layers=50,
        flops_per_frame=8.2e9,
        input_bytes=294 * _KIB,
    ),
}
