"""``python:FILE.py:NAME`` and ``python:package.module:NAME``: the user's own network as a denoiser.

NAME (a factory or class) is called with the model options and returns a ``Denoiser`` of ours or any callable
``f(x, sigma, **cond)``. What ``f`` returns is read by ``prediction``:

- ``x0``: D(x, sigma) = f(x, sigma) (the EDM / k-diffusion form, arXiv 2206.00364);
- ``eps``: D = x - sigma f(x, sigma) (the noise estimate in the VE form x = x0 + sigma eps);
- ``v``: k-diffusion's ``VDenoiser``: D = c_skip x + c_out f(c_in x, t) with t = 2 atan(sigma) / pi,
  c_skip = sd^2 / (sigma^2 + sd^2), c_out = -sigma sd / sqrt(sigma^2 + sd^2), c_in = 1 / sqrt(sigma^2 + sd^2)
  and sd = ``sigma_data`` (v-prediction of arXiv 2202.00512 sec. 4);
- ``flow``: a rectified-flow velocity f(x_t, time) = v of x_t = (1 - t) x0 + t eps (arXiv 2209.03003), read by
  ``diffsampler.models.flow.velocity_denoise``: D = x_t - t v with t = sigma / (1 + sigma), x_t = x / (1 + sigma),
  time = ``time_scale`` t (or ``time_scale`` (1 - t) with f returning -v when ``reverse_time``); ``shift`` is the
  ``flow`` schedule's shift, and sigma = inf (t = 1) is accepted.

Running the file runs the user's code: that is their explicit choice in naming it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Mapping

import torch

from diffsampler.errors import UserError, plain_message, unknown_choice
from diffsampler.models.base import Denoiser
from diffsampler.models.flow import FlowTime, training_range, velocity_denoise
from diffsampler.schedules import FlowGrid

PREFIX = "python:"
PREDICTIONS = ("x0", "eps", "v", "flow")
FLOW_OPTIONS = ("time_scale", "reverse_time", "shift")
"""Model options of ``prediction`` flow only."""
OWN_OPTIONS = ("prediction", "shape", "sigma_min", "sigma_max", "sigma_data", *FLOW_OPTIONS)
"""Model options the toolbox reads itself; every other option is passed to NAME as a keyword."""
PROBE_BATCH = 2


@dataclass(frozen=True)
class Source:
    """Where NAME lives: its file and that file's sha256 as imported, and the text naming it in messages."""

    spec: str
    file: Path
    attr: str
    file_sha256: str


def is_python_model(name: str) -> bool:
    return name.startswith(PREFIX)


def python_label(name: str) -> str:
    """``python-<file stem or module>-<NAME>`` for output folders."""
    source, attr = parse_source(name)
    stem = Path(source).stem if source.endswith(".py") else source.replace(".", "-")
    return f"python-{stem}-{attr}"


def parse_source(name: str) -> tuple[str, str]:
    """(file or module, NAME) of ``python:SOURCE:NAME``; the NAME is after the last colon."""
    source, sep, attr = name[len(PREFIX) :].rpartition(":")
    if not sep or not source or not attr.isidentifier():
        raise UserError(f"model '{name}' must be python:FILE.py:NAME or python:package.module:NAME")
    return source, attr


