"""LoRA weights for the engines are merged module by module, with no copy of the model."""

import copy

import pytest
import torch

from rlcurr.config import AlgoConfig, LearnerConfig, LoraConfig, TinyModelConfig
from rlcurr.learner.learner import Learner, merged_lora_state, without_tied_head
from rlcurr.learner.models import build_tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(build_tiny_model(TinyModelConfig(hidden_size=32, num_layers=2, intermediate_size=64),
                                tmp_path_factory.mktemp("tiny"), seed=0))


def test_merged_state_equals_peft_merge_and_unload(model_dir, monkeypatch):
    lora = LoraConfig(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj", "down_proj"])
    learner = Learner(model_dir, LearnerConfig(), AlgoConfig(), 10, lora_cfg=lora)
    with torch.no_grad():  # lora_B starts at zero (a no-op delta): give every adapter a real one
        for n, p in learner.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    reference = copy.deepcopy(learner.model).merge_and_unload().state_dict()
    # the model must not be copied on the way (a second model on the GPU, per sync)
    monkeypatch.setattr(copy, "deepcopy", lambda *a, **k: pytest.fail("named_weights deep-copied the model"))
    merged = dict(learner.named_weights())
    # the tied lm_head.weight is the embedding again: engines re-tie it, so it is not sent
    assert list(merged) == [k for k in reference if k != "lm_head.weight"]
    assert max((merged[k] - reference[k]).abs().max().item() for k in merged) < 1e-6
    q = "model.layers.0.self_attn.q_proj.weight"
    base = learner.model.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight
    assert not torch.allclose(merged[q], base)  # the delta is really in


def test_a_lora_adapted_tied_head_is_sent():
    """With an adapter on lm_head the merged head is no longer the embedding: it must be sent."""
    embed = torch.zeros(3, 2)
    state = {"model.embed_tokens.weight": embed, "lm_head.weight": embed + 1}
    model = torch.nn.Module()
    model.config = type("Config", (), {"tie_word_embeddings": True})()
    assert list(without_tied_head(model, state)) == ["model.embed_tokens.weight", "lm_head.weight"]
    state["lm_head.weight"] = embed.clone()  # FSDP gathers separate copies of a tied weight
    assert list(without_tied_head(model, state)) == ["model.embed_tokens.weight"]
    model.config.tie_word_embeddings = False
    assert list(without_tied_head(model, state)) == ["model.embed_tokens.weight", "lm_head.weight"]


def test_merged_state_leaves_the_adapters_alone(model_dir):
    lora = LoraConfig(r=2, alpha=4, dropout=0.0, target_modules=["q_proj"])
    learner = Learner(model_dir, LearnerConfig(), AlgoConfig(), 10, lora_cfg=lora)
    before = {n: p.detach().clone() for n, p in learner.model.named_parameters()}
    state = merged_lora_state(learner.model)
    assert not any("lora_" in k or "base_layer" in k for k in state)
    assert all(torch.equal(before[n], p) for n, p in learner.model.named_parameters())
