#!/usr/bin/python3
"""Trainable-tokens goldens for peft4j: LoRA adapters with `trainable_token_indices` on a tiny Llama (untied head) and
a tiny GPT-2 (head tied to wte); logits in float32.

Run with Debian's python3-torch (torch 1.13, no PEFT): `cd trainable_tokens && /usr/bin/python3 make_goldens.py`.

PEFT's TrainableTokensLayer (peft/tuners/trainable_tokens/layer.py) and set_additional_trainable_modules
(peft/utils/other.py) are restated here with plain torch ops, independently of peft4j's Java code:
  * `trainable_tokens_delta` holds the new values of the selected rows (not a difference); the forward is
    F.embedding(ids, W') for an embedding and F.linear(x, W') for an output embedding, W' = W with those rows
    replaced (index_copy);
  * a list of indices targets the input embedding; a dict {module: indices} each module named;
  * when the head is tied to the input embedding (GPT-2), a list targets the embedding and the head follows the
    same rows (the tied adapter), so W' is used both for the lookup and for the logits.
The LoRA part (q_proj/v_proj, or GPT-2's Conv1D c_attn) is merged into the reference weights, W + s*B@A (transposed for
Conv1D). The base models and forwards are ../../models/golden/gen_goldens.py's. Each case folder holds
adapter_config.json, adapter_model.safetensors (PEFT's checkpoint keys, e.g.
`base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta`) and golden.safetensors (input_ids,
attention_mask, logits).
"""
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(HERE, "..", "..", "models", "golden")
sys.path.insert(0, MODELS)
import gen_goldens as gg  # noqa: E402

g = torch.Generator().manual_seed(20261207)
PREFIX = "base_model.model."


def rnd(*shape, scale=1.0):
    return torch.randn(*shape, generator=g) * scale


def load_case(case):
    d = os.path.join(MODELS, case)
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    return cfg, gg.load_safetensors(os.path.join(d, "model.safetensors"))


def lora(sd, adapter_sd, module, r, s, conv1d=False):
    """Draws a LoRA adapter for `module`, writes its checkpoint keys and merges it into sd (the reference)."""
    w = sd[module + ".weight"]
    out_f, in_f = (w.shape[1], w.shape[0]) if conv1d else w.shape
    a, b = rnd(r, in_f, scale=0.3), rnd(out_f, r, scale=0.3)
    adapter_sd[PREFIX + module + ".lora_A.weight"] = a
    adapter_sd[PREFIX + module + ".lora_B.weight"] = b
    delta = (b @ a) * s
    sd[module + ".weight"] = w + (delta.T if conv1d else delta)


def trainable_rows(sd, adapter_sd, module, indices):
    """New values for `indices` rows of module's weight (base rows moved by noise); written into sd (the reference)."""
    w = sd[module + ".weight"]
    idx = torch.tensor(indices)
    values = w[idx] + rnd(len(indices), w.shape[1], scale=0.5)
    adapter_sd[PREFIX + module + ".token_adapter.trainable_tokens_delta"] = values
    sd[module + ".weight"] = w.index_copy(0, idx, values)


def adapter_config(targets, r, alpha, fan_in_fan_out, trainable_token_indices):
    return {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": alpha, "lora_dropout": 0.0,
            "target_modules": targets, "fan_in_fan_out": fan_in_fan_out, "bias": "none", "init_lora_weights": True,
            "base_model_name_or_path": None, "inference_mode": True,
            "trainable_token_indices": trainable_token_indices}


def write_case(name, cfg_json, adapter_sd, logits, plain):
    d = os.path.join(HERE, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "adapter_config.json"), "w") as f:
        json.dump(cfg_json, f, indent=2, sort_keys=True)
    gg.save_safetensors(os.path.join(d, "adapter_model.safetensors"), adapter_sd)
    gg.save_safetensors(os.path.join(d, "golden.safetensors"),
                        {"input_ids": gg.IDS, "attention_mask": gg.MASK, "logits": logits})
    print(name, "max |logits - base logits|", float((logits - plain).abs().max()))


def llama(name, token_indices, head_indices=None):
    cfg, sd = load_case("llama-gqa-llama3rope")
    assert not cfg.get("tie_word_embeddings")
    with torch.no_grad():
        plain = gg.llama_forward(sd, cfg, gg.IDS, gg.MASK)
    ref, adapter_sd = dict(sd), {}
    r, alpha = 4, 8
    for l in range(cfg["num_hidden_layers"]):
        for proj in ("q_proj", "v_proj"):
            lora(ref, adapter_sd, "model.layers.%d.self_attn.%s" % (l, proj), r, alpha / r)
    trainable_rows(ref, adapter_sd, "model.embed_tokens", token_indices)
    if head_indices is None:
        spec = token_indices
    else:
        trainable_rows(ref, adapter_sd, "lm_head", head_indices)
        spec = {"embed_tokens": token_indices, "lm_head": head_indices}
    with torch.no_grad():
        logits = gg.llama_forward(ref, cfg, gg.IDS, gg.MASK)
    write_case(name, adapter_config(["q_proj", "v_proj"], r, alpha, False, spec), adapter_sd, logits, plain)


def gpt2_tied():
    cfg, sd = load_case("gpt2-tied")
    with torch.no_grad():
        plain = gg.gpt2_forward(sd, cfg, gg.IDS, gg.MASK)
    ref, adapter_sd = dict(sd), {}
    r, alpha = 4, 8
    for l in range(cfg["n_layer"]):
        lora(ref, adapter_sd, "transformer.h.%d.attn.c_attn" % l, r, alpha / r, conv1d=True)
    indices = [3, 42, 5, 48, 7]
    # the head is tied: only the input embedding's rows are saved, and the head's logits use them too
    trainable_rows(ref, adapter_sd, "transformer.wte", indices)
    with torch.no_grad():
        logits = gg.gpt2_forward(ref, cfg, gg.IDS, gg.MASK)
    write_case("gpt2-tied-list", adapter_config(["c_attn"], r, alpha, True, indices), adapter_sd, logits, plain)


if __name__ == "__main__":
    llama("llama-list", [3, 42, 5, 48, 7])
    llama("llama-dict", [3, 42, 5, 48, 7], head_indices=[1, 17, 30, 49])
    gpt2_tied()
