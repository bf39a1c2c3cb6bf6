"""A simulated GPU machine in a CPU-only process, for the GPU dry run (tests/test_gpu_dry_run.py).

:func:`install` makes the process look like the GPU machine that ``benchmarks/gpu_check.sh``
runs on: ``torch.cuda`` reports one H100 (sm_90, 132 SMs), the CUDA module of webda_kernels
"loads" (a stub whose kernels refuse to run), Triton runs without its interpreter (so it serves
CUDA tensors only) and ``torch.autocast("cuda")`` casts as autocast does on the CPU. The GPU
backends' kernels are replaced by the reference, after a check that every tensor they receive
is on the simulated GPU: a kernel handed host memory is the bug this catches, not arithmetic.

:class:`SimulatedGpu` is the device itself, entered per test or benchmark case. Tensors put on
``"cuda"`` live on a backing device and report ``cuda:0``:

- backing ``"cpu"`` (tests): real values in host memory, tagged as GPU tensors by storage; an
  op mixing GPU and (non-scalar) CPU tensors raises as CUDA does;
- backing ``"meta"`` (benchmarks at GPU sizes): shapes only; reading a value raises
  :class:`ValuesNeeded`, which ends the case (everything up to it was checked).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib.abc
import importlib.machinery
import json
import os
import sys
import types
from typing import Callable, Dict, List, Set

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

GPU = torch.device("cuda", 0)
PROPERTIES = types.SimpleNamespace(name="simulated NVIDIA H100 80GB HBM3", major=9, minor=0,
                                   multi_processor_count=132, total_memory=80 * 2**30, L2_cache_size=50 * 2**20)
_DEVICE_ATTR = torch._C.TensorBase.__dict__["device"]
_IS_CUDA_ATTR = torch._C.TensorBase.__dict__["is_cuda"]


def _tensors(*values) -> List[torch.Tensor]:
    """The tensors among ``values`` and in the lists, tuples and dict values among them (ops' arguments
    and results nest no deeper)."""
    found = []
    for value in values:
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            found.extend(_tensors(*value))
        elif isinstance(value, dict):
            found.extend(_tensors(*value.values()))
    return found


class ValuesNeeded(Exception):
    """A shapes-only case read a tensor's values: the dry run checked it up to this point."""


# ----------------------------------------------------------------------------- the GPU machine
class NotSimulated(Exception):
    """A case traced ops (torch.compile, torch.export, opcheck) of tensors on the simulated GPU,
    which tracing cannot see through: the dry run does not run it."""


# What install() replaced, by (owner, attribute): paused() puts the originals back for a while.
_ORIGINALS: Dict[tuple, object] = {}


def _replace(owner, name: str, value) -> None:
    _ORIGINALS.setdefault((owner, name), getattr(owner, name))
    setattr(owner, name, value)


def _patch_torch_cuda() -> None:
    cuda = torch.cuda
    stream = types.SimpleNamespace(cuda_stream=0, synchronize=lambda: None)
    patches: Dict[str, Callable] = {
        "is_available": lambda: True,
        "device_count": lambda: 1,
        "current_device": lambda: 0,
        "set_device": lambda device: None,
        "synchronize": lambda device=None: None,
        "get_device_properties": lambda device=None: PROPERTIES,
        "get_device_name": lambda device=None: PROPERTIES.name,
        "get_device_capability": lambda device=None: (PROPERTIES.major, PROPERTIES.minor),
        "is_bf16_supported": lambda *args, **kwargs: True,
        "current_stream": lambda device=None: stream,
        "manual_seed": lambda seed: None,
        "manual_seed_all": lambda seed: None,
        "memory_allocated": lambda device=None: 0,
        "max_memory_allocated": lambda device=None: 0,
        "reset_peak_memory_stats": lambda device=None: None,
        "empty_cache": lambda: None,
        "device": lambda device: contextlib.nullcontext(),
    }
    for name, fn in patches.items():
        _replace(cuda, name, fn)


