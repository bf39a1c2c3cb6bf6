"""Checks of the paths a user names on the command line: a :class:`UserError` naming the flag,
raised before any work starts, instead of an ``OSError`` half-way through a run."""

from __future__ import annotations

from pathlib import Path

from webda.errors import UserError


def output_folder(path, flag: str) -> Path:
    """``path`` as a folder that exists (created with its parents if missing); :class:`UserError`
    naming ``flag`` if it or a parent is a file, or it cannot be created."""
    path = Path(path)
    _make_folder(path, f"{flag} {path}")
    return path


def output_file(path, flag: str) -> Path:
    """``path`` as a file webda may write (its folder is created if missing); :class:`UserError`
    naming ``flag`` if it is a folder or its folder cannot be made."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder; it must name a file")
    _make_folder(path.parent, f"{flag} {path}")
    return path


def _make_folder(folder: Path, what: str) -> None:
    for part in (folder, *folder.parents):
        if part.exists() and not part.is_dir():
            raise UserError(f"{what} is a file, not a folder" if part == folder and what.endswith(str(folder))
                            else f"{what}: {part} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{what}: cannot create the folder {folder} ({err.strerror})") from None
