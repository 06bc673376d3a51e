#!/usr/bin/python3
"""Numeric goldens for peft4j's tuner math (LoRA, IA3, AdaLoRA layer forward and merge).

Run with Debian's python3-torch (torch 1.13, `apt-get install python3-torch`):

    /usr/bin/python3 make_goldens.py > tuner_goldens.json

Each case restates one PEFT layer method (peft/tuners/{lora,ia3,adalora}/layer.py, PEFT 0.9+ semantics) with plain
torch ops, written from PEFT's source independently of peft4j's Java code: the dtype casts, the in-place vs
out-of-place additions and the order of operations follow PEFT line by line. Inputs are drawn from a seeded torch
generator and stored in the JSON, so the Java side does not need torch's RNG to agree.

Tensor encoding: {"dtype": "float32"|"bfloat16"|"int64", "shape": [...], "data": [row-major values]}; bfloat16 values
are written as the exact float they represent.
"""
import json

import torch

torch.manual_seed(20261129)
g = torch.Generator().manual_seed(20261129)


def rnd(*shape, scale=1.0):
    return torch.randn(*shape, generator=g) * scale


def enc(t):
    if t.dtype == torch.int64:
        return {"dtype": "int64", "shape": list(t.shape), "data": t.flatten().tolist()}
    name = {torch.float32: "float32", torch.bfloat16: "bfloat16"}[t.dtype]
    return {"dtype": name, "shape": list(t.shape), "data": t.detach().float().flatten().tolist()}


def linear(x, w, b=None, fan_in_fan_out=False):
    # nn.Linear, or transformers' Conv1D (weight stored (in, out)): x @ W + b
    if fan_in_fan_out:
        out = x @ w
        return out if b is None else out + b
    return torch.nn.functional.linear(x, w, b)


def lora_get_delta_weight(a, b, s, fan_in_fan_out):
    cast = b.dtype in (torch.float16, torch.bfloat16)
    wa, wb = (a.float(), b.float()) if cast else (a, b)
    out = wb @ wa
    out = (out.T if fan_in_fan_out else out) * s
    return out.to(b.dtype) if cast else out


def lora_forward(x, w, bias, adapters, fan_in_fan_out=False):
    # lora.Linear.forward (unmerged): out-of-place sum, cast to the base output dtype at the end
    result = linear(x, w, bias, fan_in_fan_out)
    dtype_out = result.dtype
    for ad in adapters:
        x = x.to(ad["A"].dtype)
        h = torch.nn.functional.linear(x, ad["A"])
        o = torch.nn.functional.linear(h, ad["B"], ad.get("bB"))
        result = result + o * ad["s"]
    return result.to(dtype_out)


cases = {}

# --- LoRA ---------------------------------------------------------------------------------------------------------
x = rnd(2, 3, 5)
W = rnd(6, 5, scale=0.5)
bias = rnd(6, scale=0.1)
A1, B1 = rnd(2, 5, scale=0.4), rnd(6, 2, scale=0.4)
A2, B2, bB2 = rnd(3, 5, scale=0.4), rnd(6, 3, scale=0.4), rnd(6, scale=0.1)
ads = [{"A": A1, "B": B1, "s": 2.0}, {"A": A2, "B": B2, "bB": bB2, "s": 0.5}]
Wm = W.clone()
Wm += lora_get_delta_weight(A1, B1, 2.0, False)
Wm += lora_get_delta_weight(A2, B2, 0.5, False)
bm = bias + bB2 * 0.5
cases["lora_linear_fp32_two_adapters"] = {
    "x": enc(x), "W": enc(W), "bias": enc(bias), "A1": enc(A1), "B1": enc(B1), "s1": 2.0,
    "A2": enc(A2), "B2": enc(B2), "bB2": enc(bB2), "s2": 0.5,
    "forward": enc(lora_forward(x, W, bias, ads)),
    "delta_weight_1": enc(lora_get_delta_weight(A1, B1, 2.0, False)),
    "merged_W": enc(Wm), "merged_bias": enc(bm),
    "merged_forward": enc(linear(x, Wm, bm)),
}