def _patch_autocast() -> None:
    """``torch.autocast("cuda", ...)`` casts as CPU autocast does (the simulated GPU's tensors are
    CPU or meta tensors underneath); the CPU's cast lists agree with CUDA's for conv, matmul, linear."""
    original = torch.autocast.__init__

    def __init__(self, device_type, *args, **kwargs):
        original(self, "cpu" if device_type == "cuda" else device_type, *args, **kwargs)

    _replace(torch.autocast, "__init__", __init__)


@contextlib.contextmanager
def paused():
    """The real CPU-only machine for a while: the active SimulatedGpu's modes are left (its tensors
    keep their tags) and torch.cuda, autocast and the tracers are torch's own."""
    active, patched = _ACTIVE, {key: getattr(*key) for key in _ORIGINALS}
    if active is not None:
        active._leave()
    for (owner, name), original in _ORIGINALS.items():
        setattr(owner, name, original)
    try:
        yield
    finally:
        for (owner, name), value in patched.items():
            setattr(owner, name, value)
        if active is not None:
            active._join()


def _traced(tracer: Callable, what: str) -> Callable:
    """``tracer`` (torch.compile's compiled function, torch.export.export, opcheck) run paused on
    CPU tensors; NotSimulated for tensors on the simulated GPU, which it cannot trace."""
    def run(*args, **kwargs):
        on_gpu = [tuple(t.shape) for t in _tensors(args, kwargs) if _on_gpu(t)]
        if on_gpu:
            raise NotSimulated(f"{what} of tensors on the simulated GPU (shapes {on_gpu})")
        with paused():
            return tracer(*args, **kwargs)
    return run


def _patch_backward() -> None:
    """The autograd engine runs backward functions with the function modes active when it starts;
    torch.Tensor.backward and torch.autograd.grad reach it from inside a mode's handler, with the
    mode popped: put the simulated GPU's back for the engine."""
    run = torch.autograd._engine_run_backward

    def run_backward(*args, **kwargs):
        mode = None if _ACTIVE is None else _ACTIVE._modes[0]
        if mode is None or mode in torch.overrides._get_current_function_mode_stack():
            return run(*args, **kwargs)
        with mode:
            return run(*args, **kwargs)

    _replace(torch.autograd, "_engine_run_backward", run_backward)


def _patch_tracers() -> None:
    compile_ = torch.compile

    def compile(model=None, **kwargs):
        if model is None:
            return lambda fn: compile(fn, **kwargs)
        return functools.wraps(model)(_traced(compile_(model, **kwargs), "torch.compile"))

    _replace(torch, "compile", compile)
    _replace(torch.export, "export", _traced(torch.export.export, "torch.export"))
    _replace(torch.library, "opcheck", _traced(torch.library.opcheck, "opcheck"))


def _cuda_module() -> types.ModuleType:
    """Stands in for webda_kernels._C_cuda: it loads (the backend is available, as on the GPU
    machine), and any kernel call fails, since the dry run replaces the GPU kernels."""
    module = types.ModuleType("webda_kernels._C_cuda")

    def refuse(name):
        def kernel(*args, **kwargs):
            raise RuntimeError(f"dry run: the CUDA kernel {name} was called directly; the simulated GPU runs none")
        return kernel

    for name in ("grad_reverse_backward", "residual_temporal_forward", "residual_temporal_backward",
                 "topt_attention_fused", "topk_similarity_partial"):
        setattr(module, name, refuse(name))
    module.build_info = lambda: {"compiler": "simulated", "archs": "90", "runtime": 0}
    return module


# The tables of each op's backends, and what stands in for a GPU backend's entries.
_BACKEND_TABLES = {
    "webda_kernels.grad_reverse": "_BACKWARD",
    "webda_kernels.topt_attention": "_FORWARD",
    "webda_kernels.topk_similarity": "_STREAMING",
    "webda_kernels.residual_conv2plus1d": "_TEMPORAL",
}


