"""Fully sharded data parallel for the learner (`learner.strategy: fsdp`).

Variant: FSDP2, `torch.distributed.fsdp.fully_shard` (per-parameter DTensor sharding on dim 0)
over a 1-D device mesh of all learner ranks. Each decoder layer (the classes the HF model lists
in `_no_split_modules`, e.g. Qwen2DecoderLayer / LlamaDecoderLayer) is one FSDP unit, the root
(embeddings, final norm, LM head, a critic's value head) another: a unit's full parameters are
all-gathered for its forward and backward and freed after, gradients are reduce-scattered, and
AdamW state lives only on the shard, so parameters, gradients and optimizer state take ~1/N of
a rank's memory; activations are as with DDP.

The update is the single learner's, as with DDP (rlcurr.learner.dataparallel): every rank gets
all samples and the same RNG, computes a contiguous shard of each mini-batch weighted by the
global denominator, and the ranks SUM gradients. FSDP averages by default; here every FSDP unit
gets gradient divide factor 1 and force-sum reduction (a plain SUM reduce-scatter, which gloo
accepts; the default PREMUL_SUM path gloo rejects). Two rules follow from the collectives:
  - every rank runs the same number of forwards and backwards (each one all-gathers, each
    backward reduce-scatters), so a rank with fewer micro-batches (uneven or empty shard) runs
    zero-weight ones (`pad_micro_batches`), and forward-only passes pad the rank's samples
    (`pad_shard`);
  - the optimizer is built after sharding (its parameters are the DTensors), and weights are
    gathered with torch.distributed.checkpoint's full-state-dict helpers, a collective every
    rank must join (the LearnerGroup calls all ranks); rank 0 gets the CPU copy.

A GPU user sets `learner.strategy: fsdp`, `learner.num_workers: N` (>= 2) and
`resources.gpus_per_learner_worker: 1`; NCCL is used. The model stays on CPU until sharded, so
each rank's GPU never holds more than its shards plus one layer's full parameters; host RAM must
hold one full copy per rank (briefly). Every rank loads the same checkpoint, so no parameter is
broadcast before sharding (`check_same_weights` compares checksums instead): NCCL accepts only
device tensors, and these are still on the host. Mixed precision: fp32 shards, compute in
model.dtype (`MixedPrecisionPolicy`, rlcurr.learner.precision). On CPU the same code runs over
gloo (tests/test_fsdp.py); only a GPU run confirms NCCL itself (`rlcurr doctor` checks it).

Left out: CPU offload (OffloadPolicy), HSDP (2-D replicate x shard mesh), meta-device init
with rank-0 broadcast, activation checkpointing, prefetch tuning, LoRA (peft's merge for rollout
weights would need the gathered full model; rejected in the config), and checkpoints that load
across strategies (the optimizer state is saved keyed by parameter name, DDP's by index).
"""

from __future__ import annotations


import torch
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_model_state_dict,
                                                     set_optimizer_state_dict)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor

from rlcurr.learner.dataparallel import all_gather_list, dist_rank_world, max_across_ranks, shard
from rlcurr.learner.precision import fsdp_policy


def check_same_weights(model: torch.nn.Module) -> None:
    """Before sharding: every rank loaded the same checkpoint, so the ranks' full copies agree and
    no parameter needs to travel (a broadcast of these host tensors is what NCCL rejects: "No
    backend type associated with device type cpu"). A checksum per rank, exchanged as Python
    objects (which NCCL supports), guards that assumption."""
    mine = float(sum(p.detach().double().abs().sum() for p in model.parameters()))
    sums = all_gather_list([mine])
    if max(sums) - min(sums) > 1e-9 * max(1.0, abs(sums[0])):
        raise RuntimeError(f"learner ranks loaded different weights (checksums {sums}); FSDP needs every "
                           "rank to load the same model directory")


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's repeated blocks: modules of a class some submodule lists in `_no_split_modules`."""
    names: set[str] = set()
    for m in model.modules():
        names |= set(getattr(m, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise ValueError(f"learner.strategy fsdp: no decoder layers found in {type(model).__name__} "
                         "(no _no_split_modules)")
    return layers


def shard_model(model: torch.nn.Module, dtype: str = "float32") -> torch.nn.Module:
    """fully_shard each decoder layer, then the root; gradients summed (not averaged) across ranks.
    `dtype` is the compute dtype (model.dtype): below fp32, units all-gather in it and reduce in
    fp32 over fp32 shards (rlcurr.learner.precision). fully_shard moves the parameters to the
    mesh's device (the rank's GPU under NCCL)."""
    world = dist_rank_world()[1]
    mesh = init_device_mesh("cuda" if torch.cuda.is_available() else "cpu", (world,))
    policy = fsdp_policy(dtype)
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    for m in model.modules():  # the divide factor is per FSDP unit, not inherited from the root
        if isinstance(m, FSDPModule):
            m.set_gradient_divide_factor(1.0)
            m.set_force_sum_reduction_for_comms(True)
    return model


def pad_micro_batches(micro_batches: list[tuple[list[int], float]], indices: list[int]) -> list[tuple[list[int], float]]:
    """This rank's micro-batches plus zero-weight ones (of the mini-batch's first answer), up to
    the largest count over ranks (cuts by a token budget make counts differ, so the counts are
    exchanged). A zero-weight pass adds exactly zero to the summed gradient but joins the
    all-gather / reduce-scatter."""
    most = max_across_ranks(len(micro_batches))
    return micro_batches + [([indices[0]], 0.0)] * (most - len(micro_batches))


def pad_chunks(chunks: list[list[int]]) -> list[list[int]]:
    """Forward-only passes: this rank's chunks (index lists) plus repeats of its first item's
    chunk ([0]) up to the largest count over ranks; the caller drops their results."""
    return chunks + [[0]] * (max_across_ranks(len(chunks)) - len(chunks))


def pad_shard(mine: list, items: list) -> list:
    """This rank's shard of `items` padded with copies of items[0] to rank 0's (the largest)
    length, so forward-only passes (chunked the same way) run equally often on every rank."""
    world = dist_rank_world()[1]
    return mine + [items[0]] * (len(shard(items, 0, world)) - len(mine))


def as_float(t: torch.Tensor) -> float:
    """A scalar that may be a DTensor (e.g. clip_grad_norm_'s total norm over sharded gradients)."""
    return float(t.full_tensor() if isinstance(t, DTensor) else t)


_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Full, HF-named CPU tensors on rank 0 ({} on the others). Collective: every rank calls it."""
    return get_model_state_dict(model, options=_FULL)


def without_tied_copies(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the aliases of tied weights (e.g. lm_head.weight = the embedding): gathered, they are
    separate tensors, and save_pretrained would store both where the unsharded model stores one."""
    own = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
    return {k: v for k, v in state.items() if k in own}


def load_full_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Every rank passes the same full tensors; each keeps its shard."""
    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))


def full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Optimizer state keyed by parameter name, full tensors on rank 0 ({} elsewhere). Collective."""
    return get_optimizer_state_dict(model, optimizer, options=_FULL)


def load_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def full_checksum(model: torch.nn.Module) -> float:
    """Sum of |w| over the full parameters (collective), comparable with an unsharded model's."""
    return float(sum(p.full_tensor().double().abs().sum() for p in model.parameters()))
