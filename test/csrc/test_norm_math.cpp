// The shared per-order math (norm_math.h) on the host: the same functions the
// CUDA kernels run.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "norm_math.h"

namespace totalnorm {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

TEST(NormMath, ClassifiesOrders) {
  EXPECT_EQ(classify_order(0.0), Order::Zero);
  EXPECT_EQ(classify_order(1.0), Order::One);
  EXPECT_EQ(classify_order(2.0), Order::Two);
  EXPECT_EQ(classify_order(kInf), Order::Inf);
  EXPECT_EQ(classify_order(-kInf), Order::NegInf);
  EXPECT_EQ(classify_order(3.0), Order::General);
  EXPECT_EQ(classify_order(-1.0), Order::General);
  EXPECT_EQ(classify_order(0.5), Order::General);
}

// Folds values through contribution/combine/finalize like a kernel does.
template <Order O>
double fold(std::initializer_list<double> xs, double p) {
  double acc = NormOp<O>::identity;
  for (double x : xs) acc = NormOp<O>::combine(acc, NormOp<O>::contribution(std::fabs(x), p));
  return NormOp<O>::finalize(acc, p);
}

TEST(NormMath, EachOrderMatchesItsDefinition) {
  EXPECT_DOUBLE_EQ(fold<Order::Zero>({0.0, -2.0, 0.0, 3.0}, 0), 2.0);
  EXPECT_DOUBLE_EQ(fold<Order::One>({1.0, -2.0, 3.0}, 1), 6.0);
  EXPECT_DOUBLE_EQ(fold<Order::Two>({3.0, -4.0}, 2), 5.0);
  EXPECT_DOUBLE_EQ(fold<Order::Inf>({1.0, -7.0, 3.0}, kInf), 7.0);
  EXPECT_DOUBLE_EQ(fold<Order::NegInf>({-5.0, 2.0, 3.0}, -kInf), 2.0);
  EXPECT_NEAR(fold<Order::General>({1.0, 2.0}, 3), std::cbrt(9.0), 1e-15);
  EXPECT_NEAR(fold<Order::General>({1.0, 2.0}, -1), 1.0 / 1.5, 1e-15);
}

TEST(NormMath, NegativeOrderWithAZeroIsZero) {
  EXPECT_EQ(fold<Order::General>({1.0, 0.0, 2.0}, -2), 0.0);
}

TEST(NormMath, NaNPropagatesWhateverItsPosition) {
  for (auto xs : {std::initializer_list<double>{kNaN, 1.0, 2.0}, {1.0, kNaN, 2.0}, {1.0, 2.0, kNaN}}) {
    EXPECT_TRUE(std::isnan(fold<Order::Inf>(xs, kInf)));
    EXPECT_TRUE(std::isnan(fold<Order::NegInf>(xs, -kInf)));
    EXPECT_TRUE(std::isnan(fold<Order::Two>(xs, 2)));
    EXPECT_TRUE(std::isnan(fold<Order::General>(xs, 3)));
  }
  // NaN is a non-zero element for p = 0, as in torch.linalg.vector_norm.
  EXPECT_EQ(fold<Order::Zero>({kNaN, 0.0}, 0), 1.0);
  EXPECT_TRUE(std::isnan(combine_partials(Order::Inf, kNaN, 1.0)));
  EXPECT_TRUE(std::isnan(combine_partials(Order::Inf, 1.0, kNaN)));
  EXPECT_TRUE(std::isnan(combine_partials(Order::NegInf, 1.0, kNaN)));
}

TEST(NormMath, SquaresOfFloatsDoNotOverflow) {
  const double big = std::numeric_limits<float>::max();
  const double norm = fold<Order::Two>({big, big}, 2);
  EXPECT_TRUE(std::isfinite(norm));
  EXPECT_DOUBLE_EQ(norm, big * std::sqrt(2.0));
}

TEST(NormMath, ComplexContributionUsesTheMagnitude) {
  EXPECT_DOUBLE_EQ(complex_contribution<Order::Two>(3.0, 4.0, 2), 25.0);
  EXPECT_DOUBLE_EQ(complex_contribution<Order::One>(3.0, -4.0, 1), 5.0);
  EXPECT_DOUBLE_EQ(complex_contribution<Order::Inf>(-3.0, 4.0, kInf), 5.0);
  EXPECT_DOUBLE_EQ(complex_contribution<Order::Zero>(0.0, 1e-30, 0), 1.0);
  EXPECT_DOUBLE_EQ(complex_contribution<Order::Zero>(0.0, 0.0, 0), 0.0);
  EXPECT_NEAR(complex_contribution<Order::General>(3.0, 4.0, 3), 125.0, 1e-12);
}

TEST(NormMath, IdentityIsNeutral) {
  for (Order o : {Order::Zero, Order::One, Order::Two, Order::Inf, Order::NegInf, Order::General}) {
    EXPECT_EQ(combine_partials(o, identity_of(o), 2.5), 2.5);
  }
}

// The coefficient must equal what torch.nn.utils.clip_grad_norm_ computes with
// tensor ops: clamp(max_norm / (total + 1e-6), max=1), where Python evaluates
// `max_norm / tensor` as tensor.reciprocal() * max_norm, each op rounding.
template <class T>
void expect_coefficient_matches_torch(at::ScalarType dtype) {
  for (double total : {0.0, 1e-7, 0.3, 1.0, 1.0000001, 2.5, 7.0, 1e5, 65000.0}) {
    for (double max_norm : {0.5, 1.0, 3.0}) {
      const at::Tensor t = at::scalar_tensor(total, at::TensorOptions().dtype(dtype));
      const at::Tensor expected = at::clamp_max(at::reciprocal(t + 1e-6) * max_norm, 1.0);
      const T got = clip_coefficient<T, at::opmath_type<T>>(t.item<T>(), max_norm);
      EXPECT_EQ(static_cast<double>(got), expected.item<double>())
          << "dtype " << dtype << " total " << total << " max_norm " << max_norm;
    }
  }
  const T nan_total = static_cast<T>(kNaN);
  EXPECT_TRUE(std::isnan(static_cast<double>(clip_coefficient<T, at::opmath_type<T>>(nan_total, 1.0))));
}

TEST(NormMath, ClipCoefficientMatchesTorchOps) {
  expect_coefficient_matches_torch<float>(at::kFloat);
  expect_coefficient_matches_torch<double>(at::kDouble);
  expect_coefficient_matches_torch<c10::Half>(at::kHalf);
  expect_coefficient_matches_torch<c10::BFloat16>(at::kBFloat16);
}

}  // namespace
}  // namespace totalnorm
