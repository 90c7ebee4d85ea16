"""Answers packed without padding (rlcurr.learner.batching): sequences share rows, each attends
only to itself, and the logprobs, entropies and gradients are those of the padded batch."""

import pytest
import torch

import rlcurr.learner.batching as B
from rlcurr.config import TinyModelConfig
from rlcurr.learner.models import build_tiny_model, load_causal_lm


def test_pack_rows_first_fit_decreasing():
    # lengths 5, 3, 4, 2, 1 into rows of 5, longest first: 5 -> row 0 (full); 4 -> row 1 (1 left);
    # 3 -> row 2 (2 left); 2 -> row 2 (0 left); 1 -> row 1 (0 left)
    assert B.pack_rows([5, 3, 4, 2, 1], 5) == [[0], [2, 4], [1, 3]]
    assert B.pack_rows([3, 3], 3) == [[0], [1]]  # nothing shares: the padded path is used


def test_best_packing_never_costs_more_than_padding():
    # 64 answers of 5 tokens: padded 64 x 5 = 320; rows of 256 would cost 2 x 256 = 512; even
    # rows (ceil(320 / 256) = 2 rows of 160) cost 2 x 160 = 320, not less: padding is kept
    assert B.best_packing([5] * 64) is None
    # one long answer (40) and 30 short (6): padded 31 x 40 = 1240; 40 + 30 x 6 = 220 tokens fit
    # one row of 256: cost 220
    rows = B.best_packing([40] + [6] * 30)
    assert len(rows) == 1 and sorted(rows[0]) == list(range(31))
    # lengths 9, 8, 7, 7, 6 (a warmed model's short answers): rows of 256 -> one row of 37 < 5 x 9
    assert len(B.best_packing([9, 8, 7, 7, 6])) == 1


def test_packed_inputs_positions_restart_per_sequence():
    ids, pos, starts = B.packed_inputs([[1, 2, 3], [4], [5, 6]], [[0, 1], [2]], pad_id=0)
    assert ids.tolist() == [[1, 2, 3, 4], [5, 6, 0, 0]]
    assert pos.tolist() == [[0, 1, 2, 0], [0, 1, 0, 1]]  # row 1's tail is a dummy sequence
    assert starts == [(0, 0), (0, 3), (1, 0)]


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_packed_scores_and_gradients_equal_padded(tmp_path, monkeypatch, arch):
    model_dir = build_tiny_model(TinyModelConfig(arch=arch, hidden_size=32, num_layers=2, intermediate_size=64),
                                 tmp_path / arch, seed=0)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(5, 60, (int(n),), generator=g).tolist() for n in torch.randint(2, 8, (12,), generator=g)]
    responses = [torch.randint(5, 60, (n,), generator=g).tolist() for n in [1, 2, 9, 3, 1, 14, 2, 2, 5, 1, 3, 2]]

    def run():
        model = load_causal_lm(model_dir, "float32")
        lp, ent = B.answer_scores(model, prompts, responses, pad_id=0, temperature=0.7)
        (lp.sum() + 0.1 * ent.sum()).backward()
        return lp.detach(), ent.detach(), [p.grad.clone() for p in model.parameters()]

    rows: list[int] = []
    real_pack = B.pack_rows
    monkeypatch.setattr(B, "pack_rows", lambda lens, cap: rows.append(len(real_pack(lens, cap))) or real_pack(lens, cap))
    packed = run()
    assert rows[0] < len(responses)  # it really packed
    monkeypatch.setattr(B, "pack_rows", lambda lens, cap: [[i] for i in range(len(lens))])
    padded = run()
    assert (packed[0] - padded[0]).abs().max() < 1e-5
    assert (packed[1] - padded[1]).abs().max() < 1e-5
    assert max((a - b).abs().max().item() for a, b in zip(packed[2], padded[2])) < 1e-5
