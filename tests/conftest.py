"""Shared fixtures: one Ray instance and one model cache for the whole test session."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def _model_cache(tmp_path_factory):
    # Tiny models and SFT warm-ups are cached by content hash; keep the tests' cache private.
    os.environ.setdefault("RLCURR_CACHE", str(tmp_path_factory.mktemp("rlcurr-cache")))


@pytest.fixture(scope="session")
def ray_session():
    import ray

    # address="local": a new instance, never one another process on this machine started
    # (ray.init() would join the cluster named in /tmp/ray/ray_current_cluster, and refuse num_cpus)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture
def cli(capsys):
    """Run the CLI in this process: (args) -> an object with returncode, stdout, stderr."""
    from types import SimpleNamespace

    from rlcurr.cli import main

    def run(*args):
        capsys.readouterr()
        code = main(list(args))
        out = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)

    return run

