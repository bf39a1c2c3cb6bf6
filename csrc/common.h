// Shared definitions of the webda_kernels extension: dtype codes, half-precision
// conversions on the CPU, and argument checks. No torch headers (docs/design.md, "Build").
#pragma once

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace webda {

// Must match webda_kernels/_extension.py DTYPE_CODES.
enum DType : int { kFloat16 = 0, kBFloat16 = 1, kFloat32 = 2, kFloat64 = 3 };

constexpr int kMaxDims = 8;

inline void check(bool ok, const std::string& message) {
  if (!ok) throw std::invalid_argument(message);
}

inline float float_from_bits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline uint32_t bits_of(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  return bits;
}

// IEEE binary16 <-> float, round to nearest even (CPU side; CUDA uses cuda_fp16.h).
inline float half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t man = h & 0x3ff;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (man << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (man << 13);
  } else if (man == 0) {
    bits = sign;
  } else {  // subnormal half: normalise
    int shift = 0;
    while (!(man & 0x400)) { man <<= 1; ++shift; }
    man &= 0x3ff;
    bits = sign | ((uint32_t)(113 - shift) << 23) | (man << 13);
  }
  return float_from_bits(bits);
}

inline uint16_t float_to_half(float f) {
  uint32_t x = bits_of(f);
  uint32_t sign = (x >> 16) & 0x8000;
  uint32_t absx = x & 0x7fffffffu;
  if (absx >= 0x7f800000u) return (uint16_t)(sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0));
  if (absx >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);  // rounds to inf
  if (absx < 0x38800000u) {  // subnormal or zero in half
    // 2^-24 is the smallest half subnormal; the add rounds to nearest even in float.
    uint32_t s = bits_of(float_from_bits(absx) + 0.5f);
    return (uint16_t)(sign | (s - 0x3f000000u));
  }
  uint32_t mant_odd = (absx >> 13) & 1;
  absx += 0xc8000fffu + mant_odd;  // rebias exponent (-112 << 23) and round to nearest even
  return (uint16_t)(sign | (absx >> 13));
}

inline float bfloat16_to_float(uint16_t b) { return float_from_bits((uint32_t)b << 16); }

inline uint16_t float_to_bfloat16(float f) {
  uint32_t x = bits_of(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40);  // quiet NaN
  x += 0x7fffu + ((x >> 16) & 1);  // round to nearest even
  return (uint16_t)(x >> 16);
}

// Storage types with float load/store, so one template serves every dtype.
struct Half { uint16_t bits; };
struct BFloat16 { uint16_t bits; };

template <typename T> struct Scalar {
  using acc = T;
  static inline acc load(const T& v) { return v; }
  static inline T store(acc v) { return v; }
};
template <> struct Scalar<float> {
  using acc = float;
  static inline float load(const float& v) { return v; }
  static inline float store(float v) { return v; }
};
template <> struct Scalar<Half> {
  using acc = float;
  static inline float load(const Half& v) { return half_to_float(v.bits); }
  static inline Half store(float v) { return Half{float_to_half(v)}; }
};
template <> struct Scalar<BFloat16> {
  using acc = float;
  static inline float load(const BFloat16& v) { return bfloat16_to_float(v.bits); }
  static inline BFloat16 store(float v) { return BFloat16{float_to_bfloat16(v)}; }
};

// Calls f(T{}) with the storage type T of a dtype code, the 16-bit ones being F16 and BF16.
template <typename F16, typename BF16, typename F> void dispatch_dtype_as(int dtype, F&& f) {
  switch (dtype) {
    case kFloat16: f(F16{}); break;
    case kBFloat16: f(BF16{}); break;
    case kFloat32: f(float{}); break;
    case kFloat64: f(double{}); break;
    default: throw std::invalid_argument("unsupported dtype code " + std::to_string(dtype));
  }
}

// The CPU kernels' storage types (cuda_common.cuh dispatches to CUDA's own).
template <typename F> void dispatch_dtype(int dtype, F&& f) { dispatch_dtype_as<Half, BFloat16>(dtype, f); }

// Calls f(T{}) for the float32 / float64 dtype codes and nothing for the others (the kernels
// that take only those two check the code first).
template <typename F> void dispatch_float(int dtype, F&& f) {
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) f(tag);
  });
}

}  // namespace webda
