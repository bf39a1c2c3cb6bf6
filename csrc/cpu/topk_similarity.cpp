// Streaming top-k selection on the CPU: the fused selection half of topk_similarity.
//
// Python computes the similarities tile by tile (torch.mm into one reused buffer) and hands
// each tile here. Every query row keeps a running top-k as a binary heap whose root is the
// worst kept entry; a candidate enters only if it ranks above the root, so after the first
// tiles almost every score is rejected by one comparison with the row's threshold, tested
// 16 scores at a time. Rank order is torch.sort's descending stable order: NaN above
// everything, then larger values, then lower bank indices among equal values.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "common.h"
#include "cpu/ops.h"

namespace webda::cpu {
namespace {

// Whether (a, ia) comes before (b, ib) in the output: NaN first, then descending value,
// then ascending index (so -0.0 and 0.0 tie, as in torch.sort).
template <typename V> inline bool ranks_before(V a, int64_t ia, V b, int64_t ib) {
  if (std::isnan(a)) return !std::isnan(b) || ia < ib;
  if (std::isnan(b)) return false;
  if (a != b) return a > b;
  return ia < ib;
}

// A row's running top-k: a heap over `size` (value, index) pairs, the worst-ranked at 0.
template <typename V> struct RowHeap {
  V* val;
  int64_t* idx;

  bool worse(int64_t i, int64_t j) const { return ranks_before(val[j], idx[j], val[i], idx[i]); }

  void swap_entries(int64_t i, int64_t j) {
    std::swap(val[i], val[j]);
    std::swap(idx[i], idx[j]);
  }

  // Appends at position `size` and restores the heap.
  void push(int64_t size, V v, int64_t index) {
    val[size] = v;
    idx[size] = index;
    for (int64_t i = size; i > 0 && worse(i, (i - 1) / 2); i = (i - 1) / 2) swap_entries(i, (i - 1) / 2);
  }

  // Replaces the root of a heap of `size` entries and restores the heap.
  void replace_root(int64_t size, V v, int64_t index) {
    val[0] = v;
    idx[0] = index;
    for (int64_t i = 0;;) {
      int64_t worst = i;
      for (int64_t child = 2 * i + 1; child <= 2 * i + 2 && child < size; ++child) {
        if (worse(child, worst)) worst = child;
      }
      if (worst == i) return;
      swap_entries(i, worst);
      i = worst;
    }
  }
};

constexpr int64_t kBlock = 16;  // scores tested against the threshold per vector step

// Folds scores[0, cols) of one row (bank indices first_index..) into its full heap of k.
// Every candidate has a larger index than every kept entry, so it enters iff its value
// ranks strictly above the root's: iff !(x <= root) while the root is not NaN.
template <typename V>
void fold_into_full_heap(const V* scores, int64_t cols, int64_t first_index, RowHeap<V> heap, int64_t k) {
  V threshold = heap.val[0];
  if (std::isnan(threshold)) return;  // k NaNs with lower indices: nothing later can enter
  auto offer = [&](int64_t j) {
    if (scores[j] <= threshold) return true;
    heap.replace_root(k, scores[j], first_index + j);
    threshold = heap.val[0];
    return !std::isnan(threshold);
  };
  int64_t j = 0;
  for (; j + kBlock <= cols; j += kBlock) {
    int any = 0;
#pragma omp simd reduction(| : any)
    for (int64_t t = 0; t < kBlock; ++t) any |= !(scores[j + t] <= threshold);
    if (!any) continue;
    for (int64_t t = 0; t < kBlock; ++t) {
      if (!offer(j + t)) return;
    }
  }
  for (; j < cols; ++j) {
    if (!offer(j)) return;
  }
}

template <typename V>
void update(const V* scores, int64_t rows, int64_t cols, int64_t seen, V* values, int64_t* indices, int64_t k) {
  const int64_t filled = std::min(seen, k);
#pragma omp parallel for schedule(static) if (rows * cols > (1 << 14))
  for (int64_t r = 0; r < rows; ++r) {
    const V* row = scores + r * cols;
    RowHeap<V> heap{values + r * k, indices + r * k};
    int64_t j = 0;
    for (int64_t size = filled; size < k && j < cols; ++size, ++j) heap.push(size, row[j], seen + j);
    if (j < cols) fold_into_full_heap(row + j, cols - j, seen + j, heap, k);
  }
}

template <typename V> void finalize(V* values, int64_t* indices, int64_t rows, int64_t k) {
#pragma omp parallel if (rows * k > (1 << 14))
  {
    std::vector<std::pair<V, int64_t>> entries(k);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      V* val = values + r * k;
      int64_t* idx = indices + r * k;
      for (int64_t i = 0; i < k; ++i) entries[i] = {val[i], idx[i]};
      std::sort(entries.begin(), entries.end(),
                [](const auto& a, const auto& b) { return ranks_before(a.first, a.second, b.first, b.second); });
      for (int64_t i = 0; i < k; ++i) {
        val[i] = entries[i].first;
        idx[i] = entries[i].second;
      }
    }
  }
}

template <typename F> void dispatch_score_dtype(int dtype, const char* what, F&& f) {
  if (dtype == kFloat32) {
    f(float{});
  } else if (dtype == kFloat64) {
    f(double{});
  } else {
    throw std::invalid_argument(std::string(what) + ": scores must be float32 or float64, got dtype code " +
                                std::to_string(dtype));
  }
}

}  // namespace

void topk_similarity_update(uintptr_t scores, int64_t rows, int64_t cols, int64_t seen, uintptr_t values,
                            uintptr_t indices, int64_t k, int dtype) {
  check(rows >= 0 && cols >= 0 && seen >= 0 && k >= 1, "topk_similarity_update: negative size or k < 1");
  dispatch_score_dtype(dtype, "topk_similarity_update", [&](auto tag) {
    using V = decltype(tag);
    update(reinterpret_cast<const V*>(scores), rows, cols, seen, reinterpret_cast<V*>(values),
           reinterpret_cast<int64_t*>(indices), k);
  });
}

void topk_similarity_finalize(uintptr_t values, uintptr_t indices, int64_t rows, int64_t k, int dtype) {
  check(rows >= 0 && k >= 1, "topk_similarity_finalize: rows < 0 or k < 1");
  dispatch_score_dtype(dtype, "topk_similarity_finalize", [&](auto tag) {
    using V = decltype(tag);
    finalize(reinterpret_cast<V*>(values), reinterpret_cast<int64_t*>(indices), rows, k);
  });
}

}  // namespace webda::cpu
