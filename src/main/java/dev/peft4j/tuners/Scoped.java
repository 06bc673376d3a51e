package dev.peft4j.tuners;

import java.util.function.Supplier;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;

/**
 * Runs a tensor computation in its own {@link PointerScope}, so every temporary (tensors, {@code Scalar}s,
 * options) is freed on return, and hands the result to the caller's scope, if there is one (without one, the caller
 * owns it: {@code close()} it). The body must return a tensor it created, never one of its arguments. Internal helper
 * of the tuner math; public only because the math lives in several packages.
 */
public final class Scoped {
    private Scoped() {}

    /** The tensor {@code body} returns; everything else {@code body} allocated is closed. */
    public static Tensor compute(Supplier<Tensor> body) {
        Tensor out;
        try (PointerScope scope = new PointerScope()) {
            out = body.get();
            if (out != null) {
                // detach() drops the scope's reference (and would free the tensor): take one first
                out.retainReference();
                scope.detach(out);
            }
        }
        PointerScope outer = PointerScope.getInnerScope();
        if (out != null && outer != null) {
            outer.attach(out); // the caller's scope now holds the only reference
            out.releaseReference();
        }
        return out;
    }

    /**
     * Like {@link #compute}, but the result is attached to no scope at all: for state kept across steps (the caller
     * closes it).
     */
    public static Tensor computeOwned(Supplier<Tensor> body) {
        try (PointerScope scope = new PointerScope()) {
            Tensor out = body.get();
            out.retainReference();
            scope.detach(out);
            return out;
        }
    }

    /** Runs {@code body} (an in-place update); everything it allocated is closed. */
    public static void run(Runnable body) {
        try (PointerScope scope = new PointerScope()) {
            body.run();
        }
    }
}
