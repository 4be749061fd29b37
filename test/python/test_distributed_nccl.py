"""The across-ranks path on CUDA with the NCCL backend, at world size 1 (the
lent machines have one GPU): the collective path itself, no host
synchronisation (torch.cuda.set_sync_debug_mode("error")), and a clip step with
its collective captured in a CUDA graph. Multi-GPU runs are out of reach here.
"""
from __future__ import annotations

import datetime
import math
import socket

import pytest
import torch
import torch.distributed as dist
from reference import assert_bitwise_equal, check_value, reference_norm, sample

import totalnorm

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and dist.is_available() and dist.is_nccl_available()),
    reason="needs a CUDA GPU and NCCL",
)


@pytest.fixture(scope="module")
def nccl_world_of_one():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.cuda.set_device(0)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1,
                            timeout=datetime.timedelta(seconds=60), device_id=torch.device("cuda", 0))
    yield
    dist.destroy_process_group()


def _dtensor_grads():
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    mesh = init_device_mesh("cuda", (1,))
    full = [sample((300, 7), device="cuda", seed=1), sample((5000,), torch.bfloat16, device="cuda", seed=2)]
    return full, [distribute_tensor(t, mesh, [Shard(0)]) for t in full]


@pytest.mark.parametrize("p", [2.0, math.inf, 0.0, 3.0])
def test_dtensor_norm_on_nccl_without_host_sync(nccl_world_of_one, p):
    full, grads = _dtensor_grads()
    totalnorm.total_norm(grads, p)  # first call outside the check: caches and lazy init may sync
    torch.cuda.set_sync_debug_mode("error")
    try:
        got = totalnorm.total_norm(grads, p)
        with_group = totalnorm.total_norm(full, p, group=dist.group.WORLD)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert got.device.type == "cuda"
    check_value(got, reference_norm(full, p), p)
    assert_bitwise_equal(got, with_group)


def test_clip_step_with_its_collective_in_a_cuda_graph(nccl_world_of_one):
    grads = [sample((1000,), device="cuda", seed=3), sample((64, 33), device="cuda", seed=4)]
    eager = [g.clone() for g in grads]
    want = totalnorm.clip_grad_norm_(eager, 0.1, group=dist.group.WORLD)
    static = [g.clone() for g in grads]
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up on a side stream, as graph capture asks
        totalnorm.clip_grad_norm_([g.clone() for g in grads], 0.1, group=dist.group.WORLD)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured_norm = totalnorm.clip_grad_norm_(static, 0.1, group=dist.group.WORLD)
    for s, g in zip(static, grads):
        s.copy_(g)
    graph.replay()
    torch.cuda.synchronize()
    assert_bitwise_equal(captured_norm, want)
    for s, e in zip(static, eager):
        assert_bitwise_equal(s, e)
