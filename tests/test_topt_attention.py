"""Top-T attention: every backend against the float64 reference (outputs and the three
gradients), odd sizes, ties, layouts, dtypes, NaN, opcheck / compile / export, bad input, module."""

import importlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import webda_kernels as wk
import webda_kernels.nn as wnn
from webda_kernels import _dispatch, _extension
from webda_kernels.topt_attention import FUSED_MAX_ROWS, SPEC
from webda_kernels.testing import DTYPES, GPU, assert_matches_reference, backend_params, representable_randn

INTERPRETED = _dispatch.triton_interpreted()


def _cases():
    return backend_params(SPEC, DTYPES)


def _sizes(backend, device):
    """(Ns, Nt, D): the fused one-program sizes and past them; large ones where it is fast enough."""
    sizes = [(1, 1, 1), (3, 3, 3), (33, 33, 64), (64, 64, 3), (5, 3, 257), (3, 127, 33)]
    if device == "cuda" or backend in ("reference", "cpu"):
        sizes += [(127, 33, 257), (33, 1000, 64), (1000, 127, 3)]
    return sizes


def _function(name, backend, temperature):
    if name == "scores":
        return (lambda s, t, w, k: wk.topt_scores(s, t, w, k, backend=backend),
                lambda s, t, w, k: wk.reference.topt_scores(s, t, w, k))
    return (lambda s, t, w, k: wk.topt_attention(s, t, w, k, temperature, backend=backend),
            lambda s, t, w, k: wk.reference.topt_attention(s, t, w, k, temperature))


def _cast(x, dtype):
    """``x`` in ``dtype`` with ``x``'s strides (transposed, sliced and expanded layouts stay so)."""
    base = x[tuple(slice(0, 1) if x.stride(d) == 0 else slice(None) for d in range(x.dim()))]
    return torch.empty_strided(base.shape, base.stride(), dtype=dtype, device=x.device).copy_(base).expand(x.shape)


def _run(fn, inputs, top_t, dtype, grad):
    """[out, d src, d tgt, d weight] of ``fn`` on ``inputs`` cast to ``dtype``."""
    leaves = [_cast(x.detach(), dtype).requires_grad_() for x in inputs]
    out = fn(*leaves, top_t)
    out.backward(grad.to(dtype))
    return [out.detach()] + [x.grad for x in leaves]


def _weight(backend, dtype, n_tgt, dim, device):
    """A float64 (dim, dim) weight. Where the GPU streaming path rounds src @ weight to a half
    dtype before selecting (as the reference does), any weight lets a near-tie flip the
    selection with some probability, in either implementation, and a single comparison then
    fails by chance; there a signed permutation scaled by 1/2 keeps src @ weight exact, so
    the selection is the float64 one. Elsewhere a random weight."""
    if backend in ("triton", "cuda") and dtype.itemsize == 2 and n_tgt > FUSED_MAX_ROWS:
        signs = torch.randint(0, 2, (dim, 1), dtype=torch.float64) * 2 - 1
        return (torch.eye(dim, dtype=torch.float64)[torch.randperm(dim)] * signs / 2).to(device)
    return torch.randn(dim, dim, dtype=torch.float64, device=device) / dim


# Similarities closer than this (relative to the row's largest) are a near-tie: an implementation
# that ranks in float32 may order them either way, and a different selection is not an error.
NEAR_TIE = 1e-5


def _near_tie(inputs, top_ts, dtype) -> bool:
    """Whether some row's T-th and (T+1)-th similarities, for a T in ``top_ts``, are a near-tie
    once the inputs are rounded to ``dtype`` (as the comparisons see them)."""
    src, tgt, weight = (_cast(_cast(x, dtype), torch.float64) for x in inputs)
    sim = src @ weight @ tgt.T
    ranked = sim.sort(dim=1, descending=True).values
    scale = sim.abs().amax(dim=1)
    return any(bool(((ranked[:, t - 1] - ranked[:, t]) <= NEAR_TIE * scale).any()) for t in top_ts if t < sim.shape[1])


def _inputs(n_src, n_tgt, dim, device, backend="reference", dtype=torch.float64, top_ts=()):
    """float64 src, tgt, weight whose similarities are O(1); redrawn while a row has a near-tie
    at a T of ``top_ts`` (exact ties are tested on their own)."""
    g = lambda *shape: torch.randn(*shape, dtype=torch.float64, device=device)  # noqa: E731
    for _ in range(100):
        inputs = g(n_src, dim), g(n_tgt, dim), _weight(backend, dtype, n_tgt, dim, device)
        if not _near_tie(inputs, top_ts, dtype):
            return inputs
    raise AssertionError(f"no inputs without a near-tie in 100 draws ({n_src}x{n_tgt}x{dim}, T in {top_ts})")


