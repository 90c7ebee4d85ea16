"""`rlcurr doctor`: check, on the machine it runs on, every path a GPU run depends on.

Each check builds what it needs from a tiny random model (nothing is downloaded), runs the real
code path, and reports pass / fail / skip with the figure it measured:

  environment        torch, CUDA devices, vLLM and Ray importable
  shared memory      /dev/shm's free space against a weight file (a recipe's model with --recipe)
  vllm generation    a vLLM engine generates; its sampling logprobs against the learner's
  fsdp mixed step    a bf16 FSDP2 learner step (fp32 masters) against the single learner's step
  weight sync        learner -> engine weight transfer, then engine logprobs against the learner's
  colocated memory   vLLM's sleep frees its GPU memory and wake_up restores it (GPU only)
  plan vs peak       `rlcurr plan`'s learner estimate against the measured peak (GPU only)

On a CPU machine the GPU paths run their closest CPU proof (gloo instead of NCCL, bf16 compute
on the CPU, vLLM's CPU engine) and the checks that need a GPU say they were skipped. The exit
code is 1 when a check failed. Each check runs in a fresh process (`python -m rlcurr.doctor
CHECK`), so a crash (a CUDA error, an NCCL hang until --timeout) fails that check only.

Over 400 lines on purpose: every check is a short function, kept together in the order
`rlcurr doctor` runs them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rlcurr.errors import UserError


@dataclass
class Result:
    check: str
    status: str  # "pass" | "fail" | "skip"
    figure: str  # what was measured, one line
    seconds: float = 0.0


class Skip(Exception):
    """This check does not apply on this machine; the message says why."""


# ---------------------------------------------------------------- helpers run inside a check's process


def _gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _tiny_model(root: Path, dtype: str = "float32") -> str:
    """A random-init tiny Qwen2 with the character tokenizer (rlcurr.learner.models)."""
    from rlcurr.config import TinyModelConfig
    from rlcurr.learner.models import build_tiny_model

    return str(build_tiny_model(TinyModelConfig(hidden_size=64, num_layers=2, intermediate_size=128,
                                                max_position_embeddings=512), root / "tiny", seed=0))


def _samples(n_prompts: int = 4, n: int = 4):
    """Groups of answers with advantages of both signs (token ids of printable characters)."""
    import random

    from rlcurr.types import TrainSample

    rng = random.Random(0)
    out = []
    for p in range(n_prompts):
        prompt = [rng.randrange(10, 90) for _ in range(6 + p)]
        for a in range(n):
            out.append(TrainSample(prompt_ids=prompt, response_ids=[rng.randrange(10, 90) for _ in range(3 + a)],
                                   advantage=(-1.0, 1.0)[(a + p) % 2], rollout_logprobs=[], reward=float(a % 2)))
    return out


def check_environment(_root: Path) -> str:
    import torch

    parts = [f"torch {torch.__version__}"]
    gpus = _gpus()
    parts.append(f"{gpus} CUDA GPU(s)" + (f" ({torch.cuda.get_device_name(0)})" if gpus else ""))
    for module in ("vllm", "ray", "transformers"):
        try:
            parts.append(f"{module} {__import__(module).__version__}")
        except ImportError as e:
            raise RuntimeError(f"{module} cannot be imported: {e}") from None
    if gpus:
        parts.append(f"NCCL {'.'.join(map(str, torch.cuda.nccl.version()))}")
    return ", ".join(parts)


def check_shared_memory(_root: Path, recipe: str | None = None) -> str:
    """Free space in /dev/shm against the weight file a sync writes (model.dtype bytes/param)."""
    from rlcurr.rollout.shared_weights import SHM_DIR

    if not SHM_DIR.is_dir():
        raise Skip(f"{SHM_DIR} does not exist: weights go through Ray's object store")
    free = shutil.disk_usage(SHM_DIR).free
    figure = f"{SHM_DIR}: {free / 2**30:.2f} GiB free"
    if recipe is None:
        if free < 2**30:
            return figure + " (under 1 GiB: Docker's default 64 MB? runs fall back to the object store; " \
                            "raise it with --shm-size)"
        return figure
    from rlcurr.config import load_config
    from rlcurr.plan import DTYPE_BYTES, count_params, model_shape

    cfg = load_config(recipe)
    payload = count_params(model_shape(cfg.model)) * DTYPE_BYTES[cfg.model.dtype]
    figure += f", one weight file of {cfg.name}: {payload / 2**30:.2f} GiB"
    if free < payload:
        return figure + " -> syncs will use the object store (slower), not shared memory"
    return figure


def check_vllm_generation(root: Path) -> str:
    """vLLM generates 4 prompts x 4 answers; the learner rescores them (same weights, fp32)."""
    from rlcurr.config import AlgoConfig, LearnerConfig
    from rlcurr.learner.learner import Learner, logprob_parity
    from rlcurr.rollout.vllm_engine import VLLMEngine
    from rlcurr.types import GenRequest, TrainSample

    model = _tiny_model(root)
    engine = VLLMEngine(model, dtype="float32", seed=0, gpu_memory_utilization=0.1 if not _gpus() else 0.2)
    t0 = time.perf_counter()
    outs = engine.generate([GenRequest(list(range(10 + p, 16 + p)), n=4, max_tokens=16, temperature=1.0)
                            for p in range(4)])
    seconds = time.perf_counter() - t0
    samples = [TrainSample(prompt_ids=list(range(10 + p, 16 + p)), response_ids=c.token_ids, advantage=0.0,
                           rollout_logprobs=c.logprobs) for p, group in enumerate(outs) for c in group if c.token_ids]
    learner = Learner(model, LearnerConfig(), AlgoConfig(), 1)
    parity = logprob_parity(samples, learner.logprobs(samples))
    worst = parity["rollout/logprob_abs_diff_max"]
    tokens = sum(len(s.response_ids) for s in samples)
    engine.llm.llm_engine.engine_core.shutdown()
    figure = f"{len(samples)} answers, {tokens} tokens in {seconds:.2f} s; max |engine - learner logprob| {worst:.1e}"
    if worst > 1e-3:
        raise RuntimeError(figure + " (> 1e-3)")
    return figure


def _fsdp_rank(rank: int, world: int, port: int, model: str, results) -> None:
    import dataclasses

    import torch
    import torch.distributed as dist

    from rlcurr.config import AlgoConfig, LearnerConfig
    from rlcurr.learner import fsdp
    from rlcurr.learner.learner import Learner

    if torch.cuda.is_available():
        torch.cuda.set_device(rank)
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        algo = AlgoConfig(loss_agg="token-mean", micro_batch_size=4, epochs=1, mini_batches=1)
        learner = Learner(model, LearnerConfig(lr=1e-6, weight_decay=0.0, num_workers=world, strategy="fsdp"), algo,
                          10, dtype="bfloat16")
        learner.join_group()
        before = fsdp.full_state_dict(learner.model)  # the fp32 masters, gathered (collective)
        metrics = learner.train_step([dataclasses.replace(s) for s in _samples()], 0)
        after = fsdp.full_state_dict(learner.model)
        if rank == 0:
            moved = sum(int((after[k].float() != before[k].float()).sum()) for k in after)
            results["fsdp"] = {"grad_norm": metrics["grad_norm"], "backend": backend, "world": world,
                               "masters": str(next(learner.model.parameters()).dtype),
                               "moved": moved / sum(v.numel() for v in after.values())}
    finally:
        dist.destroy_process_group()


def check_fsdp_mixed_step(root: Path) -> str:
    """Two FSDP2 ranks (one per GPU under NCCL; gloo on CPU; one rank on a single GPU) take a bf16
    step with fp32 masters; its loss must equal the single learner's within bf16 noise."""
    import torch.multiprocessing as mp

    from rlcurr.config import AlgoConfig, LearnerConfig
    from rlcurr.learner.learner import Learner

    model = _tiny_model(root)
    gpus = _gpus()
    world = 2 if gpus != 1 else 1
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with mp.Manager() as manager:
        results = manager.dict()
        mp.start_processes(_fsdp_rank, args=(world, port, model, results), nprocs=world, start_method="spawn")
        results = dict(results)
    single = Learner(model, LearnerConfig(lr=1e-6, weight_decay=0.0), AlgoConfig(loss_agg="token-mean",
                     micro_batch_size=4, epochs=1, mini_batches=1), 10, dtype="bfloat16")
    norm = single.train_step(_samples(), 0)["grad_norm"]
    got = results["fsdp"]
    figure = (f"{got['world']} rank(s) over {got['backend']}, masters {got['masters']}: grad norm {got['grad_norm']:.4f} "
              f"vs single learner {norm:.4f}; {got['moved']:.0%} of the fp32 master weights moved at lr 1e-6")
    if abs(got["grad_norm"] - norm) > 2e-2 * norm or got["masters"] != "torch.float32" or got["moved"] < 0.05:
        raise RuntimeError(figure)
    return figure


