"""Decoding JPEGs on the GPU (nvJPEG, through torchvision) into model input.

On a CPU, decode.py turns each file into a tensor in the decode pool. When the model runs
on CUDA that pool cannot keep up (one 12 MP JPEG costs ~70 ms of a core; 16 threads decode
~135 per second, the GPU embeds thousands), so the pool only reads, hashes and checks the
header (:func:`inspect_jpeg`), and each micro-batch is decoded at once by nvJPEG, then
turned upright, resized, cropped and normalised on the GPU like the reference recipe (full
decode, antialiased bilinear Resize(256), CenterCrop(224); or the model file's declared
preprocessing) in :func:`model_inputs`.
What nvJPEG should not take (other formats, CMYK, small or truncated JPEGs, JPEGs whose ICC
profile is not sRGB (converted by LittleCMS on the CPU), and JPEGs with
data after their end-of-image marker, such as motion photos) and any file it fails on is
decoded on the CPU by decode_for_model, which names what is wrong. One difference remains: a
JPEG damaged inside but ending with its marker is embedded, damage and all, where the CPU
path refuses it.
"""

from __future__ import annotations

import functools
import io
import threading
import warnings
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torchvision.transforms.v2 import functional as tv

from imgwatch.embedding.decode import (
    DecodeError,
    check_size,
    decode_for_model,
    displayed_size,
)
from imgwatch.embedding.preprocessing import IMAGENET, Preprocessing
from imgwatch.photos.colour import icc_is_srgb
from imgwatch.photos.reader import read_orientation

# Pixels decoded per nvJPEG call: the decoded batch lives on the GPU at 3 bytes a pixel.
# 32 12 MP photos (1.2 GB) run at the batched rate (H100: 383 images/s in calls of 8, 511
# of 32, 521 of 64; bench/RESULTS.md), and a small GPU keeps its memory for the model.
PIXELS_PER_DECODE = 400_000_000
# Smaller JPEGs are decoded on the CPU: they cost it a few ms, and nvJPEG's pixels differ
# from libjpeg's (chroma upsampling) by enough to show where the resize averages few of them:
# tensor cosine with the reference 0.99986 at 451x300, >= 0.9999 from 1365x1024 on (H100).
MIN_SHORT_SIDE = 1024
# Modes nvJPEG decodes to RGB as libjpeg does; CMYK/YCCK JPEGs go to the CPU.
_GPU_MODES = frozenset({"RGB", "L"})

# Set once here, not per call: warnings.catch_warnings() is not safe across the inference threads.
# torchvision 0.29 deprecates its decoders for TorchCodec; the nvJPEG path still works, and if a
# release removes it, available() says no and workers decode on the CPU.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)
# decode_jpeg only reads the bytes it is given, so they need not be writable (no copy).
warnings.filterwarnings("ignore", message="The given buffer is not writable", category=UserWarning)
# A failed GPU (torch >= 2.8 raises this; older ones a plain RuntimeError): no file is to blame.
_GPU_FAILED = getattr(torch, "AcceleratorError", ())


@dataclass(frozen=True)
class JpegForGpu:
    """A JPEG whose header passed the checks, waiting for its micro-batch's nvJPEG call."""

    path: str
    data: bytes
    orientation: int  # EXIF orientation 1..8, applied on the GPU after decoding
    stored_size: tuple[int, int]  # width, height as encoded

    @property
    def size(self) -> tuple[int, int]:
        """Width and height as displayed (after EXIF orientation)."""
        return displayed_size(self.orientation, self.stored_size)

    @property
    def pixels(self) -> int:
        return self.stored_size[0] * self.stored_size[1]


def inspect_jpeg(data: bytes, path: str) -> JpegForGpu | None:
    """Read only the header: a JPEG for nvJPEG, or None when the CPU should decode the file.

    Raises DecodeError for sizes decode_for_model would refuse (same rule, same message).
    """
    # Without its end-of-image marker a JPEG is truncated (or has trailing data): libjpeg
    # refuses the first and nvJPEG would fill the missing rows with black, so the CPU decides.
    if not (data.startswith(b"\xff\xd8") and data.endswith(b"\xff\xd9")):
        return None
    try:
        image = Image.open(io.BytesIO(data), formats=("JPEG", "MPO"))
        mode, stored_size, orientation = image.mode, image.size, read_orientation(image)
        icc_profile = image.info.get("icc_profile")
    except Exception:  # noqa: BLE001 - a damaged header: decode_for_model explains it
        return None
    if mode not in _GPU_MODES or min(stored_size) < MIN_SHORT_SIDE:
        return None
    # nvJPEG gives the stored numbers; a wide-gamut (Adobe RGB, P3) JPEG needs its profile applied on the CPU.
    if icc_profile and not icc_is_srgb(icc_profile):
        return None
    check_size(path, *stored_size)
    return JpegForGpu(path, data, orientation, stored_size)


