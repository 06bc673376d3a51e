#!/usr/bin/python3
"""DoRA goldens for peft4j: a tiny Llama with DoRA on q_proj/v_proj, the same Llama with DoRA on embed_tokens, and a
tiny GPT-2 with DoRA on its Conv1D c_attn; logits unmerged and merged, float32.

Run with Debian's python3-torch (torch 1.13, no PEFT): `cd dora && /usr/bin/python3 make_goldens.py`.

PEFT's DoRA (peft/tuners/lora/dora.py and the Dora*Variant classes of variants.py) is restated here with plain torch
ops, independently of peft4j's Java code:
  * weight norm: ‖transpose(W, fan_in_fan_out) + s·B·A‖₂ over dim 1 (per output feature), detached; for an
    Embedding (num, dim) the weight is transposed, so the norm is per embedding dimension, over the vocabulary;
  * Linear / Conv1D forward (eval): result + (f − 1)·(result − bias) + f·s·B(A(x)), f = m / norm;
  * Embedding forward: f·result + f·s·(emb(ids, Aᵀ)·Bᵀ);
  * merge: W ← f ⊙ (W + ΔW), ΔW = transpose(B·A, fan_in_fan_out)·s, f over the output features (rows, Conv1D
    columns, Embedding columns).
The base models and their reference forwards are ../../models/golden/gen_goldens.py's (plain torch from
transformers' modeling code); the DoRA layers are hooked into them. Each case folder holds adapter_config.json,
adapter_model.safetensors (PEFT's checkpoint keys: `…lora_A.weight`, `…lora_B.weight`, `…lora_magnitude_vector`,
`…lora_embedding_A/B`) and golden.safetensors (input_ids, attention_mask, logits_unmerged, logits_merged).
"""
import json
import os
import sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(HERE, "..", "..", "models", "golden")
sys.path.insert(0, MODELS)
import gen_goldens as gg  # noqa: E402

g = torch.Generator().manual_seed(19191919)


def rnd(*shape, scale=1.0):
    return torch.randn(*shape, generator=g) * scale


def weight_norm(w, lora_weight, s, fan_in_fan_out):
    w = w.T if fan_in_fan_out else w
    return torch.linalg.norm(w + s * lora_weight, dim=1).to(w.dtype).detach()


def make_adapter(w, r, s, fan_in_fan_out, embedding=False):
    """A non-trivial DoRA adapter (B ≠ 0, m away from the initial norm) for base weight w."""
    if embedding:
        num, dim = w.shape
        a, b = rnd(r, num, scale=0.3), rnd(dim, r, scale=0.3)  # lora_embedding_A (r, num), lora_embedding_B (dim, r)
    else:
        out_f, in_f = (w.shape[1], w.shape[0]) if fan_in_fan_out else w.shape
        a, b = rnd(r, in_f, scale=0.3), rnd(out_f, r, scale=0.3)
    norm0 = weight_norm(w, b @ a, s, fan_in_fan_out or embedding)
    m = norm0 * (1.0 + 0.2 * rnd(norm0.shape[0]))
    return {"A": a, "B": b, "m": m, "s": s}


def dora_linear(x, w, bias, ad, fan_in_fan_out):
    result = x @ w if fan_in_fan_out else F.linear(x, w)
    if bias is not None:
        result = result + bias
    lora_weight = ad["B"] @ ad["A"]
    f = (ad["m"] / weight_norm(w, lora_weight, ad["s"], fan_in_fan_out)).view(1, -1)
    lora_result = F.linear(F.linear(x, ad["A"]), ad["B"])
    base_result = result - bias if bias is not None else result
    return result + ((f - 1) * base_result + f * lora_result * ad["s"])


def dora_embedding(ids, w, ad):
    result = F.embedding(ids, w)
    f = ad["m"] / weight_norm(w, ad["B"] @ ad["A"], ad["s"], True)
    dora = f * (F.embedding(ids, ad["A"].T) @ ad["B"].T) * ad["s"]
    return f * result + dora


def merged_weight(w, ad, fan_in_fan_out, embedding=False):
    t = fan_in_fan_out or embedding
    delta = ad["B"] @ ad["A"]
    delta = (delta.T if t else delta) * ad["s"]
    norm = weight_norm(w, delta.T if t else delta, 1.0, t)
    f = (ad["m"] / norm).view(-1, 1)
    f = f.T if t else f
    return f * (w + delta)


class FunctionalWithDora:
    """torch.nn.functional with linear / embedding redirected to DoRA for the hooked weights (by identity)."""

    def __init__(self, hooks):
        self.hooks = hooks

    def __getattr__(self, name):
        return getattr(F, name)

    def linear(self, x, w, b=None):
        ad = self.hooks.get(id(w))
        return F.linear(x, w, b) if ad is None else dora_linear(x, w, b, ad, False)

    def embedding(self, ids, w, *args, **kw):
        ad = self.hooks.get(id(w))
        return F.embedding(ids, w, *args, **kw) if ad is None else dora_embedding(ids, w, ad)


