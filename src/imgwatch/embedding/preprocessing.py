"""How a photo becomes a model's input: one value, threaded through every decode path.

The CPU's reference and fast paths (decode.py), the GPU path (nvjpeg.py), the engines' probe
(engines/selection.py) and the model identity (identity.py) all read the same
:class:`Preprocessing`; ResNet50 always uses :data:`IMAGENET`, a model file the one its
``[embedding.preprocess]`` table declares. Torch-free: a query hashes it before loading anything.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

CROP = "crop"  # the shorter side resized to ``resize``, then the centre ``size`` × ``size`` kept
STRETCH = "stretch"  # the whole photo resized straight to ``size`` × ``size`` (aspect ratio not kept)
POLICIES = (CROP, STRETCH)
_FINGERPRINT_CHARS = 8


@dataclass(frozen=True)
class Preprocessing:
    """Resize policy, sizes in pixels, and the per-channel mean and std of the normalisation (RGB, 0..1)."""

    policy: str = CROP
    resize: int = 256  # CROP only: the shorter side's length before the crop
    size: int = 224  # the model's input is size × size
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """One model input without the batch axis: (3, size, size)."""
        return (3, self.size, self.size)

    @property
    def resized_short_side(self) -> int:
        """The short side after the resize (before any crop): what decoding must keep detail for."""
        return self.resize if self.policy == CROP else self.size

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after the resize, as torchvision's Resize computes it: for CROP the short
        side becomes ``resize`` and the long side is rounded down; for STRETCH both become ``size``."""
        if self.policy == STRETCH:
            return (self.size, self.size)
        short, long = sorted((width, height))
        new_long = int(self.resize * long / short)  # torchvision's rounding (down)
        return (self.resize, new_long) if width <= height else (new_long, self.resize)

    @property
    def fingerprint(self) -> str:
        """A short hash of everything that changes the model's input: part of a model file's identity."""
        canonical = (f"{self.policy}|{self.resize if self.policy == CROP else 0}|{self.size}|"
                     f"{','.join(map(repr, map(float, self.mean)))}|{','.join(map(repr, map(float, self.std)))}")
        return hashlib.sha256(canonical.encode()).hexdigest()[:_FINGERPRINT_CHARS]


# torchvision's ImageNet recipe (Resize(256), CenterCrop(224), ImageNet's mean and std): ResNet50's,
# and a model file's unless its [embedding.preprocess] says otherwise.
IMAGENET = Preprocessing()
