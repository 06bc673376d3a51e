#!/usr/bin/python3
"""Golden logits for peft4j's T5 / mT5 and Mixtral tests, computed independently of peft4j.

Runs on Debian's python3-torch (1.13) + numpy, without transformers or PEFT: each forward below is written in plain
torch following transformers' modeling_t5.py and modeling_mixtral.py (eager attention, additive finfo.min masks,
softmax in float32), and each adapter follows PEFT's LoRA / IA3 layers (lora: W x + s * B A x, s = alpha / r; IA3:
the output scaled by l, or for a feed-forward module the input scaled by l).

For each case it writes <case>/config.json, <case>/model.safetensors (seeded random weights, HF key names), one
adapter folder per adapter (<case>/<adapter>/adapter_config.json + adapter_model.safetensors, PEFT's layout and key
names) and <case>/golden.safetensors:
  T5:      input_ids, attention_mask (encoder; row 1 right-padded by 2), decoder_input_ids, logits (base),
           logits_<adapter> (adapted), merged_<adapter> (the base with the adapter merged into its weights),
           row1_unpadded_logits, greedy_ids (8 greedy decoder tokens for row 0 of the encoder input, no cache).
  Mixtral: input_ids, attention_mask (row 1 left-padded by 2), logits, logits_<adapter>, merged_<adapter>,
           row1_unpadded_logits, greedy_ids (prompt row 0 + 8 greedy tokens, no cache).
Re-run:  /usr/bin/python3 gen_goldens_t5_mixtral.py   (from this directory)
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


def rms_norm(x, w, eps):  # T5LayerNorm and MixtralRMSNorm agree in float32
    xf = x.float()
    return w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


ACT = {"relu": F.relu, "gelu_new": gelu_new, "gelu": F.gelu, "silu": F.silu}


# ------------------------------------------------------------------ adapters (PEFT's layers, written out)

class Adapted:
    """A state dict seen through an adapter: lin(x, name) applies the base Linear plus the adapter, if any."""

    def __init__(self, sd, lora=None, ia3=None):
        self.sd, self.lora, self.ia3 = sd, lora or {}, ia3 or {}

    def lin(self, x, name):
        w, b = self.sd[name + ".weight"], self.sd.get(name + ".bias")
        if name in self.ia3:
            l, ff = self.ia3[name]
            if ff:  # IA3 feed-forward: the input scaled, (1, in)
                return F.linear(x * l.flatten(), w, b)
            y = F.linear(x, w, b)
            return y * l.flatten()
        y = F.linear(x, w, b)
        if name in self.lora:
            a, bb, s = self.lora[name]
            y = y + F.linear(F.linear(x, a), bb) * s
        return y


def merged(sd, lora=None, ia3=None):
    """PEFT's merge: W + s * B @ A for LoRA, W * l (rows; columns for feed-forward) for IA3."""
    out = dict(sd)
    for name, (a, b, s) in (lora or {}).items():
        out[name + ".weight"] = sd[name + ".weight"] + (b @ a) * s
    for name, (l, ff) in (ia3 or {}).items():
        w = sd[name + ".weight"]
        out[name + ".weight"] = w * l.reshape(1, -1) if ff else w * l.reshape(-1, 1)
    return out


def lora_config(targets, r, alpha, task):
    return {"alpha_pattern": {}, "auto_mapping": None, "base_model_name_or_path": None, "bias": "none",
            "exclude_modules": None, "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
            "layer_replication": None, "layers_pattern": None, "layers_to_transform": None, "loftq_config": {},
            "lora_alpha": alpha, "lora_bias": False, "lora_dropout": 0.0, "megatron_config": None,
            "megatron_core": "megatron.core", "modules_to_save": None, "peft_type": "LORA", "r": r,
            "rank_pattern": {}, "revision": None, "target_modules": targets, "target_parameters": None,
            "task_type": task, "use_dora": False, "use_rslora": False}


def ia3_config(targets, ff, task):
    return {"auto_mapping": None, "base_model_name_or_path": None, "exclude_modules": None, "fan_in_fan_out": False,
            "feedforward_modules": ff, "inference_mode": True, "init_ia3_weights": True, "modules_to_save": None,
            "peft_type": "IA3", "revision": None, "target_modules": targets, "task_type": task}


def module_names(sd):
    return [k[: -len(".weight")] for k in sd if k.endswith(".weight")]


