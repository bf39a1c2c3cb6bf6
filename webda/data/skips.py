"""Unreadable files: the error raised on them, the warning issued once per file, and the tally.

A data run never crashes on a bad file (zero-byte, truncated, not what its extension says):
the file is skipped with one :class:`CorruptFileWarning` and counted in a :class:`SkipLog`.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Tuple


class CorruptFileError(ValueError):
    """A file that cannot be decoded; the message names the path and what went wrong."""


class CorruptFileWarning(UserWarning):
    """Issued once for each file that is skipped."""


@dataclass
class SkipLog:
    """Files skipped so far, as (path, reason) pairs, in the order they were met."""

    skipped: List[Tuple[Path, str]] = field(default_factory=list)

    def skip(self, path: Path, reason: str) -> None:
        """Record ``path`` as skipped and warn once about it."""
        if any(p == path for p, _ in self.skipped):
            return
        self.skipped.append((Path(path), reason))
        warnings.warn(f"skipping {path}: {reason}", CorruptFileWarning, stacklevel=2)

    def __len__(self) -> int:
        return len(self.skipped)

    def summary(self) -> str:
        """One line: how many files were skipped, by file extension."""
        if not self.skipped:
            return "no files skipped"
        by_ext = Counter(p.suffix.lower() or "(none)" for p, _ in self.skipped)
        parts = ", ".join(f"{n} {ext}" for ext, n in sorted(by_ext.items()))
        return f"{len(self.skipped)} unreadable files skipped ({parts})"
