"""Typed, path-naming access to decoded manifest JSON (shared by the manifest parsers).

Imports the standard library and the error helpers only.
"""

from __future__ import annotations

import math
from typing import Any

from vla_ros.runtime.package.consistency import fail


class Reader:
    """Typed access to one JSON object, with errors that name the field's path."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, dict):
            raise fail('invalid', where, f'expected an object, got {type(data).__name__}')
        self.data = data
        self.where = where
        self.used: set[str] = set()

    def _path(self, key: str) -> str:
        return f'{self.where}.{key}' if self.where else key

    def get(self, key: str, types: type | tuple[type, ...], default: Any = ...) -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is ...:
                raise fail('invalid', self._path(key), 'is required but missing')
            return default
        value = self.data[key]
        # bool is an int in Python; a flag is never a count.
        if isinstance(value, bool) and bool not in _as_tuple(types):
            raise fail('invalid', self._path(key), f'expected {_names(types)}, got a boolean')
        if not isinstance(value, types):
            raise fail('invalid', self._path(key),
                        f'expected {_names(types)}, got {type(value).__name__} {value!r:.60}')
        return value

    def choice(self, key: str, allowed: tuple[str, ...], default: Any = ...) -> str:
        value = self.get(key, str, default)
        if value not in allowed:
            raise fail('invalid', self._path(key), f'{value!r} is not one of {list(allowed)}')
        return value

    def int_in(self, key: str, lo: int, hi: int | None = None, default: Any = ...) -> int:
        value = self.get(key, int, default)
        if value < lo or (hi is not None and value > hi):
            bound = f'[{lo}, {hi}]' if hi is not None else f'>= {lo}'
            raise fail('invalid', self._path(key), f'{value} is outside {bound}')
        return value

    def number(self, key: str, lo: float | None = None, hi: float | None = None,
               default: Any = ..., lo_open: bool = False) -> float:
        value = float(self.get(key, (int, float), default))
        if not math.isfinite(value):
            raise fail('non_finite', self._path(key), f'{value} is not finite')
        if lo is not None and (value < lo or (lo_open and value == lo)):
            op = '>' if lo_open else '>='
            raise fail('invalid', self._path(key), f'{value} must be {op} {lo}')
        if hi is not None and value > hi:
            raise fail('invalid', self._path(key), f'{value} must be <= {hi}')
        return value

    def floats(self, key: str, length: int | None = None, default: Any = ...) -> tuple[float, ...]:
        values = self.get(key, list, default)
        path = self._path(key)
        out = []
        for i, v in enumerate(values):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise fail('invalid', f'{path}[{i}]', f'expected a number, got {v!r:.40}')
            if not math.isfinite(v):
                raise fail('non_finite', f'{path}[{i}]', f'{v} is not finite')
            out.append(float(v))
        if length is not None and len(out) != length:
            raise fail('inconsistent', path, f'has {len(out)} values, expected {length}')
        return tuple(out)

    def strings(self, key: str, default: Any = ...) -> tuple[str, ...]:
        values = self.get(key, list, default)
        for i, v in enumerate(values):
            if not isinstance(v, str) or not v:
                raise fail('invalid', f'{self._path(key)}[{i}]',
                            f'expected a non-empty string, got {v!r:.40}')
        return tuple(values)

    def sub(self, key: str, default: Any = ...) -> Reader | None:
        value = self.get(key, dict, default)
        return None if value is None else Reader(value, self._path(key))

    def items(self, key: str, default: Any = ...) -> list[Reader]:
        values = self.get(key, list, default)
        return [Reader(v, f'{self._path(key)}[{i}]') for i, v in enumerate(values)]

    def done(self) -> None:
        """Reject unknown keys: a typo in a manifest must not be silently ignored."""
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise fail('invalid', self.where or '<root>', f'unknown field(s) {unknown}')


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _names(types: type | tuple[type, ...]) -> str:
    return ' or '.join(t.__name__ for t in _as_tuple(types))