def run_hooked(forward, sd, cfg, hooks, conv_hooks=None):
    saved_f, saved_conv = gg.F, gg.conv1d
    gg.F = FunctionalWithDora(hooks)
    if conv_hooks:
        def conv1d(x, sd_, p):
            ad = conv_hooks.get(p)
            if ad is None:
                return saved_conv(x, sd_, p)
            return dora_linear(x, sd_[p + ".weight"], sd_[p + ".bias"], ad, True)
        gg.conv1d = conv1d
    try:
        with torch.no_grad():
            return forward(sd, cfg, gg.IDS, gg.MASK)
    finally:
        gg.F, gg.conv1d = saved_f, saved_conv


def adapter_config(targets, r, alpha, fan_in_fan_out):
    return {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": alpha, "lora_dropout": 0.0,
            "target_modules": targets, "use_dora": True, "fan_in_fan_out": fan_in_fan_out, "bias": "none",
            "init_lora_weights": True, "base_model_name_or_path": None, "inference_mode": True}


def write_case(name, cfg_json, adapter_sd, unmerged, merged):
    d = os.path.join(HERE, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "adapter_config.json"), "w") as f:
        json.dump(cfg_json, f, indent=2, sort_keys=True)
    gg.save_safetensors(os.path.join(d, "adapter_model.safetensors"), adapter_sd)
    gg.save_safetensors(os.path.join(d, "golden.safetensors"),
                        {"input_ids": gg.IDS, "attention_mask": gg.MASK, "logits_unmerged": unmerged,
                         "logits_merged": merged})
    print(name, "max |unmerged - merged|", float((unmerged - merged).abs().max()),
          "max |logit|", float(unmerged.abs().max()))


def load_case(case):
    d = os.path.join(MODELS, case)
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    return cfg, gg.load_safetensors(os.path.join(d, "model.safetensors"))


def llama_qv():
    cfg, sd = load_case("llama-gqa-llama3rope")
    r, alpha = 4, 8
    s = alpha / r
    hooks, adapter_sd, merged_sd = {}, {}, dict(sd)
    for l in range(cfg["num_hidden_layers"]):
        for proj in ("q_proj", "v_proj"):
            p = "model.layers.%d.self_attn.%s" % (l, proj)
            w = sd[p + ".weight"]
            ad = make_adapter(w, r, s, False)
            hooks[id(w)] = ad
            k = "base_model.model." + p
            adapter_sd[k + ".lora_A.weight"] = ad["A"]
            adapter_sd[k + ".lora_B.weight"] = ad["B"]
            adapter_sd[k + ".lora_magnitude_vector"] = ad["m"]
            merged_sd[p + ".weight"] = merged_weight(w, ad, False)
    unmerged = run_hooked(gg.llama_forward, sd, cfg, hooks)
    with torch.no_grad():
        merged = gg.llama_forward(merged_sd, cfg, gg.IDS, gg.MASK)
    write_case("llama-qv", adapter_config(["q_proj", "v_proj"], r, alpha, False), adapter_sd, unmerged, merged)


def llama_embed():
    cfg, sd = load_case("llama-gqa-llama3rope")
    r, alpha = 4, 4
    s = alpha / r
    p = "model.embed_tokens"
    w = sd[p + ".weight"]
    ad = make_adapter(w, r, s, False, embedding=True)
    # an untied head: the merged embedding must not change the head
    assert not cfg.get("tie_word_embeddings")
    adapter_sd = {"base_model.model." + p + ".lora_embedding_A": ad["A"],
                  "base_model.model." + p + ".lora_embedding_B": ad["B"],
                  "base_model.model." + p + ".lora_magnitude_vector": ad["m"]}
    unmerged = run_hooked(gg.llama_forward, sd, cfg, {id(w): ad})
    merged_sd = dict(sd)
    merged_sd[p + ".weight"] = merged_weight(w, ad, False, embedding=True)
    with torch.no_grad():
        merged = gg.llama_forward(merged_sd, cfg, gg.IDS, gg.MASK)
    write_case("llama-embed", adapter_config(["embed_tokens"], r, alpha, False), adapter_sd, unmerged, merged)


def gpt2_c_attn():
    cfg, sd = load_case("gpt2-tied")
    r, alpha = 4, 8
    s = alpha / r
    conv_hooks, adapter_sd, merged_sd = {}, {}, dict(sd)
    for l in range(cfg["n_layer"]):
        p = "transformer.h.%d.attn.c_attn" % l
        w = sd[p + ".weight"]  # (in, out): Conv1D, fan_in_fan_out
        ad = make_adapter(w, r, s, True)
        conv_hooks[p] = ad
        k = "base_model.model." + p
        adapter_sd[k + ".lora_A.weight"] = ad["A"]
        adapter_sd[k + ".lora_B.weight"] = ad["B"]
        adapter_sd[k + ".lora_magnitude_vector"] = ad["m"]
        merged_sd[p + ".weight"] = merged_weight(w, ad, True)
    unmerged = run_hooked(gg.gpt2_forward, sd, cfg, {}, conv_hooks)
    with torch.no_grad():
        merged = gg.gpt2_forward(merged_sd, cfg, gg.IDS, gg.MASK)
    write_case("gpt2-c_attn", adapter_config(["c_attn"], r, alpha, True), adapter_sd, unmerged, merged)


if __name__ == "__main__":
    llama_qv()
    llama_embed()
    gpt2_c_attn()
