// CPU kernels of the panoptic-evaluation ops (eval_ops.h).
#include "evaluation/eval_ops.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <unordered_map>
#include <utility>
#include <vector>

namespace d2ext {

namespace {

constexpr int64_t kIdLimit = int64_t(1) << 24;  // ids are 24-bit RGB colours

// PNG's Paeth predictor (PNG spec, section 9.4), branch-free: pa = |p - a| = |b - c|, etc.
inline int paeth(int a, int b, int c) {
  const int pa = std::abs(b - c), pb = std::abs(a - c), pc = std::abs(a + b - 2 * c);
  return (pa <= pb && pa <= pc) ? a : (pb <= pc ? b : c);
}

inline bool all_zero(const uint8_t* p, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if (p[i]) return false;
  }
  return true;
}

// Reverses one scanline's filter: raw holds the filtered bytes, prev the previous unfiltered
// scanline (zeros for the first), cur receives the unfiltered bytes (PNG spec, section 9).
// BPP (bytes per pixel) is a template argument so the per-pixel loops unroll; panoptic PNGs are
// mostly flat, so a row of zero differences under None/Sub/Up is a fill or a copy.
template <int BPP>
void unfilter_row(uint8_t filter, const uint8_t* raw, uint8_t* cur, const uint8_t* prev, int64_t stride) {
  if (filter <= 2 && all_zero(raw, stride)) {
    if (filter == 2) {
      std::memcpy(cur, prev, stride);
    } else {
      std::memset(cur, 0, stride);
    }
    return;
  }
  switch (filter) {
    case 0:
      std::memcpy(cur, raw, stride);
      break;
    case 1:
      for (int k = 0; k < BPP; ++k) cur[k] = raw[k];
      for (int64_t i = BPP; i < stride; i += BPP) {
        for (int k = 0; k < BPP; ++k) cur[i + k] = static_cast<uint8_t>(raw[i + k] + cur[i + k - BPP]);
      }
      break;
    case 2:
      for (int64_t i = 0; i < stride; ++i) cur[i] = static_cast<uint8_t>(raw[i] + prev[i]);
      break;
    case 3:
      for (int k = 0; k < BPP; ++k) cur[k] = static_cast<uint8_t>(raw[k] + (prev[k] >> 1));
      for (int64_t i = BPP; i < stride; i += BPP) {
        for (int k = 0; k < BPP; ++k) {
          cur[i + k] = static_cast<uint8_t>(raw[i + k] + ((static_cast<int>(cur[i + k - BPP]) + prev[i + k]) >> 1));
        }
      }
      break;
    case 4:
      for (int k = 0; k < BPP; ++k) cur[k] = static_cast<uint8_t>(raw[k] + prev[k]);  // paeth(0, b, 0) = b
      for (int64_t i = BPP; i < stride; i += BPP) {
        // flat regions: with a zero difference, left == up-left gives up (per byte, pa <= pb
        // fails unless b == c, then both are a) and up == up-left gives left (pa = 0)
        if (all_zero(raw + i, BPP)) {
          if (std::memcmp(cur + i - BPP, prev + i - BPP, BPP) == 0) {
            std::memcpy(cur + i, prev + i, BPP);
            continue;
          }
          if (std::memcmp(prev + i, prev + i - BPP, BPP) == 0) {
            std::memcpy(cur + i, cur + i - BPP, BPP);
            continue;
          }
        }
        for (int k = 0; k < BPP; ++k) {
          cur[i + k] = static_cast<uint8_t>(raw[i + k] + paeth(cur[i + k - BPP], prev[i + k], prev[i + k - BPP]));
        }
      }
      break;
    default:
      TORCH_CHECK_VALUE(false, "corrupt PNG: scanline filter type ", static_cast<int>(filter), " (valid: 0-4)");
  }
}

// rgb2id of one unfiltered scanline
template <int BPP>
void row_ids(const uint8_t* cur, int64_t width, int32_t* o) {
  for (int64_t x = 0; x < width; ++x) {
    const uint8_t* px = cur + x * BPP;
    o[x] = static_cast<int32_t>(px[0]) | (static_cast<int32_t>(px[1]) << 8) | (static_cast<int32_t>(px[2]) << 16);
  }
}

template <int BPP>
void decode_ids(const uint8_t* in, int64_t height, int64_t width, int32_t* ids) {
  const int64_t stride = width * BPP;
  std::vector<uint8_t> rows(2 * static_cast<size_t>(stride), 0);
  uint8_t* prev = rows.data();
  uint8_t* cur = rows.data() + stride;
  for (int64_t y = 0; y < height; ++y) {
    const uint8_t* line = in + y * (stride + 1);
    unfilter_row<BPP>(line[0], line + 1, cur, prev, stride);
    int32_t* o = ids + y * width;
    if (y > 0 && std::memcmp(cur, prev, stride) == 0) {
      std::memcpy(o, o - width, width * sizeof(int32_t));
    } else {
      row_ids<BPP>(cur, width, o);
    }
    std::swap(prev, cur);
  }
}

template <typename T>
void count_pairs(const T* g, const T* p, int64_t n, std::unordered_map<int64_t, int64_t>* counts) {
  // runs of one (gt, pred) pair are long in segmentations: one hash update per run
  int64_t key = -1, run = 0;
  for (int64_t k = 0; k < n; ++k) {
    const int64_t a = static_cast<int64_t>(g[k]), b = static_cast<int64_t>(p[k]);
    TORCH_CHECK_VALUE(a >= 0 && a < kIdLimit && b >= 0 && b < kIdLimit,
                      "segment ids must be in [0, 2^24), got gt ", a, " and pred ", b, " at pixel ", k);
    const int64_t kk = (a << 24) | b;
    if (kk == key) {
      ++run;
    } else {
      if (run) (*counts)[key] += run;
      key = kk;
      run = 1;
    }
  }
  if (run) (*counts)[key] += run;
}

}  // namespace

