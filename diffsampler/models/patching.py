"""PDM patching (Luhman & Luhman, arXiv 2207.04316): images as stacks of non-overlapping P x P patches.

``patchify`` maps (B, C, H, W) to (B, C * P^2, H / P, W / P) and ``unpatchify`` inverts it exactly
(a pure rearrangement, no arithmetic). Channel order, the one of the PDM reference code and of
TensorFlow's ``extract_patches``: output channel ``k = (i * P + j) * C + c`` holds pixel
``(P * h + i, P * w + j)`` of input channel ``c`` at output position ``(h, w)``; ``i`` is the row
offset inside the patch, ``j`` the column offset, and the colour channel ``c`` varies fastest.
(``torch.nn.functional.pixel_unshuffle`` uses ``k = c * P^2 + i * P + j`` instead.)
"""

from __future__ import annotations

import torch

from diffsampler.errors import UserError


def _check(size: int, patch_size: int, what: str) -> int:
    if patch_size < 1:
        raise UserError(f"patch_size must be at least 1, got {patch_size}")
    if size % patch_size:
        raise UserError(f"{what} {size} is not divisible by patch_size {patch_size}")
    return size // patch_size


def patchify(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C * P^2, H / P, W / P) with channel k = (i * P + j) * C + c."""
    if patch_size == 1:
        return x
    b, c, h, w = x.shape
    p = patch_size
    hp, wp = _check(h, p, "image height"), _check(w, p, "image width")
    return x.reshape(b, c, hp, p, wp, p).permute(0, 3, 5, 1, 2, 4).reshape(b, p * p * c, hp, wp)


def unpatchify(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C * P^2, H / P, W / P) -> (B, C, H, W), the exact inverse of ``patchify``."""
    if patch_size == 1:
        return x
    b, cpp, hp, wp = x.shape
    p = patch_size
    c = _check(cpp, p * p, "channel count")
    return x.reshape(b, p, p, c, hp, wp).permute(0, 3, 4, 1, 5, 2).reshape(b, c, hp * p, wp * p)
