"""Hardware profile dataclasses and sourced presets.

These classes are the *hardware profile* shared with ``devices/`` (the profiler writes one, the
scenarios read it). Units are in the field names; GB means 1e9 bytes and GB/s 1e9 bytes/s unless a
comment says otherwise. Every preset value cites a row of ``shared/REFERENCE_NUMBERS.md`` (RN) or
another public source next to it.
"""

from __future__ import annotations

from dataclasses import dataclass

from mec_env._schema import Spec, SpecError, bounded, choice

__all__ = [
    "CSDSpec",
    "DeviceSpec",
    "GPUSpec",
    "HostSpec",
    "SSDSpec",
    "ServerSpec",
    "DEVICE_PRESETS",
    "GPU_PRESETS",
    "SERVER_PRESETS",
]


@dataclass(frozen=True)
class DeviceSpec(Spec):
    """A mobile / embedded device (phone, Jetson, Raspberry Pi)."""

    name: str
    compute_flops: float = bounded(gt=0)  # effective fp16 FLOP/s at freq_max_ghz
    mem_bandwidth_gbps: float = bounded(gt=0)
    mem_capacity_gb: float = bounded(gt=0)  # memory usable for weights + KV
    power_static_w: float = bounded(ge=0)
    power_max_w: float = bounded(gt=0)  # static + dynamic at freq_max_ghz, fully busy
    freq_min_ghz: float = bounded(gt=0)
    freq_max_ghz: float = bounded(gt=0)
    tx_power_w: float = bounded(gt=0)  # default radio transmit power
    tx_power_max_w: float = bounded(gt=0)
    battery_j: float = bounded(gt=0)

    PRESETS = staticmethod(lambda: DEVICE_PRESETS)

    def _check(self) -> None:
        if self.power_max_w < self.power_static_w:
            raise SpecError("power_max_w", f"must be >= power_static_w, got {self.power_max_w}")
        if self.freq_max_ghz < self.freq_min_ghz:
            raise SpecError("freq_max_ghz", f"must be >= freq_min_ghz, got {self.freq_max_ghz}")
        if self.tx_power_max_w < self.tx_power_w:
            raise SpecError("tx_power_max_w", f"must be >= tx_power_w, got {self.tx_power_max_w}")


@dataclass(frozen=True)
class GPUSpec(Spec):
    """Server accelerator."""

    name: str
    flops: float = bounded(gt=0)  # dense fp16/bf16 FLOP/s
    hbm_gbps: float = bounded(gt=0)
    hbm_gb: float = bounded(gt=0)
    power_busy_w: float = bounded(gt=0)
    power_idle_w: float = bounded(ge=0)
    price_per_hour_usd: float = bounded(ge=0)

    PRESETS = staticmethod(lambda: GPU_PRESETS)

    def _check(self) -> None:
        if self.power_idle_w > self.power_busy_w:
            raise SpecError("power_idle_w", f"must be <= power_busy_w, got {self.power_idle_w}")


@dataclass(frozen=True)
class HostSpec(Spec):
    """Server host: CPU and DRAM."""

    dram_gbps: float = bounded(gt=0)
    dram_gb: float = bounded(gt=0)
    cpu_flops: float = bounded(gt=0)
    power_w: float = bounded(ge=0)


@dataclass(frozen=True)
class SSDSpec(Spec):
    """Plain NVMe SSD: KV read back to the GPU over its link."""

    read_gbps: float = bounded(gt=0)
    write_gbps: float = bounded(gt=0)
    capacity_gb: float = bounded(gt=0)
    power_w: float = bounded(ge=0)


@dataclass(frozen=True)
class CSDSpec(Spec):
    """Computational storage drive: attention runs inside, next to the KV (InstInfer)."""

    internal_gbps: float = bounded(gt=0)  # channels x per-channel bandwidth
    external_gbps: float = bounded(gt=0)  # host link (only q, k, v, o cross it)
    engine_flops: float = bounded(gt=0)
    dram_gb: float = bounded(gt=0)
    capacity_gb: float = bounded(gt=0)
    power_w: float = bounded(ge=0)
    sparse_keep_fraction: float = bounded(1.0, gt=0, le=1)  # 1 = dense; 1/8 = SparF


