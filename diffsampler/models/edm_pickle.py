"""EDM ``.pkl`` checkpoints (NVlabs/edm and derivatives) as denoisers, behind an explicit trust flag.

An EDM snapshot is a pickled dict whose ``'ema'`` entry is the preconditioned network (EDMPrecond,
VPPrecond, VEPrecond or iDDPMPrecond; EDM arXiv 2206.00364 table 1), already a denoiser
D(x, sigma, class_labels). Its classes are "persistent": each object pickles as a call of
``torch_utils.persistence._reconstruct_persistent_obj(meta)`` where ``meta`` carries the full source
text of the class's module, its class name and its ``__dict__``. Rebuilding the network therefore
executes that source: loading a pickle runs code from the file, which is why it needs
``--trust-pickle``.

The unpickler resolves only the globals EDM pickles refer to (torch tensor/storage rebuilders and
``torch.nn`` containers, ``collections.OrderedDict``, numpy arrays, ``dnnlib.util.EasyDict``, the
persistence reconstructor); anything else is refused with a one-line error. Storages are read with
``torch.load(weights_only=True)``. The embedded source runs in a fresh module with stand-ins for
``torch_utils.persistence`` and ``dnnlib`` (the only EDM helpers its networks.py imports), so no
vendored copy of the EDM repository is needed. Other entries of a snapshot whose source needs more
(``augment_pipe`` imports ``torch_utils.misc``) load as ``Unavailable`` placeholders. This allowlist is a
guard against malformed or foreign pickles, not a sandbox: the embedded source itself can do anything.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import pickle
import sys
import types
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

from diffsampler.errors import UserError, plain_message, unknown_choice
from diffsampler.models.base import Denoiser

EDM_SIGMA_MIN, EDM_SIGMA_MAX = 0.002, 80.0
"""EDM's default sampling range; a network's own narrower range (VP, VE) wins."""

OPTIONS = {"key": "ema", "class_label": None}

TRUST_MESSAGE = (
    "{path} is a pickle: loading it runs code stored in the file (EDM pickles embed their network's "
    "Python source); pass --trust-pickle (config: trust_pickle: true) only for files from a source you trust"
)


class EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict``: a dict whose keys are also attributes."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as exc:
            raise AttributeError(name) from exc

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value


def _persistent_class(cls: type) -> type:
    """Stand-in for ``persistence.persistent_class``: the class itself (objects are never re-pickled)."""
    return cls


def _stand_in_modules() -> dict[str, types.ModuleType]:
    """``torch_utils``, ``torch_utils.persistence``, ``dnnlib`` and ``dnnlib.util`` for the embedded source."""
    persistence = types.ModuleType("torch_utils.persistence")
    persistence.persistent_class = _persistent_class  # type: ignore[attr-defined]
    persistence.is_persistent = lambda obj: False  # type: ignore[attr-defined]
    torch_utils = types.ModuleType("torch_utils")
    torch_utils.persistence = persistence  # type: ignore[attr-defined]
    util = types.ModuleType("dnnlib.util")
    util.EasyDict = EasyDict  # type: ignore[attr-defined]
    dnnlib = types.ModuleType("dnnlib")
    dnnlib.util = util  # type: ignore[attr-defined]
    dnnlib.EasyDict = EasyDict  # type: ignore[attr-defined]
    return {"torch_utils": torch_utils, "torch_utils.persistence": persistence, "dnnlib": dnnlib, "dnnlib.util": util}


@contextlib.contextmanager
def _stand_ins() -> Iterator[None]:
    """Install the stand-in modules in ``sys.modules`` for the duration of a load, then restore."""
    modules = _stand_in_modules()
    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


@dataclass(frozen=True)
class Unavailable:
    """A persistent object whose embedded source could not run here (e.g. EDM's AugmentPipe, whose
    module imports ``torch_utils.misc``). Snapshots hold such objects beside the network; they stay
    placeholders, and only selecting one as the network is an error."""

    class_name: str
    reason: str


class _Reconstructor:
    """Rebuilds persistent objects: executes each embedded module source once, then sets the state."""

    def __init__(self) -> None:
        self.modules: dict[str, types.ModuleType | str] = {}

    def module(self, source: str) -> types.ModuleType | str:
        """The module the source defines, or why it could not run (one line)."""
        digest = hashlib.sha256(source.encode()).hexdigest()[:16]
        if digest not in self.modules:
            module = types.ModuleType(f"_diffsampler_edm_{digest}")
            try:
                exec(compile(source, f"<edm pickle module {digest}>", "exec"), module.__dict__)  # noqa: S102 - trusted by the user
                self.modules[digest] = module
            except Exception as exc:  # noqa: BLE001 - any failure of foreign source becomes a placeholder
                self.modules[digest] = f"its embedded source fails here ({plain_message(exc)})"
        return self.modules[digest]

    def __call__(self, meta: Mapping[str, Any]) -> Any:
        if not isinstance(meta, Mapping) or meta.get("type") != "class" or "module_src" not in meta:
            raise UserError(
                "the pickle holds a persistent object of an unknown kind; "
                "only EDM-style persistent classes are supported"
            )
        module = self.module(meta["module_src"])
        if isinstance(module, str):
            return Unavailable(str(meta.get("class_name")), module)
        cls = module.__dict__.get(meta["class_name"])
        if not isinstance(cls, type):
            raise UserError(f"the pickle's embedded source defines no class '{meta['class_name']}'")
        obj = cls.__new__(cls)
        state = EasyDict(meta.get("state") or {})
        setstate = getattr(obj, "__setstate__", None)
        if callable(setstate):
            setstate(state)
        else:
            obj.__dict__.update(state)
        return obj


def _storage_from_bytes(data: bytes) -> Any:
    """What ``torch.storage._load_from_bytes`` returns, read without running pickled code."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


