"""bench/sync_scaling.py on a tiny model: a 2-node Ray cluster on this machine, both sync paths
(shared-memory file on the learner's node, object store to the other node) through rlcurr's own
LearnerWorker / RolloutWorker, and both engines end up holding exactly the learner's weights.

Run in a subprocess: the bench starts its own `ray.cluster_utils.Cluster`, which cannot share a
process with the session's `ray.init` (tests/conftest.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_sync_scaling_quick_on_two_nodes(tmp_path):
    out = tmp_path / "sync_scaling.json"
    env = {**os.environ, "RLCURR_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    # one dtype: each cell starts three actors, and the test must stay well under a minute
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "sync_scaling.py"), "--quick", "--sizes", "tiny",
                           "--dtypes", "bfloat16", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    r = json.loads(out.read_text())
    assert out.with_suffix(".png").stat().st_size > 0
    for key in ("command", "git", "date", "machine", "cells", "ratios", "estimate_7b_bf16"):
        assert key in r, key
    (cell,) = r["cells"]
    assert (cell["size"], cell["dtype"], cell["repeats"]) == ("tiny", "bfloat16", 1)
    # tiny: hidden 64, 2 layers, 4 heads (2 kv, 32 dims), MLP 256, vocab 4096, tied.
    # Per layer: q 64*64+64, k+v 2*(64*32+32), o 64*64, MLP 3*64*256, norms 2*64 = 61,760;
    # params 4096*64 + 2*61,760 + 64 = 385,600. The tied lm_head.weight (the embedding again) is not
    # sent (rlcurr.learner.learner.without_tied_head): 385,600 values of 2 bytes.
    assert cell["params"] == 385_600
    assert cell["paths"]["object_store"]["bytes"] == 2 * 385_600
    assert 2 * 385_600 <= cell["paths"]["shm"]["bytes"] <= 2 * 385_600 + 64 * cell["tensors"]  # 64-byte aligned
    for path in ("shm", "object_store"):
        p = cell["paths"][path]
        for k in ("learner_s", "engine_s", "total_s"):
            assert len(p[k]["values"]) == 1 and p[k]["median"] > 0, (path, k)
        assert abs(p["total_s"]["median"] - p["learner_s"]["median"] - p["engine_s"]["median"]) < 1e-6
    # both engines hold the learner's weights after the check sync: every tensor's bits, and the probe tensor
    check = cell["check"]
    assert check["equal"]
    assert check["engine_checksum"]["shm"] == check["engine_checksum"]["object_store"] == check["learner_checksum"]
    assert check["engine_probe"]["shm"] == check["engine_probe"]["object_store"] == check["learner_probe"]
    assert check["learner_probe"][0] != 1.0  # perturbed away from the checkpoint the engines started from
    ratio = r["ratios"]["tiny bfloat16"]
    assert ratio["geomean"] > 0 and ratio["ci95"] is None  # one repeat: no interval
    assert r["estimate_7b_bf16"]["label"].startswith("ESTIMATE")
