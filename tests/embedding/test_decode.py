"""decode_for_model against the torchvision reference, on real photos and real broken files."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from imgwatch.embedding import (
    DecodeError,
    EmbeddingModel,
    decode_for_model,
    read_file,
    reference_preprocess,
)
from imgwatch.embedding import decode as decode_module
from imgwatch.embedding.decode import MIN_DECODED_SHORT_SIDE, RESIZE_SHORT_SIDE
from imgwatch.embedding.preprocessing import Preprocessing
from imgwatch.photos.reader import _draft_jpeg
from tests.embedding.equivalence import EMBEDDING_THRESHOLD, TENSOR_THRESHOLD, photo, upscaled_to, with_grain
from tests.helpers import PHOTO_NAMES

TWELVE_MP = (4032, 3024)  # a phone camera's 4:3 frame
EXIF_ORIENTATION = 0x0112
# What "the same input as the reference" means, with calibrated weights (under which
# different photos score ~0.81-0.98, see the guard tests below). Measured worst cases of
# the fast path: tensor 0.99993, embedding 0.991.
def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def cosine(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    a_flat = torch.as_tensor(a).flatten().double()
    b_flat = torch.as_tensor(b).flatten().double()
    return float(torch.nn.functional.cosine_similarity(a_flat, b_flat, dim=0))


def fast(data: bytes) -> torch.Tensor:
    tensor, _, _ = decode_for_model(data, "<memory>")
    return tensor


def reference(data: bytes) -> torch.Tensor:
    return reference_preprocess(Image.open(io.BytesIO(data)))


def embedding_cosine(model: EmbeddingModel, first: torch.Tensor, second: torch.Tensor) -> float:
    embeddings = model.embed(torch.stack([first, second]))
    return cosine(embeddings[0], embeddings[1])


def assert_same_model_input(model: EmbeddingModel, tensor: torch.Tensor, expected: torch.Tensor) -> None:
    assert tensor.dtype == torch.float32 and tensor.shape == (3, 224, 224)
    assert cosine(tensor, expected) >= TENSOR_THRESHOLD
    assert embedding_cosine(model, tensor, expected) >= EMBEDDING_THRESHOLD


# Every sample photo as a phone would store it (12 MP JPEG), as-is (JPEG and PNG, 300-1411 px:
# small and textured), with sensor grain, in odd sizes whose reduced copies round up, and as a
# large PNG (box-reduced instead of drafted).
PHOTO_FILES = {
    "12mp.jpg": lambda image: encoded(upscaled_to(image, TWELVE_MP), "JPEG", quality=90),
    "native.jpg": lambda image: encoded(image, "JPEG", quality=90),
    "native.png": lambda image: encoded(image, "PNG"),
}
UNUSUAL_FILES = {
    ("chelsea", "12mp-grain.jpg"): lambda image: encoded(with_grain(upscaled_to(image, TWELVE_MP)), "JPEG", quality=90),
    ("chelsea", "4031x3023.jpg"): lambda image: encoded(upscaled_to(image, (4031, 3023)), "JPEG", quality=90),
    ("hubble_deep_field", "1417x1500.jpg"): lambda image: encoded(upscaled_to(image, (1417, 1500)), "JPEG",
                                                                  quality=90),
    ("hubble_deep_field", "12mp.png"): lambda image: encoded(upscaled_to(image, TWELVE_MP), "PNG", compress_level=1),
}
EQUIVALENCE_CASES = [(name, kind) for name in PHOTO_NAMES for kind in PHOTO_FILES] + list(UNUSUAL_FILES)


@pytest.mark.parametrize(("name", "kind"), EQUIVALENCE_CASES, ids=[f"{n}-{k}" for n, k in EQUIVALENCE_CASES])
def test_fast_path_gives_the_reference_model_input(name: str, kind: str, calibrated_model: EmbeddingModel) -> None:
    make_file = PHOTO_FILES.get(kind) or UNUSUAL_FILES[(name, kind)]
    data = make_file(photo(name))

    tensor, width, height = decode_for_model(data, f"{name}-{kind}")

    assert (width, height) == Image.open(io.BytesIO(data)).size
    assert_same_model_input(calibrated_model, tensor, reference(data))


def test_different_photos_fail_the_equivalence_thresholds(calibrated_model: EmbeddingModel) -> None:
    # Guards the test above: with these weights no two different photos come near the thresholds
    # (seeded random weights score 0.997-1.000 for any two photos, which would prove nothing).
    tensors = [reference_preprocess(photo(name)) for name in PHOTO_NAMES]
    embeddings = calibrated_model.embed(torch.stack(tensors))
    for i in range(len(tensors)):
        for j in range(i + 1, len(tensors)):
            assert cosine(tensors[i], tensors[j]) < 0.99, (PHOTO_NAMES[i], PHOTO_NAMES[j])
            assert cosine(embeddings[i], embeddings[j]) < EMBEDDING_THRESHOLD, (PHOTO_NAMES[i], PHOTO_NAMES[j])


def test_the_thresholds_catch_a_draft_that_is_too_coarse(
    calibrated_model: EmbeddingModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The earlier rule (draft until the short side is just >= 256) decodes a 512 px photo at
    # 1/2 and fails here; the equivalence test would catch a return to it.
    monkeypatch.setattr(decode_module, "MIN_DECODED_SHORT_SIDE", RESIZE_SHORT_SIDE)
    data = encoded(photo("camera"), "JPEG", quality=90)

    tensor, expected = fast(data), reference(data)

    assert cosine(tensor, expected) < TENSOR_THRESHOLD
    assert embedding_cosine(calibrated_model, tensor, expected) < EMBEDDING_THRESHOLD


def test_exif_orientation_is_applied(calibrated_model: EmbeddingModel) -> None:
    pixels = upscaled_to(photo("astronaut"), TWELVE_MP)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # "rotate 90 degrees clockwise to display"
    rotated_data = encoded(pixels, "JPEG", quality=90, exif=exif.tobytes())
    plain_data = encoded(pixels, "JPEG", quality=90)

    tensor, width, height = decode_for_model(rotated_data, "rotated.jpg")

    assert (width, height) == (TWELVE_MP[1], TWELVE_MP[0])
    assert_same_model_input(calibrated_model, tensor, reference(rotated_data))
    turned_by_hand = reference_preprocess(
        Image.open(io.BytesIO(plain_data)).transpose(Image.Transpose.ROTATE_270)
    )
    assert_same_model_input(calibrated_model, tensor, turned_by_hand)
    assert cosine(tensor, fast(plain_data)) < 0.99  # the rotation really changed the input


@pytest.mark.parametrize(
    ("mode", "fmt", "looks_like"),
    [
        ("P", "PNG", "RGB"),
        ("RGBA", "PNG", "RGB"),
        ("CMYK", "JPEG", "RGB"),
        ("LA", "PNG", "L"),
        ("L", "JPEG", "L"),
    ],
)
def test_image_modes_convert_to_rgb_correctly(mode: str, fmt: str, looks_like: str) -> None:
    source = photo("astronaut").resize((1600, 1200))
    if mode == "P":
        converted = source.convert("P", palette=Image.Palette.ADAPTIVE)
    else:
        converted = source.convert(mode)
    data = encoded(converted, fmt)
    assert Image.open(io.BytesIO(data)).mode == mode

    tensor = fast(data)

    assert cosine(tensor, reference(data)) >= TENSOR_THRESHOLD
    assert cosine(tensor, reference_preprocess(source.convert(looks_like))) >= 0.995


def test_sixteen_bit_greyscale_is_rescaled_not_clipped() -> None:
    grey = skimage.data.camera()
    eight_bit = fast(encoded(Image.fromarray(grey), "PNG"))
    sixteen_bit_data = encoded(Image.fromarray(grey.astype(np.uint16) * 257), "PNG")
    assert Image.open(io.BytesIO(sixteen_bit_data)).mode.startswith("I")

    # A plain convert("RGB") clips 16-bit values to 255: an almost white image.
    assert cosine(fast(sixteen_bit_data), eight_bit) >= 0.9999


def test_animated_gif_uses_first_frame() -> None:
    first = photo("astronaut")
    second = photo("coffee").resize(first.size)
    animation = encoded(first, "GIF", save_all=True, append_images=[second], duration=100, loop=0)
    assert Image.open(io.BytesIO(animation)).n_frames == 2

    tensor = fast(animation)

    assert cosine(tensor, fast(encoded(first, "GIF"))) >= 0.999
    assert cosine(tensor, fast(encoded(second, "GIF"))) < 0.99


def _zero_bytes(_: bytes) -> bytes:
    return b""


def _first_half(jpeg: bytes) -> bytes:
    return jpeg[: len(jpeg) // 2]


def _text(_: bytes) -> bytes:
    return b"this is a shopping list, not a photo\n"


def _random_bytes(_: bytes) -> bytes:
    return np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes()


@pytest.mark.parametrize(
    ("filename", "make_bytes", "expected_reason"),
    [
        ("empty.jpg", _zero_bytes, "empty file"),
        ("half.jpg", _first_half, "truncated"),
        ("notes.jpg", _text, "not a recognised image format"),
        ("noise.png", _random_bytes, "not a recognised image format"),
    ],
)
def test_bad_files_raise_decode_error_naming_the_file(
    tmp_path: Path, filename: str, make_bytes: object, expected_reason: str
) -> None:
    good_jpeg = encoded(photo("chelsea"), "JPEG", quality=90)
    path = tmp_path / filename
    path.write_bytes(make_bytes(good_jpeg))  # type: ignore[operator]
    _, data = read_file(str(path))

    with pytest.raises(DecodeError) as caught:
        decode_for_model(data, str(path))

    message = str(caught.value)
    assert str(path) in message
    assert expected_reason in message
    assert "\n" not in message
    assert caught.value.path == str(path)
    assert expected_reason in caught.value.reason
    assert str(pickle.loads(pickle.dumps(caught.value))) == message


def test_decompression_bomb_is_a_decode_error(monkeypatch: pytest.MonkeyPatch) -> None:
    data = encoded(photo("coffee"), "PNG")  # 600x400 = 240,000 pixels
    # Pillow refuses images over twice this limit; lower it instead of writing a 180 MP file.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)

    with pytest.raises(DecodeError) as caught:
        decode_for_model(data, "/photos/bomb.png")

    assert "/photos/bomb.png" in str(caught.value)
    assert "too large" in caught.value.reason


def test_read_file_reports_hash_size_and_mtime(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    content = encoded(photo("rocket"), "JPEG")
    path.write_bytes(content)
    os.utime(path, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))

    facts, data = read_file(str(path))

    assert data == content
    assert facts.path == str(path)
    assert facts.sha256 == hashlib.sha256(content).hexdigest()
    assert facts.size == len(content)
    assert facts.mtime_ns == 1_600_000_000_123_456_789


def test_read_file_missing_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_file(str(tmp_path / "gone.jpg"))


def test_fast_path_decodes_12mp_jpegs_at_a_quarter_scale(tmp_path: Path) -> None:
    # draft() is what keeps decoding cheap (speed itself is measured in bench/, not here):
    # a 12 MP phone photo decodes at 1/4 (1008×756), above MIN_DECODED_SHORT_SIDE.
    path = tmp_path / "phone.jpg"
    upscaled_to(photo("astronaut"), TWELVE_MP).save(path, "JPEG", quality=90)
    with Image.open(path) as image:
        assert _draft_jpeg(image, MIN_DECODED_SHORT_SIDE) == 4
        image.load()
        assert image.size == (TWELVE_MP[0] // 4, TWELVE_MP[1] // 4)
        assert min(image.size) >= MIN_DECODED_SHORT_SIDE



# -- limits checked on the header, before anything large is allocated -------------------------


def _png_header(width: int, height: int) -> bytes:
    """A PNG that is only a header claiming ``width``×``height`` (Image.open reads no more)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("size", "refused"),
    [((2, 100), False), ((100, 2), False), ((2, 101), True), ((6000, 1), True), ((4000, 200), False)],
)
def test_aspect_ratios_beyond_one_to_fifty_are_refused_with_the_numbers(size: tuple[int, int], refused: bool) -> None:
    data = encoded(Image.new("RGB", size, (40, 90, 200)), "PNG")
    if not refused:
        assert fast(data).shape == (3, 224, 224)
        return
    with pytest.raises(DecodeError) as caught:
        decode_for_model(data, "/photos/strip.png")
    width, height = size
    assert f"{width}×{height} pixels: aspect ratio 1:" in caught.value.reason
    assert "beyond 1:50" in caught.value.reason


