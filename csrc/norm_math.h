#pragma once
// The per-order norm math, shared by the CPU kernels, the CUDA kernels and the
// host-side combine of per-device partials, so the backends cannot drift apart.
//
// A norm of order p is computed in three steps over float64 values:
//   contribution(|x|)  per element   (|x|^p, |x|, |x|^2, x != 0, ...)
//   combine(a, b)      of two partials (sum, max or min; NaN-propagating)
//   finalize(acc)      once at the end (acc^(1/p), sqrt, identity)
// The templates take any value type V that supports arithmetic and comparison:
// double on the host and device, and GCC vector types in the CPU kernels.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>

#if defined(__CUDACC__)
#define TOTALNORM_HD __host__ __device__ __forceinline__
#else
#define TOTALNORM_HD inline
#endif

// CPU kernels compiled for several instruction sets put this header in their
// own inline namespace, so an out-of-line copy never crosses between them.
#ifndef TOTALNORM_ISA
#define TOTALNORM_ISA portable
#endif

namespace totalnorm {

// The reductions a norm order maps to; each has its own fast path.
enum class Order : int8_t { Zero, One, Two, Inf, NegInf, General };

// The element types the kernels read; elements.h maps torch dtypes to them.
enum class Elem : uint8_t { Half, BFloat16, Float, Double, ComplexFloat, ComplexDouble };
constexpr size_t kElemCount = static_cast<size_t>(Elem::ComplexDouble) + 1;

inline namespace TOTALNORM_ISA {

// Maps norm_type to its reduction; p must not be NaN (callers check first).
TOTALNORM_HD Order classify_order(double p) {
  if (p == 0.0) return Order::Zero;
  if (p == 1.0) return Order::One;
  if (p == 2.0) return Order::Two;
  if (p == std::numeric_limits<double>::infinity()) return Order::Inf;
  if (p == -std::numeric_limits<double>::infinity()) return Order::NegInf;
  return Order::General;
}

// Broadcasts a scalar to V (a no-op for double, a splat for vector types).
template <class V>
TOTALNORM_HD V splat(double s) {
  return V{} + s;
}

// Maximum and minimum that return NaN when either side is NaN, like torch's amax.
template <class V>
TOTALNORM_HD V nan_max(V acc, V c) {
  return (c > acc || c != c) ? c : acc;
}
template <class V>
TOTALNORM_HD V nan_min(V acc, V c) {
  return (c < acc || c != c) ? c : acc;
}

template <Order O>
struct NormOp;

// The orders that add their contributions: identity 0, combine +.
struct SumOp {
  static constexpr double identity = 0.0;
  template <class V>
  static TOTALNORM_HD V combine(V acc, V c) {
    return acc + c;
  }
  static TOTALNORM_HD double finalize(double acc, double) { return acc; }
};

// The orders that keep the largest (Max) or smallest |x|, NaN-propagating.
template <bool Max>
struct ExtremeOp {
  static constexpr double identity = Max ? 0.0 : std::numeric_limits<double>::infinity();
  template <class V>
  static TOTALNORM_HD V contribution(V a, double) {
    return a;
  }
  template <class V>
  static TOTALNORM_HD V combine(V acc, V c) {
    if constexpr (Max) {
      return nan_max(acc, c);
    } else {
      return nan_min(acc, c);
    }
  }
  static TOTALNORM_HD double finalize(double acc, double) { return acc; }
};

template <>
struct NormOp<Order::Zero> : SumOp {
  template <class V>
  static TOTALNORM_HD V contribution(V a, double) {
    return (a != 0) ? splat<V>(1.0) : splat<V>(0.0);
  }
};

template <>
struct NormOp<Order::One> : SumOp {
  template <class V>
  static TOTALNORM_HD V contribution(V a, double) {
    return a;
  }
};

template <>
struct NormOp<Order::Two> : SumOp {
  // |x|^2 of a float, half or bfloat16 value is exact in float64, so the
  // squares never overflow and only the sum rounds.
  template <class V>
  static TOTALNORM_HD V contribution(V a, double) {
    return a * a;
  }
  static TOTALNORM_HD double finalize(double acc, double) { return std::sqrt(acc); }
};

template <>
struct NormOp<Order::Inf> : ExtremeOp<true> {};

template <>
struct NormOp<Order::NegInf> : ExtremeOp<false> {};

// Any other finite p, negative included: a zero element gives |0|^p = inf for
// p < 0, and inf^(1/p) = 0, which is the reference's answer.
template <>
struct NormOp<Order::General> : SumOp {
  static TOTALNORM_HD double contribution(double a, double p) { return std::pow(a, p); }
  static TOTALNORM_HD double finalize(double acc, double p) { return std::pow(acc, 1.0 / p); }
};

// Magnitude of a complex element; hypot avoids overflow in re^2 + im^2.
TOTALNORM_HD double complex_abs(double re, double im) { return std::hypot(re, im); }

// Contribution of one complex element. For p = 2 the squared magnitude is
// summed directly, for p = 0 an element counts when either part is non-zero.
template <Order O>
TOTALNORM_HD double complex_contribution(double re, double im, double p) {
  if constexpr (O == Order::Two) {
    return re * re + im * im;
  } else if constexpr (O == Order::Zero) {
    return (re != 0.0 || im != 0.0) ? 1.0 : 0.0;
  } else {
    return NormOp<O>::contribution(complex_abs(re, im), p);
  }
}

// Calls f(std::integral_constant<Order, O>{}) for the O equal to `o`: the one
// place where a run-time order becomes a compile-time one.
#if defined(__CUDACC__)
#pragma nv_exec_check_disable
#endif
template <class F>
TOTALNORM_HD decltype(auto) dispatch_order(Order o, F&& f) {
  switch (o) {
    case Order::Zero:
      return f(std::integral_constant<Order, Order::Zero>{});
    case Order::One:
      return f(std::integral_constant<Order, Order::One>{});
    case Order::Two:
      return f(std::integral_constant<Order, Order::Two>{});
    case Order::Inf:
      return f(std::integral_constant<Order, Order::Inf>{});
    case Order::NegInf:
      return f(std::integral_constant<Order, Order::NegInf>{});
    case Order::General:
      break;
  }
  return f(std::integral_constant<Order, Order::General>{});
}

// NormOp<o>'s combine, identity and finalize for a run-time order o.
TOTALNORM_HD double combine_partials(Order o, double a, double b) {
  return dispatch_order(o, [&](auto k) { return NormOp<decltype(k)::value>::combine(a, b); });
}

TOTALNORM_HD double identity_of(Order o) {
  return dispatch_order(o, [](auto k) { return NormOp<decltype(k)::value>::identity; });
}

TOTALNORM_HD double finalize_norm(Order o, double acc, double p) {
  return dispatch_order(o, [&](auto k) { return NormOp<decltype(k)::value>::finalize(acc, p); });
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
    // Only the levels below count_'s highest set bit hold partials: a short
    // sum (one small tensor) must not pay for all 64.
    int level = 0;
    for (uint64_t c = count_; c != 0; c >>= 1, ++level) {
      if (c & 1) acc = partial_[level] + acc;
    }
    return acc;
  }

 private:
  static constexpr int kLevels = 64;
  V partial_[kLevels];  // partial_[j] is meaningful when bit j of count_ is set
  uint64_t count_ = 0;
};

// Merges accumulations of order o in a fixed order: sums through a PairwiseSum
// (so thousands of pieces or blocks do not round thousands of times in a row),
// max and min (exact in any order) through one value. Host code only.
class Merged {
 public:
  explicit Merged(Order o) : order_(o), extreme_(identity_of(o)) {}
  void add(double v) {
    if (is_extreme()) {
      extreme_ = combine_partials(order_, extreme_, v);
    } else {
      sum_.add(v);
    }
  }
  double total() const { return is_extreme() ? extreme_ : sum_.total(); }

