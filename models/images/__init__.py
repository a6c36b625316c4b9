"""Turning untrusted image bytes into model input."""

from models.images.decoding import ImageError, ImagePolicy, decode_image
from models.images.preprocessing import Preprocessing

__all__ = ["ImageError", "ImagePolicy", "Preprocessing", "decode_image"]
