"""What overlap removal dropped (``overlap_report.json``), checked against the planted duplicates.

The generator plants near-copies of target test keyframes among the web images and
re-uploads of target test videos among the web videos (``noise == "duplicate"`` in the card);
leaving them in would leak the test set into training.
"""

from __future__ import annotations

from typing import Dict

from webda.report.ground_truth import GroundTruth

KINDS = {"web_image": "web images", "web_video": "web videos"}


def overlap_summary(report: dict, truth: GroundTruth) -> Dict[str, dict]:
    """Per kind (``web_image``, ``web_video``): items, dropped, planted duplicates, duplicates
    dropped, and other (non-duplicate) items dropped."""
    dropped = {truth.entry(r["path"])["path"] for r in report["dropped"]}
    out = {}
    for kind in KINDS:
        items = {p: e for p, e in truth.items.items() if e["domain"] == kind}
        planted = set(truth.planted(kind, "duplicate"))
        gone = dropped & set(items)
        out[kind] = {"items": len(items), "dropped": len(gone), "duplicates": len(planted),
                     "duplicates_dropped": len(gone & planted), "others_dropped": len(gone - planted)}
    return out
