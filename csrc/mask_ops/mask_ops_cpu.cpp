// CPU kernels of the mask ops: at::parallel_for over output rows; each row task computes the
// per-pixel math of mask_ops_math.h inside the box footprint only, and writes false outside it
// unless the output came zero-filled from the OS (empty_bool_output), so no full-size float
// tensor and no separate zero-fill pass exist.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "mask_ops/mask_ops.h"
#include "mask_ops/mask_ops_math.h"

namespace d2ext {

using mask_ops::LinearTap;

namespace {

// The (N, H, W) bool output. On Linux a large output is a fresh anonymous mapping, which the
// kernel hands out zero-filled, 2 MiB-aligned and advised to use transparent huge pages:
//  * the row loops then write only the pixels inside each box footprint (zeroed = true), so the
//    ~100 MB of false pixels of 100 masks at 800x1333 are never written by us at all;
//  * the pages that are written fault in as huge pages: first-touching 107 MB in 4 KiB pages
//    costs ~40 ms of page faults on a 2-core CPU, more than the sampling itself.
// Elsewhere (or if mmap fails) it is an ordinary allocation and the loops write the zeros.
struct BoolOutput {
  at::Tensor tensor;
  bool zeroed;
};

BoolOutput empty_bool_output(int64_t n, int64_t h, int64_t w, const at::TensorOptions& like) {
  const size_t bytes = static_cast<size_t>(n) * static_cast<size_t>(h) * static_cast<size_t>(w);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr size_t kHugePage = size_t(2) << 20;
  if (bytes >= 2 * kHugePage) {
    const size_t padded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
    const size_t len = padded + kHugePage;  // room to align the start to a huge page
    void* base = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base != MAP_FAILED) {
      const uintptr_t aligned = (reinterpret_cast<uintptr_t>(base) + kHugePage - 1) & ~(kHugePage - 1);
      void* data = reinterpret_cast<void*>(aligned);
      madvise(data, padded, MADV_HUGEPAGE);
      at::Tensor t = at::from_blob(
          data, {n, h, w}, [base, len](void*) { munmap(base, len); }, like.dtype(at::kBool));
      return {t, true};
    }
  }
#endif
  return {at::empty({n, h, w}, like.dtype(at::kBool)), false};
}

// Rows per parallel task: enough to amortise scheduling, small enough to balance 100 boxes.
constexpr int64_t kRowGrain = 16;

// The per-row loops are built twice, for x86-64 with FMA (fmadd is then one instruction) and for
// the baseline (fmadd is a libm call), picked at load time; results are identical.
#if defined(__x86_64__) && defined(__linux__)
#define D2EXT_FMA_CLONES __attribute__((target_clones("fma", "default")))
#else
#define D2EXT_FMA_CLONES
#endif

// one output row [c0, c1) of a bilinear resize + "> thr" (rows row0/row1 of the input)
D2EXT_FMA_CLONES void interp_row(const float* row0, const float* row1, const LinearTap& t_y, const LinearTap* tx,
                                 int64_t c0, int64_t c1, float thr, bool* o) {
  for (int64_t x = c0; x < c1; ++x) {
    const LinearTap& t = tx[x];
    o[x] = mask_ops::interp_value(row0[t.i0], row0[t.i1], row1[t.i0], row1[t.i1], t_y, t) > thr;
  }
}

// one output row, columns [c0, c1), of D2's paste: grid_sample at (column tap tx[x - c0], row
// tap t_y) then ">= thr"; r0/r1 are the tap's two rows of the zero-padded map and px[x - c0] the
// columns' padded indices (mask_ops::grid_tap_padded), so the loop has no branch.
D2EXT_FMA_CLONES void paste_row(const float* r0, const float* r1, const mask_ops::GridTap& t_y,
                                const mask_ops::GridTap* tx, const int32_t* px, int64_t c0, int64_t c1, float thr,
                                bool* o) {
  const int64_t len = c1 - c0;
  o += c0;
  for (int64_t k = 0; k < len; ++k) {
    const int32_t j = px[k];
    o[k] = mask_ops::grid_sample_combine(r0[j], r0[j + 1], r1[j], r1[j + 1], t_y, tx[k]) >= thr;
  }
}

// out[n] = F.interpolate(m[n], (H, W), bilinear) > thr, where m[n] is zero outside proto rows
// [box[4n+2], box[4n+3]) x cols [box[4n], box[4n+1]) (already cropped): the output is computed
// only on the pixels whose taps touch that box and is false elsewhere.
void interp_threshold_rows(
    const float* m, int64_t n, int64_t hp, int64_t wp, const std::vector<int64_t>& box, bool* out,
    int64_t H, int64_t W, float thr, bool zeroed) {
  std::vector<LinearTap> tx(W), ty(H);
  const float sx = mask_ops::interp_scale(wp, W), sy = mask_ops::interp_scale(hp, H);
  for (int64_t x = 0; x < W; ++x) tx[x] = mask_ops::interp_tap(x, wp, sx);
  for (int64_t y = 0; y < H; ++y) ty[y] = mask_ops::interp_tap(y, hp, sy);
  // footprint per detection: output cols [fp[4i], fp[4i+1]), rows [fp[4i+2], fp[4i+3])
  std::vector<int64_t> fp(4 * n);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t x0 = box[4 * i], x1 = box[4 * i + 1], y0 = box[4 * i + 2], y1 = box[4 * i + 3];
    int64_t c0 = 0, c1 = 0, r0 = 0, r1 = 0;
    if (x0 < x1 && y0 < y1) {
      while (c0 < W && !mask_ops::tap_touches(tx[c0], x0, x1)) ++c0;
      c1 = c0;
      while (c1 < W && mask_ops::tap_touches(tx[c1], x0, x1)) ++c1;
      while (r0 < H && !mask_ops::tap_touches(ty[r0], y0, y1)) ++r0;
      r1 = r0;
      while (r1 < H && mask_ops::tap_touches(ty[r1], y0, y1)) ++r1;
    }
    fp[4 * i] = c0, fp[4 * i + 1] = c1, fp[4 * i + 2] = r0, fp[4 * i + 3] = r1;
  }
  at::parallel_for(0, n * H, kRowGrain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t i = r / H, y = r % H;
      bool* o = out + r * W;
      const int64_t c0 = fp[4 * i], c1 = fp[4 * i + 1];
      if (y < fp[4 * i + 2] || y >= fp[4 * i + 3] || c0 >= c1) {
        if (!zeroed) std::memset(o, 0, W);
        continue;
      }
      if (!zeroed) {
        std::memset(o, 0, c0);
        std::memset(o + c1, 0, W - c1);
      }
      const LinearTap& t_y = ty[y];
      interp_row(m + (i * hp + t_y.i0) * wp, m + (i * hp + t_y.i1) * wp, t_y, tx.data(), c0, c1, thr, o);
    }
  });
}

