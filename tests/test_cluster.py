"""A Ray cluster of several nodes on this machine: `ray.cluster_utils.Cluster` starts real raylets,
each with its own custom resources (what `ray start --resources` gives a node), on this machine's
own address. Drivers are `rlcurr train` / `rlcurr plan` subprocesses with RAY_ADDRESS, as a user's
would be. Proven here: roles placed by node resource, weights through the object store across
nodes, learner ranks on two nodes (DDP and FSDP2 over gloo), and the faults a cluster has: the
rollout node lost (its raylet SIGKILLed), the learner's node lost, the driver killed; plus the
errors a cluster gives (missing resources, GPUs asked of a cluster without any, an address where
nothing answers, a placement group that cannot be placed).

Nodes: head (the driver's), two with `rollout_node`, two with `learner_node` (one also `ddp_a`, one
`ddp_b`, to put two learner ranks on different nodes). Tests that kill nodes run last in the file.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RLCURR = [sys.executable, "-m", "rlcurr.cli"]
QUICK = [str(REPO / "recipes" / "quickstart.yaml"), "trainer.steps=24", "eval.every=12", "logging.progress=false",
         "logging.tensorboard=false", "rollout.n=8", "trainer.prompts_per_step=8"]
PINNED = ["resources.rollout_node_resource=rollout_node", "resources.learner_node_resource=learner_node"]
# Node death is noticed by the GCS's health checks: every 1 s, dead after 10 misses (Ray's default
# is 3 s x 5). Fewer misses marked live nodes dead on this busy 2-core machine.
FAST_HEALTH = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 1000, "health_check_failure_threshold": 10}


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    # the head serves the dashboard, where `ray job submit` sends jobs
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": True,
                                                       "dashboard_host": "127.0.0.1", "dashboard_port": _free_port(),
                                                       # the job agent: not the default port, which the
                                                       # session's own local Ray (tests/conftest.py) holds
                                                       "dashboard_agent_listen_port": _free_port(),
                                                       "_system_config": FAST_HEALTH})
    nodes = {"rollout": [c.add_node(num_cpus=1, resources={"rollout_node": 1}) for _ in range(2)],
             "learner": [c.add_node(num_cpus=1, resources={"learner_node": 1, tag: 1}) for tag in ("ddp_a", "ddp_b")]}
    c.wait_for_nodes()
    yield c, nodes
    c.shutdown()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(c) -> dict:
    return {**os.environ, "RAY_ADDRESS": c.address, "RLCURR_CPU_THREADS": "1", "PYTHONPATH": str(REPO)}


def _run(args, env, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(RLCURR + list(args), env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def _start(args, env, log: Path) -> subprocess.Popen:
    return subprocess.Popen(RLCURR + list(args), env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=REPO)


def _wait_for_step(run_dir: Path, step: int, proc: subprocess.Popen, timeout=240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before the fault was injected"
        try:
            if _steps(run_dir / "metrics.jsonl") and max(_steps(run_dir / "metrics.jsonl")) >= step:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"step {step} not reached")


def _steps(path: Path) -> list[int]:
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()]


def _assert_steps_complete(run_dir: Path, steps: int) -> None:
    """Every step exactly once, in order, in both logs."""
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    trained = [m["step"] for m in metrics if m["step"] >= 0]  # step -1: the evaluation before RL
    assert trained == list(range(steps)), trained
    assert _steps(run_dir / "curriculum.jsonl") == list(range(steps))


def _node_of(output: str, role: str) -> str:
    """The 8-character node id the placement line names for `role` ("learner" / "rollout workers")."""
    line = next(line for line in output.splitlines() if line.startswith("placement:"))
    part = line.split(f"{role} on ", 1)[1]
    return re.search(r"node ([0-9a-f]{8})", part).group(1)


def _kill_raylet(nodes, node_prefix: str):
    """SIGKILL the raylet of the node whose id starts with `node_prefix`; returns that node."""
    from ray._private import ray_constants

    node = next(n for n in nodes if n.node_id.startswith(node_prefix))
    os.kill(node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid, signal.SIGKILL)
    return node


# ---------------------------------------------------------------- placement, sync, learner across nodes


def test_plan_shows_each_role_on_its_nodes(cluster):
    c, nodes = cluster
    out = _run(["plan", *QUICK[:1], *PINNED], _env(c), timeout=120)
    assert out.returncode == 0, out.stderr
    ids = {role: {n.node_id[:8] for n in ns} for role, ns in nodes.items()}
    rollout = re.search(r"rollout worker 0 .*node ([0-9a-f]{8})\) \[rollout_node\]", out.stdout)
    learner = re.search(r"learner rank 0 .*node ([0-9a-f]{8})\) \[learner_node\]", out.stdout)
    assert rollout and rollout.group(1) in ids["rollout"], out.stdout
    assert learner and learner.group(1) in ids["learner"], out.stdout


def test_learner_ranks_on_two_nodes_take_the_single_learner_step(cluster):
    """tests/test_ddp.py's equality, with rank 0 on one node and rank 1 on another (gloo over the
    node addresses), for DDP and FSDP2."""
    c, _ = cluster
    out = subprocess.run([sys.executable, str(REPO / "tests" / "multinode_learner.py")], env=_env(c),
                         capture_output=True, text=True, timeout=240, cwd=REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for strategy in ("ddp", "fsdp"):
        r = result[strategy]
        assert r["nodes"][0] != r["nodes"][1], r
        assert r["max_weight_diff"] < 1e-5, r
        assert r["changed"], r


def test_rollout_node_lost_mid_run(cluster, tmp_path):
    """Rollout workers on a `rollout_node` node, the learner on a `learner_node` one: weights go
    through the object store. The rollout worker's node is killed at step 3; the pool starts a
    replacement on the other rollout node, the run completes, every step once."""
    c, nodes = cluster
    run_dir, log = tmp_path / "run", tmp_path / "out.txt"
    proc = _start(["train", *QUICK, *PINNED, f"trainer.output_dir={run_dir}"], _env(c), log)
    try:
        _wait_for_step(run_dir, 3, proc)
        text = log.read_text()
        killed = _kill_raylet(nodes["rollout"], _node_of(text, "rollout workers"))
        assert _node_of(text, "learner") in {n.node_id[:8] for n in nodes["learner"]}
        assert proc.wait(timeout=300) == 0, log.read_text()
    finally:
        proc.kill()
    text = log.read_text()
    assert "rollout worker 0 died" in text and "rollout worker 0 replaced" in text, text
    _assert_steps_complete(run_dir, 24)
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(m["sync/path_object_store"] == 1.0 for m in metrics if "sync/path_object_store" in m)
    assert max(m.get("rollout/restarts", 0) for m in metrics) >= 1
    c.remove_node(killed, allow_graceful=False)


def test_learner_node_lost_then_resume(cluster, tmp_path):
    """The learner's node is killed: the run stops with one line naming the rank and node, and
    `--resume` continues from the last complete checkpoint on the nodes left."""
    c, nodes = cluster
    run_dir, log = tmp_path / "run", tmp_path / "out.txt"
    proc = _start(["train", *QUICK, *PINNED, "trainer.save_every=4", f"trainer.output_dir={run_dir}"], _env(c), log)
    try:
        _wait_for_step(run_dir, 6, proc)
        killed = _kill_raylet(nodes["learner"], _node_of(log.read_text(), "learner"))
        code = proc.wait(timeout=300)
    finally:
        proc.kill()
    text = log.read_text()
    assert code == 2, text
    error = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and f"node {killed.node_id[:8]}" in error[0] and "--resume" in error[0], text
    assert "Traceback" not in text
    c.remove_node(killed, allow_graceful=False)
    resumed = _run(["train", "--resume", str(run_dir)], _env(c))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    _assert_steps_complete(run_dir, 24)


def test_driver_killed_then_resume_leaves_no_old_actors(cluster, tmp_path):
    c, _ = cluster
    run_dir, log = tmp_path / "run", tmp_path / "out.txt"
    proc = _start(["train", *QUICK, *PINNED, "trainer.save_every=4", f"trainer.output_dir={run_dir}"], _env(c), log)
    try:
        _wait_for_step(run_dir, 5, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    resumed = _run(["train", "--resume", str(run_dir)], _env(c))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    _assert_steps_complete(run_dir, 24)
    # every actor named for this run is gone once the resumed driver has exited
    probe = subprocess.run([sys.executable, "-c", (
        "import ray, json; ray.init(logging_level='ERROR');"
        "print(json.dumps([a['name'] for a in ray.util.list_named_actors(all_namespaces=True)]))")],
        env=_env(c), capture_output=True, text=True, timeout=60)
    from rlcurr.cluster import run_key

    key = run_key("quickstart", run_dir)
    alive = [n for n in json.loads(probe.stdout.strip().splitlines()[-1]) if n.startswith(key)]
    assert alive == []


def test_ray_job_submit_runs_a_recipe(cluster, tmp_path):
    """`ray job submit --working-dir DIR -- rlcurr train ...`: the job succeeds, `ray job logs`
    shows the run's lines, and the run directory is the absolute trainer.output_dir given."""
    c, _ = cluster
    dashboard = f"http://{c.head_node.address_info['webui_url']}"
    work = tmp_path / "work"
    work.mkdir()
    (work / "recipe.yaml").write_text((REPO / "recipes" / "quickstart.yaml").read_text())
    run_dir = tmp_path / "run"
    ray = [str(Path(sys.executable).parent / "ray"), "job"]
    for _ in range(30):  # the job agents of a node start after the node; the job server says so
        submit = subprocess.run(
            [*ray, "submit", "--address", dashboard, "--working-dir", str(work), "--", sys.executable, "-m",
             "rlcurr.cli", "train", "recipe.yaml", *QUICK[1:], "trainer.steps=4", *PINNED,
             f"trainer.output_dir={run_dir}"],
            env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300, cwd=REPO)
        if "No available agent to submit job" not in submit.stderr:
            break
        time.sleep(2)
    assert submit.returncode == 0 and "succeeded" in submit.stdout + submit.stderr, submit.stdout + submit.stderr
    job_id = re.search(r"(raysubmit_\w+)", submit.stdout + submit.stderr).group(1)
    logs = subprocess.run([*ray, "logs", "--address", dashboard, job_id], capture_output=True, text=True, timeout=60)
    assert "placement: learner on" in logs.stdout and f"run written to {run_dir}" in logs.stdout, logs.stdout
    _assert_steps_complete(run_dir, 4)


