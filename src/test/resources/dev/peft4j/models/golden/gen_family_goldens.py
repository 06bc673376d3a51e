#!/usr/bin/python3
"""Golden logits for peft4j's Gemma, Gemma 2, Gemma 3 (text), Qwen3, Phi-3 and sliding-window Qwen2 tests.

Runs on Debian's python3-torch (1.13) + numpy, without transformers or peft: each reference forward below is plain
torch written from transformers' modeling code (modeling_gemma, modeling_gemma2, modeling_gemma3, modeling_qwen3,
modeling_phi3, modeling_qwen2 and the rope utilities): eager attention with an additive finfo.min mask, softmax in
float32. It shares no code with peft4j (nor with gen_goldens.py).

For each case it writes <case>/config.json, <case>/model.safetensors (seeded random weights, HF key names),
<case>/adapter/{adapter_config.json, adapter_model.safetensors} (a LoRA adapter in PEFT's layout on every Linear of
the family, random non-zero A and B) and <case>/golden.safetensors: input_ids, attention_mask (row 1 left-padded by
2), logits (base, padded batch), row1_unpadded_logits, adapted_logits (the adapter applied as x·Wᵀ + s·(x·Aᵀ)·Bᵀ),
merged_logits (the forward with W + s·B·A), greedy_tokens (row 0's prompt, 6 tokens greedily, recomputing the full
forward each step). Re-run:  /usr/bin/python3 gen_family_goldens.py   (from this directory)
"""
import json, math, os, struct
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
DT = {torch.float32: "F32", torch.int64: "I64"}
MIN = torch.finfo(torch.float32).min


