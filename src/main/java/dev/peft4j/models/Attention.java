package dev.peft4j.models;

import java.util.Arrays;
import org.bytedeco.pytorch.DoubleOptional;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptional;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * Attention masks, position ids and scaled dot-product attention shared by the architectures. Temporaries are left
 * to the caller's {@link org.bytedeco.javacpp.PointerScope} (every model forward runs in one).
 */
final class Attention {
    private Attention() {}

    /** int64 {@code from .. to-1} on the device of {@code like} (the input ids), so that no op mixes devices. */
    static Tensor arange(long from, long to, Tensor like) {
        try (TensorOptions o = new TensorOptions(ScalarType.Long);
                org.bytedeco.pytorch.Device d = like.device()) {
            return torch.arange(new Scalar(from), new Scalar(to), o.device(new org.bytedeco.pytorch.DeviceOptional(d)));
        }
    }

    /** Checks {@code ids} is a 2-D integer tensor; names {@code what} otherwise. */
    static void checkIds(String what, Tensor ids) {
        if (ids == null || ids.isNull() || !ids.defined()) {
            throw new IllegalArgumentException(what + " is null");
        }
        if (ids.dim() != 2) {
            throw new IllegalArgumentException(what + " must be [batch, seq], got shape " + Arrays.toString(ids.shape()));
        }
        ScalarType t = ids.scalar_type().intern();
        if (t != ScalarType.Long && t != ScalarType.Int) {
            throw new IllegalArgumentException(what + " must be int64 (or int32), got " + t);
        }
    }

    /** Checks the attention mask covers {@code past + q} positions for each of {@code batch} rows. */
    static void checkMask(Tensor attentionMask, long batch, long keyLength) {
        if (attentionMask == null) {
            return;
        }
        long[] s = attentionMask.shape();
        if (s.length != 2 || s[0] != batch || s[1] != keyLength) {
            throw new IllegalArgumentException("attention_mask must be [batch=" + batch + ", past+new=" + keyLength
                    + "] (1 = token, 0 = padding), got shape " + Arrays.toString(s));
        }
    }

    /**
     * Which keys each query may attend to: a bool tensor {@code [B or 1, 1, q, past+q]} (true = attend), or null when
     * every query sees every key (bool masks combined with bitwise ops, which have kernels on every device). Causal: key ≤ query position (and within {@code slidingWindow} when > 0);
     * padding keys (mask 0) are hidden. A padding query would then see nothing, which makes softmax NaN: it is
     * allowed to see itself instead (its output is garbage either way and never read). Made on the device of {@code like}.
     */
    static Tensor mask(Tensor like, Tensor attentionMask, long q, long past, boolean causal, long slidingWindow) {
        long tk = past + q;
        if (!causal && attentionMask == null) {
            return null;
        }
        if (causal && q == 1 && attentionMask == null && slidingWindow <= 0) {
            return null;
        }
        Tensor allowed;
        Tensor qpos = arange(past, tk, like).view(q, 1);
        Tensor kpos = arange(0, tk, like).view(1, tk);
        if (causal) {
            allowed = kpos.le(qpos);
            if (slidingWindow > 0) {
                allowed = allowed.bitwise_and(qpos.sub(kpos).lt(new Scalar(slidingWindow)));
            }
        } else {
            allowed = kpos.ge(new Scalar(0)).expand(q, tk);
        }
        allowed = allowed.view(1, 1, q, tk);
        if (attentionMask != null) {
            Tensor keep = attentionMask.ne(new Scalar(0)).view(attentionMask.size(0), 1, 1, tk);
            allowed = allowed.bitwise_and(keep);
            if (causal) {
                allowed = allowed.bitwise_or(kpos.eq(qpos).view(1, 1, q, tk));
            }
        }
        return allowed;
    }

    /**
     * Position ids for the {@code q} new tokens: from the attention mask ({@code cumsum - 1}, padding at 1, as
     * transformers' {@code generate} computes them, so left padding does not shift a row's positions), else
     * {@code past .. past+q-1} on the device of {@code like}. Shape {@code [B, q]}.
     */
    static Tensor positionIds(Tensor like, Tensor attentionMask, long batch, long q, long past) {
        if (attentionMask == null) {
            return arange(past, past + q, like).view(1, q).expand(batch, q);
        }
        Tensor m = attentionMask.to(ScalarType.Long);
        Tensor pos = m.cumsum(1).sub(new Scalar(1));
        pos = pos.masked_fill(m.eq(new Scalar(0)), new Scalar(1));
        return pos.narrow(1, past, q);
    }

    /** {@code softmax(q·kᵀ·scale + mask)·v} with {@code [B, H, T, D]} inputs and a bool mask (true = attend). */
    static Tensor sdpa(Tensor q, Tensor k, Tensor v, Tensor mask, double scale) {
        return sdpa(q, k, v, mask, scale, 0.0);
    }

    /** As above, with dropout {@code p} on the attention probabilities (pass 0 in eval mode). */
    static Tensor sdpa(Tensor q, Tensor k, Tensor v, Tensor mask, double scale, double dropout) {
        return sdpa(q, k, v, mask, scale, dropout, false);
    }

    /**
     * As above; {@code causal} (with a null mask, q and k of one length): query {@code i} sees keys {@code 0..i}, the
     * mask left to libtorch's kernel, which then skips the blocks above the diagonal.
     */
    static Tensor sdpa(Tensor q, Tensor k, Tensor v, Tensor mask, double scale, double dropout, boolean causal) {
        if (q.is_meta() && mask != null) {
            dev.peft4j.nn.DeviceOps.requireSameDevice("attention mask", mask, q);
        }
        if (q.is_meta()) {
            // libtorch's sdpa needs aten::where, which has no meta kernel; the mask does not change the shape
            Tensor kv = repeatKv(k, q.size(1) / k.size(1));
            Tensor vv = repeatKv(v, q.size(1) / v.size(1));
            return q.matmul(kv.transpose(-2, -1)).mul(new Scalar(scale)).softmax(-1).matmul(vv);
        }
        TensorOptional m = mask == null ? new TensorOptional() : new TensorOptional(mask);
        ScalarType dt = q.scalar_type().intern(); // a returned enum is a new object: == needs intern()
        if (q.is_cpu() && (dt == ScalarType.BFloat16 || dt == ScalarType.Half)) {
            // libtorch's CPU attention in 16 bits runs its products on a generic scalar GEMM (TinyLlama prefill
            // shape, 22 layers: ~14x the float32 time); float32 products, then one rounding of the output, are
            // faster and no less accurate than its float32-accumulated 16-bit kernel
            Tensor o = torch.scaled_dot_product_attention(q.to(ScalarType.Float), k.to(ScalarType.Float),
                    v.to(ScalarType.Float), m, dropout, causal, new DoubleOptional(scale), false);
            return o.to(dt);
        }
        return torch.scaled_dot_product_attention(q, k, v, m, dropout, causal, new DoubleOptional(scale), false);
    }

    /** Repeats each of {@code kvHeads} heads {@code groups} times along dim 1 (transformers' {@code repeat_kv}). */
    static Tensor repeatKv(Tensor x, long groups) {
        if (groups == 1) {
            return x;
        }
        long[] s = x.shape();
        return x.unsqueeze(2).expand(s[0], s[1], groups, s[2], s[3]).reshape(s[0], s[1] * groups, s[2], s[3]);
    }
}