@dataclass(frozen=True)
class ServerSpec(Spec):
    """An edge server (or the cloud): GPU, host, GPU-host link, storage, admission limit."""

    name: str
    gpu: GPUSpec
    host: HostSpec
    gpu_host_gbps: float = bounded(gt=0)  # PCIe between GPU and host (KV / expert transfers)
    ssd: SSDSpec | None = None
    csd: CSDSpec | None = None
    tier: str = choice("edge", choices=("edge", "cloud"))
    max_running: int = bounded(16, ge=1, le=64)  # admission limit (slots) per server
    expert_cache_gb: float = bounded(16.0, ge=0)  # HBM set aside for cached MoE experts
    hosted_models: tuple[str, ...] = ()  # models whose weights this server holds; () = all

    PRESETS = staticmethod(lambda: SERVER_PRESETS)


# --- presets -------------------------------------------------------------------------------

DEVICE_PRESETS: dict[str, DeviceSpec] = {
    # RN sec. 1 "Jetson AGX Orin: 204.8 GB/s, 15-60 W" (NVIDIA spec); 64 GB module, ~85 TFLOP/s
    # sparse int8 -> ~10 TFLOP/s dense fp16 usable (assumption); CPU 2.2 GHz max.
    "jetson-agx-orin": DeviceSpec(
        name="jetson-agx-orin",
        compute_flops=10e12,
        mem_bandwidth_gbps=204.8,
        mem_capacity_gb=48.0,
        power_static_w=15.0,
        power_max_w=60.0,
        freq_min_ghz=0.73,
        freq_max_ghz=2.2,
        tx_power_w=0.2,
        tx_power_max_w=1.0,
        battery_j=360e3,  # 100 Wh pack (assumption)
    ),
    # RN sec. 1 "Jetson Orin Nano 8GB: 68 GB/s, 7-15 W" (NVIDIA datasheet); ~5 TFLOP/s fp16.
    "jetson-orin-nano": DeviceSpec(
        name="jetson-orin-nano",
        compute_flops=5e12,
        mem_bandwidth_gbps=68.0,
        mem_capacity_gb=6.0,
        power_static_w=7.0,
        power_max_w=15.0,
        freq_min_ghz=0.4,
        freq_max_ghz=1.5,
        tx_power_w=0.2,
        tx_power_max_w=1.0,
        battery_j=180e3,
    ),
    # RN sec. 1 "Phone LPDDR5X 68 GB/s" (D, JEDEC); 12 GB phone, ~4 TFLOP/s fp16 NPU/GPU usable,
    # ~1 W idle, ~8 W peak SoC; 5G radio 0.2 W typical, 1 W max (RN sec. 5: 0.01-1 W).
    "phone": DeviceSpec(
        name="phone",
        compute_flops=4e12,
        mem_bandwidth_gbps=68.0,
        mem_capacity_gb=4.0,
        power_static_w=1.0,
        power_max_w=8.0,
        freq_min_ghz=0.6,
        freq_max_ghz=3.2,
        tx_power_w=0.2,
        tx_power_max_w=1.0,
        battery_j=69e3,  # ~5,000 mAh at 3.85 V
    ),
    # RN sec. 1 "Raspberry Pi 4: 7.3 / 2.56 W (max/static)" (Suzen et al., HORA 2020); LPDDR4
    # 3200 x 32 bit = 12.8 GB/s (D); 4 x A72 at 1.5 GHz ~ 24 GFLOP/s fp32 (assumption).
    "raspberry-pi-4": DeviceSpec(
        name="raspberry-pi-4",
        compute_flops=24e9,
        mem_bandwidth_gbps=12.8,
        mem_capacity_gb=3.0,
        power_static_w=2.56,
        power_max_w=7.3,
        freq_min_ghz=0.6,
        freq_max_ghz=1.5,
        tx_power_w=0.1,
        tx_power_max_w=0.5,
        battery_j=72e3,
    ),
}

