"""topk_similarity forward: every backend against eager PyTorch, torch.compile and faiss.

Providers: "eager" is ``(query @ bank.T).topk(k)``, the fastest plain-PyTorch way (the
oracle ``wk.reference.topk_similarity`` sorts whole rows stably for its tie order and is
slower still); "compile" is ``torch.compile`` of the same; "faiss" is faiss-cpu's exact
``IndexFlatIP`` search (CPU only, skipped when faiss is not installed; index built outside
the timing); "copy" (GPU only) is a device copy of the bank, the bandwidth roofline that
the bank-shape kernels are held to (achieved fraction = copy time / (2 x kernel time)).

Groups: the paper shape (Nq = Nb = 32, D = 512, k = 29), the bank shape (Nq = 256, D = 256,
k = 32, Nb = 2^18 float32 on CPU, 2^20 bfloat16 on GPU), and a scaling sweep over Nb
(2^14 .. 2^20; eager and webda only) whose time and peak memory grow linearly in Nb.
"""

import pytest
import torch

import webda_kernels as wk
from webda_kernels import _dispatch
from webda_kernels.topk_similarity import SPEC

try:
    import faiss
except ImportError:  # optional benchmark dependency
    faiss = None

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DTYPE = torch.bfloat16 if DEVICE.type == "cuda" else torch.float32
# (Nq, Nb, D, k)
PAPER = (32, 32, 512, 29)
BANK = (256, 2**20 if DEVICE.type == "cuda" else 2**18, 256, 32)
SWEEP_NB = (2**14, 2**16, 2**18, 2**20)


def _setup(n_query, n_bank, dim):
    torch.manual_seed(0)
    query = torch.randn(n_query, dim, device=DEVICE).to(DTYPE)
    bank = torch.nn.functional.normalize(torch.randn(n_bank, dim, device=DEVICE), dim=1).to(DTYPE)
    return query, bank


def _eager(query, bank, k):
    return (query @ bank.T).topk(k, dim=1)


_compiled = torch.compile(_eager, fullgraph=True)


def _provider(name, query, bank, k):
    """A no-argument callable timing ``name`` on these inputs."""
    if name == "eager":
        return lambda: _eager(query, bank, k)
    if name == "compile":
        return lambda: _compiled(query, bank, k)
    if name == "faiss":
        index = faiss.IndexFlatIP(bank.shape[1])
        index.add(bank.numpy())
        queries = query.numpy()
        return lambda: index.search(queries, k)
    if name == "copy":
        return lambda: bank.clone()
    backend = name.removeprefix("webda-")
    return lambda: wk.topk_similarity(query, bank, k, backend=backend)


def _providers(sweep=False, paper=False):
    names = ["eager"] if sweep else ["eager", "compile"]
    if paper:  # what ``auto`` picks there, and the oracle it may fall back to
        names += ["webda-auto", "webda-reference"]
    if not sweep and DEVICE.type == "cpu" and faiss is not None:
        names.append("faiss")
    if not sweep and DEVICE.type == "cuda":
        names.append("copy")
    names += [f"webda-{b}" for b in ("cpu", "triton", "cuda") if b in _dispatch.serving_backends(SPEC, DEVICE, DTYPE)]
    return names


def _group(kind, n_query, n_bank, dim, k):
    return f"topk_similarity fwd {kind} Nq={n_query} Nb={n_bank} D={dim} k={k} {str(DTYPE)[6:]} {DEVICE.type}"


@pytest.mark.parametrize(
    "shape,provider",
    [pytest.param(PAPER, p, id=f"paper-{p}") for p in _providers(paper=True)]
    + [pytest.param(BANK, p, id=f"bank-{p}") for p in _providers()],
)
def test_bench_topk_similarity(measure, shape, provider):
    n_query, n_bank, dim, k = shape
    query, bank = _setup(n_query, n_bank, dim)
    if faiss is not None:
        faiss.omp_set_num_threads(torch.get_num_threads())  # the cores torch uses
    kind = "paper" if shape == PAPER else "bank"
    measure(_provider(provider, query, bank, k), group=_group(kind, *shape), provider=provider, device=DEVICE)


@pytest.mark.parametrize("provider", _providers(sweep=True))
@pytest.mark.parametrize("n_bank", SWEEP_NB)
def test_bench_topk_similarity_sweep(measure, n_bank, provider):
    n_query, _, dim, k = BANK
    query, bank = _setup(n_query, n_bank, dim)
    measure(_provider(provider, query, bank, k), group=_group("sweep", n_query, n_bank, dim, k), provider=provider,
            device=DEVICE, n_bank=n_bank)
