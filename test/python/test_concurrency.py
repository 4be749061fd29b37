"""Many Python threads calling the operators at once (docs/semantics.md: bitwise-identical results).

Eight threads run total_norm on one shared list and on lists of their own, and
clip_grad_norm_ on lists of their own, at several intra-op thread counts
(torch.set_num_threads 1, 2 and 4). Every result, norm and clipped gradient must
equal, bit for bit, what a single-threaded call gives.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from fuzz_cases import params_with_grads
from reference import INF, assert_bitwise_equal, bits, sample

import totalnorm

THREADS = 8
ROUNDS = 3
ORDERS = [2.0, 1.0, INF, -INF, 0.0, 0.5, 3.0, -1.5]


def make_list(seed: int) -> list:
    """Mixed dtypes and layouts; the large tensor spans several CPU blocks of 65,536."""
    return [
        sample((300_001,), torch.float32, seed=seed),
        sample((70_000,), torch.bfloat16, seed=seed + 1, zeros_every=7),
        sample((64, 33), torch.float64, seed=seed + 2).t(),
        sample((2, 3, 17, 19), torch.float16, seed=seed + 3).contiguous(memory_format=torch.channels_last),
        sample((5_000,), torch.complex64, seed=seed + 4)[::3],
        sample((), torch.complex128, seed=seed + 5),
        sample((0, 4), torch.float32, seed=seed + 6),
        sample((1, 500), torch.float32, seed=seed + 7).expand(3, 500),
    ]


def single_threaded_norms(tensors) -> dict:
    torch.set_num_threads(1)
    return {p: bits(totalnorm.total_norm(tensors, p)).clone() for p in ORDERS}


def clip_once(seed: int):
    grads = [t.clone() for t in make_list(seed)[:6]]  # clipping writes: no expanded grad
    total = totalnorm.clip_grad_norm_(params_with_grads(grads), 0.5, 2.0)
    return total, grads


@pytest.fixture(scope="module")
def expected():
    threads = torch.get_num_threads()
    try:
        shared = make_list(0)
        own = {w: make_list(100 * (w + 1)) for w in range(THREADS)}
        torch.set_num_threads(1)
        return {
            "shared": shared,
            "shared_norms": single_threaded_norms(shared),
            "own": own,
            "own_norms": {w: single_threaded_norms(own[w]) for w in range(THREADS)},
            "clip": {w: clip_once(100 * (w + 1)) for w in range(THREADS)},
        }
    finally:
        torch.set_num_threads(threads)


def _work(worker: int, expected: dict) -> int:
    calls = 0
    for _ in range(ROUNDS):
        for p in ORDERS:
            got = totalnorm.total_norm(expected["shared"], p)
            assert torch.equal(bits(got), expected["shared_norms"][p]), f"shared list, p={p}"
            got = totalnorm.total_norm(expected["own"][worker], p)
            assert torch.equal(bits(got), expected["own_norms"][worker][p]), f"worker {worker}, p={p}"
            calls += 2
        total, grads = clip_once(100 * (worker + 1))
        want_total, want_grads = expected["clip"][worker]
        assert_bitwise_equal(total, want_total)
        for g, w in zip(grads, want_grads):
            assert_bitwise_equal(g, w)
        calls += 1
    return calls


@pytest.mark.parametrize("num_threads", [1, 2, 4])
def test_threads_calling_at_once_get_the_single_threaded_bits(expected, num_threads):
    torch.set_num_threads(num_threads)
    with ThreadPoolExecutor(THREADS) as pool:
        calls = list(pool.map(_work, range(THREADS), [expected] * THREADS))
    assert sum(calls) == THREADS * ROUNDS * (2 * len(ORDERS) + 1)


def test_shared_inputs_are_left_untouched(expected):
    # The shared list was read by every thread above; it must hold what it was built with.
    fresh = make_list(0)
    for a, b in zip(expected["shared"], fresh):
        assert_bitwise_equal(a, b)
    assert not math.isnan(totalnorm.total_norm(fresh).item())
