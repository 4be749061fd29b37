// The work split (plan.h): what each block of the CPU and CUDA kernels reads;
// the CUDA backend's launches (cuda/launch_plan.h).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <stdexcept>
#include <tuple>
#include <vector>

#include "cuda/launch_plan.h"
#include "cuda/vector_groups.h"
#include "plan.h"
#include "strided.h"

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

// offset_of(collapse_layout(view)) walks a strided view in logical order:
// element i of view.flatten() lives at storage offset offset_of(layout, i).
void expect_layout_walks_view(const at::Tensor& base, const at::Tensor& view) {
  SCOPED_TRACE(::testing::Message() << "sizes " << view.sizes() << " strides " << view.strides());
  Layout layout{};
  ASSERT_TRUE(collapse_layout(view.sizes().data(), view.strides().data(), view.dim(), &layout));
  ASSERT_LE(layout.dims, kMaxDims);
  // base holds 0, 1, 2, ...: a view's values are its elements' storage offsets.
  const at::Tensor offsets = view.flatten().contiguous();
  const int64_t start = view.storage_offset() - base.storage_offset();
  for (int64_t i = 0; i < view.numel(); ++i) {
    ASSERT_EQ(start + offset_of(layout, i), offsets[i].item<int64_t>()) << "element " << i;
  }
}

TEST(Strided, LayoutsWalkEveryViewInLogicalOrder) {
  const at::Tensor base = at::arange(4 * 5 * 6 * 7, at::kLong);
  const at::Tensor cube = base.view({4, 5, 6, 7});
  expect_layout_walks_view(base, cube);                                     // contiguous: one dimension
  expect_layout_walks_view(base, cube.transpose(1, 3));                     // transposed
  expect_layout_walks_view(base, cube.permute({3, 1, 0, 2}));               // any order
  expect_layout_walks_view(base, cube.slice(3, 1, 6, 2));                   // gaps
  expect_layout_walks_view(base, cube.slice(0, 1, 3).slice(2, 2, 5));       // offset and gaps
  expect_layout_walks_view(base, cube.select(1, 3).transpose(0, 2));       // fewer dims
  expect_layout_walks_view(base, cube.unsqueeze(2).slice(4, 0, 7, 3));      // a size-1 dimension
  expect_layout_walks_view(base, base.slice(0, 5, 6));                      // one element
  expect_layout_walks_view(base, base.as_strided({3, 4}, {1, 7}, 2));       // arbitrary strides
}

// A LayoutCursor walks what offset_of computes, without dividing: placed at
// any element, moved one element at a time, and moved as walk_strided
// (ops_cuda.cu) moves a team member: a group of `per` elements, then on to its
// next group, team - 1 groups further.
void expect_cursor_walks_like_offset_of(const at::Tensor& view) {
  SCOPED_TRACE(::testing::Message() << "sizes " << view.sizes() << " strides " << view.strides());
  Layout layout{};
  ASSERT_TRUE(collapse_layout(view.sizes().data(), view.strides().data(), view.dim(), &layout));
  const int64_t n = view.numel();
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(LayoutCursor::at(layout, i).offset, offset_of(layout, i)) << i;
  LayoutCursor one = LayoutCursor::at(layout, 0);
  for (int64_t i = 1; i < n; ++i) {
    one.step_one(layout);
    ASSERT_EQ(one.offset, offset_of(layout, i)) << "stepped to " << i;
  }
  for (int64_t per : {int64_t{1}, int64_t{2}, int64_t{4}, int64_t{8}}) {
    for (int64_t team : {int64_t{1}, int64_t{3}, int64_t{32}, int64_t{512}}) {
      for (int64_t first : {int64_t{0}, int64_t{1}, int64_t{5}}) {
        for (int64_t rank = 0; rank < std::min<int64_t>(team, 40); ++rank) {
          LayoutCursor at = LayoutCursor::at(layout, first + rank * per);
          const LayoutCursor to_next = LayoutCursor::at(layout, (team - 1) * per);
          for (int64_t start = first + rank * per; start + per <= n; start += team * per) {
            for (int64_t k = 0; k < per; ++k) {
              ASSERT_EQ(at.offset, offset_of(layout, start + k))
                  << "per " << per << " team " << team << " rank " << rank << " element " << start + k;
              at.step_one(layout);
            }
            at.advance(layout, to_next);
          }
        }
      }
    }
  }
}

