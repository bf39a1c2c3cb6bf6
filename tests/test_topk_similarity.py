"""topk_similarity: every backend against the float64 reference: odd sizes, several tiles and
chunks, k = 1 and k = Nb, exact ties, NaN, layouts, dtypes, shape fuzz, opcheck / compile /
export, the streaming_topk entry point, dispatch and bad input."""

import importlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import webda_kernels as wk
from webda_kernels import _dispatch, testing
from webda_kernels.testing import DTYPES, GPU, backend_params

tk = importlib.import_module("webda_kernels.topk_similarity")  # the module; the package attribute is the function


def _cases(dtypes=DTYPES, backends=None):
    return [p for p in backend_params(tk.SPEC, dtypes) if backends is None or p.values[0] in backends]


def _slow(backend, device):
    """The Triton interpreter: keep to small problems."""
    return backend == "triton" and device == "cpu"


@pytest.fixture(autouse=True)
def small_cpu_tiles(monkeypatch):
    """CPU blocks of 8 query rows x 4096 / D bank rows: small problems span many chunks."""
    monkeypatch.setattr(tk, "_CPU_CHUNK_ELEMENTS", 4096)
    monkeypatch.setattr(tk, "_CPU_COPY_CHUNK_ELEMENTS", 4096)
    monkeypatch.setattr(tk, "_CPU_MAX_ROWS", 8)


# Layouts: each maps a float64 (or cast) storage tensor to the (rows, D) view the op receives.
LAYOUTS = {
    "contiguous": (lambda rows, dim: (rows, dim), lambda x: x),
    "transposed": (lambda rows, dim: (dim, rows), lambda x: x.T),
    "sliced": (lambda rows, dim: (rows + 1, 2 * dim), lambda x: x[1:, ::2]),
}


def _make(rows, dim, layout, device, generator=torch.randn):
    shape, view = LAYOUTS[layout]
    return generator(*shape(rows, dim), dtype=torch.float64, device=device), view


def _run(query, bank, k, weight, dtype, backend):
    """``topk_similarity`` on (storage, view) pairs cast to ``dtype``; backend None = the reference."""
    args = [view(x.to(dtype)) if x is not None else None for x, view in (query, bank, weight)]
    with torch.no_grad():
        if backend is None:
            return wk.reference.topk_similarity(*args[:2], k, args[2])
        return wk.topk_similarity(*args[:2], k, args[2], backend=backend)


def _check(query, bank, k, weight, dtype, backend):
    """Values by the numerics rule; indices equal to the float64 reference's wherever its values
    are separated from their neighbours (and from the first value left out) by more than twice
    the error the rule allows; every index a valid, distinct bank row."""
    values, indices = _run(query, bank, k, weight, dtype, backend)
    same_values, _ = _run(query, bank, k, weight, dtype, None)
    n_bank = bank[1](bank[0]).shape[0]
    ref_values, ref_indices = _run(query, bank, min(k + 1, n_bank), weight, torch.float64, None)
    assert indices.dtype == torch.int64 and values.dtype == dtype
    cmp = testing.compare(values, same_values, ref_values[:, :k])
    assert cmp.ok, f"values: relative error {cmp.error:.3e} > bound {cmp.bound:.3e}"
    assert ((indices >= 0) & (indices < n_bank)).all()
    assert all(len(set(row.tolist())) == k for row in indices)
    scale = ref_values.abs().max().item() if ref_values.numel() else 0.0
    tol = 2 * cmp.bound * scale
    padded = torch.cat([ref_values.new_full((ref_values.shape[0], 1), float("inf")), ref_values,
                        ref_values.new_full((ref_values.shape[0], k + 1 - ref_values.shape[1]), float("-inf"))], 1)
    separated = ((padded[:, :k] - padded[:, 1:k + 1]) > tol) & ((padded[:, 1:k + 1] - padded[:, 2:k + 2]) > tol)
    assert torch.equal(indices.cpu()[separated.cpu()], ref_indices[:, :k].cpu()[separated.cpu()])


def _integers(*shape, dtype=torch.float64, device="cpu", low=-2, high=3):
    """Small integers: every dtype holds them and their dot products exactly (ties stay ties)."""
    return torch.randint(low, high, shape, device=device).to(dtype)


