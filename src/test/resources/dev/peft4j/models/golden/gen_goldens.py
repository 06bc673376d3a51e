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
    sd = {"model.embed_tokens.weight": torch.randn(V, D, generator=g) * 0.3}
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



# ------------------------------------------------------------------ GPT-2

def gelu_new(x):  # transformers' NewGELUActivation
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


ACT = {"gelu_new": gelu_new, "gelu": F.gelu, "relu": F.relu}


def conv1d(x, sd, p):  # transformers' Conv1D: addmm(bias, x, weight[in, out])
    size_out = x.size()[:-1] + (sd[p + ".weight"].shape[1],)
    return torch.addmm(sd[p + ".bias"], x.view(-1, x.size(-1)), sd[p + ".weight"]).view(size_out)


def gpt2_forward(sd, cfg, ids, attention_mask):
    B, T = ids.shape
    D, H = cfg["n_embd"], cfg["n_head"]
    hd, eps = D // H, cfg["layer_norm_epsilon"]
    p = "transformer."
    pos = positions_from_mask(attention_mask)
    x = F.embedding(ids, sd[p + "wte.weight"]) + F.embedding(pos, sd[p + "wpe.weight"])
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))[None, None]
    pad = torch.zeros(B, 1, 1, T).masked_fill(attention_mask[:, None, None, :] == 0, MIN)
    for l in range(cfg["n_layer"]):
        q = p + "h.%d." % l
        h = F.layer_norm(x, (D,), sd[q + "ln_1.weight"], sd[q + "ln_1.bias"], eps)
        qq, kk, vv = conv1d(h, sd, q + "attn.c_attn").split(D, dim=2)
        qq, kk, vv = [t.view(B, T, H, hd).transpose(1, 2) for t in (qq, kk, vv)]
        w = torch.matmul(qq, kk.transpose(-1, -2))
        if cfg.get("scale_attn_weights", True):
            w = w / torch.full([], vv.size(-1) ** 0.5, dtype=w.dtype)
        if cfg.get("scale_attn_by_inverse_layer_idx"):
            w = w / float(l + 1)
        w = torch.where(causal, w, torch.full([], MIN, dtype=w.dtype)) + pad
        w = F.softmax(w, dim=-1)
        o = torch.matmul(w, vv).transpose(1, 2).reshape(B, T, D)
        x = x + conv1d(o, sd, q + "attn.c_proj")
        h = F.layer_norm(x, (D,), sd[q + "ln_2.weight"], sd[q + "ln_2.bias"], eps)
        x = x + conv1d(ACT[cfg["activation_function"]](conv1d(h, sd, q + "mlp.c_fc")), sd, q + "mlp.c_proj")
    x = F.layer_norm(x, (D,), sd[p + "ln_f.weight"], sd[p + "ln_f.bias"], eps)
    return F.linear(x, sd[p + "wte.weight"])


def gpt2_weights(cfg, g):
    D, V = cfg["n_embd"], cfg["vocab_size"]
    I = cfg.get("n_inner") or 4 * D
    r = lambda *s: torch.randn(*s, generator=g) * 0.2
    p = "transformer."
    sd = {p + "wte.weight": torch.randn(V, D, generator=g) * 0.3, p + "wpe.weight": r(cfg["n_positions"], D)}
    for l in range(cfg["n_layer"]):
        q = p + "h.%d." % l
        for n, shape in (("attn.c_attn", (D, 3 * D)), ("attn.c_proj", (D, D)), ("mlp.c_fc", (D, I)), ("mlp.c_proj", (I, D))):
            sd[q + n + ".weight"] = r(*shape)
            sd[q + n + ".bias"] = r(shape[1])
        for n in ("ln_1", "ln_2"):
            sd[q + n + ".weight"] = 1 + r(D)
            sd[q + n + ".bias"] = r(D)
    sd[p + "ln_f.weight"] = 1 + r(D)
    sd[p + "ln_f.bias"] = r(D)
    return sd


# ------------------------------------------------------------------ OPT

