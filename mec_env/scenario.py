"""Scenarios: hardware, network, workload and objectives of one experiment, validated.

``load_scenario(x)`` takes a preset name (``mec_env.list_scenarios()``), a path to a YAML file or
a mapping, and returns a frozen :class:`Scenario`. Every invalid value raises ``ValueError``
naming the field path and the value, e.g. ``servers[1].csd.internal_gbps must be > 0, got -3.0``;
unknown keys are errors. ``scenario.to_yaml(path)`` writes a file ``load_scenario`` reads back to
an equal scenario. In YAML, a device, server, GPU or model may be given by preset name.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from mec_env._schema import Spec, SpecError, bounded, choice
from mec_env.hardware import DeviceSpec, ServerSpec
from mec_env.models import MODEL_PRESETS, ModelSpec

__all__ = [
    "NetworkSpec",
    "ObjectivesSpec",
    "Scenario",
    "WorkloadSpec",
    "OBJECTIVES",
    "list_scenarios",
    "load_scenario",
]

#: Objective name -> unit of its (negated) per-request reward.
OBJECTIVES: dict[str, str] = {
    "latency": "s",
    "energy": "J",
    "cost": "USD",
    "accuracy": "fraction",
}


@dataclass(frozen=True)
class NetworkSpec(Spec):
    """Devices reach access points over a fading wireless hop; APs reach servers over wires.

    Defaults: GMORL's channel (RN sec. 5): W = 16.6 MHz, noise -174 dBm/Hz, path loss
    133.6 + 35 log10(d_km) dB, 8 dB shadowing, Rayleigh fading, device-AP 50-500 m.
    """

    wireless_bandwidth_hz: float = bounded(16.6e6, gt=0)
    noise_dbm_per_hz: float = bounded(-174.0, lt=0)
    path_loss_at_1km_db: float = bounded(133.6, ge=0)
    path_loss_slope_db: float = bounded(35.0, gt=0)  # per decade of distance
    shadowing_std_db: float = bounded(8.0, ge=0)
    fading: str = choice("rayleigh", choices=("rayleigh", "none"))
    distance_min_m: float = bounded(50.0, gt=0)
    distance_max_m: float = bounded(500.0, gt=0)
    min_rate_bps: float = bounded(1e5, gt=0)  # outage floor: link adaptation's lowest rate
    wireless_latency_s: float = bounded(
        5e-3, ge=0
    )  # one-way air interface latency (5G, assumption)
    num_access_points: int = bounded(1, ge=1, le=64)
    # Wired backhaul AP -> edge server (10 GbE LAN) and AP -> cloud (WAN); assumptions.
    edge_link_gbps: float = bounded(1.25, gt=0)
    edge_link_latency_s: float = bounded(0.5e-3, ge=0)
    cloud_link_gbps: float = bounded(0.125, gt=0)
    cloud_link_latency_s: float = bounded(20e-3, ge=0)

    def _check(self) -> None:
        if self.distance_max_m < self.distance_min_m:
            raise SpecError(
                "distance_max_m", f"must be >= distance_min_m, got {self.distance_max_m}"
            )


@dataclass(frozen=True)
class WorkloadSpec(Spec):
    """Requests: Poisson arrivals per device (or a trace), lengths, and the model mix.

    Prompt and output lengths are log-normal with the given median and sigma, rounded and clipped
    to [min, max]. For a vision model, ``output`` counts frames of a video-analytics request.
    """

    mix: dict[str, float] = bounded(min_len=1, item={"ge": 0})
    arrival_rate_hz: float = bounded(0.1, gt=0)  # per device
    prompt_tokens_median: float = bounded(512.0, ge=1)
    prompt_tokens_sigma: float = bounded(1.0, ge=0, le=5)
    prompt_tokens_min: int = bounded(16, ge=1)
    prompt_tokens_max: int = bounded(8192, ge=1, le=1 << 20)
    output_tokens_median: float = bounded(128.0, ge=1)
    output_tokens_sigma: float = bounded(0.8, ge=0, le=5)
    output_tokens_min: int = bounded(8, ge=1)
    output_tokens_max: int = bounded(1024, ge=1, le=1 << 20)
    deadline_s: float | None = bounded(None, gt=0)
    trace_path: str | None = None  # CSV: time_s,device,model,prompt_tokens,output_tokens

    def _check(self) -> None:
        if sum(self.mix.values()) <= 0:
            raise SpecError("mix", f"weights must sum to > 0, got {dict(self.mix)}")
        for what in ("prompt", "output"):
            lo, hi = getattr(self, f"{what}_tokens_min"), getattr(self, f"{what}_tokens_max")
            if hi < lo:
                raise SpecError(
                    f"{what}_tokens_max", f"must be >= {what}_tokens_min ({lo}), got {hi}"
                )


@dataclass(frozen=True)
class ObjectivesSpec(Spec):
    """Which objectives the reward vector holds, in order, and how fronts are normalised.

    Rewards are negated costs (higher is better). ``return_low``/``return_high`` are fixed per
    scenario bounds on an *episode return* per objective, used to normalise fronts to [0, 1]
    (``mec_env.pareto.normalise``); the hypervolume reference point is given in those normalised
    units (RN sec. 7: 1.1 in cost units, i.e. -0.1 here since 1 is best).
    """

    names: tuple[str, ...] = bounded(
        ("latency", "energy"), min_len=1, item={"choices": tuple(OBJECTIVES)}
    )
    return_low: tuple[float, ...] = bounded((-2000.0, -2e5))
    return_high: tuple[float, ...] = bounded((0.0, 0.0))
    reference_point: tuple[float, ...] = bounded((-0.1, -0.1))

    def _check(self) -> None:
        n = len(self.names)
        if len(set(self.names)) != n:
            raise SpecError("names", f"must not repeat an objective, got {list(self.names)}")
        for name in ("return_low", "return_high", "reference_point"):
            if len(getattr(self, name)) != n:
                raise SpecError(
                    name,
                    f"must have {n} entries (one per objective), got {list(getattr(self, name))}",
                )
        for i, (lo, hi) in enumerate(zip(self.return_low, self.return_high, strict=True)):
            if not lo < hi:
                raise SpecError(f"return_high[{i}]", f"must be > return_low[{i}] ({lo}), got {hi}")
        for i, r in enumerate(self.reference_point):
            if not r < 0:
                raise SpecError(
                    f"reference_point[{i}]", f"must be < 0 (worse than the worst bound), got {r}"
                )


@dataclass(frozen=True)
class Scenario(Spec):
    """One experiment's world. See the module docstring."""

    name: str
    devices: tuple[DeviceSpec, ...] = bounded(min_len=1)
    servers: tuple[ServerSpec, ...] = bounded(min_len=1)
    models: tuple[ModelSpec, ...] = bounded(min_len=1)
    workload: WorkloadSpec = None  # type: ignore[assignment]  # required; checked in _check
    network: NetworkSpec = NetworkSpec()
    objectives: ObjectivesSpec = ObjectivesSpec()
    description: str = bounded("", allow_empty=True)
    max_servers: int = bounded(8, ge=1, le=64)  # observation padding: serves 1..max_servers
    episode_requests: int = bounded(64, ge=1, le=1_000_000)
    histogram_bins: int = bounded(8, ge=1, le=128)  # GMORL's histogram of remaining work
    histogram_max_s: float = bounded(60.0, gt=0)
    rejection_penalty_s: float = bounded(120.0, gt=0)  # latency charged when no target can serve

    def _check(self) -> None:
        if self.workload is None:
            raise SpecError("workload", "is required")
        if len(self.servers) > self.max_servers:
            raise SpecError(
                "max_servers",
                f"must be >= the number of servers ({len(self.servers)}), got {self.max_servers}",
            )
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise SpecError("models", f"names must be unique, got {names}")
        for i, server in enumerate(self.servers):
            for k, hosted in enumerate(server.hosted_models):
                if hosted not in names:
                    raise SpecError(
                        f"servers[{i}].hosted_models[{k}]",
                        f"names no model in models ({names}), got {hosted!r}",
                    )
        for key in self.workload.mix:
            if key not in names:
                raise SpecError(f"workload.mix.{key}", f"names no model in models ({names})")

    @property
    def model_by_name(self) -> dict[str, ModelSpec]:
        return {m.name: m for m in self.models}

    @classmethod
    def from_dict(cls, data: Any, path: str = "") -> Scenario:
        if isinstance(data, Mapping) and "models" in data:
            models = data["models"]
            if isinstance(models, (list, tuple)):
                data = dict(data)
                data["models"] = [_resolve_model(m, f"models[{i}]") for i, m in enumerate(models)]
        return super().from_dict(data, path)

    def to_yaml(self, path: str | os.PathLike[str] | None = None) -> str:
        """The scenario as YAML text; also written to ``path`` when given."""
        text = yaml.dump(self.to_dict(), Dumper=_Dumper, sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text


def _resolve_model(entry: Any, path: str) -> Any:
    if isinstance(entry, str):
        if entry not in MODEL_PRESETS:
            raise SpecError(path, f"unknown model preset {entry!r}; known: {sorted(MODEL_PRESETS)}")
        return MODEL_PRESETS[entry]
    return entry


_PRESET_DIR = "presets"


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e5`` / ``-2.0e5`` as floats (YAML 1.2; PyYAML reads strings)."""


class _Dumper(yaml.SafeDumper):
    """SafeDumper that quotes strings :class:`_Loader` would read as floats (e.g. ``"1e5"``)."""


_FLOAT_RE = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
    re.X,
)
for _cls in (_Loader, _Dumper):
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_RE, list("-+0123456789."))


def list_scenarios() -> list[str]:
    """Names of the scenario presets shipped in the package."""
    files = resources.files("mec_env").joinpath(_PRESET_DIR).iterdir()
    return sorted(f.name[: -len(".yaml")] for f in files if f.name.endswith(".yaml"))


def load_scenario(
    source: str | os.PathLike[str] | Mapping[str, Any] | Scenario = "default",
) -> Scenario:
    """A validated :class:`Scenario` from a preset name, a YAML path, a mapping or a Scenario.

    Raises:
        ValueError: the scenario is invalid (the message names the field path and the value), the
            name is neither a preset nor an existing file, or the YAML does not parse.
    """
    if isinstance(source, Scenario):
        return source
    if isinstance(source, Mapping):
        return Scenario.from_dict(source)
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError(
            f"scenario must be a preset name, a YAML path or a mapping, got {source!r}"
        )
    text: str
    where: str
    path = Path(source)
    if isinstance(source, str) and source in list_scenarios():
        text = resources.files("mec_env").joinpath(_PRESET_DIR, f"{source}.yaml").read_text()
        where = f"preset {source!r}"
    elif path.is_file():
        try:
            text = path.read_text()
        except UnicodeDecodeError as err:
            raise ValueError(f"scenario {str(path)!r} is not UTF-8 text: {err}") from None
        where = str(path)
    else:
        raise ValueError(
            f"scenario {str(source)!r} is neither a preset ({list_scenarios()}) nor a file"
        )
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as err:
        raise ValueError(f"scenario {where}: invalid YAML: {err}".replace("\n", " ")) from None
    if not isinstance(data, Mapping):
        raise ValueError(
            f"scenario {where}: top level must be a mapping, got {type(data).__name__}"
        )
    return Scenario.from_dict(data)