def matches(name, targets):  # PEFT's list form: the name or a ".<target>" suffix
    return any(name == t or name.endswith("." + t) for t in targets)


def make_lora(sd, targets, r, alpha, g):
    lora = {}
    for n in module_names(sd):
        if matches(n, targets) and sd[n + ".weight"].dim() == 2 and "embed" not in n and n != "shared":
            out_f, in_f = sd[n + ".weight"].shape
            lora[n] = (torch.randn(r, in_f, generator=g) * 0.15, torch.randn(out_f, r, generator=g) * 0.15, alpha / r)
    return lora


def make_ia3(sd, targets, ff, g):
    ia3 = {}
    for n in module_names(sd):
        if matches(n, targets) and sd[n + ".weight"].dim() == 2:
            out_f, in_f = sd[n + ".weight"].shape
            is_ff = matches(n, ff)
            shape = (1, in_f) if is_ff else (out_f, 1)
            ia3[n] = (1 + torch.randn(*shape, generator=g) * 0.3, is_ff)
    return ia3


def write_adapter(folder, config, tensors):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    save_safetensors(os.path.join(folder, "adapter_model.safetensors"), tensors)


def lora_tensors(lora, prefix):
    out = {}
    for n, (a, b, _) in lora.items():
        out[prefix + n + ".lora_A.weight"] = a
        out[prefix + n + ".lora_B.weight"] = b
    return out


def ia3_tensors(ia3, prefix):
    return {prefix + n + ".ia3_l": l for n, (l, _) in ia3.items()}


# ------------------------------------------------------------------ T5 / mT5 (modeling_t5.py)

def relative_position_bucket(relative_position, bidirectional, num_buckets, max_distance):
    relative_buckets = 0
    if bidirectional:
        num_buckets //= 2
        relative_buckets += (relative_position > 0).to(torch.long) * num_buckets
        relative_position = torch.abs(relative_position)
    else:
        relative_position = -torch.min(relative_position, torch.zeros_like(relative_position))
    max_exact = num_buckets // 2
    is_small = relative_position < max_exact
    if_large = max_exact + (torch.log(relative_position.float() / max_exact) / math.log(max_distance / max_exact)
                            * (num_buckets - max_exact)).to(torch.long)
    if_large = torch.min(if_large, torch.full_like(if_large, num_buckets - 1))
    return relative_buckets + torch.where(is_small, relative_position, if_large)


def t5_bias(table, q_len, k_len, bidirectional, cfg):
    ctx = torch.arange(q_len, dtype=torch.long)[:, None]
    mem = torch.arange(k_len, dtype=torch.long)[None, :]
    buckets = relative_position_bucket(mem - ctx, bidirectional, cfg["relative_attention_num_buckets"],
                                       cfg["relative_attention_max_distance"])
    return F.embedding(buckets, table).permute([2, 0, 1]).unsqueeze(0)  # [1, H, q, k]


def t5_attention(m, x, kv, bias, p, cfg):
    B, Tq = x.shape[:2]
    Tk = kv.shape[1]
    H, dk = cfg["num_heads"], cfg["d_kv"]
    q = m.lin(x, p + ".q").view(B, Tq, H, dk).transpose(1, 2)
    k = m.lin(kv, p + ".k").view(B, Tk, H, dk).transpose(1, 2)
    v = m.lin(kv, p + ".v").view(B, Tk, H, dk).transpose(1, 2)
    scores = torch.matmul(q, k.transpose(3, 2)) + bias  # no 1/sqrt(d) scaling in T5
    w = F.softmax(scores.float(), dim=-1).type_as(scores)
    o = torch.matmul(w, v).transpose(1, 2).reshape(B, Tq, H * dk)
    return m.lin(o, p + ".o")


def t5_ff(m, x, p, cfg):
    proj = cfg["feed_forward_proj"]
    gated = proj.startswith("gated-")
    act = ACT["gelu_new" if proj == "gated-gelu" else proj.split("-")[-1]]
    if gated:
        h = act(m.lin(x, p + ".wi_0")) * m.lin(x, p + ".wi_1")
    else:
        h = act(m.lin(x, p + ".wi"))
    return m.lin(h, p + ".wo")


