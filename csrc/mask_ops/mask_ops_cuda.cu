// CUDA kernels of the mask ops: one thread per output pixel (grid-stride), writing bool directly;
// pixels outside a box's footprint skip the sampling. The arithmetic is mask_ops_math.h's.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

#include "mask_ops/mask_ops.h"
#include "mask_ops/mask_ops_math.h"

namespace d2ext {

namespace {

using mask_ops::LinearTap;

constexpr int kThreads = 256;

inline int num_blocks(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<int>(std::min<int64_t>(std::max<int64_t>(blocks, 1), 65535LL * 8));
}

// m: (N, hp, wp) maps, zero outside proto box[i] = (x0, x1, y0, y1) (already cropped);
// out[i, y, x] = bilinear(m[i]) > thr, false where no tap touches the box.
__global__ void interp_threshold_kernel(const float* __restrict__ m, const int64_t* __restrict__ box, int64_t n,
                                        int64_t hp, int64_t wp, bool* __restrict__ out, int64_t H, int64_t W,
                                        float thr) {
  const float sx = mask_ops::interp_scale(wp, W), sy = mask_ops::interp_scale(hp, H);
  const int64_t total = n * H * W;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t x = idx % W;
    const int64_t y = (idx / W) % H;
    const int64_t i = idx / (W * H);
    const int64_t* b = box + 4 * i;
    const LinearTap tx = mask_ops::interp_tap(x, wp, sx);
    const LinearTap ty = mask_ops::interp_tap(y, hp, sy);
    bool v = false;
    if (mask_ops::tap_touches(tx, b[0], b[1]) && mask_ops::tap_touches(ty, b[2], b[3])) {
      const float* r0 = m + (i * hp + ty.i0) * wp;
      const float* r1 = m + (i * hp + ty.i1) * wp;
      v = mask_ops::interp_value(r0[tx.i0], r0[tx.i1], r1[tx.i0], r1[tx.i1], ty, tx) > thr;
    }
    out[idx] = v;
  }
}

// YOLACT crop at proto resolution (m * keep, keeping NaN * 0 = NaN like the original) and the
// proto-pixel box of every detection (one thread per detection writes it).
__global__ void yolact_crop_kernel(float* __restrict__ m, const float* __restrict__ boxes, int64_t n, int64_t hp,
                                   int64_t wp, int64_t pad, int64_t* __restrict__ box) {
  const int64_t total = n * hp * wp;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t x = idx % wp;
    const int64_t y = (idx / wp) % hp;
    const int64_t i = idx / (wp * hp);
    const float* b = boxes + 4 * i;
    int64_t x0, x1, y0, y1;
    mask_ops::yolact_crop_range(b[0], b[2], wp, pad, &x0, &x1);
    mask_ops::yolact_crop_range(b[1], b[3], hp, pad, &y0, &y1);
    const bool in = x >= x0 && x < x1 && y >= y0 && y < y1;
    m[idx] = m[idx] * (in ? 1.f : 0.f);
    if (x == 0 && y == 0) {
      box[4 * i] = x0, box[4 * i + 1] = x1, box[4 * i + 2] = y0, box[4 * i + 3] = y1;
    }
  }
}

// D2 paste: out[i, y, x] = grid_sample(masks[i]) >= thr inside the integer-expanded box.
__global__ void paste_kernel(const float* __restrict__ masks, const float* __restrict__ boxes, int64_t n,
                             int64_t h, int64_t w, bool* __restrict__ out, int64_t H, int64_t W, float thr) {
  const int64_t total = n * H * W;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t x = idx % W;
    const int64_t y = (idx / W) % H;
    const int64_t i = idx / (W * H);
    const float* b = boxes + 4 * i;
    int64_t c0, c1, r0, r1;
    mask_ops::paste_range(b[0], b[2], W, &c0, &c1);
    mask_ops::paste_range(b[1], b[3], H, &r0, &r1);
    bool v = false;
    if (x >= c0 && x < c1 && y >= r0 && y < r1) {
      const float sx = mask_ops::paste_grid(x, b[0], b[2], w);
      const float sy = mask_ops::paste_grid(y, b[1], b[3], h);
      v = mask_ops::grid_sample_value(masks + i * h * w, h, w, sx, sy) >= thr;
    }
    out[idx] = v;
  }
}

}  // namespace

