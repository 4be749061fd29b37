// The C++ API (through the dispatcher) against a float64 reference built from
// plain torch ops, on the CPU, and on CUDA when a GPU is present.
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <totalnorm/totalnorm.h>

#include "reference.h"

#include <cmath>
#include <limits>
#include <vector>

namespace {

using totalnorm::testing::expect_close;
using totalnorm::testing::kInf;
using totalnorm::testing::reference;

std::vector<at::Tensor> sample_tensors(const at::TensorOptions& options) {
  return {at::randn({37, 5}, options), at::randn({}, options), at::empty({0, 3}, options),
          at::randn({3, 1000}, options).t(), at::randn({70001}, options)};
}

class TotalNorm : public ::testing::TestWithParam<c10::DeviceType> {
 protected:
  void SetUp() override {
    if (GetParam() == c10::DeviceType::CUDA && !torch::cuda::is_available()) {
      GTEST_SKIP() << "no CUDA device";
    }
  }
  at::TensorOptions options(at::ScalarType dtype = at::kFloat) const {
    return at::TensorOptions().dtype(dtype).device(GetParam());
  }
};

TEST_P(TotalNorm, MatchesTheFloat64ReferenceForEveryOrder) {
  at::manual_seed(0);
  const auto tensors = sample_tensors(options());
  for (double p : {0.5, 1.0, 1.5, 2.0, 3.0, kInf, -kInf, 0.0, -1.0}) {
    SCOPED_TRACE(p);
    const at::Tensor got = totalnorm::total_norm(tensors, p);
    EXPECT_EQ(got.device().type(), GetParam());
    // 1 ulp of float32 for the fast paths, 1e-6 for the general one (docs/semantics.md, Accuracy).
    const bool fast = p == 0 || p == 1 || p == 2 || std::isinf(p);
    const double rtol = fast ? 1.2e-7 : 1e-6;
    expect_close(got.cpu(), reference(tensors, p, at::kFloat), rtol);
  }
}

TEST_P(TotalNorm, Float64IsAccurateTo1e13) {
  at::manual_seed(1);
  const auto tensors = sample_tensors(options(at::kDouble));
  for (double p : {1.0, 2.0, 3.0, -1.0}) {
    expect_close(totalnorm::total_norm(tensors, p).cpu(), reference(tensors, p, at::kDouble), 1e-13);
  }
}

TEST_P(TotalNorm, ResultDtypeFollowsPromotionOrTheDtypeArgument) {
  const std::vector<at::Tensor> mixed = {at::ones({3}, options(at::kHalf)),
                                         at::ones({3}, options(at::kBFloat16))};
  EXPECT_EQ(totalnorm::total_norm(mixed).scalar_type(), at::kFloat);
  const std::vector<at::Tensor> bf16 = {at::ones({4}, options(at::kBFloat16))};
  EXPECT_EQ(totalnorm::total_norm(bf16).scalar_type(), at::kBFloat16);
  const std::vector<at::Tensor> cplx = {at::ones({4}, options(at::kComplexDouble))};
  EXPECT_EQ(totalnorm::total_norm(cplx).scalar_type(), at::kDouble);
  EXPECT_EQ(totalnorm::total_norm(bf16, 2.0, false, at::kDouble).scalar_type(), at::kDouble);
  EXPECT_DOUBLE_EQ(totalnorm::total_norm(bf16, 2.0, false, at::kDouble).item<double>(), 2.0);
}

TEST_P(TotalNorm, EmptyInputsGiveZero) {
  const at::Tensor none = totalnorm::total_norm(std::vector<at::Tensor>{});
  EXPECT_EQ(none.device().type(), c10::DeviceType::CPU);
  EXPECT_EQ(none.scalar_type(), at::get_default_dtype_as_scalartype());
  EXPECT_EQ(none.item<double>(), 0.0);
  const std::vector<at::Tensor> empties = {at::empty({0}, options()), at::empty({2, 0}, options())};
  for (double p : {2.0, kInf, -kInf, 0.0, 3.0}) {
    const at::Tensor got = totalnorm::total_norm(empties, p);
    EXPECT_EQ(got.device().type(), GetParam());
    EXPECT_EQ(got.item<double>(), 0.0) << "p " << p;
  }
}

TEST_P(TotalNorm, RejectsBadInputNamingTheIndex) {
  const std::vector<at::Tensor> with_int = {at::ones({2}, options()), at::ones({2}, options(at::kInt))};
  try {
    totalnorm::total_norm(with_int);
    FAIL() << "integer tensor accepted";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("tensors[1] has dtype Int"), std::string::npos) << e.what();
  }
  const std::vector<at::Tensor> ok = {at::ones({2}, options())};
  EXPECT_THROW(totalnorm::total_norm(ok, std::nan("")), c10::Error);
  EXPECT_THROW(totalnorm::total_norm(ok, 2.0, false, at::kInt), c10::Error);
  const std::vector<at::Tensor> nan = {at::full({2}, std::nan(""), options())};
  EXPECT_THROW(totalnorm::total_norm(nan, 2.0, /*error_if_nonfinite=*/true), c10::Error);
  EXPECT_TRUE(std::isnan(totalnorm::total_norm(nan, 2.0).item<double>()));
}

