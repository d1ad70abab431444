"""What the decode-equivalence tests share: real photos made phone-sized, and the bars a
decode path must clear against the torchvision reference."""

from __future__ import annotations

import numpy as np
import skimage.data
from PIL import Image

TENSOR_THRESHOLD = 0.9999
EMBEDDING_THRESHOLD = 0.99


def photo(name: str) -> Image.Image:
    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")


def upscaled_to(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Centre-crop to the target aspect ratio, then upscale (like a phone photo's pixel count)."""
    target_aspect = size[0] / size[1]
    width, height = image.size
    if width / height > target_aspect:
        crop_width = round(height * target_aspect)
        left = (width - crop_width) // 2
        image = image.crop((left, 0, left + crop_width, height))
    else:
        crop_height = round(width / target_aspect)
        top = (height - crop_height) // 2
        image = image.crop((0, top, width, top + crop_height))
    return image.resize(size, Image.Resampling.BICUBIC)


def with_grain(image: Image.Image, seed: int = 0) -> Image.Image:
    """Sensor-like luminance noise: the high frequencies a drafted decode could get wrong."""
    noise = np.random.default_rng(seed).normal(0.0, 4.0, size=(image.size[1], image.size[0], 1))
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8))
