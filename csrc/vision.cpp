// The single binding file of d2ext._C: registers every op as torch.ops.d2ext.* (scriptable,
// int64_t/double signatures) and makes `from d2ext import _C` an importable Python module.
#include <Python.h>
#include <torch/library.h>

#include "mask_ops/mask_ops.h"
#include "evaluation/eval_ops.h"

namespace d2ext {

bool built_with_cuda() {
#ifdef WITH_CUDA
  return true;
#else
  return false;
#endif
}

TORCH_LIBRARY(d2ext, m) {
  m.def("built_with_cuda() -> bool", &built_with_cuda);
  m.def("resize_threshold(Tensor input, int out_h, int out_w, float threshold, bool grid_sample) -> Tensor",
        &resize_threshold);
  m.def("assemble_masks(Tensor protos, Tensor coeffs, Tensor boxes, int out_h, int out_w, float threshold, "
        "int crop_padding) -> Tensor",
        &assemble_masks);
  m.def("paste_masks(Tensor masks, Tensor boxes, int img_h, int img_w, float threshold) -> Tensor", &paste_masks);
  m.def("png_panoptic_ids(Tensor raw, int height, int width, int channels) -> Tensor", &png_panoptic_ids);
  m.def("id_pair_counts(Tensor gt, Tensor pred) -> (Tensor, Tensor)", &id_pair_counts);
  m.def("rle_run_lengths(Tensor masks) -> (Tensor, Tensor)", &rle_run_lengths);
}

}  // namespace d2ext

// An empty extension module: importing it runs the static TORCH_LIBRARY registration above.
static struct PyModuleDef d2ext_c_module = {PyModuleDef_HEAD_INIT, "_C", "d2ext compiled ops (torch.ops.d2ext)", -1, nullptr};

PyMODINIT_FUNC PyInit__C(void) {
  return PyModule_Create(&d2ext_c_module);
}
