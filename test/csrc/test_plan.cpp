// The work split (plan.h): what each block of the CPU and CUDA kernels reads;
// the CUDA backend's launches (cuda/launch_plan.h).
#include <gtest/gtest.h>

#include <algorithm>
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
      for_each_piece(ends.data(), 4, blocks, b, [&](int64_t s, int64_t lo, int64_t hi) {
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

// The pieces of parts 0..parts-1 of a weighted split, in order.
std::vector<std::vector<std::tuple<int64_t, int64_t, int64_t>>> weighted_pieces(const std::vector<int64_t>& ends,
                                                                                int64_t weight, int64_t parts) {
  std::vector<std::vector<std::tuple<int64_t, int64_t, int64_t>>> out(static_cast<size_t>(parts));
  for (int64_t u = 0; u < parts; ++u) {
    for_each_weighted_piece(ends.data(), static_cast<int64_t>(ends.size()), weight, parts, u,
                            [&](int64_t s, int64_t lo, int64_t hi) { out[static_cast<size_t>(u)].emplace_back(s, lo, hi); });
  }
  return out;
}

// Pieces are non-empty and, part after part, read every element of every
// segment once, in order (empty segments get none).
void expect_tiles_in_order(const std::vector<int64_t>& ends, int64_t weight, int64_t parts) {
  SCOPED_TRACE(::testing::Message() << "weight " << weight << ", parts " << parts);
  int64_t segment = 0;
  int64_t next = 0;  // next element of `segment` to be read
  for (const auto& part : weighted_pieces(ends, weight, parts)) {
    for (const auto& [s, lo, hi] : part) {
      ASSERT_LT(lo, hi);
      while (segment < s) {
        const int64_t n = ends[segment] - (segment == 0 ? 0 : ends[segment - 1]);
        ASSERT_EQ(next, n) << "segment " << segment << " left unfinished";
        ++segment;
        next = 0;
      }
      ASSERT_EQ(s, segment);
      ASSERT_EQ(lo, next);
      next = hi;
    }
  }
  for (; segment < static_cast<int64_t>(ends.size()); ++segment, next = 0) {
    ASSERT_EQ(next, ends[segment] - (segment == 0 ? 0 : ends[segment - 1])) << "segment " << segment;
  }
}

TEST(Plan, WeightedPiecesTileEveryListShape) {
  std::vector<std::vector<int64_t>> lists = {{5}, {3, 4, 10, 11}, {0, 0, 7, 7, 9}, {1, 2, 3, 4, 5, 6, 7, 8}};
  std::vector<int64_t> mixed;  // a big tensor, then tiny and empty ones
  int64_t end = 100000;
  mixed.push_back(end);
  for (int i = 0; i < 300; ++i) mixed.push_back(end += i % 7 == 0 ? 0 : 1 + i % 5);
  lists.push_back(mixed);
  for (const auto& ends : lists) {
    for (int64_t weight : {0, 1, 3, 2048}) {
      for (int64_t parts : {1, 2, 5, 64, 1000}) expect_tiles_in_order(ends, weight, parts);
    }
  }
}

TEST(Plan, ZeroWeightIsThePlainSplitOfTheElements) {
  const std::vector<int64_t> ends = {3, 4, 10, 11};
  for (int64_t parts : {1, 3, 11}) {
    const auto pieces = weighted_pieces(ends, 0, parts);
    for (int64_t u = 0; u < parts; ++u) {
      int64_t covered = 0;
      for (const auto& [s, lo, hi] : pieces[static_cast<size_t>(u)]) covered += hi - lo;
      EXPECT_EQ(covered, split_point(11, parts, u + 1) - split_point(11, parts, u));
    }
  }
}

// Tiny tensors after a huge one: with a tensor cost, no part gets more than
// about (its cost / tensor cost) of them, where the plain split would put all
// of them in the last part.
TEST(Plan, TensorCostSpreadsTinyTensorsOverParts) {
  std::vector<int64_t> ends = {100000000};
  for (int i = 0; i < 2000; ++i) ends.push_back(ends.back() + 1);
  auto most_segments = [&](int64_t weight, int64_t parts) {
    size_t most = 0;
    for (const auto& part : weighted_pieces(ends, weight, parts)) most = std::max(most, part.size());
    return most;
  };
  EXPECT_GE(most_segments(0, 2048), 2000u);  // what the cost fixes
  const int64_t cost = ends.back() + static_cast<int64_t>(ends.size()) * 2048;
  const auto bound = static_cast<size_t>(cost / 2048 / 2048 + 2);
  EXPECT_LE(most_segments(2048, 2048), bound);
  EXPECT_LE(bound, 30u);
}

TEST(Plan, UnitsFollowTheCostOfElementsAndTensors) {
  const PlanLimits limits{2048, 1 << 15, 2048};
  // The list shapes of the GPU benchmark's tiny-tensor cases.
  EXPECT_EQ(plan_units(std::vector<int64_t>(5000, 3), limits).units, (5000 * (3 + 2048) + 32767) / 32768);
  EXPECT_EQ(plan_units(std::vector<int64_t>(2040, 1), limits).units, (2040 * 2049 + 32767) / 32768);
  EXPECT_EQ(plan_units(std::vector<int64_t>(20000, 64), limits).units, (20000 * 2112 + 32767) / 32768);
  std::vector<int64_t> big_then_tiny(2001, 1);
  big_then_tiny[0] = 100000000;
  EXPECT_EQ(plan_units(big_then_tiny, limits).units, 2048);
  EXPECT_EQ(plan_units({1}, limits).units, 1);
}

TEST(Plan, UnitsSkipEmptyTensorsAndRecordEnds) {
  const Plan plan = plan_units({0, 5, 0, 0, 3, 0}, PlanLimits{0, 4, 16});
  EXPECT_EQ(plan.tensors, (std::vector<int64_t>{1, 4}));
  EXPECT_EQ(plan.ends, (std::vector<int64_t>{5, 8}));
  EXPECT_EQ(plan.units, 2);
  const Plan none = plan_units({0, 0}, PlanLimits{1, 4, 4});
  EXPECT_TRUE(none.tensors.empty());
  EXPECT_EQ(none.units, 0);
}

TEST(Plan, HandlesTensorsBeyond32BitSizesOnPaper) {
  const int64_t huge = (int64_t{1} << 33) + 12345;  // 8.6e9 elements
  const Plan plan = plan_units({huge, 3, huge}, PlanLimits{2048, 1 << 20, 528});
  EXPECT_EQ(plan.ends, (std::vector<int64_t>{huge, huge + 3, 2 * huge + 3}));
  EXPECT_EQ(plan.units, 528);
  expect_tiles_in_order(plan.ends, 2048, plan.units);
}

TEST(Plan, GridIsTheResidentBlocksAtMostOnePerUnit) {
  EXPECT_EQ(grid_size(2048, 132, 4), 528);
  EXPECT_EQ(grid_size(2048, 132, 2), 264);
  EXPECT_EQ(grid_size(100, 132, 4), 100);
  EXPECT_EQ(grid_size(1, 1, 0), 1);
  EXPECT_EQ(grid_size(5, 0, 4), 1);
}

TEST(Plan, RejectsBadLimits) {
  EXPECT_THROW(plan_units({1}, PlanLimits{0, 0, 1}), std::invalid_argument);
  EXPECT_THROW(plan_units({1}, PlanLimits{0, 1, 0}), std::invalid_argument);
  EXPECT_THROW(plan_units({1}, PlanLimits{-1, 1, 1}), std::invalid_argument);
}

}  // namespace
}  // namespace totalnorm
