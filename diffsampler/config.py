"""YAML experiment configs as typed, validated dataclasses, with command-line overrides.

A config file holds the fields of one dataclass (unknown keys are refused with a "did you
mean"); ``--set key=value`` items replace those of the file, and the command's own flags replace
both; every value is then type-checked and validated, and any problem is one ``UserError`` line
naming the key and where it came from.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

from diffsampler.errors import UserError, shorten, unknown_choice

C = TypeVar("C")


_TYPE_WORDS = {
    bool: "true or false",
    float: "a number",
    int: "an integer",
    str: "a string",
    list: "a list",
    dict: "a mapping",
}


def _type_name(tp: Any) -> str:
    return _TYPE_WORDS.get(typing.get_origin(tp) or tp, str(tp).replace("typing.", ""))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """``value`` checked against the annotation ``tp`` (int accepted for float; no other casts)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(key, value, arg)
            except UserError:
                continue
        words = " or ".join(_type_name(a) for a in args if a is not type(None))
        raise UserError(f"config key '{key}' must be {words}, got {shorten(value)}")
    if tp is Any:
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config key '{key}' must be a list, got {shorten(value)}")
        (item,) = typing.get_args(tp) or (Any,)
        return [_coerce(key, v, item) for v in value]
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise UserError(f"config key '{key}' must be a mapping, got {shorten(value)}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"config key '{key}' must be true or false, got {shorten(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"config key '{key}' must be a number, got {shorten(value)}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"config key '{key}' must be an integer, got {shorten(value)}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise UserError(f"config key '{key}' must be a string, got {shorten(value)}")
        return value
    return value


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping at the top of a YAML file; a missing or malformed file is a UserError."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file not found: {p}")
    if p.stat().st_size > MAX_CONFIG_BYTES:
        raise UserError(
            f"config file {p} is {p.stat().st_size:,} bytes, above the limit of {MAX_CONFIG_BYTES:,}; "
            "give long sigma grids as a schedule file (schedule: PATH.json)"
        )
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise UserError(
            f"config file {p} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
            "give a YAML file saved as UTF-8"
        ) from None
    except OSError as exc:
        raise UserError(f"cannot read config file {p}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"config file {p} is not valid YAML{where}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {p} must hold a mapping of keys to values")
    return data


MAX_CONFIG_BYTES = 1_000_000
"""The largest config file read (YAML takes seconds per megabyte; a config is a few hundred bytes)."""

FLAT = {"flat": True}
"""Field metadata of a nested settings dataclass whose keys files, ``--set`` and records give at the top level."""


def _flat_fields(cls: type) -> dict[str, type]:
    """The nested settings fields of ``cls`` (marked ``FLAT``) and their dataclasses."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.metadata.get("flat")}


def config_keys(cls: type) -> list[str]:
    """The keys a config file or ``--set`` may give for the dataclass ``cls`` (nested settings' keys flat)."""
    nested = _flat_fields(cls)
    keys: list[str] = []
    for f in dataclasses.fields(cls):
        keys += config_keys(nested[f.name]) if f.name in nested else [f.name]
    return keys


def flat_dict(obj: Any) -> dict[str, Any]:
    """``dataclasses.asdict(obj)`` with the keys of nested settings at the top level where the field stands: the
    form of config files and of the configs recorded in outputs and cache keys."""
    nested = _flat_fields(type(obj))
    out: dict[str, Any] = {}
    for key, value in dataclasses.asdict(obj).items():
        out.update(flat_dict(getattr(obj, key)) if key in nested else {key: value})
    return out


def recorded_precision(precision: str) -> dict[str, str]:
    """``{"precision": precision}`` for a lowered network precision, ``{}`` for ``FULL_PRECISION``: records and
    cache keys name the precision only when lowered, so that those made before the setting existed still match."""
    return {} if precision == FULL_PRECISION else {"precision": precision}


def identity_values(obj: Any) -> dict[str, Any]:
    """``flat_dict(obj)`` as a cache key, its ``precision`` as ``recorded_precision`` gives it."""
    values = flat_dict(obj)
    precision = values.pop("precision", FULL_PRECISION)
    return {**values, **recorded_precision(precision)}


def with_precision(cfg: C, precision: str) -> C:
    """A copy of ``cfg`` (a config with ``run: RunSettings``) whose precision is ``precision`` (resolved from auto);
    the caller's config is left as it was."""
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, precision=precision))  # type: ignore[attr-defined, type-var]


def check_keys(cls: type, values: Mapping[str, Any], source: str) -> None:
    """A UserError naming ``source`` (a file, ``--set``) for the first key that ``cls`` does not have."""
    names = config_keys(cls)
    for key in values:
        if key not in names:
            raise unknown_choice(f"key in {source}", str(key), names)


def _typed(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {key: _coerce(key, value, hints[key]) for key, value in values.items()}


def build_config(cls: type[C], values: Mapping[str, Any], source: str = "config") -> C:
    """An instance of the dataclass ``cls`` from ``values``, type-checked, then validated."""
    check_keys(cls, values, source)
    hints = typing.get_type_hints(cls)
    typed: dict[str, Any] = {}
    factories: dict[str, Any] = {f.name: f.default_factory for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for name, sub in _flat_fields(cls).items():
        given = {key: values[key] for key in config_keys(sub) if key in values}
        typed[name] = dataclasses.replace(factories[name](), **_typed(sub, given))
    nested = set(config_keys(cls)) - set(hints)
    typed.update(_typed(cls, {key: value for key, value in values.items() if key not in nested}))
    obj = cls(**typed)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate()
    return obj


def config_values(cls: type, path: str | Path | None, sets: list[str] | None = None) -> dict[str, Any]:
    """The raw values of the YAML file at ``path`` (if any) with the ``--set key=value`` items applied on top.

    Each source's keys are checked on their own, so an unknown key names the file or ``--set``; a dotted key
    (``options.afs=true``) sets one entry of a mapping key.
    """
    values: dict[str, Any] = read_yaml(path) if path is not None else {}
    check_keys(cls, values, str(path))
    assigned = parse_assignments(sets)
    check_keys(cls, {key.partition(".")[0]: v for key, v in assigned.items()}, "--set")
    for key, value in assigned.items():
        head, dot, tail = key.partition(".")
        if dot:
            inner = values.get(head) or {}
            if not isinstance(inner, Mapping):
                raise UserError(f"--set {key}=...: '{head}' is not a mapping, so it has no key '{tail}'")
            value = {**inner, tail: value}
        values[head] = value
    return values


def load_config(
    cls: type[C], path: str | Path | None, flags: Mapping[str, Any] | None = None, sets: list[str] | None = None
) -> C:
    """``cls`` from the YAML file at ``path`` (if any), then the ``--set`` items, then the non-None ``flags``."""
    values = config_values(cls, path, sets)
    values.update({k: v for k, v in (flags or {}).items() if v is not None})
    return build_config(cls, values, "--set" if path is None else str(path))


def parse_assignments(items: list[str] | None) -> dict[str, Any]:
    """``["key=value", ...]`` from the command line, each value read as YAML (so 3, true, [1, 2])."""
    result: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"expected key=value, got {shorten(item)}")
        try:
            result[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            key = shorten(key.strip(), as_repr=False)
            raise UserError(f"cannot read the value of '{key}' in {shorten(item)}") from exc
    return result


DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "float64")
FULL_PRECISION = "float32"
"""The network's own precision: the default, and what a record that names no precision ran in."""
PRECISIONS = (FULL_PRECISION, "bfloat16", "auto")
"""The network's precision: its own dtype, or bf16 autocast around it (U-Nets; the solver state stays ``dtype``);
auto is bfloat16 for a U-Net on a device with native bf16 units (CUDA, a CPU with AMX or AVX512-BF16), else
float32, and runs record what it resolved to."""
MAX_SEED = 2**63 - 1
"""Seeds are 0 .. 2^63 - 1 in every command: a signed 64-bit integer (torch generators, NumPy int64 records)."""


MAX_NFE = 1000
"""The largest NFE budget any command takes (an explicit grid: MAX_NFE + 1 steps): fast samplers work at 3 to 100,
so a larger budget is a typo that would run for hours before its first progress line."""
MAX_SAMPLES = 1_000_000
"""The most samples (or latents, data points) one command draws: 20 times FID's customary 50,000."""
MAX_GRID = 10_000
"""The most intervals of compute-ems' lambda grid (DPM-Solver-v3, arXiv 2310.13268, uses about 1,200)."""


def check_limit(key: str, value: int | None, limit: int, why: str) -> None:
    """A UserError naming the limit when ``value`` (not None) is above ``limit``: checked before any work."""
    if value is not None and value > limit:
        raise UserError(f"{key} is {value:,}, above the limit of {limit:,} ({why}); lower it")


def check_nfe(nfe: int | None, key: str = "nfe") -> None:
    """Refuse an NFE budget above MAX_NFE."""
    check_limit(key, nfe, MAX_NFE, "fast samplers use 3 to 100 NFE")


def check_samples(num: int | None, key: str = "num_samples") -> None:
    """Refuse a sample (latent, data point) count above MAX_SAMPLES."""
    check_limit(key, num, MAX_SAMPLES, "all of them are held in memory")


def check_seed(seed: int) -> None:
    """A UserError for a seed outside 0 .. MAX_SEED."""
    if not 0 <= seed <= MAX_SEED:
        raise UserError(f"seed must be an integer from 0 to 2^63 - 1 = {MAX_SEED}, got {seed}")


@dataclass
class RunSettings:
    """How a generating command runs: samples per network call, the seed (sample i uses (seed, i)), the device,
    the dtype of the state x and the network's precision (bfloat16: autocast around a U-Net, about 2x faster on
    CPUs with AMX). Nested in a config, with its keys flat in files."""

    batch_size: int = 256
    seed: int = 0
    device: str = "auto"
    dtype: str = "float32"
    precision: str = FULL_PRECISION

    def validate(self) -> None:
        """A positive batch, a seed in range, a known device and dtype."""
        if self.batch_size < 1:
            raise UserError(f"batch_size must be at least 1, got {self.batch_size}")
        check_seed(self.seed)
        if self.device not in DEVICES:
            raise unknown_choice("device", self.device, DEVICES)
        if self.dtype not in DTYPES:
            raise unknown_choice("dtype", self.dtype, DTYPES)
        if self.precision not in PRECISIONS:
            raise unknown_choice("precision", self.precision, PRECISIONS)


def run_settings(**defaults: Any) -> Any:
    """The ``run`` field of a config: its RunSettings, with this command's own ``defaults`` where they differ."""
    return field(default_factory=lambda: RunSettings(**defaults), metadata=FLAT)


@dataclass
class SampleConfig:
    """``diffsampler sample``: one model, one solver, one NFE budget (or an explicit grid)."""

    model: str = "gmm-fmnist"
    model_options: dict[str, Any] = field(default_factory=dict)
    trust_pickle: bool = False
    solver: str = "dpm2"
    nfe: int | None = None
    schedule: str | None = None
    rho: float | None = None
    sigma_min: float | None = None
    sigma_max: float | None = None
    sigmas: list[float] | None = None
    shift: float | None = None
    options: dict[str, Any] = field(default_factory=dict)
    num_samples: int = 64
    run: RunSettings = run_settings()
    out: str = "results/samples"
    name: str | None = None

    def validate(self) -> None:
        if self.nfe is not None and self.nfe < 1:
            raise UserError(f"nfe must be at least 1, got {self.nfe}")
        if self.num_samples < 1:
            raise UserError(f"num_samples must be at least 1, got {self.num_samples}")
        check_nfe(self.nfe)
        check_samples(self.num_samples)
        check_limit("the length of sigmas", len(self.sigmas or []), MAX_NFE + 2, f"NFE at most {MAX_NFE}")
        self.run.validate()
        if self.sigmas is not None and (self.schedule is not None or self.rho is not None):
            raise UserError("give either an explicit 'sigmas' list or a 'schedule' (with 'rho'), not both")
        if self.shift is not None and not self.shift > 0:
            raise UserError(f"shift must be positive (1: no shift), got {self.shift}")
