"""Validated frozen dataclasses: the machinery behind every scenario and hardware spec.

A spec class is a frozen dataclass deriving from :class:`Spec`. Each field's annotation gives its
type (``float``, ``int``, ``str``, ``bool``, another ``Spec``, ``tuple[...]``, ``dict[str, float]``
or ``X | None``) and its ``metadata`` the bounds (``gt``, ``ge``, ``lt``, ``le``) or the allowed
values (``choices``). Construction validates every field and then calls ``_check()`` for
cross-field rules. :meth:`Spec.from_dict` builds a spec from plain data (YAML), rejecting unknown
keys; every error is a :class:`SpecError` (a ``ValueError``) whose message starts with the full
field path, e.g. ``servers[1].csd.internal_gbps must be > 0, got -3.0``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

__all__ = ["Spec", "SpecError", "bounded", "choice"]

T = TypeVar("T", bound="Spec")


class SpecError(ValueError):
    """Invalid spec value. ``path`` is the dotted field path, ``reason`` the rule broken."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path} {reason}" if path else reason)

    def prefixed(self, prefix: str) -> SpecError:
        if not prefix:
            return self
        if not self.path:
            path = prefix
        elif self.path.startswith("["):
            path = prefix + self.path
        else:
            path = f"{prefix}.{self.path}"
        return SpecError(path, self.reason)


class FrozenMap(Mapping):
    """A read-only, hashable mapping (a spec's ``dict`` fields), so specs stay hashable."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = dict(data)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(tuple(self._data.items()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self._data) == dict(other)

    def __repr__(self) -> str:
        return f"{dict(self._data)!r}"


def bounded(default: Any = dataclasses.MISSING, **bounds: float) -> Any:
    """A dataclass field with numeric bounds: ``gt``, ``ge``, ``lt``, ``le``."""
    return dataclasses.field(default=default, metadata=bounds)


def choice(default: Any = dataclasses.MISSING, *, choices: tuple[str, ...]) -> Any:
    """A string dataclass field restricted to ``choices``."""
    return dataclasses.field(default=default, metadata={"choices": choices})


def _is_spec(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, Spec)


def _optional_inner(tp: Any) -> Any | None:
    """``X`` for ``X | None`` / ``Optional[X]``, else None."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0]
    return None


