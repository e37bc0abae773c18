"""An augmentation pipeline stored beside the network, importing a helper module as EDM's does."""

from torch_utils import misc  # noqa: F401
from torch_utils import persistence


@persistence.persistent_class
class AugmentPipe:
    def __init__(self, p=0.12, xflip=1):
        self.p = float(p)
        self.xflip = float(xflip)