TEST_P(TotalNorm, IsBitwiseIdenticalForAnyThreadCount) {
  at::manual_seed(2);
  std::vector<at::Tensor> tensors;
  for (int i = 0; i < 50; ++i) tensors.push_back(at::randn({1 + 4099 * i}, options()));
  const int threads = at::get_num_threads();
  for (double p : {1.0, 2.0, 3.0}) {
    at::set_num_threads(1);
    const double one = totalnorm::total_norm(tensors, p, false, at::kDouble).item<double>();
    at::set_num_threads(2);
    const double two = totalnorm::total_norm(tensors, p, false, at::kDouble).item<double>();
    EXPECT_EQ(one, two) << "p " << p;
  }
  at::set_num_threads(threads);
}

TEST_P(TotalNorm, GetTotalNormUsesTheParametersGradients) {
  torch::manual_seed(3);
  torch::nn::Sequential model(torch::nn::Linear(8, 16), torch::nn::ReLU(), torch::nn::Linear(16, 4));
  model->to(GetParam());
  const auto params = model->parameters();
  EXPECT_EQ(totalnorm::get_total_norm(params).item<double>(), 0.0);  // no grads yet
  model->forward(torch::randn({32, 8}, options())).pow(2).sum().backward();
  params[1].mutable_grad() = at::Tensor();  // a parameter without grad is skipped
  std::vector<at::Tensor> grads;
  for (const auto& p : params) {
    if (p.grad().defined()) grads.push_back(p.grad());
  }
  expect_close(totalnorm::get_total_norm(params).cpu(), reference(grads, 2.0, at::kFloat), 1.2e-7);
}

TEST_P(TotalNorm, ClipGradNormMatchesTorch) {
  torch::manual_seed(4);
  torch::nn::Linear ours(64, 32);
  torch::nn::Linear theirs(64, 32);
  ours->to(GetParam());
  theirs->to(GetParam());
  const auto x = torch::randn({16, 64}, options());
  for (auto* m : {&ours, &theirs}) {
    (*m)->weight.mutable_grad() = torch::randn({32, 64}, options());
    (*m)->bias.mutable_grad() = torch::randn({32}, options());
  }
  {
    torch::NoGradGuard no_grad;
    theirs->weight.grad().copy_(ours->weight.grad());
    theirs->bias.grad().copy_(ours->bias.grad());
  }
  for (double max_norm : {0.5, 1e6}) {
    const at::Tensor got = totalnorm::clip_grad_norm_(ours->parameters(), max_norm);
    const double want = torch::nn::utils::clip_grad_norm_(theirs->parameters(), max_norm);
    EXPECT_NEAR(got.item<double>(), want, 1.2e-7 * want);
    EXPECT_TRUE(torch::allclose(ours->weight.grad(), theirs->weight.grad(), 1e-6, 1e-7));
    EXPECT_TRUE(torch::allclose(ours->bias.grad(), theirs->bias.grad(), 1e-6, 1e-7));
  }
}

// The C++ API calls the unboxed Autograd kernels, which run the ops below
// autograd: they must still bump the version of what they write, and only that.
TEST_P(TotalNorm, WritesBumpVersionsThroughTheCppApi) {
  at::manual_seed(7);
  std::vector<at::Tensor> grads{at::randn({300}, options()), at::randn({4, 5}, options())};
  auto versions = [&] {
    std::vector<uint32_t> v;
    for (const auto& g : grads) v.push_back(g._version());
    return v;
  };
  const auto before = versions();
  totalnorm::total_norm(grads);
  totalnorm::partials(grads, 2.0);
  EXPECT_EQ(versions(), before);
  totalnorm::scale_(grads, at::full({}, 0.5, options()));
  auto after_scale = versions();
  for (size_t i = 0; i < grads.size(); ++i) EXPECT_GT(after_scale[i], before[i]) << i;
  std::vector<at::Tensor> params;
  for (const auto& g : grads) {
    params.push_back(at::zeros_like(g).requires_grad_());
    params.back().mutable_grad() = g;
  }
  totalnorm::clip_grad_norm_(params, 1e-3);
  const auto after_clip = versions();
  for (size_t i = 0; i < grads.size(); ++i) EXPECT_GT(after_clip[i], after_scale[i]) << i;
}