# With WEBDA_TRITON_LAUNCHES=FILE, each process appends to FILE, as JSON lines, the Triton kernel
# specializations its Triton backends would launch: [label, kernel, constexprs and launch options,
# argument dtypes and integer specializations]. A cold cache compiles each once per process: how
# benchmarks/gpu_check.sh's time budget was estimated. ``label`` names the case that launched it.
LAUNCHES_FILE = os.environ.get("WEBDA_TRITON_LAUNCHES")
LAUNCHES: Set[tuple] = set()
label = ""


def _specialization(value):
    """What Triton compiles a separate kernel for, of one launch argument."""
    if isinstance(value, torch.Tensor):
        return [str(value.dtype), value.data_ptr() % 16 == 0]
    if isinstance(value, int) and not isinstance(value, bool):
        return ["i64" if abs(value) >= 2**31 else "i32", value == 1, value % 16 == 0]
    return type(value).__name__


def _record_launches(launcher, *args, **kwargs) -> None:
    """Runs a Triton backend function with every kernel launch recorded instead of run."""
    from triton.runtime.jit import JITFunction

    def launch(kernel, grid):
        def record(*launch_args, **options):
            key = [[_specialization(a) for a in launch_args], sorted(map(str, options.items()))]
            LAUNCHES.add((label or sys.argv[0], kernel.fn.__name__, json.dumps(key)))
        return record

    original = JITFunction.__getitem__
    JITFunction.__getitem__ = launch
    try:
        launcher(*args, **kwargs)
    finally:
        JITFunction.__getitem__ = original


def _stand_in(reference, original, op: str, backend: str):
    def kernel(*args, **kwargs):
        # Inside a webda custom op, the op's inputs decide (its own intermediates carry no tag).
        inside = _ACTIVE is not None and _ACTIVE.webda_op_inputs
        tensors = inside[-1] if inside else _tensors(args, kwargs)
        for t in tensors:
            if t.numel() > 1 and not _on_gpu(t):
                raise RuntimeError(f"dry run: the {backend} backend of {op} received a CPU tensor of shape "
                                   f"{tuple(t.shape)}; on the GPU its kernel would read host memory")
        if backend == "triton" and LAUNCHES_FILE:
            _record_launches(original, *args, **kwargs)
        return reference(*args, **kwargs)
    return kernel


def _replace_gpu_kernels(module) -> None:
    table = getattr(module, _BACKEND_TABLES[module.__name__])
    op = module.__name__.rsplit(".", 1)[1]
    for backend in ("triton", "cuda"):
        reference, original = table["reference"], table[backend]
        if isinstance(reference, tuple):  # residual_conv2plus1d: (forward, backward)
            table[backend] = tuple(_stand_in(r, o, op, backend) for r, o in zip(reference, original))
        else:
            table[backend] = _stand_in(reference, original, op, backend)


def _write_launches() -> None:
    with open(LAUNCHES_FILE, "a") as fh:
        fh.writelines(json.dumps(list(key)) + "\n" for key in sorted(LAUNCHES))


class _AfterImport(importlib.abc.MetaPathFinder):
    """Replaces an op module's GPU kernels as soon as the module is imported (in any process:
    importing webda_kernels here, at start-up, would defeat tests that import it themselves)."""

    def find_spec(self, name, path, target=None):
        if name not in _BACKEND_TABLES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None:
            return None
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            _replace_gpu_kernels(module)

        spec.loader.exec_module = exec_module
        return spec


_INSTALLED = False


