"""The transformers engine stops on every EOS id of the model's generation_config, as vLLM does."""

import json

from rlcurr.config import TinyModelConfig
from rlcurr.learner.models import build_tiny_model
from rlcurr.rollout.hf_engine import HFEngine
from rlcurr.types import GenRequest

SMALL = TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=2, intermediate_size=64)
PROMPT = [5, 6, 76, 7, 84]  # "12+3=" in the character tokenizer


def test_generation_stops_on_any_eos_id_of_the_generation_config(tmp_path):
    model_dir = build_tiny_model(SMALL, tmp_path / "m", seed=0)
    greedy = GenRequest(PROMPT, n=1, max_tokens=6, temperature=0.0)
    (before,) = HFEngine(str(model_dir), seed=0).generate([greedy])[0]
    eos = HFEngine(str(model_dir), seed=0).tokenizer.eos_token_id
    assert before.finish_reason == "length" and eos not in before.token_ids  # a random model runs on
    # Declare the third greedy token an end-of-sequence token too (a model with a turn-end token
    # next to its EOS, e.g. Llama 3's <|eot_id|> and <|end_of_text|>).
    extra = before.token_ids[2]
    path = model_dir / "generation_config.json"
    cfg = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**cfg, "eos_token_id": [eos, extra]}))

    (after,) = HFEngine(str(model_dir), seed=0).generate([greedy])[0]
    stop = before.token_ids.index(extra) + 1  # the first occurrence (may be before position 2)
    assert after.token_ids == before.token_ids[:stop]
    assert after.logprobs == before.logprobs[:stop]
    assert after.finish_reason == "stop"


def test_a_single_int_eos_in_the_generation_config_still_stops(tmp_path):
    model_dir = build_tiny_model(SMALL, tmp_path / "m", seed=0)
    greedy = GenRequest(PROMPT, n=1, max_tokens=6, temperature=0.0)
    (before,) = HFEngine(str(model_dir), seed=0).generate([greedy])[0]
    path = model_dir / "generation_config.json"
    cfg = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**cfg, "eos_token_id": before.token_ids[0]}))
    (after,) = HFEngine(str(model_dir), seed=0).generate([greedy])[0]
    assert after.token_ids == before.token_ids[:1] and after.finish_reason == "stop"
