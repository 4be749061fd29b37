#pragma once
// The reference of docs/semantics.md for the C++ tests: torch.linalg.vector_norm of the
// float64 concatenation of the inputs, rounded once to the result dtype.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

namespace totalnorm::testing {

constexpr double kInf = std::numeric_limits<double>::infinity();

// docs/semantics.md reference: vector_norm of the float64 concatenation, rounded once.
inline at::Tensor reference(const std::vector<at::Tensor>& tensors, double p, at::ScalarType out) {
  std::vector<at::Tensor> flat;
  for (const auto& t : tensors) flat.push_back(t.reshape(-1).to(at::kCPU));
  return at::linalg_vector_norm(at::cat(flat).to(at::kComplexDouble).abs(), p).to(out);
}

inline void expect_close(const at::Tensor& got, const at::Tensor& want, double rtol) {
  ASSERT_EQ(got.scalar_type(), want.scalar_type());
  ASSERT_EQ(got.dim(), 0);
  const double g = got.item<double>();
  const double w = want.item<double>();
  if (std::isnan(w)) {
    EXPECT_TRUE(std::isnan(g));
  } else {
    EXPECT_NEAR(g, w, rtol * std::fabs(w)) << "got " << g << " want " << w;
  }
}

}  // namespace totalnorm::testing
