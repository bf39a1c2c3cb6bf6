"""The recorded ``webda ablate`` run (paper Table 1 on the synthetic data) as report blocks.

The run committed under ``benchmarks/results/ablation/`` (``ablation.json``, written by
:func:`webda.ablate.run_ablation`) is shown as recorded: its rows next to the paper's UCF-101
numbers, and the paired effect of each component.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

from webda.ablate import TITLE, table_blocks
from webda.report.document import Block, Heading, Paragraph

RECORDED = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "ablation" / "ablation.json"


def recorded_ablation_blocks(path: Path = RECORDED) -> List[Block]:
    """Heading, captions and both tables of the ablation recorded at ``path`` (a paragraph
    saying where it was looked for, if there is none: e.g. webda installed without its sources)."""
    heading = Heading(TITLE)
    path = Path(path)
    if not path.is_file():
        return [heading, Paragraph(f"No recorded ablation at `{path}`; `webda ablate` writes one.")]
    source = Paragraph(f"Recorded by `webda ablate` (`{path}`), not computed by this demo: the paper's rows "
                       "trained over several seeds on the synthetic benchmark dataset.")
    return [heading, source, *table_blocks(json.loads(path.read_text()))]
