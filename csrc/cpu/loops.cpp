// The CPU reduction loops. This file is compiled once per instruction set
// (TOTALNORM_ISA = portable, avx2) and must include no torch header: an inline
// function compiled for AVX2 must never be shared with the portable build.
// Both builds run the same operations in the same order with -ffp-contract=off,
// so they return bitwise-identical results; where the AVX2 build fuses a
// multiply and an add, the product is exact, so the one rounding is the add's.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#if defined(__AVX2__) || defined(__F16C__)
#include <immintrin.h>
#endif

#include "loops.h"

namespace totalnorm::cpu::TOTALNORM_ISA {
namespace {

using v4d = double __attribute__((vector_size(32)));
using v4f = float __attribute__((vector_size(16)));
using v4u32 = uint32_t __attribute__((vector_size(16)));
using v4u16 = uint16_t __attribute__((vector_size(8)));
using v4i64 = int64_t __attribute__((vector_size(32)));
using v16u16 = uint16_t __attribute__((vector_size(32)));
using v16i16 = int16_t __attribute__((vector_size(32)));

// Lanes of a float64 vector; a vector step reads one vector per chain (below).
constexpr int64_t kLanes = 4;
// Software prefetch distance: helps the 16-bit types keep the memory busy.
constexpr int64_t kPrefetchBytes = 8192;

// Float64 sums are cascaded so that their error does not grow with the length
// of a run of equal values: each lane adds kRunSteps vector steps (a run), and
// the run sums enter a pairwise tree (PairwiseSum). A sum of n contributions
// then rounds about kRunSteps + log2(n / run length) times along any path,
// instead of once per vector step (2.7e-13 relative on 131,075 equal values,
// past the 1e-13 docs/semantics.md promises for float64). The scalar loops (general p, complex) use runs of
// kScalarRun elements.
constexpr int64_t kRunSteps = 16;
constexpr int64_t kScalarRun = 32;

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

template <Elem K>
double load1(const char* p) {
  if constexpr (K == Elem::Float) {
    float x;
    std::memcpy(&x, p, sizeof(x));
    return x;
  } else if constexpr (K == Elem::Double) {
    double x;
    std::memcpy(&x, p, sizeof(x));
    return x;
  } else {
    uint16_t u;
    std::memcpy(&u, p, sizeof(u));
    if constexpr (K == Elem::Half) {
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
template <Elem K>
v4d load4(const char* p) {
  if constexpr (K == Elem::Double) {
    v4d x;
    std::memcpy(&x, p, sizeof(x));
    return x;
  } else if constexpr (K == Elem::Float) {
#if defined(__AVX2__)
    return _mm256_cvtps_pd(_mm_loadu_ps(reinterpret_cast<const float*>(p)));
#else
    v4f x;
    std::memcpy(&x, p, sizeof(x));
    return __builtin_convertvector(x, v4d);
#endif
  } else if constexpr (K == Elem::BFloat16) {
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

// Sum orders cascade; max and min are exact in any order and keep one accumulator.
template <Order O>
constexpr bool kCascaded = O == Order::Zero || O == Order::One || O == Order::Two || O == Order::General;

// Combined contribution(i) for i in [0, n), in the fixed cascade order for sums.
template <Order O, class Contribution>
double reduce_scalar(int64_t n, Contribution&& contribution) {
  if constexpr (kCascaded<O>) {
    PairwiseSum<double> sum;
    for (int64_t i = 0; i < n;) {
      const int64_t stop = std::min(n, i + kScalarRun);
      double run = contribution(i);
      for (++i; i < stop; ++i) run += contribution(i);
      sum.add(run);
    }
    return sum.total();
  } else {
    double acc = NormOp<O>::identity;
    for (int64_t i = 0; i < n; ++i) acc = NormOp<O>::combine(acc, contribution(i));
    return acc;
  }
}

template <Elem K>
constexpr int64_t elem_size() {
  return (K == Elem::Double) ? 8 : (K == Elem::Float) ? 4 : 2;
}

template <Elem K>
constexpr bool kIs16Bit = K == Elem::Half || K == Elem::BFloat16;

// Chains of the vector loops: float64 elements keep four (a step reads 128
// bytes); the narrower ones, whose widening makes them compute-bound, take
// eight so that each chain's add (or fused multiply-add) has time to finish.
template <Elem K>
constexpr int64_t kChainsOf = K == Elem::Double ? 4 : 8;
template <Elem K>
constexpr int64_t kStepOf = kLanes * kChainsOf<K>;

// Sixteen 16-bit elements widened to float64, as four vectors of four
// consecutive elements: exactly what load4 gives at p, p + 8, p + 16, p + 24
// bytes. |x| (kAbs) clears the sign bits before the widening.
template <Elem K, bool kAbs>
void load16(const char* p, v4d* x) {
#if defined(__AVX2__) && defined(__F16C__)
  if constexpr (K == Elem::BFloat16) {
    __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    if constexpr (kAbs) raw = _mm256_and_si256(raw, _mm256_set1_epi16(0x7fff));
    // A bfloat16 is the upper half of its float: interleaving zeros below each
    // one gives elements 0-3 and 8-11 (a), 4-7 and 12-15 (b).
    const __m256i zero = _mm256_setzero_si256();
    const __m256 a = _mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, raw));
    const __m256 b = _mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, raw));
    x[0] = _mm256_cvtps_pd(_mm256_castps256_ps128(a));
    x[1] = _mm256_cvtps_pd(_mm256_castps256_ps128(b));
    x[2] = _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1));
    x[3] = _mm256_cvtps_pd(_mm256_extractf128_ps(b, 1));
  } else {
    // One conversion per four elements, from memory: the cheapest widening
    // of half values (a 256-bit vcvtph2ps costs more than two 128-bit ones).
    for (int64_t c = 0; c < 4; ++c) {
      const __m128 f = _mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 8 * c)));
      x[c] = _mm256_cvtps_pd(kAbs ? _mm_and_ps(f, _mm_castsi128_ps(_mm_set1_epi32(0x7fffffff))) : f);
    }
  }