def save_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for k, t in tensors.items():
        b = t.detach().contiguous().numpy().tobytes()
        header[k] = {"dtype": DT[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def additive_mask(attention_mask, T, window):
    """Causal (and key > query - window when window) with padding keys hidden; finfo.min where not allowed."""
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    allowed = j <= i
    if window:
        allowed = allowed & (j > i - window)
    allowed = allowed[None, None] & (attention_mask[:, None, None, :] != 0)
    return torch.zeros(attention_mask.shape[0], 1, T, T).masked_fill(~allowed, MIN)


def positions_from_mask(attention_mask):
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.masked_fill(attention_mask == 0, 1)


def rms(x, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def llama_norm(x, w, eps):  # LlamaRMSNorm / Qwen3RMSNorm / Phi3RMSNorm
    return w * rms(x.float(), eps).to(x.dtype)


def gemma_norm(x, w, eps):  # GemmaRMSNorm: (1 + w) in float32, cast at the end
    return (rms(x.float(), eps) * (1.0 + w.float())).type_as(x)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def default_inv_freq(base, dim):
    return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))


def global_inv_freq(cfg, dim):
    inv = default_inv_freq(cfg.get("rope_theta", 10000.0), dim)
    rs = cfg.get("rope_scaling")
    if rs and rs.get("rope_type", rs.get("type")) == "linear":
        inv = inv / rs["factor"]
    return inv


def longrope(cfg, dim, seq_len):
    """transformers' _compute_longrope_parameters + the dynamic short/long switch: (inv_freq, attention_factor)."""
    rs = cfg["rope_scaling"]
    base = cfg.get("rope_theta", 10000.0)
    if "original_max_position_embeddings" in cfg:
        omax = cfg["original_max_position_embeddings"]
        factor = cfg["max_position_embeddings"] / omax
    else:
        omax = cfg["max_position_embeddings"]
        factor = rs.get("factor", 1.0)
    att = rs.get("attention_factor")
    if att is None:
        att = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(omax))
    ext = torch.tensor(rs["long_factor"] if seq_len > omax else rs["short_factor"], dtype=torch.float32)
    assert ext.shape == (dim // 2,), "transformers requires rotary_dim / 2 factors"
    shape = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
    return 1.0 / (ext * base ** shape), att


def cos_sin(pos, inv, att=1.0):
    freqs = pos[:, :, None].float() * inv[None, None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return (emb.cos() * att)[:, None], (emb.sin() * att)[:, None]


def apply_rope(x, cos, sin):
    rd = cos.shape[-1]
    xr, xp = x[..., :rd], x[..., rd:]
    return torch.cat((xr * cos + rotate_half(xr) * sin, xp), dim=-1)


def gelu_tanh(x):
    return F.gelu(x, approximate="tanh")


ACT = {"gelu_pytorch_tanh": gelu_tanh, "silu": F.silu}


def layer_types(cfg):
    t, n, w = cfg["model_type"], cfg["num_hidden_layers"], cfg.get("sliding_window")
    if t == "gemma2":
        return [(i + 1) % 2 != 0 for i in range(n)]
    if t == "gemma3_text":
        p = cfg.get("sliding_window_pattern", 6)
        return [(i + 1) % p != 0 for i in range(n)]
    if t in ("qwen2", "qwen3"):
        on = cfg.get("use_sliding_window", False) and w
        return [bool(on) and i >= cfg.get("max_window_layers", n) for i in range(n)]
    if t == "phi3":
        return [bool(w)] * n
    return [False] * n


def forward(sd, cfg, ids, attention_mask):
    """The family's CausalLM forward: logits [B, T, V] for ids [B, T] under attention_mask [B, T]."""
    t = cfg["model_type"]
    gemma = t.startswith("gemma")
    B, T = ids.shape
    D, H = cfg["hidden_size"], cfg["num_attention_heads"]
    KV = cfg.get("num_key_value_heads", H)
    hd = cfg.get("head_dim", D // H)
    eps = cfg["rms_norm_eps"]
    norm = gemma_norm if gemma else llama_norm
    act = ACT[cfg.get("hidden_activation", "gelu_pytorch_tanh") if gemma else cfg.get("hidden_act", "silu")]
    lin = lambda x, p: F.linear(x, sd[p + ".weight"], sd.get(p + ".bias"))
    x = F.embedding(ids, sd["model.embed_tokens.weight"])
    if gemma:
        x = x * torch.tensor(D ** 0.5, dtype=x.dtype)
    pos = positions_from_mask(attention_mask)
    rd = int(hd * cfg.get("partial_rotary_factor", 1.0)) if t == "phi3" else hd
    if t == "phi3" and cfg.get("rope_scaling"):
        inv, att = longrope(cfg, rd, int(pos.max()) + 1)
        glob = cos_sin(pos, inv, att)
    else:
        glob = cos_sin(pos, global_inv_freq(cfg, rd))
    local = cos_sin(pos, default_inv_freq(cfg.get("rope_local_base_freq", 10000.0), rd)) if t == "gemma3_text" else glob
    sliding = layer_types(cfg)
    masks = {False: additive_mask(attention_mask, T, 0), True: additive_mask(attention_mask, T, cfg.get("sliding_window"))}
    scale = (cfg.get("query_pre_attn_scalar", hd) if t in ("gemma2", "gemma3_text") else hd) ** -0.5
    softcap = cfg.get("attn_logit_softcapping") if t in ("gemma2", "gemma3_text") else None
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        h = norm(x, sd[p + "input_layernorm.weight"], eps)
        if t == "phi3":
            qkv = lin(h, p + "self_attn.qkv_proj")
            q, k, v = qkv[..., :H * hd], qkv[..., H * hd:(H + KV) * hd], qkv[..., (H + KV) * hd:]
        else:
            q, k, v = (lin(h, p + "self_attn.%s_proj" % n) for n in "qkv")
        q, k, v = q.view(B, T, H, hd), k.view(B, T, KV, hd), v.view(B, T, KV, hd)
        if t in ("qwen3", "gemma3_text"):
            q = norm(q, sd[p + "self_attn.q_norm.weight"], eps)
            k = norm(k, sd[p + "self_attn.k_norm.weight"], eps)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        cos, sin = local if sliding[l] else glob
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        k, v = k.repeat_interleave(H // KV, dim=1), v.repeat_interleave(H // KV, dim=1)
        w = torch.matmul(q, k.transpose(2, 3)) * scale
        if softcap:
            w = torch.tanh(w / softcap) * softcap
        w = F.softmax(w + masks[sliding[l]], dim=-1, dtype=torch.float32).to(q.dtype)
        a = lin(torch.matmul(w, v).transpose(1, 2).reshape(B, T, H * hd), p + "self_attn.o_proj")
        if t in ("gemma2", "gemma3_text"):
            x = x + norm(a, sd[p + "post_attention_layernorm.weight"], eps)
            h = norm(x, sd[p + "pre_feedforward_layernorm.weight"], eps)
        else:
            x = x + a
            h = norm(x, sd[p + "post_attention_layernorm.weight"], eps)
        if t == "phi3":
            gate, up = lin(h, p + "mlp.gate_up_proj").chunk(2, dim=-1)
        else:
            gate, up = lin(h, p + "mlp.gate_proj"), lin(h, p + "mlp.up_proj")
        m = lin(up * act(gate), p + "mlp.down_proj")
        if t in ("gemma2", "gemma3_text"):
            m = norm(m, sd[p + "post_feedforward_layernorm.weight"], eps)
        x = x + m
    x = norm(x, sd["model.norm.weight"], eps)
    head = sd["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings", gemma) else sd["lm_head.weight"]
    logits = F.linear(x, head)
    cap = cfg.get("final_logit_softcapping") if t in ("gemma2", "gemma3_text") else None
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def linear_shapes(cfg):
    """{module path: (out, in, has_bias)} of every Linear in the decoder layers, under transformers' names."""
    t = cfg["model_type"]
    D, H, I = cfg["hidden_size"], cfg["num_attention_heads"], cfg["intermediate_size"]
    KV = cfg.get("num_key_value_heads", H)
    hd = cfg.get("head_dim", D // H)
    bias = cfg.get("attention_bias", False) and t != "qwen2"
    out = {}
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        if t == "phi3":
            out[p + "self_attn.qkv_proj"] = ((H + 2 * KV) * hd, D, False)
            out[p + "mlp.gate_up_proj"] = (2 * I, D, False)
        else:
            qkv_bias = bias or t == "qwen2"
            out[p + "self_attn.q_proj"] = (H * hd, D, qkv_bias)
            out[p + "self_attn.k_proj"] = (KV * hd, D, qkv_bias)
            out[p + "self_attn.v_proj"] = (KV * hd, D, qkv_bias)
            out[p + "mlp.gate_proj"] = (I, D, False)
            out[p + "mlp.up_proj"] = (I, D, False)
        out[p + "self_attn.o_proj"] = (D, H * hd, bias)
        out[p + "mlp.down_proj"] = (D, I, False)
    return out


def weights(cfg, g):
    t = cfg["model_type"]
    gemma = t.startswith("gemma")
    D, V = cfg["hidden_size"], cfg["vocab_size"]
    H = cfg["num_attention_heads"]
    hd = cfg.get("head_dim", D // H)
    r = lambda *s: torch.randn(*s, generator=g) * 0.2
    # Gemma's norms multiply by (1 + w): draw w around 0; Llama-style ones around 1
    nw = (lambda n: r(n)) if gemma else (lambda n: 1 + r(n))
    sd = {"model.embed_tokens.weight": torch.randn(V, D, generator=g) * (2.0 / D ** 0.5 if gemma else 0.3)}
    for name, (o, i, b) in linear_shapes(cfg).items():
        sd[name + ".weight"] = r(o, i)
        if b:
            sd[name + ".bias"] = r(o)
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        norms = ["input_layernorm", "post_attention_layernorm"]
        if t in ("gemma2", "gemma3_text"):
            norms += ["pre_feedforward_layernorm", "post_feedforward_layernorm"]
        for n in norms:
            sd[p + n + ".weight"] = nw(D)
        if t in ("qwen3", "gemma3_text"):
            sd[p + "self_attn.q_norm.weight"] = nw(hd)
            sd[p + "self_attn.k_norm.weight"] = nw(hd)
    sd["model.norm.weight"] = nw(D)
    if not cfg.get("tie_word_embeddings", gemma):
        sd["lm_head.weight"] = r(V, D)
    return sd


R, ALPHA = 4, 8


def lora(cfg, g):
    """A LoRA adapter on every Linear: PEFT's adapter_config.json and state dict (keys without the adapter name)."""
    sd = {}
    targets = set()
    for name, (o, i, _) in linear_shapes(cfg).items():
        sd["base_model.model." + name + ".lora_A.weight"] = torch.randn(R, i, generator=g) * 0.2
        sd["base_model.model." + name + ".lora_B.weight"] = torch.randn(o, R, generator=g) * 0.1
        targets.add(name.rsplit(".", 1)[1])
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": R, "lora_alpha": ALPHA, "lora_dropout": 0.0,
              "target_modules": sorted(targets), "bias": "none", "fan_in_fan_out": False, "use_rslora": False,
              "use_dora": False, "init_lora_weights": True, "inference_mode": True, "modules_to_save": None,
              "base_model_name_or_path": None, "revision": None, "layers_to_transform": None,
              "layers_pattern": None, "rank_pattern": {}, "alpha_pattern": {}}
    return config, sd


def adapted_forward(sd, cfg, adapter, ids, mask):
    """The base forward with each adapted Linear computing x·Wᵀ + b + s·(x·Aᵀ)·Bᵀ (PEFT's unmerged LoRA)."""
    s = ALPHA / R
    orig = F.linear

    def patched(x, w, b=None):
        for name in linear_shapes(cfg):
            if sd[name + ".weight"] is w:
                a = adapter["base_model.model." + name + ".lora_A.weight"]
                bb = adapter["base_model.model." + name + ".lora_B.weight"]
                return orig(x, w, b) + orig(orig(x, a), bb) * s
        return orig(x, w, b)

    F.linear = patched
    try:
        return forward(sd, cfg, ids, mask)
    finally:
        F.linear = orig


def merged_weights(sd, cfg, adapter):
    s = ALPHA / R
    out = dict(sd)
    for name in linear_shapes(cfg):
        a = adapter["base_model.model." + name + ".lora_A.weight"]
        b = adapter["base_model.model." + name + ".lora_B.weight"]
        out[name + ".weight"] = sd[name + ".weight"] + (b @ a) * s
    return out


def greedy(sd, cfg, prompt, n):
    ids = prompt.clone()
    for _ in range(n):
        logits = forward(sd, cfg, ids, torch.ones_like(ids))
        ids = torch.cat((ids, logits[:, -1].argmax(-1, keepdim=True)), dim=1)
    return ids[:, prompt.shape[1]:]


BASE = {"vocab_size": 50, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-6, "max_position_embeddings": 128}
LONG = {"short_factor": [1.0, 1.5], "long_factor": [2.0, 5.5]}

CASES = {
    # Gemma: head_dim 8 × 4 heads ≠ hidden 24, one KV head (as gemma-2b), tied head, GeGLU (gelu_pytorch_tanh)
    "gemma-mqa-headdim": dict(BASE, model_type="gemma", architectures=["GemmaForCausalLM"], hidden_size=24,
                              head_dim=8, num_key_value_heads=1, hidden_activation="gelu_pytorch_tanh",
                              rope_theta=10000.0, tie_word_embeddings=True),
    # Gemma 2: 3 layers (0 and 2 slide, window 3), attention and final soft-capping that bite, query_pre_attn_scalar
    "gemma2-softcap-sliding": dict(BASE, model_type="gemma2", architectures=["Gemma2ForCausalLM"],
                                   num_hidden_layers=3, head_dim=8, query_pre_attn_scalar=12, sliding_window=3,
                                   attn_logit_softcapping=1.5, final_logit_softcapping=2.5,
                                   hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True),
    # Gemma 3 text: q/k norms, pattern 2 (layers 0, 2 slide, local RoPE base 1e4), global RoPE 1e6 with linear ×8
    "gemma3-qknorm-localrope": dict(BASE, model_type="gemma3_text", architectures=["Gemma3ForCausalLM"],
                                    num_hidden_layers=3, head_dim=8, query_pre_attn_scalar=8, sliding_window=3,
                                    sliding_window_pattern=2, rope_theta=1000000.0, rope_local_base_freq=10000.0,
                                    rope_scaling={"rope_type": "linear", "factor": 8.0},
                                    attn_logit_softcapping=None, final_logit_softcapping=None,
                                    hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True),
    # Qwen3: q/k RMSNorm per head, head_dim 8 ≠ 24 / 4, untied; sliding window 3 on layer 1 (max_window_layers 1)
    "qwen3-qknorm-sliding": dict(BASE, model_type="qwen3", architectures=["Qwen3ForCausalLM"], hidden_size=24,
                                 head_dim=8, rope_theta=1000000.0, use_sliding_window=True, sliding_window=3,
                                 max_window_layers=1, tie_word_embeddings=False),
    # Phi-3: hidden 32 (head_dim 8, 4 rotary dims), fused qkv / gate_up, long-RoPE on the short factors (7 ≤ 32) with attention factor from 128 / 32,
    # partial_rotary_factor 0.5, sliding_window 5
    "phi3-longrope-partial": dict(BASE, model_type="phi3", architectures=["Phi3ForCausalLM"], hidden_size=32,
                                  original_max_position_embeddings=32, partial_rotary_factor=0.5, sliding_window=5,
                                  rope_scaling=dict(LONG, type="longrope"), hidden_act="silu",
                                  tie_word_embeddings=False),
    # Phi-3 past its original context (4 < 7): the long factors
    "phi3-longrope-long": dict(BASE, model_type="phi3", architectures=["Phi3ForCausalLM"], hidden_size=32,
                               original_max_position_embeddings=4, partial_rotary_factor=0.5,
                               rope_scaling=dict(LONG, type="longrope"), hidden_act="silu",
                               tie_word_embeddings=False),
    # Qwen2 with use_sliding_window: window 3 on layers from max_window_layers 1 on, q/k/v bias
    "qwen2-slidingwindow": dict(BASE, model_type="qwen2", architectures=["Qwen2ForCausalLM"],
                                use_sliding_window=True, sliding_window=3, max_window_layers=1,
                                tie_word_embeddings=False),
}

# two rows of 7 tokens; row 1 is left-padded by 2 (its tokens are ids[1, 2:])
IDS = torch.tensor([[3, 17, 42, 8, 1, 29, 11], [0, 0, 5, 23, 48, 2, 36]])
MASK = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1, 1]])


def main():
    for name, cfg in CASES.items():
        g = torch.Generator().manual_seed(sum(map(ord, name)))
        sd = weights(cfg, g)
        adapter_config, adapter = lora(cfg, g)
        d = os.path.join(HERE, name)
        os.makedirs(os.path.join(d, "adapter"), exist_ok=True)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(dict(cfg, torch_dtype="float32"), f, indent=2, sort_keys=True)
        save_safetensors(os.path.join(d, "model.safetensors"), sd)
        with open(os.path.join(d, "adapter", "adapter_config.json"), "w") as f:
            json.dump(adapter_config, f, indent=2, sort_keys=True)
        save_safetensors(os.path.join(d, "adapter", "adapter_model.safetensors"), adapter)
        with torch.no_grad():
            padded = forward(sd, cfg, IDS, MASK)
            alone = forward(sd, cfg, IDS[1:, 2:], MASK[1:, 2:])
            adapted = adapted_forward(sd, cfg, adapter, IDS, MASK)
            merged = forward(merged_weights(sd, cfg, adapter), cfg, IDS, MASK)
            tokens = greedy(sd, cfg, IDS[:1, :4], 6)
        assert torch.allclose(padded[1, 2:], alone[0], atol=1e-5), name  # checks the reference itself
        assert torch.allclose(adapted, merged, atol=1e-4), name
        assert (adapted - padded).abs().max() > 1e-2, name  # the adapter changes the output
        save_safetensors(os.path.join(d, "golden.safetensors"),
                         {"input_ids": IDS, "attention_mask": MASK, "logits": padded, "row1_unpadded_logits": alone,
                          "adapted_logits": adapted, "merged_logits": merged, "greedy_tokens": tokens})
        print(name, "max |logit|", float(padded.abs().max()), "adapter Δ", float((adapted - padded).abs().max()),
              "greedy", tokens.tolist())


if __name__ == "__main__":
    main()