// out[n] = D2 paste of masks[n] (h x w) into boxes[n] (absolute XYXY), ">= thr", computed on the
// integer-expanded box only. The grid_sample taps are computed once per box column and per row
// (not per pixel), and each mask is read from a copy zero-padded as grid_tap_padded expects.
void paste_rows(const float* masks, const float* boxes, int64_t n, int64_t h, int64_t w, bool* out,
                int64_t H, int64_t W, float thr, bool zeroed) {
  // region per box (cols [reg[4i], reg[4i+1]), rows [reg[4i+2], reg[4i+3])) and its column
  // taps, shared by all rows of the box: tx[off[i] + x - c0]
  std::vector<int64_t> reg(4 * n), off(n + 1, 0);
  for (int64_t i = 0; i < n; ++i) {
    const float* b = boxes + 4 * i;
    mask_ops::paste_range(b[0], b[2], W, &reg[4 * i], &reg[4 * i + 1]);
    mask_ops::paste_range(b[1], b[3], H, &reg[4 * i + 2], &reg[4 * i + 3]);
    off[i + 1] = off[i] + std::max<int64_t>(reg[4 * i + 1] - reg[4 * i], 0);
  }
  const int64_t ph = h + 3, pw = w + 3;  // 1 zero row/column in front, 2 behind
  std::vector<mask_ops::GridTap> tx(off[n]);
  std::vector<int32_t> px(off[n]);
  std::vector<float> padded(static_cast<size_t>(n) * ph * pw, 0.f);
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      for (int64_t x = reg[4 * i]; x < reg[4 * i + 1]; ++x) {
        const int64_t k = off[i] + x - reg[4 * i];
        tx[k] = mask_ops::grid_tap(mask_ops::paste_grid(x, boxes[4 * i], boxes[4 * i + 2], w), w);
        px[k] = static_cast<int32_t>(mask_ops::grid_tap_padded(tx[k], w));
      }
      if (reg[4 * i] >= reg[4 * i + 1] || reg[4 * i + 2] >= reg[4 * i + 3]) continue;
      float* p = padded.data() + i * ph * pw;
      for (int64_t y = 0; y < h; ++y) std::memcpy(p + (y + 1) * pw + 1, masks + (i * h + y) * w, w * sizeof(float));
    }
  });
  at::parallel_for(0, n * H, kRowGrain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t i = r / H, y = r % H;
      bool* o = out + r * W;
      const int64_t c0 = reg[4 * i], c1 = reg[4 * i + 1];
      if (y < reg[4 * i + 2] || y >= reg[4 * i + 3] || c0 >= c1) {
        if (!zeroed) std::memset(o, 0, W);
        continue;
      }
      if (!zeroed) {
        std::memset(o, 0, c0);
        std::memset(o + c1, 0, W - c1);
      }
      const mask_ops::GridTap t_y = mask_ops::grid_tap(mask_ops::paste_grid(y, boxes[4 * i + 1], boxes[4 * i + 3], h), h);
      const float* r0 = padded.data() + (i * ph + mask_ops::grid_tap_padded(t_y, h)) * pw;
      paste_row(r0, r0 + pw, t_y, tx.data() + off[i], px.data() + off[i], c0, c1, thr, o);
    }
  });
}

}  // namespace

