// COCO run lengths of row-major masks (eval_ops.h). A column-major run ends exactly where a pixel
// differs from the one above it (same column) or, at the top of a column, from the bottom pixel
// of the previous column. The first kind is found by comparing each row with the previous one,
// whole rows then 64-byte blocks at a time (rows are mostly equal: run ends lie on object
// boundaries only); the
// ends, generated row by row, are then put in column-major order and differenced.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "evaluation/eval_ops.h"

namespace d2ext {

namespace {

inline uint64_t load8(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

// Column-major positions where a run ends (= the next starts) in one h x w mask, sorted, then
// turned into run lengths appended to `counts`.
void mask_run_lengths(const uint8_t* m, int64_t h, int64_t w, std::vector<int64_t>* ends,
                      std::vector<int64_t>* counts) {
  ends->clear();
  if (m[0]) ends->push_back(0);  // a mask starting with 1 has an empty leading run of 0s
  for (int64_t c = 1; c < w; ++c) {
    if ((m[c] != 0) != (m[(h - 1) * w + c - 1] != 0)) ends->push_back(c * h);
  }
  for (int64_t r = 1; r < h; ++r) {
    const uint8_t* above = m + (r - 1) * w;
    const uint8_t* row = m + r * w;
    if (std::memcmp(row, above, w) == 0) continue;  // most rows (libc's vectorised compare)
    int64_t c = 0;
    for (; c + 64 <= w; c += 64) {  // skip equal 64-byte blocks (the OR of XORs vectorises)
      uint64_t diff = 0;
      for (int k = 0; k < 64; k += 8) diff |= load8(row + c + k) ^ load8(above + c + k);
      if (diff == 0) continue;
      for (int64_t k = c; k < c + 64; ++k) {
        if ((row[k] != 0) != (above[k] != 0)) ends->push_back(k * h + r);
      }
    }
    for (; c < w; ++c) {
      if ((row[c] != 0) != (above[c] != 0)) ends->push_back(c * h + r);
    }
  }
  std::sort(ends->begin(), ends->end());
  int64_t prev = 0;
  for (const int64_t e : *ends) {
    counts->push_back(e - prev);
    prev = e;
  }
  counts->push_back(h * w - prev);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> rle_run_lengths(const at::Tensor& masks) {
  TORCH_CHECK(masks.device().is_cpu(), "masks must be a CPU tensor");
  TORCH_CHECK_VALUE(masks.dim() == 3, "masks must be (N, H, W), got ", masks.sizes());
  TORCH_CHECK_VALUE(masks.scalar_type() == at::kBool || masks.scalar_type() == at::kByte,
                    "masks must be bool or uint8, got ", masks.scalar_type());
  const int64_t n = masks.size(0), h = masks.size(1), w = masks.size(2);
  TORCH_CHECK_VALUE(h > 0 && w > 0, "masks must have a non-empty image size, got ", h, "x", w);
  // bool and uint8 share the byte layout; bool bytes are 0/1, uint8 "nonzero = 1" is compared
  const at::Tensor m = masks.contiguous();
  const uint8_t* data = static_cast<const uint8_t*>(m.data_ptr());
  std::vector<std::vector<int64_t>> per_mask(n);
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> ends;
    for (int64_t i = begin; i < end; ++i) mask_run_lengths(data + i * h * w, h, w, &ends, &per_mask[i]);
  });
  int64_t total = 0;
  for (const auto& v : per_mask) total += static_cast<int64_t>(v.size());
  at::Tensor counts = at::empty({total}, m.options().dtype(at::kLong));
  at::Tensor lengths = at::empty({n}, m.options().dtype(at::kLong));
  int64_t* cp = counts.data_ptr<int64_t>();
  int64_t* lp = lengths.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    std::copy(per_mask[i].begin(), per_mask[i].end(), cp);
    cp += per_mask[i].size();
    lp[i] = static_cast<int64_t>(per_mask[i].size());
  }
  return {counts, lengths};
}

}  // namespace d2ext