def check_weight_sync(root: Path) -> str:
    """Five trainer steps with one vLLM engine, each followed by a sync through vLLM's weight-
    transfer protocol: NCCL with two GPUs (engine and learner on their own), IPC with one
    (colocated), and on CPU the same control plane over a gloo group (the CPU proof). After each
    sync the engine samples the next step's answers: the learner must score them as the engine
    did (fp32 weights on both sides, so within 1e-4)."""
    import ray

    from rlcurr.config import build_config
    from rlcurr.rollout import weight_transfer
    from rlcurr.trainer import Trainer

    gpus = _gpus()
    expected = "nccl" if gpus >= 2 else "ipc" if gpus == 1 else "gloo"
    resources = ({"gpus_per_rollout_worker": 1, "gpus_per_learner_worker": 1} if gpus >= 2
                 else {"colocate": True} if gpus == 1 else {})
    cfg = build_config({
        "name": "doctor-sync", "seed": 0,
        "model": {"tiny": {"hidden_size": 64, "num_layers": 2, "intermediate_size": 128}, "warmup": {"steps": 0}},
        "env": {"name": "arith", "distributions": ["add1"], "eval_size": 4},
        "rollout": {"engine": "vllm", "n": 4, "max_tokens": 6, "gpu_memory_utilization": 0.05 if not gpus else 0.2},
        "learner": {"lr": 1e-3, "schedule": {"name": "constant", "warmup_steps": 0}},
        "algo": {"entropy_coef": 0.01},  # a gradient even when every answer of a group scores alike
        "resources": resources,
        "trainer": {"steps": 6, "prompts_per_step": 4, "save_every": 0, "output_dir": str(root / "run")},
        "eval": {"every": 0}, "logging": {"progress": False, "tensorboard": False}})
    if not gpus:
        os.environ[weight_transfer.OVERRIDE_ENV] = "gloo"
    logs: list[str] = []
    ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    trainer = Trainer(cfg, log=logs.append)
    try:
        trainer.start()
        metrics = [trainer.step(t) for t in range(6)]
    finally:
        trainer.logger.close()
        trainer.rollout_pool.shutdown()
        trainer.learner.shutdown()
        ray.shutdown()
    paths = [next((k.removeprefix("sync/path_") for k, v in m.items() if k.startswith("sync/path_") and v == 1.0),
                  "none") for m in metrics]
    parity = [m.get("rollout/logprob_abs_diff_max", float("nan")) for m in metrics[1:]]  # answers after syncs 1-5
    seconds = sum(m.get("sync/seconds", 0.0) for m in metrics) / len(metrics)
    figure = (f"paths {sorted(set(paths))}, {seconds * 1e3:.0f} ms per sync; max |engine - learner logprob| "
              f"after syncs 1-5: {max(parity):.1e}")
    if set(paths) != {expected}:
        warnings = [line for line in logs if "warning" in line.lower()]
        raise RuntimeError(f"expected the {expected} path every step, got {paths}; {warnings[:1]}")
    if not max(parity) <= 1e-4:
        raise RuntimeError(figure + " (> 1e-4)")
    return figure


