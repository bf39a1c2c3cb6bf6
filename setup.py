"""Builds webda_kernels._C_cpu (and _C_cuda when a CUDA compiler is found) by driving CMake.

All build logic lives in CMakeLists.txt; this file only configures and runs CMake
(Ninja generator), in the style of pybind11's cmake_example. torch is never imported.

Environment:
  WEBDA_BUILD_CUDA=0       skip the CUDA part
  WEBDA_CUDA_ARCHS="80;90" CUDA architectures (CMake syntax)
  CUDACXX / CUDA_HOME      where nvcc is, if it is not on PATH
  WEBDA_BUILD_TYPE         CMake build type (default Release)
  CMAKE_BUILD_PARALLEL_LEVEL  build jobs
"""

import glob
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


class CMakeBuild(build_ext):
    def build_extension(self, ext: CMakeExtension) -> None:
        # One CMake run builds every module; later extensions find their file already there.
        out_dir = Path(self.get_ext_fullpath(ext.name)).parent.resolve()
        if getattr(self, "_cmake_done", False):
            return
        self._cmake_done = True
        build_temp = Path(self.build_temp) / "cmake"
        build_temp.mkdir(parents=True, exist_ok=True)
        import pybind11

        args = [
            "-G", "Ninja",
            f"-DCMAKE_BUILD_TYPE={os.environ.get('WEBDA_BUILD_TYPE', 'Release')}",
            f"-DWEBDA_OUTPUT_DIR={out_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DWEBDA_CUDA_ARCHS={os.environ.get('WEBDA_CUDA_ARCHS', '80;90')}",
        ]
        build_cuda = os.environ.get("WEBDA_BUILD_CUDA", "1") != "0"
        args.append(f"-DWEBDA_BUILD_CUDA={'ON' if build_cuda else 'OFF'}")
        nvcc = find_nvcc() if build_cuda else None
        if nvcc:
            args.append(f"-DCMAKE_CUDA_COMPILER={nvcc}")
        subprocess.run(["cmake", str(ROOT), *args], cwd=build_temp, check=True)
        subprocess.run(["cmake", "--build", "."], cwd=build_temp, check=True)


setup(
    ext_modules=[
        CMakeExtension("webda_kernels._C_cpu"),
        CMakeExtension("webda_kernels._C_cuda", optional=True),  # absent without a CUDA compiler
    ],
    cmdclass={"build_ext": CMakeBuild},
)
