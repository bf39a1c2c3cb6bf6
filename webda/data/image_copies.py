"""Downscaled copies of large web images, kept in the cache, so that training decodes a 4000 x 3000
photo once, at preparation, instead of at every step.

A web image whose shorter side exceeds ``side`` (``prepare``'s ``image_side``; 512 by default,
above the 437 px the paper's random 224 px crops need, see ``TrainTransform.source_side``) is
decoded (a JPEG in draft mode), resized so that its shorter side is ``side`` (Pillow's
antialiased bilinear filter, as the training transforms'), its sides cut to multiples of 8 (at
most 7 pixels, centred, so the loader can decode it in draft mode for smaller crops) and stored
as a quality-95 JPEG. The training datasets read the copy
(``PreparedData.image_sources``); overlap removal, reports and item paths keep the original.

Cache layout (``cache_dir``, see :mod:`webda.data.cache`)::

    images.jsonl                  journal: "<image sha256>:<side>" -> {"files": [[name, bytes]]}
    images/<side>/<image sha256>.jpg
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Sequence, Tuple

from PIL import Image

from webda.data.cache import Journal, delete_unreferenced, files_intact
from webda.data.images import load_image
from webda.data.layout import Item
from webda.data.parallel import run_tasks
from webda.data.skips import CorruptFileError

COPY_JOURNAL = "images.jsonl"
COPY_DIR = "images"


def copy_geometry(width: int, height: int, side: int):
    """(size, box) of the copy of a ``width`` x ``height`` picture: scaled so that the shorter
    side is ``side``, then cut to multiples of 8; ``box`` is the region of the picture it shows."""
    scale = side / min(width, height)
    size = [max(8, round(n * scale) // 8 * 8) for n in (width, height)]
    spans = [n / scale for n in size]
    left, top = (width - spans[0]) / 2, (height - spans[1]) / 2
    return tuple(size), (left, top, left + spans[0], top + spans[1])


def copy_task(task):
    """Worker: ``(path, name, side, cache_dir)`` -> the cache entry of the copy written to
    ``cache_dir/name``, or the reason the image could not be decoded."""
    path, name, side, cache_dir = task
    try:
        image = Image.fromarray(load_image(path, min_side=side))
    except CorruptFileError as err:
        return str(err)
    size, box = copy_geometry(image.width, image.height, side)
    image = image.resize(size, Image.BILINEAR, box=box)
    out = Path(cache_dir) / name
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out, format="JPEG", quality=95, optimize=False, progressive=False)
    return {"files": [[name, out.stat().st_size]]}


def downscaled_copies(
    images: Sequence[Item], sizes: Dict[Path, Tuple[int, int]], fingerprints: Dict[Path, str], cache_dir, side: int,
    workers: int, show_progress: bool = True,
) -> Tuple[Dict[Path, Path], Dict[str, int]]:
    """Copies of the ``images`` whose shorter side (from ``sizes``) exceeds ``side``, made in
    ``workers`` processes or reused from the cache: ({original: copy}, {"reused", "made"}).

    Images without a known size or content hash are left as they are, as is an image that
    fails to decode (the loader then skips it with a warning). The cache keeps these copies only.
    """
    if side < 1:
        raise ValueError(f"image side must be >= 1, got {side}")
    cache_dir = Path(cache_dir)
    journal = Journal(cache_dir / COPY_JOURNAL)
    large = [Path(i.path) for i in images if Path(i.path) in fingerprints and min(sizes.get(Path(i.path), (0, 0))) > side]
    key = {path: f"{fingerprints[path]}:{side}" for path in large}
    todo = {}  # one task per distinct content
    for path in large:
        if not files_intact(cache_dir, journal.get(key[path])):
            todo.setdefault(key[path], path)
    pending = list(todo.items())
    tasks = [(path, f"{COPY_DIR}/{side}/{fingerprints[path]}.jpg", side, cache_dir) for _, path in pending]
    for i, entry in run_tasks(copy_task, tasks, workers, "downscaling large images", "image", show_progress):
        if isinstance(entry, str):
            journal.forget(pending[i][0])
        else:
            journal.put(pending[i][0], entry)
    sources = {path: cache_dir / journal.get(key[path])["files"][0][0] for path in large if journal.get(key[path])}
    journal.compact(key[path] for path in sources)
    delete_unreferenced(cache_dir, COPY_DIR, (e["files"][0][0] for e in journal.records.values()))
    made = sum(key[path] in todo for path in sources)
    return sources, {"reused": len(sources) - made, "made": made}