def check_colocated_memory(root: Path) -> str:
    """vLLM with sleep mode: GPU memory used awake, after sleep(level=1), after wake_up."""
    if not _gpus():
        raise Skip("needs a GPU (vLLM's CPU platform has no sleep mode)")
    import torch

    from rlcurr.rollout.vllm_engine import VLLMEngine

    def used() -> float:
        free, total = torch.cuda.mem_get_info()
        return (total - free) / 2**30

    base = used()
    engine = VLLMEngine(_tiny_model(root), dtype="bfloat16", seed=0, gpu_memory_utilization=0.3, sleep_mode=True)
    awake = used()
    engine.sleep()
    asleep = used()
    engine.wake_up()
    woken = used()
    figure = f"GPU GiB used: before {base:.1f}, awake {awake:.1f}, asleep {asleep:.1f}, woken {woken:.1f}"
    if asleep - base > 0.5 * (awake - base):
        raise RuntimeError(figure + " (sleep freed less than half)")
    return figure


def check_plan_vs_peak(root: Path) -> str:
    """`rlcurr plan`'s learner estimate against torch's measured peak for one bf16 step."""
    if not _gpus():
        raise Skip("needs a GPU (peak memory is torch.cuda.max_memory_allocated)")
    import torch

    from rlcurr.config import build_config
    from rlcurr.learner.learner import Learner
    from rlcurr.plan import GIB, estimate_memory

    model = _tiny_model(root)
    cfg = build_config({"name": "doctor", "model": {"path": model, "dtype": "bfloat16"}, "env": {"name": "arith"},
                        "rollout": {"max_tokens": 8, "n": 4}, "algo": {"micro_batch_size": 4},
                        "trainer": {"prompts_per_step": 4}})
    estimate = estimate_memory(cfg, prompt_tokens=9, gpu_memory_gib=80).gpus[1]
    torch.cuda.reset_peak_memory_stats()
    learner = Learner(model, cfg.learner, cfg.algo, 10, dtype="bfloat16")
    learner.train_step(_samples(), 0)
    peak = torch.cuda.max_memory_allocated()
    context = next(n for name, n, _ in estimate.lines if name == "CUDA context")
    planned = estimate.total_bytes - context  # the allocator's peak does not see the context
    figure = f"measured peak {peak / 2**20:.1f} MiB, plan {planned / 2**20:.1f} MiB (+{context / GIB:.1f} GiB context)"
    if peak > planned:
        raise RuntimeError(figure + " (the plan underestimates)")
    return figure