_ALLOWED = {
    ("collections", "OrderedDict"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "slice"),
    ("builtins", "object"),
    ("copyreg", "_reconstructor"),
    ("torch", "Size"),
    ("torch", "device"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
}


class EDMUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals EDM checkpoints use (see the module docstring)."""

    def __init__(self, file: Any) -> None:
        super().__init__(file)
        self.reconstruct = _Reconstructor()

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch_utils.persistence", "_reconstruct_persistent_obj"):
            return self.reconstruct
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return _storage_from_bytes
        if module == "dnnlib.util" and name == "EasyDict":
            return EasyDict
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module.startswith("torch.nn.modules.") and not name.startswith("_"):
            cls = super().find_class(module, name)
            if isinstance(cls, type) and issubclass(cls, torch.nn.Module):
                return cls
        raise UserError(f"the pickle refers to {module}.{name}, which EDM checkpoints never do; refusing to load it")


def read_edm_pickle(path: Path) -> Any:
    """The unpickled object of an EDM checkpoint (the caller has the user's trust)."""
    try:
        with path.open("rb") as f, _stand_ins():
            return EDMUnpickler(f).load()
    except UserError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        KeyError,
        IndexError,
        RuntimeError,
    ) as exc:
        raise UserError(f"{path} is not a readable EDM pickle ({plain_message(exc)})") from exc


class EDMPickleDenoiser(Denoiser):
    """An EDM network (``net(x, sigma, class_labels)`` returns D) with our call counting.

    ``class_label`` is the default label of a class-conditional network (``label_dim > 0``); a call's
    ``cond`` (labels (B,) or one-hot (B, K)) replaces it.
    """

    def __init__(self, net: torch.nn.Module, class_label: int | None = None) -> None:
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.label_dim = int(getattr(net, "label_dim", 0) or 0)
        if self.label_dim and class_label is None:
            raise UserError(
                f"this EDM network is class-conditional ({self.label_dim} classes); "
                "give a label with --model-option class_label=K"
            )
        if class_label is not None and not 0 <= class_label < max(self.label_dim, 1):
            raise UserError(f"class_label must be in [0, {self.label_dim}) for this network, got {class_label}")
        self.class_label = class_label
        self.sigma_min = max(EDM_SIGMA_MIN, float(getattr(net, "sigma_min", 0.0)))
        self.sigma_max = min(EDM_SIGMA_MAX, float(getattr(net, "sigma_max", float("inf"))))
        self.sample_shape = (int(net.img_channels), int(net.img_resolution), int(net.img_resolution))

    def one_hot(self, cond: Any, batch: int, device: torch.device) -> torch.Tensor | None:
        if not self.label_dim:
            return None
        labels = torch.as_tensor(self.class_label if cond is None else cond, device=device)
        if labels.ndim == 2:
            return labels.float().expand(batch, -1)
        return torch.nn.functional.one_hot(labels.long().reshape(-1).expand(batch), self.label_dim).float()

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, cond: Any = None) -> torch.Tensor:
        out = self.net(x.float(), sigma.float(), self.one_hot(cond, x.shape[0], x.device))
        return out.to(x.dtype)


def load_edm_pickle(path: str, trust_pickle: bool, options: Mapping[str, Any] | None = None) -> Denoiser:
    """The denoiser of an EDM ``.pkl`` (entry ``key``, default ``'ema'``); refused unless trusted."""
    file = Path(path).expanduser()
    if not trust_pickle:
        raise UserError(TRUST_MESSAGE.format(path=file))
    for key in options or {}:
        if key not in OPTIONS:
            raise unknown_choice("model option of an EDM pickle", key, OPTIONS)
    opts = {**OPTIONS, **(options or {})}
    if not file.is_file():
        raise UserError(f"EDM pickle not found: {file}")
    data = read_edm_pickle(file)
    net = data.get(opts["key"]) if isinstance(data, Mapping) else data
    if isinstance(net, Unavailable):
        raise UserError(
            f"the '{opts['key']}' entry of {file} ({net.class_name}) cannot be rebuilt: {net.reason}; "
            "only NVlabs/edm-style networks are supported"
        )
    if not isinstance(net, torch.nn.Module):
        keys = ", ".join(map(str, data)) if isinstance(data, Mapping) else type(data).__name__
        raise UserError(
            f"{file} has no network under '{opts['key']}' (found: {keys}); choose it with --model-option key=NAME"
        )
    for attr in ("img_resolution", "img_channels"):
        if not hasattr(net, attr):
            raise UserError(
                f"the network in {file} has no '{attr}'; "
                "only EDM preconditioned networks (EDMPrecond, VPPrecond, ...) are supported"
            )
    return EDMPickleDenoiser(net, opts["class_label"])
