"""Shared pieces of the benchmarks: run a recipe through the Trainer API, read its run directory,
count rollouts, summarise over seeds, print tables and write bench/results/<name>.json.

A "rollout" is one generated answer. The trainer logs `rollout/answers_generated` and
`rollout/tokens_generated` per step: every answer generated for training (the n answers of every
planned prompt, refill rounds and hinted re-rolls included); evaluation generations are not counted
(they are the measurement, identical across arms).
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("RLCURR_CACHE", "/tmp/rlcache")  # tiny models are built + warmed once, cached here

BENCH_DIR = Path(__file__).resolve().parent
RECIPES = BENCH_DIR.parent / "recipes"
RESULTS = BENCH_DIR / "results"
RUNS = BENCH_DIR / "runs"  # run directories of the bench runs (ignored by git)


# ---------------------------------------------------------------- building configs


def build_config(recipe: str | Path, overrides: list[str] = (), model_path: str | Path | None = None,
                 run_dir: str | Path | None = None):
    """The recipe with dotted overrides; `model_path` replaces `model.tiny` (and its warm-up) by a
    ready model directory, so several runs share one SFT-warmed model."""
    from rlcurr.config import apply_overrides, build_config as validate, load_yaml

    recipe = Path(recipe)
    data = load_yaml(recipe)
    data.setdefault("name", recipe.stem)
    data = apply_overrides(data, list(overrides))
    if model_path is not None:
        data["model"] = {"path": str(model_path), "dtype": data.get("model", {}).get("dtype", "float32")}
    trainer = data.setdefault("trainer", {})
    if run_dir is not None:
        trainer["output_dir"] = str(run_dir)
    trainer["overwrite"] = True
    data.setdefault("logging", {}).update(tensorboard=False, progress=False)
    return validate(data)


def warm_model(recipe: str | Path, overrides: list[str] = ()) -> Path:
    """Build + SFT-warm the recipe's tiny model (cached under $RLCURR_CACHE); its directory."""
    from rlcurr.learner.prepare import prepare_model

    cfg = build_config(recipe, overrides)
    return prepare_model(cfg, cfg.env.build(cfg.seed), log=lambda s: print("  " + s, flush=True))


# ---------------------------------------------------------------- running


@dataclass
class Run:
    """What one training run left in its run directory, plus its wall time."""

    run_dir: Path
    metrics: list[dict]
    curriculum: list[dict]
    wall_s: float
    cfg: object = None
    info: dict = field(default_factory=dict)

    @property
    def steps(self) -> list[dict]:
        return [m for m in self.metrics if m.get("step", -1) >= 0]

    @property
    def evals(self) -> list[dict]:
        return [m for m in self.metrics if "eval/accuracy_mean" in m]


def read_jsonl(path: Path) -> list[dict]:
    from rlcurr.checkpoint import iter_jsonl

    return [obj for _, obj in iter_jsonl(path) if isinstance(obj, dict)] if path.exists() else []


def read_run(run_dir: str | Path) -> Run:
    run_dir = Path(run_dir)
    return Run(run_dir, read_jsonl(run_dir / "metrics.jsonl"), read_jsonl(run_dir / "curriculum.jsonl"), 0.0)


def run_config(cfg, log=None) -> Run:
    """Train `cfg` to the end with `Trainer(cfg).run()`, kill its actors, return the records."""
    import ray

    from rlcurr.trainer import Trainer

    t0 = time.perf_counter()
    trainer = Trainer(cfg, log=log or (lambda s: None))
    try:
        trainer.run()
    finally:
        release(trainer)
    run = read_run(cfg.run_dir)
    run.wall_s, run.cfg = time.perf_counter() - t0, cfg
    return run


def release(trainer) -> None:
    """Stop a finished trainer's actors: a bench runs many trainers in one process."""
    import ray

    if hasattr(trainer, "shutdown"):
        trainer.shutdown()
        return
    for name in ("rollout_pool", "learner", "rollout_workers"):
        obj = getattr(trainer, name, None)
        for part in obj if isinstance(obj, list) else [obj]:
            if hasattr(part, "shutdown"):
                part.shutdown()
            elif isinstance(part, ray.actor.ActorHandle):
                ray.kill(part)


# ---------------------------------------------------------------- statistics and output