class Backlog:
    """The JPEGs handed to nvJPEG and not decoded yet, for one ``Embedder.embed_files`` call.

    nvJPEG alone leaves a GPU machine's cores waiting (bench/RESULTS.md: ~513 img/s end to end
    on an H100 while 16 cores could decode a reduced-size 12 MP JPEG in ~33 ms each). So a decode
    thread leaves a JPEG to the GPU only while fewer than ``enough`` wait for it (the GPU's
    streams each have a micro-batch ready), and decodes it itself otherwise: when the GPU is
    the bottleneck, the cores take the overflow; when the cores are, nothing waits and the
    GPU takes all. ``enough`` None: every JPEG nvJPEG can take goes to it.
    """

    def __init__(self, enough: int | None) -> None:
        self._enough = enough
        self._lock = threading.Lock()
        self._waiting = 0
        self.to_gpu = 0  # JPEGs left to nvJPEG
        self.on_cpu = 0  # JPEGs nvJPEG could have taken that a decode thread decoded meanwhile

    def leave_to_gpu(self) -> bool:
        """For a JPEG nvJPEG can take (a decode thread asks): True = count it as waiting for the GPU."""
        with self._lock:
            if self._enough is not None and self._waiting >= self._enough:
                self.on_cpu += 1
                return False
            self._waiting += 1
            self.to_gpu += 1
            return True

    def decoded(self, count: int) -> None:
        """``count`` JPEGs left to the GPU were decoded (or failed there)."""
        with self._lock:
            self._waiting -= count


def model_inputs(
    pending: Sequence[torch.Tensor | JpegForGpu], device: torch.device, preprocessing: Preprocessing = IMAGENET,
) -> list[torch.Tensor | DecodeError]:
    """One (3, size, size) float32 tensor on ``device`` per item (as ``preprocessing`` says), or the
    DecodeError of its file.

    CPU tensors (files decoded in the pool) are moved; JPEGs are decoded by nvJPEG in calls
    of up to PIXELS_PER_DECODE pixels.
    """
    results: dict[int, torch.Tensor | DecodeError] = {}
    chunk: list[tuple[int, JpegForGpu]] = []
    for index, item in enumerate(pending):
        if isinstance(item, torch.Tensor):
            results[index] = item.to(device)
            continue
        if chunk and sum(jpeg.pixels for _, jpeg in chunk) + item.pixels > PIXELS_PER_DECODE:
            results.update(_decode_chunk(chunk, device, preprocessing))
            chunk = []
        chunk.append((index, item))
    if chunk:
        results.update(_decode_chunk(chunk, device, preprocessing))
    return [results[index] for index in range(len(pending))]


def _decode_chunk(chunk: list[tuple[int, JpegForGpu]], device: torch.device,
                  preprocessing: Preprocessing) -> dict[int, torch.Tensor | DecodeError]:
    jpegs = [jpeg for _, jpeg in chunk]
    results: dict[int, torch.Tensor | DecodeError] = {}
    decoded = deque(_nvjpeg_decode(jpegs, device))
    for index, jpeg in chunk:
        # popped, so that each full-size image is freed as soon as it is preprocessed
        results[index] = _model_input(jpeg, decoded.popleft(), device, preprocessing)
    return results


