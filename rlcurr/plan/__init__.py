"""`rlcurr plan RECIPE`: what a recipe would start, without training.

See docs/scaling.md, "Planning a GPU run: rlcurr plan".

Nothing is built, downloaded or written: the recipe is validated (`load_config`), then

1. Placement (`rlcurr.plan.placement`): the trainer's own Ray placement group is created on the
   cluster (a local Ray pretending `--gpus N`, or RAY_ADDRESS), each actor's GPUs and node read
   back by a no-op task, and the group removed.
2. Memory per GPU (`rlcurr.plan.memory`, from `rlcurr.plan.shape`'s parameter count): an
   ESTIMATE for each learner rank and rollout worker, colocated or not; its assumptions and what
   it leaves out are listed in rlcurr/plan/memory.py.

`rlcurr.plan.printing` writes both as text or JSON; `rlcurr.plan.command` is the command line.
"""

from __future__ import annotations

from rlcurr.plan.command import add_plan_parser, cmd_plan
from rlcurr.plan.memory import (CUDA_CONTEXT_BYTES, DEFAULT_PROMPT_TOKENS, DTYPE_BYTES, GIB, LOGIT_CHUNK_BUFFERS,
                                LOGIT_CHUNK_BYTES, LORA_BYTES, MASTER_BYTES, GpuEstimate, MemoryEstimate,
                                activation_bytes_per_token, activation_bytes_per_token_layer, context_note,
                                estimate_memory, kv_bytes_per_token, learner_lines, micro_batch_hint,
                                micro_batch_tokens, rollout_lines)
from rlcurr.plan.placement import (ActorRow, PlacementPlan, asks_for_gpus, check_gpus_fit, default_gpus, gpus_needed,
                                   placement_arguments, plan_placement, start_ray)
from rlcurr.plan.printing import format_memory, format_placement, plan_to_json
from rlcurr.plan.shape import (QWEN25_SHAPES, TINY_VOCAB_SIZE, ModelShape, count_params, layer_params, lora_params,
                               model_shape, root_params, shape_from_hf_config, shape_from_name)

__all__ = ["CUDA_CONTEXT_BYTES", "DEFAULT_PROMPT_TOKENS", "DTYPE_BYTES", "GIB", "LOGIT_CHUNK_BUFFERS",
           "LOGIT_CHUNK_BYTES", "LORA_BYTES", "MASTER_BYTES", "QWEN25_SHAPES", "TINY_VOCAB_SIZE", "ActorRow",
           "GpuEstimate", "MemoryEstimate", "ModelShape", "PlacementPlan", "activation_bytes_per_token",
           "activation_bytes_per_token_layer", "add_plan_parser", "asks_for_gpus", "check_gpus_fit", "cmd_plan",
           "context_note", "count_params", "default_gpus", "estimate_memory", "format_memory", "format_placement",
           "gpus_needed", "kv_bytes_per_token", "layer_params", "learner_lines", "lora_params", "micro_batch_hint",
           "micro_batch_tokens", "model_shape", "placement_arguments", "plan_placement", "plan_to_json",
           "root_params", "rollout_lines", "shape_from_hf_config", "shape_from_name", "start_ray"]
