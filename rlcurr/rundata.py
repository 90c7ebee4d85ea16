"""A run directory read back: config.yaml, metrics.jsonl and curriculum.jsonl (docs/run-directory.md).

`load_run` gives a `RunData` (lines sorted by step, optionally cut to a step range) that both
`rlcurr inspect` (rlcurr.report) and `rlcurr inspect --compare` (rlcurr.compare) read, with the
small readings they share: `num`, `eval_rows`, `config_brief`. Works on a finished run, a run
still going, or a crashed one (a cut-off last line is skipped).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rlcurr.checkpoint import iter_jsonl
from rlcurr.curriculum.row import CurriculumRow
from rlcurr.errors import UserError

RUN_FILES = ("config.yaml", "metrics.jsonl", "curriculum.jsonl")


@dataclass
class RunData:
    run_dir: Path
    config: dict[str, Any]
    metrics: list[dict[str, Any]]      # lines of metrics.jsonl within `steps`, sorted by step
    curriculum: list[CurriculumRow]   # lines of curriculum.jsonl within `steps`, sorted by step
    distributions: list[str]
    steps: tuple[int | None, int | None] | None = None
    last_step: int | None = None       # last training step logged (whole file, ignores `steps`)
    skipped_lines: dict[str, int] = field(default_factory=dict)  # unparseable lines per file

    @property
    def expected_steps(self) -> int | None:
        steps = (self.config.get("trainer") or {}).get("steps")
        return steps if isinstance(steps, int) else None

    @property
    def finished(self) -> bool:
        n = self.expected_steps
        return n is not None and self.last_step is not None and self.last_step >= n - 1

    @property
    def status_key(self) -> str:
        """"finished", "not_started" or "unfinished" (for JSON)."""
        if self.finished:
            return "finished"
        return "not_started" if self.last_step is None else "unfinished"

    @property
    def status(self) -> str:
        if self.finished:
            return "finished"
        if self.last_step is None:
            return f"not started (no training step logged): {self._liveness()}"
        n = self.expected_steps
        return (f"unfinished at step {self.last_step}/{(n - 1) if n else '?'}: "
                f"{self._liveness()}")

    def _liveness(self) -> str:
        try:
            age = time.time() - (self.run_dir / "metrics.jsonl").stat().st_mtime
        except OSError:
            return "still running or crashed"
        if age < 600:
            return f"probably still running (last write {age:.0f}s ago)"
        return f"crashed or stopped (last write {age / 60:.0f} min ago)"


def parse_steps(text: str | None) -> tuple[int | None, int | None] | None:
    """'A:B' -> (A, B) inclusive, 'A:' / ':B' open-ended, 'N' -> (N, N); None/'' -> None."""
    if text is None or text.strip() in ("", ":"):
        return None
    parts = text.split(":")
    try:
        if len(parts) == 1:
            n = int(parts[0])
            return (n, n)
        if len(parts) == 2:
            a = int(parts[0]) if parts[0].strip() else None
            b = int(parts[1]) if parts[1].strip() else None
            if a is not None and b is not None and a > b:
                raise UserError(f"--steps {text}: start {a} is after end {b}")
            return (a, b)
    except ValueError:
        pass
    raise UserError(f"--steps {text!r}: expected A:B with integers (inclusive; A: and :B also work)")


def _in_range(step: Any, steps) -> bool:
    if steps is None:
        return True
    a, b = steps
    return (a is None or step >= a) and (b is None or step <= b)


def _read_jsonl(path: Path) -> tuple[list[dict], int]:
    rows, bad = [], 0
    for _, obj in iter_jsonl(path):
        if isinstance(obj, dict) and isinstance(obj.get("step"), int):
            rows.append(obj)
        else:
            bad += 1
    return rows, bad


def _read_rows(path: Path) -> tuple[list[CurriculumRow], int]:
    """curriculum.jsonl as typed rows; a line that is not one (no integer step, a malformed
    field) counts as skipped."""
    objs, bad = _read_jsonl(path)
    rows = []
    for obj in objs:
        try:
            rows.append(CurriculumRow.from_json(obj))
        except ValueError:
            bad += 1
    return rows, bad


def load_run(run_dir: str | Path, steps: tuple[int | None, int | None] | None = None) -> RunData:
    """Read a run directory; `steps` keeps only lines with A <= step <= B (None: open side)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory not found: {run_dir}")
    missing = [f for f in RUN_FILES if not (run_dir / f).is_file()]
    if missing:
        raise UserError(f"{run_dir} does not look like an rlcurr run: missing {', '.join(missing)}")
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{run_dir / 'config.yaml'}: not valid YAML: {e}") from None
    if not isinstance(config, dict):
        raise UserError(f"{run_dir / 'config.yaml'}: expected a mapping")
    metrics, bad_m = _read_jsonl(run_dir / "metrics.jsonl")
    curriculum, bad_c = _read_rows(run_dir / "curriculum.jsonl")
    train_steps = [r["step"] for r in metrics if r["step"] >= 0] + [r.step for r in curriculum]
    last_step = max(train_steps) if train_steps else None
    metrics = sorted((r for r in metrics if _in_range(r["step"], steps)), key=lambda r: r["step"])
    curriculum = sorted((r for r in curriculum if _in_range(r.step, steps)), key=lambda r: r.step)

    names: list[str] = []
    for r in curriculum:
        for d in r.distributions:
            if d not in names:
                names.append(d)
    env_names = (config.get("env") or {}).get("distributions")
    for d in env_names if isinstance(env_names, list) else []:
        if isinstance(d, str) and d not in names:
            names.append(d)
    for r in metrics:
        for k in r:
            if k.startswith("eval/accuracy/") and k[len("eval/accuracy/"):] not in names:
                names.append(k[len("eval/accuracy/"):])
    return RunData(run_dir=run_dir, config=config, metrics=metrics, curriculum=curriculum, distributions=names,
                   steps=steps, last_step=last_step,
                   skipped_lines={"metrics.jsonl": bad_m, "curriculum.jsonl": bad_c})


# ---------------------------------------------------------------- readings shared by inspect and compare

def num(x: Any) -> float | None:
    """A finite int or float as a float; None for anything else (bools, NaN, missing)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


def config_brief(run: RunData) -> dict[str, Any]:
    c = run.config
    model = c.get("model") or {}
    if model.get("path"):
        model_s = str(model["path"])
    elif model.get("tiny"):
        t = model["tiny"]
        model_s = f"tiny {t.get('arch', '?')} h{t.get('hidden_size', '?')} L{t.get('num_layers', '?')}"
    else:
        model_s = "?"
    if model.get("lora"):
        model_s += f" (LoRA r={model['lora'].get('r', '?')})"
    return {
        "name": c.get("name"),
        "env": (c.get("env") or {}).get("name"),
        "sampler": (c.get("curriculum") or {}).get("sampler", "uniform"),
        "model": model_s,
        "algo": (c.get("algo") or {}).get("name"),
        "steps": (c.get("trainer") or {}).get("steps"),
        "n": (c.get("rollout") or {}).get("n"),
        "lr": (c.get("learner") or {}).get("lr"),
        "prompts_per_step": (c.get("trainer") or {}).get("prompts_per_step"),
    }


def eval_rows(run: RunData) -> list[dict[str, Any]]:
    return [r for r in run.metrics if "eval/accuracy_mean" in r or any(k.startswith("eval/accuracy/") for k in r)]