TEST(Strided, CursorsWalkEveryLayoutWithoutDividing) {
  const at::Tensor base = at::arange(4 * 5 * 6 * 7, at::kLong);
  const at::Tensor cube = base.view({4, 5, 6, 7});
  expect_cursor_walks_like_offset_of(cube);
  expect_cursor_walks_like_offset_of(cube.transpose(1, 3));
  expect_cursor_walks_like_offset_of(cube.permute({3, 1, 0, 2}));
  expect_cursor_walks_like_offset_of(cube.slice(3, 1, 6, 2));
  expect_cursor_walks_like_offset_of(cube.slice(0, 1, 3).slice(2, 2, 5));
  expect_cursor_walks_like_offset_of(cube.select(1, 3).transpose(0, 2));
  expect_cursor_walks_like_offset_of(base.slice(0, 5, 6));
  expect_cursor_walks_like_offset_of(base.as_strided({3, 4}, {1, 7}, 2));
  expect_cursor_walks_like_offset_of(base.view({40, 21}).slice(1, 0, 21, 2));  // x[:, ::2]
  expect_cursor_walks_like_offset_of(base.slice(0, 3, 840, 5));                 // one dimension, gaps
  // Six dimensions of sizes 2 and 3, none continuing another: every carry.
  expect_cursor_walks_like_offset_of(base.as_strided({2, 3, 2, 3, 2, 3}, {400, 100, 40, 12, 5, 1}));
}

// The groups of a piece depend on the logical indices [lo, hi) only: the head
// runs to the first multiple of per_group, groups start on multiples of it,
// and head, groups and tail tile the piece.
TEST(VectorGroups, SplitTilesThePieceOnMultiplesOfTheGroupSize) {
  for (int64_t per : {int64_t{1}, int64_t{2}, int64_t{4}, int64_t{8}}) {
    for (int64_t lo = 0; lo < 20; ++lo) {
      for (int64_t hi = lo; hi < 45; ++hi) {
        const GroupSplit s = split_into_groups(lo, hi, per);
        ASSERT_LE(lo, s.head_end);
        ASSERT_LE(s.head_end, s.tail_start);
        ASSERT_LE(s.tail_start, hi);
        ASSERT_EQ(s.tail_start - s.head_end, s.groups * per);
        ASSERT_LT(hi - s.tail_start, per);
        if (s.head_end < hi) ASSERT_EQ(s.head_end % per, 0) << lo << " " << hi << " " << per;
        ASSERT_LT(s.head_end - lo, per);
      }
    }
  }
}

struct Words {
  uint32_t x, y, z, w;
};

// join_chunks of the two aligned 16-byte chunks a group straddles gives the
// group's bytes, for every start shift: what read_dense (ops_cuda.cu) loads
// for a dense piece that does not start on a 16-byte boundary.
TEST(VectorGroups, JoinedChunksAreTheGroupsBytesAtEveryShift) {
  alignas(16) unsigned char buffer[16 * 8];
  for (size_t i = 0; i < sizeof(buffer); ++i) buffer[i] = static_cast<unsigned char>(i * 37 + 11);
  for (int shift = 0; shift < 16; ++shift) {
    const unsigned char* body = buffer + 16 + shift;  // the first group's first byte
    for (int v = 0; v < 5; ++v) {
      Words first{}, second{}, want{};
      std::memcpy(&first, buffer + 16 * (v + 1), 16);  // the chunk group v starts in
      std::memcpy(&second, buffer + 16 * (v + 2), 16);
      std::memcpy(&want, body + 16 * v, 16);
      const Words got = join_chunks(first, second, shift);
      EXPECT_EQ(std::memcmp(&got, &want, 16), 0) << "shift " << shift << " group " << v;
    }
  }
}

TEST(Strided, CollapseMergesContinuingDimensionsAndRefusesTooMany) {
  Layout layout{};
  const int64_t sizes[] = {2, 1, 3, 4};
  const int64_t strides[] = {12, 99, 4, 1};  // contiguous apart from the size-1 dimension
  ASSERT_TRUE(collapse_layout(sizes, strides, 4, &layout));
  EXPECT_EQ(layout.dims, 1);
  EXPECT_EQ(layout.sizes[0], 24);
  EXPECT_EQ(layout.strides[0], 1);
  const int64_t many_sizes[] = {2, 2, 2, 2, 2, 2, 2};
  const int64_t many_strides[] = {1000, 300, 100, 30, 10, 3, 1};  // no two dimensions continue each other
  EXPECT_FALSE(collapse_layout(many_sizes, many_strides, 7, &layout));
  EXPECT_TRUE(collapse_layout(many_sizes + 1, many_strides + 1, 6, &layout));
  EXPECT_EQ(layout.dims, 6);
}