#else
  for (int64_t c = 0; c < 4; ++c) {
    x[c] = load4<K>(p + c * 4 * elem_size<K>());
    if constexpr (kAbs) x[c] = abs4(x[c]);
  }
#endif
}

// The contributions of elements [i, i + kStepOf<K>) added into the chains,
// chain c taking elements i + 4c .. i + 4c + 3. Four chains at a time, so that
// the chains and the loaded values fit in the sixteen AVX registers.
template <Order O, Elem K>
void step(v4d (&chain)[kChainsOf<K>], const char* base, int64_t i, double p) {
  using Op = NormOp<O>;
  constexpr int64_t size = elem_size<K>();
  constexpr bool kAbs = O != Order::Two;  // x * x needs no |x|
  const char* at = base + i * size;
  __builtin_prefetch(at + kPrefetchBytes);
  if constexpr (kStepOf<K> * size > 64) __builtin_prefetch(at + kPrefetchBytes + 64);
  for (int64_t g = 0; g < kChainsOf<K>; g += 4) {
    v4d x[4];
    if constexpr (kIs16Bit<K>) {
      load16<K, kAbs>(at + g * kLanes * size, x);
    } else {
      for (int64_t c = 0; c < 4; ++c) {
        x[c] = load4<K>(at + (g + c) * kLanes * size);
        if constexpr (kAbs) x[c] = abs4(x[c]);
      }
    }
    for (int64_t c = 0; c < 4; ++c) {
      v4d& acc = chain[g + c];
#if defined(__FMA__)
      // Squares of values of float precision or less are exact in float64, so
      // the fused multiply-add rounds once, like acc + x * x does; |x| * 1 is
      // exact too. The multiply-add units take the adds off the pipes the
      // widening conversions use.
      if constexpr (O == Order::Two && K != Elem::Double) {
        acc = _mm256_fmadd_pd(x[c], x[c], acc);
        continue;
      } else if constexpr (O == Order::One && K != Elem::Double) {
        acc = _mm256_fmadd_pd(x[c], _mm256_set1_pd(1.0), acc);
        continue;
      }
#endif
      acc = Op::combine(acc, Op::contribution(x[c], p));
    }
  }
}

// Max, min and count of non-zeros of 16-bit elements, on their bits: with the
// sign cleared, the bit patterns of half and bfloat16 values order like the
// values, and every NaN orders above inf. Integer max/min and counts are exact,
// so any order gives the same result and nothing needs widening.
template <Order O, Elem K>
double reduce_bits16(const char* base, int64_t begin, int64_t end) {
  constexpr uint16_t kInfBits = K == Elem::BFloat16 ? 0x7f80 : 0x7c00;
  constexpr int64_t kWidth = 16;          // elements of one vector
  constexpr int64_t kFlushSteps = 16384;  // per-lane zero counts stay below 2^15
  v16u16 hi = {};
  v16u16 lo = hi - 1;  // all ones
  v16i16 zeros = {};   // minus the zeros seen per lane since the last flush
  int64_t zero_count = 0;
  auto flush = [&] {
    for (int64_t l = 0; l < kWidth; ++l) zero_count -= zeros[l];
    zeros = v16i16{};
  };
  int64_t i = begin;
  for (int64_t steps = 0; i + kWidth <= end; i += kWidth) {
    if ((i - begin) % 32 == 0) __builtin_prefetch(base + 2 * i + kPrefetchBytes);
    v16u16 x;
    std::memcpy(&x, base + 2 * i, sizeof(x));
    x &= 0x7fff;
    if constexpr (O == Order::Zero) {
      zeros += reinterpret_cast<v16i16>(x == 0);
      if (++steps == kFlushSteps) {
        flush();
        steps = 0;
      }
    } else {
      hi = x > hi ? x : hi;
      if constexpr (O == Order::NegInf) lo = x < lo ? x : lo;
    }
  }
  uint16_t max_bits = 0;
  uint16_t min_bits = 0xffff;
  for (int64_t l = 0; l < kWidth; ++l) {
    max_bits = std::max<uint16_t>(max_bits, hi[l]);
    min_bits = std::min<uint16_t>(min_bits, lo[l]);
  }
  flush();
  for (; i < end; ++i) {
    uint16_t u;
    std::memcpy(&u, base + 2 * i, sizeof(u));
    u &= 0x7fff;
    zero_count += u == 0;
    max_bits = std::max(max_bits, u);
    min_bits = std::min(min_bits, u);
  }
  auto value = [](uint16_t bits) {
    char raw[2];
    std::memcpy(raw, &bits, sizeof(bits));
    return load1<K>(raw);
  };
  if constexpr (O == Order::Zero) {
    return static_cast<double>((end - begin) - zero_count);
  } else if constexpr (O == Order::Inf) {
    return value(max_bits);  // 0 when empty, the identity
  } else {
    if (end == begin) return NormOp<O>::identity;
    return value(max_bits > kInfBits ? max_bits : min_bits);  // NaN anywhere gives NaN
  }
}

