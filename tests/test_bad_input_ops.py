"""Bad input to the ops and modules (issue 17): a clean TypeError/ValueError naming the argument,
or a documented answer, never a crash or a silent wrong answer.

Three parts: REFUSED, a table of calls and the exception each must raise (type and a word of
its message); ACCEPTED, inputs that look odd but have a documented meaning, each checked
against that meaning; and a hypothesis fuzz of the ops' arguments (shapes, strides, dtypes,
k / top_t / temperature / coeff / stride values), which asserts "a clean error, or agreement
with the float64 reference" under the numerics rule of :mod:`webda_kernels.testing`.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st

import webda_kernels as wk
import webda_kernels.nn as wnn
from webda_kernels import _dispatch
from webda_kernels.testing import DTYPES, compare
from webda_kernels.topt_attention import SPEC as TOPT_SPEC

NAN, INF = float("nan"), float("inf")


def _topt(**overrides):
    """Arguments of a small valid topt call, with ``overrides``."""
    args = dict(src=torch.randn(4, 3), tgt=torch.randn(5, 3), weight=torch.randn(3, 3), top_t=2)
    return {**args, **overrides}


def _topk(**overrides):
    return {**dict(query=torch.randn(4, 3), bank=torch.randn(6, 3), k=2), **overrides}


def _conv(**overrides):
    args = dict(x=torch.randn(1, 2, 3, 5, 5), spatial_weight=torch.randn(3, 2, 3, 3),
                temporal_weight=torch.randn(3, 3, 3))
    return {**args, **overrides}


def _compiled_grad_reverse(coeff, requires_grad):
    """grad_reverse compiled with inductor, run (and differentiated) with a tensor ``coeff``."""
    compiled = torch.compile(lambda x, c: wk.grad_reverse(x, c).sum(), fullgraph=True, backend="inductor")
    x = torch.randn(3, requires_grad=requires_grad)
    out = compiled(x, coeff)
    if requires_grad:
        out.backward()


def _env_backend(monkeypatch, value):
    monkeypatch.setenv(_dispatch.ENV_BACKEND, value)
    return wk.topt_scores(**_topt())


# (id, call, exception type, a word its message must contain). ``call`` takes pytest's monkeypatch.
REFUSED = [
    ("topt temperature 1e-40 (below float32's normal range)",
     lambda mp: wk.topt_attention(**_topt(), temperature=1e-40), ValueError, "temperature"),
    ("topt temperature 1e39 (beyond float32)", lambda mp: wk.topt_attention(**_topt(), temperature=1e39),
     ValueError, "temperature"),
    ("topt temperature 1e-320 for float64", lambda mp: wk.topt_attention(
        **{k: v.double() if torch.is_tensor(v) else v for k, v in _topt().items()}, temperature=1e-320),
     ValueError, "temperature"),
    ("topt temperature nan", lambda mp: wk.topt_attention(**_topt(), temperature=NAN), ValueError, "temperature"),
    ("topt temperature -inf", lambda mp: wk.topt_attention(**_topt(), temperature=-INF), ValueError, "temperature"),
    ("topt temperature 0", lambda mp: wk.topt_attention(**_topt(), temperature=0), ValueError, "temperature"),
    ("topt temperature 10**400", lambda mp: wk.topt_attention(**_topt(), temperature=10 ** 400), ValueError,
     "finite"),
    ("topt temperature a string", lambda mp: wk.topt_attention(**_topt(), temperature="1"), TypeError,
     "temperature"),
    ("topt temperature a bool", lambda mp: wk.topt_attention(**_topt(), temperature=True), TypeError,
     "temperature"),
    ("topt temperature a tensor", lambda mp: wk.topt_attention(**_topt(), temperature=torch.tensor(1.0)),
     TypeError, "temperature"),
    ("topt top_t a float", lambda mp: wk.topt_scores(**_topt(top_t=2.0)), TypeError, "top_t"),
    ("topt top_t np.float64", lambda mp: wk.topt_scores(**_topt(top_t=np.float64(2))), TypeError, "top_t"),
    ("topt top_t np.bool_", lambda mp: wk.topt_scores(**_topt(top_t=np.bool_(True))), TypeError, "top_t"),
    ("topt top_t np.int64 0", lambda mp: wk.topt_scores(**_topt(top_t=np.int64(0))), ValueError, "top_t"),
    ("topt top_t beyond Nt", lambda mp: wk.topt_scores(**_topt(top_t=np.int32(6))), ValueError, "top_t"),
    ("topk k np.float32", lambda mp: wk.topk_similarity(**_topk(k=np.float32(2))), TypeError, "k must be an int"),
    ("topk k np.uint8 0", lambda mp: wk.topk_similarity(**_topk(k=np.uint8(0))), ValueError, "k must be in"),
    ("topk k 2**70", lambda mp: wk.topk_similarity(**_topk(k=2 ** 70)), ValueError, "k must be in"),
    ("conv stride np.float64", lambda mp: wk.residual_conv2plus1d(**_conv(), stride=np.float64(1)), TypeError,
     "stride"),
    ("conv padding np.int64 -1", lambda mp: wk.residual_conv2plus1d(**_conv(), padding=np.int64(-1)), ValueError,
     "padding"),
    ("grad_reverse coeff nan", lambda mp: wk.grad_reverse(torch.randn(3), NAN), ValueError, "coeff"),
    ("grad_reverse coeff np.float32 inf", lambda mp: wk.grad_reverse(torch.randn(3), np.float32("inf")),
     ValueError, "coeff"),
    ("grad_reverse coeff 10**400", lambda mp: wk.grad_reverse(torch.randn(3), 10 ** 400), ValueError, "coeff"),
    ("grad_reverse coeff 1e39 for float32 x (beyond float32)",
     lambda mp: wk.grad_reverse(torch.randn(3), torch.tensor(1e39, dtype=torch.float64)), ValueError, "coeff"),
    ("grad_reverse coeff tensor of 2", lambda mp: wk.grad_reverse(torch.randn(3), torch.ones(2)), TypeError,
     "coeff"),
    ("grad_reverse compiled, tensor coeff nan, with grad",
     lambda mp: _compiled_grad_reverse(torch.tensor(NAN), True), ValueError, "coeff must be finite"),
    ("grad_reverse compiled, tensor coeff -inf, no grad",
     lambda mp: _compiled_grad_reverse(torch.tensor(-INF), False), ValueError, "coeff must be finite"),
    ("WarmStartGradientReversal gamma -1000", lambda mp: wnn.WarmStartGradientReversal(gamma=-1000), ValueError,
     "gamma"),
    ("WarmStartGradientReversal gamma nan", lambda mp: wnn.WarmStartGradientReversal(gamma=NAN), ValueError,
     "gamma"),
    ("WarmStartGradientReversal lo 5 > hi -5", lambda mp: wnn.WarmStartGradientReversal(lo=5, hi=-5), ValueError,
     "lo must be <= hi"),
    ("WarmStartGradientReversal hi inf", lambda mp: wnn.WarmStartGradientReversal(hi=INF), ValueError, "hi"),
    ("WarmStartGradientReversal lo a string", lambda mp: wnn.WarmStartGradientReversal(lo="0"), TypeError, "lo"),
    ("WarmStartGradientReversal max_iters 0", lambda mp: wnn.WarmStartGradientReversal(max_iters=np.int64(0)),
     ValueError, "max_iters"),
    ("dann_coeff progress nan", lambda mp: wnn.dann_coeff(NAN), ValueError, "progress"),
    ("TopTAttention top_t np.float32 1.5", lambda mp: wnn.TopTAttention(4, np.float32(1.5)), ValueError, "top_t"),
    ("TopTAttention top_t a string", lambda mp: wnn.TopTAttention(4, "all"), TypeError, "top_t"),
    ("WEBDA_KERNELS_BACKEND=junk", lambda mp: _env_backend(mp, "junk"), ValueError, "WEBDA_KERNELS_BACKEND"),
    ("use_backend('junk')", lambda mp: wk.use_backend("junk").__enter__(), ValueError, "junk"),
]


@pytest.mark.parametrize("call,error,word", [pytest.param(c, e, w, id=i) for i, c, e, w in REFUSED])
def test_bad_input_is_refused(call, error, word, monkeypatch):
    with pytest.raises(error, match=word) as info:
        call(monkeypatch)
    assert info.type is error  # not a subclass standing in for it


def _argmax_weights(scores64: torch.Tensor) -> torch.Tensor:
    """The limit of softmax(scores / T) as T -> 0: 1 shared among the highest scores."""
    top = scores64 == scores64.max()
    return top.double() / top.sum()


def _accept_tiny_temperature():
    """A temperature far below the score gaps gives the arg-max (documented limit), on every backend."""
    src, tgt, weight = (torch.randint(-3, 4, shape).double() for shape in ((6, 5), (7, 5), (5, 5)))
    expected = _argmax_weights(wk.reference.topt_scores(src, tgt, weight, 3))
    for backend in _dispatch.machine_backends(TOPT_SPEC):  # scores / 1e-37 alone overflows float32
        got = wk.topt_attention(src.float(), tgt.float(), weight.float(), 3, 1e-37, backend=backend)
        assert torch.equal(got.double(), expected), backend


def _accept_float16_overflowing_similarities():
    """float16 features of magnitude ~40 (D = 64): similarities beyond float16's range. Every
    backend accumulates in float32, so all return the float64 answer, rounded."""
    gen = torch.Generator().manual_seed(0)
    src, tgt = (torch.randn(shape, generator=gen, dtype=torch.float64) * 40 for shape in ((5, 64), (7, 64)))
    weight = torch.randn(64, 64, generator=gen, dtype=torch.float64)
    src, tgt, weight = (t.half() for t in (src, tgt, weight))
    for temperature in (1.0, 1e-5, 1e5):
        ref64 = wk.reference.topt_attention(src.double(), tgt.double(), weight.double(), 3, temperature)
        for backend in ("auto", "reference", "cpu"):
            got = wk.topt_attention(src, tgt, weight, 3, temperature, backend=backend)
            assert torch.isfinite(got).all(), (backend, temperature)
            assert compare(got, got, ref64).ok, (backend, temperature)  # the float16 rounding floor alone


def _accept_numpy_integers():
    """NumPy integers for k / top_t / stride / padding mean what the same Python ints mean."""
    args = _topt()
    assert torch.equal(wk.topt_scores(**{**args, "top_t": np.int64(2)}), wk.topt_scores(**args))
    topk = _topk()
    for a, b in zip(wk.topk_similarity(**{**topk, "k": np.uint16(2)}), wk.topk_similarity(**topk)):
        assert torch.equal(a, b)
    conv = _conv()
    assert torch.equal(wk.residual_conv2plus1d(**conv, stride=(np.int8(1), 2), padding=np.int64(1)),
                       wk.residual_conv2plus1d(**conv, stride=(1, 2), padding=1))
    assert wnn.TopTAttention(4, np.int64(3)).top_t_for(10) == 3
    assert wnn.WarmStartGradientReversal(max_iters=np.int32(10)).max_iters == 10


def _accept_numpy_floats():
    """NumPy floats for coeff / temperature / the DANN schedule mean what Python floats mean."""
    x = torch.randn(3, requires_grad=True)
    wk.grad_reverse(x, np.float32(0.5)).sum().backward()
    assert torch.equal(x.grad, torch.full((3,), -0.5))
    x = torch.randn(3, dtype=torch.float64, requires_grad=True)  # float64 gradients hold a coeff of 1e39
    wk.grad_reverse(x, 1e39).sum().backward()
    assert torch.equal(x.grad, torch.full((3,), -1e39, dtype=torch.float64))
    args = _topt()
    assert torch.equal(wk.topt_attention(**args, temperature=np.float16(0.5)), wk.topt_attention(**args,
                                                                                                 temperature=0.5))
    assert wnn.dann_coeff(np.float64(0.5), gamma=np.float32(10)) == wnn.dann_coeff(0.5)


def _accept_environment_backend_under_auto(monkeypatch):
    """WEBDA_KERNELS_BACKEND=reference applies inside use_backend("auto") (what the trainer enters
    for --kernels auto), and an explicit block still wins over it."""
    from webda_kernels.topk_similarity import SPEC

    monkeypatch.setenv(_dispatch.ENV_BACKEND, "reference")
    big = dict(spec=SPEC, backend="auto", device=torch.device("cpu"), dtype=torch.float32)
    with wk.use_backend("auto"):
        assert _dispatch.resolve(**big) == "reference"
    if "cpu" in _dispatch.machine_backends(SPEC):
        with wk.use_backend("cpu"):
            assert _dispatch.resolve(**big) == "cpu"


ACCEPTED = [
    ("tiny temperature gives the arg-max", lambda mp: _accept_tiny_temperature()),
    ("float16 similarities beyond float16 agree", lambda mp: _accept_float16_overflowing_similarities()),
    ("numpy integers", lambda mp: _accept_numpy_integers()),
    ("numpy floats", lambda mp: _accept_numpy_floats()),
    ("WEBDA_KERNELS_BACKEND under use_backend('auto')", _accept_environment_backend_under_auto),
]


@pytest.mark.parametrize("check", [pytest.param(c, id=i) for i, c in ACCEPTED])
def test_odd_input_has_its_documented_meaning(check, monkeypatch):
    check(monkeypatch)


# ---- fuzz: a clean error, or the float64 reference's answer ----

_CLEAN = (TypeError, ValueError)
# Argument values: mostly valid ones (so most examples reach the comparison), then edges and junk.
_INTS = st.one_of(st.integers(1, 9), st.integers(-2, 12),
                  st.sampled_from([np.int64(2), np.int32(1), np.uint8(3), True, 2.0, np.float64(1), "2", None, 2 ** 70]))
_FLOATS = st.one_of(st.floats(1e-3, 1e3), st.sampled_from([1e-40, 1e-30, 1e-5, 1e5, 1e30, 1e39, 0, -1, np.float32(0.25),
                                                            True, "1", 10 ** 400, None]),
                    st.floats(allow_nan=True, allow_infinity=True))
_SIZES = st.integers(1, 9) | st.just(0)
_BACKENDS = ["auto", "reference", "cpu"]


def _tensor(draw, rows, dim, dtype, magnitude, gen):
    """A (rows, dim) tensor of small integers (exact in every dtype, exact products in float32)
    in a layout drawn from contiguous, transposed, sliced and row-broadcast."""
    layout = draw(st.sampled_from(["contiguous", "transposed", "sliced", "broadcast"]))
    base = torch.randint(-magnitude, magnitude + 1, (2 * rows + 1, dim + 1), generator=gen).to(dtype)
    if layout == "transposed":
        return base[:rows, :dim].t().contiguous().t()
    if layout == "sliced":
        return base[1::2, 1:][:rows]
    if layout == "broadcast" and rows:
        return base[:1, :dim].expand(rows, dim)
    return base[:rows, :dim].contiguous()


def _agrees(got: torch.Tensor, oracle, inputs, dtype, what: str) -> None:
    """``got`` (from ``inputs`` in ``dtype``) against ``oracle`` run in ``dtype`` and in float64:
    the numerics rule, and finite wherever the float64 answer rounded to ``dtype`` is."""
    ref64 = oracle(*[t.double() if torch.is_tensor(t) else t for t in inputs])
    same = oracle(*inputs)
    finite = torch.isfinite(ref64.to(dtype))
    assert torch.isfinite(got[finite]).all(), f"{what}: non-finite where the float64 answer is finite"
    result = compare(got, same, ref64)
    assert result.ok, f"{what}: error {result.error:.3e} > bound {result.bound:.3e}"


@given(data=st.data())
@settings(max_examples=300, deadline=None)
def test_fuzz_topt_arguments(data):
    draw = data.draw
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 16)))
    dtype = draw(st.sampled_from(DTYPES))
    n_src, n_tgt, dim = draw(_SIZES), draw(_SIZES), draw(_SIZES)
    magnitude = draw(st.sampled_from([1, 3, 40, 200]))
    src, tgt = _tensor(draw, n_src, dim, dtype, magnitude, gen), _tensor(draw, n_tgt, dim, dtype, magnitude, gen)
    weight = _tensor(draw, dim, dim, dtype, 2, gen)
    top_t, temperature = draw(_INTS), draw(_FLOATS)
    backend = draw(st.sampled_from(_BACKENDS))
    softmax = draw(st.booleans())
    what = f"{'attention' if softmax else 'scores'} {n_src}x{n_tgt}x{dim} {dtype} top_t={top_t!r} T={temperature!r}"
    try:
        if softmax:
            got = wk.topt_attention(src, tgt, weight, top_t, temperature, backend=backend)
        else:
            got = wk.topt_scores(src, tgt, weight, top_t, backend=backend)
    except _CLEAN as err:
        event(f"clean {type(err).__name__}")
        return
    event("agrees with the reference")
    assert got.dtype == dtype and got.shape == (n_src,), what
    k = int(top_t)
    if softmax:
        _agrees(got, lambda s, t, w: wk.reference.topt_attention(s, t, w, k, float(temperature)),
                (src, tgt, weight), dtype, what)
    else:
        _agrees(got, lambda s, t, w: wk.reference.topt_scores(s, t, w, k), (src, tgt, weight), dtype, what)


@given(data=st.data())
@settings(max_examples=150, deadline=None)
def test_fuzz_topk_arguments(data):
    draw = data.draw
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 16)))
    dtype = draw(st.sampled_from(DTYPES))
    n_query, n_bank, dim = draw(_SIZES), draw(_SIZES), draw(_SIZES)
    query, bank = _tensor(draw, n_query, dim, dtype, 3, gen), _tensor(draw, n_bank, dim, dtype, 3, gen)
    weight = draw(st.sampled_from([None, "square", "wrong"]))
    weight = None if weight is None else _tensor(draw, dim, dim if weight == "square" else dim + 1, dtype, 2, gen)
    k = draw(_INTS)
    try:
        values, indices = wk.topk_similarity(query, bank, k, weight, backend=draw(st.sampled_from(_BACKENDS)))
    except _CLEAN as err:
        event(f"clean {type(err).__name__}")
        return
    event("agrees with the reference")
    what = f"topk {n_query}x{n_bank}x{dim} {dtype} k={k!r}"
    assert values.dtype == dtype and indices.dtype == torch.int64 and values.shape == (n_query, int(k)), what
    _agrees(values, lambda q, b, w: wk.reference.topk_similarity(q, b, int(k), w)[0], (query, bank, weight), dtype,
            what)
    # Integer inputs: the float32 similarities are exact, so the ranking is the float64 one, ties included.
    ref_indices = wk.reference.topk_similarity(query.double(), bank.double(), int(k),
                                               None if weight is None else weight.double())[1]
    assert torch.equal(indices, ref_indices), what


@given(data=st.data())
@settings(max_examples=100, deadline=None)
def test_fuzz_grad_reverse_arguments(data):
    draw = data.draw
    dtype = draw(st.sampled_from(DTYPES))
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    x = torch.randn(shape, dtype=torch.float64).to(dtype)
    if x.dim() >= 2 and draw(st.booleans()):
        x = x.transpose(0, 1)
    coeff = draw(st.one_of(_FLOATS, st.builds(lambda v, dt: torch.tensor(v).to(dt), st.floats(-1e6, 1e6) | st.just(NAN),
                                                 st.sampled_from([torch.float32, torch.float64, torch.int64]))))
    x.requires_grad_()
    try:
        out = wk.grad_reverse(x, coeff, backend=draw(st.sampled_from(_BACKENDS)))
    except _CLEAN as err:
        event(f"clean {type(err).__name__}")
        return
    event("agrees with the reference")
    value = float(coeff)
    assert math.isfinite(value), f"coeff {coeff!r} accepted"
    grad = torch.randn(out.shape, dtype=torch.float64).to(dtype)
    out.backward(grad)
    expected = (-value * grad.double())
    result = compare(x.grad, (-value * grad).to(dtype), expected)
    assert result.ok and torch.isfinite(x.grad[torch.isfinite(expected.to(dtype))]).all(), f"coeff {coeff!r}"
