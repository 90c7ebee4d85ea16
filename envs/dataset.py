"""A local Hugging Face dataset as an environment: one row, one prompt.

`path` (and `eval_path`) is one of

- a directory written by ``datasets.Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``
  (read with ``datasets.load_from_disk``);
- a ``.json`` / ``.jsonl``, ``.parquet`` or ``.csv`` file (read with ``datasets.load_dataset``'s
  local ``json`` / ``parquet`` / ``csv`` builders).

A relative path is looked up in the recipe's directory, then in the working directory; the
resolved config holds the absolute path. Nothing is downloaded: a name that is not a local path
(``openai/gsm8k``) is an error telling you to save the dataset yourself::

    import datasets
    datasets.load_dataset("openai/gsm8k", "main").save_to_disk("data/gsm8k")   # then path: data/gsm8k

Columns. The recipe names the columns: `question_column` (the prompt text, a string),
`answer_column` (the reference, turned into text), optional `distribution_column` (its values are
the curriculum's distributions; without it every row is in one distribution, "all") and
optional `hint_column` (guidance for adaptive hints; empty values mean no hint). Every column
but the question reaches reward functions as a keyword list, as in TRL (``solution=[...]``),
plus ``answer``: always the answer column as text, whatever that column is called.

Splits. A DatasetDict trains on `split` (default "train") and evaluates on `eval_split` (default:
"test", else "validation", if the dict has one). With `eval_path` the eval rows come from there
(a DatasetDict there: `eval_split`, "test" or "validation"). Otherwise eval rows are held out
of each training distribution: `eval_size` rows chosen by the seed, but at most `eval_fraction`
of the distribution and always leaving one row to train on. An eval split or file is sampled
down to `eval_size` rows per distribution, also by the seed. `train_size` caps each
distribution's train pool (a seeded sample, in source order).

uids are ``<split>/<row index in its source>`` ("train/17", "test/3"; held-out rows keep their
train index; rows from `eval_path` are "eval/3", or "eval/test/3" from a DatasetDict there), so
they do not change when `eval_size` or `train_size` does.

Rewards: `default_reward` (default ``exact_match``; ``math_verify`` for math answers) is used
when the recipe lists no rewards, and is the eval verifier (accuracy = its score > 0).

Not supported: hub names, streaming, a directory of raw data files (pass the file), JSON files
whose rows sit under a field, chat-format (messages) question columns.
"""

from __future__ import annotations

import contextlib
import random
import tempfile
from pathlib import Path
from typing import Any, Iterator, Literal

from pydantic import Field, ValidationInfo, field_validator

from envs.base import EnvConfigBase, PoolEnvironment
from rlcurr.errors import UserError
from rlcurr.paths import recipe_relative
from rlcurr.types import Prompt

FILE_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
EVAL_SPLITS = ("test", "validation")  # a DatasetDict's eval split, when eval_split is not set

Row = tuple[str, str, int, dict]  # (source path, split label, row index in the split, the row)


class DatasetConfig(EnvConfigBase):
    name: Literal["dataset"] = "dataset"
    path: str = Field(description="a save_to_disk directory, or a .json/.jsonl/.parquet/.csv file")
    eval_path: str | None = Field(None, description="eval rows from here instead of held out from `path`")
    split: str = Field("train", description="the DatasetDict split to train on")
    eval_split: str | None = Field(None, description="the DatasetDict split to evaluate on; default test/validation")
    question_column: str = "question"
    answer_column: str = "answer"
    distribution_column: str | None = Field(None, description="column whose values are the distributions")
    hint_column: str | None = None
    train_size: int | None = Field(None, ge=1, description="cap on train prompts per distribution")
    eval_fraction: float = Field(0.2, gt=0, lt=1, description="cap on the share held out when there is no eval split")
    default_reward: str = Field("exact_match", description="reward when the recipe lists none; the eval verifier")

    @field_validator("path", "eval_path")
    @classmethod
    def _local_path(cls, value: str | None, info: ValidationInfo) -> str | None:
        """Relative paths: the recipe's directory first, then the working directory (absolute once found)."""
        # not found: DatasetEnv says so (or that it looks like a hub name)
        return recipe_relative(value, (info.context or {}).get("recipe_dir"))

    def build(self, seed: int) -> "DatasetEnv":
        return DatasetEnv(self, seed)


