"""`rlcurr doctor` on a machine without a GPU: the checks that have a CPU proof run, the GPU-only
ones say they were skipped, and a failed check makes the exit code 1. (The vLLM, FSDP and
weight-sync checks are the code paths tests/test_vllm_engine.py, test_fsdp_start.py and
test_weight_transfer.py cover; here the quick checks run, each in its own process as a user's do.)"""

import json

import pytest

torch = pytest.importorskip("torch")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU machine's report")
def test_doctor_reports_what_it_checked_and_skipped(cli):
    out = cli("doctor", "--only", "environment", "shared memory", "colocated memory", "plan vs peak", "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    results = {r["check"]: r for r in json.loads(out.stdout)}
    assert results["environment"]["status"] == "pass" and "0 CUDA GPU(s)" in results["environment"]["figure"]
    assert "vllm 0.32" in results["environment"]["figure"]
    assert results["shared memory"]["status"] in ("pass", "skip")
    assert results["colocated memory"]["status"] == results["plan vs peak"]["status"] == "skip"
    assert "needs a GPU" in results["colocated memory"]["figure"]


def test_doctor_table_names_the_skipped_checks(cli):
    out = cli("doctor", "--only", "environment", "colocated memory")
    assert out.returncode == 0
    if not torch.cuda.is_available():
        assert "skipped on this machine: colocated memory" in out.stdout


def test_unknown_check_is_one_error_line(cli):
    out = cli("doctor", "--only", "warp drive")
    assert out.returncode == 2 and out.stderr.startswith("error: --only: unknown check 'warp drive'")
