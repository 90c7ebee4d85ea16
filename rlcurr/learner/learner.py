"""The learner: one policy (optionally LoRA), its optimizer, and the GRPO-family update.

`Learner.train_step(samples, step)` runs, in order:
  1. old logprobs of every answer under the current (pre-update) policy, on the prompt that
     generated it (the hinted one for Guide-GRPO off-policy answers);
  2. reference logprobs when a KL penalty is on;
  3. `epochs` passes; each pass shuffles the answers into `mini_batches` optimizer steps, each
     accumulated over micro-batches of `micro_batch_size` answers (losses weighted so the sum
     equals the loss of the whole mini-batch);
  4. gradient clipping and AdamW; the LR for trainer step t is base_lr * schedule(t).
Plain class, no Ray: `rlcurr.learner.worker.LearnerWorker` is the actor shell around it.
"""

from __future__ import annotations

import copy
import random
from contextlib import nullcontext

import torch

from rlcurr.algos.losses import aggregate, entropy_from_logits, kl_penalty, policy_loss
from rlcurr.algos.schedules import lr_multiplier
from rlcurr.learner.batching import pad_lists, response_logits, response_mask, token_logprobs
from rlcurr.learner.models import apply_lora, load_causal_lm, load_tokenizer
from rlcurr.types import TrainSample


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Learner:
    def __init__(self, model_path: str, learner_cfg, algo_cfg, total_steps: int, *, dtype: str = "float32",
                 lora_cfg=None, seed: int = 0):
        torch.manual_seed(seed)
        self.cfg, self.algo, self.total_steps = learner_cfg, algo_cfg, total_steps
        self.device = pick_device()
        self.tokenizer = load_tokenizer(model_path)
        self.pad_id = self.tokenizer.pad_token_id
        model = load_causal_lm(model_path, dtype)
        self.ref_model = None
        if algo_cfg.kl_coef > 0 and lora_cfg is None:
            self.ref_model = copy.deepcopy(model).eval().requires_grad_(False).to(self.device)
        self.model = (apply_lora(model, lora_cfg) if lora_cfg is not None else model).to(self.device)
        self.is_lora = lora_cfg is not None
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=learner_cfg.lr, betas=tuple(learner_cfg.betas),
                                           weight_decay=learner_cfg.weight_decay)
        self.rng = random.Random(seed)

    # ------------------------------------------------------------------ logprobs

    def _ref_context(self):
        """Reference policy = the initial weights: a frozen copy, or the base model with LoRA off."""
        return self.model.disable_adapter() if self.is_lora else nullcontext()

    @torch.no_grad()
    def logprobs(self, samples: list[TrainSample], behaviour: bool = False, reference: bool = False,
                 chunk: int = 64) -> list[list[float]]:
        """Per-token logprobs of each answer (on its behaviour prompt if `behaviour`)."""
        self.model.eval()
        out: list[list[float]] = []
        for i in range(0, len(samples), chunk):
            part = samples[i : i + chunk]
            prompts = [(s.behaviour_prompt_ids or s.prompt_ids) if behaviour else s.prompt_ids for s in part]
            responses = [s.response_ids for s in part]
            model = self.ref_model if (reference and self.ref_model is not None) else self.model
            ctx = self._ref_context() if (reference and self.ref_model is None) else nullcontext()
            with ctx:
                lp_BT = token_logprobs(response_logits(model, prompts, responses, self.pad_id), responses, self.pad_id)
            out += [lp_BT[b, : len(r)].tolist() for b, r in enumerate(responses)]
        return out

    # ------------------------------------------------------------------ update

    def set_lr(self, step: int) -> float:
        s = self.cfg.schedule
        lr = self.cfg.lr * lr_multiplier(step, self.total_steps, s.name, s.warmup_steps, s.min_lr_ratio, s.decay_fraction)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def train_step(self, samples: list[TrainSample], step: int) -> dict[str, float]:
        samples = [s for s in samples if s.response_ids]
        if not samples:
            return {}
        lr = self.set_lr(step)
        old = self.logprobs(samples, behaviour=True)
        ref = self.logprobs(samples, reference=True) if self.algo.kl_coef > 0 else None
        norm_len = max(len(s.response_ids) for s in samples)  # Dr.GRPO's constant: longest answer
        self.model.train()
        sums: dict[str, float] = {}
        n_updates = 0
        for _ in range(self.algo.epochs):
            order = list(range(len(samples)))
            self.rng.shuffle(order)
            for mb in _split(order, self.algo.mini_batches):
                stats = self._optimizer_step(samples, mb, old, ref, norm_len)
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + v
                n_updates += 1
        metrics = {k: v / n_updates for k, v in sums.items()}
        metrics["lr"] = lr
        metrics.update(logprob_parity(samples, old))
        return metrics

    def _optimizer_step(self, samples, indices, old, ref, norm_len) -> dict[str, float]:
        self.optimizer.zero_grad(set_to_none=True)
        total_tokens = sum(len(samples[i].response_ids) for i in indices)
        totals: dict[str, float] = {}
        for micro in _chunks(indices, self.algo.micro_batch_size):
            part = [samples[i] for i in micro]
            # weight = this micro-batch's share of the mini-batch's denominator, so that the
            # accumulated gradient equals that of the mini-batch loss.
            if self.algo.loss_agg == "token-mean":
                weight = sum(len(s.response_ids) for s in part) / total_tokens
            else:
                weight = len(part) / len(indices)
            loss, stats = self._micro_loss(part, [old[i] for i in micro], [ref[i] for i in micro] if ref else None, norm_len)
            (loss * weight).backward()
            for k, v in stats.items():
                totals[k] = totals.get(k, 0.0) + float(v) * weight
        self.allreduce_grads()
        params = [p for p in self.model.parameters() if p.requires_grad]
        totals["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip))
        self.optimizer.step()
        return totals

    def allreduce_grads(self) -> None:
        """Average gradients across data-parallel learners (no-op for a single learner)."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        world = torch.distributed.get_world_size()
        for p in self.model.parameters():
            if p.grad is not None:
                torch.distributed.all_reduce(p.grad)
                p.grad /= world

    def _micro_loss(self, part: list[TrainSample], old: list[list[float]], ref: list[list[float]] | None,
                    norm_len: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        dev = self.device
        responses = [s.response_ids for s in part]
        logits_BTV = response_logits(self.model, [s.prompt_ids for s in part], responses, self.pad_id)
        T = logits_BTV.shape[1]
        logprobs_BT = token_logprobs(logits_BTV, responses, self.pad_id)
        mask_BT = response_mask([len(r) for r in responses], T).to(dev)
        old_BT = pad_lists(old, T).to(dev)
        adv_B = torch.tensor([s.advantage for s in part], dtype=torch.float32, device=dev)
        off_B = torch.tensor([s.off_policy for s in part], dtype=torch.bool, device=dev)
        a = self.algo
        pg_loss, stats = policy_loss(logprobs_BT, old_BT, adv_B, mask_BT, a.clip_low, a.clip_high, a.loss_agg,
                                     offpolicy_B=off_B, norm_len=norm_len)
        entropy_BT = entropy_from_logits(logits_BTV.detach() if a.entropy_coef == 0 else logits_BTV)
        entropy = aggregate(entropy_BT, mask_BT, a.loss_agg, norm_len)
        loss = pg_loss - a.entropy_coef * entropy
        stats = {**stats, "policy_loss": pg_loss.detach(), "entropy": entropy.detach()}
        if ref is not None:
            kl = aggregate(kl_penalty(logprobs_BT, pad_lists(ref, T).to(dev), a.kl_estimator), mask_BT, a.loss_agg, norm_len)
            loss = loss + a.kl_coef * kl
            stats["kl"] = kl.detach()
        stats["loss"] = loss.detach()
        return loss, stats

    # ------------------------------------------------------------------ weights

    def named_weights(self) -> list[tuple[str, torch.Tensor]]:
        """Full HF-named CPU weights for rollout engines (LoRA merged into a copy)."""
        if self.is_lora:
            merged = copy.deepcopy(self.model).merge_and_unload()
            state = merged.state_dict()
        else:
            state = self.model.state_dict()
        return [(k, v.detach().to("cpu", copy=True)) for k, v in state.items()]

    def save_checkpoint(self, path: str) -> None:
        """Trainable weights (all, or LoRA adapters), optimizer and RNG, plus an HF model dir."""
        trainable = {n: p.detach().cpu() for n, p in self.model.named_parameters() if p.requires_grad}
        torch.save({"trainable": trainable, "optimizer": self.optimizer.state_dict(),
                    "rng": self.rng.getstate(), "torch_rng": torch.get_rng_state()}, f"{path}/learner.pt")
        self.save_pretrained(f"{path}/model")

    def load_checkpoint(self, path: str) -> None:
        state = torch.load(f"{path}/learner.pt", weights_only=False)
        missing = set(state["trainable"]) - {n for n, _ in self.model.named_parameters()}
        if missing:
            raise ValueError(f"checkpoint has parameters this model lacks: {sorted(missing)[:3]}")
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for n, t in state["trainable"].items():
                params[n].copy_(t)
        self.optimizer.load_state_dict(state["optimizer"])
        self.rng.setstate(state["rng"])
        torch.set_rng_state(state["torch_rng"])

    def save_pretrained(self, path: str) -> None:
        model = copy.deepcopy(self.model).merge_and_unload() if self.is_lora else self.model
        model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)


def logprob_parity(samples: list[TrainSample], learner_logprobs: list[list[float]]) -> dict[str, float]:
    """Engine sampling logprobs vs the learner's recomputation of the same tokens (same weights)."""
    diffs = [abs(a - b) for s, lp in zip(samples, learner_logprobs) if s.rollout_logprobs
             for a, b in zip(s.rollout_logprobs, lp)]
    if not diffs:
        return {}
    return {"rollout/logprob_abs_diff_mean": sum(diffs) / len(diffs), "rollout/logprob_abs_diff_max": max(diffs)}


def _split(items: list[int], parts: int) -> list[list[int]]:
    parts = max(1, min(parts, len(items)))
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for p in range(parts):
        end = start + size + (1 if p < extra else 0)
        out.append(items[start:end])
        start = end
    return out


def _chunks(items: list[int], size: int) -> list[list[int]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