GPU_PRESETS: dict[str, GPUSpec] = {
    # RN sec. 1 "A6000: 48 GB, 768 GB/s" (datasheet); 155 TFLOP/s fp16 tensor (datasheet), 300 W
    # TDP; idle ~ 25 W; price: ~$0.8/h cloud rental (assumption).
    "a6000": GPUSpec(
        name="a6000",
        flops=155e12,
        hbm_gbps=768.0,
        hbm_gb=48.0,
        power_busy_w=300.0,
        power_idle_w=25.0,
        price_per_hour_usd=0.8,
    ),
    # RN sec. 1 "A100-80 SXM: 80 GB, 2.04 TB/s, 312 TFLOP/s fp16" (datasheet); 400 W TDP;
    # ~$1.8/h (assumption).
    "a100-80": GPUSpec(
        name="a100-80",
        flops=312e12,
        hbm_gbps=2039.0,
        hbm_gb=80.0,
        power_busy_w=400.0,
        power_idle_w=50.0,
        price_per_hour_usd=1.8,
    ),
    # RN sec. 1 "H100 SXM: 80 GB, 3.35 TB/s, 989 TFLOP/s bf16, 700 W, ~$11.06/h" (Lamina Table 1).
    "h100": GPUSpec(
        name="h100",
        flops=989e12,
        hbm_gbps=3350.0,
        hbm_gb=80.0,
        power_busy_w=700.0,
        power_idle_w=70.0,
        price_per_hour_usd=11.06,
    ),
    # RN sec. 1 "H20: 96 GB, 4.0 TB/s, 148 TFLOP/s, 400 W, ~$4.63/h" (Lamina Table 1).
    "h20": GPUSpec(
        name="h20",
        flops=148e12,
        hbm_gbps=4000.0,
        hbm_gb=96.0,
        power_busy_w=400.0,
        power_idle_w=40.0,
        price_per_hour_usd=4.63,
    ),
}

# RN sec. 1 "Host DRAM (8ch DDR4-3200): 204.8 GB/s" (spec); FlexGen "CPU 204 GB" (RN sec. 1
# FlexGen constants) for capacity; CPU 0.0123 TFLOP/s (FlexGen fitted, attention on CPU is
# bandwidth-bound so this rarely binds) raised to a 32-core AVX-512 server's ~1 TFLOP/s fp32.
_HOST_DDR4 = HostSpec(dram_gbps=204.8, dram_gb=256.0, cpu_flops=1.0e12, power_w=150.0)
# RN sec. 1 "NVMe Gen4 SSD: 7 GB/s read, 5 GB/s write" (Samsung 980 Pro datasheet); ~7 W active.
_NVME_GEN4 = SSDSpec(read_gbps=7.0, write_gbps=5.0, capacity_gb=2000.0, power_w=7.0)
# RN sec. 1 InstInfer CSD: 8 x 1.4 = 11.2 GB/s internal, PCIe 4.0 x4 = 7 GB/s external,
# 650 GFLOP/s engine, 2 GB on-board DRAM (InstInfer / InstAttention, HPCA'25, sec. V, III-B);
# 3.84 TB and ~15 W from the SmartSSD row (RN sec. 1).
_CSD_INSTINFER = CSDSpec(
    internal_gbps=11.2,
    external_gbps=7.0,
    engine_flops=650e9,
    dram_gb=2.0,
    capacity_gb=3840.0,
    power_w=15.0,
)
# RN sec. 1 "GPU<->host PCIe 4.0 x16: 32 GB/s" (InstAttention sec. VI-C).
_PCIE4_X16_GBPS = 32.0

SERVER_PRESETS: dict[str, ServerSpec] = {
    "edge-a6000-csd": ServerSpec(
        name="edge-a6000-csd",
        gpu=GPU_PRESETS["a6000"],
        host=_HOST_DDR4,
        gpu_host_gbps=_PCIE4_X16_GBPS,
        ssd=_NVME_GEN4,
        csd=_CSD_INSTINFER,
    ),
    "edge-a6000": ServerSpec(
        name="edge-a6000",
        gpu=GPU_PRESETS["a6000"],
        host=_HOST_DDR4,
        gpu_host_gbps=_PCIE4_X16_GBPS,
        ssd=_NVME_GEN4,
    ),
    "edge-a100-csd": ServerSpec(
        name="edge-a100-csd",
        gpu=GPU_PRESETS["a100-80"],
        host=_HOST_DDR4,
        gpu_host_gbps=_PCIE4_X16_GBPS,
        ssd=_NVME_GEN4,
        csd=_CSD_INSTINFER,
    ),
    "cloud-h100": ServerSpec(
        name="cloud-h100",
        gpu=GPU_PRESETS["h100"],
        host=HostSpec(dram_gbps=307.2, dram_gb=1024.0, cpu_flops=3.0e12, power_w=300.0),
        gpu_host_gbps=63.0,  # RN sec. 1 "PCIe 5.0 x16 ~63 GB/s" (spec)
        ssd=_NVME_GEN4,
        csd=_CSD_INSTINFER,
        tier="cloud",
        max_running=64,
        expert_cache_gb=48.0,
    ),
}