TEST_P(TotalNorm, ManyTensorsCrossTheLaunchTableLimit) {
  at::manual_seed(5);
  std::vector<at::Tensor> tensors;
  for (int i = 0; i < 5000; ++i) tensors.push_back(at::randn({1 + (i * 37) % 301}, options()));
  for (double p : {2.0, kInf, 3.0}) {
    const bool fast = p == 2.0 || std::isinf(p);
    expect_close(totalnorm::total_norm(tensors, p).cpu(), reference(tensors, p, at::kFloat), fast ? 1.2e-7 : 1e-6);
  }
}

TEST_P(TotalNorm, MixedDtypesInOneList) {
  at::manual_seed(6);
  std::vector<at::Tensor> tensors;
  for (auto dtype : {at::kHalf, at::kBFloat16, at::kFloat, at::kDouble, at::kComplexFloat, at::kComplexDouble}) {
    tensors.push_back(at::randn({1001}, options(dtype)));
    tensors.push_back(at::randn({7, 3}, options(dtype)).t());
  }
  for (double p : {0.0, 1.0, 2.0, kInf, -kInf, 3.0, -1.0}) {
    SCOPED_TRACE(p);
    const at::Tensor got = totalnorm::total_norm(tensors, p);
    EXPECT_EQ(got.scalar_type(), at::kDouble);
    expect_close(got.cpu(), reference(tensors, p, at::kDouble), 1e-13);
  }
}

TEST_P(TotalNorm, PerTensorEntriesAreEachTensorsNormAndTheTotalIsTheTotalOnlyBits) {
  at::manual_seed(2);
  const auto tensors = sample_tensors(options());
  for (double p : {0.0, 1.0, 2.0, 3.0, kInf, -kInf}) {
    SCOPED_TRACE(p);
    const totalnorm::PerTensorNorms got = totalnorm::total_norm_per_tensor(tensors, p);
    EXPECT_TRUE(at::equal(got.total, totalnorm::total_norm(tensors, p)));
    ASSERT_EQ(got.per_tensor.sizes(), at::IntArrayRef({static_cast<int64_t>(tensors.size())}));
    EXPECT_EQ(got.per_tensor.device().type(), GetParam());
    const bool fast = p == 0 || p == 1 || p == 2 || std::isinf(p);
    for (size_t i = 0; i < tensors.size(); ++i) {
      SCOPED_TRACE(i);
      // docs/semantics.md (Empty inputs): an empty tensor's norm is 0 for every order.
      const at::Tensor want = tensors[i].numel() == 0 ? at::zeros({}, at::kFloat) : reference({tensors[i]}, p, at::kFloat);
      expect_close(got.per_tensor[static_cast<int64_t>(i)].cpu(), want, fast ? 1.2e-7 : 1e-6);
    }
  }
}

TEST_P(TotalNorm, ClipPerTensorReturnsTheNormsBeforeClippingAndClipsLikeTheTotalOnlyCall) {
  at::manual_seed(3);
  std::vector<at::Tensor> params;
  std::vector<at::Tensor> twins;
  for (int64_t n : {10, 300, 7}) {
    auto p = at::zeros({n}, options()).requires_grad_();
    p.mutable_grad() = at::randn({n}, options()) * 10;
    auto q = at::zeros({n}, options()).requires_grad_();
    q.mutable_grad() = p.grad().clone();
    params.push_back(p);
    twins.push_back(q);
  }
  params.push_back(at::zeros({4}, options()).requires_grad_());  // no gradient: no entry
  twins.push_back(at::zeros({4}, options()).requires_grad_());
  const at::Tensor before = totalnorm::get_total_norm_per_tensor(params).per_tensor;
  ASSERT_EQ(before.numel(), 3);
  const totalnorm::PerTensorNorms got = totalnorm::clip_grad_norm_per_tensor_(params, 1.0);
  EXPECT_TRUE(at::equal(got.total, totalnorm::clip_grad_norm_(twins, 1.0)));
  EXPECT_TRUE(at::equal(got.per_tensor, before));
  for (size_t i = 0; i < 3; ++i) EXPECT_TRUE(at::equal(params[i].grad(), twins[i].grad()));
  EXPECT_LT(params[0].grad().abs().max().item<double>(), 1.0);  // it did clip
}

INSTANTIATE_TEST_SUITE_P(Devices, TotalNorm,
                         ::testing::Values(c10::DeviceType::CPU, c10::DeviceType::CUDA),
                         [](const auto& info) { return c10::DeviceTypeName(info.param, true); });

}  // namespace