at::Tensor resize_threshold_cuda(const at::Tensor& input, int64_t out_h, int64_t out_w, double threshold, bool grid_sample) {
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor x = input.contiguous();
  const int64_t n = x.size(0), h = x.size(1), w = x.size(2);
  at::Tensor out = at::empty({n, out_h, out_w}, x.options().dtype(at::kBool));
  if (out.numel() == 0) return out;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (grid_sample) {
    at::Tensor boxes = at::empty({n, 4}, x.options());
    boxes.select(1, 0).fill_(0), boxes.select(1, 1).fill_(0);
    boxes.select(1, 2).fill_(static_cast<double>(out_w)), boxes.select(1, 3).fill_(static_cast<double>(out_h));
    paste_kernel<<<num_blocks(out.numel()), kThreads, 0, stream>>>(
        x.data_ptr<float>(), boxes.data_ptr<float>(), n, h, w, out.data_ptr<bool>(), out_h, out_w,
        static_cast<float>(threshold));
  } else {
    at::Tensor box = at::empty({n, 4}, x.options().dtype(at::kLong));
    box.select(1, 0).fill_(0), box.select(1, 1).fill_(w), box.select(1, 2).fill_(0), box.select(1, 3).fill_(h);
    interp_threshold_kernel<<<num_blocks(out.numel()), kThreads, 0, stream>>>(
        x.data_ptr<float>(), box.data_ptr<int64_t>(), n, h, w, out.data_ptr<bool>(), out_h, out_w,
        static_cast<float>(threshold));
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor assemble_masks_cuda(const at::Tensor& protos, const at::Tensor& coeffs, const at::Tensor& boxes, int64_t out_h, int64_t out_w, double threshold, int64_t crop_padding) {
  const c10::cuda::CUDAGuard guard(protos.device());
  const int64_t n = coeffs.size(0), hp = protos.size(1), wp = protos.size(2);
  at::Tensor out = at::empty({n, out_h, out_w}, protos.options().dtype(at::kBool));
  if (out.numel() == 0) return out;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  at::Tensor m = yolact_proto_masks(protos, coeffs).permute({2, 0, 1}).contiguous();  // (N, Hp, Wp)
  const at::Tensor b = boxes.contiguous();
  at::Tensor box = at::empty({n, 4}, protos.options().dtype(at::kLong));
  yolact_crop_kernel<<<num_blocks(m.numel()), kThreads, 0, stream>>>(
      m.data_ptr<float>(), b.data_ptr<float>(), n, hp, wp, crop_padding, box.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  interp_threshold_kernel<<<num_blocks(out.numel()), kThreads, 0, stream>>>(
      m.data_ptr<float>(), box.data_ptr<int64_t>(), n, hp, wp, out.data_ptr<bool>(), out_h, out_w,
      static_cast<float>(threshold));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor paste_masks_cuda(const at::Tensor& masks, const at::Tensor& boxes, int64_t img_h, int64_t img_w, double threshold) {
  const c10::cuda::CUDAGuard guard(masks.device());
  const at::Tensor m = masks.contiguous();
  const at::Tensor b = boxes.contiguous();
  const int64_t n = m.size(0);
  at::Tensor out = at::empty({n, img_h, img_w}, m.options().dtype(at::kBool));
  if (out.numel() == 0) return out;
  paste_kernel<<<num_blocks(out.numel()), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      m.data_ptr<float>(), b.data_ptr<float>(), n, m.size(1), m.size(2), out.data_ptr<bool>(), img_h, img_w,
      static_cast<float>(threshold));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace d2ext