# bf16 base, fp32 adapter (PeftModel path, autocast_adapter_dtype=True)
xb, Wb = x.bfloat16(), W.bfloat16()
out = lora_forward(xb, Wb, None, [{"A": A1, "B": B1, "s": 2.0}])
Wbm = Wb.clone()
Wbm += lora_get_delta_weight(A1, B1, 2.0, False)  # fp32 delta added into bf16 in place: rounded once
Wbs = Wb.clone()
Wbs += lora_get_delta_weight(A1, B1, 2.0, False).to(torch.bfloat16)  # safe merge: delta rounded first
cases["lora_bf16_base_fp32_adapter"] = {
    "x": enc(xb), "W": enc(Wb), "A": enc(A1), "B": enc(B1), "s": 2.0,
    "forward": enc(out), "merged_W_unsafe": enc(Wbm), "merged_W_safe": enc(Wbs),
}

# all bf16 (transformers integration path: adapters keep the base dtype)
A1b, B1b = A1.bfloat16(), B1.bfloat16()
Wbm2 = Wb.clone()
Wbm2 += lora_get_delta_weight(A1b, B1b, 2.0, False)
cases["lora_bf16_adapter"] = {
    "x": enc(xb), "W": enc(Wb), "A": enc(A1b), "B": enc(B1b), "s": 2.0,
    "forward": enc(lora_forward(xb, Wb, None, [{"A": A1b, "B": B1b, "s": 2.0}])),
    "delta_weight": enc(lora_get_delta_weight(A1b, B1b, 2.0, False)),
    "merged_W": enc(Wbm2),
}

# transformers Conv1D target (fan_in_fan_out): weight (in, out)
Wc = rnd(5, 6, scale=0.5)
Wcm = Wc.clone()
Wcm += lora_get_delta_weight(A1, B1, 2.0, True)
cases["lora_conv1d"] = {
    "x": enc(x), "W": enc(Wc), "bias": enc(bias), "A": enc(A1), "B": enc(B1), "s": 2.0,
    "forward": enc(lora_forward(x, Wc, bias, [{"A": A1, "B": B1, "s": 2.0}], fan_in_fan_out=True)),
    "merged_W": enc(Wcm),
}

# Embedding: lora_embedding_A (r, num), lora_embedding_B (dim, r)
E = rnd(10, 4)
ids = torch.tensor([[1, 0, 9], [3, 3, 7]])
eA, eB = rnd(2, 10, scale=0.5), rnd(4, 2, scale=0.5)
base = torch.nn.functional.embedding(ids, E)
after_a = torch.nn.functional.embedding(ids, eA.T)
added = (after_a @ eB.T) * 1.5
Em = E.clone()
Em += lora_get_delta_weight(eA, eB, 1.5, True).to(E.dtype)
cases["lora_embedding"] = {
    "ids": enc(ids), "W": enc(E), "A": enc(eA), "B": enc(eB), "s": 1.5, "embed_scale": 2.5,
    "forward": enc((base + added).to(base.dtype)),
    "forward_embed_scale": enc((base + added * 2.5).to(base.dtype)),
    "merged_W": enc(Em),
}

# --- IA3 ----------------------------------------------------------------------------------------------------------
def ia3_forward(x, w, b, ls, feedforward, fan_in_fan_out=False):
    previous_dtype = x.dtype
    dtype = previous_dtype
    scaling = 1
    for l in ls:
        dtype = l.dtype
        scaling = scaling * l.flatten()
    if feedforward:
        x = x.to(dtype)
        interm = (x * scaling).to(previous_dtype)
        return linear(interm, w, b, fan_in_fan_out)
    result = linear(x, w, b, fan_in_fan_out)
    return (result * scaling).to(result.dtype)


def ia3_merge(w, b, l, feedforward, fan_in_fan_out):
    l2 = l.T if fan_in_fan_out else l
    w2 = torch.mul(w, l2).to(w.dtype)
    b2 = b
    if not feedforward and b is not None:
        b2 = torch.mul(b, l.reshape(b.shape)).to(b.dtype)
    return w2, b2


l_out = 1 + rnd(6, 1, scale=0.3)
l_ff = 1 + rnd(1, 5, scale=0.3)
l_out2 = 1 + rnd(6, 1, scale=0.3)
for name, l, ff in (("ia3_linear_out", l_out, False), ("ia3_linear_ff", l_ff, True)):
    wm, bm = ia3_merge(W, bias, l, ff, False)
    cases[name] = {"x": enc(x), "W": enc(W), "bias": enc(bias), "l": enc(l), "feedforward": ff,
                   "forward": enc(ia3_forward(x, W, bias, [l], ff)), "merged_W": enc(wm), "merged_bias": enc(bm),
                   "merged_forward": enc(linear(x, wm, bm))}
