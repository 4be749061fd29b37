// The CPU reduction loops. This file is compiled once per instruction set
// (TOTALNORM_ISA = portable, avx2) and must include no torch header: an inline
// function compiled for AVX2 must never be shared with the portable build.
// Both builds run the same operations in the same order with -ffp-contract=off,
// so they return bitwise-identical results.

#include <cmath>
#include <cstdint>
#include <algorithm>
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

// Float64 sums are cascaded so that their error does not grow with the length
// of a run of equal values: each lane adds kRunSteps vector steps (a run), and
// the run sums enter a pairwise tree (PairwiseSum). A sum of n contributions
// then rounds about kRunSteps + log2(n / kRun) times along any path, instead of
// up to n / kStep times (2.7e-13 relative on 131,075 equal values, past the
// SPEC's 1e-13). The scalar loops (general p, complex) use runs of kScalarRun.
constexpr int64_t kRunSteps = 16;
constexpr int64_t kRun = kRunSteps * kStep;
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

// Sum of a sequence of values in a pairwise tree whose shape depends only on the
// number of values: value k is added to the partial of values [k - 2^j, k) for
// each trailing 1 bit j of k (a binary counter), and total() adds the remaining
// partials from the shortest to the longest. Each value goes through at most
// log2(count) + 1 additions.
template <class V>
class PairwiseSum {
 public:
  void add(V v) {
    int level = 0;
    for (uint64_t c = count_; c & 1; c >>= 1, ++level) v = partial_[level] + v;
    partial_[level] = v;
    ++count_;
  }

  V total() const {
    V acc = splat<V>(0.0);
    for (int level = 0; level < kLevels; ++level) {
      if ((count_ >> level) & 1) acc = partial_[level] + acc;
    }
    return acc;
  }

 private:
  static constexpr int kLevels = 64;
  V partial_[kLevels];  // partial_[j] is meaningful when bit j of count_ is set
  uint64_t count_ = 0;
};

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
    double acc = identity_of(O);
    for (int64_t i = 0; i < n; ++i) acc = combine_partials(O, acc, contribution(i));
    return acc;
  }
}

template <ElemKind K>
constexpr int64_t elem_size() {
  return (K == ElemKind::Double) ? 8 : (K == ElemKind::Float) ? 4 : 2;
}

// One vector step per chain: elements [i, i + kStep) into the four chains.
template <Order O, ElemKind K>
void step(v4d (&chain)[kChains], const char* base, int64_t i, double p) {
  using Op = NormOp<O>;
  constexpr int64_t size = elem_size<K>();
  __builtin_prefetch(base + i * size + kPrefetchBytes);
  for (int64_t c = 0; c < kChains; ++c) {
    const v4d x = load4<K>(base + (i + c * kLanes) * size);
    // x * x needs no |x|.
    const v4d a = O == Order::Two ? x : abs4(x);
    chain[c] = Op::combine(chain[c], Op::contribution(a, p));
  }
}

// Real elements: vector chains over the body, lanes combined in a fixed order,
// then the tail. Sums restart the chains every run (kRun elements) and add the
// run sums pairwise; max and min keep their chains over the whole body.
template <Order O, ElemKind K>
double reduce_real(const void* data, int64_t begin, int64_t end, double p) {
  using Op = NormOp<O>;
  const char* base = static_cast<const char*>(data);
  constexpr int64_t size = elem_size<K>();
  auto tail = [&](int64_t j) { return Op::contribution(std::fabs(load1<K>(base + (begin + j) * size)), p); };
  if constexpr (O == Order::General) {
    return reduce_scalar<O>(end - begin, tail);
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
        const int64_t stop = std::min(end - kStep, i + kRun - kStep);
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
template <Order O, ElemKind Part>
double reduce_complex(const void* data, int64_t begin, int64_t end, double p) {
  const char* base = static_cast<const char*>(data) + 2 * begin * elem_size<Part>();
  constexpr int64_t size = elem_size<Part>();
  return reduce_scalar<O>(end - begin, [&](int64_t i) {
    return complex_contribution<O>(load1<Part>(base + 2 * i * size), load1<Part>(base + (2 * i + 1) * size), p);
  });
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