def test_the_pixel_limit_holds_even_when_pillows_own_is_lifted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # as some library might do, process-wide
    with pytest.raises(DecodeError) as caught:
        decode_for_model(_png_header(14_000, 13_000), "/photos/scan.png")  # 182 MP, a header only
    assert "14000×13000 pixels (182 megapixels) is too large to decode safely" in caught.value.reason


def test_content_in_a_format_imgwatch_does_not_decode_is_not_parsed() -> None:
    # Pillow would hand EPS to Ghostscript; imgwatch does not open it, whatever the name says.
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n%%EOF\n"
    assert Image.open(io.BytesIO(eps)).format == "EPS"
    with pytest.raises(DecodeError, match="not a recognised image format"):
        decode_for_model(eps, "/photos/holiday.jpg")


def test_read_file_does_not_wait_for_a_fifo_and_refuses_huge_files(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(DecodeError, match="not a regular file"):
        read_file(str(fifo))  # opening it for reading would otherwise block until a writer came
    huge = tmp_path / "huge.tif"
    with open(huge, "wb") as handle:
        handle.truncate((1 << 30) + 1)  # sparse
    with pytest.raises(DecodeError, match="1,073,741,825 bytes, beyond imgwatch's limit of 1,073,741,824 bytes"):
        read_file(str(huge))


# A model file's declared preprocessing: SSCD's square 320 (a stretch), a larger crop, other statistics.
DECLARED = {
    "stretch-320": Preprocessing("stretch", 256, 320, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "crop-288-256": Preprocessing("crop", 288, 256, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


@pytest.mark.parametrize("declared", DECLARED)
@pytest.mark.parametrize("kind", ["12mp.jpg", "native.png"])
def test_fast_path_gives_the_reference_input_of_a_declared_preprocessing(declared: str, kind: str) -> None:
    preprocessing = DECLARED[declared]
    data = PHOTO_FILES[kind](photo("chelsea"))

    tensor, _, _ = decode_for_model(data, f"chelsea-{kind}", preprocessing)

    expected = reference_preprocess(Image.open(io.BytesIO(data)), preprocessing)
    assert tensor.shape == expected.shape == preprocessing.input_shape
    assert cosine(tensor, expected) >= TENSOR_THRESHOLD


def test_the_decode_floor_keeps_its_ratio_to_a_declared_resize() -> None:
    """A 12 MP JPEG for a 320 stretch decodes at 1/2 (1512 px), not at ResNet50's 1/4 (756 < 2.75 × 320)."""
    assert decode_module._min_decoded_short_side(DECLARED["stretch-320"]) == 880
    assert decode_module._min_decoded_short_side(Preprocessing()) == MIN_DECODED_SHORT_SIDE