at::Tensor png_panoptic_ids(const at::Tensor& raw, int64_t height, int64_t width, int64_t channels) {
  TORCH_CHECK(raw.device().is_cpu() && raw.scalar_type() == at::kByte && raw.dim() == 1,
              "raw must be a 1-D uint8 CPU tensor, got ", raw.scalar_type(), " ", raw.sizes());
  TORCH_CHECK_VALUE(channels == 3 || channels == 4, "channels must be 3 (RGB) or 4 (RGBA), got ", channels);
  TORCH_CHECK_VALUE(height >= 0 && width >= 0, "PNG size must be >= 0, got ", height, "x", width);
  const int64_t stride = width * channels;
  TORCH_CHECK_VALUE(raw.numel() == height * (stride + 1), "corrupt PNG: the image data has ", raw.numel(),
                    " bytes, a ", width, "x", height, " image with ", channels, " channels needs ",
                    height * (stride + 1));
  const at::Tensor src = raw.contiguous();
  const uint8_t* in = src.data_ptr<uint8_t>();
  at::Tensor out = at::empty({height, width}, src.options().dtype(at::kInt));
  if (channels == 3) {
    decode_ids<3>(in, height, width, out.data_ptr<int32_t>());
  } else {
    decode_ids<4>(in, height, width, out.data_ptr<int32_t>());
  }
  return out;
}

std::tuple<at::Tensor, at::Tensor> id_pair_counts(const at::Tensor& gt, const at::Tensor& pred) {
  TORCH_CHECK(gt.device().is_cpu() && pred.device().is_cpu(), "id maps must be CPU tensors");
  TORCH_CHECK_VALUE(gt.sizes() == pred.sizes(), "id maps must have one shape, got ", gt.sizes(), " and ",
                    pred.sizes());
  TORCH_CHECK_VALUE(gt.scalar_type() == pred.scalar_type() &&
                        (gt.scalar_type() == at::kInt || gt.scalar_type() == at::kLong),
                    "id maps must both be int32 or both int64, got ", gt.scalar_type(), " and ", pred.scalar_type());
  const at::Tensor g = gt.contiguous(), p = pred.contiguous();
  std::unordered_map<int64_t, int64_t> counts;
  counts.reserve(256);
  if (g.scalar_type() == at::kInt) {
    count_pairs(g.data_ptr<int32_t>(), p.data_ptr<int32_t>(), g.numel(), &counts);
  } else {
    count_pairs(g.data_ptr<int64_t>(), p.data_ptr<int64_t>(), g.numel(), &counts);
  }
  std::vector<std::pair<int64_t, int64_t>> sorted(counts.begin(), counts.end());
  std::sort(sorted.begin(), sorted.end());
  const auto n = static_cast<int64_t>(sorted.size());
  at::Tensor keys = at::empty({n}, g.options().dtype(at::kLong));
  at::Tensor cnt = at::empty({n}, g.options().dtype(at::kLong));
  int64_t* kp = keys.data_ptr<int64_t>();
  int64_t* cp = cnt.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) kp[i] = sorted[i].first, cp[i] = sorted[i].second;
  return {keys, cnt};
}

}  // namespace d2ext
