"""Image files with Pillow: checking, loading as uint8 (H, W, 3) RGB arrays, writing JPEG.

Every format the installed Pillow decodes by itself is read (JPEG, PNG, WebP, BMP, GIF, TIFF,
PPM, TGA, ICO, JPEG 2000, ... : :data:`IMAGE_EXTENSIONS`), whatever the extension's case. An
animated GIF or WebP, or a multi-page TIFF, gives its first frame.

Pixels wider than 8 bits are scaled, never clipped: 16-bit colour keeps its high byte
(Pillow's own decoding), 16-bit grey (and Pillow's 32-bit integer grey, which is how it reads
16-bit PGM) maps 0..65535 to 0..255, float grey maps 0..1 to 0..255; integer grey outside
0..65535 or float grey outside [0, 1] (or not finite) has no 8-bit meaning and the image is
refused. An image of more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels (Pillow's decompression
bomb limit, 89,478,485 by default: about 1/4 GiB as 8-bit RGB per decoding process) is refused
without being decoded. Refused images raise :class:`~webda.data.skips.CorruptFileError` (the
data layer skips them).
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Tuple

import numpy as np
from PIL import Image

from webda.data.skips import CorruptFileError, reading

# Pillow modes of one channel wider than 8 bits -> the value that means full white.
_FULL_SCALE = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535, "F": 1.0}

# Pillow formats that are only identified, or decoded by an external program or a handler the
# user must register; ".mpg"/".mpeg" are videos here.
_NOT_DECODED = {"BUFR", "EPS", "GRIB", "HDF5", "IPTC", "MPEG", "WMF"}


def _pillow_extensions() -> tuple:
    Image.init()
    return tuple(sorted(
        ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN and fmt not in _NOT_DECODED
    ))


IMAGE_EXTENSIONS = _pillow_extensions()


@contextmanager
def _open(path, what: str) -> Iterator[Image.Image]:
    """``Image.open(path)``, Pillow's errors (and its decompression bomb warning) raised as
    ``CorruptFileError("{path}: {what} (...)")``."""
    with reading(path, what), warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as img:
            yield img


def probe_image(path) -> Tuple[int, int]:
    """Check that ``path`` is an image Pillow can identify (header only; cheap); its (width, height).

    Raises :class:`CorruptFileError` for an empty, unreadable or non-image file, or one over
    ``PIL.Image.MAX_IMAGE_PIXELS`` pixels.
    """
    with _open(path, "not a readable image") as img:
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
    full. Pixels wider than 8 bits are scaled (see the module docstring). Raises
    :class:`CorruptFileError` when the file cannot be fully decoded (e.g. truncated), or is
    refused (too many pixels, grey values with no 8-bit meaning).
    """
    with _open(path, "cannot decode image") as img:
        if min_side is not None and img.format == "JPEG":
            scale = _draft_scale(img, min_side)
            if scale > 1:
                img.draft("RGB", (img.width // scale, img.height // scale))
        if img.mode in _FULL_SCALE:
            img = _eight_bit_grey(img, path)
        return np.array(img.convert("RGB"))  # a writable copy


def _eight_bit_grey(img: Image.Image, path) -> Image.Image:
    """A grey image of a wide mode (``_FULL_SCALE``) as mode ``L``, full scale mapped to 255
    (Pillow's own conversion clips at 255 instead)."""
    values, full = np.asarray(img), _FULL_SCALE[img.mode]
    if not np.isfinite(values).all() or values.min() < 0 or values.max() > full:
        raise CorruptFileError(f"{path}: {img.mode} pixel values outside [0, {full:g}] have no 8-bit meaning")
    return Image.fromarray(np.rint(values * (255 / full)).astype(np.uint8), "L")


def save_jpeg(image: np.ndarray, path, quality: int = 90) -> None:
    """Write a uint8 (H, W, 3) RGB array as a baseline JPEG (deterministic bytes for equal input)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), "RGB").save(
        path, format="JPEG", quality=quality, optimize=False, progressive=False
    )
