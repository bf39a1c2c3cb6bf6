"""Builds webda_kernels._C_cpu and webda_kernels._C_cuda by driving CMake.

All build logic lives in CMakeLists.txt; this file only configures and runs CMake
(Ninja generator), in the style of pybind11's cmake_example. torch is never imported.
The two modules are separate CMake builds: the CPU module must build (its failure fails the
install); the CUDA module is optional, and when it cannot be built (no nvcc, a compile error, a
bad WEBDA_CUDA_ARCHS) the install goes on without it and webda_kernels/_build_info.json
records why (webda_kernels.build_info() reports it).

Environment:
  WEBDA_BUILD_CUDA=0       skip the CUDA part
  WEBDA_CUDA_ARCHS="80;90" CUDA architectures (CMake syntax)
  CUDACXX / CUDA_HOME      where nvcc is, if it is not on PATH
  WEBDA_BUILD_TYPE         CMake build type (default Release)
  CMAKE_BUILD_PARALLEL_LEVEL  build jobs
"""

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name: str, optional: bool = False) -> None:
        super().__init__(name, sources=[], optional=optional)


def find_nvcc():
    """nvcc from CUDACXX, PATH, CUDA_HOME or the usual install folders; None if absent."""
    candidates = [os.environ.get("CUDACXX"), shutil.which("nvcc")]
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home:
            candidates.append(os.path.join(home, "bin", "nvcc"))
    candidates += sorted(glob.glob("/usr/local/cuda-*/bin/nvcc"), reverse=True)
    return next((c for c in candidates if c and os.path.isfile(c) and os.access(c, os.X_OK)), None)


BUILD_INFO = "_build_info.json"  # in the package folder, next to the modules; read by webda_kernels/_build.py


class CMakeBuild(build_ext):
    def build_extension(self, ext: CMakeExtension) -> None:
        # One run builds every module; later extensions find their file already there.
        out_dir = Path(self.get_ext_fullpath(ext.name)).parent.resolve()
        if getattr(self, "_cmake_done", False):
            return
        self._cmake_done = True
        import pybind11

        common = [
            "-G", "Ninja",
            f"-DCMAKE_BUILD_TYPE={os.environ.get('WEBDA_BUILD_TYPE', 'Release')}",
            f"-DWEBDA_OUTPUT_DIR={out_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
        ]
        self._cmake("cpu", common + ["-DWEBDA_BUILD_CUDA=OFF"])
        cuda = self._build_cuda(common, out_dir)
        (out_dir / BUILD_INFO).write_text(json.dumps({"cuda": cuda}, indent=1) + "\n")

    def copy_extensions_to_source(self) -> None:
        """Editable installs: setuptools copies the modules next to the sources; the build record
        goes with them, and a CUDA module an earlier build left there goes when this one has none."""
        super().copy_extensions_to_source()
        source = Path(self.get_finalized_command("build_py").get_package_dir("webda_kernels"))
        built = Path(self.build_lib) / "webda_kernels"
        shutil.copyfile(built / BUILD_INFO, source / BUILD_INFO)
        if not list(built.glob("_C_cuda*.so")):
            for stale in source.glob("_C_cuda*.so"):
                stale.unlink()

    def _cmake(self, part: str, args, capture: bool = False) -> str:
        """Configure and build one part in its own build folder; CalledProcessError if either fails
        (with ``capture``, its ``output`` holds what CMake and the compilers printed, echoed too)."""
        build_temp = Path(self.build_temp) / f"cmake-{part}"
        build_temp.mkdir(parents=True, exist_ok=True)
        printed = []
        for command in (["cmake", str(ROOT), *args], ["cmake", "--build", "."]):
            result = subprocess.run(command, cwd=build_temp, text=True, stdout=subprocess.PIPE if capture else None,
                                    stderr=subprocess.STDOUT if capture else None)
            if capture:
                print(result.stdout)
                printed.append(result.stdout)
            if result.returncode != 0:
                raise subprocess.CalledProcessError(result.returncode, command, "".join(printed))
        return "".join(printed)

    def _build_cuda(self, common, out_dir: Path) -> dict:
        """Builds the CUDA module if it can; ``{"built": bool, "why": reason when not}``."""
        for stale in out_dir.glob("_C_cuda*.so"):  # never load a module an earlier build left
            stale.unlink()
        if os.environ.get("WEBDA_BUILD_CUDA", "1") == "0":
            return {"built": False, "why": "not requested (WEBDA_BUILD_CUDA=0)"}
        nvcc = find_nvcc()
        if nvcc is None:
            return {"built": False, "why": "skipped: no CUDA compiler found (set CUDACXX or put nvcc on PATH)"}
        archs = os.environ.get("WEBDA_CUDA_ARCHS", "80;90")
        try:
            self._cmake("cuda", common + ["-DWEBDA_BUILD_CPU=OFF", "-DWEBDA_BUILD_CUDA=ON",
                                          f"-DCMAKE_CUDA_COMPILER={nvcc}", f"-DWEBDA_CUDA_ARCHS={archs}"], capture=True)
        except subprocess.CalledProcessError as err:
            step = "configure" if err.cmd[1] != "--build" else "compile"
            errors = [line.strip() for line in err.output.splitlines() if "error" in line.lower()]
            why = (f"the CUDA build failed to {step} (WEBDA_CUDA_ARCHS={archs!r}): "
                   f"{errors[0] if errors else 'see the build log'}")
            print(f"webda_kernels: {why}; installing without the CUDA module", file=sys.stderr)
            return {"built": False, "why": why}
        return {"built": True}

setup(
    ext_modules=[
        CMakeExtension("webda_kernels._C_cpu"),
        CMakeExtension("webda_kernels._C_cuda", optional=True),  # absent without a CUDA compiler
    ],
    cmdclass={"build_ext": CMakeBuild},
)