def opt_forward(sd, cfg, ids, attention_mask):
    B, T = ids.shape
    D, H = cfg["hidden_size"], cfg["num_attention_heads"]
    hd = D // H
    before = cfg.get("do_layer_norm_before", True)
    p = "model.decoder."
    lin = lambda x, n: F.linear(x, sd[n + ".weight"], sd.get(n + ".bias"))
    ln = lambda x, n: F.layer_norm(x, (D,), sd[n + ".weight"], sd[n + ".bias"], 1e-5)
    x = F.embedding(ids, sd[p + "embed_tokens.weight"])
    if p + "project_in.weight" in sd:
        x = lin(x, p + "project_in")
    positions = (torch.cumsum(attention_mask, dim=1).type_as(attention_mask) * attention_mask).long() - 1
    x = x + F.embedding(positions + 2, sd[p + "embed_positions.weight"])
    mask = additive_mask(attention_mask, T, True)
    for l in range(cfg["num_hidden_layers"]):
        q = p + "layers.%d." % l
        res = x
        if before:
            x = ln(x, q + "self_attn_layer_norm")
        qq = lin(x, q + "self_attn.q_proj") * hd ** -0.5
        kk, vv = lin(x, q + "self_attn.k_proj"), lin(x, q + "self_attn.v_proj")
        qq, kk, vv = [t.view(B, T, H, hd).transpose(1, 2) for t in (qq, kk, vv)]
        w = F.softmax(torch.matmul(qq, kk.transpose(2, 3)) + mask, dim=-1)
        x = lin(torch.matmul(w, vv).transpose(1, 2).reshape(B, T, D), q + "self_attn.out_proj")
        x = res + x
        if not before:
            x = ln(x, q + "self_attn_layer_norm")
        res = x
        if before:
            x = ln(x, q + "final_layer_norm")
        x = res + lin(F.relu(lin(x, q + "fc1")), q + "fc2")
        if not before:
            x = ln(x, q + "final_layer_norm")
    if p + "final_layer_norm.weight" in sd:
        x = ln(x, p + "final_layer_norm")
    if p + "project_out.weight" in sd:
        x = lin(x, p + "project_out")
    return F.linear(x, sd[p + "embed_tokens.weight"])


def opt_weights(cfg, g):
    D, V, Fd = cfg["hidden_size"], cfg["vocab_size"], cfg["ffn_dim"]
    P = cfg.get("word_embed_proj_dim", D)
    r = lambda *s: torch.randn(*s, generator=g) * 0.2
    p = "model.decoder."
    sd = {p + "embed_tokens.weight": torch.randn(V, P, generator=g) * 0.3,
          p + "embed_positions.weight": r(cfg["max_position_embeddings"] + 2, D)}
    if P != D:
        sd[p + "project_in.weight"] = r(D, P)
        sd[p + "project_out.weight"] = r(P, D)
    for l in range(cfg["num_hidden_layers"]):
        q = p + "layers.%d." % l
        for n, (o, i) in (("self_attn.k_proj", (D, D)), ("self_attn.v_proj", (D, D)), ("self_attn.q_proj", (D, D)),
                          ("self_attn.out_proj", (D, D)), ("fc1", (Fd, D)), ("fc2", (D, Fd))):
            sd[q + n + ".weight"] = r(o, i)
            sd[q + n + ".bias"] = r(o)
        for n in ("self_attn_layer_norm", "final_layer_norm"):
            sd[q + n + ".weight"] = 1 + r(D)
            sd[q + n + ".bias"] = r(D)
    if cfg.get("do_layer_norm_before", True):
        sd[p + "final_layer_norm.weight"] = 1 + r(D)
        sd[p + "final_layer_norm.bias"] = r(D)
    return sd


# ------------------------------------------------------------------ BERT

