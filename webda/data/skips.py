"""Files a data run does not use: unreadable ones (skipped) and ones that are not media (ignored).

A data run never crashes on a bad file (zero-byte, truncated, not what its extension says):
the file is skipped with one :class:`CorruptFileWarning` and counted in a :class:`SkipLog`.
Every reader turns the errors its library raises on bad input into :class:`CorruptFileError`
inside :func:`reading`, so a new kind of bad input is handled by adding its exception type to
:data:`DECODE_ERRORS` (or raising CorruptFileError from a probe), in one place.

Files whose extension no reader takes (``notes.txt``, ``photo.heic``), hidden entries and files
outside any class folder are not skipped but *ignored*: listed in ``SkipLog.ignored`` and counted
by extension in the summary, never dropped silently.
"""

from __future__ import annotations

import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, List, Tuple

import av
from PIL import UnidentifiedImageError
from PIL.Image import DecompressionBombError, DecompressionBombWarning

# What Pillow and PyAV raise on a file they cannot read. Pillow's DecompressionBombWarning is
# raised as an error where webda opens images (webda.data.images): an image over
# PIL.Image.MAX_IMAGE_PIXELS is skipped, never decoded.
DECODE_ERRORS = (OSError, EOFError, SyntaxError, ValueError, IndexError, UnidentifiedImageError, av.FFmpegError,
                 DecompressionBombError, DecompressionBombWarning)

HIDDEN = "hidden"  # the summary's name for ignored hidden files and folders


class CorruptFileError(ValueError):
    """A file that cannot be decoded; the message names the path and what went wrong."""


class CorruptFileWarning(UserWarning):
    """Issued once for each file that is skipped."""


@contextmanager
def reading(path, what: str):
    """Turn a decoding library's error inside the block into ``CorruptFileError("{path}: {what} (...)")``."""
    try:
        yield
    except CorruptFileError:
        raise
    except DECODE_ERRORS as err:
        raise CorruptFileError(f"{path}: {what} ({err})") from err


def ignored_kind(path: Path) -> str:
    """How the summary counts an ignored file: its lower-case extension, or ``hidden``."""
    if path.name.startswith("."):
        return HIDDEN
    return path.suffix.lower() or "(no extension)"


@dataclass
class SkipLog:
    """Skipped files as (path, reason) pairs, in the order they were met, and ignored files."""

    skipped: List[Tuple[Path, str]] = field(default_factory=list)
    ignored: List[Path] = field(default_factory=list)

    def skip(self, path: Path, reason: str) -> None:
        """Record ``path`` as skipped and warn once about it (a ``reason`` that starts with the
        path, as :class:`CorruptFileError` messages do, is kept without it)."""
        if any(p == path for p, _ in self.skipped):
            return
        reason = reason.removeprefix(f"{path}: ")
        self.skipped.append((Path(path), reason))
        warnings.warn(f"skipping {path}: {reason}", CorruptFileWarning, stacklevel=2)

    def ignore(self, paths: Iterable[Path]) -> None:
        """Record files (or hidden folders) that are not read: no warning, counted in :meth:`summary`."""
        self.ignored += [Path(p) for p in paths]

    def __len__(self) -> int:
        return len(self.skipped)

    def summary(self) -> str:
        """One line: how many files were skipped and ignored, by file extension."""
        parts = []
        if self.skipped:
            by_ext = Counter(p.suffix.lower() or "(no extension)" for p, _ in self.skipped)
            listed = ", ".join(f"{n} {ext}" for ext, n in sorted(by_ext.items()))
            parts.append(f"{len(self.skipped)} unreadable files skipped ({listed})")
        if self.ignored:
            by_kind = Counter(ignored_kind(p) for p in self.ignored)
            parts.append("ignored: " + ", ".join(f"{n} {kind}" for kind, n in sorted(by_kind.items())))
        return "; ".join(parts) or "no files skipped"
