"""The batched JPEG path of a CUDA worker (embedding/nvjpeg.py), on real photos and broken files.

torchvision's decode_jpeg runs the same code on the CPU (libjpeg) as on CUDA (nvJPEG), so
here, on every machine, the routing, the batching, the fallbacks and the GPU-side
preprocessing are checked against the reference recipe; on a machine with a GPU the same
checks also run through nvJPEG itself.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms, ImageOps

from imgwatch.embedding import DecodeError, Embedded, Embedder, EmbeddingModel, Failed, nvjpeg, reference_preprocess
from imgwatch.embedding.decode import EXIF_ORIENTATION_TAG, MAX_ASPECT_RATIO
from imgwatch.embedding.preprocessing import Preprocessing
from tests.embedding.equivalence import EMBEDDING_THRESHOLD, TENSOR_THRESHOLD, photo, upscaled_to, with_grain
from tests.photo_files import adobe_rgb_profile

DEVICES = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])


def jpeg_bytes(image: Image.Image, orientation: int = 1, **options: object) -> bytes:
    buffer = io.BytesIO()
    if orientation != 1:
        exif = Image.Exif()
        exif[EXIF_ORIENTATION_TAG] = orientation
        options["exif"] = exif.tobytes()
    image.save(buffer, "JPEG", quality=92, **options)
    return buffer.getvalue()


def with_bogus_huffman_table(jpeg: bytes) -> bytes:
    """The header still parses; the decoders refuse the first Huffman table (over 256 codes)."""
    table = jpeg.index(b"\xff\xc4") + 5  # marker, length, class/id: then 16 code counts
    return jpeg[:table] + b"\xff" * 16 + jpeg[table + 16:]


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))


def for_gpu(data: bytes, path: str = "photo.jpg") -> nvjpeg.JpegForGpu:
    jpeg = nvjpeg.inspect_jpeg(data, path)
    assert jpeg is not None
    return jpeg


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_turns_the_image_as_pil_does(orientation: int) -> None:
    stored = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)  # no symmetry: every turn differs
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(_png_with_orientation(stored, orientation)))))
    turned = nvjpeg.orient(torch.from_numpy(stored).permute(2, 0, 1), orientation)
    assert np.array_equal(turned.permute(1, 2, 0).numpy(), expected)


def _png_with_orientation(pixels: np.ndarray, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = orientation
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG", exif=exif.tobytes())
    return buffer.getvalue()


def big(name: str, size: tuple[int, int] = (1536, 1024), seed: int = 0) -> Image.Image:
    """A photo at least nvjpeg.MIN_SHORT_SIDE high, with sensor-like grain."""
    return with_grain(upscaled_to(photo(name), size), seed)


def test_only_jpegs_nvjpeg_decodes_like_libjpeg_are_sent_to_it() -> None:
    image = big("astronaut")
    png = io.BytesIO()
    image.save(png, "PNG")
    assert nvjpeg.inspect_jpeg(png.getvalue(), "a.png") is None
    assert nvjpeg.inspect_jpeg(jpeg_bytes(image.convert("CMYK")), "cmyk.jpg") is None  # the CPU converts CMYK
    assert nvjpeg.inspect_jpeg(b"\xff\xd8\xff\xe0 damaged\xff\xd9", "bad.jpg") is None  # the CPU names the damage
    whole = jpeg_bytes(image)
    assert nvjpeg.inspect_jpeg(whole[:-100], "truncated.jpg") is None  # no end-of-image marker
    assert nvjpeg.inspect_jpeg(jpeg_bytes(photo("chelsea")), "small.jpg") is None  # 451 x 300: the CPU is exact
    # nvJPEG gives the stored numbers: a wide-gamut JPEG is converted to sRGB by LittleCMS on the CPU;
    # one tagged sRGB (as many cameras tag theirs) still goes to the GPU.
    wide = upscaled_to(photo("coffee"), (1600, 1200))
    assert nvjpeg.inspect_jpeg(jpeg_bytes(wide, icc_profile=adobe_rgb_profile()), "adobe.jpg") is None
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    assert nvjpeg.inspect_jpeg(jpeg_bytes(wide, icc_profile=srgb), "srgb.jpg") is not None
    assert for_gpu(whole).size == image.size
    grey = for_gpu(jpeg_bytes(image.convert("L")))
    assert grey.size == image.size
    turned = for_gpu(jpeg_bytes(image, orientation=6))
    assert (turned.orientation, turned.stored_size, turned.size) == (6, (1536, 1024), (1024, 1536))


def test_a_jpeg_beyond_the_size_rules_is_refused_from_its_header() -> None:
    strip = Image.new("RGB", (MAX_ASPECT_RATIO * 1024 + 1024, 1024))
    with pytest.raises(DecodeError, match="aspect ratio"):
        nvjpeg.inspect_jpeg(jpeg_bytes(strip), "strip.jpg")


@pytest.mark.parametrize("device", DEVICES, ids=str)
@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_inputs_match_the_reference_recipe(device: torch.device, orientation: int) -> None:
    cases = {
        "12 MP phone photo": big("coffee", (4032, 3024)),
        "smallest for nvJPEG": big("chelsea", (1536, 1024), seed=1),
        "odd-sized texture": big("rocket", (1365, 1024), seed=3),
        "greyscale": big("astronaut", (1024, 1024)).convert("L"),
    }
    blobs = {name: jpeg_bytes(image, orientation) for name, image in cases.items()}
    inputs = nvjpeg.model_inputs([for_gpu(blob, name) for name, blob in blobs.items()], device)
    for (name, blob), tensor in zip(blobs.items(), inputs, strict=True):
        assert isinstance(tensor, torch.Tensor) and tensor.device.type == device.type, name
        assert tensor.shape == (3, 224, 224)
        reference = reference_preprocess(Image.open(io.BytesIO(blob)))
        assert cosine(tensor.cpu(), reference) >= TENSOR_THRESHOLD, name
    # guard: the comparison can fail (another photo, or the orientation not applied)
    unturned = reference_preprocess(Image.open(io.BytesIO(jpeg_bytes(cases["smallest for nvJPEG"]))))
    if orientation != 1:
        assert cosine(inputs[1].cpu(), unturned) < TENSOR_THRESHOLD
    assert cosine(inputs[0].cpu(), inputs[1].cpu()) < TENSOR_THRESHOLD


@pytest.mark.parametrize("device", DEVICES, ids=str)
def test_a_damaged_jpeg_fails_alone_and_cpu_decoded_items_pass_through(device: torch.device) -> None:
    good = jpeg_bytes(big("coffee"))
    damaged = with_bogus_huffman_table(good)
    decoded_in_pool = reference_preprocess(photo("chelsea"))
    inputs = nvjpeg.model_inputs(
        [for_gpu(good, "good.jpg"), for_gpu(damaged, "damaged.jpg"), decoded_in_pool, for_gpu(good, "again.jpg")],
        device,
    )
    assert isinstance(inputs[1], DecodeError) and "damaged.jpg" in str(inputs[1])
    assert torch.equal(inputs[2].cpu(), decoded_in_pool)  # type: ignore[union-attr]
    reference = reference_preprocess(Image.open(io.BytesIO(good)))
    for index in (0, 3):
        assert cosine(inputs[index].cpu(), reference) >= TENSOR_THRESHOLD  # type: ignore[union-attr]


@pytest.fixture
def decode_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of files in each call to nvJPEG (torchvision's decode_jpeg), in order."""
    calls: list[int] = []
    decode = nvjpeg._decode_jpeg

    def counting(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
        calls.append(len(data))
        return decode(data, device)

    monkeypatch.setattr(nvjpeg, "_decode_jpeg", counting)
    return calls


def test_big_batches_are_decoded_in_calls_of_bounded_pixels(
    monkeypatch: pytest.MonkeyPatch, decode_calls: list[int]
) -> None:
    image = big("astronaut", (1024, 1024))
    monkeypatch.setattr(nvjpeg, "PIXELS_PER_DECODE", 3 * 1024 * 1024)
    inputs = nvjpeg.model_inputs([for_gpu(jpeg_bytes(image))] * 7, torch.device("cpu"))
    assert decode_calls == [3, 3, 1]
    assert len(inputs) == 7 and all(isinstance(tensor, torch.Tensor) for tensor in inputs)


def test_whatever_goes_wrong_with_one_file_stays_with_that_file(monkeypatch: pytest.MonkeyPatch) -> None:
    preprocess = nvjpeg._preprocess

    def failing(image: torch.Tensor, orientation: int, preprocessing: Preprocessing) -> torch.Tensor:
        if orientation == 3:
            raise ValueError("a bug")
        if orientation == 6:
            raise torch.cuda.OutOfMemoryError("no room for the float copy")
        return preprocess(image, orientation, preprocessing)

    monkeypatch.setattr(nvjpeg, "_preprocess", failing)
    image = big("coffee")
    blobs = {orientation: jpeg_bytes(image, orientation) for orientation in (1, 3, 6)}
    inputs = nvjpeg.model_inputs([for_gpu(blob, f"{o}.jpg") for o, blob in blobs.items()], torch.device("cpu"))
    assert isinstance(inputs[1], DecodeError) and "unexpected error" in str(inputs[1]) and "3.jpg" in str(inputs[1])
    for position, orientation in ((0, 1), (2, 6)):  # 6: decoded on the CPU instead
        reference = reference_preprocess(Image.open(io.BytesIO(blobs[orientation])))
        assert cosine(inputs[position], reference) >= TENSOR_THRESHOLD  # type: ignore[arg-type]


@pytest.mark.parametrize("device", DEVICES, ids=str)
def test_embedder_decoding_jpegs_in_batches_embeds_like_the_pool(
    device: torch.device, calibrated_model: EmbeddingModel, calibrated_weights: Path, tmp_path: Path,
    decode_calls: list[int],
) -> None:
    from imgwatch.embedding import load_model


    files = {
        "phone.jpg": jpeg_bytes(big("coffee", (4032, 3024))),
        "turned.jpg": jpeg_bytes(big("chelsea"), orientation=6),
        "small.jpg": jpeg_bytes(photo("chelsea")),
        "cmyk.jpg": jpeg_bytes(big("rocket").convert("CMYK")),
        "truncated.jpg": jpeg_bytes(photo("astronaut"))[:20_000],
        "damaged.jpg": with_bogus_huffman_table(jpeg_bytes(big("astronaut"))),
    }
    png = io.BytesIO()
    photo("astronaut").save(png, "PNG")
    files["astronaut.png"] = png.getvalue()
    paths = []
    for name, blob in files.items():
        (tmp_path / name).write_bytes(blob)
        paths.append(str(tmp_path / name))
    model = calibrated_model if device.type == "cpu" else load_model(str(calibrated_weights), device="cuda")
    with Embedder(model, batch_size=8, gpu_decode=True) as batched, Embedder(calibrated_model, batch_size=8) as pool:
        assert batched.gpu_decode and not pool.gpu_decode
        on_gpu_path = {result.facts.path if isinstance(result, Embedded) else result.path: result
                       for result in batched.embed_files(paths)}
        reference = {result.facts.path if isinstance(result, Embedded) else result.path: result
                     for result in pool.embed_files(paths)}
    # phone, turned and damaged in one call; damaged fails it, so each is tried alone (3 more)
    assert decode_calls == [3, 1, 1, 1]
    broken = [str(tmp_path / name) for name in ("truncated.jpg", "damaged.jpg")]
    for path in broken:
        assert isinstance(on_gpu_path[path], Failed) and isinstance(reference[path], Failed), path
        assert on_gpu_path[path].reason == reference[path].reason  # type: ignore[union-attr]
    for path in paths:
        if path in broken:
            continue
        fast, slow = on_gpu_path[path], reference[path]
        assert isinstance(fast, Embedded) and isinstance(slow, Embedded), path
        assert (fast.width, fast.height) == (slow.width, slow.height)
        assert float(fast.vector @ slow.vector) >= EMBEDDING_THRESHOLD, path


def test_a_backlog_leaves_jpegs_to_the_gpu_until_enough_wait() -> None:
    backlog = nvjpeg.Backlog(enough=2)
    assert [backlog.leave_to_gpu() for _ in range(3)] == [True, True, False]
    backlog.decoded(2)
    assert [backlog.leave_to_gpu() for _ in range(3)] == [True, True, False]
    assert (backlog.to_gpu, backlog.on_cpu) == (4, 2)
    unlimited = nvjpeg.Backlog(enough=None)
    assert all(unlimited.leave_to_gpu() for _ in range(100)) and unlimited.on_cpu == 0


@pytest.mark.parametrize("share_with_cpu", [True, False], ids=["shared", "gpu only"])
def test_the_pool_decodes_jpegs_too_while_the_gpu_has_enough_waiting(
    share_with_cpu: bool, calibrated_model: EmbeddingModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A slow GPU (each nvJPEG call held 0.3 s here): the decode threads take the JPEGs that would
    wait behind its micro-batches, and every photo embeds as the pool alone embeds it."""
    decode = nvjpeg._decode_jpeg

    def slow(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
        time.sleep(0.3)
        return decode(data, device)

    monkeypatch.setattr(nvjpeg, "_decode_jpeg", slow)
    paths = []
    for number, name in enumerate(["coffee", "chelsea", "astronaut", "rocket"] * 3):
        paths.append(str(tmp_path / f"{number:02d}.jpg"))
        Path(paths[-1]).write_bytes(jpeg_bytes(big(name, seed=number)))
    with Embedder(calibrated_model, batch_size=2, gpu_decode=True, share_with_cpu=share_with_cpu) as shared, \
            Embedder(calibrated_model, batch_size=2) as pool:
        got = {r.facts.path: r for r in shared.embed_files(paths) if isinstance(r, Embedded)}
        reference = {r.facts.path: r for r in pool.embed_files(paths) if isinstance(r, Embedded)}
    assert shared.jpegs_to_gpu + shared.jpegs_on_cpu == len(paths)
    if share_with_cpu:
        assert shared.jpegs_to_gpu >= 2 and shared.jpegs_on_cpu >= 2
    else:
        assert shared.jpegs_on_cpu == 0
    assert got.keys() == reference.keys() == set(paths)
    for path in paths:
        assert float(got[path].vector @ reference[path].vector) >= EMBEDDING_THRESHOLD, path


@pytest.mark.parametrize("device", DEVICES, ids=str)
@pytest.mark.parametrize("preprocessing", [Preprocessing("stretch", 256, 320, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
                                           Preprocessing("crop", 288, 256)], ids=["stretch-320", "crop-288-256"])
def test_inputs_match_the_reference_recipe_of_a_declared_preprocessing(
    device: torch.device, preprocessing: Preprocessing,
) -> None:
    """A model file's preprocessing on the GPU path: its sizes and statistics, not ResNet50's."""
    blobs = [jpeg_bytes(big("coffee", (4032, 3024)), orientation=6), jpeg_bytes(big("chelsea", (1536, 1024), seed=1))]

    inputs = nvjpeg.model_inputs([for_gpu(blob) for blob in blobs], device, preprocessing)

    for blob, tensor in zip(blobs, inputs, strict=True):
        assert isinstance(tensor, torch.Tensor) and tensor.shape == preprocessing.input_shape
        expected = reference_preprocess(Image.open(io.BytesIO(blob)), preprocessing)
        assert cosine(tensor.cpu(), expected) >= TENSOR_THRESHOLD