def mean_std(xs: list[float]) -> tuple[float, float]:
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def bootstrap_ci(xs: list[float], level: float = 0.95, resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `xs` (nan, nan for no values)."""
    import numpy as np

    xs = np.asarray([x for x in xs if x is not None], dtype=float)
    if xs.size == 0:
        return float("nan"), float("nan")
    means = np.random.default_rng(seed).choice(xs, size=(resamples, xs.size)).mean(axis=1)
    tail = (1 - level) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def with_ci(xs: list[float]) -> dict:
    """Per-seed values with their mean and 95 % bootstrap interval."""
    return {"mean": statistics.fmean(xs), "ci95": bootstrap_ci(xs), "per_seed": xs}


def fmt(mean: float, std: float | None = None, digits: int = 3) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def print_table(header: list[str], rows: list[list]) -> None:
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for j, r in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
        if j == 0:
            print("  ".join("-" * w for w in widths))


def save_figure(fig, path: Path, dpi: int = 110) -> None:
    """Lay out, write (making the folder) and close a matplotlib figure, and say where."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    print(f"wrote {path}")


def hardware() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__}


def git_rev() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=BENCH_DIR, capture_output=True,
                              text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def write_result(name: str, result: dict, command: str) -> Path:
    """bench/results/<name>.json: the figures, the command that made them, the hardware."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    out = {"bench": name, "command": command, "hardware": hardware(), "git": git_rev(),
           "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), **result}
    path.write_text(json.dumps(out, indent=2, default=lambda o: str(o) if isinstance(o, Path) else float(o)) + "\n")
    print(f"\nwrote {path}")
    return path


def command_line() -> str:
    import sys

    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(BENCH_DIR.parent) if script.is_relative_to(BENCH_DIR.parent) else script
    return " ".join(["python", str(shown), *sys.argv[1:]])


def run_arms(recipe: str | Path, arms: dict[str, list[str]], seeds: list[int], overrides: list[str],
             model_path: Path, tag: str) -> dict[str, list[Run]]:
    """Every arm (name -> extra overrides) for every seed, on the same model; seed-major order,
    so an interrupted bench has compared every arm on the seeds it finished."""
    runs: dict[str, list[Run]] = {name: [] for name in arms}
    for seed in seeds:
        for name, extra in arms.items():
            cfg = build_config(recipe, [*overrides, f"seed={seed}", *extra], model_path=model_path,
                               run_dir=RUNS / tag / f"{name}_seed{seed}")
            run = run_config(cfg)
            run.info.update(arm=name, seed=seed)
            runs[name].append(run)
            final = run.evals[-1] if run.evals else {}
            print(f"  {name:>10} seed {seed}: {len(run.steps)} steps in {run.wall_s:.0f} s, "
                  f"final eval mean {final.get('eval/accuracy_mean', float('nan')):.3f}", flush=True)
    return runs


def eval_keys(run: Run) -> list[str]:
    """The per-distribution accuracy keys of a run's evaluations, in recorded order."""
    return [k for k in (run.evals[0] if run.evals else {}) if k.startswith("eval/accuracy/")]


def final_accuracy(run: Run) -> dict[str, float]:
    """Held-out accuracy per distribution at the run's last evaluation."""
    final = run.evals[-1]
    return {k.removeprefix("eval/accuracy/"): final[k] for k in eval_keys(run)}


def run_bench(name: str, recipe: str | Path, arms: dict[str, list[str]], seeds: list[int],
              overrides: list[str], warm_overrides: list[str] | None = None) -> tuple[dict[str, list[Run]], dict]:
    """Warm the shared model once (on `warm_overrides` when given, else `overrides`), run every arm
    on every seed; return the runs and the evaluation before RL (step -1, identical for every arm:
    same model, greedy decoding), printed."""
    model = warm_model(recipe, overrides if warm_overrides is None else warm_overrides)
    print(f"{name} bench: {list(arms)} x seeds {seeds}, model {model}", flush=True)
    runs = run_arms(recipe, arms, seeds, overrides, model, name)
    baseline = runs[next(iter(arms))][0].evals[0]
    print("\nbefore RL: " + ", ".join(f"{k.split('/')[-1]} {v:.3f}" for k, v in baseline.items() if k != "step"))
    return runs, baseline


def save_bench(name: str, args, arms: dict[str, list[str]], overrides: list[str], **fields) -> dict:
    """The bench's result (settings + `fields`), written to bench/results/<name>.json unless --quick."""
    result = {"settings": {**vars(args), "recipe": str(args.recipe), "arms": arms, "overrides": overrides}, **fields}
    if not args.quick:
        write_result(name, result, command_line())
    return result
