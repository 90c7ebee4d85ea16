"""Mixed precision for the learner: fp32 master weights and optimizer state, low-precision compute.

Variant: what verl, OpenRLHF and torchtune do. `model.dtype` (bfloat16 / float16) is the COMPUTE
dtype and the dtype the rollout engines run in; it is never the dtype of a trained parameter.
  - Trainable parameters live in fp32, and so do their gradients and AdamW's two moments. bf16
    keeps 8 significant bits, so an update of lr 1e-6 to a weight of ~0.02 (or ~1.0 for a norm)
    rounds back to the same value: AdamW directly on bf16 parameters barely moves them.
  - Without FSDP the forward and backward run under `torch.autocast(dtype=compute)`: matmuls in
    bf16 from cached bf16 copies of the fp32 weights (one copy per forward, freed after it),
    reductions and the log-softmax in fp32 (batching.selective_logprobs upcasts the logits).
  - Under FSDP2 every unit gets `MixedPrecisionPolicy(param_dtype=compute, reduce_dtype=fp32)`:
    the fp32 shards are all-gathered as bf16 for forward/backward and gradients are
    reduce-scattered in fp32 into fp32 shards.
  - Frozen weights need no master copy: the KL reference model and LoRA's base model stay in the
    compute dtype (LoRA adapters are fp32, as peft keeps them).
  - Weights sent to the engines are cast to the compute dtype (`engine_dtype`).
Left out: loss scaling for float16 (bf16 needs none; fp16 compute is allowed but runs without a
GradScaler, so very small gradients can underflow), and fp8.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from rlcurr.learner.models import DTYPES


def compute_dtype(dtype: str) -> torch.dtype:
    """The dtype matmuls run in (model.dtype)."""
    return DTYPES[dtype]


def is_mixed(dtype: str) -> bool:
    return compute_dtype(dtype) != torch.float32


def autocast(device: torch.device, dtype: str):
    """The compute context of a forward (and its backward) without FSDP: autocast to the compute
    dtype when it is not fp32; FSDP's mixed-precision policy does the casting instead."""
    if not is_mixed(dtype):
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=compute_dtype(dtype))


def fsdp_policy(dtype: str):
    """FSDP2's mixed-precision policy for a compute dtype: bf16 all-gathers, fp32 reductions."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if not is_mixed(dtype):
        return MixedPrecisionPolicy()
    return MixedPrecisionPolicy(param_dtype=compute_dtype(dtype), reduce_dtype=torch.float32)
