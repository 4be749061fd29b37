#include "plan.h"

#include <algorithm>

namespace totalnorm {

int64_t block_count(int64_t total, int64_t per_block, int64_t max_blocks) {
  if (total <= 0) return 1;
  const int64_t wanted = total / per_block + (total % per_block != 0);
  return std::clamp<int64_t>(wanted, 1, max_blocks);
}

}  // namespace totalnorm
