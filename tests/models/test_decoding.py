"""Decoding good pictures, and refusing hostile ones with the right code."""

import io
import struct
import zlib

import pytest
from PIL import Image

from models.images import ImageError, ImagePolicy, decode_image


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_allowed_formats_decode_to_rgb(fmt):
    picture = decode_image(_encode(Image.new("RGB", (40, 30), (200, 10, 10)), fmt))
    assert picture.mode == "RGB" and picture.size == (40, 30)
    r, g, b = picture.getpixel((20, 15))
    assert r > 150 and g < 60 and b < 60


@pytest.mark.parametrize("mode", ["L", "I;16", "CMYK", "P"])
def test_other_colour_modes_become_rgb(mode):
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    assert decode_image(_encode(Image.new(mode, (8, 8)), fmt)).mode == "RGB"


def test_transparency_is_composited_on_white():
    rgba = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    rgba.putpixel((5, 5), (0, 0, 255, 255))
    picture = decode_image(_encode(rgba, "PNG"))
    assert picture.getpixel((0, 0)) == (255, 255, 255)
    assert picture.getpixel((5, 5)) == (0, 0, 255)


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (60, 20), "white")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    picture = decode_image(_encode(image, "JPEG", exif=exif.tobytes()))
    assert picture.size == (20, 60)


def _png_with_size(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (with one row of real data)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1))) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty"),
        (b"GIF89a not really", "undecodable"),
        (b"\x00" * 100, "undecodable"),
        (_encode(Image.new("RGB", (8, 8)), "GIF"), "format_not_allowed"),
        (_encode(Image.new("RGB", (8, 8)), "BMP"), "format_not_allowed"),
        (_encode(Image.new("RGB", (64, 64), "red"), "PNG")[:-40], "truncated"),
        (_encode(Image.effect_noise((64, 64), 50).convert("RGB"), "JPEG")[:300], "truncated"),
        (_png_with_size(100_000, 100_000), "too_many_pixels"),
        (_png_with_size(6_000, 5_000), "too_many_pixels"),
        (_png_with_size(0, 10), "undecodable"),
        (_png_with_size(1_000_000, 20), "too_elongated"),
        (_png_with_size(10, 201), "too_elongated"),
    ],
    ids=["empty", "garbage", "zeros", "gif", "bmp", "truncated-png", "truncated-jpeg", "bomb", "huge", "zero-width", "strip", "tall"],
)
def test_hostile_images_are_refused_with_a_code(data, code):
    with pytest.raises(ImageError) as caught:
        decode_image(data)
    assert caught.value.code == code


def test_byte_limit_is_checked_before_decoding():
    data = _encode(Image.new("RGB", (32, 32)), "PNG")
    with pytest.raises(ImageError) as caught:
        decode_image(data, ImagePolicy(max_bytes=len(data) - 1))
    assert caught.value.code == "too_many_bytes"


def test_pixel_limit_is_a_policy():
    data = _encode(Image.new("RGB", (100, 100)), "PNG")
    assert decode_image(data, ImagePolicy(max_pixels=10_000)).size == (100, 100)
    with pytest.raises(ImageError, match="too_many_pixels"):
        decode_image(data, ImagePolicy(max_pixels=9_999))
