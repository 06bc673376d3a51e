#!/usr/bin/python3
"""Golden logits for peft4j's model tests, computed independently of peft4j.

Runs on Debian's python3-torch (1.13) + numpy, without transformers: each reference forward below is written in
plain torch following transformers' modeling code (modeling_llama / mistral / qwen2, modeling_gpt2, modeling_opt,
modeling_bert): eager attention with an additive finfo.min mask, softmax in float32.

For each case it writes <case>/config.json, <case>/model.safetensors (seeded random weights, HF key names) and
<case>/golden.safetensors (input_ids, attention_mask, position-free logits of the padded batch and of each row
unpadded). Re-run:  /usr/bin/python3 gen_goldens.py   (from this directory)
"""
import json, math, os, struct
import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
DT = {torch.float32: "F32", torch.int64: "I64", torch.float16: "F16"}


def save_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for k, t in tensors.items():
        t = t.detach().contiguous()
        b = t.numpy().tobytes()
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


MIN = torch.finfo(torch.float32).min


def additive_mask(attention_mask, T, causal, sliding_window=0):
    """transformers' 4-D mask: finfo.min where a query may not look (future, outside the window, padding)."""
    B = attention_mask.shape[0]
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    allowed = torch.ones(T, T, dtype=torch.bool)
    if causal:
        allowed = j <= i
        if sliding_window:
            allowed = allowed & (i - j < sliding_window)
    allowed = allowed[None, None] & (attention_mask[:, None, None, :] != 0)
    return torch.zeros(B, 1, T, T).masked_fill(~allowed, MIN)


def eager_attention(q, k, v, mask, scale):
    w = torch.matmul(q, k.transpose(2, 3)) * scale + mask
    w = F.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
    return torch.matmul(w, v)


def positions_from_mask(attention_mask):
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.masked_fill(attention_mask == 0, 1)


# ------------------------------------------------------------------ Llama family

