"""per_tensor=True across ranks: real processes on Gloo (2 and 4 ranks).

Every entry of a DTensor is the norm of the whole gradient (each element counted once),
the same bits on every rank; the total is bitwise the total-only call's; DTensor
entries cost two collectives in all (the total rides along); plain tensors passed with
group= keep local entries (docs/semantics.md, "Per-tensor norms", "Across ranks").
"""
from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

import dist_per_tensor_scenarios as sc
from dist_scenarios import ORDERS, grads_for_layout, own_grads
from rank_pool import RankPool
from reference import assert_bitwise_equal, check_value, expected_dtype, reference_norm

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with Gloo is needed")


@pytest.fixture(scope="module", params=[2, 4], ids=lambda w: f"world{w}")
def pool(request):
    ranks = RankPool(request.param)
    yield ranks
    ranks.close()


def same_on_every_rank(values):
    for v in values[1:]:
        assert_bitwise_equal(v, values[0])


@pytest.mark.parametrize("kind", ["float32", "mixed"])
@pytest.mark.parametrize("layout", ["shard0", "shard1", "replicate", "2d_shard_shard", "2d_shard_replicate",
                                    "2d_replicate_shard", "2d_strided"])
def test_entries_are_whole_gradient_norms_on_every_rank(pool, layout, kind):
    results = pool.run(sc.per_tensor_of_dtensors, layout, kind)
    full = grads_for_layout(kind, layout)
    for p in ORDERS:
        got = [r[p] for r in results]
        same_on_every_rank([g["per"] for g in got])
        same_on_every_rank([g["total"] for g in got])
        for g in got:
            assert_bitwise_equal(g["total"], g["total_only"])
            assert_bitwise_equal(g["again"], g["per"])
            assert g["collectives"] == 2
        per = got[0]["per"]
        assert per.shape == (len(full),) and per.dtype == expected_dtype(full)
        for i, t in enumerate(full):
            check_value(per[i], reference_norm([t], p), p)


def test_fsdp2_clip_returns_whole_gradient_norms_and_clips_like_the_total_only_call(pool):
    results = pool.run(sc.per_tensor_clip_of_fsdp2, 0.01)
    same_on_every_rank([r["per"] for r in results])
    for r in results:
        assert_bitwise_equal(r["total"], r["total_only"])
        for a, b in zip(r["clipped"], r["clipped_total_only"]):
            assert_bitwise_equal(a, b)
        for i, t in enumerate(r["full"]):
            check_value(r["per"][i], reference_norm([t], 2.0), 2.0)


@pytest.mark.parametrize("p", [1.0, 2.0, float("inf")])
def test_pipeline_stages_keep_local_entries_and_one_total(pool, p):
    results = pool.run(sc.per_tensor_of_pipeline_stages, p)
    everything = [t for rank in range(pool.world) for t in own_grads(rank)]
    for rank, r in enumerate(results):
        mine = own_grads(rank)
        assert r["per"].shape == (len(mine),)
        for i, t in enumerate(mine):
            check_value(r["per"][i], reference_norm([t], p), p)
        assert_bitwise_equal(r["total"], r["total_only"])
        assert r["collectives"] == 1  # no DTensor: the total's all-gather only
        check_value(r["total"], reference_norm(everything, p), p)


@pytest.mark.parametrize("p", [2.0, float("-inf")])
def test_fsdp_pipeline_stages_reduce_each_stage_over_its_own_mesh(pool, p):
    results = pool.run(sc.per_tensor_of_fsdp_pipeline_stages, p)
    everything = sc.stage_grads(0) + sc.stage_grads(1)
    same_on_every_rank([r["total"] for r in results])
    for r in results:
        full = sc.stage_grads(r["stage"])
        for i, t in enumerate(full):
            check_value(r["per"][i], reference_norm([t], p), p)
        assert_bitwise_equal(r["total"], r["total_only"])
        assert r["collectives"] == 3  # the stage's all-to-all and all-gather, the world's all-gather
        check_value(r["total"], reference_norm(everything, p), p)
    for stage in (0, 1):
        same_on_every_rank([r["per"] for r in results if r["stage"] == stage])


def test_compiled_per_tensor_norms_of_fsdp2_grads_equal_eager(pool):
    for r in pool.run(sc.compiled_per_tensor_of_fsdp2, 2.0):
        assert_bitwise_equal(r["compiled"][0], r["eager"][0])
        assert_bitwise_equal(r["compiled"][1], r["eager"][1])
