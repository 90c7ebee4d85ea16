"""The learner: one policy (optionally LoRA), its optimizer, and the GRPO-family update.

`Learner.train_step(samples, step)` runs, in order:
  1. old logprobs of every answer under the current (pre-update) policy, on the prompt that
     generated it (the hinted one for Guide-GRPO off-policy answers);
  2. reference logprobs when a KL penalty is on;
  3. `epochs` passes; each pass shuffles the answers into `mini_batches` optimizer steps, each
     accumulated over micro-batches of `micro_batch_size` answers (losses weighted so the sum
     equals the loss of the whole mini-batch);
  4. gradient clipping and AdamW; the LR for trainer step t is base_lr * schedule(t).

Scoring (every pass: old, reference, training, and the entropy used by D3S / the bonus / the
metric) is at the sampling temperature: log softmax(logits / T), as the engines report it (HF
engine; vLLM with processed logprobs) and as verl and TRL score; T = 0 (greedy) scores at 1.
Nucleus truncation is NOT applied: the learner scores the untempered-by-top-p distribution, so
top_p < 1 leaves a learner/engine mismatch that only truncated IS (algo.tis_cap) corrects (the
config rejects top_p < 1 without it). Critic values do not depend on T.

Memory (rlcurr.learner.batching): the body runs to hidden states, the output head is applied only
at answer positions, logprobs come from a chunked logsumexp recomputed in the backward (fp32
[tokens, V] never whole), and every forward (old, ref, training, critic) holds at most
`micro_batch_size` answers and `learner.max_tokens_per_micro_batch` padded prompt+answer tokens
(micro-batches are cut further; loss weights stay the mini-batch's shares, so the update is the
same). The entropy is a detached by-product of the same chunks (one extra [chunk, V] temporary),
differentiable only when entropy_coef != 0; it is always logged as "entropy". Left out: packing
answers without padding.

Mini-batch constants: Guide-GRPO's gamma (a quantile of the off-policy ratios) and D3S's token
top-k are defined over the whole mini-batch. When the mini-batch is cut (several micro-batches or
ranks), a no-grad pre-pass scores it first and fixes both (`minibatch_constants`), so the step is
that of one learner with one micro-batch; one forward over the whole mini-batch needs no pre-pass.
PPO (algo.name: ppo) adds a `Critic` (rlcurr.learner.critic): between 2 and 3 its values V_old
give per-token GAE advantages (whitened over the batch) and returns, which replace the trainer's
group advantages; after 4 the critic takes its own `epochs` x `mini_batches` steps; during
`critic_warmup` steps 3-4 are skipped.
Plain class, no Ray: `rlcurr.learner.worker.LearnerWorker` is the actor shell around it.

Zero-advantage skip (algo.skip_zero_advantage, on by default): an answer whose (per-answer)
advantage is exactly 0 adds exactly 0 to the policy-gradient term of every aggregation but counts
in its denominator, so the training forward/backward leaves it out while the other micro-batches
keep their shares of the FULL mini-batch denominator (`weighted_micro_batches(skip=...)`): the
same update. A mini-batch with nothing left still takes its optimizer step, on zero gradients
(AdamW's momentum and weight decay move the weights exactly as without the skip). Applied only
when nothing else needs those logprobs: not with kl_coef > 0, entropy_coef != 0, PPO (per-token
advantages), D3S token selection (token_keep_frac) or FSDP (equal forward counts per rank), and
never to off-policy (hinted) answers (Guide-GRPO's gamma is over their ratios). With skipped
answers, 'policy_loss' and 'loss' are still the whole mini-batch's, but 'entropy', 'clip_frac_*'
and 'approx_kl_old' are over the trained answers only, and the logprob-parity metrics leave skipped
answers out when the training forward provides the old logprobs (a step that trains no answer, or
none with engine logprobs, scores one micro-batch of skipped ones without grad for 'entropy' and
parity); 'learner/skipped_answers_frac' is the share of answers left out.

Data parallel (inside a torch.distributed process group, see `rlcurr.learner.group`): every rank
gets ALL samples and the same seed, so all ranks shuffle identically and agree on each
mini-batch and its denominators (tokens or answers; Dr.GRPO's constant is the generation limit
`response_limit`, or the step's longest answer without one). Each rank computes
old/ref logprobs for a contiguous shard of the batch (then all-gathered) and the gradient of a
contiguous shard of each mini-batch, weighted by the global denominator; the gradients are
summed across ranks, so clipping and AdamW see the single learner's gradient on every rank.
`learner.strategy: fsdp` shards parameters, gradients and optimizer state instead of replicating
them (rlcurr.learner.fsdp; same update): `join_group` shards the model(s) and rebuilds the
optimizer(s), micro-batches and forward passes are padded to equal counts, and weights and
checkpoints are gathered collectively (every rank calls them; rank 0 writes / returns them).
"""