def t5_encode(m, cfg, ids, mask):
    sd, eps = m.sd, cfg["layer_norm_epsilon"]
    T = ids.shape[1]
    x = F.embedding(ids, sd["shared.weight"])
    pad = torch.zeros(ids.shape[0], 1, 1, T).masked_fill(mask[:, None, None, :] == 0, MIN)
    bias = t5_bias(sd["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"], T, T, True, cfg) + pad
    for l in range(cfg["num_layers"]):
        p = "encoder.block.%d.layer." % l
        x = x + t5_attention(m, rms_norm(x, sd[p + "0.layer_norm.weight"], eps),
                             rms_norm(x, sd[p + "0.layer_norm.weight"], eps), bias, p + "0.SelfAttention", cfg)
        x = x + t5_ff(m, rms_norm(x, sd[p + "1.layer_norm.weight"], eps), p + "1.DenseReluDense", cfg)
    return rms_norm(x, sd["encoder.final_layer_norm.weight"], eps)


def t5_forward(m, cfg, ids, mask, dec_ids):
    sd, eps = m.sd, cfg["layer_norm_epsilon"]
    enc = t5_encode(m, cfg, ids, mask)
    B, T = dec_ids.shape
    x = F.embedding(dec_ids, sd["shared.weight"])
    causal = torch.zeros(1, 1, T, T).masked_fill(~torch.tril(torch.ones(T, T, dtype=torch.bool)), MIN)
    self_bias = t5_bias(sd["decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"], T, T, False,
                        cfg) + causal
    cross_bias = torch.zeros(B, 1, 1, ids.shape[1]).masked_fill(mask[:, None, None, :] == 0, MIN)
    for l in range(cfg.get("num_decoder_layers") or cfg["num_layers"]):
        p = "decoder.block.%d.layer." % l
        h = rms_norm(x, sd[p + "0.layer_norm.weight"], eps)
        x = x + t5_attention(m, h, h, self_bias, p + "0.SelfAttention", cfg)
        x = x + t5_attention(m, rms_norm(x, sd[p + "1.layer_norm.weight"], eps), enc, cross_bias,
                             p + "1.EncDecAttention", cfg)
        x = x + t5_ff(m, rms_norm(x, sd[p + "2.layer_norm.weight"], eps), p + "2.DenseReluDense", cfg)
    x = rms_norm(x, sd["decoder.final_layer_norm.weight"], eps)
    if cfg.get("tie_word_embeddings", True):
        return F.linear(x * cfg["d_model"] ** -0.5, sd["shared.weight"])
    return F.linear(x, sd["lm_head.weight"])


def t5_weights(cfg, g):
    D, V, Fd = cfg["d_model"], cfg["vocab_size"], cfg["d_ff"]
    inner = cfg["num_heads"] * cfg["d_kv"]
    r = lambda *s: torch.randn(*s, generator=g) * 0.2
    gated = cfg["feed_forward_proj"].startswith("gated-")
    sd = {"shared.weight": torch.randn(V, D, generator=g) * 0.5}

    def attn(p, rel):
        for n, shape in (("q", (inner, D)), ("k", (inner, D)), ("v", (inner, D)), ("o", (D, inner))):
            sd[p + "." + n + ".weight"] = r(*shape)
        if rel:
            sd[p + ".relative_attention_bias.weight"] = r(cfg["relative_attention_num_buckets"], cfg["num_heads"])

    def ff(p):
        if gated:
            sd[p + ".wi_0.weight"] = r(Fd, D)
            sd[p + ".wi_1.weight"] = r(Fd, D)
        else:
            sd[p + ".wi.weight"] = r(Fd, D)
        sd[p + ".wo.weight"] = r(D, Fd)

    for l in range(cfg["num_layers"]):
        p = "encoder.block.%d.layer." % l
        attn(p + "0.SelfAttention", l == 0)
        sd[p + "0.layer_norm.weight"] = 1 + r(D)
        ff(p + "1.DenseReluDense")
        sd[p + "1.layer_norm.weight"] = 1 + r(D)
    sd["encoder.final_layer_norm.weight"] = 1 + r(D)
    for l in range(cfg.get("num_decoder_layers") or cfg["num_layers"]):
        p = "decoder.block.%d.layer." % l
        attn(p + "0.SelfAttention", l == 0)
        sd[p + "0.layer_norm.weight"] = 1 + r(D)
        attn(p + "1.EncDecAttention", False)
        sd[p + "1.layer_norm.weight"] = 1 + r(D)
        ff(p + "2.DenseReluDense")
        sd[p + "2.layer_norm.weight"] = 1 + r(D)
    sd["decoder.final_layer_norm.weight"] = 1 + r(D)
    if not cfg.get("tie_word_embeddings", True):
        # a small head keeps the logits near 1, so that float32 rounding stays far under the tests' 1e-5
        sd["lm_head.weight"] = r(V, D) * 0.25
    return sd