def bert_encoder(sd, cfg, ids, attention_mask):
    B, T = ids.shape
    D, H = cfg["hidden_size"], cfg["num_attention_heads"]
    hd, eps = D // H, cfg["layer_norm_eps"]
    p = "bert."
    lin = lambda x, n: F.linear(x, sd[n + ".weight"], sd[n + ".bias"])
    ln = lambda x, n: F.layer_norm(x, (D,), sd[n + ".weight"], sd[n + ".bias"], eps)
    x = (F.embedding(ids, sd[p + "embeddings.word_embeddings.weight"])
         + F.embedding(torch.zeros_like(ids), sd[p + "embeddings.token_type_embeddings.weight"])
         + F.embedding(torch.arange(T)[None].expand(B, T), sd[p + "embeddings.position_embeddings.weight"]))
    x = ln(x, p + "embeddings.LayerNorm")
    mask = torch.zeros(B, 1, 1, T).masked_fill(attention_mask[:, None, None, :] == 0, MIN)
    act = ACT[cfg["hidden_act"]]
    for l in range(cfg["num_hidden_layers"]):
        q = p + "encoder.layer.%d." % l
        qq, kk, vv = [lin(x, q + "attention.self." + n).view(B, T, H, hd).transpose(1, 2) for n in ("query", "key", "value")]
        w = F.softmax(torch.matmul(qq, kk.transpose(-1, -2)) / math.sqrt(hd) + mask, dim=-1)
        ctx = torch.matmul(w, vv).permute(0, 2, 1, 3).reshape(B, T, D)
        a = ln(lin(ctx, q + "attention.output.dense") + x, q + "attention.output.LayerNorm")
        x = ln(lin(act(lin(a, q + "intermediate.dense")), q + "output.dense") + a, q + "output.LayerNorm")
    return x


def bert_mlm_forward(sd, cfg, ids, attention_mask):
    x = bert_encoder(sd, cfg, ids, attention_mask)
    D = cfg["hidden_size"]
    t = F.linear(x, sd["cls.predictions.transform.dense.weight"], sd["cls.predictions.transform.dense.bias"])
    t = F.layer_norm(ACT[cfg["hidden_act"]](t), (D,), sd["cls.predictions.transform.LayerNorm.weight"],
                     sd["cls.predictions.transform.LayerNorm.bias"], cfg["layer_norm_eps"])
    return F.linear(t, sd["bert.embeddings.word_embeddings.weight"], sd["cls.predictions.bias"])


def bert_seqcls_forward(sd, cfg, ids, attention_mask):
    x = bert_encoder(sd, cfg, ids, attention_mask)
    pooled = torch.tanh(F.linear(x[:, 0], sd["bert.pooler.dense.weight"], sd["bert.pooler.dense.bias"]))
    return F.linear(pooled, sd["classifier.weight"], sd["classifier.bias"])


def bert_weights(cfg, g, head):
    D, V, I = cfg["hidden_size"], cfg["vocab_size"], cfg["intermediate_size"]
    r = lambda *s: torch.randn(*s, generator=g) * 0.2
    p = "bert."
    sd = {p + "embeddings.word_embeddings.weight": torch.randn(V, D, generator=g) * 0.3,
          p + "embeddings.position_embeddings.weight": r(cfg["max_position_embeddings"], D),
          p + "embeddings.token_type_embeddings.weight": r(cfg["type_vocab_size"], D),
          p + "embeddings.LayerNorm.weight": 1 + r(D), p + "embeddings.LayerNorm.bias": r(D)}
    for l in range(cfg["num_hidden_layers"]):
        q = p + "encoder.layer.%d." % l
        for n, (o, i) in (("attention.self.query", (D, D)), ("attention.self.key", (D, D)),
                          ("attention.self.value", (D, D)), ("attention.output.dense", (D, D)),
                          ("intermediate.dense", (I, D)), ("output.dense", (D, I))):
            sd[q + n + ".weight"] = r(o, i)
            sd[q + n + ".bias"] = r(o)
        for n in ("attention.output.LayerNorm", "output.LayerNorm"):
            sd[q + n + ".weight"] = 1 + r(D)
            sd[q + n + ".bias"] = r(D)
    if head == "mlm":
        sd["cls.predictions.transform.dense.weight"] = r(D, D)
        sd["cls.predictions.transform.dense.bias"] = r(D)
        sd["cls.predictions.transform.LayerNorm.weight"] = 1 + r(D)
        sd["cls.predictions.transform.LayerNorm.bias"] = r(D)
        sd["cls.predictions.bias"] = r(V)
    else:
        sd[p + "pooler.dense.weight"] = r(D, D)
        sd[p + "pooler.dense.bias"] = r(D)
        sd["classifier.weight"] = r(cfg["num_labels"], D)
        sd["classifier.bias"] = r(cfg["num_labels"])
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
    "gpt2-tied": (dict(model_type="gpt2", architectures=["GPT2LMHeadModel"], vocab_size=50, n_embd=32, n_head=4,
                       n_layer=2, n_positions=64, activation_function="gelu_new", layer_norm_epsilon=1e-5),
                  gpt2_forward, gpt2_weights),
    "gpt2-inverse-layer-scale": (dict(model_type="gpt2", architectures=["GPT2LMHeadModel"], vocab_size=50, n_embd=32,
                                      n_head=2, n_layer=2, n_positions=64, n_inner=40, activation_function="gelu",
                                      layer_norm_epsilon=1e-5, scale_attn_by_inverse_layer_idx=True),
                                 gpt2_forward, gpt2_weights),
    "opt-prenorm": (dict(model_type="opt", architectures=["OPTForCausalLM"], vocab_size=50, hidden_size=32, ffn_dim=48,
                         num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64,
                         do_layer_norm_before=True, word_embed_proj_dim=32, activation_function="relu"),
                    opt_forward, opt_weights),
    "opt-postnorm-projected": (dict(model_type="opt", architectures=["OPTForCausalLM"], vocab_size=50, hidden_size=32,
                                    ffn_dim=48, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64,
                                    do_layer_norm_before=False, word_embed_proj_dim=16, activation_function="relu"),
                               opt_forward, opt_weights),
}