CHECKS = {
    "environment": check_environment,
    "shared memory": check_shared_memory,
    "vllm generation": check_vllm_generation,
    "fsdp mixed step": check_fsdp_mixed_step,
    "weight sync": check_weight_sync,
    "colocated memory": check_colocated_memory,
    "plan vs peak": check_plan_vs_peak,
}


def run_one(name: str, recipe: str | None = None) -> Result:
    """Run one check in this process."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rlcurr-doctor-") as d:
        try:
            fn = CHECKS[name]
            figure = fn(Path(d), recipe) if name == "shared memory" else fn(Path(d))
            status = "pass"
        except Skip as e:
            status, figure = "skip", str(e)
        except Exception as e:  # a failed check is reported, not raised
            status, figure = "fail", f"{type(e).__name__}: {e}".splitlines()[0][:400]
    return Result(name, status, figure, time.perf_counter() - t0)


def run_isolated(name: str, recipe: str | None, timeout: float) -> Result:
    """One check in a fresh Python process: its crash or hang fails it alone."""
    cmd = [sys.executable, "-m", "rlcurr.doctor", name] + (["--recipe", recipe] if recipe else [])
    t0 = time.perf_counter()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Result(name, "fail", f"no answer within {timeout:.0f} s (a hang: NCCL, vLLM start-up?)", timeout)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if not lines:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1][:400]
        return Result(name, "fail", f"exit {out.returncode}: {tail}", time.perf_counter() - t0)
    return Result(**json.loads(lines[-1]))


def cmd_doctor(args) -> int:
    from rich.console import Console
    from rich.table import Table

    if args.recipe and not Path(args.recipe).is_file():
        raise UserError(f"--recipe: {args.recipe} does not exist")
    names = list(CHECKS) if not args.only else args.only
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise UserError(f"--only: unknown check {unknown[0]!r}; checks: {', '.join(CHECKS)}")
    console = Console(stderr=args.json)  # --json: stdout holds the JSON alone
    results = []
    for name in names:
        console.print(f"[dim]checking {name} ...[/dim]")
        results.append(run_isolated(name, args.recipe, args.timeout))
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
    else:
        table = Table(title="rlcurr doctor")
        for col in ("check", "result", "figure", "s"):
            table.add_column(col, overflow="fold")
        colour = {"pass": "green", "fail": "red", "skip": "yellow"}
        for r in results:
            table.add_row(r.check, f"[{colour[r.status]}]{r.status}[/]", r.figure, f"{r.seconds:.0f}")
        console.print(table)
        skipped = [r.check for r in results if r.status == "skip"]
        if skipped:
            console.print(f"skipped on this machine: {', '.join(skipped)}")
    return 1 if any(r.status == "fail" for r in results) else 0


def add_doctor_parser(sub) -> None:
    p = sub.add_parser("doctor", help="check the GPU paths (or their CPU proofs) on this machine")
    p.add_argument("--recipe", help="also check /dev/shm against this recipe's model size")
    p.add_argument("--only", nargs="+", metavar="CHECK", help=f"run only these checks ({', '.join(CHECKS)})")
    p.add_argument("--timeout", type=float, default=600, help="seconds per check before it counts as a hang")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(fn=cmd_doctor)


if __name__ == "__main__":  # one check in this process: python -m rlcurr.doctor CHECK [--recipe R]
    ap = argparse.ArgumentParser()
    ap.add_argument("check", choices=list(CHECKS))
    ap.add_argument("--recipe")
    a = ap.parse_args()
    print(json.dumps(asdict(run_one(a.check, a.recipe))), flush=True)
    os._exit(0)  # leftover engine processes and threads must not keep the check's process alive
