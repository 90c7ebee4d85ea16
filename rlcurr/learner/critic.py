"""PPO's critic: a value model V(s_t) for every response token, with its own AdamW.

Variant: verl / OpenRLHF's critic: the policy's base transformer (loaded from the same model
directory, without the LM head) plus a scalar head Linear(hidden, 1) on the last hidden state,
trained on the clipped value loss (`rlcurr.algos.losses.value_loss`) against GAE returns. The head
starts at zero, so the first values are 0 and the first advantages are the raw returns.
Left out: LoRA for the critic (it always trains all its weights, even when the policy uses LoRA),
a separate critic model path, and critic-specific epochs / mini-batches (it reuses the policy's).

Data parallel: like the learner, every rank gets all samples and computes the gradient of a
contiguous shard of each mini-batch, weighted by the global denominator; gradients are summed
across ranks, so every rank's critic stays identical. Under `learner.strategy: fsdp` the
learner calls `shard()` (rlcurr.learner.fsdp): backbone layers and the root are sharded, the
optimizer rebuilt, micro-batches padded to equal counts; `values` already runs every sample on
every rank, so its forward counts agree.
"""

from __future__ import annotations

import random
from contextlib import nullcontext

import torch
from transformers import AutoModel

from rlcurr.algos.losses import value_loss
from rlcurr.learner import fsdp, precision
from rlcurr.learner.batching import cut_by_tokens, pad_lists, response_mask, right_pad
from rlcurr.learner.dataparallel import mean_of, minibatches, sum_across_ranks, sum_grads, weighted_micro_batches
from rlcurr.learner.models import DTYPES
from rlcurr.types import TrainSample


class ValueModel(torch.nn.Module):
    """Base transformer + Linear(hidden, 1): one value per position."""

    def __init__(self, model_path: str, dtype: str = "float32"):
        super().__init__()
        self.backbone = AutoModel.from_pretrained(str(model_path), dtype=DTYPES[dtype])
        self.head = torch.nn.Linear(self.backbone.config.hidden_size, 1)
        torch.nn.init.zeros_(self.head.weight)
        torch.nn.init.zeros_(self.head.bias)

    def forward(self, prompts: list[list[int]], responses: list[list[int]], pad_id: int) -> torch.Tensor:
        """V of the state before each response token, [B, T], response-aligned like `response_logits`."""
        device = self.head.weight.device
        ids_BL, mask_BL = right_pad([p + r for p, r in zip(prompts, responses)], pad_id)
        hidden_BLH = self.backbone(input_ids=ids_BL.to(device), attention_mask=mask_BL.to(device),
                                   use_cache=False).last_hidden_state
        values_BL = self.head(hidden_BLH.to(self.head.weight.dtype))[..., 0].float()  # FSDP casts the head
        T = max(len(r) for r in responses)
        # The state before response token t is the prefix ending at position len(prompt) - 1 + t.
        start_B = torch.tensor([len(p) - 1 for p in prompts])
        idx_BT = (start_B[:, None] + torch.arange(T)[None, :]).clamp(max=ids_BL.shape[1] - 1).to(device)
        return values_BL.gather(1, idx_BT)


