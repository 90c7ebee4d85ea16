"""Run records: metrics.jsonl, curriculum.jsonl, TensorBoard events, W&B, terminal progress bar.

Resume (`RunLogger(..., resume_step=k)`, k = the first step this process runs):
- TensorBoard: the writer is opened with `purge_step=k`, so TensorBoard drops the events of steps
  >= k that the interrupted process wrote after its last checkpoint (no doubled curves).
- W&B: the first start stores the run id in `<run_dir>/wandb_run_id`; every start passes
  `id=<that id>` and a resume adds `resume="allow"`, so the resumed process logs into the same
  W&B run. W&B has no purge: steps after the checkpoint that the interrupted process already
  logged stay, and W&B ignores re-logged steps that are not above its last step (it warns).
"""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


def _flatten(prefix: str, obj, out: dict[str, float]) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(f"{prefix}/{k}" if prefix else str(k), v, out)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool) and math.isfinite(obj):
        out[prefix] = float(obj)


WANDB_ID_FILE = "wandb_run_id"


def wandb_run_id(run_dir: Path, fresh: bool) -> str:
    """The run's W&B id: a new one stored in `run_dir` for a fresh run, else the stored one (a run
    started before ids were stored gets a new one, stored now)."""
    path = Path(run_dir) / WANDB_ID_FILE
    if not fresh and path.is_file():
        run_id = path.read_text().strip()
        if run_id:
            return run_id
    run_id = uuid.uuid4().hex[:16]  # W&B ids: letters and digits
    path.write_text(run_id + "\n")
    return run_id


class RunLogger:
    def __init__(self, run_dir: Path, cfg, resume_step: int | None = None):
        """`resume_step`: None for a fresh run; when resuming, the first step this process runs."""
        self.run_dir = run_dir
        self.metrics_f = open(run_dir / "metrics.jsonl", "a")
        self.curriculum_f = open(run_dir / "curriculum.jsonl", "a")
        self.tb = None
        if cfg.logging.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_step)
        self.wandb = None
        if cfg.logging.wandb is not None:
            import wandb

            resume = {} if resume_step is None else {"resume": "allow"}
            self.wandb = wandb.init(project=cfg.logging.wandb.project, name=cfg.name, dir=str(run_dir),
                                    mode=cfg.logging.wandb.mode, config=cfg.model_dump(mode="json"),
                                    id=wandb_run_id(run_dir, fresh=resume_step is None), **resume)
        self.progress = None
        self.show_progress = cfg.logging.progress

    def start_progress(self, total: int, first_step: int = 0) -> None:
        if not self.show_progress:
            return
        self.progress = Progress(TextColumn("step {task.completed}/{task.total}"), BarColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("eta"),
                                 TimeRemainingColumn(), console=console, transient=False)
        self.progress.start()
        self.task = self.progress.add_task("train", total=total, completed=first_step, info="")

    def record_eval(self, metrics: dict) -> None:
        """Evaluation before the first update: written as step -1 so plots start at the baseline."""
        self._write(self.metrics_f, {"step": -1, **metrics})
        self._scalars(-1, metrics)
        console.print("eval before RL: " + ", ".join(f"{k.split('/')[-1]}={v:.3f}" for k, v in metrics.items()
                                                     if k.startswith("eval/")))

    def record(self, step: int, metrics: dict, curriculum: dict) -> None:
        self._write(self.metrics_f, metrics)
        self._write(self.curriculum_f, {"step": step, **{k: v for k, v in curriculum.items() if k != "step"}})
        self._scalars(step, metrics)
        flat: dict[str, float] = {}
        _flatten("curriculum", {k: v for k, v in curriculum.items() if k != "step"}, flat)
        self._scalars(step, flat)
        if self.progress is not None:
            tok_s = metrics.get("tokens", 0) / max(metrics.get("time/step", 1e-9), 1e-9)
            info = f"reward {metrics.get('reward/mean', float('nan')):.3f}  {tok_s:,.0f} tok/s"
            if "eval/accuracy_mean" in metrics:
                info += f"  eval {metrics['eval/accuracy_mean']:.3f}"
            alerts = curriculum.get("alerts") or []
            if alerts:  # starving / forgetting distributions (curriculum/prompts.py)
                from rlcurr.curriculum.prompts import alert_text

                info += "  [yellow]ALERT " + "; ".join(alert_text(a) for a in alerts[:2])
                info += f" (+{len(alerts) - 2})[/yellow]" if len(alerts) > 2 else "[/yellow]"
            self.progress.update(self.task, completed=step + 1, info=info)

    def _scalars(self, step: int, metrics: dict) -> None:
        flat: dict[str, float] = {}
        _flatten("", metrics, flat)
        flat.pop("step", None)
        if self.tb is not None:
            for k, v in flat.items():
                self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(flat, step=max(step, 0))

    @staticmethod
    def _write(f, obj: dict) -> None:
        f.write(json.dumps(obj) + "\n")
        f.flush()

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        for f in (self.metrics_f, self.curriculum_f):
            f.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
