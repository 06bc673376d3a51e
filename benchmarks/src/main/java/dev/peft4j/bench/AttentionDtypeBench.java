package dev.peft4j.bench;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.DoubleOptional;
import org.bytedeco.pytorch.InferenceMode;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptional;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * libtorch's CPU {@code scaled_dot_product_attention} in bfloat16 against float32, at the TinyLlama prefill shape
 * (q [1, 32, 128, 64], k / v [1, 32, 192, 64], a bool mask), 22 calls (one per layer) per timing, 2 threads, the two
 * dtypes alternating for {@code rounds} rounds: why {@code Attention.sdpa} computes 16-bit CPU attention in float32.
 *
 * <pre>
 * java -Dorg.bytedeco.javacpp.maxPhysicalBytes=0 -cp benchmarks/target/benchmarks.jar \
 *     dev.peft4j.bench.AttentionDtypeBench [rounds]
 * </pre>
 */
public final class AttentionDtypeBench {
    private AttentionDtypeBench() {}

    public static void main(String[] args) {
        int rounds = args.length > 0 ? Integer.parseInt(args[0]) : 2;
        torch.set_num_threads(2);
        try (InferenceMode im = new InferenceMode(); PointerScope s = new PointerScope()) {
            for (int r = 0; r < rounds; r++) {
                for (ScalarType dt : new ScalarType[] {ScalarType.BFloat16, ScalarType.Float}) {
                    TensorOptions o = new TensorOptions(dt);
                    Tensor q = torch.randn(new long[] {1, 32, 128, 64}, o);
                    Tensor k = torch.randn(new long[] {1, 32, 192, 64}, o);
                    Tensor v = torch.randn(new long[] {1, 32, 192, 64}, o);
                    Tensor mask = torch.ones(new long[] {128, 192}, new TensorOptions(ScalarType.Bool)).tril(64);
                    for (int w = 0; w < 3; w++) {
                        sdpa(q, k, v, mask);
                    }
                    long t0 = System.nanoTime();
                    for (int l = 0; l < 22; l++) {
                        sdpa(q, k, v, mask);
                    }
                    System.out.printf("round %d %s: 22 layers' attention %.1f ms%n", r, dt, (System.nanoTime() - t0) / 1e6);
                }
            }
        }
    }

    private static Tensor sdpa(Tensor q, Tensor k, Tensor v, Tensor mask) {
        return torch.scaled_dot_product_attention(q, k, v, new TensorOptional(mask), 0.0, false,
                new DoubleOptional(0.125), false);
    }
}
