"""Front-by-front neighbour-majority labelling of a 3D lattice (numba-cuda): step 3 of the watertight
conversion (``engine/geometry/watertight.py``, paper 5.1).

Lattice: ``n`` nodes per axis, node (i, j, k) at flat id (i n + j) n + k. state int8 [n^3]: +1 exterior,
-1 interior, 0 unknown; eligible bool [n^3]: nodes allowed to receive a label. In place, round by round:

    front_0     = eligible unknown nodes with a labelled or out-of-grid 6-neighbour
    new[p]      = +1 if sum of p's 6 neighbours' states (out-of-grid = +1) >= 0 else -1, from the state
                  BEFORE the round (Jacobi, as the CPU reference)
    front_{r+1} = eligible unknown 6-neighbours of front_r, after writing new into front_r

until a front is empty. Each round labels at least one node, so the round count is bounded by the number
of eligible nodes; in practice it is the front depth (~40 rounds at 512^3).

Device layout: the front is a compact int32 list; per round one launch computes the new labels, one writes
them, one appends the eligible unknown neighbours once each (a claim bitset of 31 bits per int32 word with
``atomic.or_``, an ``atomic.add`` counter). Host syncs: the eligible count (front buffers' size) and one
per round (the next front's size, to size the launch). Floor per round: ~7 state reads + 1 write per front
node plus 6 eligibility/claim probes: a few tens of bytes per front node.
Limits: flat ids are int32 (n^3 < 2^31).
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from triton_kernels.numba_cuda import cuda_module, launch, view

cuda = cuda_module()


def _neighbour_sum(state: np.ndarray) -> np.ndarray:
    """Sum of the 6 neighbours of every node of int [n, n, n] ``state`` (out-of-grid = +1)."""
    pad = np.pad(state.astype(np.int32), 1, constant_values=1)
    c = slice(1, -1)
    return (pad[:-2, c, c] + pad[2:, c, c] + pad[c, :-2, c] + pad[c, 2:, c] + pad[c, c, :-2] + pad[c, c, 2:])


def propagate_majority_ref(state: np.ndarray, eligible: np.ndarray, n: int) -> int:
    """numpy reference: labels ``state`` (int8 [n^3]) in place as the module docstring; returns the rounds."""
    grid = state.reshape(n, n, n)
    elig = np.asarray(eligible, bool).reshape(n, n, n)
    rounds = 0
    while True:
        labelled = np.pad(grid != 0, 1, constant_values=True)
        c = slice(1, -1)
        near = (labelled[:-2, c, c] | labelled[2:, c, c] | labelled[c, :-2, c] | labelled[c, 2:, c]
                | labelled[c, c, :-2] | labelled[c, c, 2:])
        front = elig & (grid == 0) & near
        if not front.any():
            return rounds
        rounds += 1
        grid[front] = np.where(_neighbour_sum(grid)[front] >= 0, 1, -1)


@cuda.jit(device=True, inline=True)
def _claim(bits, j):
    # True for the first caller on node j (31 bits per int32 word: no sign-bit mask).
    bit = numba.int32(1 << (j % 31))
    old = cuda.atomic.or_(bits, j // 31, bit)
    return (old & bit) == 0


@cuda.jit(cache=True)
def _front_label_kernel(state, front, count, n, new):
    t = cuda.grid(1)
    if t >= count:
        return
    i = front[t]
    nn = n * n
    x, y, z = i // nn, (i // n) % n, i % n
    s = 0
    s += state[i - nn] if x > 0 else 1
    s += state[i + nn] if x < n - 1 else 1
    s += state[i - n] if y > 0 else 1
    s += state[i + n] if y < n - 1 else 1
    s += state[i - 1] if z > 0 else 1
    s += state[i + 1] if z < n - 1 else 1
    new[t] = 1 if s >= 0 else -1


@cuda.jit(cache=True)
def _front_write_kernel(state, front, count, new):
    t = cuda.grid(1)
    if t < count:
        state[front[t]] = new[t]


@cuda.jit(cache=True)
def _front_expand_kernel(state, eligible, front, count, n, bits, nxt, counter):
    t = cuda.grid(1)
    if t >= count:
        return
    i = front[t]
    nn = n * n
    x, y, z = i // nn, (i // n) % n, i % n
    for d in range(6):
        step = nn if d < 2 else (n if d < 4 else 1)
        coord = x if d < 2 else (y if d < 4 else z)
        if d % 2 == 0:
            if coord == 0:
                continue
            j = i - step
        else:
            if coord == n - 1:
                continue
            j = i + step
        if eligible[j] != 0 and state[j] == 0 and _claim(bits, j):
            nxt[cuda.atomic.add(counter, 0, 1)] = j


def _seeds(state: torch.Tensor, eligible: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(int32 [K] flat ids of front_0, claim bitset int32 [ceil(n^3 / 31)] with those nodes set)."""
    labelled = torch.ones((n + 2,) * 3, dtype=torch.bool, device=state.device)
    labelled[1:-1, 1:-1, 1:-1] = state.view(n, n, n) != 0
    c = slice(1, -1)
    near = (labelled[:-2, c, c] | labelled[2:, c, c] | labelled[c, :-2, c] | labelled[c, 2:, c]
            | labelled[c, c, :-2] | labelled[c, c, 2:])
    del labelled
    seeds = (near.reshape(-1) & eligible & (state == 0))
    del near
    words = (seeds.numel() + 30) // 31
    padded = torch.zeros(words * 31, dtype=torch.int32, device=state.device)
    padded[: seeds.numel()] = seeds
    shifts = torch.arange(31, dtype=torch.int32, device=state.device)
    bits = (padded.view(words, 31) << shifts).sum(dim=1, dtype=torch.int32)      # distinct bits: sum = OR
    return torch.nonzero(seeds).reshape(-1).to(torch.int32), bits


