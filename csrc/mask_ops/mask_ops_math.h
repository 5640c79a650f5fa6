// Per-pixel arithmetic of the mask ops, shared by the CPU (at::parallel_for) and CUDA kernels so
// that the CPU tests exercise the very arithmetic the GPU runs.
//
// Every function replays, rounding step by rounding step in float32, what the torch reference
// computes on an AVX2/AVX512 CPU (where ATen's kernels are compiled with FMA contraction; checked
// bit for bit against torch 2.14):
//  * interp_tap:        F.interpolate(mode="bilinear", align_corners=False) source index/weights:
//                       src = fma(scale, dst + 0.5, -0.5), clamped at 0; i1 clamped to the edge;
//  * interp_value:      its 2-D sum, rows outer: t0 * w0 + t1 * w1 = fma(t0, w0, t1 * w1);
//  * paste_grid:        D2 _do_paste_mask's grid ((p + 0.5 - b0) / (b1 - b0)) * 2 - 1 (separate
//                       tensor ops, no FMA) and grid_sample's unnormalize fma(g + 1, size / 2, -0.5);
//  * grid_tap/grid_sample_combine/grid_sample_value: grid_sample's zero-padded bilinear sum
//                       fma(se, ., fma(sw, ., fma(ne, ., nw*.)));
//  * yolact_crop_range: dbolya/yolact sanitize_coordinates(cast=False) + crop's integer test.
// mul()/add() are never contracted (on the device they are __fmul_rn/__fadd_rn; the host build has
// no -mfma/-march flags), fmadd() is always one rounding (fmaf / __fmaf_rn). On a CPU without FMA,
// torch rounds twice where fmadd rounds once: at most 1 ulp, so only pixels within 1 ulp of the
// threshold can differ there.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define D2EXT_HOST_DEVICE __host__ __device__
#else
#define D2EXT_HOST_DEVICE
#endif