at::Tensor resize_threshold_cpu(const at::Tensor& input, int64_t out_h, int64_t out_w, double threshold, bool grid_sample) {
  const at::Tensor x = input.contiguous();
  const int64_t n = x.size(0), h = x.size(1), w = x.size(2);
  auto [out, zeroed] = empty_bool_output(n, out_h, out_w, x.options());
  if (out.numel() == 0) return out;
  if (grid_sample) {
    at::Tensor boxes = at::empty({n, 4}, x.options());
    boxes.select(1, 0).fill_(0), boxes.select(1, 1).fill_(0);
    boxes.select(1, 2).fill_(static_cast<double>(out_w)), boxes.select(1, 3).fill_(static_cast<double>(out_h));
    paste_rows(x.data_ptr<float>(), boxes.data_ptr<float>(), n, h, w, out.data_ptr<bool>(), out_h, out_w,
               static_cast<float>(threshold), zeroed);
  } else {
    std::vector<int64_t> box(4 * n);
    for (int64_t i = 0; i < n; ++i) box[4 * i] = 0, box[4 * i + 1] = w, box[4 * i + 2] = 0, box[4 * i + 3] = h;
    interp_threshold_rows(x.data_ptr<float>(), n, h, w, box, out.data_ptr<bool>(), out_h, out_w,
                          static_cast<float>(threshold), zeroed);
  }
  return out;
}

at::Tensor assemble_masks_cpu(const at::Tensor& protos, const at::Tensor& coeffs, const at::Tensor& boxes, int64_t out_h, int64_t out_w, double threshold, int64_t crop_padding) {
  const int64_t n = coeffs.size(0), hp = protos.size(1), wp = protos.size(2);
  auto [out, zeroed] = empty_bool_output(n, out_h, out_w, protos.options());
  if (out.numel() == 0) return out;
  const at::Tensor hwn = yolact_proto_masks(protos, coeffs).contiguous();  // (Hp, Wp, N)
  const at::Tensor b = boxes.contiguous();
  const float* bp = b.data_ptr<float>();
  std::vector<int64_t> crop(4 * n);  // x0, x1, y0, y1 in proto pixels
  for (int64_t i = 0; i < n; ++i) {
    mask_ops::yolact_crop_range(bp[4 * i], bp[4 * i + 2], wp, crop_padding, &crop[4 * i], &crop[4 * i + 1]);
    mask_ops::yolact_crop_range(bp[4 * i + 1], bp[4 * i + 3], hp, crop_padding, &crop[4 * i + 2], &crop[4 * i + 3]);
  }
  // crop at proto resolution (m * keep, as the original: NaN * 0 stays NaN), fused with the
  // (Hp, Wp, N) -> (N, Hp, Wp) transpose
  at::Tensor m = at::empty({n, hp, wp}, hwn.options());
  const float* src = hwn.data_ptr<float>();
  float* mp = m.data_ptr<float>();
  at::parallel_for(0, hp, 1, [&](int64_t begin, int64_t end) {
    for (int64_t y = begin; y < end; ++y) {
      for (int64_t x = 0; x < wp; ++x) {
        const float* s = src + (y * wp + x) * n;
        for (int64_t i = 0; i < n; ++i) {
          const int64_t* c = &crop[4 * i];
          const bool in = x >= c[0] && x < c[1] && y >= c[2] && y < c[3];
          mp[(i * hp + y) * wp + x] = s[i] * (in ? 1.f : 0.f);
        }
      }
    }
  });
  interp_threshold_rows(mp, n, hp, wp, crop, out.data_ptr<bool>(), out_h, out_w, static_cast<float>(threshold),
                        zeroed);
  return out;
}

at::Tensor paste_masks_cpu(const at::Tensor& masks, const at::Tensor& boxes, int64_t img_h, int64_t img_w, double threshold) {
  const at::Tensor m = masks.contiguous();
  const at::Tensor b = boxes.contiguous();
  const int64_t n = m.size(0);
  auto [out, zeroed] = empty_bool_output(n, img_h, img_w, m.options());
  if (out.numel() == 0) return out;
  paste_rows(m.data_ptr<float>(), b.data_ptr<float>(), n, m.size(1), m.size(2), out.data_ptr<bool>(), img_h,
             img_w, static_cast<float>(threshold), zeroed);
  return out;
}

}  // namespace d2ext
