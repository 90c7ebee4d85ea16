"""How a learner step is cut into optimizer steps and micro-batches, on one rank or several.

Shared by the policy learner and PPO's critic. Data parallel (torch.distributed, gloo/NCCL) is
exact: every rank holds all samples and the same RNG, so all ranks draw the same mini-batches;
each rank computes the gradient of a contiguous shard of each mini-batch, weighted by the
mini-batch's *global* denominator, and the ranks sum gradients. The result equals the
single-learner update (tests/test_ddp.py).
"""

from __future__ import annotations

import random
from typing import Iterable

import torch

from rlcurr.learner.batching import cut_by_tokens, policy_tokens
from rlcurr.types import TrainSample


def dist_rank_world() -> tuple[int, int]:
    """(rank, world size) of the data-parallel group; (0, 1) without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def shard(items: list, rank: int, world: int) -> list:
    """The rank-th of `world` contiguous, near-equal slices (earlier ranks get the remainder)."""
    size, extra = divmod(len(items), world)
    start = rank * size + min(rank, extra)
    return items[start : start + size + (1 if rank < extra else 0)]


def split_even(items: list, parts: int) -> list[list]:
    """All `parts` contiguous shards of `items` (see `shard`); some are empty when parts > len."""
    return [shard(items, p, parts) for p in range(parts)]


def minibatches(num_samples: int, epochs: int, mini_batches: int, rng: random.Random,
                groups: list | None = None) -> list[list[int]]:
    """`epochs` passes over the samples, each shuffled and split into `mini_batches` optimizer steps.

    `groups` (a key per sample, e.g. its prompt tokens): within each mini-batch, answers of the
    same group are put next to each other (groups in order of first appearance), so the ranks'
    shards and the micro-batches cut from them hold whole groups, or parts of as few groups as
    possible, and siblings share one copy of their prompt (rlcurr.learner.batching). Which answers
    form a mini-batch is unchanged, and its loss is a weighted sum over answers, so the update is
    the same up to float rounding."""
    out = []
    for _ in range(epochs):
        order = list(range(num_samples))
        rng.shuffle(order)
        out += split_even(order, max(1, min(mini_batches, num_samples)))
    return out if groups is None else [group_adjacent(mb, groups) for mb in out]


def group_adjacent(indices: list[int], groups: list) -> list[int]:
    """`indices` reordered so that equal `groups[i]` are contiguous, groups in order of first
    appearance, answers in their original order within a group (a stable sort)."""
    first: dict = {}
    for i in indices:
        first.setdefault(groups[i], len(first))
    return sorted(indices, key=lambda i: first[groups[i]])


def prompt_groups(samples: list[TrainSample]) -> list[tuple[int, ...]]:
    """The group key of each answer: its prompt tokens (the answers that can share a prompt copy)."""
    return [tuple(s.prompt_ids) for s in samples]


def weighted_micro_batches(samples: list[TrainSample], indices: list[int], micro_batch_size: int,
                           loss_agg: str, max_tokens: int | None = None,
                           skip: set[int] | None = None) -> list[tuple[list[int], float]]:
    """This rank's micro-batches of the mini-batch `indices`, each with its loss weight.

    At most `micro_batch_size` answers and (if `max_tokens`) that many padded prompt+answer
    tokens each (`cut_by_tokens`). weight = the micro-batch's share of the whole (global)
    mini-batch's denominator: its tokens for token-mean, its answers otherwise; so the
    accumulated (and rank-summed) gradient equals the gradient of the mini-batch loss.
    `skip`: sample indices left out of this rank's micro-batches (answers whose loss terms are
    exactly 0, e.g. advantage 0); they still count in the denominator, so the weights of the
    rest are unchanged and may sum to less than 1.
    """
    rank, world = dist_rank_world()
    mine = shard(indices, rank, world)  # the shard is cut before skipping: ranks agree on it
    if skip:
        mine = [i for i in mine if i not in skip]
    total_tokens = sum(policy_tokens(samples[i]) for i in indices)  # tool-output tokens are not trained on
    out = []
    lengths = [len(samples[i].prompt_ids) + len(samples[i].response_ids) for i in mine]
    for group in cut_by_tokens(lengths, micro_batch_size, max_tokens):
        micro = [mine[g] for g in group]
        if loss_agg == "token-mean":
            weight = sum(policy_tokens(samples[i]) for i in micro) / max(total_tokens, 1)
        else:
            weight = len(micro) / len(indices)
        out.append((micro, weight))
    return out


def sum_grads(params: Iterable[torch.nn.Parameter]) -> None:
    """Sum gradients across ranks (no-op for one). A rank whose shard was empty contributes zeros."""
    if dist_rank_world()[1] == 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        torch.distributed.all_reduce(p.grad)


def max_across_ranks(n: int) -> int:
    """The largest `n` over ranks (n itself for one rank)."""
    return max(all_gather_list([n]))  # an object gather: works on gloo and NCCL alike


def all_gather_list(mine: list) -> list:
    """Concatenation of every rank's list, in rank order (mine for one rank)."""
    world = dist_rank_world()[1]
    if world == 1:
        return list(mine)
    parts: list = [None] * world
    torch.distributed.all_gather_object(parts, mine)
    return [x for part in parts for x in part]


def sum_across_ranks(values: dict[str, float]) -> dict[str, float]:
    """Sum scalar metrics over ranks; keys may differ (a rank with an empty shard has none)."""
    world = dist_rank_world()[1]
    if world == 1:
        return values
    parts: list = [None] * world
    torch.distributed.all_gather_object(parts, values)
    out: dict[str, float] = {}
    for part in parts:
        for k, v in part.items():
            out[k] = out.get(k, 0.0) + v
    return out


def mean_of(stats: list[dict[str, float]]) -> dict[str, float]:
    """Average metric dicts over optimizer steps (a key missing from a step counts as 0 there)."""
    sums: dict[str, float] = {}
    for s in stats:
        for k, v in s.items():
            sums[k] = sums.get(k, 0.0) + v
    return {k: v / len(stats) for k, v in sums.items()} if stats else {}