def install() -> None:
    """Turn this process into the simulated GPU machine (idempotent; before webda_kernels is imported)."""
    global _INSTALLED
    if _INSTALLED:
        return
    _INSTALLED = True
    os.environ.pop("TRITON_INTERPRET", None)
    _patch_torch_cuda()
    _patch_autocast()
    _patch_tracers()
    _patch_backward()
    sys.modules.setdefault("webda_kernels._C_cuda", _cuda_module())
    already = [name for name in _BACKEND_TABLES if name in sys.modules]
    if already:
        raise RuntimeError(f"simulated_gpu.install() must run before {already} are imported")
    sys.meta_path.insert(0, _AfterImport())
    if LAUNCHES_FILE:
        atexit.register(_write_launches)


# ----------------------------------------------------------------------------- the GPU device
_ACTIVE: "SimulatedGpu | None" = None


def _on_gpu(t: torch.Tensor) -> bool:
    """Whether ``t`` is on the simulated GPU of the active :class:`SimulatedGpu` (False outside one)."""
    return _ACTIVE is not None and _ACTIVE.on_gpu(t)


def _device_kind(value):
    """"cuda"/"cpu"/"meta" for a device-like value (str, torch.device, int index), else None."""
    if isinstance(value, torch.device):
        return value.type
    if isinstance(value, str):
        try:
            return torch.device(value).type
        except RuntimeError:
            return None
    return None


# Ops that CUDA lets mix a GPU tensor with CPU ones (copies, indexing with CPU indices).
_MIXING_OPS = {torch.ops.aten.copy_.default, torch.ops.aten._to_copy.default, torch.ops.aten.index.Tensor,
               torch.ops.aten.index_put_.default, torch.ops.aten.index_put.default,
               torch.ops.aten._index_put_impl_.default}
# Ops that read a tensor's values, which a shapes-only (meta) GPU does not have.
_VALUE_OPS = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.equal.default,
              torch.ops.aten.is_nonzero.default, torch.ops.aten.nonzero.default, torch.ops.aten.masked_select.default,
              torch.ops.aten.allclose.default, torch.ops.aten._assert_async.default,
              torch.ops.aten._assert_async.msg}


# Functions that take a device and return a device (or a parse of .to()'s arguments), not a tensor.
_NAMING_DEVICES = (torch.device, torch._C._nn._parse_to)


class _Devices(TorchFunctionMode):
    """Puts "cuda" tensors on the backing device and makes them report ``cuda:0``."""

    def __init__(self, gpu: "SimulatedGpu"):
        super().__init__()
        self.gpu = gpu

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        owner = getattr(func, "__self__", None)
        if owner is _DEVICE_ATTR:
            return GPU if self.gpu.on_gpu(args[0]) else _DEVICE_ATTR.__get__(args[0])
        if owner is _IS_CUDA_ATTR:
            return self.gpu.on_gpu(args[0])
        if func in _NAMING_DEVICES:  # they name the simulated GPU; tensors made on it go to the backing
            return func(*args, **kwargs)
        if func in (torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.__array__) and self.gpu.on_gpu(args[0]):
            self.gpu.check_values(func.__name__)
        args = list(args)
        target = None  # where the result goes: "gpu", "cpu" or None (where the inputs are)
        if func is torch.Tensor.cuda:
            func, args, target = torch.Tensor.to, [args[0], self.gpu.backing], "gpu"
        elif func is torch.Tensor.cpu:
            func, args, target = torch.Tensor.to, [args[0], "cpu"], "cpu"
        for i, value in enumerate(args[1:], 1):  # .to()'s positional device (a string elsewhere is no device)
            if func is not torch.Tensor.to:
                break
            if isinstance(value, torch.Tensor):  # x.to(other)
                args[i] = value.dtype
                kwargs["device"] = self.gpu.backing if self.gpu.on_gpu(value) else "cpu"
            elif _device_kind(value) in ("cuda", "cpu"):
                target = "gpu" if _device_kind(value) == "cuda" else "cpu"
                args[i] = self.gpu.backing if target == "gpu" else value
        if _device_kind(kwargs.get("device")) in ("cuda", "cpu"):
            target = "gpu" if _device_kind(kwargs["device"]) == "cuda" else "cpu"
            kwargs["device"] = self.gpu.backing if target == "gpu" else kwargs["device"]
        if func is torch.Tensor.to and target is not None:
            if target == "cpu" and self.gpu.on_gpu(args[0]):
                self.gpu.check_values("a copy to the CPU")
            if (target == "gpu") != self.gpu.on_gpu(args[0]):
                kwargs["copy"] = True  # a move between devices is a copy (a .to() of the same device is not)
        out = func(*args, **kwargs)
        if target is not None:
            self.gpu.tag(out, target == "gpu")
        return out