class DatasetEnv(PoolEnvironment):
    def __init__(self, cfg: DatasetConfig, seed: int):
        self.cfg = cfg
        self.default_rewards = (cfg.default_reward,)
        train_rows, eval_rows = self._load()
        train = self._group([self._prompt(*row) for row in train_rows])
        if eval_rows is None:
            self._train, self._eval = {}, {}
            for dist, prompts in train.items():
                self._train[dist], self._eval[dist] = _hold_out(prompts, cfg.eval_size, cfg.eval_fraction,
                                                               random.Random(f"dataset-{seed}-{dist}"))
        else:
            self._train = train
            evals = self._group([self._prompt(*row) for row in eval_rows])
            self._eval = {d: _sample(p, cfg.eval_size, random.Random(f"dataset-eval-{seed}-{d}"))
                          for d, p in evals.items()}
        if cfg.train_size is not None:
            self._train = {d: _sample(p, cfg.train_size, random.Random(f"dataset-train-{seed}-{d}"))
                           for d, p in self._train.items()}
        if not self._train:
            raise UserError(f"dataset env: no rows in {cfg.path} (split {cfg.split!r})")
        self._train = dict(sorted(self._train.items()))  # distributions in name order

    # ------------------------------------------------------------ reading

    def _load(self) -> tuple[list[Row], list[Row] | None]:
        """The train rows and the eval rows (None: hold eval rows out of the train rows)."""
        cfg = self.cfg
        data = load_local(cfg.path)
        if isinstance(data, dict):  # a DatasetDict
            train_split = _pick_split(data, cfg.path, [cfg.split], "env.split")
            train = self._rows(data[train_split], train_split, cfg.path)
            if cfg.eval_path is None:
                wanted = [cfg.eval_split] if cfg.eval_split else [s for s in EVAL_SPLITS if s in data]
                if not wanted:
                    return train, None
                eval_split = _pick_split(data, cfg.path, wanted, "env.eval_split")
                return train, self._rows(data[eval_split], eval_split, cfg.path)
        else:
            if cfg.eval_split is not None and cfg.eval_path is None:
                raise UserError(f"dataset env: env.eval_split {cfg.eval_split!r} needs a DatasetDict, but {cfg.path} "
                                f"holds one dataset; remove env.eval_split (eval rows are then held out of it)")
            train = self._rows(data, "train", cfg.path)
        if cfg.eval_path is None:
            return train, None
        held = load_local(cfg.eval_path)
        if isinstance(held, dict):
            wanted = [cfg.eval_split] if cfg.eval_split else [s for s in EVAL_SPLITS if s in held] or list(EVAL_SPLITS)
            eval_split = _pick_split(held, cfg.eval_path, wanted, "env.eval_split")
            return train, self._rows(held[eval_split], f"eval/{eval_split}", cfg.eval_path)  # uids apart from path's
        return train, self._rows(held, "eval", cfg.eval_path)

    def _rows(self, dataset: Any, split: str, source: str) -> list[Row]:
        cfg = self.cfg
        columns = list(dataset.column_names)
        for field in ("question_column", "answer_column", "distribution_column", "hint_column"):
            column = getattr(cfg, field)
            if column is not None and column not in columns:
                raise UserError(f"dataset env: {source}{_split_note(split)} has no column {column!r} "
                                f"(env.{field}); its columns: {', '.join(columns)}")
        return [(source, split, i, row) for i, row in enumerate(dataset.to_list())]

    def _prompt(self, source: str, split: str, index: int, row: dict[str, Any]) -> Prompt:
        cfg = self.cfg
        where = f"{source}{_split_note(split)} row {index}"
        question, answer = row[cfg.question_column], row[cfg.answer_column]
        if not isinstance(question, str) or not question.strip():
            raise UserError(f"dataset env: {where}: column {cfg.question_column!r} (the question) must be "
                            f"non-empty text, got {question!r}")
        if answer is None or str(answer).strip() == "":
            raise UserError(f"dataset env: {where}: column {cfg.answer_column!r} (the answer) is empty")
        answer = str(answer).strip()
        hint = row.get(cfg.hint_column) if cfg.hint_column else None
        columns = {k: v for k, v in row.items() if k != cfg.question_column}
        columns["answer"] = answer
        return Prompt(uid=f"{split}/{index}", distribution=self._distribution(row), question=question,
                      answer=answer, hint=str(hint) if hint not in (None, "") else None, columns=columns)

    def _distribution(self, row: dict[str, Any]) -> str:
        if self.cfg.distribution_column is None:
            return "all"
        value = row.get(self.cfg.distribution_column)
        return "unknown" if value is None or str(value) == "" else str(value)

    @staticmethod
    def _group(prompts: list[Prompt]) -> dict[str, list[Prompt]]:
        out: dict[str, list[Prompt]] = {}
        for p in prompts:
            out.setdefault(p.distribution, []).append(p)
        return out

    # ------------------------------------------------------------ Environment