for name, l, ff in (("ia3_conv1d_out", l_out, False), ("ia3_conv1d_ff", l_ff, True)):
    wm, bm = ia3_merge(Wc, bias, l, ff, True)
    cases[name] = {"x": enc(x), "W": enc(Wc), "bias": enc(bias), "l": enc(l), "feedforward": ff,
                   "forward": enc(ia3_forward(x, Wc, bias, [l], ff, True)), "merged_W": enc(wm),
                   "merged_bias": enc(bm), "merged_forward": enc(linear(x, wm, bm, True))}
cases["ia3_two_adapters_out"] = {"x": enc(x), "W": enc(W), "bias": enc(bias), "l1": enc(l_out), "l2": enc(l_out2),
                                 "forward": enc(ia3_forward(x, W, bias, [l_out, l_out2], False))}
cases["ia3_bf16_base_fp32_vector"] = {
    "x": enc(xb), "W": enc(Wb), "l_out": enc(l_out), "l_ff": enc(l_ff),
    "forward_out": enc(ia3_forward(xb, Wb, None, [l_out], False)),
    "forward_ff": enc(ia3_forward(xb, Wb, None, [l_ff], True)),
}

# --- AdaLoRA ------------------------------------------------------------------------------------------------------
aA, aE, aB = rnd(3, 5, scale=0.4), rnd(3, 1, scale=0.5), rnd(6, 3, scale=0.4)
ranknum = torch.tensor([3.0])
s = 8.0  # lora_alpha > 0 -> scaling = lora_alpha


def adalora_forward(x, w, b, A, E, B, s, ranknum):
    result = torch.nn.functional.linear(x, w, b)
    x = x.to(A.dtype)
    result += (x @ (A * E).T @ B.T) * s / (ranknum + 1e-5)
    return result


def adalora_delta_weight(A, E, B, s, ranknum, fan_in_fan_out):
    d = B @ (A * E)
    return (d.T if fan_in_fan_out else d) * s / (ranknum + 1e-5)


dw = adalora_delta_weight(aA, aE, aB, s, ranknum, False)
Wam = W.clone()
Wam += dw
cases["adalora_linear"] = {
    "x": enc(x), "W": enc(W), "bias": enc(bias), "A": enc(aA), "E": enc(aE), "B": enc(aB), "s": s,
    "ranknum": enc(ranknum),
    "forward": enc(adalora_forward(x, W, bias, aA, aE, aB, s, ranknum)),
    "delta_weight": enc(dw), "delta_weight_fifo": enc(adalora_delta_weight(aA, aE, aB, s, ranknum, True)),
    "merged_W": enc(Wam),
}
cases["adalora_bf16_base_fp32_adapter"] = {
    "x": enc(xb), "W": enc(Wb), "A": enc(aA), "E": enc(aE), "B": enc(aB), "s": s, "ranknum": enc(ranknum),
    "forward": enc(adalora_forward(xb, Wb, None, aA, aE, aB, s, ranknum)),
}

# AdaLoRA RankAllocator.budget_schedule, every step of a small schedule (pure Python, PEFT's formula)
def budget_schedule(step, init_bgt, target_bgt, tinit, tfinal, total_step, delta_t):
    if step <= tinit:
        return init_bgt, False
    if step > total_step - tfinal:
        return target_bgt, True
    mul_coeff = 1 - (step - tinit) / (total_step - tfinal - tinit)
    return int((init_bgt - target_bgt) * (mul_coeff**3) + target_bgt), step % delta_t == 0


sched = dict(init_bgt=97, target_bgt=31, tinit=10, tfinal=20, total_step=100, delta_t=3)
cases["adalora_budget_schedule"] = dict(sched, steps=[list(budget_schedule(t, **sched)) for t in range(0, 103)])

# AdaLoRA orthogonal regularisation (AdaLoraModel.forward): mean of ||P P^T - I||_F (lora_A), ||P^T P - I||_F (lora_B)
params = {"m.q.lora_A.default": rnd(3, 5, scale=0.5), "m.q.lora_E.default": rnd(3, 1),
          "m.q.lora_B.default": rnd(6, 3, scale=0.5), "m.v.lora_A.default": rnd(2, 5, scale=0.5),
          "m.v.lora_B.default": rnd(6, 2, scale=0.5), "m.v.lora_A.other": rnd(2, 5)}