class _Mixing(TorchDispatchMode):
    """Carries the GPU tag from inputs to outputs; refuses what CUDA refuses (backing "cpu"), or
    stops a shapes-only case at its first value read (backing "meta")."""

    def __init__(self, gpu: "SimulatedGpu"):
        super().__init__()
        self.gpu = gpu

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = _tensors(args, kwargs)
        on_gpu = [self.gpu.on_gpu(t) for t in tensors]
        if func in _VALUE_OPS and any(on_gpu):
            self.gpu.check_values(str(func))
        if any(on_gpu) and func not in _MIXING_OPS:
            host = [tuple(t.shape) for t, g in zip(tensors, on_gpu) if not g and t.dim() > 0]
            if host:
                raise RuntimeError(f"Expected all tensors to be on the same device, but found at least two "
                                   f"devices, cuda:0 and cpu! (simulated GPU: {func} got CPU tensors of shapes {host})")
        if func.namespace == "webda":
            self.gpu.webda_op_inputs.append(tensors)
        try:
            out = func(*args, **kwargs)
        except NotImplementedError as err:
            if self.gpu.backing == "meta":
                raise ValuesNeeded(f"{func} has no shapes-only (meta) kernel: {err}") from None
            raise
        finally:
            if func.namespace == "webda":
                self.gpu.webda_op_inputs.pop()
        if self.gpu.backing == "cpu" and func is not torch.ops.aten.copy_.default:
            self.gpu.tag(out, any(on_gpu))
        return out


class SimulatedGpu:
    """The simulated GPU, on ``backing`` "cpu" (values) or "meta" (shapes only); a context manager."""

    def __init__(self, backing: str):
        if backing not in ("cpu", "meta"):
            raise ValueError(f"backing must be 'cpu' or 'meta', got {backing!r}")
        self.backing = backing
        self._storages: Set[int] = set()
        self.webda_op_inputs: List[List[torch.Tensor]] = []  # the inputs of the webda custom ops running now
        self._modes = [_Devices(self), _Mixing(self)]

    def on_gpu(self, t: torch.Tensor) -> bool:
        if self.backing == "meta":
            return t.is_meta
        return t.untyped_storage()._cdata in self._storages

    def tag(self, out, gpu: bool) -> None:
        """Puts the tensors of ``out`` on the simulated GPU (``gpu``) or the CPU; their storages carry it."""
        if self.backing == "meta":  # meta tensors are the GPU's already
            return
        for t in _tensors(out):
            key = t.untyped_storage()._cdata
            if gpu:
                self._storages.add(key)
            else:
                self._storages.discard(key)

    def check_values(self, what: str) -> None:
        if self.backing == "meta":
            raise ValuesNeeded(f"{what} reads values, which a shapes-only GPU does not have")

    def _join(self) -> None:
        global _ACTIVE
        _ACTIVE = self
        for mode in self._modes:
            mode.__enter__()

    def _leave(self) -> None:
        global _ACTIVE
        for mode in reversed(self._modes):
            mode.__exit__(None, None, None)
        _ACTIVE = None

    def __enter__(self):
        if _ACTIVE is not None:
            raise RuntimeError("a SimulatedGpu is already active")
        self._join()
        return self

    def __exit__(self, *exc):
        self._leave()
        self._storages.clear()
        return False
