"""Image files with Pillow: checking, loading as uint8 (H, W, 3) RGB arrays, writing JPEG.

Every format the installed Pillow decodes by itself is read (JPEG, PNG, WebP, BMP, GIF, TIFF,
PPM, TGA, ICO, JPEG 2000, ... : :data:`IMAGE_EXTENSIONS`), whatever the extension's case. An
animated GIF or WebP, or a multi-page TIFF, gives its first frame.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import numpy as np
from PIL import Image

from webda.data.skips import reading

# Pillow formats that are only identified, or decoded by an external program or a handler the
# user must register; ".mpg"/".mpeg" are videos here.
_NOT_DECODED = {"BUFR", "EPS", "GRIB", "HDF5", "IPTC", "MPEG", "WMF"}


def _pillow_extensions() -> tuple:
    Image.init()
    return tuple(sorted(
        ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN and fmt not in _NOT_DECODED
    ))


IMAGE_EXTENSIONS = _pillow_extensions()


def probe_image(path) -> Tuple[int, int]:
    """Check that ``path`` is an image Pillow can identify (header only; cheap); its (width, height).

    Raises :class:`CorruptFileError` for an empty, unreadable or non-image file.
    """
    with reading(path, "not a readable image"), Image.open(path) as img:
        img.verify()
        return img.size


def _draft_scale(img: Image.Image, min_side: int) -> int:
    """The largest JPEG draft reduction (8, 4, 2; else 1) dividing both sides exactly and keeping them >= ``min_side``."""
    return next((s for s in (8, 4, 2) if img.width % s == 0 and img.height % s == 0 and min(img.size) // s >= min_side), 1)


def load_image(path, min_side: Optional[int] = None) -> np.ndarray:
    """Decode ``path`` to a uint8 array (H, W, 3) in RGB (grey, palette and alpha converted).

    ``min_side``: a JPEG at least twice that size on both sides is decoded at 1/2, 1/4 or 1/8
    scale (Pillow's draft mode: the DCT is scaled, so it decodes several times faster), the
    largest that divides both sides exactly (so the picture keeps its exact geometry) and
    keeps both sides >= ``min_side``. Resized further, it differs from the full decode by
    about a grey level on average (see tests/test_data_formats.py). Other formats decode in
    full. Raises :class:`CorruptFileError` when the file cannot be fully decoded (e.g. truncated).
    """
    with reading(path, "cannot decode image"), Image.open(path) as img:
        if min_side is not None and img.format == "JPEG":
            scale = _draft_scale(img, min_side)
            if scale > 1:
                img.draft("RGB", (img.width // scale, img.height // scale))
        return np.array(img.convert("RGB"))  # a writable copy


def save_jpeg(image: np.ndarray, path, quality: int = 90) -> None:
    """Write a uint8 (H, W, 3) RGB array as a baseline JPEG (deterministic bytes for equal input)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), "RGB").save(
        path, format="JPEG", quality=quality, optimize=False, progressive=False
    )