class Critic:
    def __init__(self, model_path: str, learner_cfg, algo_cfg, pad_id: int, *, dtype: str = "float32",
                 device: torch.device | str = "cpu", seed: int = 0):
        self.algo, self.grad_clip, self.pad_id = algo_cfg, learner_cfg.grad_clip, pad_id
        self.device = torch.device(device)
        self.betas, self.weight_decay = tuple(learner_cfg.betas), learner_cfg.weight_decay
        self.dtype = dtype  # compute dtype; the value model's weights are fp32 masters (rlcurr.learner.precision)
        self.model = ValueModel(model_path, "float32").to(self.device)
        self.optimizer = self._new_optimizer()
        self.rng = random.Random(seed + 1)  # its own shuffling stream; the policy's is left untouched
        self.max_tokens = getattr(learner_cfg, "max_tokens_per_micro_batch", None)
        self.fsdp = False

    def _new_optimizer(self) -> torch.optim.AdamW:
        return torch.optim.AdamW(self.model.parameters(), lr=self.algo.critic_lr, betas=self.betas,
                                 weight_decay=self.weight_decay)

    def shard(self) -> None:
        """FSDP (inside the process group): shard the value model, rebuild the optimizer on the shards."""
        fsdp.shard_model(self.model, self.dtype)
        self.optimizer = self._new_optimizer()
        self.fsdp = True

    def compute(self):
        """Autocast to the compute dtype (not under FSDP, whose policy casts); see Learner.compute."""
        return nullcontext() if self.fsdp else precision.autocast(self.device, self.dtype)

    def set_lr(self, multiplier: float) -> None:
        """critic_lr times the policy's schedule multiplier for this step."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.algo.critic_lr * multiplier

    @torch.no_grad()
    def values(self, samples: list[TrainSample]) -> list[list[float]]:
        """V(s_t) per response token of each answer, on its hint-free prompt, in forward chunks cut
        like the training micro-batches (answers and `max_tokens_per_micro_batch`). Every rank runs
        every sample, so FSDP's forward counts agree without padding."""
        self.model.eval()
        out: list[list[float]] = []
        lengths = [len(s.prompt_ids) + len(s.response_ids) for s in samples]
        for chunk in cut_by_tokens(lengths, self.algo.micro_batch_size, self.max_tokens):
            part = [samples[i] for i in chunk]
            responses = [s.response_ids for s in part]
            with self.compute():
                values_BT = self.model([s.prompt_ids for s in part], responses, self.pad_id)
            out += [values_BT[b, : len(r)].tolist() for b, r in enumerate(responses)]
        return out

    def train_step(self, samples: list[TrainSample], old_values: list[list[float]], norm_len: int) -> dict[str, float]:
        """`epochs` x `mini_batches` AdamW steps on the clipped value loss against `sample.returns`.
        `norm_len`: Dr.GRPO's constant (the learner passes its own: the generation limit).

        Micro-batching, weighting and data parallel as in the learner (rlcurr.learner.dataparallel),
        so the accumulated gradient equals that of the whole mini-batch. Returns metrics averaged
        over the optimizer steps.
        """
        self.model.train()
        stats = [self._optimizer_step(samples, mb, old_values, norm_len)
                 for mb in minibatches(len(samples), self.algo.epochs, self.algo.mini_batches, self.rng)]
        return {f"critic/{k}": v for k, v in mean_of(stats).items()}

    def _optimizer_step(self, samples, indices, old_values, norm_len) -> dict[str, float]:
        self.optimizer.zero_grad(set_to_none=True)
        totals = {"value_loss": 0.0, "value_clip_frac": 0.0}
        micro_batches = weighted_micro_batches(samples, indices, self.algo.micro_batch_size, self.algo.loss_agg,
                                               self.max_tokens)
        if self.fsdp:  # equal forward/backward counts on every rank; padding has weight 0
            micro_batches = fsdp.pad_micro_batches(micro_batches, indices)
        for micro, weight in micro_batches:
            loss, stats = self._micro_loss([samples[i] for i in micro], [old_values[i] for i in micro], norm_len)
            (loss * weight).backward()
            totals["value_loss"] += float(loss.detach()) * weight
            totals["value_clip_frac"] += float(stats["value_clip_frac"]) * weight
        if not self.fsdp:  # FSDP's backward already reduce-scattered the summed gradients
            sum_grads(self.model.parameters())
        totals = sum_across_ranks(totals)  # each rank holds its shard's weighted share
        totals["grad_norm"] = fsdp.as_float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip))
        self.optimizer.step()
        return totals

    def _micro_loss(self, part: list[TrainSample], old_values: list[list[float]], norm_len: int):
        responses = [s.response_ids for s in part]
        with self.compute():
            values_BT = self.model([s.prompt_ids for s in part], responses, self.pad_id)
        T = values_BT.shape[1]
        mask_BT = response_mask([len(r) for r in responses], T).to(self.device)
        old_BT = pad_lists(old_values, T).to(self.device)
        returns_BT = pad_lists([s.returns for s in part], T).to(self.device)
        return value_loss(values_BT, old_BT, returns_BT, mask_BT, self.algo.value_clip, self.algo.loss_agg, norm_len)

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict:
        """FSDP: collective, full tensors on rank 0 (optimizer state keyed by parameter name)."""
        if self.fsdp:
            return {"model": fsdp.full_state_dict(self.model),
                    "optimizer": fsdp.full_optimizer_state(self.model, self.optimizer), "rng": self.rng.getstate()}
        return {"model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                "optimizer": self.optimizer.state_dict(), "rng": self.rng.getstate()}

    def load_state_dict(self, state: dict) -> None:
        if self.fsdp:
            fsdp.load_full_state_dict(self.model, state["model"])
            fsdp.load_optimizer_state(self.model, self.optimizer, state["optimizer"])
        else:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        self.rng.setstate(state["rng"])

