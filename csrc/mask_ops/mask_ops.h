// Mask post-processing ops (Python face: d2ext/layers/mask_ops.py). Each op dispatches on the
// device of its first tensor to the CPU (mask_ops_cpu.cpp) or CUDA (mask_ops_cuda.cu) kernels,
// which share the per-pixel arithmetic of mask_ops_math.h.
#pragma once

#include <ATen/ATen.h>

namespace d2ext {

// (N, h, w) float -> (N, out_h, out_w) bool. grid_sample=false: F.interpolate(bilinear) then
// "> threshold"; grid_sample=true: D2's paste grid for the full-image box then ">= threshold".
at::Tensor resize_threshold_cpu(const at::Tensor& input, int64_t out_h, int64_t out_w, double threshold, bool grid_sample);
// YOLACT: protos (k, Hp, Wp), coeffs (N, k), boxes (N, 4) normalised x1y1x2y2 -> (N, out_h, out_w) bool.
at::Tensor assemble_masks_cpu(const at::Tensor& protos, const at::Tensor& coeffs, const at::Tensor& boxes, int64_t out_h, int64_t out_w, double threshold, int64_t crop_padding);
// D2 paste: masks (R, M, M) probabilities, boxes (R, 4) absolute XYXY -> (R, img_h, img_w) bool.
at::Tensor paste_masks_cpu(const at::Tensor& masks, const at::Tensor& boxes, int64_t img_h, int64_t img_w, double threshold);

#ifdef WITH_CUDA
at::Tensor resize_threshold_cuda(const at::Tensor& input, int64_t out_h, int64_t out_w, double threshold, bool grid_sample);
at::Tensor assemble_masks_cuda(const at::Tensor& protos, const at::Tensor& coeffs, const at::Tensor& boxes, int64_t out_h, int64_t out_w, double threshold, int64_t crop_padding);
at::Tensor paste_masks_cuda(const at::Tensor& masks, const at::Tensor& boxes, int64_t img_h, int64_t img_w, double threshold);
#endif

// Shared by both backends: sigmoid(P @ c^T) at proto resolution in dbolya/yolact's order and
// layout (protos as HWC), returned as (Hp, Wp, N) contiguous, not yet cropped.
inline at::Tensor yolact_proto_masks(const at::Tensor& protos, const at::Tensor& coeffs) {
  return at::matmul(protos.permute({1, 2, 0}).contiguous(), coeffs.t()).sigmoid_();
}

inline void check_float_tensor(const at::Tensor& x, int64_t dims, const char* name) {
  TORCH_CHECK(x.dim() == dims, name, " must have ", dims, " dimensions, got ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat, name, " must be float32, got ", x.scalar_type());
}

inline void check_out_size(int64_t out_h, int64_t out_w, double threshold) {
  TORCH_CHECK(out_h >= 0 && out_w >= 0, "output size must be >= 0, got ", out_h, "x", out_w);
  TORCH_CHECK(threshold >= 0, "threshold must be >= 0, got ", threshold);
}

inline at::Tensor resize_threshold(const at::Tensor& input, int64_t out_h, int64_t out_w, double threshold, bool grid_sample) {
  check_float_tensor(input, 3, "input");
  check_out_size(out_h, out_w, threshold);
  TORCH_CHECK(input.size(0) == 0 || (input.size(1) > 0 && input.size(2) > 0), "input maps are empty: ", input.sizes());
  if (input.is_cuda()) {
#ifdef WITH_CUDA
    return resize_threshold_cuda(input, out_h, out_w, threshold, grid_sample);
#else
    TORCH_CHECK(false, "d2ext not built with CUDA");
#endif
  }
  return resize_threshold_cpu(input, out_h, out_w, threshold, grid_sample);
}

inline at::Tensor assemble_masks(const at::Tensor& protos, const at::Tensor& coeffs, const at::Tensor& boxes, int64_t out_h, int64_t out_w, double threshold, int64_t crop_padding) {
  check_float_tensor(protos, 3, "protos");
  check_float_tensor(coeffs, 2, "coeffs");
  check_float_tensor(boxes, 2, "boxes");
  check_out_size(out_h, out_w, threshold);
  TORCH_CHECK(protos.size(1) > 0 && protos.size(2) > 0, "protos have an empty spatial size: ", protos.sizes());
  TORCH_CHECK(coeffs.size(1) == protos.size(0), "coeffs ", coeffs.sizes(), " do not match protos ", protos.sizes());
  TORCH_CHECK(boxes.size(0) == coeffs.size(0) && boxes.size(1) == 4, "boxes must be (N, 4), got ", boxes.sizes());
  TORCH_CHECK(coeffs.device() == protos.device() && boxes.device() == protos.device(), "protos, coeffs and boxes must be on one device");
  TORCH_CHECK(crop_padding >= 0, "crop_padding must be >= 0, got ", crop_padding);
  if (protos.is_cuda()) {
#ifdef WITH_CUDA
    return assemble_masks_cuda(protos, coeffs, boxes, out_h, out_w, threshold, crop_padding);
#else
    TORCH_CHECK(false, "d2ext not built with CUDA");
#endif
  }
  return assemble_masks_cpu(protos, coeffs, boxes, out_h, out_w, threshold, crop_padding);
}

inline at::Tensor paste_masks(const at::Tensor& masks, const at::Tensor& boxes, int64_t img_h, int64_t img_w, double threshold) {
  check_float_tensor(masks, 3, "masks");
  check_float_tensor(boxes, 2, "boxes");
  check_out_size(img_h, img_w, threshold);
  TORCH_CHECK(boxes.size(0) == masks.size(0) && boxes.size(1) == 4, "boxes must be (R, 4), got ", boxes.sizes());
  TORCH_CHECK(masks.size(0) == 0 || (masks.size(1) > 0 && masks.size(2) > 0), "masks are empty: ", masks.sizes());
  TORCH_CHECK(boxes.device() == masks.device(), "masks and boxes must be on one device");
  if (masks.is_cuda()) {
#ifdef WITH_CUDA
    return paste_masks_cuda(masks, boxes, img_h, img_w, threshold);
#else
    TORCH_CHECK(false, "d2ext not built with CUDA");
#endif
  }
  return paste_masks_cpu(masks, boxes, img_h, img_w, threshold);
}

}  // namespace d2ext
