// Panoptic-evaluation ops (Python face: d2ext/evaluation/panoptic_quality.py), CPU only: they
// run on decoded PNGs and id maps that live on the host. Each has a pure-numpy/OpenCV
// equivalent there with identical results.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace d2ext {

// COCO panoptic PNG pixels -> segment ids. `raw` is the inflated IDAT stream of a
// non-interlaced 8-bit PNG with `channels` (3: RGB, 4: RGBA) samples per pixel: `height` rows
// of one filter-type byte followed by width * channels bytes. Reverses the PNG filters (None,
// Sub, Up, Average, Paeth) and returns (height, width) int32 ids R + 256 G + 256^2 B (panopticapi's
// rgb2id; alpha is ignored, as there).
at::Tensor png_panoptic_ids(const at::Tensor& raw, int64_t height, int64_t width, int64_t channels);

// The overlaps of two id maps of one shape (int32 or int64, ids in [0, 2^24)): sorted unique keys
// gt * 2^24 + pred and their pixel counts (int64), i.e. panopticapi's
// np.unique(gt * OFFSET + pred, return_counts=True) in one pass.
std::tuple<at::Tensor, at::Tensor> id_pair_counts(const at::Tensor& gt, const at::Tensor& pred);

}  // namespace d2ext
