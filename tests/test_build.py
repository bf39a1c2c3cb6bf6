"""The extension's build: a CUDA part that fails to build leaves the CPU module built and
importable, and build_info() says why the CUDA module is missing."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import webda_kernels as wk
from webda_kernels import _build, _extension

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("ninja") is None, reason="needs cmake and ninja")
def test_cpu_module_builds_and_imports_when_the_cuda_part_fails(tmp_path):
    # A copy of the sources, built in place as `pip install -e .` does, over a CUDA module that
    # an earlier build left there.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.py", "pyproject.toml", "CMakeLists.txt", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "csrc", src / "csrc")
    shutil.copytree(ROOT / "webda_kernels", src / "webda_kernels", ignore=shutil.ignore_patterns("*.so", "*.json"))
    package = src / "webda_kernels"
    stale = package / Path(next(ROOT.joinpath("webda_kernels").glob("_C_cpu*.so")).name.replace("_C_cpu", "_C_cuda"))
    stale.write_bytes(b"an earlier build's module")
    env = {**os.environ, "WEBDA_CUDA_ARCHS": "not-an-arch"}
    result = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace", "--build-temp",
                             str(tmp_path / "temp")], cwd=src, env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (cpu_module,) = package.glob("_C_cpu*.so")
    assert not stale.exists() and not list(package.glob("_C_cuda*.so"))
    recorded = json.loads((package / "_build_info.json").read_text())["cuda"]
    assert recorded["built"] is False
    if not recorded["why"].startswith("skipped: no CUDA compiler"):  # nvcc is here: it refused the architectures
        assert "failed" in recorded["why"] and "not-an-arch" in recorded["why"], recorded
    load = ("import importlib.util, sys\n"
            "spec = importlib.util.spec_from_file_location('webda_kernels._C_cpu', sys.argv[1])\n"
            "module = importlib.util.module_from_spec(spec)\n"
            "spec.loader.exec_module(module)\n"
            "print(module.omp_max_threads() >= 1, sorted(module.build_info()))\n")
    loaded = subprocess.run([sys.executable, "-c", load, str(cpu_module)], capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.startswith("True ['build_type'"), loaded.stdout


def test_build_info_reports_why_the_cuda_module_is_missing(tmp_path, monkeypatch):
    recorded = tmp_path / "_build_info.json"
    recorded.write_text(json.dumps({"cuda": {"built": False, "why": "the CUDA build failed to compile: error X"}}))
    monkeypatch.setattr(_build, "BUILD_INFO_PATH", recorded)
    monkeypatch.setitem(_extension._MODULES, "cuda", None)
    info = wk.build_info()
    assert info["cuda"] == {"built": False, "why": "the CUDA build failed to compile: error X"}
    assert info["cpu"]["built"] is True
    recorded.unlink()  # nothing recorded (a build by hand): the import error, if any
    monkeypatch.setitem(_extension._load_errors, "cuda", "ImportError: no module")
    assert wk.build_info()["cuda"] == {"built": False, "why": "ImportError: no module"}
