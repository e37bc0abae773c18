"""A small Fashion-MNIST classifier whose penultimate layer is the feature space of ``fd_fmnist`` and ``kid_fmnist``.

The Frechet distance in the features of a classifier trained on the same data is the usual stand-in
for Inception FID on MNIST-like sets (the FID of Heusel et al., arXiv 1706.08500, eq. 6, with another
feature network). The network: a 5x5 stride-2 convolution, two 3x3 convolutions with 2x2 max pooling,
then a 128-wide fully connected layer (the features) and the 10-way classifier. Its weights ship with
the package as float16 tensors (``data/fmnist_classifier.pt``, read with ``torch.load(weights_only=True)``,
no code runs) beside a JSON manifest (sha256, data hash, accuracy, training time and command).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from diffsampler.digest import file_sha256
from diffsampler.errors import UserError
from diffsampler.torch_files import UnreadableTorchFile, load_plain

DATA_DIR = Path(__file__).parent / "data"
WEIGHTS_FILE = DATA_DIR / "fmnist_classifier.pt"
MANIFEST_FILE = DATA_DIR / "fmnist_classifier.json"
TRAIN_STATISTICS_FILE = DATA_DIR / "fmnist_train_stats.npz"
"""Feature moments of the 60k training images under the shipped classifier (``diffsampler ref-stats --features
fmnist --data fashion-mnist:train``), so fd_fmnist needs no dataset."""
SHIPPED_REFERENCE = "fashion-mnist:train"
"""The reference whose statistics ship (the default ``ref`` of fd_fmnist)."""
WIDTHS = (24, 48, 96)
NUM_FEATURES = 128
NUM_CLASSES = 10
IMAGE_SIZES = (28, 32)
PROTOCOL = "fmnist: uint8 / 127.5 - 1, 28x28 padded to 32x32 with -1, classifier fc layer (128, before ReLU)"
BATCH_SIZE = 500


class FMNISTNet(nn.Module):
    """Images (N, 1, 32, 32) in [-1, 1] -> logits (N, 10); ``features`` gives the 128-d penultimate layer.

    With ``batchnorm`` (training) each convolution is followed by batch normalisation; the shipped
    network has them folded into the convolutions (``fold_batchnorm``), so its convolutions carry biases.
    """

    def __init__(
        self, batchnorm: bool = False, widths: tuple[int, int, int] = WIDTHS, num_features: int = NUM_FEATURES
    ) -> None:
        super().__init__()
        c1, c2, c3 = widths
        self.conv1 = nn.Conv2d(1, c1, 5, stride=2, padding=2, bias=not batchnorm)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1, bias=not batchnorm)
        self.conv3 = nn.Conv2d(c2, c3, 3, padding=1, bias=not batchnorm)
        norm = nn.BatchNorm2d if batchnorm else (lambda c: nn.Identity())
        self.bn1, self.bn2, self.bn3 = norm(c1), norm(c2), norm(c3)
        self.fc = nn.Linear(c3 * 16, num_features)
        self.dropout = nn.Dropout(0.3)
        self.out = nn.Linear(num_features, NUM_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate layer before its ReLU (N, 128): no mass at 0, so a Gaussian fits it better."""
        relu, pool = nn.functional.relu, nn.functional.max_pool2d
        x = relu(self.bn1(self.conv1(x)))
        x = pool(relu(self.bn2(self.conv2(x))), 2)
        x = pool(relu(self.bn3(self.conv3(x))), 2)
        return self.fc(x.flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(nn.functional.relu(self.features(x))))