def _run_sources_reversed(fn, inputs, top_t, dtype, grad):
    """:func:`_run` with the source rows in reverse order, results put back in the inputs' order:
    the same answer summed over the sources in another order."""
    src, tgt, weight = inputs
    out, d_src, d_tgt, d_weight = _run(fn, (src.flip(0), tgt, weight), top_t, dtype, grad.flip(0))
    return [out.flip(0), d_src.flip(0), d_tgt, d_weight]


def _assert_all_match(fast, oracle, inputs, top_t, dtype, what):
    # All runs see the same (dtype-rounded) inputs: the float64 one ranks what the others rank.
    inputs = [_cast(_cast(x, dtype), torch.float64) for x in inputs]
    grad = representable_randn(inputs[0].shape[0], dtype=dtype, device=inputs[0].device)
    got = _run(fast, inputs, top_t, dtype, grad)
    # The reference's own error from two summation orders: d tgt and d weight sum over the
    # sources, and under the softmax's cancellation one order's error alone can be a lucky draw.
    same = zip(_run(oracle, inputs, top_t, dtype, grad), _run_sources_reversed(oracle, inputs, top_t, dtype, grad))
    ref64 = _run(oracle, inputs, top_t, torch.float64, grad)
    for label, kind, a, b, c in zip(("out", "d src", "d tgt", "d weight"), ("output", "grad", "grad", "grad"),
                                    got, same, ref64):
        assert a.dtype == dtype and a.shape == c.shape, f"{what} {label}"
        assert_matches_reference(a, b, c, kind, what=f"{what} {label}")


@pytest.mark.parametrize("name", ["scores", "attention"])
@pytest.mark.parametrize("backend,device,dtype", list(_cases()))
def test_topt_matches_reference_on_odd_sizes(backend, device, dtype, name):
    for n_src, n_tgt, dim in _sizes(backend, device):
        top_ts = sorted({1, max(1, round(0.9 * n_tgt)), n_tgt})
        inputs = _inputs(n_src, n_tgt, dim, device, backend, dtype, top_ts)
        for top_t in top_ts:
            # A temperature of the scores' scale keeps the softmax (and the check) well conditioned.
            fast, oracle = _function(name, backend, temperature=float(top_t))
            _assert_all_match(fast, oracle, inputs, top_t, dtype, f"{name} {n_src}x{n_tgt}x{dim} T={top_t}")


@pytest.mark.parametrize("backend,device,dtype", list(_cases()))
def test_topt_attention_sums_to_one_at_the_paper_shape(backend, device, dtype):
    dim = 64 if backend == "triton" and INTERPRETED else 512  # the interpreter is slow
    src, tgt, weight = (x.to(dtype) for x in _inputs(32, 32, dim, device))
    alpha = wk.topt_attention(src, tgt, weight, 29, 2.0, backend=backend)
    assert alpha.shape == (32,) and alpha.dtype == dtype
    assert alpha.double().sum().item() == pytest.approx(1.0, abs=1e-2 if dtype.itemsize == 2 else 1e-6)


@pytest.mark.parametrize("backend,device,dtype", list(_cases()))
def test_topt_non_contiguous_inputs(backend, device, dtype):
    n_src, dim = 7, 9
    g = lambda *shape: torch.randn(*shape, dtype=torch.float64, device=device)  # noqa: E731
    for n_tgt in (5, 80):  # one program, and past it
        weight = _weight(backend, dtype, n_tgt, dim, device)
        padded = torch.zeros(dim + 1, dim + 2, dtype=torch.float64, device=device)
        padded[1:, 1:-1] = weight
        layouts = {
            "transposed": (g(dim, n_src).T, g(dim, n_tgt).T, weight.T.contiguous().T),
            "sliced": (g(2 * n_src, dim + 3)[::2, 2:-1], g(n_tgt, 3 * dim)[:, ::3], padded[1:, 1:-1]),
            "expanded": ((g(n_src, 1) / dim).expand(n_src, dim), g(n_tgt, dim), weight[:, :1].expand(dim, dim)),
        }
        for layout, inputs in layouts.items():
            assert not any(x.is_contiguous() for x in (inputs[0], inputs[2]))
            for name in ("scores", "attention"):
                fast, oracle = _function(name, backend, temperature=3.0)
                _assert_all_match(fast, oracle, inputs, 3, dtype, f"{name} {layout} Nt={n_tgt}")


