"""The preparation cache: what ``webda prepare-data`` computed, kept so that a rerun redoes only
what changed, an interrupted run resumes, and a damaged entry is rebuilt rather than trusted.

Keys. A file is known by the SHA-256 of its content (:func:`fingerprint`). Hashing a file
needs reading it, so the ``files`` journal remembers, per resolved path, the size and
modification time the fingerprint was taken at: an unchanged file (same path, size and
mtime) is not read again; a changed, new, moved or renamed one is hashed and then matched by
content. Results of a file (probe, keyframes, embeddings) are stored under its fingerprint,
so byte-identical copies (re-uploads) share them.

Storage, both append-only until compacted:

- :class:`Journal`: JSON lines, one record per key, each with a CRC-32 of its content. A
  record is appended (and flushed) as soon as it is computed; reading drops lines that do not
  parse or whose CRC does not match (a line cut by a crash, a damaged disk block). The last
  record of a key wins. :meth:`Journal.compact` rewrites the file with the live keys only.
- :class:`VectorStore`: float32 vectors in ``.npz`` shards, one written every
  ``shard_size`` new vectors. A shard that does not load (zip CRC) or has the wrong shapes
  or non-finite values is deleted and its vectors computed again.

A journal with dropped lines, or a deleted shard, gives one :class:`DamagedCacheWarning`
naming the file. The users of a record check its shape and the files it names before
trusting it (a record of another format or version is computed again).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import numpy as np

_CHUNK = 1 << 20


class DamagedCacheWarning(UserWarning):
    """Issued once for each damaged cache file; what it held is computed again."""


def fingerprint(path) -> str:
    """SHA-256 (hex) of the content of ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(_CHUNK)
            if not block:
                return digest.hexdigest()
            digest.update(block)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def files_intact(cache_dir: Path, entry) -> bool:
    """Whether ``entry["files"]`` is a non-empty list of ``[name, size]``, each a file of that many
    bytes under ``cache_dir``."""
    try:
        files = entry["files"]
        return bool(files) and all((Path(cache_dir) / name).stat().st_size == size for name, size in files)
    except (TypeError, ValueError, KeyError, OSError):
        return False


def delete_unreferenced(cache_dir: Path, folder: str, referenced: Iterable[str]) -> None:
    """Delete the files under ``cache_dir/folder`` whose name (relative to ``cache_dir``) is not ``referenced``."""
    referenced = set(referenced)
    for path in sorted((Path(cache_dir) / folder).rglob("*")):
        if path.is_file() and path.relative_to(cache_dir).as_posix() not in referenced:
            path.unlink()


def _crc(key: str, record) -> int:
    return zlib.crc32(json.dumps([key, record], sort_keys=True).encode())


class Journal:
    """Records (JSON values) keyed by strings, in a JSON-lines file; see the module docstring.

    ``damaged``: how many lines were dropped when reading. ``records``: key -> record.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.records: Dict[str, object] = {}
        self.damaged = 0
        lines = self.path.read_bytes().splitlines() if self.path.is_file() else []
        for line in lines:
            try:
                entry = json.loads(line)
                key, record, crc = entry["key"], entry["record"], entry["crc"]
                valid = isinstance(key, str) and crc == _crc(key, record)
            except (ValueError, TypeError, KeyError):
                valid = False
            if valid:
                self.records[key] = record
            else:
                self.damaged += 1
        self._stale_lines = len(lines) - len(self.records)
        if self.damaged:
            warnings.warn(f"cache index {self.path}: {self.damaged} damaged line(s) dropped (a crash mid-write or a "
                          "damaged disk); what they held is computed again", DamagedCacheWarning, stacklevel=2)

    def get(self, key: str):
        return self.records.get(key)

    def put(self, key: str, record) -> None:
        """Store ``record`` under ``key`` and append it to the file at once."""
        self._stale_lines += key in self.records
        self.records[key] = record
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"key": key, "record": record, "crc": _crc(key, record)}, sort_keys=True)
        with open(self.path, "a") as f:
            f.write(line + "\n")

    def forget(self, key: str) -> None:
        if self.records.pop(key, None) is not None:
            self._stale_lines += 1

    def compact(self, live: Iterable[str]) -> List[str]:
        """Keep only the records of ``live`` keys (rewriting the file if anything else is in it);
        returns the keys dropped."""
        live = set(live)
        dropped = [key for key in self.records if key not in live]
        if dropped or self._stale_lines:
            for key in dropped:
                del self.records[key]
            lines = [json.dumps({"key": k, "record": r, "crc": _crc(k, r)}, sort_keys=True)
                     for k, r in sorted(self.records.items())]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, "".join(line + "\n" for line in lines).encode())
            self._stale_lines = 0
        return dropped


class VectorStore:
    """float32 vectors of one length keyed by strings, in ``.npz`` shards under ``folder``."""

    def __init__(self, folder, shard_size: int = 4096):
        self.folder, self.shard_size = Path(folder), shard_size
        self.vectors: Dict[str, np.ndarray] = {}
        self.damaged = 0
        self._new: Dict[str, np.ndarray] = {}
        self._shards = sorted(self.folder.glob("*.npz")) if self.folder.is_dir() else []
        for shard in list(self._shards):
            loaded = self._load(shard)
            if loaded is None:
                self.damaged += 1
                shard.unlink(missing_ok=True)
                self._shards.remove(shard)
                warnings.warn(f"cache shard {shard}: damaged, deleted; its vectors are computed again",
                              DamagedCacheWarning, stacklevel=2)
            else:
                self.vectors.update(loaded)

    @staticmethod
    def _load(shard: Path) -> Optional[Dict[str, np.ndarray]]:
        try:
            with open(shard, "rb") as f, np.load(f, allow_pickle=False) as data:  # np.load leaves a bad file open
                keys, vectors = data["keys"], data["vectors"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return None
        if (keys.ndim != 1 or vectors.ndim != 2 or len(keys) != len(vectors) or vectors.dtype != np.float32
                or not np.isfinite(vectors).all()):
            return None
        return dict(zip(keys.tolist(), vectors))

    def get(self, key: str) -> Optional[np.ndarray]:
        return self.vectors.get(key)

    def put(self, key: str, vector: np.ndarray) -> None:
        """Store ``vector``; a shard is written every ``shard_size`` new vectors (:meth:`flush`)."""
        self.vectors[key] = self._new[key] = np.asarray(vector, dtype=np.float32)
        if len(self._new) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        """Write the vectors not yet on disk as one new shard."""
        if self._new:
            self._write(self._new)
            self._new = {}

    def _write(self, vectors: Dict[str, np.ndarray]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        number = max((int(p.stem) for p in self._shards if p.stem.isdigit()), default=-1) + 1
        path = self.folder / f"{number:06d}.npz"
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
        keys = list(vectors)
        np.savez(tmp, keys=np.array(keys), vectors=np.stack([vectors[k] for k in keys]))
        os.replace(tmp, path)
        self._shards.append(path)

    def compact(self, live: Iterable[str], max_shards: int = 16) -> None:
        """Flush, then merge every shard into one without the keys not in ``live`` when more than a
        quarter of the stored vectors are dead or there are more than ``max_shards`` shards."""
        self.flush()
        live = set(live)
        dead = [key for key in self.vectors if key not in live]
        if len(dead) * 4 <= len(self.vectors) and len(self._shards) <= max_shards:
            return
        for key in dead:
            del self.vectors[key]
        old = list(self._shards)
        if self.vectors:
            self._write(self.vectors)  # numbered after every old shard
        for shard in old:
            shard.unlink(missing_ok=True)
        self._shards = [s for s in self._shards if s not in old]