namespace d2ext {
namespace mask_ops {

D2EXT_HOST_DEVICE inline float mul(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

D2EXT_HOST_DEVICE inline float add(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

// a * b + c with a single rounding
D2EXT_HOST_DEVICE inline float fmadd(float a, float b, float c) {
#ifdef __CUDA_ARCH__
  return __fmaf_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

// One axis of F.interpolate(bilinear, align_corners=False): out = in[i0] * l0 + in[i1] * l1.
struct LinearTap {
  int64_t i0;
  int64_t i1;
  float l0;
  float l1;
};

// scale = (float)in_size / out_size, as ATen computes it when no scale_factor is given.
D2EXT_HOST_DEVICE inline float interp_scale(int64_t in_size, int64_t out_size) {
  return static_cast<float>(in_size) / static_cast<float>(out_size);
}

D2EXT_HOST_DEVICE inline LinearTap interp_tap(int64_t dst, int64_t in_size, float scale) {
  float src = fmadd(scale, static_cast<float>(dst) + 0.5f, -0.5f);
  src = src < 0.f ? 0.f : src;
  LinearTap t;
  int64_t i0 = static_cast<int64_t>(floorf(src));
  t.i0 = i0 < in_size - 1 ? i0 : in_size - 1;
  float l1 = src - static_cast<float>(t.i0);
  l1 = l1 < 0.f ? 0.f : (l1 > 1.f ? 1.f : l1);
  t.i1 = t.i0 + (t.i0 < in_size - 1 ? 1 : 0);
  t.l1 = l1;
  t.l0 = 1.f - l1;
  return t;
}

D2EXT_HOST_DEVICE inline float interp_value(
    float a, float b, float c, float d, const LinearTap& ty, const LinearTap& tx) {
  const float top = fmadd(a, tx.l0, mul(b, tx.l1));
  const float bot = fmadd(c, tx.l0, mul(d, tx.l1));
  return fmadd(top, ty.l0, mul(bot, ty.l1));
}

// grid_sample source coordinate (in mask pixels) of output pixel `p` for the box edge b0..b1.
D2EXT_HOST_DEVICE inline float paste_grid(int64_t p, float b0, float b1, int64_t mask_size) {
  const float g = add(mul((static_cast<float>(p) + 0.5f - b0) / (b1 - b0), 2.f), -1.f);
  const float half = static_cast<float>(mask_size) / 2.f;
  return fmadd(g + 1.f, half, -0.5f);
}

// One axis of grid_sample(bilinear, padding_mode="zeros") at source coordinate c on an axis of
// `size` pixels: neighbours i0 (valid iff v0) and i0 + 1 (valid iff v1), weights l0 = 1 - frac
// and l1 = frac. The CPU kernel computes it once per output column (and once per row), not per
// pixel. Float comparisons: also false for NaN/inf, where ATen's int conversion gives INT_MIN.
struct GridTap {
  int64_t i0;
  bool v0;
  bool v1;
  float l0;
  float l1;
};

D2EXT_HOST_DEVICE inline GridTap grid_tap(float c, int64_t size) {
  const float f = floorf(c);
  GridTap t;
  t.l1 = c - f;
  t.l0 = 1.f - t.l1;
  t.v0 = f > -1.f && f < static_cast<float>(size);
  t.v1 = f >= -1.f && f < static_cast<float>(size - 1);
  t.i0 = t.v0 || t.v1 ? static_cast<int64_t>(f) : 0;
  return t;
}

// grid_sample's bilinear sum of the four neighbours (0 where out of range; their possibly NaN
// weight still enters the sum, as in ATen): fma(se, ., fma(sw, ., fma(ne, ., nw * .))).
D2EXT_HOST_DEVICE inline float grid_sample_combine(
    float v_nw, float v_ne, float v_sw, float v_se, const GridTap& ty, const GridTap& tx) {
  const float nw = mul(ty.l0, tx.l0);
  const float ne = mul(ty.l0, tx.l1);
  const float sw = mul(ty.l1, tx.l0);
  const float se = mul(ty.l1, tx.l1);
  return fmadd(v_se, se, fmadd(v_sw, sw, fmadd(v_ne, ne, mul(v_nw, nw))));
}

// grid_sample(bilinear, padding_mode="zeros") of the (h, w) row-major map m at (x, y).
D2EXT_HOST_DEVICE inline float grid_sample_value(const float* m, int64_t h, int64_t w, float x, float y) {
  const GridTap tx = grid_tap(x, w);
  const GridTap ty = grid_tap(y, h);
  float v_nw = 0.f, v_ne = 0.f, v_sw = 0.f, v_se = 0.f;
  if (ty.v0 || ty.v1) {
    const float* r0 = m + ty.i0 * w;
    if (ty.v0 && tx.v0) v_nw = r0[tx.i0];
    if (ty.v0 && tx.v1) v_ne = r0[tx.i0 + 1];
    if (ty.v1 && tx.v0) v_sw = r0[w + tx.i0];
    if (ty.v1 && tx.v1) v_se = r0[w + tx.i0 + 1];
  }
  return grid_sample_combine(v_nw, v_ne, v_sw, v_se, ty, tx);
}

// Index of a tap's first neighbour in the axis zero-padded by 1 in front and 2 behind
// (size + 3): neighbours i0 + 1 and i0 + 2 of the padded axis hold exactly the values
// grid_sample reads, 0 where out of range; a tap with no valid neighbour points at the two
// trailing zeros. Lets the CPU row loop read without branches.
D2EXT_HOST_DEVICE inline int64_t grid_tap_padded(const GridTap& t, int64_t size) {
  return t.v0 || t.v1 ? t.i0 + 1 : size + 1;
}

// The integer-expanded paste region of D2 on CPU: [floor(b0) - 1, ceil(b1) + 1) clipped to
// [0, size); lo >= hi means empty (also for non-finite edges).
D2EXT_HOST_DEVICE inline void paste_range(float b0, float b1, int64_t size, int64_t* lo, int64_t* hi) {
  const float fsize = static_cast<float>(size);
  float l = floorf(b0) - 1.f;
  float h = ceilf(b1) + 1.f;
  if (!(l == l) || !(h == h)) {  // NaN
    *lo = 0;
    *hi = 0;
    return;
  }
  l = l < 0.f ? 0.f : (l > fsize ? fsize : l);
  h = h < 0.f ? 0.f : (h > fsize ? fsize : h);
  *lo = static_cast<int64_t>(l);
  *hi = static_cast<int64_t>(h);
}

// YOLACT crop: proto column c survives iff lo <= c < hi, with (in float, as the original)
// x1 = clamp(min(a, b) * size - pad, min=0), x2 = clamp(max(a, b) * size + pad, max=size) and
// c >= x1 <=> c >= ceil(x1), c < x2 <=> c < ceil(x2).
D2EXT_HOST_DEVICE inline void yolact_crop_range(
    float a, float b, int64_t size, int64_t pad, int64_t* lo, int64_t* hi) {
  const float fsize = static_cast<float>(size);
  const float pa = mul(a, fsize);
  const float pb = mul(b, fsize);
  if (!(pa == pa) || !(pb == pb)) {  // torch.min/max propagate NaN: nothing survives
    *lo = 0;
    *hi = 0;
    return;
  }
  float x1 = (pa < pb ? pa : pb) - static_cast<float>(pad);
  float x2 = (pa < pb ? pb : pa) + static_cast<float>(pad);
  x1 = x1 < 0.f ? 0.f : x1;
  x2 = x2 > fsize ? fsize : x2;
  x1 = ceilf(x1);
  x2 = ceilf(x2);
  x1 = x1 > fsize ? fsize : x1;
  x2 = x2 < 0.f ? 0.f : x2;
  *lo = static_cast<int64_t>(x1);
  *hi = static_cast<int64_t>(x2);
}

// Output positions [first, last) whose bilinear taps touch proto columns [lo, hi): the only
// ones that can be non-zero after the crop (taps are monotone in the output position).
D2EXT_HOST_DEVICE inline bool tap_touches(const LinearTap& t, int64_t lo, int64_t hi) {
  return t.i1 >= lo && t.i0 < hi;
}

}  // namespace mask_ops
}  // namespace d2ext