def _launch_front(kernel, count: int, *args) -> None:
    """Front launches are often tiny: blocks of 32..256 threads (the simulator runs every thread)."""
    launch(kernel, count, *args, threads=min(256, 32 * ((count + 31) // 32)))


def propagate_majority(state: torch.Tensor, eligible: torch.Tensor, n: int) -> int:
    """Label the eligible unknown nodes of ``state`` in place (module docstring); returns the rounds.
    state contiguous int8 [n^3], eligible bool [n^3], both on ``kernel_device()``."""
    if state.dtype != torch.int8 or state.shape != (n ** 3,) or not state.is_contiguous():
        raise ValueError(f"state must be contiguous int8 [{n}^3], got {state.dtype} {tuple(state.shape)}")
    if eligible.dtype != torch.bool or eligible.shape != state.shape or eligible.device != state.device:
        raise ValueError(f"eligible must be bool {tuple(state.shape)} on {state.device}, got "
                         f"{eligible.dtype} {tuple(eligible.shape)} on {eligible.device}")
    if n ** 3 >= 2 ** 31:
        raise ValueError(f"lattice of {n}^3 nodes overflows int32 ids")
    dev = state.device
    capacity = int(eligible.sum())                                 # host sync: front buffers' size
    if capacity == 0:
        return 0
    elig = eligible.view(torch.uint8).contiguous()
    seeds, bits = _seeds(state, eligible, n)
    count, rounds = int(seeds.numel()), 0                          # host sync per round (nonzero here)
    front = torch.empty(capacity, dtype=torch.int32, device=dev)
    front[:count] = seeds
    nxt = torch.empty_like(front)
    new = torch.empty(capacity, dtype=torch.int8, device=dev)
    counter = torch.zeros(1, dtype=torch.int32, device=dev)
    while count > 0:
        rounds += 1
        _launch_front(_front_label_kernel, count, view(state), view(front), count, n, view(new))
        _launch_front(_front_write_kernel, count, view(state), view(front), count, view(new))
        counter.zero_()
        _launch_front(_front_expand_kernel, count, view(state), view(elig), view(front), count, n, view(bits),
                      view(nxt), view(counter))
        front, nxt = nxt, front
        count = int(counter[0])
    return rounds
