"""Safe decoding of untrusted image bytes into an RGB picture.

Every way an upload can be wrong or hostile ends in one :class:`ImageError` whose
``code`` says which, so a service can record it and carry on.

>>> import io
>>> from PIL import Image
>>> buffer = io.BytesIO()
>>> Image.new("LA", (4, 3)).save(buffer, format="PNG")
>>> decode_image(buffer.getvalue()).mode, decode_image(buffer.getvalue()).size
('RGB', (4, 3))
>>> decode_image(b"not an image")
Traceback (most recent call last):
...
models.images.decoding.ImageError: undecodable: cannot identify the image format
"""

import io
import warnings
from dataclasses import dataclass, field

from PIL import Image, ImageOps, UnidentifiedImageError


class ImageError(ValueError):
    """An image that cannot be used. ``code`` is one of :data:`ImageError.CODES`."""

    CODES = ("empty", "too_many_bytes", "undecodable", "truncated", "format_not_allowed", "too_many_pixels", "zero_size", "too_elongated")

    def __init__(self, code: str, detail: str) -> None:
        assert code in self.CODES, code
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class ImagePolicy:
    """What an acceptable image looks like."""

    max_bytes: int = 10 * 1024 * 1024
    # A 24 MP photo is the largest a shop needs; a decompression bomb claims far more.
    max_pixels: int = 24_000_000
    # A banner is 8:1; a picture far longer than that is no product photo, and resizing its
    # shorter side to the model's would blow its longer side up to gigabytes.
    max_aspect: float = 20.0
    formats: frozenset[str] = field(default_factory=lambda: frozenset({"JPEG", "PNG", "WEBP"}))


def decode_image(data: bytes, policy: ImagePolicy = ImagePolicy()) -> Image.Image:
    """Decode ``data`` to an RGB image, upright (EXIF orientation applied), alpha on white."""
    if not data:
        raise ImageError("empty", "no bytes")
    if len(data) > policy.max_bytes:
        raise ImageError("too_many_bytes", f"{len(data)} bytes; the limit is {policy.max_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError("undecodable", "cannot identify the image format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError("too_many_pixels", str(exc)) from None
    except OSError as exc:
        raise _unreadable(exc) from None
    if image.format not in policy.formats:
        raise ImageError("format_not_allowed", f"{image.format}; allowed: {', '.join(sorted(policy.formats))}")
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageError("zero_size", f"{width}x{height}")
    if width * height > policy.max_pixels:
        raise ImageError("too_many_pixels", f"{width}x{height}; the limit is {policy.max_pixels} pixels")
    if max(width, height) > policy.max_aspect * min(width, height):
        raise ImageError("too_elongated", f"{width}x{height}; the longer side may be at most {policy.max_aspect:g} times the shorter")
    try:
        image.load()
        image = ImageOps.exif_transpose(image) or image
    except (OSError, SyntaxError, ValueError) as exc:
        raise _unreadable(exc) from None
    return _to_rgb(image)


def _unreadable(exc: Exception) -> ImageError:
    # PIL words cut-off data as "image file is truncated", "Truncated File Read" or "broken data stream".
    message = str(exc).lower()
    code = "truncated" if "truncated" in message or "broken" in message else "undecodable"
    return ImageError(code, str(exc))


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale to 8 bits rather than clip.
        image = image.point(lambda v: v / 256).convert("L")
    return image.convert("RGB")