def _model_input(jpeg: JpegForGpu, image: torch.Tensor | None, device: torch.device,
                 preprocessing: Preprocessing) -> torch.Tensor | DecodeError:
    """One file's input, or its error: whatever goes wrong stays with this file."""
    try:
        if image is not None:
            try:
                return _preprocess(image, jpeg.orientation, preprocessing)
            except torch.cuda.OutOfMemoryError:
                del image
                torch.cuda.empty_cache()  # a huge photo: its float copy did not fit; the CPU decodes it
        # nvJPEG refused it (or the GPU had no room): the CPU decodes it, or says what is wrong
        return decode_for_model(jpeg.data, jpeg.path, preprocessing)[0].to(device)
    except DecodeError as exc:
        return exc
    except _GPU_FAILED:
        raise  # the GPU itself failed: the worker must stop (and is restarted), not fail every file
    except Exception as exc:  # noqa: BLE001 - a bug on one file must not sink the job
        return DecodeError(jpeg.path, f"unexpected error preparing it on the GPU: {type(exc).__name__}: {exc}",
                           "report it; the rest of the batch was indexed")


def _nvjpeg_decode(jpegs: Sequence[JpegForGpu], device: torch.device) -> list[torch.Tensor | None]:
    """Decode a batch in one call; if that fails, one by one, None for each file that fails alone."""
    try:
        return list(_decode_jpeg([_as_tensor(jpeg.data) for jpeg in jpegs], device))
    except _GPU_FAILED:
        raise  # the GPU itself failed (see _model_input)
    except RuntimeError:  # one bad file fails the whole call (and OOM lands here too)
        pass
    decoded: list[torch.Tensor | None] = []
    for jpeg in jpegs:
        try:
            decoded.append(_decode_jpeg([_as_tensor(jpeg.data)], device)[0])
        except _GPU_FAILED:
            raise
        except RuntimeError:
            decoded.append(None)
    return decoded


def _decode_jpeg(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    from torchvision.io import ImageReadMode, decode_jpeg

    return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)


def _as_tensor(data: bytes) -> torch.Tensor:
    """The bytes as a uint8 tensor, without a copy (decode_jpeg only reads them)."""
    return torch.frombuffer(data, dtype=torch.uint8)


def _preprocess(image: torch.Tensor, orientation: int, preprocessing: Preprocessing) -> torch.Tensor:
    """A decoded (3, H, W) uint8 image as stored -> the normalised (3, size, size) model input."""
    upright = orient(image, orientation)  # RGB mode: three channels, greyscale JPEGs too
    height, width = upright.shape[-2:]
    new_width, new_height = preprocessing.resized_size(width, height)  # a real resize: the short side is >= 1024
    pixels = tv.resize(upright.float().div_(255), [new_height, new_width], antialias=True)
    cropped = tv.center_crop(pixels, [preprocessing.size, preprocessing.size])  # a no-op after a stretch
    mean, std = _normalisation(image.device, preprocessing.mean, preprocessing.std)
    # Not tv.normalize: it copies mean and std to the GPU for every image, a copy that waits
    # for the GPU and kept the thread from queueing the next image (a sixth of its time, H100).
    return (cropped - mean) / std


@functools.cache
def _normalisation(device: torch.device, mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[torch.Tensor, ...]:
    """The preprocessing's mean and std as (3, 1, 1) tensors on ``device``, made once."""
    return (torch.tensor(mean, device=device).view(3, 1, 1), torch.tensor(std, device=device).view(3, 1, 1))


def orient(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """Apply EXIF orientation 1..8 to a (C, H, W) image, as PIL's ImageOps.exif_transpose does."""
    return _ORIENTING[orientation](image)


# EXIF orientation -> what turns the stored image upright (torch.rot90 turns counter-clockwise).
_ORIENTING = {
    1: lambda image: image,
    2: lambda image: image.flip(-1),  # mirrored left-right
    3: lambda image: image.flip(-2, -1),  # upside down
    4: lambda image: image.flip(-2),  # mirrored top-bottom
    5: lambda image: image.transpose(-2, -1),
    6: lambda image: torch.rot90(image, -1, dims=(-2, -1)),  # stored a quarter turn counter-clockwise
    7: lambda image: image.transpose(-2, -1).flip(-2, -1),
    8: lambda image: torch.rot90(image, 1, dims=(-2, -1)),
}


@functools.cache
def available(device: torch.device) -> bool:
    """Whether this torchvision decodes JPEGs with nvJPEG on ``device`` (asked once per process)."""
    probe = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 100, 50)).save(probe, "JPEG")
    try:
        _decode_jpeg([_as_tensor(probe.getvalue())], device)
    except Exception:  # noqa: BLE001 - no nvJPEG in this build, no GPU, a removed API: all mean "no"
        return False
    return True
