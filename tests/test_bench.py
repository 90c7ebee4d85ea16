"""The benches' own arithmetic: what they count must be right before their ratios mean anything."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as C  # noqa: E402
from bench import gpu_learner_mfu as mfu  # noqa: E402


def test_rollouts_to_target_is_the_first_evaluation_at_or_above_it():
    # (step, answers generated before that evaluation, learnable-mean accuracy)
    curve = [(-1, 0, 0.10), (9, 2560, 0.12), (19, 5120, 0.16), (29, 7680, 0.14), (39, 10240, 0.20)]
    assert C.rollouts_to_target(curve, 0.15) == 5120     # first crossing, the later dip does not matter
    assert C.rollouts_to_target(curve, 0.20) == 10240    # "reaches" includes equality
    assert C.rollouts_to_target(curve, 0.21) is None     # never: reported as not reached, never imputed


def test_mean_std_skips_missing_values():
    assert C.mean_std([1.0, None, 3.0]) == (2.0, 2 ** 0.5)   # stdev of {1, 3} = sqrt(((1-2)^2 + (3-2)^2) / 1)
    assert C.mean_std([4.0]) == (4.0, 0.0)


def test_qwen2_half_billion_shape_and_flops_formula():
    # Qwen2-0.5B: embeddings 151936*896 (tied) + 24 layers x [q 896*896+896, k,v 2*(896*128+128),
    # o 896*896, MLP 3*896*4864, 2 norms 2*896] + final norm 896 = 494,032,768 parameters.
    s = mfu.Shape()
    per_layer = (896 * 896 + 896) + 2 * (896 * 128 + 128) + 896 * 896 + 3 * 896 * 4864 + 2 * 896
    assert 151936 * 896 + 24 * per_layer + 896 == 494_032_768
    with torch.device("meta"):  # shapes only, no memory
        model = mfu.Decoder(s)
    assert sum(p.numel() for p in model.parameters()) == 494_032_768
    six_n, attn = mfu.flops_per_token(s, 494_032_768, seq=2048)
    assert six_n == 6 * 494_032_768
    assert attn == 12 * 24 * 14 * 64 * 2048    # 12 * L * H * d_head * S


def test_mfu_script_runs_on_cpu():
    r = mfu.main(["--cpu-smoke"])
    assert r["tokens_per_s"] > 0 and r["params"] > 0 and "mfu" not in r   # no peak known for a CPU
