// Computes a norm through the installed package and checks it against torch.
#include <torch/torch.h>
#include <totalnorm/totalnorm.h>

#include <cstdio>

int main() {
  const std::vector<at::Tensor> tensors = {torch::full({3}, 2.0), torch::full({2, 2}, -1.0)};
  const double got = totalnorm::total_norm(tensors).item<double>();
  const double want = torch::cat({tensors[0], tensors[1].reshape(-1)}).norm().item<double>();
  std::printf("totalnorm %.9g torch %.9g\n", got, want);
  return got == want ? 0 : 1;
}