from __future__ import annotations

import copy
import dataclasses
import random
from contextlib import nullcontext

import torch

from rlcurr.algos.advantages import explained_variance, gae_BT, last_token_rewards, masked_whiten
from rlcurr.algos.losses import aggregate, kl_penalty, offpolicy_gamma, policy_loss, truncated_is_weights
from rlcurr.algos.schedules import schedule_multiplier
from rlcurr.curriculum.filters import d3s_token_mask
from rlcurr.learner import fsdp
from rlcurr.learner.batching import answer_scores, cut_by_tokens, pad_lists, policy_mask, response_mask
from rlcurr.learner.critic import Critic
from rlcurr.learner.dataparallel import (all_gather_list, dist_rank_world, mean_of, minibatches, shard,
                                         sum_across_ranks, sum_grads, weighted_micro_batches)
from rlcurr.learner.models import apply_lora, load_causal_lm, load_tokenizer
from rlcurr.types import TrainSample


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Learner:
    """`temperature`: the rollout's sampling temperature (cfg.rollout.temperature); every logprob
    and entropy is that of logits / temperature (0 = greedy: scored at 1). Top-p truncation is not
    reproduced: the learner scores the untruncated distribution (see the module docstring).
    `response_limit`: the generation limit (cfg.rollout.max_tokens), Dr.GRPO's normaliser."""

    def __init__(self, model_path: str, learner_cfg, algo_cfg, total_steps: int, *, dtype: str = "float32",
                 lora_cfg=None, seed: int = 0, temperature: float = 1.0, response_limit: int | None = None):
        torch.manual_seed(seed)
        self.cfg, self.algo, self.total_steps = learner_cfg, algo_cfg, total_steps
        # The engines' logprobs are those of logits / T: every pass here scores the same way.
        self.temperature = temperature if temperature and temperature > 0 else 1.0  # greedy: scored at 1
        self.response_limit = response_limit  # Dr.GRPO's constant normaliser (the generation limit)
        self.max_tokens = getattr(learner_cfg, "max_tokens_per_micro_batch", None)
        self.device = pick_device()
        self.fsdp = getattr(learner_cfg, "strategy", "ddp") == "fsdp"
        # FSDP: stay on CPU until sharded, so a GPU never holds the whole model.
        place = torch.device("cpu") if self.fsdp else self.device
        self.tokenizer = load_tokenizer(model_path)
        self.pad_id = self.tokenizer.pad_token_id
        model = load_causal_lm(model_path, dtype)
        self.ref_model = None
        if algo_cfg.kl_coef > 0 and lora_cfg is None:
            self.ref_model = copy.deepcopy(model).eval().requires_grad_(False).to(place)
        self.model = (apply_lora(model, lora_cfg) if lora_cfg is not None else model).to(place)
        self.is_lora = lora_cfg is not None
        self.optimizer = self._new_optimizer()
        self.rng = random.Random(seed)
        self.critic = None
        if algo_cfg.name == "ppo":
            self.critic = Critic(model_path, learner_cfg, algo_cfg, self.pad_id, dtype=dtype, device=place,
                                 seed=seed)

    def _new_optimizer(self) -> torch.optim.AdamW:
        params = [p for p in self.model.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.cfg.lr, betas=tuple(self.cfg.betas),
                                 weight_decay=self.cfg.weight_decay)

    def join_group(self) -> None:
        """Inside a fresh process group: start from rank 0's weights; with FSDP, then shard the
        policy (and reference / critic) and rebuild the optimizer on the sharded parameters."""
        self.broadcast_parameters()
        if not self.fsdp:
            return
        fsdp.shard_model(self.model)
        if self.ref_model is not None:
            fsdp.shard_model(self.ref_model)
        self.optimizer = self._new_optimizer()
        if self.critic is not None:
            self.critic.shard()

    # ------------------------------------------------------------------ logprobs

    def _ref_context(self):
        """Reference policy = the initial weights: a frozen copy, or the base model with LoRA off."""
        return self.model.disable_adapter() if self.is_lora else nullcontext()

    @torch.no_grad()
    def logprobs(self, samples: list[TrainSample], behaviour: bool = False, reference: bool = False,
                 entropy: bool = False) -> list[list[float]] | tuple[list[list[float]], list[list[float]]]:
        """Per-token logprobs of each answer at the sampling temperature (on its behaviour prompt
        if `behaviour`), in forward chunks cut like the training micro-batches (answers and
        `max_tokens_per_micro_batch`). With `entropy`, also the per-token entropies."""
        self.model.eval()
        prompts = [(s.behaviour_prompt_ids or s.prompt_ids) if behaviour else s.prompt_ids for s in samples]
        chunks = cut_by_tokens([len(p) + len(s.response_ids) for p, s in zip(prompts, samples)],
                               self.algo.micro_batch_size, self.max_tokens)
        real = len(chunks)
        if self.fsdp:  # equal forward counts on every rank; the padding's results are dropped
            chunks = fsdp.pad_chunks(chunks)
        model = self.ref_model if (reference and self.ref_model is not None) else self.model
        ctx = self._ref_context() if (reference and self.ref_model is None) else nullcontext()
        out: list[list[float]] = []
        ent: list[list[float]] = []
        with ctx:
            for c, chunk in enumerate(chunks):
                responses = [samples[i].response_ids for i in chunk]
                lp_BT, ent_BT = answer_scores(model, [prompts[i] for i in chunk], responses, self.pad_id,
                                              self.temperature)
                if c < real:
                    out += [lp_BT[b, : len(r)].tolist() for b, r in enumerate(responses)]
                    ent += [ent_BT[b, : len(r)].tolist() for b, r in enumerate(responses)]
        return (out, ent) if entropy else out

    # ------------------------------------------------------------------ update

    def set_lr(self, step: int) -> float:
        lr = self.cfg.lr * schedule_multiplier(step, self.total_steps, self.cfg.schedule)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def train_step(self, samples: list[TrainSample], step: int, token_keep_frac: float | None = None) -> dict[str, float]:
        """One trainer step's update. `token_keep_frac` (D3S token level, METHODS 6): the policy
        loss of each mini-batch keeps only its top ceil(k * tokens) tokens by |A| * H (entropy of
        the current policy at the sampling temperature, over the whole mini-batch: see
        `minibatch_constants`); entropy bonus and KL still cover every token."""
        samples = [s for s in samples if s.response_ids]
        if not samples:
            return {}
        lr = self.set_lr(step)
        reuse = self.old_from_training_forward(samples)
        old = None if reuse else self.sharded_logprobs(samples, behaviour=True)
        fresh_old = [[] for _ in samples] if reuse else None  # filled by the training forward
        ref = self.sharded_logprobs(samples, reference=True) if self.algo.kl_coef > 0 else None
        norm_len = self.norm_len(samples)
        ppo_metrics: dict[str, float] = {}
        if self.critic is not None:  # PPO: per-token GAE advantages and returns from the critic
            samples, old_values, ppo_metrics = self.gae_samples(samples)
        skip = self.zero_advantage_skips(samples, token_keep_frac)
        probe_metrics = self._skip_probe(samples, skip, fresh_old if reuse else None)
        self.model.train()
        # PPO's critic warm-up: the first `critic_warmup` steps train only the critic.
        policy_epochs = 0 if self.critic is not None and step < self.algo.critic_warmup else self.algo.epochs
        steps = [self._optimizer_step(samples, mb, old, ref, norm_len, token_keep_frac, fresh_old, skip)
                 for mb in minibatches(len(samples), policy_epochs, self.algo.mini_batches, self.rng)]
        metrics = mean_of(steps)
        if skip:  # trained-answer means: over the optimizer steps that trained any answer
            for k in metrics:
                if k not in _WHOLE_MINIBATCH_METRICS:
                    present = [st[k] for st in steps if k in st]
                    metrics[k] = sum(present) / len(present)
            for k, v in probe_metrics.items():  # nothing trained at all: the probe's
                metrics.setdefault(k, v)
        metrics["lr"] = lr
        # Reused training forward: a skipped answer has no old logprobs ([]), so the parity metrics
        # below cover the trained answers only (or the probe above; TIS, which needs them all,
        # never reuses).
        old = fresh_old if reuse else old
        metrics.update(logprob_parity(samples, old))
        if self.algo.tis_cap is not None:
            metrics.update(tis_metrics(samples, old, self.algo.tis_cap))
        if self.critic is not None:
            self.critic.set_lr(lr / self.cfg.lr)  # the policy's schedule
            metrics.update(ppo_metrics)
            metrics.update(self.critic.train_step(samples, old_values, norm_len))
        return metrics

    def norm_len(self, samples: list[TrainSample]) -> int:
        """Dr.GRPO's constant normaliser: the generation limit (`response_limit`), the same every
        step; without one (or if an answer is longer), the step's longest answer."""
        longest = max(len(s.response_ids) for s in samples)
        return max(self.response_limit, longest) if self.response_limit else longest

    def old_from_training_forward(self, samples: list[TrainSample]) -> bool:
        """Fully on-policy (one optimizer step, no hinted answers, one rank, no LoRA dropout or
        critic): the old policy IS the current one, so old logprobs are the training forward's,
        detached (ratio 1, same gradient), instead of a separate forward pass; TRL does the same
        with num_iterations = 1. Anything else keeps the separate pass."""
        a = self.algo
        return (a.epochs * a.mini_batches == 1 and a.tis_cap is None and self.critic is None and not self.is_lora
                and dist_rank_world()[1] == 1 and not any(s.off_policy for s in samples))

    def _skip_probe(self, samples: list[TrainSample], skip: set[int],
                    fresh_old: list[list[float]] | None) -> dict[str, float]:
        """Keeps the metrics of a step whose training forward sees little: when it trains no
        answer at all, or (`fresh_old` given: old logprobs from the training forward) none with
        engine logprobs, score up to one micro-batch of the skipped answers without grad, at the
        pre-update weights. Their logprobs go to fresh_old (the parity metric); with nothing
        trained, returns their token-mean entropy and clip fractions 0 (no token trained, none
        clipped)."""
        nothing = bool(skip) and len(skip) == len(samples)
        no_parity = (fresh_old is not None and any(samples[i].rollout_logprobs for i in skip)
                     and not any(s.rollout_logprobs for i, s in enumerate(samples) if i not in skip))
        if not (nothing or no_parity):
            return {}
        probe = sorted(sorted(skip), key=lambda i: not samples[i].rollout_logprobs)[: self.algo.micro_batch_size]
        lps, ents = self.logprobs([samples[i] for i in probe], entropy=True)
        if fresh_old is not None:
            for i, lp in zip(probe, lps):
                fresh_old[i] = lp
        if not nothing:
            return {}
        mask = [_trained(samples[i]) for i in probe]
        ent = sum(float(torch.tensor(e)[m].sum()) for e, m in zip(ents, mask)) / max(1, sum(int(m.sum()) for m in mask))
        return {"entropy": ent, "clip_frac_low": 0.0, "clip_frac_high": 0.0}

    def zero_advantage_skips(self, samples: list[TrainSample], token_keep_frac: float | None = None) -> set[int]:
        """Indices of the answers the training forward/backward may leave out (see the module
        docstring): advantage exactly 0, one advantage per answer, on-policy; empty unless
        algo.skip_zero_advantage and no loss term or constant needs their logprobs (no KL, no
        entropy bonus, no D3S token selection, no critic) and the learner is not FSDP."""
        a = self.algo
        if not (getattr(a, "skip_zero_advantage", True) and a.kl_coef == 0 and a.entropy_coef == 0
                and token_keep_frac is None and self.critic is None and not self.fsdp):
            return set()
        return {i for i, s in enumerate(samples)
                if s.advantage == 0 and s.token_advantages is None and not s.off_policy}

    def gae_samples(self, samples: list[TrainSample]) -> tuple[list[TrainSample], list[list[float]], dict[str, float]]:
        """PPO: the critic's V_old per token, GAE from each answer's outcome reward, advantages
        whitened over the whole batch (all ranks see all samples). Returns the samples with
        `token_advantages` and `returns` set, V_old, and metrics."""
        old_values = self.critic.values(samples)
        T = max(len(s.response_ids) for s in samples)
        mask_BT = response_mask([len(s.response_ids) for s in samples], T)
        values_BT = pad_lists(old_values, T)
        rewards_BT = last_token_rewards(torch.tensor([s.reward for s in samples], dtype=torch.float32), mask_BT)
        adv_BT, returns_BT = gae_BT(rewards_BT, values_BT, mask_BT, self.algo.gamma, self.algo.lam)
        white_BT = masked_whiten(adv_BT, mask_BT)
        out = [dataclasses.replace(s, token_advantages=white_BT[b, : len(s.response_ids)].tolist(),
                                   returns=returns_BT[b, : len(s.response_ids)].tolist())
               for b, s in enumerate(samples)]
        n = mask_BT.sum()
        metrics = {"ppo/adv_mean": float((adv_BT * mask_BT).sum() / n),  # before whitening
                   "ppo/return_mean": float((returns_BT * mask_BT).sum() / n),
                   "critic/value_mean": float((values_BT * mask_BT).sum() / n),
                   "critic/explained_variance": explained_variance(values_BT, returns_BT, mask_BT)}
        return out, old_values, metrics

    def _optimizer_step(self, samples, indices, old, ref, norm_len, token_keep_frac=None,
                        fresh_old: list[list[float]] | None = None, skip: set[int] | None = None) -> dict[str, float]:
        """One AdamW step on the mini-batch `indices`. With old None (fully on-policy), each
        answer's training-forward logprobs are written to fresh_old[i] as its old logprobs.
        `skip` (`zero_advantage_skips`): answers left out of the forward/backward, still counted in
        the denominator; the step is taken even if nothing is left (zero gradients)."""
        self.optimizer.zero_grad(set_to_none=True)
        totals: dict[str, float] = {}
        rank, world = dist_rank_world()
        skipped = [i for i in shard(indices, rank, world) if i in skip] if skip else []  # this rank's
        micro_batches = weighted_micro_batches(samples, indices, self.algo.micro_batch_size, self.algo.loss_agg,
                                               self.max_tokens, skip=set(skipped))
        if self.fsdp:  # equal forward/backward counts on every rank
            micro_batches = fsdp.pad_micro_batches(micro_batches, indices)
        # (with skipped answers: no D3S, and off-policy answers are never skipped, so gamma is the same)
        fixed = self.minibatch_constants(samples, indices, old, token_keep_frac, len(micro_batches))
        trained = 0.0  # the forwarded answers' share of the mini-batch denominator
        for micro, weight in micro_batches:
            part = [samples[i] for i in micro]
            forward_logprobs: list[list[float]] = []
            loss, stats = self._micro_loss(part, [old[i] for i in micro] if old is not None else None,
                                           [ref[i] for i in micro] if ref else None, norm_len, token_keep_frac,
                                           logprobs_out=forward_logprobs,
                                           fixed=None if fixed is None else fixed.for_micro(micro))
            if old is None:  # the training forward's logprobs are this step's old logprobs
                for i, lp in zip(micro, forward_logprobs):
                    fresh_old[i] = lp
            (loss * weight).backward()
            if weight == 0:  # FSDP padding: no metrics
                continue
            trained += weight
            for k, v in stats.items():
                totals[k] = totals.get(k, 0.0) + float(v) * weight
        params = [p for p in self.model.parameters() if p.requires_grad]
        if skipped and not micro_batches:  # everything skipped: the gradient is exactly 0, still a step
            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
        if not self.fsdp:  # FSDP's backward already reduce-scattered the summed gradients
            sum_grads(params)
        if skip is not None:
            totals["learner/skipped_answers_frac"] = len(skipped) / len(indices)
            totals["_trained_weight"] = trained
        totals = sum_across_ranks(totals)  # each rank holds its shard's weighted share
        trained = totals.pop("_trained_weight", 1.0)
        if totals.get("learner/skipped_answers_frac", 0.0) > 0:
            # Skipped answers add exactly 0 to the loss sums; the other metrics become means over
            # the trained answers (renormalised by their share), absent when none was trained.
            totals = {k: v if k in _WHOLE_MINIBATCH_METRICS else v / trained
                      for k, v in totals.items() if k in _WHOLE_MINIBATCH_METRICS or trained > 0}
            totals.setdefault("policy_loss", 0.0)
            totals.setdefault("loss", 0.0)
        totals["grad_norm"] = fsdp.as_float(torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip))
        self.optimizer.step()
        return totals

    @torch.no_grad()
    def minibatch_constants(self, samples: list[TrainSample], indices: list[int], old: list[list[float]] | None,
                            token_keep_frac: float | None, n_micro: int) -> "MiniBatchConstants | None":
        """Guide-GRPO's gamma (quantile of the off-policy ratios) and D3S's kept tokens (top |A| * H)
        over the WHOLE mini-batch `indices`, before its gradient passes, so that any cut into
        micro-batches or ranks takes the step of one forward over the mini-batch.

        A no-grad pre-pass: each rank scores its shard of the mini-batch (current logprobs and
        entropies, at the sampling temperature), the shards are all-gathered, and every rank
        derives the same constants. Skipped (None) when neither is needed, or when one forward on
        one rank covers the mini-batch (`_micro_loss` then computes them itself, no extra pass).
        """
        d3s = token_keep_frac is not None and token_keep_frac < 1
        off = any(samples[i].off_policy for i in indices)
        rank, world = dist_rank_world()
        if not (d3s or off) or (world == 1 and n_micro == 1):
            return None
        mine = [samples[i] for i in shard(indices, rank, world)]
        n_mine = len(mine)
        if self.fsdp:  # equal forward counts on every rank
            mine = fsdp.pad_shard(mine, [samples[i] for i in indices])
        lp, ent = self.logprobs(mine, entropy=True) if mine else ([], [])
        self.model.train()  # logprobs() switched to eval
        lp, ent = all_gather_list(lp[:n_mine]), all_gather_list(ent[:n_mine])  # in `indices` order
        keep = None
        if d3s:
            lens = [len(samples[i].response_ids) for i in indices]
            T = max(lens)
            mask_BT = policy_mask([samples[i] for i in indices], T)
            if samples[indices[0]].token_advantages is not None:  # PPO: per-token advantages
                adv = pad_lists([samples[i].token_advantages for i in indices], T)
            else:
                adv = torch.tensor([samples[i].advantage for i in indices], dtype=torch.float32)
            keep_BT = d3s_token_mask(adv, pad_lists(ent, T), mask_BT, token_keep_frac)
            keep = {i: keep_BT[k, : lens[k]].tolist() for k, i in enumerate(indices)}
            kept, total = float(keep_BT.sum()), float(mask_BT.sum())
        gamma = None
        if off:  # exp(logp - old) of every off-policy token the loss trains (D3S: the kept ones)
            ratios = torch.cat([(torch.tensor(lp[k]) - torch.tensor(old[i])).exp()[
                                    _trained(samples[i], keep[i] if keep else None)]
                                for k, i in enumerate(indices) if samples[i].off_policy])
            gamma = offpolicy_gamma(ratios) if ratios.numel() else None
        return MiniBatchConstants(gamma, keep, kept if d3s else 0.0, total if d3s else 0.0)

    def sharded_logprobs(self, samples: list[TrainSample], **kwargs) -> list[list[float]]:
        """`logprobs` of all samples, each rank computing a contiguous shard, then all-gathered."""
        rank, world = dist_rank_world()
        if world == 1:
            return self.logprobs(samples, **kwargs)
        bounds = shard(list(range(len(samples))), rank, world)
        if self.fsdp:  # equal forward counts: pad, then drop the padding's results
            mine = self.logprobs(fsdp.pad_shard([samples[i] for i in bounds], samples), **kwargs)[: len(bounds)]
        else:
            mine = self.logprobs([samples[i] for i in bounds], **kwargs) if bounds else []
        parts: list = [None] * world
        torch.distributed.all_gather_object(parts, mine)
        return [lp for part in parts for lp in part]

    @torch.no_grad()
    def broadcast_parameters(self) -> None:
        """Start every rank from rank 0's weights (guards against any nondeterministic init)."""
        for p in self.model.parameters():
            torch.distributed.broadcast(p.data, src=0)

    def _micro_loss(self, part: list[TrainSample], old: list[list[float]] | None, ref: list[list[float]] | None,
                    norm_len: int, token_keep_frac: float | None = None,
                    logprobs_out: list[list[float]] | None = None,
                    fixed: "MicroConstants | None" = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss of one micro-batch. `fixed` (from `minibatch_constants`) carries the mini-batch's
        gamma and D3S kept tokens; without it they are computed over this micro-batch alone."""
        dev = self.device
        a = self.algo
        responses = [s.response_ids for s in part]
        # Logits only at answer positions, chunked; entropy differentiable only for the bonus.
        logprobs_BT, entropy_BT = answer_scores(self.model, [s.prompt_ids for s in part], responses, self.pad_id,
                                                self.temperature, entropy_grad=a.entropy_coef != 0)
        T = logprobs_BT.shape[1]
        mask_BT = policy_mask(part, T).to(dev)  # tool-output tokens (multi-turn) are not trained on
        # old None: fully on-policy, the current policy is the old one (see old_from_training_forward)
        old_BT = logprobs_BT.detach() if old is None else pad_lists(old, T).to(dev)
        if logprobs_out is not None:
            logprobs_out += [logprobs_BT[b, : len(r)].tolist() for b, r in enumerate(responses)]
        if part[0].token_advantages is not None:  # PPO: per-token GAE advantages, [B, T]
            adv = pad_lists([s.token_advantages for s in part], T).to(dev)
        else:  # GRPO family: one per answer, [B]
            adv = torch.tensor([s.advantage for s in part], dtype=torch.float32, device=dev)
        off_B = torch.tensor([s.off_policy for s in part], dtype=torch.bool, device=dev)
        is_weight_BT = None
        if a.tis_cap is not None:
            rollout_BT = pad_lists(rollout_rows(part, old), T).to(dev)
            is_weight_BT = truncated_is_weights(old_BT, rollout_BT, mask_BT, a.tis_cap)
        pg_mask_BT = mask_BT
        d3s = token_keep_frac is not None and token_keep_frac < 1
        if d3s and fixed is not None and fixed.keep is not None:  # the mini-batch's top |A| * H tokens
            pg_mask_BT = mask_BT * pad_lists(fixed.keep, T).to(dev)
        elif d3s:  # D3S over this micro-batch, which is the whole mini-batch here
            pg_mask_BT = d3s_token_mask(adv, entropy_BT.detach(), mask_BT, token_keep_frac)
        pg_loss, stats = policy_loss(logprobs_BT, old_BT, adv, pg_mask_BT, a.clip_low, a.clip_high, a.loss_agg,
                                     offpolicy_B=off_B, norm_len=norm_len, is_weight_BT=is_weight_BT,
                                     gamma=None if fixed is None else fixed.gamma)
        if token_keep_frac is not None:
            kept_frac = pg_mask_BT.sum() / mask_BT.sum().clamp(min=1)
            if d3s and fixed is not None and fixed.keep is not None:
                kept_frac = torch.tensor(fixed.kept / max(fixed.total, 1.0))  # the mini-batch's (weights sum to 1)
                if a.loss_agg == "token-mean" and float(pg_mask_BT.sum()) > 0:
                    # token-mean over the mini-batch's kept tokens: this micro-batch's weight is its
                    # share of all tokens, its loss a mean over its kept ones; rescale to kept/kept_total.
                    pg_loss = pg_loss * (pg_mask_BT.sum() / mask_BT.sum()) * (fixed.total / fixed.kept)
            stats["d3s/tokens_kept_frac"] = kept_frac
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
        """Full HF-named CPU weights for rollout engines (LoRA merged into a copy).
        FSDP: collective; rank 0 gets them, the other ranks []."""
        if self.fsdp:
            return list(fsdp.full_state_dict(self.model).items())
        if self.is_lora:
            merged = copy.deepcopy(self.model).merge_and_unload()
            state = merged.state_dict()
        else:
            state = self.model.state_dict()
        return [(k, v.detach().to("cpu", copy=True)) for k, v in state.items()]

    def save_checkpoint(self, path: str) -> None:
        """Trainable weights (all, or LoRA adapters), optimizer and RNG, plus an HF model dir
        (and for PPO the critic: weights, optimizer, RNG in critic.pt).
        FSDP: collective (full tensors gathered to rank 0, which writes); the optimizer state is
        keyed by parameter name, so such a checkpoint loads only under FSDP."""
        if self.fsdp:
            trainable = fsdp.full_state_dict(self.model)
            optimizer = fsdp.full_optimizer_state(self.model, self.optimizer)
        else:
            trainable = {n: p.detach().cpu() for n, p in self.model.named_parameters() if p.requires_grad}
            optimizer = self.optimizer.state_dict()
        critic = self.critic.state_dict() if self.critic is not None else None
        if dist_rank_world()[0] != 0:
            return
        torch.save({"trainable": trainable, "optimizer": optimizer,
                    "rng": self.rng.getstate(), "torch_rng": torch.get_rng_state()}, f"{path}/learner.pt")
        if critic is not None:
            torch.save(critic, f"{path}/critic.pt")
        if self.fsdp:
            self.model.save_pretrained(f"{path}/model", state_dict=fsdp.without_tied_copies(self.model, trainable))
            self.tokenizer.save_pretrained(f"{path}/model")
        else:
            self.save_pretrained(f"{path}/model")

    def load_checkpoint(self, path: str) -> None:
        state = torch.load(f"{path}/learner.pt", weights_only=False)
        if self.fsdp:  # every rank reads the full tensors and keeps its shard
            fsdp.load_full_state_dict(self.model, state["trainable"])
            fsdp.load_optimizer_state(self.model, self.optimizer, state["optimizer"])
        else:
            self._load_trainable(state["trainable"])
            self.optimizer.load_state_dict(state["optimizer"])
        self.rng.setstate(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        if self.critic is not None:
            self.critic.load_state_dict(torch.load(f"{path}/critic.pt", weights_only=False))

    def _load_trainable(self, trainable: dict[str, torch.Tensor]) -> None:
        missing = set(trainable) - {n for n, _ in self.model.named_parameters()}
        if missing:
            raise ValueError(f"checkpoint has parameters this model lacks: {sorted(missing)[:3]}")
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for n, t in trainable.items():
                params[n].copy_(t)

    def parameter_checksum(self) -> float:
        """Sum of |w| over all parameters (FSDP: over the full tensors, collective)."""
        if self.fsdp:
            return fsdp.full_checksum(self.model)
        return float(sum(p.detach().double().abs().sum() for p in self.model.parameters()))

    def save_pretrained(self, path: str) -> None:
        model = copy.deepcopy(self.model).merge_and_unload() if self.is_lora else self.model
        model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)


# Metrics that stay the whole mini-batch's when zero-advantage answers are skipped (they add
# exactly 0 to the loss); the rest become means over the trained answers.
_WHOLE_MINIBATCH_METRICS = ("policy_loss", "loss", "learner/skipped_answers_frac")


@dataclasses.dataclass
class MicroConstants:
    """A micro-batch's view of `MiniBatchConstants`: gamma, its answers' D3S keep rows, and the
    mini-batch's kept / total token counts."""

    gamma: float | None
    keep: list[list[float]] | None
    kept: float
    total: float


@dataclasses.dataclass
class MiniBatchConstants:
    """Per-mini-batch constants fixed before the gradient passes (`Learner.minibatch_constants`)."""

    gamma: float | None
    keep: dict[int, list[float]] | None  # sample index -> 1/0 per answer token
    kept: float
    total: float

    def for_micro(self, micro: list[int]) -> MicroConstants:
        keep = [self.keep[i] for i in micro] if self.keep is not None else None
        return MicroConstants(self.gamma, keep, self.kept, self.total)


def _trained(sample: TrainSample, keep: list[float] | None = None) -> torch.Tensor:
    """Bool mask over a sample's answer tokens that the loss trains: not tool output (multi-turn),
    and kept by D3S when `keep` is given."""
    mask = policy_mask([sample], len(sample.response_ids))[0].bool()
    if keep is not None:
        mask &= torch.tensor(keep) > 0
    return mask


def logprob_parity(samples: list[TrainSample], learner_logprobs: list[list[float]]) -> dict[str, float]:
    """Engine sampling logprobs vs the learner's recomputation of the same tokens (same weights);
    tool-output tokens (multi-turn) have no engine logprob and are left out."""
    diffs = [abs(a - b) for s, lp in zip(samples, learner_logprobs) if s.rollout_logprobs
             for a, b, tool in zip(s.rollout_logprobs, lp, s.tool_mask or [False] * len(lp)) if not tool]
    if not diffs:
        return {}
    return {"rollout/logprob_abs_diff_mean": sum(diffs) / len(diffs), "rollout/logprob_abs_diff_max": max(diffs)}


def rollout_rows(samples: list[TrainSample], old: list[list[float]]) -> list[list[float]]:
    """Engine logprobs per answer; an answer without them (or with a mismatched count) uses its
    old logprobs instead, i.e. importance weight 1."""
    return [s.rollout_logprobs if len(s.rollout_logprobs) == len(s.response_ids) else o
            for s, o in zip(samples, old)]


def tis_metrics(samples: list[TrainSample], old: list[list[float]], cap: float) -> dict[str, float]:
    """Token-mean of the truncated IS weights over the whole batch, and the share that hit the cap.
    (Weights depend only on old and engine logprobs, so they are fixed for the whole step.)"""
    T = max(len(s.response_ids) for s in samples)
    mask_BT = policy_mask(samples, T)
    w_BT = truncated_is_weights(pad_lists(old, T), pad_lists(rollout_rows(samples, old), T), mask_BT, cap)
    n = mask_BT.sum()
    return {"tis/weight_mean": float(w_BT.sum() / n), "tis/clipped_frac": float(((w_BT >= cap) * mask_BT).sum() / n)}
