// pybind11 module webda_kernels._C_cpu: the CPU kernels, called with raw pointers.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <omp.h>

#include "build_info.h"
#include "cpu/ops.h"

namespace py = pybind11;

PYBIND11_MODULE(_C_cpu, m) {
  m.doc() = "webda_kernels CPU kernels (C++17 + OpenMP); called by webda_kernels, not by users";
  m.def("grad_reverse_backward", &webda::cpu::grad_reverse_backward, py::arg("grad"), py::arg("out"),
        py::arg("dtype"), py::arg("sizes"), py::arg("grad_strides"), py::arg("coeff"),
        py::call_guard<py::gil_scoped_release>());
  m.def("topk_similarity_search", &webda::cpu::topk_similarity_search, py::arg("query"), py::arg("bank"),
        py::arg("bank_stride"), py::arg("queries"), py::arg("rows"), py::arg("depth"), py::arg("k"), py::arg("values"),
        py::arg("indices"), py::arg("dtype"), py::call_guard<py::gil_scoped_release>());
  m.def("residual_temporal_forward", &webda::cpu::residual_temporal_forward, py::arg("z"), py::arg("weight"),
        py::arg("bias"), py::arg("y"), py::arg("n"), py::arg("c"), py::arg("t"), py::arg("hw"), py::arg("kt"),
        py::arg("relu"), py::arg("dtype"), py::call_guard<py::gil_scoped_release>());
  m.def("residual_temporal_backward", &webda::cpu::residual_temporal_backward, py::arg("grad_y"), py::arg("z"),
        py::arg("y"), py::arg("weight"), py::arg("grad_z"), py::arg("grad_weight"), py::arg("grad_bias"),
        py::arg("n"), py::arg("c"), py::arg("t"), py::arg("hw"), py::arg("kt"), py::arg("relu"), py::arg("dtype"),
        py::call_guard<py::gil_scoped_release>());
  m.def("winograd_input_transform", &webda::cpu::winograd_input_transform, py::arg("input"), py::arg("v"),
        py::arg("v_stride"), py::arg("frames"), py::arg("h"), py::arg("w"), py::arg("c"), py::arg("pad"), py::arg("dtype"),
        py::call_guard<py::gil_scoped_release>());
  m.def("winograd_output_transform", &webda::cpu::winograd_output_transform, py::arg("m"), py::arg("bias"),
        py::arg("out"), py::arg("frames"), py::arg("h"), py::arg("w"), py::arg("c"), py::arg("pad"),
        py::arg("dtype"), py::call_guard<py::gil_scoped_release>());
  m.def("winograd_packed_numel", &webda::cpu::winograd_packed_numel, py::arg("c"), py::arg("co"), py::arg("dtype"));
  m.def("winograd_pack_weight", &webda::cpu::winograd_pack_weight, py::arg("u"), py::arg("packed"), py::arg("c"),
        py::arg("co"), py::arg("dtype"), py::call_guard<py::gil_scoped_release>());
  m.def("winograd_conv3x3", &webda::cpu::winograd_conv3x3, py::arg("input"), py::arg("packed"), py::arg("bias"),
        py::arg("out"), py::arg("frames"), py::arg("h"), py::arg("w"), py::arg("c"), py::arg("co"), py::arg("pad"),
        py::arg("dtype"), py::call_guard<py::gil_scoped_release>());
  m.def("omp_max_threads", []() { return omp_get_max_threads(); });
  m.def("build_info", []() {
    namespace b = webda::build;
    py::dict info;
    info["compiler"] = b::kCxxCompiler;
    info["flags"] = b::kCpuFlags;
    info["openmp"] = b::kOpenMP;
    info["build_type"] = b::kBuildType;
    info["cmake"] = b::kCMake;
    info["pybind11"] = b::kPybind11;
    return info;
  });
}
