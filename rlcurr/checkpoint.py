"""Crash-safe checkpoints and resume helpers.

Layout under a run directory::

    checkpoints/
      .tmp-step_N/        being written (ignored by readers, removed by the next save)
      step_N/             complete: everything write_fn wrote, then a COMPLETE marker written last
        COMPLETE          JSON {"step": N}
        trainer_state.json

A checkpoint is published with one ``os.replace`` of the temporary folder onto ``step_N`` after
its ``COMPLETE`` marker is written, so a crash leaves either the previous checkpoints alone or a
``.tmp-`` folder nobody reads. ``find_latest_checkpoint`` still checks the marker and the
trainer state, so a folder damaged later (or copied half-way) is skipped with a warning.

RNG states (``rng_state``/``set_rng_state``) are plain JSON: the python ``random`` state and the
global numpy state as lists, the torch CPU generator state (a ByteTensor) as a list of ints, and
the CUDA generator states (one per visible device) likewise when CUDA is available. Store the
dict in ``trainer_state.json`` with ``save_state``.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable

from rlcurr.errors import UserError

CHECKPOINTS = "checkpoints"
COMPLETE = "COMPLETE"
STATE_FILE = "trainer_state.json"
TMP_PREFIX = ".tmp-"
_STEP_RE = re.compile(r"^step_(\d+)$")


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"step_{step}"


def _step_of(path: Path) -> int | None:
    m = _STEP_RE.match(path.name)
    return int(m.group(1)) if m else None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


# ---------------------------------------------------------------- save / find

def save_checkpoint(run_dir: str | Path, step: int, write_fn: Callable[[Path], None], keep: int) -> Path:
    """Write checkpoint `step` atomically and keep only the newest `keep` complete checkpoints.

    `write_fn(folder)` writes the checkpoint's files into `folder` (a fresh temporary folder).
    Then a ``COMPLETE`` marker is written, the folder is renamed onto ``checkpoints/step_<step>``
    (replacing an older checkpoint of the same step) and older checkpoints beyond `keep` are
    deleted. Checkpoints of *later* steps than `step` belong to a timeline abandoned by a resume
    and are deleted too. Returns the published folder. If `write_fn` raises, the temporary
    folder is removed and the existing checkpoints are left untouched.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f"{TMP_PREFIX}step_{step}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        write_fn(tmp)
        _atomic_write_text(tmp / COMPLETE, json.dumps({"step": step}) + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    final = root / f"step_{step}"
    if final.exists():  # os.replace cannot replace a non-empty folder: move the old one aside first
        old = root / f"{TMP_PREFIX}old-step_{step}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync_dir(root)
    _prune(root, step, keep)
    return final


def _prune(root: Path, current: int, keep: int) -> None:
    ckpts = sorted(((s, p) for p in root.iterdir() if p.is_dir() and (s := _step_of(p)) is not None),
                   key=lambda x: x[0])
    complete = [(s, p) for s, p in ckpts if s <= current and (p / COMPLETE).is_file()]
    keep_steps = {s for s, _ in complete[-keep:]}
    for s, p in ckpts:
        if s not in keep_steps:
            shutil.rmtree(p, ignore_errors=True)
    for p in root.iterdir():  # leftovers of crashed saves
        if p.name.startswith(TMP_PREFIX) and p.name != f"{TMP_PREFIX}step_{current}":
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """All ``step_N`` folders (complete or not), oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [(s, p) for p in root.iterdir() if p.is_dir() and (s := _step_of(p)) is not None]
    return [p for _, p in sorted(found, key=lambda x: x[0])]


def check_checkpoint(path: Path, state_file: str | None = STATE_FILE) -> str | None:
    """None if `path` is a usable checkpoint, else why not (one line)."""
    if not (path / COMPLETE).is_file():
        return f"no {COMPLETE} marker (the save did not finish)"
    if state_file is not None:
        try:
            state = load_state(path / state_file)
        except UserError as e:
            return str(e)
        if not isinstance(state, dict):
            return f"{state_file} is not a JSON object"
    return None


def find_latest_checkpoint(run_dir: str | Path, state_file: str | None = STATE_FILE,
                           skipped: list[str] | None = None) -> Path | None:
    """The newest complete checkpoint folder, or None.

    A folder without the ``COMPLETE`` marker, or whose `state_file` (default trainer_state.json;
    None: do not check) is missing or not valid JSON, is skipped with a ``warnings.warn`` naming
    it and the reason; the message is also appended to `skipped` when a list is given.
    """
    for path in reversed(list_checkpoints(run_dir)):
        why = check_checkpoint(path, state_file)
        if why is None:
            return path
        msg = f"skipping checkpoint {path}: {why}"
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
        if skipped is not None:
            skipped.append(msg)
    return None


# ---------------------------------------------------------------- JSON state

def save_state(path: str | Path, obj: Any) -> None:
    """Write `obj` as JSON to `path` atomically (temporary file + fsync + os.replace)."""
    _atomic_write_text(Path(path), json.dumps(obj, indent=1) + "\n")


def load_state(path: str | Path) -> Any:
    """Read JSON written by `save_state`; UserError if missing or unreadable."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"{path} is missing") from None
    except OSError as e:
        raise UserError(f"{path} cannot be read: {e}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON: {e}") from None


# ---------------------------------------------------------------- JSONL truncation

def iter_jsonl(path: str | Path):
    """(line, parsed object or None if unparseable) for each non-empty line; tolerant of a last
    line cut short by a crash."""
    with open(path, "rb") as f:
        for raw in f:
            line = raw.decode("utf-8", errors="replace").strip()
            if not line:
                continue
            try:
                yield line, json.loads(line)
            except json.JSONDecodeError:
                yield line, None


def truncate_jsonl(path: str | Path, last_step: int) -> int:
    """Rewrite the JSONL file `path` atomically, keeping lines whose "step" is <= `last_step`
    (so the step -1 evaluation line stays) and lines without an integer "step"; unparseable
    lines (e.g. a line cut short by a crash) are dropped. Returns how many lines were dropped;
    a missing file is left missing (returns 0)."""
    path = Path(path)
    if not path.exists():
        return 0
    kept, dropped = [], 0
    for line, obj in iter_jsonl(path):
        step = obj.get("step") if isinstance(obj, dict) else None
        if obj is None or (isinstance(step, int) and not isinstance(step, bool) and step > last_step and step != -1):
            dropped += 1
            continue
        kept.append(line)
    _atomic_write_text(path, "".join(l + "\n" for l in kept))
    return dropped


# ---------------------------------------------------------------- RNG

def rng_state() -> dict[str, Any]:
    """JSON-able snapshot of python `random`, numpy's global RNG and torch's CPU (and CUDA) RNGs."""
    import numpy as np

    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }
    try:
        import torch
    except ImportError:
        return state
    state["torch"] = torch.get_rng_state().tolist()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured (keys that are absent are left alone)."""
    import numpy as np

    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "torch" in state or "cuda" in state:
        import torch

        if "torch" in state:
            torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
        if "cuda" in state and torch.cuda.is_available():
            cuda = [torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]]
            if len(cuda) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(cuda)
            else:
                warnings.warn(f"checkpoint has CUDA RNG states for {len(cuda)} device(s), this machine has "
                              f"{torch.cuda.device_count()}; CUDA RNGs not restored", RuntimeWarning, stacklevel=2)
