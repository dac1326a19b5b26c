"""Tests for mec_env.scenario: load_scenario, YAML round trips and validation errors.

The invalid / valid edit generators are derived from the spec dataclasses themselves
(``dataclasses.fields`` + ``typing.get_type_hints`` + the ``gt/ge/lt/le/choices/min_len/item``
field metadata), so a new field is covered without touching this file. Only the cross-field
rules (the ``_check`` methods) are restated here, in ``violations``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mec_env._schema import Spec
from mec_env.models import MODEL_PRESETS, ModelSpec
from mec_env.scenario import OBJECTIVES, Scenario, list_scenarios, load_scenario

BASE: dict[str, Any] = {
    "name": "t",
    "devices": ["phone", "jetson-orin-nano"],
    "servers": ["edge-a6000-csd", "edge-a6000", "cloud-h100"],
    "models": ["llama-3-8b", "mixtral-8x7b", "resnet-50"],
    "workload": {"mix": {"llama-3-8b": 1, "mixtral-8x7b": 1, "resnet-50": 0.5}},
}
#: BASE as fully explicit plain data (every field present, presets expanded).
EXPLICIT: dict[str, Any] = Scenario.from_dict(BASE).to_dict()
MODEL_NAMES: list[str] = [m["name"] for m in EXPLICIT["models"]]

Path_ = tuple[str | int, ...]


# --- schema introspection ------------------------------------------------------------------


def strip_optional(hint: Any) -> tuple[Any, bool]:
    """(X, True) for ``X | None``, else (hint, False)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if type(None) in args:
            (inner,) = [a for a in args if a is not type(None)]
            return inner, True
    return hint, False


def is_spec(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, Spec)


def has_default(f: dataclasses.Field) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def presets_of(cls: type) -> Mapping[str, Spec]:
    """Preset names accepted in place of a mapping (models: only in ``Scenario.models``)."""
    if cls is ModelSpec:
        return MODEL_PRESETS
    return cls.PRESETS() if cls.PRESETS is not None else {}