def _check_exact(query, bank, k, weight, backend):
    """Exact match with the float64 reference (inputs whose similarities are exact integers)."""
    values, indices = wk.topk_similarity(query, bank, k, weight, backend=backend)
    ref_values, ref_indices = wk.reference.topk_similarity(
        query.double(), bank.double(), k, None if weight is None else weight.double())
    assert torch.equal(indices.cpu(), ref_indices.cpu())
    assert torch.equal(values.double().cpu().nan_to_num(7e7), ref_values.cpu().nan_to_num(7e7))


# ---------------------------------------------------------------------------------------------
# every backend against the reference


@pytest.mark.parametrize("backend,device,dtype", list(_cases()))
def test_topk_sizes(backend, device, dtype):
    torch.manual_seed(0)
    sizes = [(1, 1, 1), (3, 3, 3), (33, 127, 64), (3, 127, 257)]
    if not _slow(backend, device):
        sizes += [(127, 1000, 3), (1000, 33, 64), (33, 1000, 257), (1, 1000, 1)]
    for n_query, n_bank, dim in sizes:
        query = _make(n_query, dim, "contiguous", device)
        bank = _make(n_bank, dim, "contiguous", device)
        for k in sorted({1, min(29, n_bank), n_bank}):
            _check(query, bank, k, (None, None), dtype, backend)


@pytest.mark.parametrize("backend,device,dtype", list(_cases()))
def test_topk_weight_and_layouts(backend, device, dtype):
    torch.manual_seed(1)
    n_query, n_bank, dim = (5, 70, 33) if _slow(backend, device) else (33, 1000, 64)
    for q_layout, b_layout in (("transposed", "sliced"), ("sliced", "transposed")):
        query = _make(n_query, dim, q_layout, device)
        bank = _make(n_bank, dim, b_layout, device)
        weight = _make(dim, dim, "transposed", device, lambda *s, **kw: torch.randn(*s, **kw) / dim**0.5)
        _check(query, bank, 7, weight, dtype, backend)
        _check(query, bank, 7, (None, None), dtype, backend)


