"""totalnorm across ranks: real processes on the Gloo backend (2 and 4 ranks).

Each test runs a function of dist_scenarios.py on every rank of a pool and
checks, in this process: the value against the exact norm of the full,
unsharded gradients (each element counted once), bitwise equality of the
results on all ranks, and the number of collectives.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist

import dist_scenarios as sc
from rank_pool import RankPool
from reference import assert_bitwise_equal, check_value, expected_dtype, reference_norm

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with Gloo is needed")


@pytest.fixture(scope="module", params=[2, 4], ids=lambda w: f"world{w}")
def pool(request):
    ranks = RankPool(request.param)
    yield ranks
    ranks.close()


def assert_same_on_every_rank(values: list[torch.Tensor]) -> None:
    for v in values[1:]:
        assert_bitwise_equal(v, values[0])


@pytest.mark.parametrize("kind", ["float32", "mixed"])
@pytest.mark.parametrize("layout", ["shard0", "shard1", "replicate", "2d_shard_shard", "2d_shard_replicate",
                                    "2d_replicate_shard", "2d_strided"])
def test_dtensor_norm_equals_the_norm_of_the_full_gradients(pool, layout, kind):
    results = pool.run(sc.norms_of_dtensors, layout, kind)
    full = sc.grads_for_layout(kind, layout)
    for p in sc.ORDERS:
        per_rank = [r[p] for r in results]
        assert_same_on_every_rank(per_rank)
        got = per_rank[0]
        assert got.dtype == expected_dtype(full) and got.dim() == 0 and type(got) is torch.Tensor
        check_value(got, reference_norm(full, p), p)


@pytest.mark.parametrize("p", sc.ORDERS)
def test_two_meshes_and_plain_tensors_in_one_collective(pool, p):
    results = pool.run(sc.two_meshes_mixed_with_plain, p)
    assert [r["collectives"] for r in results] == [1] * pool.world
    assert_same_on_every_rank([r["norm"] for r in results])
    everything = sc.full_grads("float32", seed=0) + sc.full_grads("float32", seed=50)
    for rank in range(pool.world):
        everything += sc.own_grads(rank)
    check_value(results[0]["norm"], reference_norm(everything, p), p)


@pytest.mark.parametrize("subgroups", [False, True], ids=["world_group", "two_pipelines"])
@pytest.mark.parametrize("p", [2.0, -math.inf, 0.0])
def test_pipeline_stages_with_a_group_and_a_rank_that_owns_nothing(pool, p, subgroups):
    results = pool.run(sc.pipeline_stages, p, subgroups)
    assert [r["collectives"] for r in results] == [1] * pool.world
    for r in results:
        members = r["members"]
        assert_same_on_every_rank([results[m]["norm"] for m in members])
        stage_grads = [t for m in members for t in sc.own_grads(m)]
        check_value(r["norm"], reference_norm(stage_grads, p), p)


@pytest.mark.parametrize("layout", ["shard0", "replicate", "2d_shard_replicate"])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_scales_every_local_shard_by_the_same_coefficient(pool, layout, max_norm):
    p = 2.0
    results = pool.run(sc.clip_dtensors, layout, max_norm, p)
    assert [r["collectives"] for r in results] == [1] * pool.world
    norms = [r["norm"] for r in results]
    assert_same_on_every_rank(norms)
    full = sc.full_grads("mixed")
    check_value(norms[0], reference_norm(full, p), p)
    # torch's own clip step, given the same norm (CPU: g.mul_(coef) with a 0-dim coef).
    coef = torch.clamp(max_norm / (norms[0] + 1e-6), max=1.0)
    for r in results:
        for before, after in zip(r["before"], r["after"]):
            assert_bitwise_equal(after, before.mul_(coef))
    if layout == "replicate":  # replicas stay bitwise equal
        for r in results[1:]:
            for a, b in zip(r["after"], results[0]["after"]):
                assert_bitwise_equal(a, b)


def test_partial_placement_is_an_error_on_every_rank(pool):
    messages = pool.run(sc.partial_placement_is_rejected)
    for m in messages:
        assert "tensors[1]" in m and "Partial" in m, m


def test_a_rank_outside_the_group_gets_an_error_and_members_finish(pool):
    if pool.world < 4:
        pytest.skip("needs ranks outside a two-rank group")
    answers = pool.run(sc.group_without_this_rank)
    want = torch.tensor(math.sqrt(1 + 1 + 4 + 4), dtype=torch.float32).item()  # ranks 0, 1 own (1, 1), (2, 2)
    assert answers[0] == answers[1] == f"norm {want}"
    for a in answers[2:]:
        assert a.startswith("error:") and "not a member" in a, a


def test_fsdp2_training_with_clipping_equals_single_process_training(pool):
    steps, max_norm = 4, 0.05
    results = pool.run(sc.fsdp2_training, steps, max_norm)
    for r in results:
        for norm, torch_norm in zip(r["norms"], r["torch_norms"]):
            assert type(norm) is torch.Tensor
            # FSDP2 averages the ranks' (equal) gradients in its reduce-scatter, and
            # torch sums per-tensor norms in float32: agreement to float32 rounding.
            torch.testing.assert_close(norm, torch_norm, rtol=1e-5, atol=0)
        for got, want in zip(r["params"], r["torch_params"]):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    assert_same_on_every_rank([torch.stack(r["norms"]) for r in results])


def test_fsdp2_parameters_without_gradients_give_zero_on_every_rank(pool):
    for r in pool.run(sc.fsdp2_before_the_first_backward):
        assert r["collectives"] == 2  # one a call: ranks without gradients still join
        assert r["norm"].item() == 0.0 and r["clipped"].item() == 0.0


def test_compiled_clip_of_fsdp2_grads_is_one_graph_equal_to_eager(pool):
    for r in pool.run(sc.compiled_clip_of_fsdp2_grads, 0.05):
        assert_bitwise_equal(r["compiled"], r["eager"])
        for a, b in zip(r["compiled_grads"], r["eager_grads"]):
            assert_bitwise_equal(a, b)


@pytest.mark.parametrize("p", [2.0, math.inf])
def test_compiled_norm_with_a_group_is_one_graph_equal_to_eager(pool, p):
    results = pool.run(sc.compiled_norm_with_group, p)
    for r in results:
        assert_bitwise_equal(r["compiled"], r["eager"])
    assert_same_on_every_rank([r["compiled"] for r in results])


def test_the_fsdp2_example_runs_under_torchrun_and_agrees_with_torch():
    import re
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / "fsdp2_train.py"
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(example), "--steps", "3"],
        capture_output=True, text=True, timeout=180,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    steps = re.findall(r"totalnorm (\S+)\s+torch (\S+)", run.stdout)
    assert len(steps) == 3, run.stdout
    for ours, theirs in steps:
        assert math.isclose(float(ours), float(theirs), rel_tol=1e-5), (ours, theirs)


# Errors whose advice, followed, gives the exact norm (4 ranks: the two cases that
# meshes over different rank sets cannot tell apart, and the other errors' advice).
def _world4(pool):
    if pool.world != 4:
        pytest.skip("a (2, 2) mesh needs 4 ranks")


def test_a_layer_implicitly_replicated_over_tp_needs_replicate_not_group(pool):
    _world4(pool)
    wrong, right = pool.run(sc.tp_with_an_fsdp_only_layer, False), pool.run(sc.tp_with_an_fsdp_only_layer, True)
    tp_full, layer_full = wrong[0]["tp_full"], wrong[0]["layer_full"]
    for r in right:  # the same model and batch either way
        for a, b in zip(r["layer_full"], layer_full):
            assert_bitwise_equal(a, b)
    exact = reference_norm(tp_full + layer_full, 2.0)
    # Without the advice: the layer is on the 1-D meshes [0, 2] / [1, 3]; the error names both cases.
    for rank, r in enumerate(wrong):
        assert r["layer_meshes"] == [[rank % 2, rank % 2 + 2]] * 2
        message = r["no_group"]
        assert isinstance(message, str) and "different ranks" in message, message
        assert "group=" in message and "Replicate" in message and "distribute_module" in message
        assert "once per copy" in message
    # group= there counts the layer once per tp rank: the norm the error warns of, not the norm.
    assert_same_on_every_rank([r["with_group"] for r in wrong])
    check_value(wrong[0]["with_group"], reference_norm(tp_full + layer_full + layer_full, 2.0), 2.0)
    assert abs(wrong[0]["with_group"].item() - exact) > 1e-3 * exact
    # The advice followed: Replicate on tp, no group needed, the exact norm on every rank.
    for r in right:
        assert r["layer_placements"] == [("Shard", "Replicate")] * 2
        assert isinstance(r["no_group"], torch.Tensor), r["no_group"]
    assert_same_on_every_rank([r["no_group"] for r in right])
    check_value(right[0]["no_group"], exact, 2.0)


def test_pipeline_stages_on_their_own_ranks_need_group(pool):
    _world4(pool)
    results = pool.run(sc.stages_on_their_own_ranks)
    everything = sc.full_grads("float32", seed=0) + sc.full_grads("float32", seed=20) + sc.full_grads("float32", seed=90)
    for r in results:
        message = r["no_group"]
        assert isinstance(message, str) and "different ranks" in message and "pipeline" in message, message
        assert "default group" in message
    assert_same_on_every_rank([r["with_group"] for r in results])
    check_value(results[0]["with_group"], reference_norm(everything, 2.0), 2.0)


@pytest.mark.parametrize("copies", [False, True], ids=["stages", "replicas"])
def test_an_nd_mesh_over_part_of_the_world_names_both_groups(pool, copies):
    _world4(pool)
    results = pool.run(sc.nd_mesh_over_part_of_the_world, copies)
    if copies:
        want = reference_norm(sc.full_grads("float32", seed=0), 2.0)
    else:
        want = reference_norm(sc.full_grads("float32", seed=0) + sc.full_grads("float32", seed=20), 2.0)
    for r in results:
        message = r["no_group"]
        assert isinstance(message, str) and "part of the world" in message, message
        assert "replicas" in message and "pipeline" in message
        check_value(r["with_group"], want, 2.0)


def test_a_partial_gradient_reduced_as_the_error_advises_gives_the_norm(pool):
    _world4(pool)
    results = pool.run(sc.partial_reduced_as_advised)
    for r in results:
        assert "Partial" in r["error"] and "redistribute" in r["error"] and "Not .full_tensor()" in r["error"]
        check_value(r["norm"], reference_norm(sc.full_grads("float32"), 2.0), 2.0)


def test_local_parts_in_c_equal_the_python_loop(pool):
    for r in pool.run(sc.local_parts_in_c_and_in_python_agree):
        for name, fast, slow, *rest in r:
            assert fast == slow, name
            if name == "partial first":
                assert fast.startswith("ValueError") and "tensors[1]" in fast and "Partial" in fast
            if name == "non-tensor first":
                assert fast == "TypeError: total_norm: tensors[1] is a str, not a Tensor"
