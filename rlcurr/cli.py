"""rlcurr command line: train | recipes | inspect | plan | doctor | profile."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rlcurr.errors import UserError

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"


def cmd_train(args) -> None:
    from rlcurr.config import load_config

    if args.resume:
        if args.recipe or args.overrides:
            raise UserError("--resume RUN_DIR takes no recipe or overrides: the run's config.yaml is used")
        run_dir = Path(args.resume)
        cfg = load_config(run_dir / "config.yaml", [f"trainer.output_dir={run_dir}"])
    elif not args.recipe:
        raise UserError("give a recipe (rlcurr train RECIPE.yaml [key=value ...]) or --resume RUN_DIR")
    else:
        cfg = load_config(args.recipe, args.overrides)
        if cfg.curriculum.prompts.prior is not None:  # a bad profile fails now, not after the warm-up
            from rlcurr.profile import load_profile

            load_profile(cfg.curriculum.prompts.prior)
    from rlcurr.cluster import ray_of_this_call
    from rlcurr.trainer import Trainer  # heavy imports (torch, ray) only once the recipe is valid

    with ray_of_this_call():
        Trainer(cfg).run(resume=bool(args.resume))
    print(f"run written to {cfg.run_dir}")


def cmd_recipes(args) -> None:
    from rlcurr.config import load_yaml

    for path in sorted(Path(args.dir).glob("*.yaml")):
        try:
            desc = load_yaml(path).get("description", "")
        except UserError as e:
            desc = f"(unreadable: {e})"
        print(f"{path.stem:<28} {str(desc).strip().splitlines()[0] if desc else ''}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlcurr", description="RL post-training with a curriculum controller")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train from a recipe YAML with dotted.key=value overrides")
    p.add_argument("recipe", nargs="?")
    p.add_argument("overrides", nargs="*", help="e.g. trainer.steps=50 algo.clip_high=0.28")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its newest complete checkpoint")
    p.set_defaults(fn=cmd_train)
    p = sub.add_parser("recipes", help="list the shipped recipes")
    p.add_argument("--dir", default=str(RECIPES_DIR))
    p.set_defaults(fn=cmd_recipes)
    from rlcurr.report import add_inspect_parser

    add_inspect_parser(sub)
    from rlcurr.plan import add_plan_parser

    add_plan_parser(sub)
    from rlcurr.doctor import add_doctor_parser

    add_doctor_parser(sub)
    from rlcurr.profile_command import add_profile_parser

    add_profile_parser(sub)
    args = parser.parse_args(argv)
    try:
        code = args.fn(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
