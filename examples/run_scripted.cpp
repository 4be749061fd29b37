// Loads a TorchScript module whose forward calls torch.ops.totalnorm and runs
// it on a fixed input, without Python. The program calls nothing from
// libtotalnorm: the operators come from the library's registration, kept by
// linking totalnorm::totalnorm (which adds --no-as-needed).
//
//   run_scripted model.pt    prints each output value as a float64 hex string
#include <torch/script.h>

#include <cstdio>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s model.pt\n", argv[0]);
    return 2;
  }
  torch::jit::Module module = torch::jit::load(argv[1]);
  // The same input the Python side builds: sin(0..999) in float32.
  const auto x = torch::arange(1000, torch::kFloat).sin();
  const auto out = module.forward({x}).toTensor().to(torch::kDouble).contiguous();
  for (int64_t i = 0; i < out.numel(); ++i) std::printf("%a\n", out.data_ptr<double>()[i]);
  return 0;
}
