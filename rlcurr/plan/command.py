"""The `rlcurr plan RECIPE` command: validate the recipe, estimate memory, place it on Ray, print."""

from __future__ import annotations

import json
import os

from rlcurr.errors import UserError
from rlcurr.plan.memory import DEFAULT_PROMPT_TOKENS, estimate_memory
from rlcurr.plan.placement import check_gpus_fit, default_gpus, plan_placement, reward_actor_rows, start_ray
from rlcurr.plan.printing import format_memory, format_placement, plan_to_json


def cmd_plan(args) -> None:
    from rlcurr.config import load_config

    cfg = load_config(args.recipe, args.overrides)
    if args.gpus is not None and args.gpus < 0:
        raise UserError(f"--gpus must be >= 0 (got {args.gpus})")
    memory = estimate_memory(cfg, gpu_memory_gib=args.gpu_memory_gib, prompt_tokens=args.prompt_tokens)
    gpus, pretend_note = (args.gpus, None) if args.gpus is not None else default_gpus(cfg)
    if gpus and not os.environ.get("RAY_ADDRESS"):
        check_gpus_fit(cfg, gpus, [gpus])  # before starting Ray: a local node of --gpus GPUs
    import ray

    started = start_ray(gpus)
    try:
        placed = plan_placement(cfg)
        placed.rows += reward_actor_rows(cfg)  # model rewards' actors: outside the placement group
    finally:
        if started:
            ray.shutdown()
    if args.json:
        print(json.dumps(plan_to_json(placed, memory), indent=1))
        return
    print(f"plan for {cfg.name} ({args.recipe}): nothing started, nothing written")
    if pretend_note:
        print(pretend_note)
    print("\n".join(format_placement(placed)))
    print("\n".join(format_memory(memory, on_cpu=placed.on_cpu)))


def add_plan_parser(sub) -> None:
    p = sub.add_parser("plan", help="show a recipe's Ray placement and per-GPU memory estimate, without training")
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", help="e.g. rollout.num_workers=2 learner.num_workers=2")
    p.add_argument("--gpus", type=int, default=None,
                   help="GPUs the local Ray pretends to have (default: detected; on a machine without GPUs, "
                        "what a recipe that sets resources.* needs; not with RAY_ADDRESS)")
    p.add_argument("--gpu-memory-gib", type=float, default=80.0, help="memory of one GPU (default 80)")
    p.add_argument("--prompt-tokens", type=int, default=DEFAULT_PROMPT_TOKENS,
                   help=f"prompt length assumed for the memory estimate (default {DEFAULT_PROMPT_TOKENS})")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(fn=cmd_plan)
