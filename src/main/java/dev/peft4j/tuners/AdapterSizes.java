package dev.peft4j.tuners;

import dev.peft4j.config.PeftConfigException;
import dev.peft4j.nn.Embedding;
import dev.peft4j.nn.Module;
import java.lang.management.ManagementFactory;

/**
 * Checks an adapter's size before its weights are allocated: a rank that would need more memory than the machine
 * has is a config error naming the field, the value and the module, not an allocator failure from libtorch.
 */
public final class AdapterSizes {
    private AdapterSizes() {}

    /**
     * Refuses a rank whose float32 adapter weights for {@code base} ({@code r x (in + out)} for a Linear or Conv1D,
     * plus {@code r} for AdaLoRA's {@code E}; {@code r x (num_embeddings + dim)} for an Embedding) would not fit in
     * the machine's physical memory. Other module kinds are left to the caller, which refuses them.
     *
     * @param field the config field the rank comes from ({@code "r"}, {@code "init_r"})
     * @param rank the rank asked for
     * @param module the module's name, for the message
     * @param base the module the adapter wraps
     * @throws PeftConfigException if the rank is not positive or the weights cannot fit
     */
    public static void checkRank(String field, long rank, String module, Module base) {
        long perRank;
        String what;
        LinearShape shape = LinearShape.of(base);
        if (shape != null) {
            perRank = shape.in() + shape.out() + 1;
            what = base.typeName() + "(" + shape.in() + " -> " + shape.out() + ")";
        } else if (base instanceof Embedding e) {
            perRank = e.numEmbeddings() + e.embeddingDim();
            what = "Embedding(" + e.numEmbeddings() + ", " + e.embeddingDim() + ")";
        } else {
            return;
        }
        if (rank <= 0) {
            throw new PeftConfigException(field + " = " + rank + " for module '" + module + "': must be positive");
        }
        long limit = physicalMemoryBytes();
        long bytes;
        try {
            bytes = Math.multiplyExact(Math.multiplyExact(rank, perRank), (long) Float.BYTES);
        } catch (ArithmeticException overflow) {
            bytes = Long.MAX_VALUE;
        }
        if (bytes > limit) {
            throw new PeftConfigException(field + " = " + rank + " for module '" + module + "' (" + what + ") needs "
                    + (bytes == Long.MAX_VALUE ? "more than 2^63" : String.valueOf(bytes))
                    + " bytes of adapter weights, more than the " + limit + " bytes of memory of this machine");
        }
    }

    /** The machine's physical memory, or 2^40 when the platform does not say. */
    static long physicalMemoryBytes() {
        if (ManagementFactory.getOperatingSystemMXBean() instanceof com.sun.management.OperatingSystemMXBean os) {
            long total = os.getTotalMemorySize();
            if (total > 0) {
                return total;
            }
        }
        return 1L << 40;
    }
}
