// Fused top-k similarity search on the CPU: the k largest query @ bank.T per query row.
//
// The similarities never reach memory. Threads split the bank into contiguous ranges of rows
// and walk them in bank order; for kRows bank rows x kCols queries at a time the micro-tile
// (micro_tile.h) computes the dot products in registers, and one vector comparison per
// register against the queries' thresholds rejects almost every score. Each thread keeps a
// running top-k per query as a binary heap whose root is the worst kept entry (its value is
// the threshold); a candidate enters only if it ranks above the root. At the end each query's
// per-thread heaps are merged. Rank order is torch.sort's descending stable order: NaN above
// everything, then larger values, then lower bank indices among equal values; the heaps hold
// integer rank keys (rank_key) so that this order takes integer comparisons only.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <utility>
#include <vector>

#include "common.h"
#include "cpu/micro_tile.h"
#include "cpu/ops.h"

namespace webda::cpu {
namespace {

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

// Bytes of bank rows one group of blocks reads: they stay in L2 while every query panel uses them.
constexpr int64_t kGroupBytes = 256 << 10;

// One thread's running top-k of every query: heaps (rank keys, bank indices) of k entries,
// how many each holds, and the threshold a score must exceed to be offered: NaN while the
// heap fills (every score passes), then the root's value (+inf once the root is NaN: only a
// NaN passes, and loses to it on the index).
template <typename V> struct ThreadTopK {
  int64_t k;
  std::vector<int64_t> keys, indices, filled;
  std::vector<V> threshold;

  ThreadTopK(int64_t queries, int64_t columns, int64_t k)
      : k(k), keys(queries * k), indices(queries * k), filled(queries, 0),
        threshold(columns, std::numeric_limits<V>::quiet_NaN()) {}

  // Offers bank row `index` with similarity `score` to query q. Within a thread the indices
  // only grow, so an equal value never enters a full heap (the kept one has the lower index).
  void offer(int64_t q, V score, int64_t index) {
    RowHeap heap{keys.data() + q * k, indices.data() + q * k};
    const int64_t key = rank_key(score);
    if (filled[q] < k) {
      heap.push(filled[q]++, key, index);
      if (filled[q] < k) return;
    } else if (key > heap.key[0]) {
      heap.replace_root(k, key, index);
    } else {
      return;
    }
    const V root = value_of<V>(heap.key[0]);
    threshold[q] = std::isnan(root) ? std::numeric_limits<V>::infinity() : root;
  }
};

// Scores of kRows bank rows (from `first`, `valid` of them real) against the kCols queries from
// q0 whose transposed panel (depth x kCols) is `panel`, offered to `top`.
template <typename V>
void search_tile(const V* const (&rows)[kRows], int64_t valid, int64_t first, const V* panel, int64_t q0,
                 int64_t depth, int64_t queries, ThreadTopK<V>& top) {
  using Vector = typename Vec<V>::type;
  constexpr int W = Vec<V>::kWidth;
  Vector acc[kRows][kVectors] = {};
  micro_tile<V, true>(RowPointers<V>{rows, 1}, panel, Vec<V>::kCols, Vec<V>::kCols, depth, acc);
  Vector threshold[kVectors];
  for (int v = 0; v < kVectors; ++v) threshold[v] = *reinterpret_cast<const Vector*>(top.threshold.data() + q0 + v * W);
  typename Vec<V>::mask passes = {};
  for (int r = 0; r < kRows; ++r)
    for (int v = 0; v < kVectors; ++v) passes |= ~(acc[r][v] <= threshold[v]);  // NaN scores pass
  bool any = false;
  for (int lane = 0; lane < W; ++lane) any |= passes[lane] != 0;
  if (!any) return;
  for (int r = 0; r < valid; ++r)
    for (int v = 0; v < kVectors; ++v)
      for (int lane = 0; lane < W; ++lane) {
        const int64_t q = q0 + v * W + lane;
        const V score = acc[r][v][lane];
        if (q < queries && !(score <= top.threshold[q])) top.offer(q, score, first + r);
      }
}

// values, indices (queries, k) of query (queries x depth) against bank rows (rows x depth, row
// stride bank_stride), both contiguous along depth.
template <typename V>
void search(const V* query, const V* bank, int64_t bank_stride, int64_t queries, int64_t rows, int64_t depth,
            int64_t k, V* values, int64_t* indices) {
  constexpr int64_t kCols = Vec<V>::kCols;
  // The queries in panels of kCols, each transposed (depth x kCols, zero past the last query):
  // a panel stays in L1 while a group of bank blocks whose rows fit in L2 runs against it.
  const int64_t panels = ceil_div(queries, kCols), columns = panels * kCols;
  std::vector<V> qt(depth * columns, V(0));
  for (int64_t q = 0; q < queries; ++q)
    for (int64_t i = 0; i < depth; ++i) qt[((q / kCols) * depth + i) * kCols + q % kCols] = query[q * depth + i];
  const int threads = omp_get_max_threads();
  std::vector<ThreadTopK<V>> tops;
  for (int t = 0; t < threads; ++t) tops.emplace_back(queries, columns, k);
  const int64_t blocks = ceil_div(rows, kRows);
  const int64_t group = std::max<int64_t>(1, kGroupBytes / (kRows * std::max<int64_t>(depth, 1) * int64_t(sizeof(V))));
#pragma omp parallel num_threads(threads)
  {
    const int64_t id = omp_get_thread_num(), count = omp_get_num_threads();
    const int64_t last = blocks * (id + 1) / count;
    ThreadTopK<V>& top = tops[id];
    for (int64_t group_first = blocks * id / count; group_first < last; group_first += group)
      for (int64_t panel = 0; panel < panels; ++panel)
        for (int64_t block = group_first; block < std::min(last, group_first + group); ++block) {
          const int64_t first = block * kRows, valid = std::min<int64_t>(kRows, rows - first);
          const V* a[kRows];
          for (int r = 0; r < kRows; ++r) a[r] = bank + (first + std::min<int64_t>(r, valid - 1)) * bank_stride;
          search_tile(a, valid, first, qt.data() + panel * depth * kCols, panel * kCols, depth, queries, top);
        }
  }
#pragma omp parallel if (queries * k * threads > (1 << 14))
  {
    std::vector<std::pair<int64_t, int64_t>> entries;  // (rank key, -index): descending = output order
#pragma omp for schedule(static)
    for (int64_t q = 0; q < queries; ++q) {
      entries.clear();
      for (const ThreadTopK<V>& top : tops)
        for (int64_t i = 0; i < top.filled[q]; ++i) entries.emplace_back(top.keys[q * k + i], -top.indices[q * k + i]);
      std::partial_sort(entries.begin(), entries.begin() + k, entries.end(), std::greater<>());
      for (int64_t i = 0; i < k; ++i) {
        values[q * k + i] = value_of<V>(entries[i].first);
        indices[q * k + i] = -entries[i].second;
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

void topk_similarity_search(uintptr_t query, uintptr_t bank, int64_t bank_stride, int64_t queries, int64_t rows,
                            int64_t depth, int64_t k, uintptr_t values, uintptr_t indices, int dtype) {
  check(queries >= 0 && depth >= 0 && k >= 1 && rows >= k && bank_stride >= depth,
        "topk_similarity_search: sizes must satisfy queries, depth >= 0, 1 <= k <= rows, bank_stride >= depth");
  dispatch_score_dtype(dtype, "topk_similarity_search", [&](auto tag) {
    using V = decltype(tag);
    search(reinterpret_cast<const V*>(query), reinterpret_cast<const V*>(bank), bank_stride, queries, rows, depth, k,
           reinterpret_cast<V*>(values), reinterpret_cast<int64_t*>(indices));
  });
}

}  // namespace webda::cpu
