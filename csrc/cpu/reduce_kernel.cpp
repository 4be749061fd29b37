// The CPU reduction loops. This file is compiled once per instruction set
// (TOTALNORM_ISA = portable, avx2) and must include no torch header: an inline
// function compiled for AVX2 must never be shared with the portable build.
// Both builds run the same operations in the same order with -ffp-contract=off,
// so they return bitwise-identical results.

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#if defined(__AVX2__) || defined(__F16C__)
#include <immintrin.h>
#endif

#include "kernels.h"

namespace totalnorm::cpu::TOTALNORM_ISA {
namespace {

using v4d = double __attribute__((vector_size(32)));
using v4f = float __attribute__((vector_size(16)));
using v4u32 = uint32_t __attribute__((vector_size(16)));
using v4u16 = uint16_t __attribute__((vector_size(8)));
using v4i64 = int64_t __attribute__((vector_size(32)));

// Elements a vector step reads: four vectors of four lanes, independent chains.
constexpr int64_t kLanes = 4;
constexpr int64_t kChains = 4;
constexpr int64_t kStep = kLanes * kChains;
// Software prefetch distance: helps the 16-bit types keep the memory busy.
constexpr int64_t kPrefetchBytes = 8192;

float half_to_float(uint16_t h) {
  const int exponent = (h >> 10) & 0x1f;
  const uint32_t mantissa = h & 0x3ffu;
  float magnitude;
  if (exponent == 0) {
    magnitude = std::ldexp(static_cast<float>(mantissa), -24);  // zero or subnormal
  } else if (exponent == 31) {
    magnitude = mantissa ? std::numeric_limits<float>::quiet_NaN()
                         : std::numeric_limits<float>::infinity();
  } else {
    const uint32_t bits = (static_cast<uint32_t>(exponent + 112) << 23) | (mantissa << 13);
    std::memcpy(&magnitude, &bits, sizeof(magnitude));
  }
  return (h & 0x8000u) ? -magnitude : magnitude;
}

float bfloat16_to_float(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

template <ElemKind K>
double load1(const char* p) {
  if constexpr (K == ElemKind::Float) {
    float x;
    std::memcpy(&x, p, sizeof(x));
    return x;
  } else if constexpr (K == ElemKind::Double) {
    double x;
    std::memcpy(&x, p, sizeof(x));
    return x;
  } else {
    uint16_t u;
    std::memcpy(&u, p, sizeof(u));
    if constexpr (K == ElemKind::Half) {
#if defined(__F16C__)
      return _cvtsh_ss(u);
#else
      return half_to_float(u);
#endif
    } else {
      return bfloat16_to_float(u);
    }
  }
}

// Four consecutive elements starting at p, widened to float64 (exactly). The
// AVX2 build spells out the widening loads GCC does not find by itself.
template <ElemKind K>
v4d load4(const char* p) {
  if constexpr (K == ElemKind::Double) {
    v4d x;
    std::memcpy(&x, p, sizeof(x));
    return x;
  } else if constexpr (K == ElemKind::Float) {
#if defined(__AVX2__)
    return _mm256_cvtps_pd(_mm_loadu_ps(reinterpret_cast<const float*>(p)));
#else
    v4f x;
    std::memcpy(&x, p, sizeof(x));
    return __builtin_convertvector(x, v4d);
#endif
  } else if constexpr (K == ElemKind::BFloat16) {
#if defined(__AVX2__)
    const __m128i bits = _mm_slli_epi32(_mm_cvtepu16_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))), 16);
    return _mm256_cvtps_pd(_mm_castsi128_ps(bits));
#else
    v4u16 u;
    std::memcpy(&u, p, sizeof(u));
    const v4u32 bits = __builtin_convertvector(u, v4u32) << 16;
    v4f x;
    std::memcpy(&x, &bits, sizeof(x));
    return __builtin_convertvector(x, v4d);
#endif
  } else {
#if defined(__F16C__) && defined(__AVX2__)
    return _mm256_cvtps_pd(_mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
#else
    return v4d{load1<K>(p), load1<K>(p + 2), load1<K>(p + 4), load1<K>(p + 6)};
#endif
  }
}

v4d abs4(v4d x) {
  v4i64 bits;
  std::memcpy(&bits, &x, sizeof(bits));
  bits &= std::numeric_limits<int64_t>::max();
  std::memcpy(&x, &bits, sizeof(x));
  return x;
}

template <ElemKind K>
constexpr int64_t elem_size() {
  return (K == ElemKind::Double) ? 8 : (K == ElemKind::Float) ? 4 : 2;
}

// Real elements: vector chains over the body, lanes combined in a fixed order,
// then the tail.
template <Order O, ElemKind K>
double reduce_real(const void* data, int64_t begin, int64_t end, double p) {
  using Op = NormOp<O>;
  const char* base = static_cast<const char*>(data);
  constexpr int64_t size = elem_size<K>();
  int64_t i = begin;
  double acc = Op::identity;
  if constexpr (O == Order::General) {
    for (; i < end; ++i) acc = Op::combine(acc, Op::contribution(std::fabs(load1<K>(base + i * size)), p));
    return acc;
  } else {
    v4d chain[kChains];
    for (auto& c : chain) c = splat<v4d>(Op::identity);
    for (; i + kStep <= end; i += kStep) {
      __builtin_prefetch(base + i * size + kPrefetchBytes);
      for (int64_t c = 0; c < kChains; ++c) {
        const v4d x = load4<K>(base + (i + c * kLanes) * size);
        // x * x needs no |x|.
        const v4d a = O == Order::Two ? x : abs4(x);
        chain[c] = Op::combine(chain[c], Op::contribution(a, p));
      }
    }
    for (int64_t c = 1; c < kChains; ++c) chain[0] = Op::combine(chain[0], chain[c]);
    for (int64_t l = 0; l < kLanes; ++l) acc = Op::combine(acc, static_cast<double>(chain[0][l]));
    for (; i < end; ++i) acc = Op::combine(acc, Op::contribution(std::fabs(load1<K>(base + i * size)), p));
    return acc;
  }
}

// Complex elements as (re, im) pairs; p = 2 is routed to reduce_real instead.
template <Order O, ElemKind Part>
double reduce_complex(const void* data, int64_t begin, int64_t end, double p) {
  const char* base = static_cast<const char*>(data);
  constexpr int64_t size = elem_size<Part>();
  double acc = identity_of(O);
  for (int64_t i = begin; i < end; ++i) {
    const double re = load1<Part>(base + 2 * i * size);
    const double im = load1<Part>(base + (2 * i + 1) * size);
    acc = combine_partials(O, acc, complex_contribution<O>(re, im, p));
  }
  return acc;
}

template <Order O>
double reduce_order(double p, ElemKind kind, const void* data, int64_t begin, int64_t end) {
  switch (kind) {
    case ElemKind::Half:
      return reduce_real<O, ElemKind::Half>(data, begin, end, p);
    case ElemKind::BFloat16:
      return reduce_real<O, ElemKind::BFloat16>(data, begin, end, p);
    case ElemKind::Float:
      return reduce_real<O, ElemKind::Float>(data, begin, end, p);
    case ElemKind::Double:
      return reduce_real<O, ElemKind::Double>(data, begin, end, p);
    case ElemKind::ComplexFloat:
      // |z|^2 = re^2 + im^2: the sum of squares of all parts.
      if constexpr (O == Order::Two) return reduce_real<O, ElemKind::Float>(data, 2 * begin, 2 * end, p);
      return reduce_complex<O, ElemKind::Float>(data, begin, end, p);
    case ElemKind::ComplexDouble:
      if constexpr (O == Order::Two) return reduce_real<O, ElemKind::Double>(data, 2 * begin, 2 * end, p);
      return reduce_complex<O, ElemKind::Double>(data, begin, end, p);
  }
  return identity_of(O);
}

double reduce(Order order, double p, ElemKind kind, const void* data, int64_t begin, int64_t end) {
  switch (order) {
    case Order::Zero:
      return reduce_order<Order::Zero>(p, kind, data, begin, end);
    case Order::One:
      return reduce_order<Order::One>(p, kind, data, begin, end);
    case Order::Two:
      return reduce_order<Order::Two>(p, kind, data, begin, end);
    case Order::Inf:
      return reduce_order<Order::Inf>(p, kind, data, begin, end);
    case Order::NegInf:
      return reduce_order<Order::NegInf>(p, kind, data, begin, end);
    case Order::General:
      return reduce_order<Order::General>(p, kind, data, begin, end);
  }
  return identity_of(order);
}

}  // namespace

Kernels kernels() {
#define TOTALNORM_STR2(x) #x
#define TOTALNORM_STR(x) TOTALNORM_STR2(x)
  return Kernels{TOTALNORM_STR(TOTALNORM_ISA), &reduce};
#undef TOTALNORM_STR
#undef TOTALNORM_STR2
}

}  // namespace totalnorm::cpu::TOTALNORM_ISA
