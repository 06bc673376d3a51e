#!/usr/bin/python3
"""Goldens for adapters of two methods nested on the same modules, as transformers' PeftAdapterMixin leaves them after
two load_adapter calls (float32 logits of a tiny Llama).

Run with Debian's python3-torch (torch 1.13, no PEFT): `cd nested && /usr/bin/python3 make_goldens.py`.

What PEFT does, restated here with plain torch ops, independently of peft4j's Java code:
  * inject_adapter_in_model builds the method's tuner; its _create_and_replace updates a target that is already a
    layer of its own class (LoRA: a LoraLayer that is not an AdaLoraLayer; AdaLoRA: an AdaLoraLayer; IA3: an
    IA3Layer) and otherwise creates a new layer whose base_layer is the target, so a second method's layer wraps the
    first's (lora/model.py, adalora/model.py, ia3/model.py);
  * each layer's forward starts from `self.base_layer(x)`, i.e. the inner layer's whole output:
      LoRA     result = inner(x) + s * B(A(x))                             (lora/layer.py Linear.forward)
      IA3      result = inner(x) * l            (l of shape (out, 1))      (ia3/layer.py Linear.forward)
      IA3 ff   result = inner(x * l)            (l of shape (1, in))
      AdaLoRA  result = inner(x) + (x @ (A*E).T @ B.T) * alpha / (ranknum + 1e-5), ranknum = init_r
    and a layer adds only its active adapters that it holds;
  * inject_adapter ends with the tuner's set_adapter(active_adapters) over its tuner_layer_cls only: LoraLayer for LoRA
    and for AdaLoRA (AdaLoraModel inherits it; AdaLoraLayer is a LoraLayer), IA3Layer for IA3. So after loading
    `first` then `second`, the layers of second's class are active [second] and the others stay [first]: LoRA then
    IA3 leaves both active, LoRA then AdaLoRA (or the reverse) leaves only `second`;
  * transformers' set_adapter(names) sets names on every BaseTunerLayer.
The base model and its forward are ../../models/golden/gen_goldens.py's; the layers are hooked into F.linear by the
identity of the base weight.

Each case folder holds first/ and second/ (adapter_config.json, adapter_model.safetensors with PEFT's checkpoint keys)
and golden.safetensors: input_ids, attention_mask and the logits after the two loads (`logits_loaded`), after
set_adapter([first, second]) (`logits_both`), set_adapter(first) (`logits_first`), set_adapter(second)
(`logits_second`).
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

g = torch.Generator().manual_seed(20261208)
FAMILY = {"lora": "LoraLayer", "adalora": "LoraLayer", "ia3": "IA3Layer"}


def rnd(*shape, scale=1.0):
    return torch.randn(*shape, generator=g) * scale


def make_layer(method, w, cfg, ff=False):
    out_f, in_f = w.shape
    if method == "lora":
        return {"A": rnd(cfg["r"], in_f, scale=0.3), "B": rnd(out_f, cfg["r"], scale=0.3),
                "s": cfg["lora_alpha"] / cfg["r"]}
    if method == "ia3":
        shape = (1, in_f) if ff else (out_f, 1)
        return {"l": 1.0 + rnd(*shape, scale=0.3), "ff": ff}
    if method == "adalora":
        r = cfg["init_r"]
        return {"A": rnd(r, in_f, scale=0.3), "E": rnd(r, 1, scale=0.5), "B": rnd(out_f, r, scale=0.3),
                "s": float(cfg["lora_alpha"]), "ranknum": float(r)}
    raise ValueError(method)


def apply(method, ad, inner, x):
    if method == "lora":
        return inner(x) + (x @ ad["A"].T @ ad["B"].T) * ad["s"]
    if method == "ia3":
        if ad["ff"]:
            return inner(x * ad["l"].flatten())
        return inner(x) * ad["l"].flatten()
    if method == "adalora":
        return inner(x) + (x @ (ad["A"] * ad["E"]).T @ ad["B"].T) * ad["s"] / (ad["ranknum"] + 1e-5)
    raise ValueError(method)


def checkpoint_keys(method, module, ad):
    if method == "lora":
        return {module + ".lora_A.weight": ad["A"], module + ".lora_B.weight": ad["B"]}
    if method == "ia3":
        return {module + ".ia3_l": ad["l"]}
    return {module + ".lora_A": ad["A"], module + ".lora_E": ad["E"], module + ".lora_B": ad["B"]}


class Hooked:
    """torch.nn.functional with linear redirected, for the hooked base weights, to their stack of adapter layers."""

    def __init__(self, stacks):
        self.stacks = stacks  # id(weight) -> [(method, name, params)] inner to outer

    def __getattr__(self, name):
        return getattr(F, name)

    def linear(self, x, w, b=None):
        stack = self.stacks.get(id(w))
        if stack is None:
            return F.linear(x, w, b)

        def run(level, xx):
            if level < 0:
                return F.linear(xx, w, b)
            method, active, ad = stack[level]
            if not active:
                return run(level - 1, xx)
            return apply(method, ad, lambda y: run(level - 1, y), xx)
        return run(len(stack) - 1, x)


def forward(sd, cfg, layers, active_of):
    """layers: module -> [(method, name, params)] inner to outer; active_of(method, name) -> whether it applies."""
    stacks = {}
    for module, stack in layers.items():
        stacks[id(sd[module + ".weight"])] = [(m, active_of(m, n), ad) for m, n, ad in stack]
    saved = gg.F
    gg.F = Hooked(stacks)
    try:
        with torch.no_grad():
            return gg.llama_forward(sd, cfg, gg.IDS, gg.MASK)
    finally:
        gg.F = saved


def config_json(method, targets, cfg):
    base = {"task_type": "CAUSAL_LM", "target_modules": targets, "inference_mode": True,
            "base_model_name_or_path": None, "fan_in_fan_out": False, "modules_to_save": None}
    if method == "lora":
        base.update({"peft_type": "LORA", "r": cfg["r"], "lora_alpha": cfg["lora_alpha"], "lora_dropout": 0.0,
                     "bias": "none", "init_lora_weights": True})
    elif method == "ia3":
        base.update({"peft_type": "IA3", "feedforward_modules": cfg["feedforward_modules"],
                     "init_ia3_weights": True})
    else:
        base.update({"peft_type": "ADALORA", "init_r": cfg["init_r"], "target_r": 2, "r": 8,
                     "lora_alpha": cfg["lora_alpha"], "lora_dropout": 0.0, "bias": "none", "total_step": 100,
                     "tinit": 0, "tfinal": 0, "deltaT": 1, "beta1": 0.85, "beta2": 0.85, "orth_reg_weight": 0.5,
                     "rank_pattern": None, "init_lora_weights": True})
    return base


def make_case(name, first, second):
    """first / second: (method, {module suffix: ff}, cfg); both target layer 0 and 1 of the tiny Llama."""
    with open(os.path.join(MODELS, "llama-gqa-llama3rope", "config.json")) as f:
        cfg = json.load(f)
    sd = gg.load_safetensors(os.path.join(MODELS, "llama-gqa-llama3rope", "model.safetensors"))
    layers = {}
    ckpts = {}
    for adapter, (method, targets, acfg) in (("first", first), ("second", second)):
        ckpt = {}
        for l in range(cfg["num_hidden_layers"]):
            for suffix, ff in targets.items():
                module = "model.layers.%d.%s" % (l, suffix)
                ad = make_layer(method, sd[module + ".weight"], acfg, ff)
                layers.setdefault(module, []).append((method, adapter, ad))
                ckpt.update(checkpoint_keys(method, "base_model.model." + module, ad))
        ckpts[adapter] = (method, [t.split(".")[-1] for t in targets], acfg, ckpt)
    second_family = FAMILY[second[0]]
    logits = {
        # the second load's set_adapter reached only its own class's layers
        "logits_loaded": forward(sd, cfg, layers, lambda m, n: n == ("second" if FAMILY[m] == second_family
                                                                      else "first")),
        "logits_both": forward(sd, cfg, layers, lambda m, n: True),
        "logits_first": forward(sd, cfg, layers, lambda m, n: n == "first"),
        "logits_second": forward(sd, cfg, layers, lambda m, n: n == "second"),
    }
    d = os.path.join(HERE, name)
    for adapter, (method, targets, acfg, ckpt) in ckpts.items():
        ad_dir = os.path.join(d, adapter)
        os.makedirs(ad_dir, exist_ok=True)
        with open(os.path.join(ad_dir, "adapter_config.json"), "w") as f:
            json.dump(config_json(method, sorted(set(targets)), acfg), f, indent=2, sort_keys=True)
        gg.save_safetensors(os.path.join(ad_dir, "adapter_model.safetensors"), ckpt)
    out = {"input_ids": gg.IDS, "attention_mask": gg.MASK}
    out.update(logits)
    gg.save_safetensors(os.path.join(d, "golden.safetensors"), out)
    print(name, {k: round(float((v - logits["logits_loaded"]).abs().max()), 4) for k, v in logits.items()})


LORA = {"r": 4, "lora_alpha": 8}
ADALORA = {"init_r": 4, "lora_alpha": 6}

make_case("lora-ia3", ("lora", {"self_attn.q_proj": False, "self_attn.v_proj": False}, LORA),
          ("ia3", {"self_attn.q_proj": False, "mlp.down_proj": True}, {"feedforward_modules": ["down_proj"]}))
make_case("ia3-lora", ("ia3", {"mlp.down_proj": True, "mlp.up_proj": False}, {"feedforward_modules": ["down_proj"]}),
          ("lora", {"mlp.down_proj": False, "self_attn.q_proj": False}, LORA))
make_case("lora-adalora", ("lora", {"self_attn.q_proj": False, "self_attn.v_proj": False}, LORA),
          ("adalora", {"self_attn.v_proj": False, "self_attn.k_proj": False}, ADALORA))
make_case("adalora-lora", ("adalora", {"self_attn.q_proj": False, "self_attn.o_proj": False}, ADALORA),
          ("lora", {"self_attn.q_proj": False, "self_attn.v_proj": False}, LORA))
