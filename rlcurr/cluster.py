"""The Ray cluster a run uses: joining it in bounded time, checking that it has what the recipe
asks for before anything is written, where each role's actors may run, and the names that tie
actors to their run (docs/scaling.md "A Ray cluster").

- Joining. `connect()` starts a private local Ray (never one another process started on this
  machine: `ray.init()` alone would join it), or joins `$RAY_ADDRESS`. Ray itself retries an
  address that does not answer for minutes (about 36 s per attempt here, 20 attempts), so the
  address is first probed with a plain TCP connection (5 s), and so is the address Ray will
  really use: Ray rewrites a loopback address (127.0.0.1, localhost) to this machine's interface
  address, and a head that listens on loopback only is then unreachable. One attempt is left to
  Ray itself (`RAY_gcs_server_port_wait_time_s=1`, unless the user set it).
- Checks (`check_cluster`), before the run directory exists: a recipe that sets a GPU field on a
  cluster without GPUs is an error, unless `resources.cpu_fallback` (then one warning line); a
  node resource the recipe names must exist on some node.
- Roles on nodes: `resources.rollout_node_resource` / `learner_node_resource` name a custom
  resource the wanted nodes were started with (`ray start --resources='{"rollout_node": 1}'`).
  Each actor asks for `NODE_SHARE` of it, so one unit holds a thousand actors: the resource is a
  label, not a count.
- Names. Every actor of a run is named `<run key>/<role>-<index>.<generation>` in the `rlcurr`
  namespace. Ray kills a driver's actors when the driver dies, but not at once; a restarted
  driver (`--resume`) first kills whatever still carries its run's key (`clean_run_actors`), so
  two generations of a run never hold resources together.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import time
from pathlib import Path
from typing import Callable

import ray

from rlcurr.actors import first_line
from rlcurr.errors import UserError

NAMESPACE = "rlcurr"
NODE_SHARE = 0.001  # of a node-label resource, per actor
PROBE_TIMEOUT_S = 5.0
GPU_FIELDS = ("gpus_per_rollout_worker", "gpus_per_learner_worker", "colocate")
BUILTIN_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")


def ray_address() -> str | None:
    """$RAY_ADDRESS, or None for a private local Ray."""
    return os.environ.get("RAY_ADDRESS", "").strip() or None


def cpu_thread_cap() -> int | None:
    """RLCURR_CPU_THREADS: this run's share of a machine others use (None: unset)."""
    text = os.environ.get("RLCURR_CPU_THREADS", "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise UserError(f"RLCURR_CPU_THREADS must be a whole number of threads >= 1 (got {text!r})")
    return int(text)


@contextlib.contextmanager
def ray_of_this_call():
    """On the way out (error or not), shut down a Ray that the block started (`connect`), never one
    its caller had running: a command run in-process (tests, benches) leaves no Ray behind."""
    had = ray.is_initialized()
    try:
        yield
    finally:
        if not had and ray.is_initialized():
            ray.shutdown()


def connect() -> None:
    """Join $RAY_ADDRESS in bounded time (one line naming the address when it fails), or start a
    local Ray. No-op when Ray is already initialised (tests, `rlcurr plan`)."""
    if ray.is_initialized():
        return
    address = ray_address()
    if address in (None, "local"):  # "local": never a cluster someone else started on this machine
        ray.init(address="local", namespace=NAMESPACE, include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR")
        return
    if address != "auto":
        check_reachable(address)
    with _env("RAY_gcs_server_port_wait_time_s", "1"):
        try:
            ray.init(address=address, namespace=NAMESPACE, include_dashboard=False, log_to_driver=False,
                     logging_level="ERROR")
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise UserError(f"RAY_ADDRESS={address}: could not join the Ray cluster ({first_line(err)})") from None


def check_reachable(address: str) -> None:
    """A UserError naming the address when no Ray head answers at it, or at the address Ray
    rewrites it to."""
    host, port = split_address(address)
    _probe(address, host, port, "")
    from ray._private.services import canonicalize_bootstrap_address

    real_host, real_port = split_address(canonicalize_bootstrap_address(f"{host}:{port}") or f"{host}:{port}")
    if real_host != host:
        _probe(address, real_host, real_port,
               f" (Ray connects to {real_host}:{real_port}, this machine's interface address, instead of "
               f"{host}; start the head without --node-ip-address={host}, or give RAY_ADDRESS={real_host}:{port})")


def split_address(address: str) -> tuple[str, int]:
    text = address.removeprefix("ray://")
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UserError(f"RAY_ADDRESS={address}: expected HOST:PORT (the head's GCS port, 6379 by default)")
    return host, int(port)


def _probe(address: str, host: str, port: int, hint: str) -> None:
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return
    except OSError as err:
        why = err.strerror or type(err).__name__
        raise UserError(f"RAY_ADDRESS={address}: no Ray head answers at {host}:{port} ({why}){hint}") from None


@contextlib.contextmanager
def _env(name: str, value: str):
    """`name=value` in the environment while joining, unless the user set it."""
    if name in os.environ:
        yield
        return
    os.environ[name] = value
    try:
        yield
    finally:
        os.environ.pop(name, None)


# ---------------------------------------------------------------- checks


def gpu_fields_set(cfg) -> list[str]:
    """The `resources` fields that ask for GPUs (compared with their defaults, None / False: a
    resolved config.yaml, as `--resume` reads it, sets every key)."""
    return [f"resources.{f}" for f in GPU_FIELDS if getattr(cfg.resources, f) not in (None, False)]


def node_resources(cfg) -> list[tuple[str, str]]:
    """(field, resource name) for each role the recipe pins to nodes."""
    res = cfg.resources
    return [(f"resources.{field}", name) for field, name in
            (("rollout_node_resource", res.rollout_node_resource), ("learner_node_resource", res.learner_node_resource))
            if name]


def custom_resources(total: dict[str, float]) -> list[str]:
    """The cluster's custom resources (what `ray start --resources` added)."""
    return sorted(k for k in total if k not in BUILTIN_RESOURCES and not k.startswith(("node:", "accelerator_type:")))


def check_cluster(cfg, log: Callable[[str], None]) -> None:
    """One UserError when the cluster lacks what the recipe asks for (call after `connect`)."""
    check_gpus(cfg, log)
    check_node_resources(cfg)


def _where() -> str:
    return f" at RAY_ADDRESS={ray_address()}" if ray_address() else ""


def check_gpus(cfg, log: Callable[[str], None]) -> None:
    """GPU fields on a cluster without GPUs: an error, or with resources.cpu_fallback one warning."""
    total, where = ray.cluster_resources(), _where()
    asked = gpu_fields_set(cfg)
    if asked and total.get("GPU", 0) == 0:
        line = f"{', '.join(asked)} ask(s) for GPUs; the Ray cluster{where} has none"
        if not cfg.resources.cpu_fallback:
            raise UserError(f"{line}. Remove those fields to train on CPU, or set resources.cpu_fallback=true")
        log(f"warning: {line}; training on CPU (resources.cpu_fallback=true)")


def check_node_resources(cfg) -> None:
    """Every node resource the recipe names is on some node of the cluster."""
    total, where = ray.cluster_resources(), _where()
    for field, name in node_resources(cfg):
        if total.get(name, 0) <= 0:
            have = ", ".join(custom_resources(total)) or "none"
            raise UserError(f"{field}={name!r}: no node of the Ray cluster{where} has a resource {name!r} (custom "
                            f"resources there: {have}); start such a node with ray start --resources='{{\"{name}\": 1}}'")


def role_options(resource: str | None) -> dict:
    """Ray actor options that keep an actor on nodes with `resource` ({} for anywhere)."""
    return {"resources": {resource: NODE_SHARE}} if resource else {}


def describe_missing(bundles: list[dict]) -> str:
    """What a placement group asked for next to what the cluster has free, for a timeout message."""
    free = ray.available_resources()
    wanted: dict[str, float] = {}
    for bundle in bundles:
        for key, amount in bundle.items():
            wanted[key] = wanted.get(key, 0) + amount
    return ", ".join(f"{key} {amount:g} (free {free.get(key, 0):g})" for key, amount in sorted(wanted.items()))


# ---------------------------------------------------------------- names


def run_key(cfg_name: str, run_dir: Path) -> str:
    """Ties a run's actors to its run directory: the recipe's name and a hash of the directory."""
    digest = hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:10]
    return f"{cfg_name}@{digest}"


class ActorNames:
    """`<run key>/<role>-<index>.<generation>`: a replacement gets the next generation, so its
    name is free even while Ray is still removing the actor it replaces."""

    def __init__(self, key: str):
        self.key = key
        self.generation: dict[tuple[str, int], int] = {}

    def options(self, role: str, index: int) -> dict:
        gen = self.generation.get((role, index), 0)
        self.generation[(role, index)] = gen + 1
        return {"name": f"{self.key}/{role}-{index}.{gen}", "namespace": NAMESPACE}


def clean_run_actors(key: str, wait_s: float = 30.0) -> list[str]:
    """Kill the actors an earlier driver of this run left (names under `key/`) and wait, up to
    `wait_s`, until Ray has let go of their names (ray.kill returns before the actor is dead, and
    this run's actors take the same names); returns their names."""
    def named() -> set[str]:
        return {e["name"] for e in ray.util.list_named_actors(all_namespaces=True)
                if e.get("namespace") == NAMESPACE and e["name"].startswith(f"{key}/")}

    killed = []
    for name in sorted(named()):
        with contextlib.suppress(ValueError):  # gone meanwhile
            ray.kill(ray.get_actor(name, namespace=NAMESPACE))
            killed.append(name)
    deadline = time.monotonic() + wait_s
    while killed and named() & set(killed) and time.monotonic() < deadline:
        time.sleep(0.1)
    return killed


def node_address(node_id: str) -> str:
    """A node's IP address (and id prefix), for messages."""
    for node in ray.nodes():
        if node.get("NodeID") == node_id:
            return f"{node.get('NodeManagerAddress')} (node {node_id[:8]})"
    return f"node {node_id[:8]}"
