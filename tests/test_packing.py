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

    monkeypatch.setattr(B, "shared_prefix_ok", lambda model, longest: False)  # layout 2 against 3
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


def test_shared_prefix_inputs_by_hand():
    # The docstring's example plus a second segment in the same row: prompt [1 2] with answers
    # [3 4] and [5]; prompt [6] with answer [7 8].
    prompts, responses = [[1, 2], [1, 2], [6]], [[3, 4], [5], [7, 8]]
    segments = B.prompt_segments(prompts, responses, capacity=256)
    assert segments == [[0, 1], [2]]
    ids, pos, allowed, rows, cols = B.shared_prefix_inputs(prompts, responses, segments, [[0, 1]], pad_id=0)
    assert ids.tolist() == [[1, 2, 3, 4, 5, 6, 7, 8]]
    assert pos.tolist() == [[0, 1, 2, 3, 2, 0, 1, 2]]  # answer [5] starts at the prompt's length again
    assert allowed[0].int().tolist() == [
        # keys: 1  2  3  4  5  6  7  8
        [1, 0, 0, 0, 0, 0, 0, 0],  # 1: prompt, causal
        [1, 1, 0, 0, 0, 0, 0, 0],  # 2
        [1, 1, 1, 0, 0, 0, 0, 0],  # 3: prompt + itself
        [1, 1, 1, 1, 0, 0, 0, 0],  # 4
        [1, 1, 0, 0, 1, 0, 0, 0],  # 5: prompt + itself, not the sibling answer 3 4
        [0, 0, 0, 0, 0, 1, 0, 0],  # 6: a new segment
        [0, 0, 0, 0, 0, 1, 1, 0],  # 7
        [0, 0, 0, 0, 0, 1, 1, 1],  # 8
    ]
    # answer 0's tokens are predicted by the outputs at 2 (last prompt token) and 3; answer 1's
    # by 2; answer 2's by 6 and 7
    assert rows.tolist() == [0] * 5 and cols.tolist() == [1, 2, 1, 5, 6]


def test_prompt_segments_split_at_capacity():
    # prompt of 3 tokens, answers of 4, 4, 4 and capacity 12: 3 + 4 + 4 = 11 fits two answers,
    # the third starts a new segment with its own copy of the prompt; the other prompt's answer
    # (index 1, between them) is its own segment
    prompts = [[1, 2, 3], [9], [1, 2, 3], [1, 2, 3]]
    responses = [[4] * 4, [5], [6] * 4, [7] * 4]
    assert B.prompt_segments(prompts, responses, capacity=12) == [[0, 2], [3], [1]]


@pytest.mark.parametrize("arch,attn", [("qwen2", "sdpa"), ("llama", "sdpa"), ("qwen2", "eager")])
def test_shared_prompt_scores_and_gradients_equal_padded(tmp_path, monkeypatch, arch, attn):
    model_dir = build_tiny_model(TinyModelConfig(arch=arch, hidden_size=32, num_layers=2, intermediate_size=64),
                                 tmp_path / arch, seed=0)
    g = torch.Generator().manual_seed(1)
    distinct = [torch.randint(5, 60, (n,), generator=g).tolist() for n in (3, 7, 1)]
    # groups of 4, 3 and 2 answers, interleaved (a group's answers need not be adjacent), answer
    # lengths 1-12
    order = [0, 1, 0, 2, 1, 0, 0, 2, 1]
    prompts = [distinct[k] for k in order]
    responses = [torch.randint(5, 60, (int(n),), generator=g).tolist()
                 for n in torch.randint(1, 13, (len(order),), generator=g)]

    def run():
        model = load_causal_lm(model_dir, "float32")
        model.set_attn_implementation(attn)
        lp, ent = B.answer_scores(model, prompts, responses, pad_id=0, temperature=0.7)
        (lp.sum() + 0.1 * ent.sum()).backward()
        return lp.detach(), ent.detach(), [p.grad.clone() for p in model.parameters()]

    through: list[int] = []
    real_inputs = B.shared_prefix_inputs
    monkeypatch.setattr(B, "shared_prefix_inputs",
                        lambda *a: (lambda out: through.append(out[0].numel()) or out)(real_inputs(*a)))
    shared = run()
    assert through[0] < sum(len(p) + len(r) for p, r in zip(prompts, responses))  # fewer tokens: prompts once
    monkeypatch.setattr(B, "shared_prefix_ok", lambda model, longest: False)
    monkeypatch.setattr(B, "best_packing", lambda lengths: None)
    padded = run()
    assert (shared[0] - padded[0]).abs().max() < 1e-5
    assert (shared[1] - padded[1]).abs().max() < 1e-5
    assert max((a - b).abs().max().item() for a, b in zip(shared[2], padded[2])) < 1e-5


def test_shared_prefix_only_where_the_mask_is_taken_as_given(tmp_path):
    model = load_causal_lm(build_tiny_model(TinyModelConfig(hidden_size=32, num_layers=1, intermediate_size=64),
                                            tmp_path / "m", seed=0), "float32")
    assert B.shared_prefix_ok(model, 256)
    text = model.config.get_text_config()
    text.use_sliding_window, text.sliding_window = True, 128
    assert not B.shared_prefix_ok(model, 256)  # the custom mask would replace a window shorter than a row
    assert B.shared_prefix_ok(model, 100)
    text.use_sliding_window = False
    model.config._attn_implementation = "flash_attention_2"
    assert not B.shared_prefix_ok(model, 256)
