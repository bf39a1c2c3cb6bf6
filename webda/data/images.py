"""Image files with Pillow: checking, loading as uint8 (H, W, 3) RGB arrays, writing JPEG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from webda.data.skips import CorruptFileError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def probe_image(path) -> None:
    """Check that ``path`` is an image Pillow can identify (header only; cheap).

    Raises :class:`CorruptFileError` for an empty, unreadable or non-image file.
    """
    try:
        with Image.open(path) as img:
            img.verify()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise CorruptFileError(f"{path}: not a readable image ({err})") from err


def load_image(path) -> np.ndarray:
    """Decode ``path`` to a uint8 array (H, W, 3) in RGB (grey, palette and alpha converted).

    Raises :class:`CorruptFileError` when the file cannot be fully decoded (e.g. truncated).
    """
    try:
        with Image.open(path) as img:
            return np.array(img.convert("RGB"))  # a writable copy
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise CorruptFileError(f"{path}: cannot decode image ({err})") from err


def save_jpeg(image: np.ndarray, path, quality: int = 90) -> None:
    """Write a uint8 (H, W, 3) RGB array as a baseline JPEG (deterministic bytes for equal input)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), "RGB").save(
        path, format="JPEG", quality=quality, optimize=False, progressive=False
    )
