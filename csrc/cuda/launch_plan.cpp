#include "launch_plan.h"

#include <algorithm>
#include <stdexcept>

#include "../plan.h"

namespace totalnorm {

Plan plan_launches(const std::vector<int64_t>& numels, const PlanLimits& limits) {
  if (limits.max_tensors < 1 || limits.per_block < 1 || limits.max_blocks < 1) {
    throw std::invalid_argument("plan_launches: limits must be positive");
  }
  Plan plan;
  for (int64_t i = 0; i < static_cast<int64_t>(numels.size()); ++i) {
    if (numels[i] > 0) plan.tensors.push_back(i);
  }
  const int64_t n = static_cast<int64_t>(plan.tensors.size());
  for (int64_t first = 0; first < n; first += limits.max_tensors) {
    Launch launch;
    launch.first = first;
    launch.count = std::min(limits.max_tensors, n - first);
    for (int64_t k = first; k < first + launch.count; ++k) {
      launch.elements += numels[plan.tensors[k]];
    }
    launch.blocks = block_count(launch.elements, limits.per_block, limits.max_blocks);
    launch.partial_offset = plan.partials;
    plan.partials += launch.blocks;
    plan.launches.push_back(launch);
  }
  return plan;
}

}  // namespace totalnorm