def t5_checkpoint(sd):
    """As transformers saves T5ForConditionalGeneration: the tied embed_tokens copies written too."""
    out = dict(sd)
    out["encoder.embed_tokens.weight"] = sd["shared.weight"]
    out["decoder.embed_tokens.weight"] = sd["shared.weight"]
    return out


def t5_greedy(m, cfg, ids, mask, n):
    dec = torch.tensor([[cfg["decoder_start_token_id"]]])
    for _ in range(n):
        nxt = t5_forward(m, cfg, ids, mask, dec)[:, -1].argmax(-1, keepdim=True)
        dec = torch.cat([dec, nxt], 1)
    return dec


# ------------------------------------------------------------------ Mixtral (modeling_mixtral.py)

def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def positions_from_mask(attention_mask):
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.masked_fill(attention_mask == 0, 1)


def mixtral_moe(m, x, p, cfg):
    B, T, D = x.shape
    h = x.view(-1, D)
    router_logits = m.lin(h, p + ".gate")
    weights = F.softmax(router_logits, dim=1, dtype=torch.float)
    weights, selected = torch.topk(weights, cfg["num_experts_per_tok"], dim=-1)
    weights = weights / weights.sum(dim=-1, keepdim=True)
    weights = weights.to(h.dtype)
    out = torch.zeros_like(h)
    act = ACT[cfg["hidden_act"]]
    for e in range(cfg["num_local_experts"]):
        top_x, idx = torch.where(selected == e)  # tokens routed to e, and which of their k slots
        if top_x.numel() == 0:
            continue
        cur = h[top_x]
        q = p + ".experts.%d." % e
        y = m.lin(act(m.lin(cur, q + "w1")) * m.lin(cur, q + "w3"), q + "w2") * weights[top_x, idx, None]
        out.index_add_(0, top_x, y.to(h.dtype))
    return out.view(B, T, D)