BERT_BASE = dict(model_type="bert", vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=48, hidden_act="gelu", max_position_embeddings=64, type_vocab_size=2,
                 layer_norm_eps=1e-12)
ENCODER_CASES = {
    "bert-mlm": (dict(BERT_BASE, architectures=["BertForMaskedLM"]), bert_mlm_forward,
                 lambda c, g: bert_weights(c, g, "mlm")),
    "bert-seqcls": (dict(BERT_BASE, architectures=["BertForSequenceClassification"], num_labels=3,
                         id2label={"0": "a", "1": "b", "2": "c"}, label2id={"a": 0, "b": 1, "c": 2}),
                    bert_seqcls_forward, lambda c, g: bert_weights(c, g, "seqcls")),
}

# two rows of 7 tokens; row 1 is left-padded by 2 (its tokens are ids[1, 2:])
IDS = torch.tensor([[3, 17, 42, 8, 1, 29, 11], [0, 0, 5, 23, 48, 2, 36]])
MASK = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1, 1]])
# encoders: row 1 is right-padded by 2 (its tokens are ids[1, :5])
IDS_R = torch.tensor([[3, 17, 42, 8, 1, 29, 11], [5, 23, 48, 2, 36, 0, 0]])
MASK_R = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0]])


def main():
    for name, (cfg, forward, weights) in list(CASES.items()) + list(ENCODER_CASES.items()):
        encoder = name in ENCODER_CASES
        ids, mask = (IDS_R, MASK_R) if encoder else (IDS, MASK)
        row1 = (slice(1, 2), slice(0, 5)) if encoder else (slice(1, 2), slice(2, 7))
        seed = sum(map(ord, name))
        g = torch.Generator().manual_seed(seed)
        sd = weights(cfg, g)
        os.makedirs(os.path.join(HERE, name), exist_ok=True)
        with open(os.path.join(HERE, name, "config.json"), "w") as f:
            json.dump(dict(cfg, torch_dtype="float32"), f, indent=2, sort_keys=True)
        save_safetensors(os.path.join(HERE, name, "model.safetensors"), sd)
        with torch.no_grad():
            padded = forward(sd, cfg, ids, mask)
            alone = forward(sd, cfg, ids[row1], mask[row1])
        # the padded row's real positions must equal the unpadded run (checks the reference itself)
        if padded.dim() == 3:
            assert torch.allclose(padded[1, row1[1]], alone[0], atol=1e-5), name
        else:
            assert torch.allclose(padded[1], alone[0], atol=1e-5), name
        save_safetensors(os.path.join(HERE, name, "golden.safetensors"),
                         {"input_ids": ids, "attention_mask": mask, "logits": padded, "row1_unpadded_logits": alone})
        print(name, "logits", tuple(padded.shape), "max |logit|", float(padded.abs().max()))