def _split_note(split: str) -> str:
    return f" (split {split!r})" if split not in ("train", "eval") else ""


def _hold_out(prompts: list[Prompt], size: int, fraction: float,
              rng: random.Random) -> tuple[list[Prompt], list[Prompt]]:
    """(train, eval): `size` prompts held out, at most `fraction` of them, leaving at least one."""
    if len(prompts) < 2:
        return prompts, []
    k = min(size, max(1, int(len(prompts) * fraction)))
    order = list(range(len(prompts)))
    rng.shuffle(order)
    held = set(order[:k])
    return [p for i, p in enumerate(prompts) if i not in held], [p for i, p in enumerate(prompts) if i in held]


def _sample(prompts: list[Prompt], size: int, rng: random.Random) -> list[Prompt]:
    """At most `size` of `prompts`, chosen by `rng`, in their original order."""
    if len(prompts) <= size:
        return prompts
    keep = set(rng.sample(range(len(prompts)), size))
    return [p for i, p in enumerate(prompts) if i in keep]


def _pick_split(data: dict, source: str, wanted: list[str], field: str) -> str:
    for split in wanted:
        if split in data:
            return split
    raise UserError(f"dataset env: {source} has no split {' or '.join(repr(s) for s in wanted)} ({field}); "
                    f"its splits: {', '.join(data)}")


# ---------------------------------------------------------------- loading, without the hub


def load_local(path_text: str) -> Any:
    """A `datasets.Dataset`, or a dict of split -> Dataset for a DatasetDict, from a local path.
    Every way it can fail is one UserError naming the path."""
    path = Path(path_text).expanduser()
    if not path.exists():
        if path.suffix in FILE_FORMATS or path.is_absolute() or path_text.startswith("."):
            raise UserError(f"dataset env: data not found: {path.resolve()}")
        raise UserError(f"dataset env: {path_text!r} is not a local path (nothing at {path.resolve()}); rlcurr does "
                        f"not download datasets. Run datasets.load_dataset({path_text!r}).save_to_disk(DIR) yourself "
                        f"and pass DIR as env.path")
    with _offline() as datasets:
        if path.is_dir():
            if not ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
                raise UserError(f"dataset env: {path} is a directory but not one written by datasets' save_to_disk "
                                f"(no dataset_dict.json or state.json); pass a save_to_disk directory or a "
                                f"{'/'.join(FILE_FORMATS)} file")
            try:
                data = datasets.load_from_disk(str(path), keep_in_memory=True)
            except Exception as e:
                raise UserError(f"dataset env: cannot load {path} with datasets.load_from_disk: {_cause(e)}") from None
            return dict(data) if isinstance(data, datasets.DatasetDict) else data
        builder = FILE_FORMATS.get(path.suffix.lower())
        if builder is None:
            raise UserError(f"dataset env: {path}: unsupported file type {path.suffix!r}; use a datasets "
                            f"save_to_disk directory or a {'/'.join(FILE_FORMATS)} file")
        with tempfile.TemporaryDirectory(prefix="rlcurr-datasets-") as cache:
            try:
                return datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=cache,
                                             keep_in_memory=True)
            except Exception as e:
                raise UserError(f"dataset env: cannot read {path} as {builder}: {_cause(e)}") from None


@contextlib.contextmanager
def _offline() -> Iterator[Any]:
    """`datasets`, imported on first use (it is slow to import), with hub access switched off."""
    try:
        import datasets
    except ImportError:
        raise UserError("the dataset environment needs the `datasets` package: pip install datasets") from None
    saved = {k: getattr(datasets.config, k, None) for k in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")}
    for key in saved:
        setattr(datasets.config, key, True)
    progress = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield datasets
    finally:
        for key, value in saved.items():
            setattr(datasets.config, key, value)
        if progress:
            datasets.enable_progress_bars()


def _cause(e: BaseException) -> str:
    """The innermost cause's type and first line (datasets wraps parse errors in its own)."""
    while e.__cause__ is not None or e.__context__ is not None:
        e = e.__cause__ or e.__context__
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")
