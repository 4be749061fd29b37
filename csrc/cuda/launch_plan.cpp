#include "launch_plan.h"

#include <algorithm>
#include <stdexcept>

#include "../plan.h"

namespace totalnorm {

Plan plan_units(const std::vector<int64_t>& numels, const PlanLimits& limits) {
  if (limits.tensor_cost < 0 || limits.per_unit < 1 || limits.max_units < 1) {
    throw std::invalid_argument("plan_units: per_unit and max_units must be positive, tensor_cost not negative");
  }
  Plan plan;
  int64_t end = 0;
  for (int64_t i = 0; i < static_cast<int64_t>(numels.size()); ++i) {
    if (numels[i] <= 0) continue;
    plan.tensors.push_back(i);
    end += numels[i];
    plan.ends.push_back(end);
  }
  if (plan.tensors.empty()) return plan;
  const int64_t cost = end + static_cast<int64_t>(plan.tensors.size()) * limits.tensor_cost;
  plan.units = block_count(cost, limits.per_unit, limits.max_units);
  return plan;
}

int64_t grid_size(int64_t units, int64_t sms, int64_t blocks_per_sm) {
  const int64_t resident = std::max<int64_t>(1, sms * blocks_per_sm);
  return std::max<int64_t>(1, std::min(units, resident));
}

}  // namespace totalnorm
