#!/usr/bin/python3
"""add_weighted_adapter goldens for peft4j: two LoRA adapters (q_proj, v_proj of the tiny Llama
../../models/golden/llama-gqa-llama3rope; r 4, alpha 8 and 4, so scalings 2 and 1) combined with weights [0.7, -0.4].

Run with Debian's python3-torch (torch 1.13, no PEFT): `cd weighted && /usr/bin/python3 make_goldens.py`.

PEFT's LoraModel.add_weighted_adapter (peft/tuners/lora/model.py) and merge_utils (peft/utils/merge_utils.py) are
restated with plain torch ops, independently of peft4j's Java code:
  * cat: A = cat(w_i*s_i*A_i, dim 0), B = cat(B_i, dim 1);
  * linear / ties / magnitude_prune: A combined with sign(w_i*s_i)*sqrt(|w_i*s_i|), B with sqrt(|w_i*s_i|);
    ties prunes each tensor to its int(density*numel) largest magnitudes, elects the sign per entry from the sum of
    the pruned (unweighted) tensors, and averages the weighted entries of that sign; magnitude_prune prunes and sums;
  * svd / ties_svd: the delta weights get_delta_weight_i = B_i@A_i*s_i, weighted by w_i*s_i (PEFT's double scaling),
    summed (or ties-merged), factored by torch.linalg.svd: B = U[:, :r] @ diag(S[:r]), A = Vh[:r]. The factors are
    unique only up to signs, so the golden is the new delta B@A (the new adapter's alpha = r: scaling 1).
golden.safetensors holds, per combination type and module, `<type>/<module>/A` and `/B` (or `/delta` for the svd
types); a/ and b/ are the two source adapters (PEFT's checkpoint layout).
"""
import json
import math
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(HERE, "..", "..", "models", "golden")
sys.path.insert(0, MODELS)
import gen_goldens as gg  # noqa: E402

g = torch.Generator().manual_seed(1919)
WEIGHTS = [0.7, -0.4]
DENSITY = 0.5


def adapter(name, alpha, sd, cfg):
    out = {}
    for l in range(cfg["num_hidden_layers"]):
        for proj in ("q_proj", "v_proj"):
            p = "model.layers.%d.self_attn.%s" % (l, proj)
            o, i = sd[p + ".weight"].shape
            out[p] = (torch.randn(4, i, generator=g) * 0.3, torch.randn(o, 4, generator=g) * 0.3)
    d = os.path.join(HERE, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "adapter_config.json"), "w") as f:
        json.dump({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4, "lora_alpha": alpha, "lora_dropout": 0.0,
                   "target_modules": ["q_proj", "v_proj"], "bias": "none", "fan_in_fan_out": False,
                   "init_lora_weights": True, "inference_mode": True, "base_model_name_or_path": None}, f,
                  indent=2, sort_keys=True)
    gg.save_safetensors(os.path.join(d, "adapter_model.safetensors"),
                        {k: v for p, (a, b) in out.items()
                         for k, v in (("base_model.model." + p + ".lora_A.weight", a),
                                      ("base_model.model." + p + ".lora_B.weight", b))})
    return out


def prune(t, density):
    mask = torch.zeros_like(t).reshape(-1)
    k = int(density * t.numel())
    mask[torch.topk(t.abs().reshape(-1), k=k, largest=True)[1]] = 1
    return t * mask.reshape(t.shape)


def combine(kind, tensors, weights):
    if kind in ("ties", "magnitude_prune"):
        tensors = [prune(t, DENSITY) for t in tensors]
    stacked = torch.stack(tensors, dim=0)
    w = torch.tensor(weights).view((-1,) + (1,) * (stacked.dim() - 1))
    weighted = stacked * w
    if kind != "ties":
        return weighted.sum(dim=0)
    sign = stacked.sign()
    majority = torch.where(stacked.sum(dim=0) >= 0, 1, -1)
    mask = sign == majority
    return (weighted * mask).sum(dim=0) / torch.clamp(mask.sum(dim=0), min=1.0)


def main():
    d = os.path.join(MODELS, "llama-gqa-llama3rope")
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    sd = gg.load_safetensors(os.path.join(d, "model.safetensors"))
    srcs = [adapter("a", 8, sd, cfg), adapter("b", 4, sd, cfg)]
    scalings = [8 / 4, 4 / 4]
    golden = {}
    for p in srcs[0]:
        A = [s[p][0] for s in srcs]
        B = [s[p][1] for s in srcs]
        ws = [w * s for w, s in zip(WEIGHTS, scalings)]
        golden["cat/%s/A" % p] = torch.cat([a * w for a, w in zip(A, ws)], dim=0)
        golden["cat/%s/B" % p] = torch.cat(B, dim=1)
        wa = [math.sqrt(abs(w)) * (1 if w >= 0 else -1) for w in ws]
        wb = [math.sqrt(abs(w)) for w in ws]
        for kind in ("linear", "ties", "magnitude_prune"):
            golden["%s/%s/A" % (kind, p)] = combine(kind, A, wa)
            golden["%s/%s/B" % (kind, p)] = combine(kind, B, wb)
        deltas = [b @ a * s for a, b, s in zip(A, B, scalings)]
        for kind in ("svd", "ties_svd"):
            delta = combine("linear" if kind == "svd" else "ties", deltas, ws)
            U, S, Vh = torch.linalg.svd(delta, full_matrices=True)
            golden["%s/%s/delta" % (kind, p)] = (U[:, :4] @ torch.diag(S[:4])) @ Vh[:4, :]
    gg.save_safetensors(os.path.join(HERE, "golden.safetensors"), golden)
    print(len(golden), "tensors")


if __name__ == "__main__":
    main()