// What the kernels read back from an encoded table is what the plan and spans say.
TEST(Plan, EncodedTablesDecodeToEveryTensorsDataAndLayout) {
  int storage[8] = {};
  const std::vector<const void*> data = {storage, storage + 1, storage + 2, storage + 3, storage + 4};
  const std::vector<int64_t> numels = {5, 0, 7, 3, 9};
  Layout a{};
  Layout b{};
  const int64_t sa[] = {3, 4};
  const int64_t ta[] = {1, 3};
  const int64_t sb[] = {9};
  const int64_t tb[] = {2};
  ASSERT_TRUE(collapse_layout(sa, ta, 2, &a));
  ASSERT_TRUE(collapse_layout(sb, tb, 1, &b));
  const Plan plan = plan_units(numels, PlanLimits{2048, 1 << 15, 2048});
  for (bool any_strided : {false, true}) {
    SCOPED_TRACE(any_strided);
    const std::vector<int64_t> layout_of = any_strided ? std::vector<int64_t>{-1, -1, 1, -1, 0}
                                                       : std::vector<int64_t>{-1, -1, -1, -1, -1};
    const std::vector<Layout> layouts = {b, a};
    bool with_layouts = !any_strided;
    const std::vector<int64_t> table = encode_table(plan, data, layout_of, layouts, &with_layouts);
    EXPECT_EQ(with_layouts, any_strided);
    const auto count = static_cast<int64_t>(plan.tensors.size());
    const TableView view = TableView::of(table.data(), count, with_layouts);
    for (int64_t k = 0; k < count; ++k) {
      const auto i = static_cast<size_t>(plan.tensors[static_cast<size_t>(k)]);
      EXPECT_EQ(view.ends[k], plan.ends[static_cast<size_t>(k)]);
      EXPECT_EQ(view.data[k], data[i]);
      const Layout* got = view.layout(k);
      if (layout_of[i] < 0) {
        EXPECT_EQ(got, nullptr);
        continue;
      }
      ASSERT_NE(got, nullptr);
      const Layout& want = layouts[static_cast<size_t>(layout_of[i])];
      EXPECT_EQ(got->dims, want.dims);
      for (int64_t e = 0; e < numels[i]; ++e) EXPECT_EQ(offset_of(*got, e), offset_of(want, e));
    }
  }
}

TEST(Strided, NonOverlapIsProvedOnlyWhereNoElementIsShared) {
  const at::Tensor base = at::arange(200, at::kLong);
  auto proves = [&](const at::Tensor& view) {
    Layout layout{};
    EXPECT_TRUE(collapse_layout(view.sizes().data(), view.strides().data(), view.dim(), &layout));
    const bool distinct = std::get<0>(at::_unique(view.flatten())).numel() == view.numel();
    const bool proved = is_non_overlapping(layout);
    EXPECT_TRUE(!proved || distinct) << view.sizes() << " " << view.strides();  // never claims a false non-overlap
    return proved;
  };
  EXPECT_TRUE(proves(base.view({10, 20}).slice(1, 0, 20, 3)));
  EXPECT_TRUE(proves(base.view({10, 20}).t().slice(0, 2, 9)));
  EXPECT_TRUE(proves(base.as_strided({4, 5}, {1, 8})));       // interleaved, no overlap
  EXPECT_FALSE(proves(base.slice(0, 0, 4).expand({3, 4})));   // stride 0
  EXPECT_FALSE(proves(base.as_strided({3, 4}, {1, 1})));      // rows share elements
  EXPECT_FALSE(proves(base.as_strided({3, 4}, {3, 1})));      // the last of a row is the first of the next
  EXPECT_TRUE(proves(base.as_strided({3, 4}, {4, 1})));       // contiguous
}

TEST(Plan, RejectsBadLimits) {
  EXPECT_THROW(plan_units({1}, PlanLimits{0, 0, 1}), std::invalid_argument);
  EXPECT_THROW(plan_units({1}, PlanLimits{0, 1, 0}), std::invalid_argument);
  EXPECT_THROW(plan_units({1}, PlanLimits{-1, 1, 1}), std::invalid_argument);
}

}  // namespace
}  // namespace totalnorm