def rope_inv_freq(cfg):
    hd = cfg.get("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
    base = cfg.get("rope_theta", 10000.0)
    inv = 1.0 / (base ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    rs = cfg.get("rope_scaling")
    if rs:
        t = rs.get("rope_type", rs.get("type"))
        if t == "linear":
            inv = inv / rs["factor"]
        elif t == "llama3":  # transformers' _compute_llama3_parameters
            factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
            old = rs["original_max_position_embeddings"]
            low_wl, high_wl = old / low, old / high
            wavelen = 2 * math.pi / inv
            inv_l = torch.where(wavelen > low_wl, inv / factor, inv)
            smooth = (old / wavelen - low) / (high - low)
            smoothed = (1 - smooth) * inv_l / factor + smooth * inv_l
            medium = ~(wavelen < high_wl) * ~(wavelen > low_wl)
            inv = torch.where(medium, smoothed, inv_l)
    return inv


def rms_norm(x, w, eps):
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return w * xf.to(x.dtype)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def llama_forward(sd, cfg, ids, attention_mask):
    B, T = ids.shape
    H, KV = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    hd = cfg.get("head_dim", cfg["hidden_size"] // H)
    eps = cfg["rms_norm_eps"]
    lin = lambda x, p: F.linear(x, sd[p + ".weight"], sd.get(p + ".bias"))
    x = F.embedding(ids, sd["model.embed_tokens.weight"])
    pos = positions_from_mask(attention_mask)
    freqs = pos[:, :, None].float() * rope_inv_freq(cfg)[None, None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[:, None], emb.sin()[:, None]
    window = cfg.get("sliding_window") if cfg["model_type"] == "mistral" else 0
    mask = additive_mask(attention_mask, T, True, window or 0)
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        h = rms_norm(x, sd[p + "input_layernorm.weight"], eps)
        q = lin(h, p + "self_attn.q_proj").view(B, T, H, hd).transpose(1, 2)
        k = lin(h, p + "self_attn.k_proj").view(B, T, KV, hd).transpose(1, 2)
        v = lin(h, p + "self_attn.v_proj").view(B, T, KV, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(H // KV, dim=1)
        v = v.repeat_interleave(H // KV, dim=1)
        o = eager_attention(q, k, v, mask, hd ** -0.5).transpose(1, 2).reshape(B, T, H * hd)
        x = x + lin(o, p + "self_attn.o_proj")
        h = rms_norm(x, sd[p + "post_attention_layernorm.weight"], eps)
        x = x + lin(F.silu(lin(h, p + "mlp.gate_proj")) * lin(h, p + "mlp.up_proj"), p + "mlp.down_proj")
    x = rms_norm(x, sd["model.norm.weight"], eps)
    head = sd["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else sd["lm_head.weight"]
    return F.linear(x, head)


def llama_weights(cfg, g):
    D, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    H, KV = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    hd = D // H
    qkv_bias = cfg["model_type"] == "qwen2" or cfg.get("attention_bias", False)
    o_bias = cfg["model_type"] != "qwen2" and cfg.get("attention_bias", False)
    r = lambda *s: torch.randn(*s, generator=g) * 0.2
    sd = {"model.embed_tokens.weight": torch.randn(V, D, generator=g)}
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        for n, o in (("q", H * hd), ("k", KV * hd), ("v", KV * hd)):
            sd[p + "self_attn.%s_proj.weight" % n] = r(o, D)
            if qkv_bias:
                sd[p + "self_attn.%s_proj.bias" % n] = r(o)
        sd[p + "self_attn.o_proj.weight"] = r(D, H * hd)
        if o_bias:
            sd[p + "self_attn.o_proj.bias"] = r(D)
        sd[p + "mlp.gate_proj.weight"] = r(I, D)
        sd[p + "mlp.up_proj.weight"] = r(I, D)
        sd[p + "mlp.down_proj.weight"] = r(D, I)
        sd[p + "input_layernorm.weight"] = 1 + r(D)
        sd[p + "post_attention_layernorm.weight"] = 1 + r(D)
    sd["model.norm.weight"] = 1 + r(D)
    if not cfg.get("tie_word_embeddings"):
        sd["lm_head.weight"] = r(V, D)
    return sd


LLAMA_BASE = dict(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, rms_norm_eps=1e-6, hidden_act="silu", max_position_embeddings=128)

CASES = {
    "llama-gqa-llama3rope": (dict(LLAMA_BASE, model_type="llama", architectures=["LlamaForCausalLM"],
                                  rope_theta=500000.0, tie_word_embeddings=False,
                                  rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                                    high_freq_factor=4.0, original_max_position_embeddings=16)),
                             llama_forward, llama_weights),
    "qwen2-bias-tied-linearrope": (dict(LLAMA_BASE, model_type="qwen2", architectures=["Qwen2ForCausalLM"],
                                        rope_theta=1000000.0, tie_word_embeddings=True,
                                        rope_scaling=dict(type="linear", factor=2.0)),
                                   llama_forward, llama_weights),
    "mistral-slidingwindow": (dict(LLAMA_BASE, model_type="mistral", architectures=["MistralForCausalLM"],
                                   num_key_value_heads=1, sliding_window=3, tie_word_embeddings=False),
                              llama_forward, llama_weights),
}

# two rows of 7 tokens; row 1 is left-padded by 2 (its tokens are ids[1, 2:])
IDS = torch.tensor([[3, 17, 42, 8, 1, 29, 11], [0, 0, 5, 23, 48, 2, 36]])
MASK = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1, 1]])


def main():
    for name, (cfg, forward, weights) in CASES.items():
        seed = sum(map(ord, name))
        g = torch.Generator().manual_seed(seed)
        sd = weights(cfg, g)
        os.makedirs(os.path.join(HERE, name), exist_ok=True)
        with open(os.path.join(HERE, name, "config.json"), "w") as f:
            json.dump(dict(cfg, torch_dtype="float32"), f, indent=2, sort_keys=True)
        save_safetensors(os.path.join(HERE, name, "model.safetensors"), sd)
        with torch.no_grad():
            padded = forward(sd, cfg, IDS, MASK)
            row1 = forward(sd, cfg, IDS[1:, 2:], MASK[1:, 2:])
        # the padded row's real positions must equal the unpadded run (checks the reference itself)
        assert torch.allclose(padded[1, 2:], row1[0], atol=1e-5), name
        save_safetensors(os.path.join(HERE, name, "golden.safetensors"),
                         {"input_ids": IDS, "attention_mask": MASK, "logits": padded, "row1_unpadded_logits": row1})
        print(name, "logits", tuple(padded.shape), "max |logit|", float(padded.abs().max()))


if __name__ == "__main__":
    main()
