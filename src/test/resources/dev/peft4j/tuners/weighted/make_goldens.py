#!/usr/bin/python3
"""add_weighted_adapter goldens for peft4j, weights [0.7, -0.4], density 0.5, majority sign "total":
  * a/, b/: two LoRA adapters on q_proj, v_proj (Linear) of the tiny Llama ../../models/golden/llama-gqa-llama3rope,
    r 4, alpha 8 and 4 (scalings 2 and 1);
  * conv1d_a/, conv1d_b/: the same on c_attn (transformers' Conv1D, weight (in, out), fan_in_fan_out) of
    ../../models/golden/gpt2-tied;
  * emb_a/, emb_b/: the same on embed_tokens (lora_embedding_A (r, vocab), lora_embedding_B (hidden, r)) of the Llama;
  * dora_a/: a/'s factors with use_dora and a magnitude vector.

Run with Debian's python3-torch (torch 1.13, no PEFT): `cd weighted && /usr/bin/python3 make_goldens.py`.

PEFT's LoraModel.add_weighted_adapter (peft/tuners/lora/model.py) and merge_utils (peft/utils/merge_utils.py) are
restated with plain torch ops, independently of peft4j's Java code:
  * cat: A = cat(w_i*s_i*A_i, dim 0), B = cat(B_i, dim 1);
  * linear / ties / magnitude_prune / dare_linear / dare_ties: A combined with sign(w_i*s_i)*sqrt(|w_i*s_i|), B with
    sqrt(|w_i*s_i|); ties prunes each tensor to its int(density*numel) largest magnitudes, elects the sign per entry
    from the sum of the pruned (unweighted) tensors, and averages the weighted entries of that sign; magnitude_prune
    prunes and sums; the dare types prune at random (tensor * bernoulli(density) / density), then sum (dare_linear)
    or elect and average as ties does (dare_ties);
  * the *svd types: the delta weights get_delta_weight_i (B_i@A_i*s_i, transposed for Conv1D and Embedding), weighted
    by w_i*s_i (PEFT's double scaling), merged as above, transposed back for Conv1D and Embedding, factored by
    torch.linalg.svd: B = U[:, :r] @ diag(S[:r]), A = Vh[:r]. The factors are unique only up to signs, so the golden
    is the new delta B@A (the new adapter's alpha = r: scaling 1).
  * DoRA: the new adapter copies the first adapter's config, so it is a DoRA adapter when dora_a comes first; its
    magnitude is the one a fresh DoRA adapter starts with, ||W + s*B0@A0|| per output row, with B0 = 0
    (init_lora_weights true): the row norms of W. The sources' magnitudes are not used.
golden.safetensors holds, per combination type and module, `<type>/<module>/A` and `/B` (or `/delta` for the svd
types); for the dare types also the Bernoulli masks drawn, `<type>/<module>/mask<i>`, in PEFT's order (the A of each
adapter then the B of each; for the svd types the delta weight of each, in get_delta_weight's layout); and
`dora/<module>/magnitude`.
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
g2 = torch.Generator().manual_seed(2019)  # the adapters added after a/ and b/ (which keep their draws)
gm = torch.Generator().manual_seed(7)  # the dare masks
WEIGHTS = [0.7, -0.4]
DENSITY = 0.5
TYPES = ["cat", "linear", "ties", "magnitude_prune", "dare_linear", "dare_ties",
         "svd", "ties_svd", "magnitude_prune_svd", "dare_linear_svd", "dare_ties_svd"]


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


def save_adapter(name, cfg_extra, tensors):
    d = os.path.join(HERE, name)
    os.makedirs(d, exist_ok=True)
    cfg = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4, "lora_dropout": 0.0, "bias": "none",
           "fan_in_fan_out": False, "init_lora_weights": True, "inference_mode": True,
           "base_model_name_or_path": None}
    cfg.update(cfg_extra)
    with open(os.path.join(d, "adapter_config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
    gg.save_safetensors(os.path.join(d, "adapter_model.safetensors"), tensors)


def drawn_adapter(name, alpha, shapes, target, embedding=False, fan_in_fan_out=False):
    """shapes: module -> (A shape, B shape); PEFT's checkpoint keys (lora_embedding_A/B carry no .weight)."""
    out = {p: (torch.randn(*sa, generator=g2) * 0.3, torch.randn(*sb, generator=g2) * 0.3)
           for p, (sa, sb) in shapes.items()}
    ka, kb = ("lora_embedding_A", "lora_embedding_B") if embedding else ("lora_A.weight", "lora_B.weight")
    save_adapter(name, {"lora_alpha": alpha, "target_modules": [target], "fan_in_fan_out": fan_in_fan_out},
                 {k: v for p, (a, b) in out.items()
                  for k, v in (("base_model.model.%s.%s" % (p, ka), a), ("base_model.model.%s.%s" % (p, kb), b))})
    return out


def prune(t, density):
    mask = torch.zeros_like(t).reshape(-1)
    k = int(density * t.numel())
    mask[torch.topk(t.abs().reshape(-1), k=k, largest=True)[1]] = 1
    return t * mask.reshape(t.shape)


