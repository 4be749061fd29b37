// CUDA-only behaviour: mixed-device lists and the current stream. Skipped
// without a GPU; built only with the CUDA backend.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <totalnorm/totalnorm.h>

#include "reference.h"

namespace {

using totalnorm::testing::expect_close;
using totalnorm::testing::kInf;
using totalnorm::testing::reference;

TEST(TotalNormCuda, MixedDevicesCombineOnTheFirstTensorsDevice) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(7);
  const std::vector<at::Tensor> tensors = {at::randn({1000}), at::randn({3000}, at::kCUDA), at::randn({5}, at::kDouble)};
  for (double p : {1.0, 2.0, kInf, -kInf, 0.0, 3.0}) {
    const at::Tensor got = totalnorm::total_norm(tensors, p);
    EXPECT_EQ(got.device().type(), c10::DeviceType::CPU);
    expect_close(got, reference(tensors, p, at::kDouble), 1e-13);
    const std::vector<at::Tensor> reversed(tensors.rbegin(), tensors.rend());
    const at::Tensor got_cuda = totalnorm::total_norm(reversed, p);
    EXPECT_EQ(got_cuda.device().type(), c10::DeviceType::CPU);
  }
  const std::vector<at::Tensor> cuda_first = {tensors[1], tensors[0]};
  EXPECT_EQ(totalnorm::total_norm(cuda_first).device().type(), c10::DeviceType::CUDA);
  expect_close(totalnorm::total_norm(cuda_first).cpu(), reference(cuda_first, 2.0, at::kFloat), 1.2e-7);
}

TEST(TotalNormCuda, RunsOnTheCurrentNonDefaultStream) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(8);
  const std::vector<at::Tensor> tensors = {at::randn({1 << 20}, at::kCUDA), at::randn({333}, at::kCUDA)};
  const at::Tensor want = reference(tensors, 2.0, at::kFloat);
  auto stream = c10::cuda::getStreamFromPool();
  c10::cuda::device_synchronize();  // inputs are ready before the side stream reads them
  at::Tensor got;
  {
    c10::cuda::CUDAStreamGuard guard(stream);
    got = totalnorm::total_norm(tensors);
  }
  stream.synchronize();
  expect_close(got.cpu(), want, 1.2e-7);
}

// Every read and write path of the kernels once, for compute-sanitizer (gpu_suite.sh runs
// memcheck and racecheck on this binary's CUDA tests): dense views 16-byte aligned and not
// (groups joined from two chunks), strided views, parameter and device tables, clipping.
TEST(TotalNormCuda, EveryReadAndScalePathAgainstClones) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(9);
  for (const auto dtype : {at::kFloat, at::kHalf, at::kBFloat16, at::kDouble}) {
    const at::Tensor base = at::randn({70001 + 8}, at::TensorOptions().dtype(dtype).device(at::kCUDA));
    std::vector<at::Tensor> views = {base.slice(0, 0, 70001), base.slice(0, 1, 70002), base.slice(0, 3, 40),
                                     base.slice(0, 0, 64 * 64).view({64, 64}).slice(1, 1, 64, 3)};
    for (int i = 0; i < 70; ++i) views.push_back(base.slice(0, 5 + i, 5 + i + (i % 9) + 1));  // a device table
    std::vector<at::Tensor> clones;
    for (const auto& v : views) clones.push_back(v.clone());
    for (double p : {1.0, 2.0, kInf, 3.0}) {
      const at::Tensor a = totalnorm::total_norm(views, p, false, at::kDouble).cpu();
      const at::Tensor b = totalnorm::total_norm(clones, p, false, at::kDouble).cpu();
      EXPECT_EQ(a.item<double>(), b.item<double>()) << dtype << " p " << p;
    }
    std::vector<at::Tensor> params;
    for (const auto& c : clones) {
      at::Tensor param = at::zeros_like(c);
      param.mutable_grad() = c;
      params.push_back(param);
    }
    const at::Tensor total = totalnorm::clip_grad_norm_(params, 1e-3);
    EXPECT_GT(total.item<double>(), 1e-3);
    for (const auto& c : clones) EXPECT_TRUE(at::isfinite(c).all().item<bool>());
  }
}

}  // namespace