def render(path: Path_) -> str:
    """The path as error messages spell it: ``servers[1].csd.internal_gbps``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def shown(value: Any) -> str:
    """How a bad value appears in a message."""
    return repr(value) if isinstance(value, str) else str(value)


def get(data: Any, path: Path_) -> Any:
    for part in path:
        data = data[part]
    return data


@dataclass(frozen=True)
class Slot:
    """One place in the explicit scenario dict that holds a value."""

    path: Path_
    hint: Any  # annotation of the value held here
    meta: Mapping[str, Any]  # its bounds / choices / min_len / item
    field: dataclasses.Field | None  # the dataclass field, None for list / dict entries

    @property
    def generic(self) -> str:
        """Path with list indices starred (mix keys kept): groups slots of one schema field."""
        return re.sub(r"\[\d+\]", "[*]", render(self.path))


def walk(cls: type, data: Mapping[str, Any], path: Path_ = ()) -> Iterator[Slot]:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        sub = (*path, f.name)
        yield Slot(sub, hints[f.name], f.metadata, f)
        yield from walk_value(hints[f.name], f.metadata, data[f.name], sub)


def walk_value(hint: Any, meta: Mapping[str, Any], value: Any, path: Path_) -> Iterator[Slot]:
    tp, _ = strip_optional(hint)
    origin = typing.get_origin(tp)
    if is_spec(tp) and isinstance(value, Mapping):
        yield from walk(tp, value, path)
    elif origin in (tuple, dict):
        item_tp = typing.get_args(tp)[0 if origin is tuple else 1]
        item_meta = meta.get("item", {})
        entries = enumerate(value) if origin is tuple else value.items()
        for key, v in entries:
            yield Slot((*path, key), item_tp, item_meta, None)
            yield from walk_value(item_tp, item_meta, v, (*path, key))


SLOTS: list[Slot] = list(walk(Scenario, EXPLICIT))
SLOT_GROUPS: dict[str, list[Slot]] = {}
for _slot in SLOTS:
    SLOT_GROUPS.setdefault(_slot.generic, []).append(_slot)
#: Every mapping that is a spec: (path, spec class). Unknown keys may be inserted there.
LEVELS: list[tuple[Path_, type]] = [((), Scenario)] + [
    (s.path, strip_optional(s.hint)[0])
    for s in SLOTS
    if is_spec(strip_optional(s.hint)[0]) and isinstance(get(EXPLICIT, s.path), Mapping)
]
#: Explicit dicts of every spec class found in EXPLICIT, for valid whole-spec replacements.
INSTANCES: dict[type, list[dict[str, Any]]] = {}
for _path, _cls in LEVELS:
    INSTANCES.setdefault(_cls, []).append(get(EXPLICIT, _path))


def test_introspection_sees_the_whole_scenario() -> None:
    groups = set(SLOT_GROUPS)
    for expected in (
        "servers[*].csd.internal_gbps",
        "models[*].split_points[*].head_fraction",
        "workload.mix.resnet-50",
        "objectives.reference_point[*]",
        "network.fading",
        "servers[*].hosted_models",
    ):
        assert expected in groups
    assert len(SLOTS) > 250


# --- edits ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Edit:
    """Changes to EXPLICIT, and what the error message must show (for invalid edits)."""

    changes: tuple[tuple[str, Path_, Any], ...]  # ("set" | "remove" | "append", path, value)
    where: str = ""  # the message must start with this (a field path, or path.unknown_key)
    shows: str | None = None  # and contain this rendering of the bad value

    def apply(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """A changed deep copy; LookupError when an earlier change removed or replaced the target."""
        out = copy.deepcopy(dict(data))
        for op, path, value in self.changes:
            try:
                parent = get(out, path[:-1])
                if op == "append":
                    get(out, path).append(value)
                elif op == "remove":
                    parent.pop(path[-1])
                else:
                    parent[path[-1]] = value
            except (KeyError, IndexError, TypeError, AttributeError) as err:
                raise LookupError(f"cannot apply {op} at {render(path)}") from err
        return out


def setting(path: Path_, value: Any, where: str | None = None, shows: str | None = None) -> Edit:
    return Edit((("set", path, value),), render(path) if where is None else where, shows)


def removing(path: Path_, where: str) -> Edit:
    return Edit((("remove", path, None),), where)


SMALL_INTS = st.integers(-3, 3)
NOT_NUMBERS = st.one_of(
    st.text(max_size=6),
    st.booleans(),
    st.lists(SMALL_INTS, max_size=2),
    st.dictionaries(st.text(max_size=2), SMALL_INTS, max_size=1),
)
NUMBERS = st.one_of(st.integers(-(10**6), 10**6), st.floats())
LIMIT = (
    10**12
)  # ints stay well inside float range (see test_huge_int_for_float_field_raises_value_error)


def out_of_bounds(meta: Mapping[str, Any], integer: bool) -> list[st.SearchStrategy]:
    """Numbers breaking each of the gt / ge / lt / le bounds in ``meta``."""
    out = []
    if integer:
        if "gt" in meta:
            out.append(st.integers(-LIMIT, math.floor(meta["gt"])))
        if "ge" in meta:
            out.append(st.integers(-LIMIT, math.ceil(meta["ge"]) - 1))
        if "lt" in meta:
            out.append(st.integers(math.ceil(meta["lt"]), LIMIT))
        if "le" in meta:
            out.append(st.integers(math.floor(meta["le"]) + 1, LIMIT))
        return out
    finite = {"allow_nan": False, "allow_infinity": False}
    if "gt" in meta:
        out.append(st.floats(max_value=meta["gt"], **finite))
    if "ge" in meta:
        out.append(st.floats(max_value=meta["ge"], exclude_max=True, **finite))
    if "lt" in meta:
        out.append(st.floats(min_value=meta["lt"], **finite))
    if "le" in meta:
        out.append(st.floats(min_value=meta["le"], exclude_min=True, **finite))
    return out


def invalid_values(hint: Any, meta: Mapping[str, Any]) -> st.SearchStrategy[tuple[Any, str]]:
    """(value, how the message shows it) for values the field must reject on their own."""
    tp, optional = strip_optional(hint)
    origin = typing.get_origin(tp)

    def plain(values: st.SearchStrategy) -> st.SearchStrategy[tuple[Any, str]]:
        return values.map(lambda v: (v, shown(v)))

    options = [] if optional else [st.just((None, "None"))]
    if tp is float:
        options.append(plain(NOT_NUMBERS))
        bad = [math.nan, -math.inf] + ([] if meta.get("allow_inf") else [math.inf])
        options.append(plain(st.sampled_from(bad)))
        for floats in out_of_bounds(meta, integer=False):
            options.append(plain(floats))
        for ints in out_of_bounds(meta, integer=True):  # ints are read as floats
            options.append(ints.map(lambda v: (v, str(float(v)))))
    elif tp is int:
        options.append(plain(NOT_NUMBERS | st.floats().filter(lambda x: not x.is_integer())))
        for ints in out_of_bounds(meta, integer=True):
            options.append(plain(ints))
            options.append(ints.map(lambda v: (float(v), str(v))))  # 3.0 is read as 3
    elif tp is str:
        options.append(plain(NUMBERS | st.booleans() | st.lists(SMALL_INTS, max_size=2)))
        if "choices" in meta:
            choices = meta["choices"]
            options.append(plain(st.text(max_size=8).filter(lambda s: s not in choices)))
        elif not meta.get("allow_empty", False):
            options.append(st.just(("", "''")))
    elif is_spec(tp):
        options.append(plain(NUMBERS | st.booleans() | st.lists(SMALL_INTS, max_size=2)))
        names = presets_of(tp)
        options.append(plain(st.text(max_size=8).filter(lambda s: s not in names)))
    elif origin is tuple:
        options.append(plain(st.text(max_size=6) | NUMBERS | st.booleans()))
        options.append(plain(st.dictionaries(st.text(max_size=2), SMALL_INTS, max_size=1)))
        if meta.get("min_len", 0) > 0:
            options.append(st.just(([], "got 0")))
    elif origin is dict:
        options.append(plain(st.text(max_size=6) | NUMBERS | st.lists(SMALL_INTS, max_size=2)))
        options.append(st.sampled_from([({"": 1.0}, "''"), ({1: 1.0}, "got 1")]))
        if meta.get("min_len", 0) > 0:
            options.append(st.just(({}, "got 0")))
    else:  # pragma: no cover - a new annotation kind; extend this test
        raise AssertionError(f"unhandled annotation {hint!r}")
    return st.one_of(options)


def invalid_slot_edits(slot: Slot) -> st.SearchStrategy[Edit]:
    """Per-field invalid edits of one slot: wrong type, NaN/inf, out of bounds, removal."""
    where = render(slot.path)
    options = [
        invalid_values(slot.hint, slot.meta).map(lambda vs: setting(slot.path, vs[0], shows=vs[1]))
    ]
    if slot.field is not None and not has_default(slot.field):
        options.append(st.just(removing(slot.path, where)))
    tp, _ = strip_optional(slot.hint)
    if typing.get_origin(tp) is tuple:  # a list holding one bad entry
        item_meta = slot.meta.get("item", {})
        item_tp = typing.get_args(tp)[0]
        options.append(
            invalid_values(item_tp, item_meta).map(
                lambda vs: setting(slot.path, [vs[0]], where=f"{where}[0]", shows=vs[1])
            )
        )
    return st.one_of(options)


def unknown_key_edits(level: tuple[Path_, type]) -> st.SearchStrategy[Edit]:
    path, cls = level
    known = {f.name for f in dataclasses.fields(cls)}
    keys = st.text(min_size=1, max_size=8).filter(lambda k: k not in known) | st.integers(0, 99)
    prefix = render(path)

    def edit(key: Any) -> Edit:
        where = f"{prefix}.{key}" if prefix else str(key)
        return Edit((("set", (*path, key), 1),), where, None)

    return keys.map(edit)


# --- cross-field rules (restated from the _check methods) -------------------------------------


def cross_field_edits() -> list[st.SearchStrategy[Edit]]:
    """Edits that pass every per-field check but break a cross-field rule."""
    out: list[st.SearchStrategy[Edit]] = []
    pos = {"min_value": 0.0, "exclude_min": True, "allow_nan": False, "allow_infinity": False}

    def below(x: float) -> st.SearchStrategy[float]:  # in (0, x)
        return st.floats(max_value=x, exclude_max=True, **pos)

    def above(x: float) -> st.SearchStrategy[float]:  # > x, finite
        return st.floats(min_value=x, exclude_min=True, allow_nan=False, allow_infinity=False)

    def pair(p: Path_, low: str, high: str, blamed: str) -> None:
        """Break ``high >= low``: lower ``high`` or raise ``low``; ``blamed`` is named."""
        lo, hi = get(EXPLICIT, (*p, low)), get(EXPLICIT, (*p, high))
        at = render((*p, blamed))
        blamed_value = lo if blamed == low else hi
        if lo > 0:
            out.append(
                below(lo).map(
                    lambda v: setting((*p, high), v, at, shows=str(v if blamed == high else lo))
                )
            )
        out.append(
            above(hi).map(
                lambda v: setting((*p, low), v, at, shows=str(v if blamed == low else blamed_value))
            )
        )

    for j in range(len(EXPLICIT["devices"])):
        p = ("devices", j)
        pair(p, "power_static_w", "power_max_w", "power_max_w")
        pair(p, "freq_min_ghz", "freq_max_ghz", "freq_max_ghz")
        pair(p, "tx_power_w", "tx_power_max_w", "tx_power_max_w")
    for k in range(len(EXPLICIT["servers"])):
        pair(("servers", k, "gpu"), "power_idle_w", "power_busy_w", "power_idle_w")
        # hosted_models must name models
        out.append(
            st.tuples(
                st.lists(st.sampled_from(MODEL_NAMES), max_size=2),
                st.text(min_size=1, max_size=8).filter(lambda s: s not in MODEL_NAMES),
            ).map(
                lambda t, k=k: setting(
                    ("servers", k, "hosted_models"),
                    [*t[0], t[1]],
                    f"servers[{k}].hosted_models[{len(t[0])}]",
                    shows=repr(t[1]),
                )
            )
        )

    for i, m in enumerate(EXPLICIT["models"]):
        p = ("models", i)
        at = render(p)
        out.append(
            above(m["params"]).map(lambda v, p=p: setting((*p, "active_params"), v, shows=str(v)))
        )
        if m["active_params"] < m["params"]:
            out.append(
                st.floats(
                    min_value=0, max_value=m["active_params"], exclude_min=True, exclude_max=True
                ).map(
                    lambda v, p=p, m=m: setting(
                        (*p, "params"), v, render((*p, "active_params")), str(m["active_params"])
                    )
                )
            )
        out.append(
            st.floats(min_value=0, max_value=1, exclude_min=True, exclude_max=True).map(
                lambda v, p=p: setting((*p, "split_points", 0, "head_fraction"), v, shows=str(v))
            )
        )
        kind = m["kind"]
        if kind in ("dense", "moe"):
            for name in ("hidden_size", "num_heads", "num_kv_heads", "head_dim"):
                out.append(st.just(setting((*p, name), 0, shows="got 0")))
            h, kv = m["num_heads"], m["num_kv_heads"]
            non_divisors = [x for x in range(1, 2 * h + 2) if h % x]
            out.append(
                (st.sampled_from(non_divisors) | st.integers(h + 1, 10**6)).map(
                    lambda x, p=p: setting((*p, "num_kv_heads"), x, shows=f"got {x}")
                )
            )
            non_multiples = st.tuples(st.integers(0, 10**5), st.integers(1, kv - 1))
            out.append(
                non_multiples.map(lambda t, kv=kv: t[0] * kv + t[1]).map(
                    lambda x, p=p, kv=kv: setting(
                        (*p, "num_heads"), x, render((*p, "num_kv_heads")), f"got {kv}"
                    )
                )
            )
            out.append(st.just(setting((*p, "kind"), "cnn", f"{at}.flops_per_frame")))
        if kind == "dense":
            out.append(st.just(setting((*p, "kind"), "moe", f"{at}.num_experts")))
        if kind == "moe":
            ne, nl, ep, params = m["num_experts"], m["num_layers"], m["expert_params"], m["params"]
            out.append(
                st.sampled_from([0, 1]).map(
                    lambda x, p=p: setting((*p, "num_experts"), x, shows=f"got {x}")
                )
            )
            out.append(
                (st.just(0) | st.integers(ne + 1, 10**6)).map(
                    lambda x, p=p: setting((*p, "top_k"), x, shows=f"got {x}")
                )
            )
            out.append(st.just(setting((*p, "expert_params"), 0.0, shows="got 0.0")))
            out.append(
                above(params / (ne * nl) * (1 + 1e-12))
                .filter(lambda x, ne=ne, nl=nl, params=params: x * ne * nl > params)
                .map(lambda x, p=p: setting((*p, "expert_params"), x, shows=str(x)))
            )
            out.append(
                st.integers(math.ceil(params / (ep * ne)), 10**6)
                .filter(lambda x, ne=ne, ep=ep, params=params: ep * ne * x > params)
                .map(lambda x, p=p: setting((*p, "num_layers"), x, render((*p, "expert_params"))))
            )
            out.append(
                st.integers(max(ne + 1, math.ceil(params / (ep * nl))), 10**6)
                .filter(lambda x, nl=nl, ep=ep, params=params: ep * x * nl > params)
                .map(lambda x, p=p: setting((*p, "num_experts"), x, render((*p, "expert_params"))))
            )
        if kind == "cnn":
            out.append(st.just(setting((*p, "flops_per_frame"), 0.0, shows="got 0.0")))
            out.append(
                st.sampled_from(["dense", "moe"]).map(
                    lambda x, p=p: setting((*p, "kind"), x, f"{render(p)}.hidden_size")
                )
            )
        name = m["name"]
        # renaming / dropping a model leaves the workload mix naming an unknown model
        out.append(
            st.text(min_size=1, max_size=8)
            .filter(lambda s: s not in MODEL_NAMES)
            .map(lambda s, p=p, name=name: setting((*p, "name"), s, f"workload.mix.{name}"))
        )
        out.append(st.just(removing(p, f"workload.mix.{name}")))
        other = [n for n in MODEL_NAMES if n != name]
        out.append(
            st.sampled_from(other).map(
                lambda s, p=p: setting((*p, "name"), s, "models", shows=repr(s))
            )
        )

    pair(("network",), "distance_min_m", "distance_max_m", "distance_max_m")

    w = ("workload",)
    out.append(st.just(setting((*w, "mix"), dict.fromkeys(MODEL_NAMES, 0.0), "workload.mix")))
    for what in ("prompt", "output"):
        lo, hi = (
            EXPLICIT["workload"][f"{what}_tokens_min"],
            EXPLICIT["workload"][f"{what}_tokens_max"],
        )
        at = f"workload.{what}_tokens_max"
        out.append(
            st.integers(1, lo - 1).map(
                lambda x, what=what, at=at: setting((*w, f"{what}_tokens_max"), x, at, f"got {x}")
            )
        )
        out.append(
            st.integers(hi + 1, 10**6).map(
                lambda x, what=what, at=at, hi=hi: setting(
                    (*w, f"{what}_tokens_min"), x, at, f"got {hi}"
                )
            )
        )
    out.append(
        st.text(min_size=1, max_size=8)
        .filter(lambda s: s not in MODEL_NAMES)
        .map(lambda s: setting((*w, "mix", s), 1.0, f"workload.mix.{s}"))
    )
    out.append(st.just(removing(w, "workload")))

    o = ("objectives",)
    n = len(EXPLICIT["objectives"]["names"])
    out.append(
        st.sampled_from(list(OBJECTIVES)).map(
            lambda x: setting((*o, "names"), [x] * n, "objectives.names")
        )
    )
    other_lengths = st.sampled_from([k for k in range(len(OBJECTIVES) + 1) if k != n])
    out.append(
        other_lengths.filter(lambda k: k > 0)
        .flatmap(lambda k: st.permutations(list(OBJECTIVES)).map(lambda names: names[:k]))
        .map(lambda names: setting((*o, "names"), names, "objectives.return_low"))
    )
    finite = st.floats(allow_nan=False, allow_infinity=False)
    for name in ("return_low", "return_high", "reference_point"):
        out.append(
            other_lengths.flatmap(lambda k: st.lists(finite, min_size=k, max_size=k)).map(
                lambda xs, name=name: setting((*o, name), xs, f"objectives.{name}", shows=str(xs))
            )
        )
    for i in range(n):
        lo, hi = EXPLICIT["objectives"]["return_low"][i], EXPLICIT["objectives"]["return_high"][i]
        at = f"objectives.return_high[{i}]"
        out.append(
            st.floats(max_value=lo, allow_nan=False, allow_infinity=False).map(
                lambda x, i=i, at=at: setting((*o, "return_high", i), x, at, str(x))
            )
        )
        out.append(
            st.floats(min_value=hi, allow_nan=False, allow_infinity=False).map(
                lambda x, i=i, at=at, hi=hi: setting((*o, "return_low", i), x, at, f"got {hi}")
            )
        )
        out.append(
            st.floats(min_value=0, allow_nan=False, allow_infinity=False).map(
                lambda x, i=i: setting((*o, "reference_point", i), x, shows=str(x))
            )
        )

    n_servers = len(EXPLICIT["servers"])
    out.append(
        st.integers(1, n_servers - 1).map(lambda x: setting(("max_servers",), x, shows=f"got {x}"))
    )
    return out


def normalise(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    """Fully explicit plain data for (per-field valid) ``data``: presets expanded, defaults filled."""
    hints = typing.get_type_hints(cls)
    if "preset" in data:  # a preset with some fields overridden
        data = {**presets_of(cls)[data["preset"]].to_dict(), **data}
    out = {}
    for f in dataclasses.fields(cls):
        value = data[f.name] if f.name in data else f.default
        out[f.name] = normalise_value(hints[f.name], value)
    return out


def normalise_value(hint: Any, value: Any) -> Any:
    tp, _ = strip_optional(hint)
    if value is None:
        return None
    if isinstance(value, Spec):
        return value.to_dict()
    if is_spec(tp):
        return presets_of(tp)[value].to_dict() if isinstance(value, str) else normalise(tp, value)
    origin = typing.get_origin(tp)
    if origin is tuple:
        return [normalise_value(typing.get_args(tp)[0], v) for v in value]
    if origin is dict:
        return {k: normalise_value(typing.get_args(tp)[1], v) for k, v in value.items()}
    if tp is float:
        return float(value)
    if tp is int:
        return int(value)
    return value


def violations(s: Mapping[str, Any]) -> list[str]:
    """Paths of the cross-field rules a normalised scenario dict breaks (mirrors ``_check``)."""
    out = [name for name in ("devices", "servers", "models") if not s[name]]  # min_len
    if out or s["workload"] is None:
        return out or ["workload"]
    for j, d in enumerate(s["devices"]):
        for low, high in (
            ("power_static_w", "power_max_w"),
            ("freq_min_ghz", "freq_max_ghz"),
            ("tx_power_w", "tx_power_max_w"),
        ):
            if d[high] < d[low]:
                out.append(f"devices[{j}].{high}")
    for k, srv in enumerate(s["servers"]):
        if srv["gpu"]["power_idle_w"] > srv["gpu"]["power_busy_w"]:
            out.append(f"servers[{k}].gpu.power_idle_w")
    names = [m["name"] for m in s["models"]]
    for i, m in enumerate(s["models"]):
        p = f"models[{i}]"
        if m["active_params"] > m["params"]:
            out.append(f"{p}.active_params")
        if m["split_points"][0]["head_fraction"] != 0:
            out.append(f"{p}.split_points[0].head_fraction")
        if m["kind"] in ("dense", "moe"):
            shape = ("hidden_size", "num_heads", "num_kv_heads", "head_dim")
            small = [f"{p}.{x}" for x in shape if m[x] < 1]
            out += small
            if not small and m["num_heads"] % m["num_kv_heads"]:
                out.append(f"{p}.num_kv_heads")
        if m["kind"] == "moe":
            if m["num_experts"] < 2:
                out.append(f"{p}.num_experts")
            elif not 1 <= m["top_k"] <= m["num_experts"]:
                out.append(f"{p}.top_k")
            if (
                m["expert_params"] <= 0
                or m["expert_params"] * m["num_experts"] * m["num_layers"] > m["params"]
            ):
                out.append(f"{p}.expert_params")
        if m["kind"] == "cnn" and m["flops_per_frame"] <= 0:
            out.append(f"{p}.flops_per_frame")
    net = s["network"]
    if net["distance_max_m"] < net["distance_min_m"]:
        out.append("network.distance_max_m")
    w = s["workload"]
    if sum(w["mix"].values()) <= 0:
        out.append("workload.mix")
    for what in ("prompt", "output"):
        if w[f"{what}_tokens_max"] < w[f"{what}_tokens_min"]:
            out.append(f"workload.{what}_tokens_max")
    o = s["objectives"]
    n = len(o["names"])
    if len(set(o["names"])) != n:
        out.append("objectives.names")
    lengths_ok = True
    for name in ("return_low", "return_high", "reference_point"):
        if len(o[name]) != n:
            out.append(f"objectives.{name}")
            lengths_ok = False
    if lengths_ok:
        out += [
            f"objectives.return_high[{i}]"
            for i in range(n)
            if not o["return_low"][i] < o["return_high"][i]
        ]
        out += [
            f"objectives.reference_point[{i}]" for i in range(n) if not o["reference_point"][i] < 0
        ]
    if len(s["servers"]) > s["max_servers"]:
        out.append("max_servers")
    if len(set(names)) != len(names):
        out.append("models")
    for k, srv in enumerate(s["servers"]):
        out += [
            f"servers[{k}].hosted_models[{h}]"
            for h, x in enumerate(srv["hosted_models"])
            if x not in names
        ]
    out += [f"workload.mix.{key}" for key in w["mix"] if key not in names]
    return out


def test_base_scenario_breaks_no_cross_field_rule() -> None:
    assert normalise(Scenario, BASE) == EXPLICIT
    assert violations(EXPLICIT) == []


CROSS_FIELD = cross_field_edits()
SLOT_EDITS = st.sampled_from(sorted(SLOT_GROUPS)).flatmap(
    lambda g: st.sampled_from(SLOT_GROUPS[g]).flatmap(invalid_slot_edits)
)
UNKNOWN_KEY_EDITS = st.sampled_from(LEVELS).flatmap(unknown_key_edits)
CROSS_FIELD_EDITS = st.sampled_from(CROSS_FIELD).flatmap(lambda s: s)
# Weighted pick (a plain one_of would flatten CROSS_FIELD's many branches and drown the rest):
# half per-field edits, a sixth unknown keys, a third cross-field rules.
INVALID_EDITS = st.sampled_from(
    [SLOT_EDITS] * 3 + [UNKNOWN_KEY_EDITS] + [CROSS_FIELD_EDITS] * 2
).flatmap(lambda s: s)


def assert_rejected(edit: Edit) -> None:
    data = edit.apply(EXPLICIT)
    with pytest.raises(ValueError) as info:  # any other exception type fails the test
        Scenario.from_dict(data)
    message = str(info.value)
    assert message.startswith(edit.where + " "), (edit, message)
    if edit.shows is not None:
        assert edit.shows in message, (edit, message)


# --- 1. round trips ------------------------------------------------------------------------


def test_to_dict_from_dict_round_trip() -> None:
    scenario = Scenario.from_dict(BASE)
    assert Scenario.from_dict(EXPLICIT) == scenario
    assert Scenario.from_dict(scenario.to_dict()).to_dict() == EXPLICIT
    assert yaml.safe_load(yaml.safe_dump(EXPLICIT)) == EXPLICIT  # plain data only


def test_yaml_file_round_trip(tmp_path: Path) -> None:
    scenario = Scenario.from_dict(BASE)
    path = tmp_path / "s.yaml"
    text = scenario.to_yaml(path)
    assert path.read_text() == text == scenario.to_yaml()
    assert load_scenario(path) == scenario
    assert load_scenario(str(path)) == scenario
    assert yaml.safe_load(text) == EXPLICIT


def test_load_scenario_accepts_a_scenario_and_mappings(tmp_path: Path) -> None:
    scenario = Scenario.from_dict(BASE)
    assert load_scenario(scenario) is scenario
    assert load_scenario(BASE) == scenario
    assert load_scenario(EXPLICIT) == scenario
    assert load_scenario(types.MappingProxyType(BASE)) == scenario
    # presets by name inside a YAML file, as the module docstring promises
    path = tmp_path / "short.yaml"
    path.write_text(yaml.safe_dump(BASE))
    assert load_scenario(path) == scenario


def test_from_dict_does_not_mutate_its_input() -> None:
    data = copy.deepcopy(BASE)
    Scenario.from_dict(data)
    assert data == BASE


@pytest.mark.parametrize("name", list_scenarios())
def test_preset_scenarios_load_and_round_trip(name: str, tmp_path: Path) -> None:
    scenario = load_scenario(name)
    assert isinstance(scenario, Scenario)
    scenario.to_yaml(tmp_path / "p.yaml")
    assert load_scenario(tmp_path / "p.yaml") == scenario


# --- 2. invalid edits ----------------------------------------------------------------------


@pytest.mark.parametrize("slot", SLOTS, ids=lambda s: render(s.path))
def test_every_field_rejects_a_bool_of_the_wrong_kind(slot: Slot) -> None:
    """Deterministic sweep: ``True`` is of the wrong type for every non-bool field."""
    assert strip_optional(slot.hint)[0] is not bool  # no bool fields yet; extend if one appears
    assert_rejected(setting(slot.path, True, shows="True"))


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edit=INVALID_EDITS)
def test_invalid_edit_raises_value_error_naming_field_and_value(edit: Edit) -> None:
    assert_rejected(edit)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edit=CROSS_FIELD_EDITS)
def test_cross_field_edits_are_invalid_by_the_restated_rules(edit: Edit) -> None:
    """Guards the test itself: each cross-field edit breaks a rule ``violations`` knows."""
    assert edit.where in violations(normalise(Scenario, edit.apply(EXPLICIT)))
    assert_rejected(edit)


@pytest.mark.parametrize("path", [("devices", 0, "battery_j"), ("workload", "mix", "resnet-50")])
def test_huge_int_for_float_field_raises_value_error(path: Path_) -> None:
    """float(10**400) overflows; that must surface as a ValueError naming the field."""
    assert_rejected(setting(path, 10**400, shows=None))


def test_huge_int_in_yaml_raises_value_error(tmp_path: Path) -> None:
    data = copy.deepcopy(BASE)
    data["workload"]["arrival_rate_hz"] = 10**400
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match=r"workload\.arrival_rate_hz"):
        load_scenario(path)


# --- 3. valid edits ------------------------------------------------------------------------


def within(meta: Mapping[str, Any], integer: bool) -> st.SearchStrategy:
    lo = meta.get("gt", meta.get("ge"))
    hi = meta.get("lt", meta.get("le"))
    if integer:
        lo_i = -LIMIT if lo is None else (math.floor(lo) + 1 if "gt" in meta else math.ceil(lo))
        hi_i = LIMIT if hi is None else (math.ceil(hi) - 1 if "lt" in meta else math.floor(hi))
        return st.integers(lo_i, hi_i)
    return st.floats(
        min_value=lo,
        max_value=hi,
        exclude_min="gt" in meta,
        exclude_max="lt" in meta,
        allow_nan=False,
        allow_infinity=False,
    )


def in_bounds(x: float, meta: Mapping[str, Any]) -> bool:
    return (
        ("gt" not in meta or x > meta["gt"])
        and ("ge" not in meta or x >= meta["ge"])
        and ("lt" not in meta or x < meta["lt"])
        and ("le" not in meta or x <= meta["le"])
    )


def valid_values(hint: Any, meta: Mapping[str, Any], current: Any) -> st.SearchStrategy:
    tp, optional = strip_optional(hint)
    origin = typing.get_origin(tp)
    options = [st.none()] if optional else []
    if tp is float:
        options.append(within(meta, integer=False))
        if isinstance(current, float):  # near the current value: keeps cross-field rules mostly
            near = st.floats(0.25, 4).map(lambda f: current * f)
            options.append(near.filter(lambda x: in_bounds(x, meta)))
        options.append(within(meta, integer=True).filter(lambda x: in_bounds(x, meta)))  # ints
    elif tp is int:
        ints = within(meta, integer=True)
        options += [ints, ints.map(float)]
        if isinstance(current, int):
            options.append(
                st.integers(current // 2, current * 2).filter(lambda x: in_bounds(x, meta))
            )
    elif tp is str:
        if "choices" in meta:
            options.append(st.sampled_from(meta["choices"]))
        else:
            text = st.text(min_size=0 if meta.get("allow_empty") else 1, max_size=12)
            options.append(text)
    elif is_spec(tp):
        if tp in INSTANCES:
            options.append(st.sampled_from(INSTANCES[tp]))
        if presets_of(tp):
            names = st.sampled_from(sorted(presets_of(tp)))
            options.append(names)
            if tp is not ModelSpec:  # {"preset": name, <overrides>}
                options.append(names.map(lambda n: {"preset": n}))
    elif origin is tuple:
        item_tp = typing.get_args(tp)[0]
        item_meta = meta.get("item", {})
        if item_tp is str and "choices" not in item_meta:  # hosted_models
            items = st.sampled_from(MODEL_NAMES)
        else:
            items = valid_values(item_tp, item_meta, None)
        unique = item_tp is str and "choices" in item_meta
        options.append(st.lists(items, min_size=meta.get("min_len", 0), max_size=3, unique=unique))
    elif origin is dict:
        weights = valid_values(typing.get_args(tp)[1], meta.get("item", {}), None)
        options.append(
            st.dictionaries(st.sampled_from(MODEL_NAMES), weights, min_size=meta.get("min_len", 0))
        )
    return st.one_of(options)


def valid_slot_edits(slot: Slot) -> st.SearchStrategy[Edit]:
    values = valid_values(slot.hint, slot.meta, get(EXPLICIT, slot.path))
    options = [values.map(lambda v: setting(slot.path, v))]
    if slot.field is not None and has_default(slot.field):
        options.append(st.just(removing(slot.path, "")))
    return st.one_of(options)


@st.composite
def valid_composite_edits(draw: st.DrawFn) -> Edit:
    """Valid edits spanning several fields."""
    kind = draw(st.sampled_from(["objectives", "rename", "drop-model", "drop", "append"]))
    if kind == "objectives":
        names = draw(
            st.lists(st.sampled_from(list(OBJECTIVES)), min_size=1, max_size=4, unique=True)
        )
        n = len(names)
        finite = st.floats(-1e12, 1e12)
        low = draw(st.lists(finite, min_size=n, max_size=n))
        high = [lo + draw(st.floats(1e-3, 1e6)) for lo in low]
        ref = draw(st.lists(st.floats(-1e6, 0, exclude_max=True), min_size=n, max_size=n))
        value = {"names": names, "return_low": low, "return_high": high, "reference_point": ref}
        return setting(("objectives",), value)
    if kind == "rename":
        i = draw(st.integers(0, len(MODEL_NAMES) - 1))
        new = draw(st.text(min_size=1, max_size=12).filter(lambda s: s not in MODEL_NAMES))
        old = MODEL_NAMES[i]
        mix = {new if k == old else k: v for k, v in EXPLICIT["workload"]["mix"].items()}
        return Edit((("set", ("models", i, "name"), new), ("set", ("workload", "mix"), mix)))
    if kind == "drop-model":
        i = draw(st.integers(0, len(MODEL_NAMES) - 1))
        return Edit(
            (("remove", ("models", i), None), ("remove", ("workload", "mix", MODEL_NAMES[i]), None))
        )
    what = draw(st.sampled_from(["devices", "servers", "models"]))
    if kind == "drop":
        return removing((what, draw(st.integers(0, len(EXPLICIT[what]) - 1))), "")
    if what == "models":
        return Edit((("append", ("models",), draw(st.sampled_from(sorted(MODEL_PRESETS)))),))
    hint = typing.get_type_hints(Scenario)[what]
    cls = typing.get_args(hint)[0]
    return Edit((("append", (what,), draw(st.sampled_from(sorted(presets_of(cls))))),))


VALID_EDITS = st.one_of(
    st.sampled_from(sorted(SLOT_GROUPS)).flatmap(
        lambda g: st.sampled_from(SLOT_GROUPS[g]).flatmap(valid_slot_edits)
    ),
    valid_composite_edits(),
)


@pytest.fixture(scope="module")
def yaml_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("valid") / "s.yaml"


@settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(edits=st.lists(VALID_EDITS, min_size=1, max_size=3))
def test_valid_edits_construct_and_round_trip(edits: list[Edit], yaml_path: Path) -> None:
    data = EXPLICIT
    for edit in edits:
        try:
            data = edit.apply(data)
        except LookupError:  # an earlier edit removed / replaced what this one changes
            assume(False)
    expected = normalise(Scenario, data)
    assume(not violations(expected))
    before = copy.deepcopy(data)
    scenario = Scenario.from_dict(data)
    assert data == before
    assert scenario.to_dict() == expected
    assert Scenario.from_dict(scenario.to_dict()) == scenario
    scenario.to_yaml(yaml_path)
    assert load_scenario(yaml_path) == scenario


# --- 4. load_scenario errors -----------------------------------------------------------------


def test_unknown_preset_name_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="no-such-scenario-xyz"):
        load_scenario("no-such-scenario-xyz")


def test_missing_file_is_a_value_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ValueError, match="missing.yaml"):
        load_scenario(missing)
    with pytest.raises(ValueError, match="missing.yaml"):
        load_scenario(str(missing))
    with pytest.raises(ValueError):  # a directory is not a scenario file
        load_scenario(tmp_path)


@pytest.mark.parametrize("text", ["name: [unclosed", "a: b: c", "{", "\tname: x\n", "- a\nb: c"])
def test_malformed_yaml_is_a_value_error(text: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match="invalid YAML"):
        load_scenario(path)


@pytest.mark.parametrize("text", ["- a\n- b\n", "", "42\n", "just a string\n", "null\n"])
def test_top_level_not_a_mapping_is_a_value_error(text: str, tmp_path: Path) -> None:
    path = tmp_path / "top.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match="top level must be a mapping"):
        load_scenario(path)


@pytest.mark.parametrize("source", [42, 1.5, None, ["phone"], b"default"])
def test_unsupported_source_types_are_value_errors(source: Any) -> None:
    with pytest.raises(ValueError):
        load_scenario(source)


def test_invalid_value_in_a_yaml_file_names_the_path(tmp_path: Path) -> None:
    data = copy.deepcopy(EXPLICIT)
    data["servers"][0]["csd"]["internal_gbps"] = -3.0
    path = tmp_path / "bad_value.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(
        ValueError, match=r"^servers\[0\]\.csd\.internal_gbps must be > 0, got -3\.0$"
    ):
        load_scenario(path)


def test_unknown_key_in_a_yaml_file_is_an_error(tmp_path: Path) -> None:
    data = copy.deepcopy(BASE)
    data["network"] = {"wireless_bandwith_hz": 1e6}  # typo
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match=r"^network\.wireless_bandwith_hz is not a known field"):
        load_scenario(path)


def test_undecodable_file_is_a_value_error(tmp_path: Path) -> None:
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00name: x")
    with pytest.raises(ValueError):
        load_scenario(path)


@pytest.mark.skipif("default" not in list_scenarios(), reason="no default preset yet")
def test_load_scenario_without_argument_is_the_default_preset() -> None:
    assert load_scenario() == load_scenario("default")


def test_replace_validates_and_names_the_field() -> None:
    scenario = Scenario.from_dict(BASE)
    assert scenario.replace(max_servers=3).max_servers == 3
    with pytest.raises(ValueError, match=r"^max_servers must be >= 1, got 0$"):
        scenario.replace(max_servers=0)
    with pytest.raises(ValueError, match=r"^max_servers must be >= the number of servers \(3\)"):
        scenario.replace(max_servers=2)


def test_model_preset_names_in_a_tuple_like_other_presets() -> None:
    data = {**BASE, "devices": tuple(BASE["devices"]), "models": tuple(BASE["models"])}
    assert Scenario.from_dict(data) == Scenario.from_dict(BASE)


@pytest.mark.parametrize("text", ["1e5", "0E0", "-2.5e3", ".5e5", "1_0e1"])
def test_number_like_strings_round_trip_through_yaml(text: str, tmp_path: Path) -> None:
    scenario = Scenario.from_dict({**BASE, "description": text})
    scenario.to_yaml(tmp_path / "s.yaml")
    assert load_scenario(tmp_path / "s.yaml") == scenario


def test_number_like_strings_that_pyyaml_quotes_round_trip(tmp_path: Path) -> None:
    for text in ("1.5", "1.0e+5", "12", ".inf", "null", "yes", "0x1F", "1:30"):
        scenario = Scenario.from_dict({**BASE, "description": text, "name": text})
        scenario.to_yaml(tmp_path / "s.yaml")
        assert load_scenario(tmp_path / "s.yaml") == scenario


# --- presets with overrides ("preset" key in a device / server / GPU mapping) ------------------


def test_preset_with_overrides() -> None:
    phone = Scenario.from_dict(BASE).devices[0]
    data = {**BASE, "devices": [{"preset": "phone", "battery_j": 1.0}, "jetson-orin-nano"]}
    data["servers"] = [{"preset": "edge-a6000", "gpu": "h100"}, "cloud-h100"]
    scenario = Scenario.from_dict(data)
    assert scenario.devices[0] == phone.replace(battery_j=1.0)
    assert scenario.servers[0].gpu.name == "h100"
    assert scenario.servers[0].name == "edge-a6000"


@pytest.mark.parametrize(
    ("device", "message"),
    [
        (
            {"preset": "no-such-phone"},
            r"^devices\[0\]\.preset must name a preset .*'no-such-phone'",
        ),
        ({"preset": 3}, r"^devices\[0\]\.preset must name a preset .*got 3$"),
        (
            {"preset": "phone", "battery_j": -1.0},
            r"^devices\[0\]\.battery_j must be > 0, got -1\.0$",
        ),
        ({"preset": "phone", "batery_j": 1.0}, r"^devices\[0\]\.batery_j is not a known field"),
        (
            {"preset": "phone", "power_max_w": 0.5},
            r"^devices\[0\]\.power_max_w must be >= power_static_w, got 0\.5$",
        ),
    ],
)
def test_preset_with_bad_overrides(device: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Scenario.from_dict({**BASE, "devices": [device]})


def test_preset_key_only_where_presets_exist() -> None:
    data = copy.deepcopy(EXPLICIT)
    data["servers"][0]["host"]["preset"] = "x"
    with pytest.raises(ValueError, match=r"^servers\[0\]\.host\.preset is not a known field"):
        Scenario.from_dict(data)


def test_rush_hour_example_is_the_default_with_its_two_stated_changes() -> None:
    """examples/rush-hour.yaml (README, Status) must stay the default scenario with 4x the
    arrivals and 4 admission slots per server, nothing else."""
    path = Path(__file__).resolve().parents[2] / "examples" / "rush-hour.yaml"
    rush = load_scenario(path).to_dict()
    base = load_scenario("default").to_dict()
    assert rush["workload"]["arrival_rate_hz"] == pytest.approx(
        4 * base["workload"]["arrival_rate_hz"]
    )
    assert [s["max_running"] for s in rush["servers"]] == [4] * len(base["servers"])
    for d in (rush, base):
        d.pop("name"), d.pop("description"), d["workload"].pop("arrival_rate_hz")
        for s in d["servers"]:
            s.pop("max_running")
    assert rush == base
