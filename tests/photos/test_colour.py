"""ICC profiles and nclx boxes to sRGB, on real profiles and real encoded files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image, ImageCms

from imgwatch.photos.colour import icc_is_srgb, nclx_in_isobmff, to_srgb
from tests.photo_files import adobe_rgb_profile, display_p3_profile, prophoto_profile, to_profile, write_heic


def astronaut() -> Image.Image:
    return Image.fromarray(skimage.data.astronaut())


def largest_difference(first: Image.Image, second: Image.Image) -> int:
    return int(np.abs(np.asarray(first, dtype=np.int16) - np.asarray(second, dtype=np.int16)).max())


def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def test_a_wide_gamut_photo_comes_back_to_its_srgb_numbers() -> None:
    source = astronaut()
    for profile in (display_p3_profile(), adobe_rgb_profile(), prophoto_profile()):
        stored = to_profile(source, profile)  # what a phone or camera writes
        assert largest_difference(stored, source) > 20  # the numbers really differ
        # Two 8-bit roundings (into the wide space and back) move a level or a few in dark saturated colours.
        assert np.abs(np.asarray(to_srgb(stored, profile), dtype=np.int16) - np.asarray(source)).mean() < 1.0


def test_srgb_profiles_are_recognised_and_left_alone() -> None:
    assert icc_is_srgb(srgb_profile())
    assert not icc_is_srgb(display_p3_profile())
    image = astronaut()
    assert to_srgb(image, srgb_profile()) is image  # no conversion at all: the common case costs nothing


def test_a_damaged_profile_is_ignored_not_fatal() -> None:
    image = astronaut()
    assert to_srgb(image, b"not an ICC profile at all") is image
    assert to_srgb(image, display_p3_profile()[:100]) is image


def test_a_profile_of_another_colour_space_is_not_applied_and_alpha_is_kept() -> None:
    grey = astronaut().convert("L")
    grey_profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()  # not a GRAY space
    assert to_srgb(grey, grey_profile) is grey  # a profile of another colour space is not applied
    rgba = astronaut().convert("RGBA")
    converted = to_srgb(rgba, display_p3_profile())
    assert converted.mode == "RGBA" and converted.getchannel("A").getextrema() == (255, 255)


def test_nclx_display_p3_is_converted_like_its_icc_profile() -> None:
    source = astronaut()
    stored = to_profile(source, display_p3_profile())
    by_nclx = to_srgb(stored, nclx={"color_primaries": 12, "transfer_characteristics": 13})
    by_icc = to_srgb(stored, display_p3_profile())
    assert largest_difference(by_nclx, by_icc) <= 3
    assert to_srgb(stored, nclx={"color_primaries": 1}) is stored  # BT.709 primaries are sRGB's
    assert to_srgb(stored, nclx={"color_primaries": 2}) is stored  # unspecified: taken as sRGB


def test_the_nclx_box_is_read_from_the_file(tmp_path: Path) -> None:
    path = write_heic(astronaut(), tmp_path / "p3.heic", nclx={"color_primaries": 12, "transfer_characteristics": 13})
    assert nclx_in_isobmff(path.read_bytes()) == {
        "color_primaries": 12, "transfer_characteristics": 13, "matrix_coefficients": 6}
    plain = io.BytesIO()
    astronaut().save(plain, "PNG")
    assert nclx_in_isobmff(plain.getvalue()) is None