def load_safetensors(path):
    """Reads a safetensors file with struct + numpy (F32 only, as the fixtures are)."""
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        assert v["dtype"] == "F32", (path, k, v["dtype"])
        a, b = v["data_offsets"]
        out[k] = torch.from_numpy(np.frombuffer(data[8 + n + a:8 + n + b], dtype="<f4").copy()).reshape(v["shape"])
    return out


# the lm-buddy checkpoints copied under ../fixtures: logits of the reference forward on their real weights
FIXTURES = {
    # a bare GPT2Model checkpoint (no "transformer." prefix): logits through the tied head, as GPT2LMHeadModel
    # loading it (transformers adds the prefix) computes them
    "hf-tiny-gpt2-lmbuddy": (gpt2_forward, lambda sd: {"transformer." + k: v for k, v in sd.items()}),
    "hf-fake-gpt2-lmhead-lmbuddy": (gpt2_forward, lambda sd: sd),
    "hf-bert-tiniest-lmbuddy": (bert_mlm_forward, lambda sd: sd),
}


def fixtures():
    for name, (forward, adapt) in FIXTURES.items():
        d = os.path.join(HERE, "..", "fixtures", name)
        with open(os.path.join(d, "config.json")) as f:
            cfg = json.load(f)
        sd = adapt(load_safetensors(os.path.join(d, "model.safetensors")))
        encoder = forward is bert_mlm_forward
        ids, mask = (IDS_R, MASK_R) if encoder else (IDS, MASK)
        ids = ids % cfg["vocab_size"]
        with torch.no_grad():
            logits = forward(sd, cfg, ids, mask)
        # large vocabularies: the first 2048 logits of each position and the logsumexp over all of them
        save_safetensors(os.path.join(d, "golden.safetensors"),
                         {"input_ids": ids, "attention_mask": mask, "logits_head": logits[..., :2048].contiguous(),
                          "logsumexp": logits.logsumexp(-1)})
        print(name, "logits", tuple(logits.shape), "max |logit|", float(logits.abs().max()))


def other_formats():
    """The llama case's weights as pytorch_model.bin (torch.save zip) and as two safetensors shards with an index."""
    src = os.path.join(HERE, "llama-gqa-llama3rope")
    sd = load_safetensors(os.path.join(src, "model.safetensors"))
    with open(os.path.join(src, "config.json")) as f:
        cfg = f.read()
    for sub in ("bin", "sharded", "bin-sharded"):
        os.makedirs(os.path.join(HERE, "llama-formats", sub), exist_ok=True)
        with open(os.path.join(HERE, "llama-formats", sub, "config.json"), "w") as f:
            f.write(cfg)
    torch.save(sd, os.path.join(HERE, "llama-formats", "bin", "pytorch_model.bin"))
    keys = list(sd)
    shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    weight_map = {}
    for fname, ks in shards.items():
        save_safetensors(os.path.join(HERE, "llama-formats", "sharded", fname), {k: sd[k] for k in ks})
        weight_map.update({k: fname for k in ks})
    with open(os.path.join(HERE, "llama-formats", "sharded", "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": sum(t.numel() * 4 for t in sd.values())}, "weight_map": weight_map}, f,
                  indent=2)
    bin_map = {}
    for i, ks in enumerate(shards.values()):
        fname = "pytorch_model-%05d-of-00002.bin" % (i + 1)
        torch.save({k: sd[k] for k in ks}, os.path.join(HERE, "llama-formats", "bin-sharded", fname))
        bin_map.update({k: fname for k in ks})
    with open(os.path.join(HERE, "llama-formats", "bin-sharded", "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": sum(t.numel() * 4 for t in sd.values())}, "weight_map": bin_map}, f,
                  indent=2)


if __name__ == "__main__":
    main()
    fixtures()
    other_formats()
