package dev.peft4j.nn;

import org.bytedeco.pytorch.Tensor;

/**
 * Ops whose usual libtorch form has no kernel on every device: C++ libtorch registers no {@code meta} kernel for
 * {@code index_select} (PyTorch adds it from Python), so a model moved to {@code meta} to check its shapes and
 * devices would stop there. On a meta tensor these take an equivalent op that has one; on any other device they are
 * the usual op, unchanged.
 */
public final class DeviceOps {
    private DeviceOps() {}

    /**
     * Refuses an op between tensors on two devices, naming {@code what} and both devices: for the few places that
     * skip a tensor on meta (it has no kernel there) and would otherwise not notice that it is elsewhere.
     */
    public static void requireSameDevice(String what, Tensor t, Tensor like) {
        String have = t.device().str().getString();
        String want = like.device().str().getString();
        if (!have.equals(want)) {
            throw new IllegalStateException(what + " is on " + have + ", the activations on " + want);
        }
    }

    /** {@code torch.where(condition, a, b)}; on meta the same shape from a bool-weighted sum. */
    public static Tensor where(Tensor condition, Tensor a, Tensor b) {
        if (!condition.is_meta()) {
            return org.bytedeco.pytorch.global.torch.where(condition, a, b);
        }
        return a.mul(condition).add(b.mul(condition.bitwise_not()));
    }

    /**
     * {@code t.index_select(dim, index)} ({@code index} 1-D int64); on meta the same shape through {@code gather}.
     */
    public static Tensor indexSelect(Tensor t, long dim, Tensor index) {
        if (!t.is_meta()) {
            return t.index_select(dim, index);
        }
        long d = dim < 0 ? dim + t.dim() : dim;
        long[] shape = t.shape();
        long[] view = new long[shape.length];
        java.util.Arrays.fill(view, 1);
        view[(int) d] = index.numel();
        shape[(int) d] = index.numel();
        return t.gather(d, index.view(view).expand(shape), false);
    }
}
