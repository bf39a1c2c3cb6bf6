"""Several GPUs: a GPU kernel runs on its inputs' device (and that device's current stream), and
leaves the caller's current device as it found it."""

import importlib
import inspect
import pkgutil
import re

import pytest
import torch

import webda_kernels as wk
import webda_kernels.triton as triton_kernels
from webda_kernels import _dispatch
from webda_kernels.grad_reverse import SPEC as GRAD_REVERSE
from webda_kernels.testing import GPU
from webda_kernels.triton.device import on_input_device


def _launchers():
    """Every function of webda_kernels.triton that launches a kernel (``_kernel[grid](...)``)."""
    found = []
    for info in pkgutil.iter_modules(triton_kernels.__path__):
        module = importlib.import_module(f"webda_kernels.triton.{info.name}")
        for name, fn in vars(module).items():
            if inspect.isfunction(fn) and fn.__module__ == module.__name__ \
                    and re.search(r"_kernel\[[^]]*\]\(", inspect.getsource(inspect.unwrap(fn))):
                found.append(pytest.param(fn, id=f"{info.name}.{name}"))
    return found


@pytest.mark.parametrize("launcher", _launchers())
def test_every_triton_launch_runs_on_its_inputs_device(launcher):
    # Triton launches on the current device: a launcher that does not make its inputs' device
    # current runs a cuda:1 tensor on cuda:0 (or on cuda:0's stream).
    assert launcher.__code__ is on_input_device(print).__code__, f"{launcher.__name__} is not @on_input_device"


def test_on_input_device_makes_the_inputs_device_current(monkeypatch):
    class OnSecondGpu(torch.Tensor):
        @property
        def device(self):
            return torch.device("cuda", 1)

    entered = []

    class Current:  # stands in for torch.cuda.device, which needs a GPU
        def __init__(self, device):
            self.device = device

        def __enter__(self):
            entered.append(("enter", self.device))

        def __exit__(self, *exc):
            entered.append(("exit", self.device))

    monkeypatch.setattr(torch.cuda, "device", Current)
    launch = on_input_device(lambda scale, x: entered.append(("launch", x.device)) or scale)
    assert launch(2.0, torch.zeros(3).as_subclass(OnSecondGpu)) == 2.0
    assert entered == [("enter", torch.device("cuda", 1)), ("launch", torch.device("cuda", 1)),
                       ("exit", torch.device("cuda", 1))]
    entered.clear()
    launch(2.0, torch.zeros(3))  # CPU tensors (the interpreter): no device to make current
    assert entered == [("launch", torch.device("cpu"))]


@pytest.mark.skipif(not GPU or torch.cuda.device_count() < 2, reason="needs two GPUs")
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_gpu_kernels_leave_the_current_device_as_they_found_it(backend):
    if backend not in _dispatch.machine_backends(GRAD_REVERSE):
        pytest.skip(f"{backend} is not available")
    other = torch.device("cuda", torch.cuda.device_count() - 1)
    torch.cuda.set_device(0)
    x = torch.randn(64, 33, device=other, requires_grad=True)
    wk.grad_reverse(x, 0.5, backend=backend).sum().backward()
    values, _ = wk.topk_similarity(x.detach(), torch.randn(300, 33, device=other), 5, backend=backend)
    alpha = wk.topt_attention(x[:8].detach(), x[8:40].detach(), torch.eye(33, device=other), 4, backend=backend)
    assert torch.cuda.current_device() == 0
    assert x.grad.device == values.device == alpha.device == other
    torch.testing.assert_close(x.grad, torch.full_like(x, -0.5))