@pytest.mark.parametrize("backend,device,dtype", list(backend_params(SPEC, [torch.float16])))
def test_topt_target_elements_more_than_2_31_apart(backend, device, dtype):
    """Target views whose element offsets (index x stride) pass 2^31: the kernels index in 64 bits."""
    dim, stride = 3, 2**30
    for n_tgt in (7, 70):  # one program, and past it
        storage = torch.empty(stride * (dim - 1) + n_tgt, dtype=dtype, device=device)  # 4 GiB, barely touched
        tgt = storage.as_strided((n_tgt, dim), (1, stride))
        gen = torch.Generator().manual_seed(n_tgt)
        tgt.copy_(torch.randint(-2, 3, (n_tgt, dim), generator=gen).to(dtype))
        src = torch.randint(-2, 3, (4, dim), generator=gen).to(device, dtype)
        weight = torch.eye(dim, dtype=dtype, device=device)
        got = wk.topt_scores(src, tgt, weight, 3, backend=backend)
        assert torch.equal(got.double(), wk.reference.topt_scores(src.double(), tgt.double(), weight.double(), 3))


def _stable_oracle(src, tgt, weight, top_t):
    """Scores whose selection breaks ties by the lower target index (a stable sort)."""
    values, _ = wk.reference.topk_similarity(src, tgt, top_t, weight)
    return values.sum(dim=1)