def _fmt(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _coerce(tp: Any, value: Any, path: str, meta: Mapping[str, Any], build: bool) -> Any:
    """Check ``value`` against annotation ``tp`` and metadata; return the stored value."""
    inner = _optional_inner(tp)
    if inner is not None:
        return None if value is None else _coerce(inner, value, path, meta, build)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(path, f"must be a number, got {_fmt(value)}")
        try:
            value = float(value)
        except OverflowError:
            raise SpecError(
                path, f"must be finite, got an integer of {len(str(value))} digits"
            ) from None
        if math.isnan(value) or (math.isinf(value) and not meta.get("allow_inf", False)):
            raise SpecError(path, f"must be finite, got {value}")
        _check_bounds(value, path, meta)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise SpecError(path, f"must be an integer, got {_fmt(value)}")
        _check_bounds(value, path, meta)
        return int(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise SpecError(path, f"must be true or false, got {_fmt(value)}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise SpecError(path, f"must be a string, got {_fmt(value)}")
        if "choices" in meta and value not in meta["choices"]:
            raise SpecError(path, f"must be one of {list(meta['choices'])}, got {value!r}")
        if not value and not meta.get("allow_empty", False):
            raise SpecError(path, "must be a non-empty string, got ''")
        return value
    if _is_spec(tp):
        if isinstance(value, tp):
            return value
        if build and isinstance(value, str) and tp.PRESETS is not None:
            presets = tp.PRESETS()
            if value not in presets:
                raise SpecError(path, f"unknown preset {value!r}; known: {sorted(presets)}")
            return presets[value]
        if build and isinstance(value, Mapping):
            return tp.from_dict(value, path)
        raise SpecError(path, f"must be a {tp.__name__} (a mapping), got {_fmt(value)}")
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple)):
            raise SpecError(path, f"must be a list, got {_fmt(value)}")
        item_tp = args[0]
        items = tuple(
            _coerce(item_tp, v, f"{path}[{i}]", meta.get("item", {}), build)
            for i, v in enumerate(value)
        )
        if len(items) < meta.get("min_len", 0):
            raise SpecError(path, f"must have at least {meta['min_len']} entries, got {len(items)}")
        return items
    if origin is dict:
        _, val_tp = typing.get_args(tp)
        if not isinstance(value, Mapping):
            raise SpecError(path, f"must be a mapping, got {_fmt(value)}")
        out = {}
        for k, v in value.items():
            if not isinstance(k, str) or not k:
                raise SpecError(path, f"keys must be non-empty strings, got {_fmt(k)}")
            out[k] = _coerce(val_tp, v, f"{path}.{k}", meta.get("item", {}), build)
        if len(out) < meta.get("min_len", 0):
            raise SpecError(path, f"must have at least {meta['min_len']} entries, got {len(out)}")
        return FrozenMap(out)
    raise TypeError(f"unsupported spec annotation {tp!r} at {path}")  # programming error


def _check_bounds(value: float, path: str, meta: Mapping[str, Any]) -> None:
    if "gt" in meta and not value > meta["gt"]:
        raise SpecError(path, f"must be > {meta['gt']}, got {value}")
    if "ge" in meta and not value >= meta["ge"]:
        raise SpecError(path, f"must be >= {meta['ge']}, got {value}")
    if "lt" in meta and not value < meta["lt"]:
        raise SpecError(path, f"must be < {meta['lt']}, got {value}")
    if "le" in meta and not value <= meta["le"]:
        raise SpecError(path, f"must be <= {meta['le']}, got {value}")


class Spec:
    """Base of every validated frozen dataclass (subclasses use ``@dataclass(frozen=True)``)."""

    #: Optional callable returning ``{name: instance}``; lets YAML name a preset instead of a mapping.
    PRESETS: ClassVar[Any] = None
    _hints_cache: ClassVar[dict[type, dict[str, Any]]] = {}

    @classmethod
    def _hints(cls) -> dict[str, Any]:
        hints = Spec._hints_cache.get(cls)
        if hints is None:
            hints = typing.get_type_hints(cls)
            Spec._hints_cache[cls] = hints
        return hints

    def __post_init__(self) -> None:
        self._validate(build=False)

    def _validate(self, build: bool) -> None:
        hints = self._hints()
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            coerced = _coerce(hints[f.name], value, f.name, f.metadata, build)
            if coerced is not value:
                object.__setattr__(self, f.name, coerced)
        self._check()

    def _check(self) -> None:
        """Cross-field rules; raise :class:`SpecError` with the field path. Override."""

    @classmethod
    def from_dict(cls: type[T], data: Any, path: str = "") -> T:
        """Build and validate from plain data; errors name the full field path."""
        if isinstance(data, cls):
            return data
        if not isinstance(data, Mapping):
            raise SpecError(path, f"must be a mapping for {cls.__name__}, got {_fmt(data)}")
        names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        if "preset" in data and cls.PRESETS is not None:  # a preset with some fields overridden
            base = data["preset"]
            presets = cls.PRESETS()
            if not isinstance(base, str) or base not in presets:
                raise SpecError(
                    f"{path}.preset" if path else "preset",
                    f"must name a preset ({sorted(presets)}), got {_fmt(base)}",
                )
            data = {**presets[base].to_dict(), **{k: v for k, v in data.items() if k != "preset"}}
        for key in data:
            if key not in names:
                where = f"{path}.{key}" if path else str(key)
                raise SpecError(where, f"is not a known field; allowed: {sorted(names)}")
        hints = cls._hints()
        kwargs = {}
        for name, f in names.items():
            sub = f"{path}.{name}" if path else name
            if name not in data:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise SpecError(sub, "is required")
                continue
            kwargs[name] = _coerce(hints[name], data[name], sub, f.metadata, build=True)
        try:
            return cls(**kwargs)
        except SpecError as err:
            raise err.prefixed(path) from None

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, dicts, numbers, strings) that :meth:`from_dict` reads back."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    def replace(self: T, **changes: Any) -> T:
        """A copy with some fields changed, validated; a nested spec may be given as a mapping."""
        unknown = [k for k in changes if k not in {f.name for f in dataclasses.fields(self)}]  # type: ignore[arg-type]
        if unknown:
            raise SpecError(unknown[0], "is not a known field")
        current = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        return type(self).from_dict({**current, **changes})


def _plain(value: Any) -> Any:
    if isinstance(value, Spec):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value
