package dev.peft4j.nn;

import org.bytedeco.pytorch.Device;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * How a module allocates its parameters when built: their dtype and device. Built on the {@code meta} device
 * ({@link #meta}), a model holds no weight memory until a checkpoint is loaded into it, so loading never holds
 * two copies of the weights.
 */
public record Init(ScalarType dtype, String device) {
    /** Uninitialised CPU tensors of {@code dtype} (fill them with {@link #normal} or a state dict). */
    public static Init cpu(ScalarType dtype) {
        return new Init(dtype, "cpu");
    }

    /** Shape-only placeholders (no memory), to be filled by {@link Module#loadStateDict}. */
    public static Init meta(ScalarType dtype) {
        return new Init(dtype, "meta");
    }

    /** A new tensor of {@code shape} (contents undefined). */
    public Tensor empty(long... shape) {
        try (TensorOptions o = new TensorOptions(dtype); Device d = new Device(device)) {
            return torch.empty(shape, o.device(new org.bytedeco.pytorch.DeviceOptional(d)), new org.bytedeco.pytorch.MemoryFormatOptional());
        }
    }

    /** A tensor of {@code shape} filled with {@code value}, made on the CPU even for meta (small constants). */
    public Tensor full(double value, long... shape) {
        Tensor t = empty(shape);
        if (!"meta".equals(device)) {
            t.fill_(new org.bytedeco.pytorch.Scalar(value));
        }
        return t;
    }

    /**
     * Fills every parameter of {@code module} from a seeded normal distribution, the way transformers'
     * {@code _init_weights} does in spirit: matrices N(0, std), norm weights 1, biases 0. For tests and benchmarks.
     */
    public static void normal(Module module, double std, long seed) {
        torch.manual_seed(seed);
        try (org.bytedeco.pytorch.NoGradGuard g = new org.bytedeco.pytorch.NoGradGuard()) {
            for (var e : module.namedParameters().entrySet()) {
                Tensor t = e.getValue();
                if (t.dim() >= 2) {
                    t.normal_(0.0, std, new org.bytedeco.pytorch.GeneratorOptional());
                } else if (e.getKey().endsWith("bias")) {
                    t.zero_();
                } else {
                    t.fill_(new org.bytedeco.pytorch.Scalar(1.0));
                }
            }
        }
    }
}
