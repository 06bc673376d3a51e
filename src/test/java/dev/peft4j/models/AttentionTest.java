package dev.peft4j.models;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.DoubleOptional;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptional;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * {@link Attention#sdpa} on 16-bit CPU tensors: it runs libtorch's attention on float32 copies and rounds the output
 * once (libtorch's own 16-bit CPU kernel runs its products on a generic scalar GEMM and rounds the probabilities), so
 * its result is bit for bit the float32 attention rounded to the input's dtype, with a causal mask as the prefill
 * passes it.
 */
class AttentionTest {
    @ParameterizedTest
    @ValueSource(strings = {"BFloat16", "Half"})
    void sixteenBitCpuAttentionIsTheFloat32AttentionRoundedOnce(String dtype) {
        ScalarType dt = ScalarType.valueOf(dtype);
        try (PointerScope scope = new PointerScope(); NoGradGuard g = new NoGradGuard()) {
            torch.manual_seed(7);
            long heads = 4;
            long t = 24;
            long dim = 16;
            TensorOptions o = new TensorOptions(dt);
            Tensor q = torch.randn(new long[] {2, heads, t, dim}, o);
            Tensor k = torch.randn(new long[] {2, heads, t, dim}, o);
            Tensor v = torch.randn(new long[] {2, heads, t, dim}, o);
            Tensor mask = Attention.mask(q, null, t, 0, true, 0);
            double scale = 1.0 / Math.sqrt(dim);
            Tensor got = Attention.sdpa(q, k, v, mask, scale);
            Tensor want = torch.scaled_dot_product_attention(q.to(ScalarType.Float), k.to(ScalarType.Float),
                    v.to(ScalarType.Float), new TensorOptional(mask), 0.0, false, new DoubleOptional(scale), false)
                    .to(dt);
            assertEquals(dt, got.scalar_type().intern());
            assertTrue(got.equal(want), dtype + " attention is not the float32 one rounded once: max difference "
                    + got.to(ScalarType.Float).sub(want.to(ScalarType.Float)).abs().max().item_float());
        }
    }
}