regu, num = 0, 0
for n, p in params.items():
    if ("lora_A" in n or "lora_B" in n) and "default" in n:
        cov = p @ p.T if "lora_A" in n else p.T @ p
        regu += torch.norm(cov - torch.eye(*cov.size()), p="fro")
        num += 1
cases["adalora_orth_reg"] = {"params": {n: enc(p) for n, p in params.items()}, "adapter": "default",
                             "reg": regu.item() / num}

# AdaLoRA RankAllocator: update_ipt over three steps, then mask_to_budget (restated from PEFT's adalora/layer.py)
ra_params = {}
for m, out in (("m.q", 5), ("m.v", 3)):
    ra_params[f"{m}.lora_A.default"] = rnd(4, 6, scale=0.5)
    ra_params[f"{m}.lora_E.default"] = rnd(4, 1, scale=0.5)
    ra_params[f"{m}.lora_B.default"] = rnd(out, 4, scale=0.5)
ra_params["m.q.lora_A.other"] = rnd(4, 6)
ra_params["m.q.ranknum.default"] = torch.tensor([4.0])
ra_initial = {n: enc(p) for n, p in ra_params.items()}
beta1, beta2 = 0.85, 0.8
ipt, avg_ipt, avg_unc = {}, {}, {}
ra_grads = []
for step in range(3):
    grads = {n: rnd(*p.shape) for n, p in ra_params.items()}
    ra_grads.append({n: enc(g) for n, g in grads.items()})
    for n, p in ra_params.items():  # update_ipt
        if "lora_" in n and "default" in n:
            if n not in ipt:
                ipt[n], avg_ipt[n], avg_unc[n] = torch.zeros_like(p), torch.zeros_like(p), torch.zeros_like(p)
            ipt[n] = (p * grads[n]).abs()
            avg_ipt[n] = beta1 * avg_ipt[n] + (1 - beta1) * ipt[n]
            avg_unc[n] = beta2 * avg_unc[n] + (1 - beta2) * (ipt[n] - avg_ipt[n]).abs()
    for n in ra_params:  # an optimizer step, so that p changes between steps
        ra_params[n] = ra_params[n] - 0.1 * grads[n]
init_bgt = sum(p.size(0) for n, p in ra_params.items() if "lora_A.default" in n)
budget = 5
value_ipt, vector_ipt, triplet_ipt = {}, {}, {}
for n, p in ra_params.items():  # mask_to_budget
    if "lora_A.default" in n:
        vector_ipt.setdefault(n.replace("lora_A", "%s"), []).append(
            torch.mean(avg_ipt[n] * avg_unc[n], dim=1, keepdim=True))
    if "lora_B.default" in n:
        vector_ipt.setdefault(n.replace("lora_B", "%s"), []).append(
            torch.mean(avg_ipt[n] * avg_unc[n], dim=0, keepdim=False).view(-1, 1))
    if "lora_E.default" in n:
        value_ipt[n.replace("lora_E", "%s")] = avg_ipt[n] * avg_unc[n]
all_score = []
for name_m in vector_ipt:
    sum_ipt = value_ipt[name_m].view(-1) + torch.cat(vector_ipt[name_m], dim=1).sum(dim=1).view(-1)
    triplet_ipt[name_m % "lora_E"] = sum_ipt.view(-1, 1)
    all_score.append(sum_ipt.view(-1))
threshold = torch.kthvalue(torch.cat(all_score), k=init_bgt - budget)[0].item()
rank_pattern, masked_E = {}, {}
for n, p in ra_params.items():
    if "lora_E.default" in n:
        masked_E[n] = enc(p.masked_fill(triplet_ipt[n] <= threshold, 0.0))
        rank_pattern[n] = (~(triplet_ipt[n] <= threshold)).view(-1).tolist()
cases["adalora_rank_allocator"] = {
    "adapter": "default", "beta1": beta1, "beta2": beta2, "lr": 0.1, "budget": budget, "init_bgt": init_bgt,
    "initial": ra_initial, "grads": ra_grads,
    "exp_avg_ipt": {n: enc(t) for n, t in avg_ipt.items()}, "exp_avg_unc": {n: enc(t) for n, t in avg_unc.items()},
    "threshold": threshold, "rank_pattern": rank_pattern, "masked_E": masked_E,
}

print(json.dumps({"torch_version": torch.__version__, "cases": cases}, indent=1))