@pytest.mark.parametrize("backend,device,dtype", list(_cases()))
def test_topk_exact_ties(backend, device, dtype):
    """Duplicated bank rows and integer similarities: equal values come out lowest index first."""
    torch.manual_seed(2)
    n_bank = 130 if _slow(backend, device) else 1000
    base = _integers(n_bank // 3, 8, dtype=dtype, device=device)
    bank = base[torch.randint(0, base.shape[0], (n_bank,), device=device)]
    query = _integers(9, 8, dtype=dtype, device=device)
    for k in (1, 5, 64, n_bank):
        if tk.GPU_MAX_K < k and backend in ("triton", "cuda"):
            continue
        _check_exact(query, bank, k, None, backend)
    weight = _integers(8, 8, dtype=dtype, device=device, low=-1, high=2)
    _check_exact(query, bank, 5, weight, backend)


@pytest.mark.parametrize("backend,device,dtype", list(_cases()))
def test_topk_expanded_bank_is_all_ties(backend, device, dtype):
    bank = torch.randn(1, 17, device=device).to(dtype).expand(100, 17)
    query = torch.randn(4, 17, device=device).to(dtype)
    values, indices = wk.topk_similarity(query, bank, 10, backend=backend)
    assert torch.equal(indices.cpu(), torch.arange(10).expand(4, 10))
    assert torch.equal(values, values[:, :1].expand(4, 10))


@pytest.mark.parametrize("backend,device,dtype", list(_cases()))
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # NumPy under the Triton interpreter
def test_topk_nan_and_inf_rank_like_torch_sort(backend, device, dtype):
    """NaN similarities rank above everything (ties among them by index), then +inf, ..., -inf."""
    torch.manual_seed(3)
    query = _integers(6, 5, dtype=dtype, device=device)
    bank = _integers(150, 5, dtype=dtype, device=device)
    query[0, 0] = float("nan")  # the whole row is NaN
    bank[[4, 77, 140], 1] = float("nan")  # three NaN columns
    bank[9, 2] = float("inf")
    bank[10, 3] = float("-inf")
    bank[11] = -0.0  # -0.0 ties with 0.0
    for k in (1, 4, 40):
        _check_exact(query, bank, k, None, backend)


@pytest.mark.parametrize("backend,device,dtype", list(_cases()))
def test_topk_empty_query_and_zero_features(backend, device, dtype):
    values, indices = wk.topk_similarity(torch.empty(0, 5, device=device, dtype=dtype),
                                         torch.randn(9, 5, device=device).to(dtype), 3, backend=backend)
    assert values.shape == indices.shape == (0, 3)
    values, indices = wk.topk_similarity(torch.empty(4, 0, device=device, dtype=dtype),
                                         torch.empty(9, 0, device=device, dtype=dtype), 3, backend=backend)
    assert torch.equal(indices.cpu(), torch.arange(3).expand(4, 3)) and not values.any()


@pytest.mark.parametrize("backend,device,dtype", list(_cases(dtypes=[torch.float32])))
def test_topk_streaming_entry_point(backend, device, dtype):
    """``streaming_topk`` (used by topt_attention): the same contract without validation."""
    torch.manual_seed(4)
    query = torch.randn(40, 6, device=device).T  # (6, 40) transposed view
    bank = torch.randn(90, 80, device=device)[:, ::2]
    got_values, got_indices = tk.streaming_topk(query, bank, 13, backend)
    ref_values, ref_indices = wk.reference.topk_similarity(query, bank, 13)
    torch.testing.assert_close(got_values, ref_values)
    assert torch.equal(got_indices, ref_indices)


@pytest.mark.parametrize("backend,device,dtype", list(_cases(dtypes=[torch.float32, torch.float64])))
@settings(max_examples=25, deadline=None)
@given(n_query=st.integers(1, 40), n_bank=st.integers(1, 300), dim=st.integers(1, 40), data=st.data())
def test_topk_shape_fuzz(backend, device, dtype, n_query, n_bank, dim, data):
    if _slow(backend, device) and n_query * n_bank * dim > 2000:
        return
    k = data.draw(st.integers(1, min(n_bank, tk.GPU_MAX_K)), label="k")
    torch.manual_seed(n_query * 1000 + n_bank)
    query = _integers(n_query, dim, dtype=dtype, device=device)
    bank = _integers(n_bank, dim, dtype=dtype, device=device)
    _check_exact(query, bank, k, None, backend)


# ---------------------------------------------------------------------------------------------
# torch.library, compile, export


@pytest.mark.parametrize("backend,device,dtype", list(_cases(dtypes=[torch.float32])))
def test_topk_opcheck(backend, device, dtype):
    query = torch.randn(5, 7, device=device)
    bank = torch.randn(70, 7, device=device)
    weight = torch.randn(7, 7, device=device)
    torch.library.opcheck(torch.ops.webda.topk_similarity, (query, bank, 4, weight, backend))
    torch.library.opcheck(torch.ops.webda.topk_similarity, (query, bank, 70, None, backend))


@pytest.mark.parametrize("backend,device,dtype", list(_cases(dtypes=[torch.float32], backends=("cpu", "cuda"))))
def test_topk_compile_fullgraph(backend, device, dtype):
    query = torch.randn(5, 7, device=device)
    bank = torch.randn(70, 7, device=device)
    weight = torch.randn(7, 7, device=device)

    def fn(q, b, w):
        values, indices = wk.topk_similarity(q * 2, b, 4, w, backend=backend)
        return values + 1, indices

    torch._dynamo.reset()
    got = torch.compile(fn, fullgraph=True)(query, bank, weight)
    expected = fn(query, bank, weight)
    torch.testing.assert_close(got[0], expected[0])
    assert torch.equal(got[1], expected[1])


@pytest.mark.parametrize("backend,device,dtype", list(_cases(dtypes=[torch.float32], backends=("cpu", "cuda"))))
def test_topk_export(backend, device, dtype):
    class Search(torch.nn.Module):
        def forward(self, q, b):
            return wk.topk_similarity(q, b, 3, backend=backend)

    query, bank = torch.randn(5, 7, device=device), torch.randn(40, 7, device=device)
    program = torch.export.export(Search(), (query, bank))
    assert "webda.topk_similarity" in str(program.graph)
    got, expected = program.module()(query, bank), Search()(query, bank)
    torch.testing.assert_close(got[0], expected[0])
    assert torch.equal(got[1], expected[1])


# ---------------------------------------------------------------------------------------------
# dispatch and bad input


def test_topk_auto_picks_cpu_only_for_large_problems(monkeypatch):
    chosen = []
    monkeypatch.setattr(tk, "topk_similarity_op", lambda query, bank, k, weight, backend: chosen.append(backend))
    monkeypatch.delenv(_dispatch.ENV_BACKEND, raising=False)
    wk.topk_similarity(torch.randn(32, 8), torch.randn(32, 8), 3)  # the paper's batch
    wk.topk_similarity(torch.randn(2, 8), torch.randn(tk.CPU_MIN_BANK, 8), 3)
    wk.topk_similarity(torch.randn(2, 8), torch.randn(1000, 8), 1000 // tk.CPU_MIN_BANK_PER_K + 1)  # k near Nb
    wk.topk_similarity(torch.randn(2, 8), torch.randn(1000, 8), 1000 // tk.CPU_MIN_BANK_PER_K)
    monkeypatch.setenv(_dispatch.ENV_BACKEND, "cpu")
    wk.topk_similarity(torch.randn(2, 8), torch.randn(3, 8), 3)
    assert chosen == ["reference", "cpu", "reference", "cpu", "cpu"]


def test_topk_not_differentiable():
    query = torch.randn(3, 4, requires_grad=True)
    bank = torch.randn(5, 4)
    with pytest.raises(ValueError, match="not differentiable.*query"):
        wk.topk_similarity(query, bank, 2)
    with pytest.raises(ValueError, match="weight"):
        wk.topk_similarity(bank, bank, 2, torch.eye(4, requires_grad=True))
    with torch.no_grad():
        values, _ = wk.topk_similarity(query, bank, 2, backend="cpu")
    assert not values.requires_grad


@pytest.mark.parametrize(
    "args,error,match",
    [
        ((torch.randn(3), torch.randn(5, 3), 1), ValueError, "query must be 2-D"),
        ((torch.randn(2, 3), torch.randn(5, 3, 1), 1), ValueError, "bank must be 2-D"),
        ((torch.randn(2, 3), torch.randn(5, 4), 1), ValueError, "bank has 4 features.*query has 3"),
        ((torch.randn(2, 3), torch.randn(5, 3), 1, torch.randn(3, 4)), ValueError, r"weight must have shape \(3, 3\)"),
        ((torch.randn(2, 3), torch.randn(5, 3), 0), ValueError, r"k must be in \[1, 5\]"),
        ((torch.randn(2, 3), torch.randn(5, 3), 6), ValueError, r"k must be in \[1, 5\]"),
        ((torch.randn(2, 3), torch.randn(5, 3), 2.0), TypeError, "k must be an int"),
        ((torch.randn(2, 3), torch.randn(5, 3), True), TypeError, "k must be an int"),
        ((torch.randn(2, 3), torch.randn(0, 3), 1), ValueError, "bank is empty"),
        ((torch.randn(2, 3), torch.randn(5, 3).double(), 1), TypeError, "bank has dtype torch.float64"),
        ((torch.randn(2, 3), torch.randn(5, 3, device="meta"), 1), ValueError, "bank is on meta"),
        ((torch.ones(2, 3, dtype=torch.int64), torch.ones(5, 3, dtype=torch.int64), 1), TypeError, "query must be float"),
        (([[1.0]], torch.randn(5, 1), 1), TypeError, "query must be a torch.Tensor"),
    ],
)
def test_topk_bad_input(args, error, match):
    with pytest.raises(error, match=match):
        wk.topk_similarity(*args)


def test_topk_backend_errors():
    query, bank = torch.randn(2, 3), torch.randn(5, 3)
    with pytest.raises(ValueError, match="not one of"):
        wk.topk_similarity(query, bank, 1, backend="fast")
    if "triton" not in _dispatch.serving_backends(tk.SPEC, torch.device("cpu"), torch.float32):
        return
    with pytest.raises(ValueError, match="cannot run on cpu tensors of dtype torch.float64"):
        wk.topk_similarity(query.double(), bank.double(), 1, backend="triton")
    big_bank = torch.randn(tk.GPU_MAX_K + 1, 3)
    with pytest.raises(ValueError, match=f"k <= {tk.GPU_MAX_K}"):
        wk.topk_similarity(query, big_bank, tk.GPU_MAX_K + 1, backend="triton")


# ---------------------------------------------------------------------------------------------
# GPU: larger banks (many chunks and tiles), every k_pad


@pytest.mark.skipif(not GPU, reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", ["triton", "cuda"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_topk_gpu_large_banks(backend, dtype):
    if backend not in _dispatch.serving_backends(tk.SPEC, torch.device("cuda"), dtype):
        pytest.skip(f"{backend} is not available")
    torch.manual_seed(5)
    for n_query, n_bank, dim in ((257, 70001, 64), (3, 200003, 257), (1000, 4096, 33)):
        query = _make(n_query, dim, "contiguous", "cuda")
        bank = _make(n_bank, dim, "sliced", "cuda")
        for k in (1, 31, 32, 33, 200, 256):
            _check(query, bank, k, (None, None), dtype, backend)
