"""Image files with Pillow: checking, loading as uint8 (H, W, 3) RGB arrays, writing JPEG.

Every format the installed Pillow decodes by itself is read (JPEG, PNG, WebP, BMP, GIF, TIFF,
PPM, TGA, ICO, JPEG 2000, ... : :data:`IMAGE_EXTENSIONS`), whatever the extension's case. An
animated GIF or WebP, or a multi-page TIFF, gives its first frame.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

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


def probe_image(path) -> None:
    """Check that ``path`` is an image Pillow can identify (header only; cheap).

    Raises :class:`CorruptFileError` for an empty, unreadable or non-image file.
    """
    with reading(path, "not a readable image"), Image.open(path) as img:
        img.verify()


def load_image(path, min_side: Optional[int] = None) -> np.ndarray:
    """Decode ``path`` to a uint8 array (H, W, 3) in RGB (grey, palette and alpha converted).

    ``min_side``: a JPEG at least twice that size on both sides is decoded at 1/2, 1/4 or 1/8
    scale (Pillow's draft mode: the DCT is scaled, so it decodes several times faster), keeping
    both sides >= ``min_side``. What a resize to ``min_side`` then gives differs from the full
    decode by about one grey level on average (see the tests). Other formats decode in full.
    Raises :class:`CorruptFileError` when the file cannot be fully decoded (e.g. truncated).
    """
    with reading(path, "cannot decode image"), Image.open(path) as img:
        if min_side is not None:
            img.draft("RGB", (min_side, min_side))
        return np.array(img.convert("RGB"))  # a writable copy


def save_jpeg(image: np.ndarray, path, quality: int = 90) -> None:
    """Write a uint8 (H, W, 3) RGB array as a baseline JPEG (deterministic bytes for equal input)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), "RGB").save(
        path, format="JPEG", quality=quality, optimize=False, progressive=False
    )
