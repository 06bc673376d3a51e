package dev.peft4j.nn;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;

/** The leaf layers against their defining formulas. */
class LayersTest {
    static float maxDiff(Tensor a, Tensor b) {
        return a.to(ScalarType.Float).sub(b.to(ScalarType.Float)).abs().max().item_float();
    }

    @Test
    void conv1dIsALinearWithTransposedWeight() {
        try (PointerScope s = new PointerScope(); org.bytedeco.pytorch.NoGradGuard ng = new org.bytedeco.pytorch.NoGradGuard();
                Conv1D conv = new Conv1D(6, 4, Init.cpu(ScalarType.Float));
                Linear lin = new Linear(4, 6, true, Init.cpu(ScalarType.Float))) {
            Init.normal(conv, 1.0, 3);
            conv.bias().normal_();
            lin.weight().copy_(conv.weight().t());
            lin.bias().copy_(conv.bias());
            Tensor x = torch.randn(2, 3, 4);
            assertTrue(maxDiff(lin.forward(x), conv.forward(x)) < 1e-6f);
            assertEquals(4, conv.inFeatures());
            assertEquals(6, conv.outFeatures());
            assertEquals(java.util.List.of(4L, 6L), java.util.Arrays.stream(conv.weight().shape()).boxed().toList());
        }
    }

    @Test
    void singleRowGemvPathMatchesTheBatchedPath() {
        try (PointerScope s = new PointerScope(); org.bytedeco.pytorch.NoGradGuard ng = new org.bytedeco.pytorch.NoGradGuard();
                Linear lin = new Linear(64, 48, true, Init.cpu(ScalarType.Float));
                Conv1D conv = new Conv1D(48, 64, Init.cpu(ScalarType.Float))) {
            Init.normal(lin, 1.0, 5);
            Init.normal(conv, 1.0, 6);
            lin.bias().normal_();
            conv.bias().normal_();
            Tensor batch = torch.randn(3, 1, 64);
            for (Layer layer : new Layer[] {lin, conv}) {
                Tensor all = layer.forward(batch);
                for (int r = 0; r < 3; r++) {
                    Tensor one = layer.forward(batch.narrow(0, r, 1)); // [1, 1, 64]: the gemv path
                    assertEquals(java.util.List.of(1L, 1L, 48L), java.util.Arrays.stream(one.shape()).boxed().toList());
                    assertTrue(maxDiff(all.narrow(0, r, 1), one) < 1e-5f, layer + " row " + r);
                }
            }
        }
    }

    @Test
    void activationsFollowTheirFormulas() {
        try (PointerScope s = new PointerScope()) {
            Tensor x = torch.linspace(new Scalar(-6.0), new Scalar(6.0), 1001);
            // NewGELUActivation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
            Tensor geluNew = x.mul(new Scalar(0.5)).mul(x.pow(new Scalar(3)).mul(new Scalar(0.044715)).add(x)
                    .mul(new Scalar(Math.sqrt(2 / Math.PI))).tanh().add(new Scalar(1)));
            assertTrue(maxDiff(Activation.named("gelu_new").forward(x), geluNew) < 1e-5f);
            // GELU: 0.5 x (1 + erf(x / sqrt 2))
            Tensor gelu = x.mul(new Scalar(0.5)).mul(x.div(new Scalar(Math.sqrt(2))).erf().add(new Scalar(1)));
            assertTrue(maxDiff(Activation.named("gelu").forward(x), gelu) < 1e-6f);
            assertTrue(maxDiff(Activation.named("silu").forward(x), x.mul(x.sigmoid())) < 1e-6f);
            assertTrue(maxDiff(Activation.named("relu").forward(x), x.clamp_min(new Scalar(0))) == 0f);
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Activation.named("mish"));
            assertTrue(e.getMessage().contains("'mish'") && e.getMessage().contains("gelu_new"), e.getMessage());
        }
    }

    @Test
    void rmsNormInBfloat16NormalisesInFloat32ThenCastsThenScales() {
        try (PointerScope s = new PointerScope(); org.bytedeco.pytorch.NoGradGuard ng = new org.bytedeco.pytorch.NoGradGuard();
                RMSNorm norm = new RMSNorm(64, 1e-6, Init.cpu(ScalarType.BFloat16))) {
            norm.param("weight").normal_(1.0, 0.3, new org.bytedeco.pytorch.GeneratorOptional());
            Tensor x = torch.randn(3, 64).mul(new Scalar(5)).to(ScalarType.BFloat16);
            Tensor xf = x.to(ScalarType.Float);
            Tensor expected = norm.param("weight").mul(xf.mul(xf.pow(new Scalar(2)).mean(new long[] {-1}, true,
                    new org.bytedeco.pytorch.ScalarTypeOptional()).add(new Scalar(1e-6)).rsqrt()).to(ScalarType.BFloat16));
            Tensor y = norm.forward(x);
            assertEquals(ScalarType.BFloat16, y.scalar_type().intern());
            assertEquals(0f, maxDiff(expected, y), "bit-identical to transformers' order of operations");
        }
    }

    @Test
    void layerNormAndEmbeddingMatchTheirDefinitions() {
        try (PointerScope s = new PointerScope(); org.bytedeco.pytorch.NoGradGuard ng = new org.bytedeco.pytorch.NoGradGuard();
                LayerNorm ln = new LayerNorm(8, 1e-5, Init.cpu(ScalarType.Float));
                Embedding emb = new Embedding(5, 8, Init.cpu(ScalarType.Float))) {
            Init.normal(ln, 1.0, 1);
            ln.param("bias").normal_();
            Init.normal(emb, 1.0, 2);
            Tensor x = torch.randn(4, 8);
            Tensor mean = x.mean(new long[] {-1}, true, new org.bytedeco.pytorch.ScalarTypeOptional());
            Tensor centered = x.sub(mean);
            Tensor var = centered.pow(new Scalar(2)).mean(new long[] {-1}, true, new org.bytedeco.pytorch.ScalarTypeOptional());
            Tensor expected = centered.mul(var.add(new Scalar(1e-5)).rsqrt()).mul(ln.param("weight")).add(ln.param("bias"));
            assertTrue(maxDiff(ln.forward(x), expected) < 1e-5f);
            Tensor ids = org.bytedeco.pytorch.AbstractTensor.create(new long[] {4, 0, 4}).view(1, 3);
            Tensor rows = emb.forward(ids);
            assertEquals(0f, maxDiff(rows.select(1, 0), emb.weight().select(0, 4).view(1, 8)));
            assertEquals(0f, maxDiff(rows.select(1, 1), emb.weight().select(0, 0).view(1, 8)));
        }
    }
}
