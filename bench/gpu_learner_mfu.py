"""GPU learner throughput: tokens/s and model FLOPs utilisation (MFU) of one training step
(forward + backward + AdamW) of a Qwen2-0.5B-shaped decoder, random init, bf16. Needs only torch.

The model is Qwen2-0.5B's shape written in plain torch: hidden 896, 24 layers, 14 query heads
and 2 key/value heads of 64 dims (grouped-query attention), SwiGLU MLP 4864, vocab 151936,
tied input/output embeddings, RMSNorm, rotary positions, q/k/v biases; attention is
F.scaled_dot_product_attention (causal). Parameters, gradients and AdamW states are bf16 (no
fp32 master copy: a pure-bf16 learner, the simplest fast setting, not a recipe for accuracy).
Left out: dropout, the KV cache, sliding windows, anything an RL loss adds on top of
cross-entropy (the learner's policy loss costs the same matmuls as cross-entropy).

FLOPs per trained token (PaLM appendix B convention, no discount for the causal mask):
    6 * N  +  12 * L * H * d_head * S
N = every parameter that takes part in a matmul = all parameters (with tied embeddings the
embedding matrix is the LM head's matmul; the input lookup itself is free, biases and norms are
counted though they are not matmuls, < 0.1 % of N), L layers, H query heads of d_head dims,
S tokens per sequence. MFU = FLOPs per token * tokens/s / peak, with peak the GPU's dense bf16
tensor-core rate (H100/H200 SXM: 989e12; 'auto' reads the device name). Also printed: the MFU
with the 6N term alone.

    python bench/gpu_learner_mfu.py                      # on a GPU: batch 4 x 2048 tokens
    python bench/gpu_learner_mfu.py --cpu-smoke          # tiny model, CPU, checks the code runs
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "H800": 989e12, "A100": 312e12, "A800": 312e12, "L40S": 362e12,
             "L4": 121e12, "A10": 125e12, "B200": 2250e12}  # dense bf16 tensor-core FLOP/s (SXM parts)


@dataclass
class Shape:
    hidden: int = 896
    layers: int = 24
    heads: int = 14
    kv_heads: int = 2
    mlp: int = 4864
    vocab: int = 151936
    rope_theta: float = 1e6
    eps: float = 1e-6

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


SMOKE = Shape(hidden=64, layers=2, heads=4, kv_heads=2, mlp=128, vocab=1000)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(dim)), eps

    def forward(self, x_BTD):
        var = x_BTD.float().pow(2).mean(-1, keepdim=True)
        return (x_BTD.float() * torch.rsqrt(var + self.eps)).to(x_BTD.dtype) * self.weight


def rope_tables(seq: int, head_dim: int, theta: float, device, dtype):
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    ang_TD = torch.outer(torch.arange(seq, device=device, dtype=torch.float32), inv).repeat(1, 2)
    return ang_TD.cos().to(dtype), ang_TD.sin().to(dtype)


def apply_rope(x_BHTD, cos_TD, sin_TD):
    half = x_BHTD.shape[-1] // 2
    rotated = torch.cat([-x_BHTD[..., half:], x_BHTD[..., :half]], dim=-1)
    return x_BHTD * cos_TD + rotated * sin_TD


class Block(nn.Module):
    def __init__(self, s: Shape):
        super().__init__()
        self.s = s
        self.norm1, self.norm2 = RMSNorm(s.hidden, s.eps), RMSNorm(s.hidden, s.eps)
        self.q = nn.Linear(s.hidden, s.heads * s.head_dim, bias=True)
        self.k = nn.Linear(s.hidden, s.kv_heads * s.head_dim, bias=True)
        self.v = nn.Linear(s.hidden, s.kv_heads * s.head_dim, bias=True)
        self.o = nn.Linear(s.heads * s.head_dim, s.hidden, bias=False)
        self.gate = nn.Linear(s.hidden, s.mlp, bias=False)
        self.up = nn.Linear(s.hidden, s.mlp, bias=False)
        self.down = nn.Linear(s.mlp, s.hidden, bias=False)

    def forward(self, x_BTD, cos_TD, sin_TD):
        B, T, _ = x_BTD.shape
        s = self.s
        h = self.norm1(x_BTD)
        q_BHTD = self.q(h).view(B, T, s.heads, s.head_dim).transpose(1, 2)
        k_BKTD = self.k(h).view(B, T, s.kv_heads, s.head_dim).transpose(1, 2)
        v_BKTD = self.v(h).view(B, T, s.kv_heads, s.head_dim).transpose(1, 2)
        q_BHTD, k_BKTD = apply_rope(q_BHTD, cos_TD, sin_TD), apply_rope(k_BKTD, cos_TD, sin_TD)
        # grouped-query attention: each key/value head serves heads / kv_heads query heads
        k_BHTD = k_BKTD.repeat_interleave(s.heads // s.kv_heads, dim=1)
        v_BHTD = v_BKTD.repeat_interleave(s.heads // s.kv_heads, dim=1)
        a_BHTD = F.scaled_dot_product_attention(q_BHTD, k_BHTD, v_BHTD, is_causal=True)
        x_BTD = x_BTD + self.o(a_BHTD.transpose(1, 2).reshape(B, T, -1))
        h = self.norm2(x_BTD)
        return x_BTD + self.down(F.silu(self.gate(h)) * self.up(h))


class Decoder(nn.Module):
    def __init__(self, s: Shape):
        super().__init__()
        self.s = s
        self.embed = nn.Embedding(s.vocab, s.hidden)
        self.blocks = nn.ModuleList(Block(s) for _ in range(s.layers))
        self.norm = RMSNorm(s.hidden, s.eps)
        for m in self.modules():  # Qwen2's initializer_range: the loss starts near ln(vocab)
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, ids_BT):
        cos_TD, sin_TD = rope_tables(ids_BT.shape[1], self.s.head_dim, self.s.rope_theta, ids_BT.device,
                                     self.embed.weight.dtype)
        x_BTD = self.embed(ids_BT)
        for block in self.blocks:
            x_BTD = block(x_BTD, cos_TD, sin_TD)
        return self.norm(x_BTD) @ self.embed.weight.T  # tied LM head


def flops_per_token(s: Shape, n_params: int, seq: int) -> tuple[float, float]:
    """(6N, attention term 12 * L * H * d_head * S) per trained token; see the module docstring."""
    return 6.0 * n_params, 12.0 * s.layers * s.heads * s.head_dim * seq


def peak_flops(arg: str, device: torch.device) -> float | None:
    if arg != "auto":
        return float(arg)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key in sorted(PEAK_BF16, key=len, reverse=True):  # "H100" before "H10"-like prefixes
        if key in name:
            return PEAK_BF16[key]
    return None


def train_step(model, opt, ids_BT):
    logits_BTV = model(ids_BT[:, :-1])
    loss = F.cross_entropy(logits_BTV.float().flatten(0, 1), ids_BT[:, 1:].flatten())
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(shape: Shape, batch: int, seq: int, steps: int, warmup: int, device: torch.device, dtype,
            compile_model: bool = False, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = Decoder(shape).to(device=device, dtype=dtype)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.0,
                            fused=device.type == "cuda")
    step = torch.compile(train_step) if compile_model else train_step
    # seq + 1 tokens per row: the model reads seq tokens and predicts the next of each
    ids_BT = torch.randint(0, shape.vocab, (batch, seq + 1), device=device)
    for _ in range(warmup):
        step(model, opt, ids_BT)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step(model, opt, ids_BT)
    sync(device)
    seconds = time.perf_counter() - t0
    tokens_per_s = batch * seq * steps / seconds
    dense, attn = flops_per_token(shape, n_params, seq)
    out = {"params": n_params, "batch": batch, "seq": seq, "steps": steps, "seconds": seconds,
           "s_per_step": seconds / steps, "tokens_per_s": tokens_per_s, "flops_per_token_6N": dense,
           "flops_per_token_attn": attn, "achieved_flops": (dense + attn) * tokens_per_s,
           "loss": float(loss.detach())}
    if device.type == "cuda":
        out["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--peak", default="auto", help="peak dense bf16 FLOP/s, or 'auto' from the GPU name")
    p.add_argument("--compile", action="store_true", help="torch.compile the training step")
    p.add_argument("--cpu-smoke", action="store_true", help="tiny model on CPU: checks that the code runs")
    p.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "results" / "gpu_learner_mfu.json",
                   help="where the result is written (not with --cpu-smoke)")
    args = p.parse_args(argv)

    if args.cpu_smoke:
        shape, device, dtype = SMOKE, torch.device("cpu"), torch.bfloat16
        args.batch, args.seq, args.steps, args.warmup = 2, 32, 2, 1
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: run on a GPU, or pass --cpu-smoke")
        shape, device, dtype = Shape(), torch.device("cuda"), torch.bfloat16

    r = measure(shape, args.batch, args.seq, args.steps, args.warmup, device, dtype, args.compile)
    peak = peak_flops(args.peak, device)
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {dev_name}, torch {torch.__version__}, dtype {str(dtype).removeprefix('torch.')}")
    print(f"model: {r['params'] / 1e6:.1f}M parameters {asdict(shape)}")
    print(f"batch {r['batch']} x seq {r['seq']}, {r['steps']} timed steps after {args.warmup} warm-up: "
          f"{r['s_per_step'] * 1e3:.1f} ms/step, loss {r['loss']:.3f}"
          + (f", peak memory {r['max_memory_gib']:.1f} GiB" if "max_memory_gib" in r else ""))
    print(f"FLOPs/token = 6N + 12*L*H*d_head*S = {r['flops_per_token_6N']:.3e} + {r['flops_per_token_attn']:.3e}")
    print(f"tokens/s = {r['tokens_per_s']:,.0f}")
    print(f"achieved = {r['achieved_flops'] / 1e12:.1f} TFLOP/s")
    if peak:
        r["peak_flops"] = peak
        r["mfu"] = r["achieved_flops"] / peak
        r["mfu_6N_only"] = r["flops_per_token_6N"] * r["tokens_per_s"] / peak
        print(f"MFU = {100 * r['mfu']:.1f}% (6N only: {100 * r['mfu_6N_only']:.1f}%) of {peak / 1e12:.0f} TFLOP/s")
    else:
        print("MFU: n/a (unknown peak; pass --peak FLOP/s)")
    r.update(device=dev_name, torch=torch.__version__, shape=asdict(shape), compile=args.compile)
    r["command"] = "python bench/gpu_learner_mfu.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if not args.cpu_smoke:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(r, indent=2) + "\n")
        print(f"wrote {args.json}")
    return r


if __name__ == "__main__":
    main()
