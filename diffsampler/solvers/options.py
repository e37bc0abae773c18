"""Solver options declared once, in the solver function's signature.

A solver's options are its keyword-only parameters, less ``cond`` (the model's condition, not an option) and
private names (``_name``): the default is the parameter's default and the annotation says which values are
accepted: ``bool``, ``int``, ``float`` (finite; an integer is read as a float), ``str``, a class,
``Literal[...]`` (one of these values), ``Annotated[float, Range(...)]`` (an interval), unions of them, or ``Any``.
``check_options`` applies them when a config or command line is read, so a bad value is refused before a run.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping

from diffsampler.errors import UserError, unknown_choice

NOT_OPTIONS = ("cond", "callback")
"""Keyword-only parameters every solver takes that are not options."""
REQUIRED_OPTIONS = ("afs", "denoise_to_zero")
"""Options every solver takes (the NFE accounting reads them)."""

_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


@dataclass(frozen=True)
class Range:
    """An interval for ``Annotated[float, Range(low, high, ...)]``; each end closed unless marked open."""

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        return f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


@dataclass(frozen=True)
class Option:
    """One option: its name, default and accepted values (an annotation, as above)."""

    name: str
    default: Any
    annotation: Any

    def check(self, solver: str, value: Any) -> Any:
        """``value`` if the annotation accepts it (an int made a float where a float is asked), else a UserError."""
        ok, checked = accepts(self.annotation, value)
        if not ok:
            raise UserError(f"{solver} option {self.name} must be {describe(self.annotation)}, got {value!r}")
        return checked


def signature_options(fn: Callable[..., Any]) -> dict[str, Option]:
    """The options of a solver function, in signature order (``__wrapped__`` is followed, as by inspect)."""
    target = inspect.unwrap(fn)
    hints = typing.get_type_hints(target, include_extras=True)
    options = {
        p.name: Option(p.name, p.default, hints.get(p.name, Any))
        for p in inspect.signature(target).parameters.values()
        if p.kind is p.KEYWORD_ONLY and p.name not in NOT_OPTIONS and not p.name.startswith("_")
    }
    missing = [name for name in REQUIRED_OPTIONS if name not in options]
    if missing or any(o.default is inspect.Parameter.empty for o in options.values()):
        raise TypeError(
            f"{fn.__name__}: solver options need defaults, and every solver takes {', '.join(REQUIRED_OPTIONS)}"
        )
    return options


def check_options(solver: str, declared: Mapping[str, Option], given: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults merged with ``given``, each given value checked; an unknown name is a UserError with a hint."""
    out = {name: option.default for name, option in declared.items()}
    for key, value in (given or {}).items():
        if key not in declared:
            raise unknown_choice(f"option of solver '{solver}'", str(key), declared)
        out[key] = declared[key].check(solver, value)
    return out


def accepts(tp: Any, value: Any) -> tuple[bool, Any]:
    """(True, value as used) when the annotation ``tp`` accepts ``value``, else (False, value)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return True, value
    if tp is None or tp is type(None):
        return value is None, value
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(tp):
            ok, checked = accepts(arm, value)
            if ok:
                return True, checked
        return False, value
    if origin is Literal:
        return any(type(value) is type(a) and value == a for a in typing.get_args(tp)), value
    if origin is typing.Annotated:
        base, *marks = typing.get_args(tp)
        ok, checked = accepts(base, value)
        return ok and all(checked in m for m in marks if isinstance(m, Range)), checked
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return ok, float(value) if ok else value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    return isinstance(value, tp), value


def describe(tp: Any) -> str:
    """The accepted values in words: 'true or false', 'one of 1, 2, 3', 'a number in (0, 1]', ..."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        arms = [a for a in typing.get_args(tp) if a is not type(None)]
        none = " or null" if len(arms) < len(typing.get_args(tp)) else ""
        return " or ".join(describe(a) for a in arms) + none
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in typing.get_args(tp))
    if origin is typing.Annotated:
        base, *marks = typing.get_args(tp)
        return describe(base) + "".join(f" in {m}" for m in marks if isinstance(m, Range))
    if tp in _WORDS:
        return _WORDS[tp]
    return "anything" if tp is Any else f"a {getattr(tp, '__name__', tp)}"