 private:
  bool is_extreme() const { return order_ == Order::Inf || order_ == Order::NegInf; }
  Order order_;
  double extreme_;
  PairwiseSum<double> sum_;
};

// What a device (or a rank) hands on for one order: how many elements it read
// and their combined contribution. Partials merge in a fixed order; the element
// count makes "no elements at all" recognisable after the merge (its norm is 0
// for every order, whatever the accumulation's identity would finalize to).
struct Partial {
  double count;
  double acc;
};

TOTALNORM_HD Partial merge_partials(Order o, Partial a, Partial b) {
  return Partial{a.count + b.count, combine_partials(o, a.acc, b.acc)};
}

TOTALNORM_HD double finalize_partial(Order o, Partial a, double p) {
  return a.count == 0.0 ? 0.0 : finalize_norm(o, a.acc, p);
}

// The clip coefficient clamp(max_norm / (total + 1e-6), max=1), rounded step by
// step to `Out` with arithmetic in `Opmath`, as torch.nn.utils.clip_grad_norm_
// computes it with tensor ops. NaN stays NaN.
template <class Out, class Opmath>
TOTALNORM_HD Out clip_coefficient(Out total, double max_norm) {
  const Out shifted = static_cast<Out>(static_cast<Opmath>(total) + static_cast<Opmath>(1e-6));
  const Out inverse = static_cast<Out>(static_cast<Opmath>(1) / static_cast<Opmath>(shifted));
  const Out coef = static_cast<Out>(static_cast<Opmath>(inverse) * static_cast<Opmath>(max_norm));
  return static_cast<Opmath>(coef) > static_cast<Opmath>(1) ? static_cast<Out>(1) : coef;
}

}  // namespace TOTALNORM_ISA
}  // namespace totalnorm
