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

std::vector<int64_t> encode_table(const Plan& plan, const std::vector<const void*>& data,
                                  const std::vector<int64_t>& layout_of, const std::vector<Layout>& layouts,
                                  bool* with_layouts) {
  std::vector<int64_t> table(plan.ends);
  for (int64_t i : plan.tensors) {
    table.push_back(static_cast<int64_t>(reinterpret_cast<intptr_t>(data[static_cast<size_t>(i)])));
  }
  *with_layouts = std::any_of(plan.tensors.begin(), plan.tensors.end(),
                              [&](int64_t i) { return layout_of[static_cast<size_t>(i)] >= 0; });
  if (!*with_layouts) return table;
  std::vector<int64_t> words;
  for (int64_t i : plan.tensors) {
    const int64_t index = layout_of[static_cast<size_t>(i)];
    table.push_back(index < 0 ? -1 : static_cast<int64_t>(words.size()) / kLayoutWords);
    if (index < 0) continue;
    const auto* w = reinterpret_cast<const int64_t*>(&layouts[static_cast<size_t>(index)]);
    words.insert(words.end(), w, w + kLayoutWords);
  }
  table.insert(table.end(), words.begin(), words.end());
  return table;
}

int64_t grid_size(int64_t units, int64_t sms, int64_t blocks_per_sm) {
  const int64_t resident = std::max<int64_t>(1, sms * blocks_per_sm);
  return std::max<int64_t>(1, std::min(units, resident));
}

}  // namespace totalnorm