def mixtral_forward(m, cfg, ids, attention_mask):
    sd = m.sd
    B, T = ids.shape
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg["hidden_size"] // H
    eps = cfg["rms_norm_eps"]
    x = F.embedding(ids, sd["model.embed_tokens.weight"])
    pos = positions_from_mask(attention_mask)
    inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    freqs = pos[:, :, None].float() * inv[None, None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[:, None], emb.sin()[:, None]
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    allowed = j <= i
    if cfg.get("sliding_window"):
        allowed = allowed & (i - j < cfg["sliding_window"])
    allowed = allowed[None, None] & (attention_mask[:, None, None, :] != 0)
    mask = torch.zeros(B, 1, T, T).masked_fill(~allowed, MIN)
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        h = rms_norm(x, sd[p + "input_layernorm.weight"], eps)
        q = m.lin(h, p + "self_attn.q_proj").view(B, T, H, hd).transpose(1, 2)
        k = m.lin(h, p + "self_attn.k_proj").view(B, T, KV, hd).transpose(1, 2)
        v = m.lin(h, p + "self_attn.v_proj").view(B, T, KV, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(H // KV, dim=1)
        v = v.repeat_interleave(H // KV, dim=1)
        w = torch.matmul(q, k.transpose(2, 3)) * hd ** -0.5 + mask
        w = F.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
        o = torch.matmul(w, v).transpose(1, 2).reshape(B, T, H * hd)
        x = x + m.lin(o, p + "self_attn.o_proj")
        x = x + mixtral_moe(m, rms_norm(x, sd[p + "post_attention_layernorm.weight"], eps), p + "block_sparse_moe", cfg)
    x = rms_norm(x, sd["model.norm.weight"], eps)
    head = sd["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else sd["lm_head.weight"]
    return F.linear(x, head)


def mixtral_weights(cfg, g):
    D, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = D // H
    r = lambda *s: torch.randn(*s, generator=g) * 0.2
    sd = {"model.embed_tokens.weight": torch.randn(V, D, generator=g) * 0.3}
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        sd[p + "self_attn.q_proj.weight"] = r(H * hd, D)
        sd[p + "self_attn.k_proj.weight"] = r(KV * hd, D)
        sd[p + "self_attn.v_proj.weight"] = r(KV * hd, D)
        sd[p + "self_attn.o_proj.weight"] = r(D, H * hd)
        sd[p + "block_sparse_moe.gate.weight"] = torch.randn(cfg["num_local_experts"], D, generator=g)
        for e in range(cfg["num_local_experts"]):
            q = p + "block_sparse_moe.experts.%d." % e
            sd[q + "w1.weight"] = r(I, D)
            sd[q + "w3.weight"] = r(I, D)
            sd[q + "w2.weight"] = r(D, I)
        sd[p + "input_layernorm.weight"] = 1 + r(D)
        sd[p + "post_attention_layernorm.weight"] = 1 + r(D)
    sd["model.norm.weight"] = 1 + r(D)
    if not cfg.get("tie_word_embeddings"):
        sd["lm_head.weight"] = r(V, D)
    return sd


def mixtral_greedy(m, cfg, ids, n):
    for _ in range(n):
        nxt = mixtral_forward(m, cfg, ids, torch.ones_like(ids))[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], 1)
    return ids


# ------------------------------------------------------------------ cases

T5_BASE = dict(vocab_size=50, d_model=32, d_kv=8, num_heads=4, d_ff=48, num_layers=2, num_decoder_layers=3,
               layer_norm_epsilon=1e-6, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
               is_encoder_decoder=True)
T5_CASES = {
    # T5 v1.0: ReLU feed-forward, tied head (d_model^-0.5 rescale), few buckets and a short max distance so that
    # the logarithmic buckets and their clamp are both reached
    "t5-relu-tied": dict(T5_BASE, model_type="t5", architectures=["T5ForConditionalGeneration"],
                         feed_forward_proj="relu", tie_word_embeddings=True, relative_attention_num_buckets=8,
                         relative_attention_max_distance=5),
    # mT5 / T5 v1.1: gated-gelu (gelu_new), untied head, inner dim 4 * 6 != d_model
    "mt5-gated-untied": dict(T5_BASE, model_type="mt5", architectures=["MT5ForConditionalGeneration"], d_kv=6,
                             feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                             relative_attention_num_buckets=32, relative_attention_max_distance=128),
}
MIXTRAL_CASES = {
    "mixtral-top2": dict(model_type="mixtral", architectures=["MixtralForCausalLM"], vocab_size=50, hidden_size=32,
                         intermediate_size=24, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         num_local_experts=4, num_experts_per_tok=2, hidden_act="silu", rms_norm_eps=1e-5,
                         rope_theta=1000000.0, sliding_window=4, tie_word_embeddings=False,
                         max_position_embeddings=128, router_aux_loss_coef=0.02, output_router_logits=False),
}

# encoder input: row 1 right-padded by 2 (its tokens are ids[1, :5]); decoder input: start token first
ENC_IDS = torch.tensor([[3, 17, 42, 8, 1, 29, 11], [5, 23, 48, 2, 36, 0, 0]])
ENC_MASK = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0]])
DEC_IDS = torch.tensor([[0, 7, 3, 12, 9], [0, 21, 4, 30, 2]])
# decoder-only input: row 1 left-padded by 2 (its tokens are ids[1, 2:])
IDS = torch.tensor([[3, 17, 42, 8, 1, 29, 11], [0, 0, 5, 23, 48, 2, 36]])
MASK = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1, 1]])


