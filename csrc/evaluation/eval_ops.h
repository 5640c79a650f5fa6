// Evaluation ops, CPU only (they run on predictions and ground truth that live on the host). Python
// face: d2ext/layers/eval_ops.py, with a pure-numpy reference of each giving identical results:
//  * panoptic (used by d2ext/evaluation/panoptic_png.py, panoptic_quality.py): PNG ids,
//    segment-pair overlaps;
//  * COCO (used by d2ext/evaluation/rle.py): column-major run lengths of row-major masks.
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

// COCO RLE run lengths of (N, H, W) row-major bool/uint8 masks (nonzero = foreground): the
// lengths of the alternating runs of 0s and 1s of each mask in column-major order, starting with
// 0s (pycocotools' uncompressed "counts"), without transposing copies. Returns (counts, lengths):
// all masks' counts concatenated and the number of counts of each mask.
std::tuple<at::Tensor, at::Tensor> rle_run_lengths(const at::Tensor& masks);

}  // namespace d2ext