def _import_file(path: Path, spec: str) -> ModuleType:
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    module_spec = importlib.util.spec_from_file_location(f"diffsampler_user_{path.stem}_{digest}", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module  # dataclasses and pickling look the module up by name
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(module_spec.name, None)
        raise UserError(f"{spec}: importing {path} failed: {plain_message(exc)}; fix the file") from exc
    return module


def _import_module(module_name: str, spec: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise UserError(
                f"{spec}: no module '{module_name}' (a file needs the .py suffix; a module must be importable, "
                "e.g. installed or on PYTHONPATH)"
            ) from exc
        raise UserError(f"{spec}: importing {module_name} failed: {plain_message(exc)}; fix the module") from exc
    except Exception as exc:
        raise UserError(f"{spec}: importing {module_name} failed: {plain_message(exc)}; fix the module") from exc


def resolve(name: str) -> tuple[Source, Callable[..., Any]]:
    """The file behind ``name`` and its NAME attribute (imported)."""
    source, attr = parse_source(name)
    if source.endswith(".py"):
        path = Path(source).expanduser().resolve()
        if not path.is_file():
            raise UserError(f"{name}: file {source} not found; give the path of your .py file")
        module = _import_file(path, name)
    else:
        module = _import_module(source, name)
        path = Path(getattr(module, "__file__", None) or "")
    if not hasattr(module, attr):
        public = [n for n in vars(module) if not n.startswith("_") and callable(getattr(module, n))]
        raise UserError(f"{name}: {unknown_choice(f'name in {path.name}', attr, public)}")
    digest = hashlib.sha256(path.read_bytes() if path.is_file() else b"").hexdigest()
    return Source(name, path, attr, digest), getattr(module, attr)


def _build(source: Source, factory: Any, kwargs: Mapping[str, Any]) -> Any:
    if not callable(factory):
        raise UserError(f"{source.spec}: {source.attr} is a {type(factory).__name__}, not a class or function")
    try:
        return factory(**kwargs)
    except Exception as exc:
        raise UserError(
            f"{source.spec}: calling {source.attr}({', '.join(f'{k}=...' for k in kwargs)}) failed: "
            f"{plain_message(exc)}; fix the file or the model options"
        ) from exc


def _setting(net: Any, options: Mapping[str, Any], key: str, attr: str, default: Any) -> Any:
    """A model option, else the returned object's attribute, else the default."""
    if key in options:
        return options[key]
    return getattr(net, attr, default)


def takes_cond(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` accepts a third positional argument or keywords (for the conditioning)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return True
    kinds = [p.kind for p in params]
    return len(params) > 2 or inspect.Parameter.VAR_POSITIONAL in kinds or inspect.Parameter.VAR_KEYWORD in kinds


class PythonModel(Denoiser):
    """The user's callable ``f(x, sigma, **cond)`` as an EDM denoiser, its output read by ``prediction``."""

    def __init__(self, net: Callable[..., torch.Tensor], source: Source, options: Mapping[str, Any]) -> None:
        super().__init__()
        self.net = net
        self.source = source
        self.options = dict(options)
        self.prediction = str(_setting(net, options, "prediction", "prediction", "x0"))
        if self.prediction not in PREDICTIONS:
            raise unknown_choice(f"prediction of {source.spec}", self.prediction, PREDICTIONS)
        self.latent = bool(getattr(net, "latent", False))
        self.discrete_sigmas = getattr(net, "discrete_sigmas", None)
        self.flow_grid = getattr(net, "flow_grid", None) if isinstance(net, Denoiser) else None
        self.time = _flow_settings(self, net, options)
        self.sigma_data = float(_setting(net, options, "sigma_data", "sigma_data", 1.0))
        low, high = training_range(self.flow_grid) if self.flow_grid else (Denoiser.sigma_min, Denoiser.sigma_max)
        self.sigma_min = float(_setting(net, options, "sigma_min", "sigma_min", low))
        self.sigma_max = float(_setting(net, options, "sigma_max", "sigma_max", high))
        shape = _setting(net, options, "shape", "sample_shape", None)
        if shape is None:
            raise UserError(
                f"{source.spec}: no sample shape; give {source.attr}'s model a sample_shape attribute or set "
                "model_options.shape (e.g. --set 'model_options.shape=[1,32,32]')"
            )
        self.sample_shape = _shape(shape, source)
        self._with_cond = takes_cond(net)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.decode(x) if isinstance(self.net, Denoiser) else x

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, cond: Any = None) -> torch.Tensor:
        out = self._denoise(x, sigma, cond)
        self.last_features = getattr(self.net, "last_features", None)  # a bottleneck feature for AMED, if kept
        return out

    def _denoise(self, x: torch.Tensor, sigma: torch.Tensor, cond: Any) -> torch.Tensor:
        if isinstance(self.net, Denoiser):  # ours: the float64 sigma as it is, the conditioning as it takes it
            return self.net.denoise(x, sigma, cond)
        if self.time is not None:
            first = next(self.parameters(), None)
            dtype = x.dtype if first is None else first.dtype
            return velocity_denoise(lambda x_t, time: self._call(x_t, time, cond), x, sigma, self.time, dtype)
        s = sigma.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        if self.prediction == "v":
            total = s**2 + self.sigma_data**2
            out = self._call(x / total.sqrt(), (sigma.atan() * (2 / math.pi)).to(x.dtype), cond)
            return x * (self.sigma_data**2 / total) - out * (s * self.sigma_data / total.sqrt())
        out = self._call(x, sigma.to(x.dtype), cond)
        return x - s * out if self.prediction == "eps" else out

    def _call(self, x: torch.Tensor, sigma: torch.Tensor, cond: Any) -> torch.Tensor:
        if cond is None:
            return self.net(x, sigma)
        if not self._with_cond:
            raise UserError(f"{self.source.spec}: the model takes no conditioning; add a cond parameter")
        return self.net(x, sigma, **cond) if isinstance(cond, Mapping) else self.net(x, sigma, cond)

    def code_hash(self) -> str:
        """sha256 of the user's file as imported (a module's own file) and the model options: what an edit
        changes."""
        h = hashlib.sha256(self.source.file_sha256.encode())
        h.update(json.dumps(self.options, sort_keys=True, default=str).encode())
        return h.hexdigest()

    def content_hash(self) -> str:
        """sha256 of the code (``code_hash``) and the parameters: an edited file is another model."""
        return hashlib.sha256((self.code_hash() + super().content_hash()).encode()).hexdigest()

    def _flow_fields(self) -> dict[str, Any]:
        """A flow model's grid and time settings, as ``FlowDenoiser.describe`` records them."""
        assert self.time is not None and self.flow_grid is not None
        return {
            "shift": self.flow_grid.shift,
            "time_scale": self.time.scale,
            **({"reverse_time": True} if self.time.reverse else {}),
        }

    def describe(self) -> dict[str, Any]:
        """Besides the base fields: the source, the prediction (for flow: shift and time settings), and the hashes of
        the weights and of the code (a benchmark folds the code into each solver's code hash, so an edited file
        recomputes its cells)."""
        return {
            **super().describe(),
            "source": self.source.spec,
            "prediction": self.prediction,
            **(self._flow_fields() if self.time is not None and self.flow_grid is not None else {}),
            "weights_sha256": super().content_hash(),
            "code_sha256": self.code_hash(),
        }


def _flow_settings(model: PythonModel, net: Any, options: Mapping[str, Any]) -> FlowTime | None:
    """For ``prediction`` flow: the network's time (``time_scale``, default 1; ``reverse_time``) as ``FlowTime``,
    and ``model.flow_grid`` with ``shift`` (default 1) set; None for the other predictions, which refuse the flow
    options."""
    if model.prediction != "flow":
        given = [key for key in FLOW_OPTIONS if key in options]
        if given:
            raise UserError(
                f"{model.source.spec}: model option {given[0]} applies to prediction=flow only, not "
                f"{model.prediction}; remove it or set model_options.prediction=flow"
            )
        return None
    try:
        model.flow_grid = FlowGrid(shift=float(_setting(net, options, "shift", "shift", 1.0)))
        return FlowTime(
            float(_setting(net, options, "time_scale", "time_scale", 1.0)),
            _flag(_setting(net, options, "reverse_time", "reverse_time", False)),
        )
    except UserError as exc:
        raise UserError(f"{model.source.spec}: {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise UserError(f"{model.source.spec}: shift and time_scale must be numbers ({plain_message(exc)})") from exc


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise UserError(f"reverse_time must be true or false, got {value!r}")
    return value


def _shape(value: Any, source: Source) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        shape = ()
    if not shape or any(v < 1 for v in shape):
        raise UserError(f"{source.spec}: sample shape {value!r} must be a list of positive integers, e.g. [1, 32, 32]")
    return shape


def probe(model: PythonModel, spec: str) -> None:
    """One call on a tiny batch at sigma_max: the output must be a tensor of the input's shape, finite."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = torch.randn(PROBE_BATCH, *model.sample_shape, generator=torch.Generator().manual_seed(0)) * model.sigma_max
    x = x.to(device)
    with torch.no_grad():
        try:
            out = model.denoise(x, torch.full((PROBE_BATCH,), model.sigma_max, dtype=torch.float64, device=device))
        except UserError:
            raise
        except Exception as exc:
            raise UserError(
                f"{spec}: the model failed on a batch of shape {list(x.shape)}: {plain_message(exc)}; fix the file"
            ) from exc
    if not isinstance(out, torch.Tensor):
        raise UserError(f"{spec}: the model returned a {type(out).__name__}, not a tensor; return f(x, sigma)")
    if out.shape != x.shape:
        raise UserError(
            f"{spec}: the model returned shape {list(out.shape)} for input {list(x.shape)}; "
            "it must return a tensor of the input's shape"
        )
    if not torch.isfinite(out).all():
        raise UserError(f"{spec}: the model returned NaN or infinite values on a test batch; fix the file")


def load_python_model(name: str, options: Mapping[str, Any] | None = None) -> Denoiser:
    """Import NAME from the file or module, call it with the model options (those of ``OWN_OPTIONS`` aside) and
    wrap what it returns (a ``Denoiser`` of ours too, so that the file enters its hash). Probed once, so that bad
    output fails before anything runs."""
    options = dict(options or {})
    source, factory = resolve(name)
    net = _build(source, factory, {k: v for k, v in options.items() if k not in OWN_OPTIONS})
    if isinstance(net, Denoiser) and options.get("prediction", "x0") != "x0":
        raise UserError(f"{name}: {source.attr} returned a diffsampler Denoiser, which predicts x0; drop prediction")
    if not callable(net) or isinstance(net, (str, bytes, type)):
        raise UserError(
            f"{name}: {source.attr}(...) returned a {type(net).__name__}; return a torch.nn.Module or a function "
            "f(x, sigma) (or a diffsampler Denoiser)"
        )
    model = PythonModel(net, source, options)
    probe(model, name)
    return model