def write_model(name, cfg, checkpoint):
    d = os.path.join(HERE, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(dict(cfg, torch_dtype="float32"), f, indent=2, sort_keys=True)
    save_safetensors(os.path.join(d, "model.safetensors"), checkpoint)
    return d


def t5_case(name, cfg):
    g = torch.Generator().manual_seed(sum(map(ord, name)))
    sd = t5_weights(cfg, g)
    d = write_model(name, cfg, t5_checkpoint(sd))
    mt5 = cfg["model_type"] == "mt5"
    lora = make_lora(sd, ["q", "v"], 4, 8, g)  # PEFT's default LoRA targets for t5 / mt5
    ia3_targets, ia3_ff = (["k", "v", "wi_1"], []) if mt5 else (["k", "v", "wo"], ["wo"])  # PEFT's IA3 defaults
    ia3 = make_ia3(sd, ia3_targets, ia3_ff, g)
    write_adapter(os.path.join(d, "lora"), lora_config(["q", "v"], 4, 8, "SEQ_2_SEQ_LM"),
                  lora_tensors(lora, "base_model.model."))
    write_adapter(os.path.join(d, "ia3"), ia3_config(ia3_targets, ia3_ff, "SEQ_2_SEQ_LM"),
                  ia3_tensors(ia3, "base_model.model."))
    out = {"input_ids": ENC_IDS, "attention_mask": ENC_MASK, "decoder_input_ids": DEC_IDS}
    with torch.no_grad():
        out["logits"] = t5_forward(Adapted(sd), cfg, ENC_IDS, ENC_MASK, DEC_IDS)
        alone = t5_forward(Adapted(sd), cfg, ENC_IDS[1:, :5], ENC_MASK[1:, :5], DEC_IDS[1:])
        assert torch.allclose(out["logits"][1], alone[0], atol=1e-5), name  # padding is invisible
        out["row1_unpadded_logits"] = alone
        out["logits_lora"] = t5_forward(Adapted(sd, lora=lora), cfg, ENC_IDS, ENC_MASK, DEC_IDS)
        out["merged_lora"] = t5_forward(Adapted(merged(sd, lora=lora)), cfg, ENC_IDS, ENC_MASK, DEC_IDS)
        out["logits_ia3"] = t5_forward(Adapted(sd, ia3=ia3), cfg, ENC_IDS, ENC_MASK, DEC_IDS)
        out["merged_ia3"] = t5_forward(Adapted(merged(sd, ia3=ia3)), cfg, ENC_IDS, ENC_MASK, DEC_IDS)
        out["greedy_ids"] = t5_greedy(Adapted(sd), cfg, ENC_IDS[:1], ENC_MASK[:1], 8)
        out["greedy_ids_lora"] = t5_greedy(Adapted(sd, lora=lora), cfg, ENC_IDS[:1], ENC_MASK[:1], 8)
    for k in ("logits_lora", "logits_ia3"):
        assert (out[k] - out["logits"]).abs().max() > 1e-2, (name, k)
    save_safetensors(os.path.join(d, "golden.safetensors"), out)
    print(name, "logits", tuple(out["logits"].shape), "greedy", out["greedy_ids"].tolist())


def mixtral_case(name, cfg):
    g = torch.Generator().manual_seed(sum(map(ord, name)))
    sd = mixtral_weights(cfg, g)
    d = write_model(name, cfg, sd)
    targets = ["q_proj", "v_proj", "w1", "w2", "w3"]  # attention and the experts' Linear modules by name
    lora = make_lora(sd, targets, 4, 8, g)
    write_adapter(os.path.join(d, "lora"), lora_config(targets, 4, 8, "CAUSAL_LM"),
                  lora_tensors(lora, "base_model.model."))
    out = {"input_ids": IDS, "attention_mask": MASK}
    with torch.no_grad():
        out["logits"] = mixtral_forward(Adapted(sd), cfg, IDS, MASK)
        alone = mixtral_forward(Adapted(sd), cfg, IDS[1:, 2:], MASK[1:, 2:])
        assert torch.allclose(out["logits"][1, 2:], alone[0], atol=1e-5), name
        out["row1_unpadded_logits"] = alone
        out["logits_lora"] = mixtral_forward(Adapted(sd, lora=lora), cfg, IDS, MASK)
        out["merged_lora"] = mixtral_forward(Adapted(merged(sd, lora=lora)), cfg, IDS, MASK)
        out["greedy_ids"] = mixtral_greedy(Adapted(sd), cfg, IDS[:1], 8)
        out["greedy_ids_lora"] = mixtral_greedy(Adapted(sd, lora=lora), cfg, IDS[:1], 8)
    assert (out["logits_lora"] - out["logits"]).abs().max() > 1e-2, name
    save_safetensors(os.path.join(d, "golden.safetensors"), out)
    print(name, "logits", tuple(out["logits"].shape), "greedy", out["greedy_ids"].tolist())


if __name__ == "__main__":
    for n, c in T5_CASES.items():
        t5_case(n, c)
    for n, c in MIXTRAL_CASES.items():
        mixtral_case(n, c)
