// A LibTorch training loop on data it generates itself: a small MLP learns a
// noisy linear map. Every step clips the gradients with
// totalnorm::clip_grad_norm_ and checks the norm and the clipped gradients
// against plain torch; any mismatch exits with status 1.
//
//   train [steps=300] [log_every=50]
#include <torch/torch.h>
#include <totalnorm/totalnorm.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {

// What torch does, in float64: the norm of all gradients and the clip factor.
struct Expected {
  double norm;
  std::vector<torch::Tensor> clipped;
};

Expected expected_clip(const std::vector<torch::Tensor>& params, double max_norm) {
  std::vector<torch::Tensor> flat;
  for (const auto& p : params) flat.push_back(p.grad().reshape(-1).to(torch::kDouble));
  const double norm = torch::cat(flat).norm().item<double>();
  const double coef = std::min(1.0, max_norm / (norm + 1e-6));
  Expected e{norm, {}};
  for (const auto& p : params) e.clipped.push_back(p.grad().to(torch::kDouble) * coef);
  return e;
}

}  // namespace

int main(int argc, char** argv) {
  const int steps = argc > 1 ? std::atoi(argv[1]) : 300;
  const int log_every = argc > 2 ? std::atoi(argv[2]) : 50;
  const double max_norm = 1.0;
  torch::manual_seed(0);
  const torch::Device device = torch::cuda::is_available() ? torch::kCUDA : torch::kCPU;

  torch::nn::Sequential model(torch::nn::Linear(16, 64), torch::nn::ReLU(), torch::nn::Linear(64, 64),
                              torch::nn::ReLU(), torch::nn::Linear(64, 1));
  model->to(device);
  torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(0.05));
  const auto true_map = torch::randn({16, 1}, device);

  int mismatches = 0;
  for (int step = 1; step <= steps; ++step) {
    const auto x = torch::randn({128, 16}, device);
    const auto y = x.mm(true_map) + 0.1 * torch::randn({128, 1}, device);
    optimizer.zero_grad();
    const auto loss = torch::mse_loss(model->forward(x), y);
    loss.backward();

    const auto params = model->parameters();
    const Expected want = expected_clip(params, max_norm);
    const double norm = totalnorm::clip_grad_norm_(params, max_norm).item<double>();
    bool ok = std::fabs(norm - want.norm) <= 1e-6 * want.norm;
    for (size_t i = 0; i < params.size(); ++i) {
      ok = ok && torch::allclose(params[i].grad().to(torch::kDouble), want.clipped[i], 1e-5, 1e-7);
    }
    if (!ok) {
      ++mismatches;
      std::printf("step %d: MISMATCH norm %.9g, torch %.9g\n", step, norm, want.norm);
    }
    optimizer.step();
    if (step % log_every == 0 || step == steps) {
      std::printf("step %4d  loss %.6f  grad norm %.6f (torch %.6f)\n", step, loss.item<double>(), norm,
                  want.norm);
    }
  }
  std::printf("%s: %d steps on %s, %d mismatches\n", mismatches ? "FAILED" : "OK", steps,
              device.str().c_str(), mismatches);
  return mismatches ? 1 : 0;
}
