"""``python -m webda_kernels.check``: every available backend of every op against the reference.

For each op, device and dtype, fresh random inputs (odd sizes, non-contiguous views) go
through each fast backend, the reference in the same dtype and the reference in float64;
outputs and gradients are held to :mod:`webda_kernels.testing`'s rule. Prints a table;
exits with status 1 if anything fails. Without a GPU, Triton runs in its interpreter.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Dict, List, Tuple

import torch

if not torch.cuda.is_available():  # must precede the first import of triton
    os.environ.setdefault("TRITON_INTERPRET", "1")

import webda_kernels as wk  # noqa: E402
from webda_kernels import _dispatch, testing  # noqa: E402

# A case runs one op on one backend and returns (label, kind, actual, same-dtype reference, float64 reference).
Result = Tuple[str, str, torch.Tensor, torch.Tensor, torch.Tensor]
Case = Callable[[str, torch.device, torch.dtype, bool], List[Result]]


def _grad_reverse_case(backend: str, device: torch.device, dtype: torch.dtype, quick: bool) -> List[Result]:
    x64 = torch.randn(7, 33, 5, dtype=torch.float64, device=device)
    grad64 = torch.randn(5, 33, 7, dtype=torch.float64, device=device).transpose(0, 2)  # non-contiguous
    coeff = float(torch.rand(()).item() * 2)

    def run(fn, dt):
        x = x64.to(dt).requires_grad_()
        fn(x, coeff).backward(grad64.to(dt))
        return x.grad

    actual = run(lambda x, c: wk.grad_reverse(x, c, backend=backend), dtype)
    return [("d x", "grad", actual, run(wk.reference.grad_reverse, dtype), run(wk.reference.grad_reverse, torch.float64))]


def _topt_attention_case(backend: str, device: torch.device, dtype: torch.dtype, quick: bool) -> List[Result]:
    # Both sizes fit one fused program; the second bank is past it (the streaming path).
    results: List[Result] = []
    for n_src, n_tgt, dim in ((5, 7, 17), (9, 70, 33)) if quick else ((33, 47, 127), (64, 1000, 64)):
        # Inputs representable in dtype, so the float64 reference ranks the same similarities.
        src64 = testing.representable_randn(n_src, dim, dtype=dtype, device=device)
        grad64 = testing.representable_randn(n_src, dtype=dtype, device=device)
        tgt64 = testing.representable_randn(dim, n_tgt, dtype=dtype, device=device).T  # non-contiguous
        weight64 = testing.representable_randn(dim, dim, dtype=dtype, scale=1 / dim, device=device)
        if n_tgt > 64:  # streaming: the GPU rounds src @ weight to dtype, keep it exact (a signed permutation / 2)
            signs = torch.randint(0, 2, (dim, 1), dtype=torch.float64, device=device) * 2 - 1
            weight64 = torch.eye(dim, dtype=torch.float64, device=device)[torch.randperm(dim, device=device)] * signs / 2
        top_t = max(1, round(0.9 * n_tgt))
        functions = (
            ("scores", lambda s, t, w, b: wk.topt_scores(s, t, w, top_t, backend=b), wk.reference.topt_scores, ()),
            ("attention", lambda s, t, w, b: wk.topt_attention(s, t, w, top_t, float(top_t), backend=b),
             wk.reference.topt_attention, (float(top_t),)),
        )
        for name, fast, oracle, extra in functions:
            def run(fn, dt):
                leaves = [x.detach().to(dt).requires_grad_() for x in (src64, tgt64, weight64)]
                out = fn(*leaves)
                out.backward(grad64.to(dt))
                return [out] + [x.grad for x in leaves]

            got = run(lambda s, t, w: fast(s, t, w, backend), dtype)
            same = run(lambda s, t, w: oracle(s, t, w, top_t, *extra), dtype)
            ref64 = run(lambda s, t, w: oracle(s, t, w, top_t, *extra), torch.float64)
            for label, kind, a, b, c in zip(("", " d src", " d tgt", " d weight"), ("output", "grad", "grad", "grad"),
                                            got, same, ref64):
                results.append((f"{name}{n_tgt}{label}", kind, a, b, c))
    return results


def _topk_similarity_case(backend: str, device: torch.device, dtype: torch.dtype, quick: bool) -> List[Result]:
    # Values against the oracle, and the float64 similarities at the returned indices (is
    # what was picked really among the k largest?). The bank spans several CPU tiles.
    n_query, n_bank, dim, k = (5, 67, 33, 7) if quick else (33, 1027, 257, 29)
    query64 = torch.randn(dim, n_query, dtype=torch.float64, device=device).T  # transposed
    bank64 = torch.randn(n_bank, 2 * dim, dtype=torch.float64, device=device)[:, ::2]  # sliced
    weight64 = torch.randn(dim, dim, dtype=torch.float64, device=device) / dim**0.5
    sim64 = query64 @ weight64 @ bank64.T

    def run(fn, dt):
        with torch.no_grad():
            return fn(query64.to(dt), bank64.to(dt), k, weight64.to(dt))

    values, indices = run(lambda q, b, kk, w: wk.topk_similarity(q, b, kk, w, backend=backend), dtype)
    same_values, same_indices = run(wk.reference.topk_similarity, dtype)
    ref_values, _ = run(wk.reference.topk_similarity, torch.float64)
    return [
        ("values", "output", values, same_values, ref_values),
        ("picked sims", "output", sim64.gather(1, indices).to(dtype), sim64.gather(1, same_indices).to(dtype),
         ref_values),
    ]


def _residual_conv2plus1d_case(backend: str, device: torch.device, dtype: torch.dtype, quick: bool) -> List[Result]:
    # A channels_last_3d input sliced along T, odd sizes; frozen then trainable spatial weights;
    # in full, also frozen 3x3 stride-1 convs of 128 and 160 channels (the CPU backend's Winograd
    # paths: the fused kernel, and transforms around a batched GEMM).
    # Relu only from float32 up: in half precision the rounding of z flips the sign of
    # pre-activations near zero differently in each implementation, and a flipped mask entry
    # moves a gradient by a whole grad_y entry (the tests check that path with a shared mask).
    activation = "relu" if dtype in (torch.float32, torch.float64) else None
    results: List[Result] = []
    configs = (((2, 5, 3, 7, 5), 17, 3, 3, 2, 1, False), ((1, 4, 5, 6, 9), 8, 1, 5, 1, 0, True)) if quick else (
        ((2, 16, 6, 13, 11), 33, 3, 3, 2, 1, False), ((2, 3, 5, 23, 21), 64, 7, 3, 2, 3, True),
        ((1, 128, 3, 5, 4), 128, 3, 3, 1, 1, False), ((1, 160, 2, 5, 4), 160, 3, 3, 1, 1, False))
    for (n, cin, t, h, w), c, k, kt, stride, padding, train_spatial in configs:
        def rand(*shape, scale=1.0):  # representable in dtype, so both references see the same inputs
            return testing.representable_randn(*shape, dtype=dtype, scale=scale, device=device)

        x64 = rand(n, cin, t + 1, h, w).contiguous(memory_format=torch.channels_last_3d)
        params64 = [rand(c, cin, k, k, scale=(cin * k * k) ** -0.5), rand(c, c, kt, scale=(c * kt) ** -0.5),
                    rand(c), rand(c)]
        grad64 = rand(n, c, t, (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1)

        def run(fn, dt):
            x = x64.to(dt)[:, :, 1:].detach().requires_grad_()
            params = [p.to(dt).detach().requires_grad_(train_spatial or i in (1, 3)) for i, p in enumerate(params64)]
            y = fn(x, *params, stride, padding, activation)
            y.backward(grad64.to(dt))
            return [y, x.grad] + [p.grad for p in params if p.requires_grad]

        got = run(lambda *a: wk.residual_conv2plus1d(*a, backend=backend), dtype)
        same = run(wk.reference.residual_conv2plus1d, dtype)
        ref64 = run(wk.reference.residual_conv2plus1d, torch.float64)
        labels = ["y", "d x"] + (["d w_s", "d w_t", "d b_s", "d b_t"] if train_spatial else ["d w_t", "d b_t"])
        for label, a, b, r in zip(labels, got, same, ref64):
            results.append((f"c{c} {k}x{k} {label}", "output" if label == "y" else "grad", a, b, r))
    return results


CASES: Dict[str, Case] = {
    "grad_reverse": _grad_reverse_case,
    "topt_attention": _topt_attention_case,
    "topk_similarity": _topk_similarity_case,
    "residual_conv2plus1d": _residual_conv2plus1d_case,
}


def run_checks(quick: bool = False) -> List[dict]:
    """One row per (op, backend, device, dtype, label): error, bound, ok."""
    rows = []
    for spec in wk._SPECS:
        case = CASES[spec.name]
        for device in _dispatch.machine_devices():
            for dtype in testing.DTYPES:
                for backend in _dispatch.serving_backends(spec, device, dtype):
                    if backend == "reference":
                        continue
                    torch.manual_seed(len(rows))
                    try:
                        results = case(backend, device, dtype, quick)
                    except Exception as err:  # a crash is a failure, reported like one
                        rows.append(dict(op=spec.name, backend=backend, device=device.type, dtype=dtype,
                                         what=f"raised {type(err).__name__}: {err}", error=float("inf"),
                                         bound=0.0, ok=False))
                        continue
                    for label, kind, actual, same, ref64 in results:
                        cmp = testing.compare(actual, same, ref64, kind)
                        rows.append(dict(op=spec.name, backend=backend, device=device.type, dtype=dtype,
                                         what=label, error=cmp.error, bound=cmp.bound, ok=cmp.ok))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m webda_kernels.check", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only (used by the tests)")
    args = parser.parse_args(argv)
    rows = run_checks(args.quick)
    header = f"{'op':<20} {'backend':<8} {'device':<6} {'dtype':<9} {'check':<14} {'max rel err':>11} {'bound':>9}  result"
    print(header)
    print("-" * len(header))
    for r in rows:
        dtype = str(r["dtype"]).replace("torch.", "")
        print(f"{r['op']:<20} {r['backend']:<8} {r['device']:<6} {dtype:<9} {r['what']:<14} "
              f"{r['error']:>11.2e} {r['bound']:>9.1e}  {'pass' if r['ok'] else 'FAIL'}")
    failed = sum(not r["ok"] for r in rows)
    print(f"\n{len(rows) - failed} passed, {failed} failed")
    return 1 if failed or not rows else 0


if __name__ == "__main__":
    sys.exit(main())