def fold_batchnorm(trained: FMNISTNet) -> FMNISTNet:
    """The same function without batch normalisation: w' = w g / sqrt(v + eps),
    b' = (b - m) g / sqrt(v + eps) + beta."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    trained = trained.eval()
    c1, c2, c3 = (trained.conv1.out_channels, trained.conv2.out_channels, trained.conv3.out_channels)
    folded = FMNISTNet(batchnorm=False, widths=(c1, c2, c3), num_features=trained.fc.out_features)
    for name in ("1", "2", "3"):
        fused = fuse_conv_bn_eval(getattr(trained, "conv" + name), getattr(trained, "bn" + name))
        getattr(folded, "conv" + name).load_state_dict(fused.state_dict())
    folded.fc.load_state_dict(trained.fc.state_dict())
    folded.out.load_state_dict(trained.out.state_dict())
    return folded.eval()


def check_grayscale(shape: tuple[int, ...]) -> None:
    """Refuse any image shape (C, H, W) but 1x32x32 or 1x28x28, in one line."""
    if tuple(shape) not in ((1, s, s) for s in IMAGE_SIZES):
        raise UserError(
            "the Fashion-MNIST feature network takes 1x32x32 or 1x28x28 grayscale images, "
            f"got {'x'.join(map(str, shape))}; "
            "use the Inception features (--features inception, metric fid) for other images"
        )


def uint8_to_input(images: torch.Tensor) -> torch.Tensor:
    """0..255 images (N, 1, 28 or 32, same) -> float32 in [-1, 1] (x / 127.5 - 1), 28x28 zero-padded to 32x32."""
    check_grayscale(tuple(images.shape[1:]))
    x = images.float() / 127.5 - 1.0
    if x.shape[-1] == 28:
        x = nn.functional.pad(x, (2, 2, 2, 2), value=-1.0)
    return x.contiguous(memory_format=torch.channels_last)


class FMNISTFeatures(nn.Module):
    """0..255 images (N, 1, 28 or 32, same) -> (N, 128) float32 penultimate features of the shipped classifier."""

    def __init__(self, net: FMNISTNet, identity: str) -> None:
        super().__init__()
        self.net = net.eval().to(memory_format=torch.channels_last)
        self.identity = identity
        self.num_features = net.fc.out_features

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.features(uint8_to_input(images.to(self.device))).float()

    @torch.no_grad()
    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """Predicted labels (N,) of 0..255 images."""
        return self.net(uint8_to_input(images.to(self.device))).argmax(dim=1)


@dataclass(frozen=True)
class FMNISTWeights:
    """The shipped (or a given) weights file; ``identity`` (its sha256) keys caches of statistics made with it."""

    path: Path
    identity: str
    origin: str = "shipped"
    protocol: str = PROTOCOL
    batch_size: int = BATCH_SIZE

    def check_images(self, images: np.ndarray) -> None:
        """Refuse uint8 (N, H, W, C) images that are not 1x32x32 or 1x28x28 before any work is done."""
        check_grayscale((*images.shape[3:], *images.shape[1:3]))

    def load(self, device: torch.device | str = "cpu") -> FMNISTFeatures:
        return _loaded(self.path, self.identity, str(torch.device(device)))

    def shipped_statistics(self, source: str | Path) -> Path | None:
        """The shipped statistics file for ``source`` when it is the training set and the file was made with these
        very weights (its recorded sha256; a retrained classifier computes its own), else None."""
        if str(source) != SHIPPED_REFERENCE or not TRAIN_STATISTICS_FILE.is_file():
            return None
        with np.load(TRAIN_STATISTICS_FILE) as data:
            made_with = str(data["weights"]) if "weights" in data.files else None
        return TRAIN_STATISTICS_FILE if made_with == self.identity else None


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """The float16 state dict of a weights file (``torch.load(weights_only=True)``), a UserError if it is not one."""
    try:
        state = load_plain(path)
    except UnreadableTorchFile as exc:
        raise UserError(f"cannot read the Fashion-MNIST classifier {path}: {exc}") from exc
    if not isinstance(state, dict) or "fc.weight" not in state:
        raise UserError(f"{path} is not a Fashion-MNIST classifier state dict (no 'fc.weight')")
    return state


def load_net(path: Path) -> FMNISTNet:
    """The float32 classifier of a weights file, its widths read from the tensors' shapes."""
    state = load_state(path)
    widths = (state["conv1.weight"].shape[0], state["conv2.weight"].shape[0], state["conv3.weight"].shape[0])
    net = FMNISTNet(batchnorm=False, widths=widths, num_features=state["fc.weight"].shape[0])
    net.load_state_dict({k: v.float() for k, v in state.items()})
    return net.eval()


@functools.lru_cache(maxsize=2)
def _loaded(path: Path, identity: str, device: str) -> FMNISTFeatures:
    return FMNISTFeatures(load_net(path).to(device), identity)


def locate_fmnist(path: str | Path | None = None) -> FMNISTWeights:
    """The shipped classifier, checked against its manifest's sha256 (or an explicit file, e.g. a retrained one)."""
    if path is not None:
        given = Path(path).expanduser()
        if not given.is_file():
            raise UserError(f"Fashion-MNIST classifier not found at {given}")
        return FMNISTWeights(given, file_sha256(given), "given")
    if not WEIGHTS_FILE.is_file() or not MANIFEST_FILE.is_file():
        raise UserError(f"the shipped Fashion-MNIST classifier is missing ({WEIGHTS_FILE}); reinstall diffsampler")
    expected = json.loads(MANIFEST_FILE.read_text())["sha256"]
    digest = file_sha256(WEIGHTS_FILE)
    if digest != expected:
        raise UserError(
            f"{WEIGHTS_FILE} has sha256 {digest[:12]}..., its manifest says {expected[:12]}...; reinstall diffsampler"
        )
    return FMNISTWeights(WEIGHTS_FILE, digest)
