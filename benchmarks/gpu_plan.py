"""What ``benchmarks/gpu_check.sh`` runs with pytest on the GPU machine, in one place.

Tests: per op, the cases that do not run on the CPU alone (``-m "not cpu_only"``, the marker
tests/conftest.py sets): every fast backend on CUDA tensors, the reference on CUDA, and how
dispatch behaves on a GPU machine. Benchmarks: the cases at the issue's shapes, without the
``torch.compile`` rows (minutes of cold compiles) and the bank-size sweep.

``tests/test_gpu_dry_run.py`` collects and runs exactly these cases on a simulated GPU machine
(tests/gpu_dry_run/) in CI. ``python benchmarks/gpu_plan.py STEP`` prints STEP's pytest
arguments, one per line (``mapfile -t args < <(...)`` reads them in bash).
"""

from __future__ import annotations

import sys
from typing import Dict, List

TEST_SELECTION = ["-m", "not cpu_only"]
TEST_STEPS: Dict[str, List[str]] = {
    "tests-dispatch": ["tests/test_dispatch.py"],
    "tests-grad_reverse": ["tests/test_grad_reverse.py"],
    "tests-topk_similarity": ["tests/test_topk_similarity.py"],
    "tests-topt_attention": ["tests/test_topt_attention.py"],
    "tests-residual_conv2plus1d": ["tests/test_residual_conv2plus1d_kernels.py", "tests/test_residual_conv2plus1d_op.py",
                                   "tests/test_residual_conv2plus1d_nn.py"],
}
BENCH_SELECTION = ["-k", "not compile and not sweep"]
BENCH_STEPS: Dict[str, List[str]] = {
    "bench-attention": ["benchmarks/bench_topk_similarity.py", "benchmarks/bench_topt_attention.py"],
    "bench-residual_conv2plus1d": ["benchmarks/bench_residual_conv2plus1d.py"],
    "bench-grad_reverse": ["benchmarks/bench_grad_reverse.py"],
    "bench-train_step": ["benchmarks/bench_train_step.py"],
}


def arguments(step: str) -> List[str]:
    """pytest's arguments for ``step`` (a key of TEST_STEPS or BENCH_STEPS)."""
    if step in TEST_STEPS:
        return TEST_STEPS[step] + TEST_SELECTION
    if step in BENCH_STEPS:
        return BENCH_STEPS[step] + BENCH_SELECTION
    raise KeyError(f"unknown step {step!r}; steps: {sorted(TEST_STEPS) + sorted(BENCH_STEPS)}")


if __name__ == "__main__":
    print("\n".join(arguments(sys.argv[1])))