# ---------------------------------------------------------------- errors


def test_missing_node_resource_is_one_error_and_no_run_dir(cluster, tmp_path):
    c, _ = cluster
    run_dir = tmp_path / "run"
    out = _run(["train", *QUICK, "resources.rollout_node_resource=gpu_box", f"trainer.output_dir={run_dir}"],
               _env(c), timeout=120)
    assert out.returncode == 2
    assert "resources.rollout_node_resource='gpu_box'" in out.stderr and "learner_node" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    assert not run_dir.exists()


def test_unreachable_address_fails_fast_with_one_line(tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    out = _run(["train", *QUICK, f"trainer.output_dir={tmp_path / 'run'}"],
               {**os.environ, "RAY_ADDRESS": f"127.0.0.1:{port}"}, timeout=120)
    assert out.returncode == 2
    assert time.monotonic() - t0 < 60
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and f"RAY_ADDRESS=127.0.0.1:{port}" in lines[0], out.stderr
    assert not (tmp_path / "run").exists()


def test_gpu_fields_on_a_cluster_without_gpus(ray_session, tmp_path, capsys):
    """A recipe that asks for GPUs is refused on a cluster without any (before the run directory
    exists), unless resources.cpu_fallback, which says so in one line."""
    from rlcurr.cluster import check_cluster
    from rlcurr.config import load_config
    from rlcurr.errors import UserError

    recipe = str(REPO / "recipes" / "quickstart.yaml")
    cfg = load_config(recipe, ["resources.gpus_per_learner_worker=1"])
    with pytest.raises(UserError, match=r"resources.gpus_per_learner_worker ask\(s\) for GPUs.*cpu_fallback"):
        check_cluster(cfg, print)
    lines: list[str] = []
    check_cluster(load_config(recipe, ["resources.gpus_per_learner_worker=1", "resources.cpu_fallback=true"]),
                  lines.append)
    assert len(lines) == 1 and lines[0].startswith("warning:") and "training on CPU" in lines[0]
    check_cluster(load_config(recipe, ["resources.placement_timeout_s=5"]), lines.append)  # not a GPU field
    assert len(lines) == 1


def test_placement_group_that_cannot_be_placed_times_out_naming_resources():
    """A local Ray with one (pretend) GPU; the recipe's bundles need three: PlacementTimeout after
    ready_timeout_s, naming the GPUs asked for and free, and the group is removed."""
    script = (
        "import ray\n"
        "from rlcurr.rollout.pool import placement, PlacementTimeout\n"
        "ray.init(address='local', num_cpus=1, num_gpus=1, include_dashboard=False, logging_level='ERROR')\n"
        "try:\n"
        "    placement(2, 1, gpus_per_rollout_worker=1, gpus_per_learner_worker=1, colocate=False,\n"
        "              tensor_parallel_size=1, ready_timeout_s=2)\n"
        "except PlacementTimeout as e:\n"
        "    from ray.util.placement_group import placement_group_table\n"
        "    states = [g['state'] for g in placement_group_table().values()]\n"
        "    print('TIMEOUT', e, states)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert "TIMEOUT" in out.stdout, out.stdout + out.stderr
    assert "GPU 3 (free 1)" in out.stdout and "resources.placement_timeout_s" in out.stdout
    assert "'PENDING'" not in out.stdout and "'CREATED'" not in out.stdout  # removed


def test_clean_run_actors_kills_only_this_runs_actors(ray_session, tmp_path):
    import ray

    from rlcurr.cluster import ActorNames, NAMESPACE, clean_run_actors, run_key

    @ray.remote(num_cpus=0)
    class Idle:
        def ping(self):
            return 1

    mine, other = ActorNames(run_key("r", tmp_path / "a")), ActorNames(run_key("r", tmp_path / "b"))
    assert mine.options("rollout", 0)["name"].endswith("/rollout-0.0")
    assert mine.options("rollout", 0)["name"].endswith("/rollout-0.1")  # a replacement's name is new
    a, b = Idle.options(**mine.options("learner", 0)).remote(), Idle.options(**other.options("learner", 0)).remote()
    ray.get([a.ping.remote(), b.ping.remote()])
    assert clean_run_actors(mine.key) == [f"{mine.key}/learner-0.0"]
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(a.ping.remote(), timeout=30)
    assert ray.get(b.ping.remote()) == 1
    assert [e["name"] for e in ray.util.list_named_actors(all_namespaces=True)
            if e["namespace"] == NAMESPACE and e["name"].startswith(other.key)] == [f"{other.key}/learner-0.0"]
    ray.kill(b)