# The fast backends route tied gradients to the lower target index; the reference backend is
# plain torch.topk, whose choice among ties the contract leaves to torch.
@pytest.mark.parametrize("backend,device,dtype", [p for p in _cases() if p.values[0] != "reference"])
def test_topt_exact_ties_go_to_the_lower_index(backend, device, dtype):
    # Small integers: every similarity is an exact integer in every dtype, with many ties, and
    # duplicated target rows (one of them an expanded, stride-0 view) make the choice visible
    # in the target gradient.
    gen = torch.Generator().manual_seed(3)
    for n_src, n_tgt, dim in ((4, 6, 3), (9, 70, 5)):
        src = torch.randint(-2, 3, (n_src, dim), generator=gen).double()
        rows = torch.randint(-1, 2, (n_tgt // 2, dim), generator=gen).double()
        tgt = torch.cat([rows, rows, rows[:1].expand(n_tgt - 2 * (n_tgt // 2), dim)])
        weight = torch.randint(-1, 2, (dim, dim), generator=gen).double()
        grad = torch.arange(1, n_src + 1, dtype=torch.float64, device=device)
        for top_t in (1, 2, n_tgt // 2, n_tgt):
            inputs = [x.to(device) for x in (src, tgt, weight)]
            got = _run(lambda s, t, w, k: wk.topt_scores(s, t, w, k, backend=backend), inputs, top_t, dtype, grad)
            want = _run(_stable_oracle, inputs, top_t, torch.float64, grad)
            for label, a, b in zip(("out", "d src", "d tgt", "d weight"), got, want):
                # Integer arithmetic is exact in float32; the one rounding is the final cast to dtype.
                torch.testing.assert_close(a, b.to(dtype), rtol=0, atol=0, msg=f"{n_tgt} T={top_t} {label}")


@pytest.mark.parametrize("backend,device,dtype", list(_cases()))
def test_topt_nan_ranks_highest_like_the_reference(backend, device, dtype):
    for n_tgt in (6, 80):
        src, tgt, weight = (x.to(dtype) for x in _inputs(4, n_tgt, 5, device))
        src[1, 2] = float("nan")
        tgt[3, 0] = float("nan")
        got = wk.topt_scores(src, tgt, weight, 2, backend=backend)
        want = wk.reference.topt_scores(src.double(), tgt.double(), weight.double(), 2)
        assert torch.equal(got.isnan(), want.isnan()) and got.isnan().all()  # every row sees the NaN column
        alpha = wk.topt_attention(src, tgt, weight, 2, backend=backend)
        assert alpha.isnan().all()


@pytest.mark.parametrize("backend", ["reference"] + (["cpu"] if "cpu" in SPEC.dtypes else []))
@pytest.mark.parametrize("n_tgt", [5, 70])
def test_topt_gradcheck_float64(backend, n_tgt):
    src, tgt, weight = (x.requires_grad_() for x in _inputs(4, n_tgt, 3, "cpu"))
    assert torch.autograd.gradcheck(lambda s, t, w: wk.topt_scores(s, t, w, 3, backend=backend), (src, tgt, weight))
    assert torch.autograd.gradcheck(lambda s, t, w: wk.topt_attention(s, t, w, 3, 0.7, backend=backend),
                                    (src, tgt, weight))


_KERNEL_FLOAT32 = [p for p in backend_params(SPEC, [torch.float32]) if p.values[0] != "reference"]


@pytest.mark.parametrize("backend,device,dtype", [p for p in _KERNEL_FLOAT32 if p.values[0] == "cpu"])
def test_topt_gradients_that_cancel(backend, device, dtype):
    """Under the softmax the gradient of the scores sums to zero, so d weight and d tgt are sums
    whose terms cancel, most with one feature: the backward sums them as the reference does.
    (The cpu forward rounds as the reference does; a forward that rounds otherwise, as Triton's
    exp does, sees its last-bit differences amplified by the cancellation, in either direction.)"""
    for n_src, n_tgt, dim, top_t in ((32, 61, 1, 30), (17, 64, 1, 19), (9, 40, 5, 3)) * 8:
        inputs = _inputs(n_src, n_tgt, dim, device, backend, dtype, [top_t])
        fast, oracle = _function("attention", backend, 4.0 * top_t)
        _assert_all_match(fast, oracle, inputs, top_t, dtype, f"{n_src}x{n_tgt}x{dim} T={top_t}")


@pytest.mark.parametrize("backend,device,dtype", _KERNEL_FLOAT32)
@pytest.mark.parametrize("block", [1, 7])
def test_topt_backward_in_blocks_of_source_rows(backend, device, dtype, block, monkeypatch):
    """Large problems: the backward holds d e for a few source rows at a time (one, a few). On
    the scores, whose gradients do not cancel, the blocked sums keep the rule."""
    monkeypatch.setattr(importlib.import_module("webda_kernels.topt_attention"), "BACKWARD_BLOCK", block)
    for n_src, n_tgt, dim, top_t in ((1, 1, 1, 1), (6, 9, 4, 2), (13, 40, 5, 31)):
        inputs = _inputs(n_src, n_tgt, dim, device, backend, dtype, [top_t])
        fast, oracle = _function("scores", backend, 1.0)
        _assert_all_match(fast, oracle, inputs, top_t, dtype, f"block {block} {n_src}x{n_tgt}x{dim} T={top_t}")


def test_topt_gradients_only_for_inputs_that_require_them():
    src, tgt, weight = _inputs(5, 7, 4, "cpu")
    tgt.requires_grad_()
    wk.topt_attention(src, tgt, weight, 3).sum().backward()
    assert tgt.grad is not None and src.grad is None and weight.grad is None
    with torch.no_grad():
        assert wk.topt_scores(src, tgt, weight, 3).grad_fn is None


@pytest.mark.parametrize("backend,device,dtype", list(backend_params(SPEC, [torch.float32, torch.float64])))
@given(
    n_src=st.integers(1, 40), n_tgt=st.integers(1, 90), dim=st.integers(1, 20),
    fraction=st.floats(0.0, 1.0), temperature=st.floats(0.5, 10.0),
)
@settings(max_examples=25, deadline=None)
def test_topt_shape_fuzz_against_the_reference(backend, device, dtype, n_src, n_tgt, dim, fraction, temperature):
    if backend == "triton" and device == "cpu" and n_src * n_tgt * dim > 4000:
        return  # the interpreter is slow
    top_t = max(1, round(fraction * n_tgt))
    inputs = _inputs(n_src, n_tgt, dim, device, backend, dtype, [top_t])
    for name in ("scores", "attention"):
        fast, oracle = _function(name, backend, temperature * top_t)
        _assert_all_match(fast, oracle, inputs, top_t, dtype, f"{name} {n_src}x{n_tgt}x{dim} T={top_t}")


def _one_dtype_each():
    """(backend, device, dtype) per backend and device: float64 where the backend takes it, else float32."""
    cases = {}
    for p in backend_params(SPEC, [torch.float64, torch.float32]):
        cases.setdefault(p.values[:2], p)
    return list(cases.values())


@pytest.mark.parametrize("backend,device,dtype", _one_dtype_each())
@pytest.mark.parametrize("softmax", [False, True])
def test_topt_opcheck(backend, device, dtype, softmax):
    for n_tgt in (6, 70):
        src, tgt, weight = (x.to(dtype).requires_grad_() for x in _inputs(5, n_tgt, 4, device))
        torch.library.opcheck(torch.ops.webda.topt_attention.default, (src, tgt.T.contiguous().T, weight, 3, 0.5,
                                                                       softmax, backend))


@pytest.mark.parametrize("backend,device,compiler",
                         [(*p.values[:2], "aot_eager") for p in backend_params(SPEC, [torch.float32])]
                         + [("auto", "cpu", "inductor")])
def test_topt_compiles_fullgraph(backend, device, compiler):
    def f(src, tgt, weight):
        return (wk.topt_attention(src, tgt, weight, 4, 0.5, backend=backend) * src.sum(1)).sum() \
            + wk.topt_scores(src, tgt, weight, 2, backend=backend).sum()

    src, tgt, weight = (x.float().requires_grad_() for x in _inputs(6, 9, 5, device))
    compiled = torch.compile(f, fullgraph=True, backend=compiler)
    compiled(src, tgt, weight).backward()
    got = [x.grad.clone() for x in (src, tgt, weight)]
    for x in (src, tgt, weight):
        x.grad = None
    f(src, tgt, weight).backward()
    for a, x in zip(got, (src, tgt, weight)):
        torch.testing.assert_close(a, x.grad)


def test_topt_exports():
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encode = torch.nn.Linear(6, 4)
            self.attend = wnn.TopTAttention(4, 0.9, temperature=0.5)

        def forward(self, web, target):
            return self.attend(self.encode(web), self.encode(target))

    model = Model()
    web, target = torch.randn(7, 6), torch.randn(10, 6)
    exported = torch.export.export(model, (web, target))
    torch.testing.assert_close(exported.module()(web, target), model(web, target))


def _bad(**overrides):
    args = dict(src=torch.randn(4, 3), tgt=torch.randn(5, 3), weight=torch.randn(3, 3), top_t=2)
    args.update(overrides)
    return args


@pytest.mark.parametrize(
    "args,error,match",
    [
        (_bad(src=torch.randn(4)), ValueError, "src must be 2-D"),
        (_bad(tgt=torch.randn(1, 5, 3)), ValueError, "tgt must be 2-D"),
        (_bad(src=[[1.0, 2.0, 3.0]]), TypeError, "src must be a torch.Tensor"),
        (_bad(tgt=torch.randn(5, 4)), ValueError, "tgt has 4 features"),
        (_bad(weight=torch.randn(3, 4)), ValueError, r"weight must be \(3, 3\)"),
        (_bad(weight=torch.randn(9)), ValueError, "weight must be 2-D"),
        (_bad(top_t=0), ValueError, "top_t must be in"),
        (_bad(top_t=6), ValueError, "top_t must be in"),
        (_bad(top_t=2.0), TypeError, "top_t must be an int"),
        (_bad(top_t=True), TypeError, "top_t must be an int"),
        (_bad(tgt=torch.randn(0, 3)), ValueError, "tgt is empty"),
        (_bad(tgt=torch.randn(5, 3, dtype=torch.float64)), TypeError, "tgt has dtype"),
        (_bad(weight=torch.randn(3, 3, device="meta")), ValueError, "weight is on meta"),
        (_bad(src=torch.ones(4, 3, dtype=torch.int64)), TypeError, "src must be float16"),
        (_bad(weight=torch.ones(3, 3, dtype=torch.int32)), TypeError, "weight must be float16"),
    ],
)
def test_topt_bad_input(args, error, match):
    with pytest.raises(error, match=match):
        wk.topt_scores(**args)
    with pytest.raises(error, match=match):
        wk.topt_attention(**args)


@pytest.mark.parametrize("temperature,error", [(0.0, ValueError), (-1.0, ValueError), (float("inf"), ValueError),
                                               (float("nan"), ValueError), ("1", TypeError)])
def test_topt_bad_temperature(temperature, error):
    with pytest.raises(error, match="temperature"):
        wk.topt_attention(**_bad(), temperature=temperature)


def test_topt_bad_backend():
    with pytest.raises(ValueError, match="not one of"):
        wk.topt_scores(**_bad(), backend="fast")
    if not GPU:
        with pytest.raises(ValueError, match="backends that can"):
            wk.topt_scores(**_bad(), backend="cuda")
    as_double = {name: x.double() for name, x in _bad().items() if isinstance(x, torch.Tensor)}
    with pytest.raises(ValueError, match="backends that can"):  # no Triton kernel takes float64
        wk.topt_scores(**_bad(**as_double), backend="triton")


def test_topt_empty_source_batch():
    src = torch.randn(0, 3, requires_grad=True)
    tgt = torch.randn(4, 3, requires_grad=True)
    out = wk.topt_attention(src, tgt, torch.eye(3), 2)
    assert out.shape == (0,)
    out.sum().backward()
    assert torch.equal(tgt.grad, torch.zeros(4, 3))


def test_topt_module_fraction_rule_identity_init_and_gradients():
    layer = wnn.TopTAttention(8, 0.9, temperature=0.5)
    assert torch.equal(layer.weight, torch.eye(8)) and layer.weight.requires_grad
    assert [layer.top_t_for(n) for n in (1, 2, 10, 32, 33)] == [1, 2, 9, 29, 30]
    assert repr(layer) == "TopTAttention(dim=8, top_t=0.9, temperature=0.5)"
    src, tgt = torch.randn(6, 8), torch.randn(32, 8)
    alpha = layer(src, tgt)
    torch.testing.assert_close(alpha, wk.reference.topt_attention(src, tgt, torch.eye(8), 29, 0.5))
    (alpha * torch.arange(6.0)).sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    assert wnn.TopTAttention(8, 3).top_t_for(32) == 3
    half = wnn.TopTAttention(8, 1.0)  # float32 W, bfloat16 inputs: W is cast, its gradient stays float32
    half(src.bfloat16(), tgt.bfloat16()).max().backward()
    assert half.weight.grad.dtype == torch.float32


@pytest.mark.parametrize(
    "kwargs,error",
    [(dict(dim=0, top_t=1), ValueError), (dict(dim=4, top_t=0), ValueError), (dict(dim=4, top_t=1.5), ValueError),
     (dict(dim=4, top_t=0.0), ValueError), (dict(dim=4, top_t="all"), TypeError),
     (dict(dim=4, top_t=2, temperature=0.0), ValueError)],
)
def test_topt_module_bad_arguments(kwargs, error):
    with pytest.raises(error):
        wnn.TopTAttention(**kwargs)
    layer = wnn.TopTAttention(4, 5)
    with pytest.raises(ValueError, match="top_t must be in"):
        layer(torch.randn(2, 4), torch.randn(3, 4))


@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_topt_fused_kernel_gets_the_projection_not_the_weight(backend, monkeypatch):
    """The one-program path's work is Ns x Nt x D: ``src @ weight`` (Ns x D x D) is a matmul before
    it (projected in one program, D = 2048 would be 268M multiply-adds on one SM)."""
    topt = importlib.import_module("webda_kernels.topt_attention")
    src, tgt, weight = (torch.randn(*shape) for shape in ((8, 48), (9, 48), (48, 48)))
    launched = []
    if backend == "triton":
        if "triton" not in _dispatch.serving_backends(SPEC, torch.device("cpu"), torch.float32):
            pytest.skip("runs the Triton kernel under the interpreter")
        kernels = importlib.import_module("webda_kernels.triton.topt_attention")
        real = kernels._topt_fused_kernel

        class Spy:
            def __getitem__(self, grid):
                return lambda *args, **kwargs: launched.append(args) or real[grid](*args, **kwargs)

        monkeypatch.setattr(kernels, "_topt_fused_kernel", Spy())
        out, _, projected = topt._forward_triton(src, tgt, weight, 3, 1.0, True)
        torch.testing.assert_close(out, wk.reference.topt_attention(src, tgt, weight, 3))
        (args,) = launched
        assert args[0] is projected
    else:
        class Module:  # records the call in place of the CUDA module
            def topt_attention_fused(self, *args):
                launched.append(args)

        monkeypatch.setitem(_extension._MODULES, "cuda", Module())
        monkeypatch.setattr(_extension, "cuda_stream", lambda t: 0)
        _, _, projected = topt._forward_cuda(src, tgt, weight, 3, 1.0, True)
        (args,) = launched
        assert args[0] == projected.data_ptr() and weight.data_ptr() not in args
    torch.testing.assert_close(projected, src @ weight)
    assert not any(isinstance(a, torch.Tensor) and a.shape == weight.shape for a in args)
