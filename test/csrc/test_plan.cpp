// The work split (plan.h): what each block of the CPU and CUDA kernels reads;
// the CUDA backend's launches (cuda/launch_plan.h).
#include <gtest/gtest.h>

#include <numeric>
#include <stdexcept>
#include <tuple>
#include <vector>

#include "cuda/launch_plan.h"
#include "plan.h"

namespace totalnorm {
namespace {

TEST(Plan, SplitPointsCoverTheRangeInNearEqualParts) {
  for (int64_t total : {int64_t{1}, int64_t{7}, int64_t{1000}, int64_t{1} << 40}) {
    for (int64_t parts : {int64_t{1}, int64_t{3}, int64_t{7}, int64_t{528}}) {
      EXPECT_EQ(split_point(total, parts, 0), 0);
      EXPECT_EQ(split_point(total, parts, parts), total);
      for (int64_t b = 0; b < parts; ++b) {
        const int64_t len = split_point(total, parts, b + 1) - split_point(total, parts, b);
        EXPECT_GE(len, total / parts);
        EXPECT_LE(len, total / parts + 1);
      }
    }
  }
}

TEST(Plan, FindSegmentLocatesEveryElement) {
  const std::vector<int64_t> ends = {3, 4, 10, 11};
  const std::vector<int64_t> expected = {0, 0, 0, 1, 2, 2, 2, 2, 2, 2, 3};
  for (int64_t pos = 0; pos < 11; ++pos) {
    EXPECT_EQ(find_segment(ends.data(), 4, pos), expected[pos]) << "pos " << pos;
  }
  EXPECT_EQ(find_segment(ends.data(), 1, 2), 0);
}

TEST(Plan, BlockCountFollowsTheTargetWithinLimits) {
  EXPECT_EQ(block_count(0, 100, 8), 1);
  EXPECT_EQ(block_count(1, 100, 8), 1);
  EXPECT_EQ(block_count(100, 100, 8), 1);
  EXPECT_EQ(block_count(101, 100, 8), 2);
  EXPECT_EQ(block_count(int64_t{1} << 40, 100, 8), 8);
}

// The pieces of all blocks, in block order, tile the concatenation: each
// segment's elements in order, and no piece empty.
TEST(Plan, ForEachPieceTilesTheConcatenationInOrder) {
  const std::vector<int64_t> ends = {3, 4, 10, 11};
  for (int64_t blocks : {int64_t{1}, int64_t{2}, int64_t{3}, int64_t{11}, int64_t{20}}) {
    std::vector<std::tuple<int64_t, int64_t, int64_t>> pieces;
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t before = static_cast<int64_t>(pieces.size());
      int64_t covered = 0;
      for_each_piece(ends.data(), 4, 11, blocks, b, [&](int64_t s, int64_t lo, int64_t hi) {
        EXPECT_LT(lo, hi);
        pieces.emplace_back(s, lo, hi);
        covered += hi - lo;
      });
      EXPECT_EQ(covered, split_point(11, blocks, b + 1) - split_point(11, blocks, b)) << "block " << b;
      if (covered == 0) EXPECT_EQ(static_cast<int64_t>(pieces.size()), before);
    }
    int64_t pos = 0;
    for (const auto& [s, lo, hi] : pieces) {
      const int64_t start = s == 0 ? 0 : ends[s - 1];
      EXPECT_EQ(start + lo, pos) << blocks << " blocks";
      EXPECT_LE(start + hi, ends[s]);
      pos = start + hi;
    }
    EXPECT_EQ(pos, 11);
  }
}

// Every element of every tensor is read by exactly one block of one launch.
void expect_exact_cover(const std::vector<int64_t>& numels, const Plan& plan, const PlanLimits& limits) {
  std::vector<int64_t> non_empty;
  for (size_t i = 0; i < numels.size(); ++i) {
    if (numels[i] > 0) non_empty.push_back(static_cast<int64_t>(i));
  }
  ASSERT_EQ(plan.tensors, non_empty);
  int64_t next_tensor = 0;
  int64_t next_partial = 0;
  for (const Launch& l : plan.launches) {
    EXPECT_EQ(l.first, next_tensor);
    EXPECT_GE(l.count, 1);
    EXPECT_LE(l.count, limits.max_tensors);
    EXPECT_EQ(l.partial_offset, next_partial);
    EXPECT_GE(l.blocks, 1);
    EXPECT_LE(l.blocks, limits.max_blocks);
    int64_t elements = 0;
    for (int64_t k = l.first; k < l.first + l.count; ++k) elements += numels[plan.tensors[k]];
    EXPECT_EQ(l.elements, elements);
    next_tensor += l.count;
    next_partial += l.blocks;
  }
  EXPECT_EQ(next_tensor, static_cast<int64_t>(non_empty.size()));
  EXPECT_EQ(plan.partials, next_partial);
}

TEST(Plan, SkipsEmptyTensorsBetweenNonEmptyOnes) {
  const std::vector<int64_t> numels = {0, 5, 0, 0, 3, 0};
  const PlanLimits limits{2, 4, 16};
  const Plan plan = plan_launches(numels, limits);
  expect_exact_cover(numels, plan, limits);
  ASSERT_EQ(plan.launches.size(), 1u);
  EXPECT_EQ(plan.launches[0].elements, 8);
  EXPECT_EQ(plan.launches[0].blocks, 2);
}

TEST(Plan, AllEmptyGivesNoLaunch) {
  const Plan plan = plan_launches({0, 0}, PlanLimits{4, 4, 4});
  EXPECT_TRUE(plan.launches.empty());
  EXPECT_EQ(plan.partials, 0);
}

TEST(Plan, SplitsTheTableAcrossLaunchesAtTheTensorLimit) {
  std::vector<int64_t> numels(2 * 2040 + 7, 1000);
  numels[2040] = 0;
  const PlanLimits limits{2040, 4096, 528};
  const Plan plan = plan_launches(numels, limits);
  expect_exact_cover(numels, plan, limits);
  ASSERT_EQ(plan.launches.size(), 3u);
  EXPECT_EQ(plan.launches[0].count, 2040);
  EXPECT_EQ(plan.launches[1].count, 2040);
  EXPECT_EQ(plan.launches[2].count, 6);
}

TEST(Plan, HandlesTensorsBeyond32BitSizesOnPaper) {
  const int64_t huge = (int64_t{1} << 33) + 12345;  // 8.6e9 elements
  const std::vector<int64_t> numels = {huge, 3, huge};
  const PlanLimits limits{2040, 1 << 20, 528};
  const Plan plan = plan_launches(numels, limits);
  expect_exact_cover(numels, plan, limits);
  const Launch& l = plan.launches.at(0);
  EXPECT_EQ(l.elements, 2 * huge + 3);
  EXPECT_EQ(l.blocks, 528);
  // Block ranges straddle the tensor boundaries and still tile the whole span.
  const std::vector<int64_t> ends = {huge, huge + 3, 2 * huge + 3};
  int64_t covered = 0;
  for (int64_t b = 0; b < l.blocks; ++b) {
    const int64_t begin = split_point(l.elements, l.blocks, b);
    const int64_t end = split_point(l.elements, l.blocks, b + 1);
    EXPECT_EQ(begin, covered);
    EXPECT_GT(end, begin);
    EXPECT_LT(find_segment(ends.data(), 3, begin), 3);
    covered = end;
  }
  EXPECT_EQ(covered, l.elements);
  EXPECT_EQ(find_segment(ends.data(), 3, huge - 1), 0);
  EXPECT_EQ(find_segment(ends.data(), 3, huge), 1);
  EXPECT_EQ(find_segment(ends.data(), 3, huge + 3), 2);
}

TEST(Plan, RejectsNonPositiveLimits) {
  EXPECT_THROW(plan_launches({1}, PlanLimits{0, 1, 1}), std::invalid_argument);
}

}  // namespace
}  // namespace totalnorm
