"""The generated dataset's ground truth (``dataset_card.json``), looked up by file.

The card lists every generated file (path relative to the dataset root) with its ``noise``
kind: web images are ``clean``, ``irrelevant``, ``mislabeled`` or ``duplicate`` (a near-copy of
a target test keyframe); web videos ``clean``, ``spliced`` (an irrelevant shot inside, listed in
``shots``) or ``duplicate`` (a re-upload of a target test video). Training never reads it;
the report uses it to show what the method did with the noise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

from webda.data.synthetic import CARD_NAME
from webda.errors import UserError


class GroundTruth:
    """Card entries of the dataset at ``root``, by path (relative to ``root``, or any path to the file)."""

    def __init__(self, root):
        self.root = Path(root).resolve()
        path = self.root / CARD_NAME
        if not path.is_file():
            raise UserError(f"{path} does not exist: the report needs a dataset written by `webda make-dataset`")
        self.card = json.loads(path.read_text())
        self.items: Dict[str, dict] = {item["path"]: item for item in self.card["items"]}

    def entry(self, path) -> dict:
        """The card entry of ``path``; KeyError naming the path if the card does not list it."""
        key = str(path)
        if key not in self.items and Path(path).resolve().is_relative_to(self.root):
            key = str(Path(path).resolve().relative_to(self.root))
        if key not in self.items:
            raise KeyError(f"{key} is not in the dataset card of {self.root}")
        return self.items[key]

    def noise(self, path) -> str:
        """Noise kind of a web image or web video (``clean`` for a clean item)."""
        return self.entry(path)["noise"]

    def frame_noise(self, video, frame: int) -> str:
        """Noise kind of one frame of a web video: ``irrelevant`` inside a spliced-in shot,
        ``duplicate`` in a re-upload, else ``clean``."""
        entry = self.entry(video)
        for shot in entry.get("shots", []):
            if shot["start"] <= frame < shot["end"] and not shot["relevant"]:
                return "irrelevant"
        return "duplicate" if entry["noise"] == "duplicate" else "clean"

    def planted(self, domain: str, noise: str) -> Dict[str, dict]:
        """Entries of ``domain`` (``web_image``, ``web_video``, ...) with noise kind ``noise``."""
        return {p: e for p, e in self.items.items() if e["domain"] == domain and e["noise"] == noise}