def combine(kind, tensors, weights, masks):
    """merge_utils' task_arithmetic / ties / magnitude_prune / dare_linear / dare_ties; the dare masks drawn are
    appended to masks."""
    if kind in ("ties", "magnitude_prune"):
        tensors = [prune(t, DENSITY) for t in tensors]
    elif kind.startswith("dare_"):
        pruned = []
        for t in tensors:
            mask = torch.bernoulli(torch.full_like(t, DENSITY), generator=gm)
            masks.append(mask)
            pruned.append(t * mask / DENSITY)
        tensors = pruned
    stacked = torch.stack(tensors, dim=0)
    w = torch.tensor(weights).view((-1,) + (1,) * (stacked.dim() - 1))
    weighted = stacked * w
    if kind not in ("ties", "dare_ties"):
        return weighted.sum(dim=0)
    sign = stacked.sign()
    majority = torch.where(stacked.sum(dim=0) >= 0, 1, -1)
    mask = sign == majority
    return (weighted * mask).sum(dim=0) / torch.clamp(mask.sum(dim=0), min=1.0)


def combinations(golden, srcs, scalings, kinds, transposed=False):
    """golden entries of every kind for the modules of srcs (list of module -> (A, B)); transposed: get_delta_weight
    is (B@A).T * s (Conv1D with fan_in_fan_out, Embedding)."""
    for p in srcs[0]:
        A = [s[p][0] for s in srcs]
        B = [s[p][1] for s in srcs]
        ws = [w * s for w, s in zip(WEIGHTS, scalings)]
        wa = [math.sqrt(abs(w)) * (1 if w >= 0 else -1) for w in ws]
        wb = [math.sqrt(abs(w)) for w in ws]
        for kind in kinds:
            masks = []
            if kind == "cat":
                golden["cat/%s/A" % p] = torch.cat([a * w for a, w in zip(A, ws)], dim=0)
                golden["cat/%s/B" % p] = torch.cat(B, dim=1)
            elif not kind.endswith("svd"):
                golden["%s/%s/A" % (kind, p)] = combine(kind, A, wa, masks)
                golden["%s/%s/B" % (kind, p)] = combine(kind, B, wb, masks)
            else:
                deltas = [b @ a * s for a, b, s in zip(A, B, scalings)]
                if transposed:
                    deltas = [d.T for d in deltas]
                base = "linear" if kind == "svd" else kind[:-len("_svd")]
                delta = combine(base, deltas, ws, masks)
                if transposed:
                    delta = delta.T
                U, S, Vh = torch.linalg.svd(delta, full_matrices=True)
                golden["%s/%s/delta" % (kind, p)] = (U[:, :4] @ torch.diag(S[:4])) @ Vh[:4, :]
            for i, m in enumerate(masks):
                golden["%s/%s/mask%d" % (kind, p, i)] = m.contiguous()


def main():
    d = os.path.join(MODELS, "llama-gqa-llama3rope")
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    sd = gg.load_safetensors(os.path.join(d, "model.safetensors"))
    srcs = [adapter("a", 8, sd, cfg), adapter("b", 4, sd, cfg)]
    scalings = [8 / 4, 4 / 4]
    golden = {}
    combinations(golden, srcs, scalings, TYPES)

    # GPT-2's c_attn: Conv1D, weight (in, out), LoRA A (r, in), B (out, r), fan_in_fan_out
    gsd = gg.load_safetensors(os.path.join(MODELS, "gpt2-tied", "model.safetensors"))
    shapes = {}
    for k, v in gsd.items():
        if k.endswith("attn.c_attn.weight"):
            i, o = v.shape
            shapes[k[:-len(".weight")]] = ((4, i), (o, 4))
    conv = [drawn_adapter("conv1d_a", 8, shapes, "c_attn", fan_in_fan_out=True),
            drawn_adapter("conv1d_b", 4, shapes, "c_attn", fan_in_fan_out=True)]
    combinations(golden, conv, scalings, TYPES, transposed=True)

    # the Llama's embed_tokens: lora_embedding_A (r, vocab), lora_embedding_B (hidden, r)
    vocab, hidden = sd["model.embed_tokens.weight"].shape
    shapes = {"model.embed_tokens": ((4, vocab), (hidden, 4))}
    emb = [drawn_adapter("emb_a", 8, shapes, "embed_tokens", embedding=True),
           drawn_adapter("emb_b", 4, shapes, "embed_tokens", embedding=True)]
    combinations(golden, emb, scalings, TYPES, transposed=True)

    # a DoRA copy of a/: its magnitude is not used by add_weighted_adapter
    tensors = {}
    for p, (a, b) in srcs[0].items():
        tensors["base_model.model.%s.lora_A.weight" % p] = a
        tensors["base_model.model.%s.lora_B.weight" % p] = b
        tensors["base_model.model.%s.lora_magnitude_vector" % p] = torch.rand(b.shape[0], generator=g2) + 0.5
        golden["dora/%s/magnitude" % p] = sd[p + ".weight"].norm(p=2, dim=1)
    save_adapter("dora_a", {"lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "use_dora": True}, tensors)

    gg.save_safetensors(os.path.join(HERE, "golden.safetensors"), golden)
    print(len(golden), "tensors")


if __name__ == "__main__":
    main()
