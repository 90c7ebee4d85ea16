"""Math word problems from JSONL or Parquet files, split into distributions by source or difficulty.

Rows (one JSON object per line, or one Parquet row) have:

    question    str, required
    answer      str or number, required (the reference checked by `math_verify`)
    hint        optional guidance text for adaptive hints
    solution    optional worked solution; when there is no `hint`, the first `hint_fraction`
                of its text (cut at a word boundary) is the hint
    source, difficulty   optional labels; `distribution_by` picks one as the curriculum arm
                (rows without the label go to "unknown"; "none" puts every row in "all")

Any other keys are passed to reward functions as columns. `solution` is always a column: the
row's solution, or the answer when the row has none (TRL's `accuracy_reward` reads it).

Eval split: `eval_files` when given; otherwise a fixed, seeded held-out slice of each
distribution of the train files: `eval_size` rows, but at most `eval_fraction` of the
distribution and always leaving at least one row to train on.

With no `train_files`, the small sample shipped in envs/data/math_sample.jsonl is used.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Iterator, Literal

from pydantic import Field

from envs.base import EnvConfigBase, PoolEnvironment
from rlcurr.errors import UserError
from rlcurr.types import Prompt

SAMPLE_FILE = Path(__file__).parent / "data" / "math_sample.jsonl"


class MathConfig(EnvConfigBase):
    name: Literal["math"] = "math"
    train_files: list[str] | None = Field(None, description="JSONL/Parquet files; default: the shipped sample")
    eval_files: list[str] | None = None
    distribution_by: Literal["source", "difficulty", "none"] = "source"
    eval_fraction: float = Field(0.2, gt=0, lt=1, description="cap on the held-out slice when there are no eval_files")
    hint_fraction: float = Field(0.5, ge=0, le=1, description="share of `solution` used as a hint; 0 = none")

    def build(self, seed: int) -> "MathEnv":
        return MathEnv(self, seed)


class MathEnv(PoolEnvironment):
    default_rewards = ("math_verify",)

    def __init__(self, cfg: MathConfig, seed: int):
        self.cfg = cfg
        self.train_files = cfg.train_files or [str(SAMPLE_FILE)]
        train = _group(self._load(self.train_files))
        if cfg.eval_files:
            self._train, self._eval = train, _group(self._load(cfg.eval_files))
        else:
            self._train, self._eval = {}, {}
            for dist, prompts in train.items():
                self._train[dist], self._eval[dist] = self._hold_out(prompts, random.Random(f"math-{seed}-{dist}"))
        if not self._train:
            raise UserError(f"math env: no rows in {self.train_files}")
        self._train = dict(sorted(self._train.items()))  # distributions in name order

    def _load(self, files: list[str]) -> list[Prompt]:
        return [self._prompt(row, where) for f in files for row, where in read_rows(f)]

    def _prompt(self, row: dict[str, Any], where: str) -> Prompt:
        for key in ("question", "answer"):
            if row.get(key) is None or str(row[key]).strip() == "":
                raise UserError(f"{where}: missing {key!r} (keys: {sorted(row)})")
        if not isinstance(row["question"], str):
            raise UserError(f"{where}: 'question' must be a string, got {type(row['question']).__name__}")
        answer = str(row["answer"]).strip()
        solution = row.get("solution")
        columns = {k: v for k, v in row.items() if k not in ("question", "hint")}
        columns["answer"] = answer
        columns["solution"] = str(solution) if solution else answer
        return Prompt(
            uid=where,
            distribution=self._distribution(row),
            question=row["question"],
            answer=answer,
            hint=row.get("hint") or solution_prefix(solution, self.cfg.hint_fraction),
            columns=columns,
        )

    def _distribution(self, row: dict[str, Any]) -> str:
        if self.cfg.distribution_by == "none":
            return "all"
        value = row.get(self.cfg.distribution_by)
        return "unknown" if value is None or str(value) == "" else str(value)

    def _hold_out(self, prompts: list[Prompt], rng: random.Random) -> tuple[list[Prompt], list[Prompt]]:
        if len(prompts) < 2:
            return prompts, []  # nothing can be held out without emptying the train pool
        k = min(self.cfg.eval_size, max(1, int(len(prompts) * self.cfg.eval_fraction)))
        order = list(range(len(prompts)))
        rng.shuffle(order)
        held = set(order[:k])
        return [p for i, p in enumerate(prompts) if i not in held], [p for i, p in enumerate(prompts) if i in held]



def _group(prompts: list[Prompt]) -> dict[str, list[Prompt]]:
    out: dict[str, list[Prompt]] = {}
    for p in prompts:
        out.setdefault(p.distribution, []).append(p)
    return out


def solution_prefix(solution: Any, fraction: float) -> str | None:
    """The first `fraction` of a worked solution, cut at a word boundary."""
    if not solution or fraction <= 0:
        return None
    words = str(solution).split()
    k = int(len(words) * fraction)
    return " ".join(words[:k]) if k > 0 else None


# ---------------------------------------------------------------- reading files


def read_rows(file: str | Path) -> Iterator[tuple[dict[str, Any], str]]:
    """(row, "path:line") for each row of a JSONL or Parquet file."""
    path = Path(file).expanduser()
    if path.is_dir():
        raise UserError(f"math env: {path} is a directory, not a data file (JSONL or Parquet)")
    if not path.is_file():
        raise UserError(f"math env: data file not found: {path}")
    if path.suffix == ".parquet":
        yield from _parquet_rows(path)
    else:
        yield from _jsonl_rows(path)


def _jsonl_rows(path: Path) -> Iterator[tuple[dict[str, Any], str]]:
    try:
        f = path.open("rb")
    except OSError as e:
        raise UserError(f"math env: cannot read {path}: {e.strerror or e}") from None
    with f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(f"{where}: not UTF-8 text (byte {raw[e.start]:#04x} at column {e.start + 1}); "
                                f"JSONL files must be UTF-8") from None
            if lineno == 1:
                line = line.removeprefix("\ufeff")  # a byte-order mark some editors write
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{where}: not valid JSON: {e.msg} (column {e.colno})") from None
            if not isinstance(row, dict):
                raise UserError(f"{where}: expected a JSON object, got {type(row).__name__}")
            yield row, where


def _parquet_rows(path: Path) -> Iterator[tuple[dict[str, Any], str]]:
    try:
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    except ImportError:
        try:
            import pandas as pd

            rows = pd.read_parquet(path).to_dict(orient="records")
        except ImportError:
            raise UserError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow), or use JSONL") from None
    except Exception as e:
        raise UserError(f"{path}: cannot read Parquet file: {e}") from None
    for i, row in enumerate(rows, start=1):
        yield row, f"{path}:row {i}"