// Real elements: vector chains over the body, lanes combined in a fixed order,
// then the tail. Sums restart the chains every run (kRunSteps steps) and add the
// run sums pairwise; max and min keep their chains over the whole body.
template <Order O, Elem K>
double reduce_real(const void* data, int64_t begin, int64_t end, double p) {
  using Op = NormOp<O>;
  const char* base = static_cast<const char*>(data);
  constexpr int64_t size = elem_size<K>();
  constexpr int64_t kChains = kChainsOf<K>;
  constexpr int64_t kStep = kStepOf<K>;
  auto tail = [&](int64_t j) { return Op::contribution(std::fabs(load1<K>(base + (begin + j) * size)), p); };
  if constexpr (O == Order::General) {
    return reduce_scalar<O>(end - begin, tail);
  } else if constexpr (kIs16Bit<K> && (O == Order::Zero || O == Order::Inf || O == Order::NegInf)) {
    return reduce_bits16<O, K>(base, begin, end);
  } else {
    int64_t i = begin;
    v4d body;
    auto fold = [](v4d (&chain)[kChains]) {
      for (int64_t c = 1; c < kChains; ++c) chain[0] = Op::combine(chain[0], chain[c]);
      return chain[0];
    };
    if constexpr (kCascaded<O>) {
      PairwiseSum<v4d> sum;
      while (i + kStep <= end) {
        v4d chain[kChains];
        for (auto& c : chain) c = splat<v4d>(Op::identity);
        const int64_t stop = std::min(end - kStep, i + (kRunSteps - 1) * kStep);
        for (; i <= stop; i += kStep) step<O, K>(chain, base, i, p);
        sum.add(fold(chain));
      }
      body = sum.total();
    } else {
      v4d chain[kChains];
      for (auto& c : chain) c = splat<v4d>(Op::identity);
      for (; i + kStep <= end; i += kStep) step<O, K>(chain, base, i, p);
      body = fold(chain);
    }
    double acc = Op::identity;
    for (int64_t l = 0; l < kLanes; ++l) acc = Op::combine(acc, static_cast<double>(body[l]));
    for (; i < end; ++i) acc = Op::combine(acc, tail(i - begin));
    return acc;
  }
}

// Complex elements as (re, im) pairs; p = 2 is routed to reduce_real instead.
template <Order O, Elem Part>
double reduce_complex(const void* data, int64_t begin, int64_t end, double p) {
  const char* base = static_cast<const char*>(data) + 2 * begin * elem_size<Part>();
  constexpr int64_t size = elem_size<Part>();
  return reduce_scalar<O>(end - begin, [&](int64_t i) {
    return complex_contribution<O>(load1<Part>(base + 2 * i * size), load1<Part>(base + (2 * i + 1) * size), p);
  });
}

template <Order O>
double reduce_order(double p, Elem kind, const void* data, int64_t begin, int64_t end) {
  switch (kind) {
    case Elem::Half:
      return reduce_real<O, Elem::Half>(data, begin, end, p);
    case Elem::BFloat16:
      return reduce_real<O, Elem::BFloat16>(data, begin, end, p);
    case Elem::Float:
      return reduce_real<O, Elem::Float>(data, begin, end, p);
    case Elem::Double:
      return reduce_real<O, Elem::Double>(data, begin, end, p);
    case Elem::ComplexFloat:
      // |z|^2 = re^2 + im^2: the sum of squares of all parts.
      if constexpr (O == Order::Two) return reduce_real<O, Elem::Float>(data, 2 * begin, 2 * end, p);
      return reduce_complex<O, Elem::Float>(data, begin, end, p);
    case Elem::ComplexDouble:
      if constexpr (O == Order::Two) return reduce_real<O, Elem::Double>(data, 2 * begin, 2 * end, p);
      return reduce_complex<O, Elem::Double>(data, begin, end, p);
  }
  return NormOp<O>::identity;
}

double reduce(Order order, double p, Elem kind, const void* data, int64_t begin, int64_t end) {
  return dispatch_order(order, [&](auto o) { return reduce_order<decltype(o)::value>(p, kind, data, begin, end); });
}

}  // namespace

Loops loops() { return Loops{&reduce}; }

}  // namespace totalnorm::cpu::TOTALNORM_ISA
