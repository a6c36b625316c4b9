"""Small JPEG thumbnails for product cards, made once when a product is indexed.

>>> from PIL import Image
>>> data = thumbnail_jpeg(Image.new("RGB", (640, 320), "red"), max_side=128)
>>> Image.open(__import__("io").BytesIO(data)).size
(128, 64)
"""

import io

from PIL import Image

MAX_SIDE = 160


def thumbnail_jpeg(image: Image.Image, max_side: int = MAX_SIDE, quality: int = 82) -> bytes:
    """``image`` shrunk to fit ``max_side`` (never enlarged), as JPEG bytes."""
    picture = image.convert("RGB")
    if max(picture.size) > max_side:
        picture = picture.copy()
        picture.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()
