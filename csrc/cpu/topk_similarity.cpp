// Streaming top-k selection on the CPU: the fused selection half of topk_similarity.
//
// Python computes the similarities tile by tile (torch.mm into one reused buffer) and hands
// each tile here. Every query row keeps a running top-k as a binary heap whose root is the
// worst kept entry; a candidate enters only if it ranks above the root, so after the first
// tiles almost every score is rejected by one comparison with the row's threshold, tested
// 16 scores at a time. Rank order is torch.sort's descending stable order: NaN above
// everything, then larger values, then lower bank indices among equal values; the heaps
// hold integer rank keys (rank_key) so that this order takes integer comparisons only.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <utility>
#include <vector>

#include "common.h"
#include "cpu/ops.h"

namespace webda::cpu {
namespace {

template <typename V> struct SameSizeInt;
template <> struct SameSizeInt<float> { using type = int32_t; };
template <> struct SameSizeInt<double> { using type = int64_t; };

// A value as an integer whose order is the rank order: the bits made order-preserving as a
// signed integer, every NaN made one positive NaN (above +inf) and -0.0 made 0.0. Entries are
// ranked by (rank key descending, index ascending) with integer comparisons only.
template <typename V> inline int64_t rank_key(V v) {
  using I = typename SameSizeInt<V>::type;
  if (std::isnan(v)) v = std::numeric_limits<V>::quiet_NaN();
  if (v == 0) v = 0;
  I bits;
  std::memcpy(&bits, &v, sizeof bits);
  return bits < 0 ? bits ^ std::numeric_limits<I>::max() : bits;
}

template <typename V> inline V value_of(int64_t key) {
  using I = typename SameSizeInt<V>::type;
  const I bits = static_cast<I>(key < 0 ? key ^ std::numeric_limits<I>::max() : key);
  V v;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

// A row's running top-k: a heap over (rank key, index) pairs, the worst-ranked at 0.
struct RowHeap {
  int64_t* key;
  int64_t* idx;

  bool worse(int64_t i, int64_t j) const { return key[i] < key[j] || (key[i] == key[j] && idx[i] > idx[j]); }

  void swap_entries(int64_t i, int64_t j) {
    std::swap(key[i], key[j]);
    std::swap(idx[i], idx[j]);
  }

  // Appends at position `size` and restores the heap.
  void push(int64_t size, int64_t k, int64_t index) {
    key[size] = k;
    idx[size] = index;
    for (int64_t i = size; i > 0 && worse(i, (i - 1) / 2); i = (i - 1) / 2) swap_entries(i, (i - 1) / 2);
  }

  // Replaces the root of a heap of `size` entries and restores the heap.
  void replace_root(int64_t size, int64_t k, int64_t index) {
    key[0] = k;
    idx[0] = index;
    for (int64_t i = 0;;) {
      const int64_t left = 2 * i + 1, right = left + 1;
      if (left >= size) return;
      const int64_t child = right < size && worse(right, left) ? right : left;
      if (!worse(child, i)) return;
      swap_entries(i, child);
      i = child;
    }
  }
};

constexpr int64_t kBlock = 16;  // scores tested against the threshold per vector step

// Folds scores[0, cols) of one row (bank indices first_index..) into its full heap of k.
// Every candidate has a larger index than every kept entry, so it enters iff its value
// ranks strictly above the root's: iff !(x <= root) while the root is not NaN.
template <typename V>
void fold_into_full_heap(const V* scores, int64_t cols, int64_t first_index, RowHeap heap, int64_t k) {
  V threshold = value_of<V>(heap.key[0]);
  if (std::isnan(threshold)) return;  // k NaNs with lower indices: nothing later can enter
  auto offer = [&](int64_t j) {
    if (scores[j] <= threshold) return true;
    heap.replace_root(k, rank_key(scores[j]), first_index + j);
    threshold = value_of<V>(heap.key[0]);
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
void update(const V* scores, int64_t rows, int64_t cols, int64_t seen, int64_t* keys, int64_t* indices, int64_t k) {
  const int64_t filled = std::min(seen, k);
#pragma omp parallel for schedule(static) if (rows * cols > (1 << 14))
  for (int64_t r = 0; r < rows; ++r) {
    const V* row = scores + r * cols;
    RowHeap heap{keys + r * k, indices + r * k};
    int64_t j = 0;
    for (int64_t size = filled; size < k && j < cols; ++size, ++j) heap.push(size, rank_key(row[j]), seen + j);
    if (j < cols) fold_into_full_heap(row + j, cols - j, seen + j, heap, k);
  }
}

template <typename V> void finalize(const int64_t* keys, int64_t* indices, V* values, int64_t rows, int64_t k) {
#pragma omp parallel if (rows * k > (1 << 14))
  {
    std::vector<std::pair<int64_t, int64_t>> entries(k);  // (rank key, -index): descending = output order
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      int64_t* idx = indices + r * k;
      for (int64_t i = 0; i < k; ++i) entries[i] = {keys[r * k + i], -idx[i]};
      std::sort(entries.begin(), entries.end(), std::greater<>());
      for (int64_t i = 0; i < k; ++i) {
        values[r * k + i] = value_of<V>(entries[i].first);
        idx[i] = -entries[i].second;
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

void topk_similarity_update(uintptr_t scores, int64_t rows, int64_t cols, int64_t seen, uintptr_t keys,
                            uintptr_t indices, int64_t k, int dtype) {
  check(rows >= 0 && cols >= 0 && seen >= 0 && k >= 1, "topk_similarity_update: negative size or k < 1");
  dispatch_score_dtype(dtype, "topk_similarity_update", [&](auto tag) {
    using V = decltype(tag);
    update(reinterpret_cast<const V*>(scores), rows, cols, seen, reinterpret_cast<int64_t*>(keys),
           reinterpret_cast<int64_t*>(indices), k);
  });
}

void topk_similarity_finalize(uintptr_t keys, uintptr_t indices, uintptr_t values, int64_t rows, int64_t k,
                              int dtype) {
  check(rows >= 0 && k >= 1, "topk_similarity_finalize: rows < 0 or k < 1");
  dispatch_score_dtype(dtype, "topk_similarity_finalize", [&](auto tag) {
    using V = decltype(tag);
    finalize(reinterpret_cast<const int64_t*>(keys), reinterpret_cast<int64_t*>(indices), reinterpret_cast<V*>(values),
             rows, k);
  });
}

}  // namespace webda::cpu
