package dev.peft4j.train;

import java.util.ArrayList;
import java.util.List;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;

/**
 * The trainable parameters grouped as DDP's reducer groups them: in reverse order (the order backward produces
 * their gradients), one dtype per bucket, each bucket up to a byte cap (DDP's {@code bucket_cap_mb}, 25 MB), so a
 * LoRA's gradients travel in one or a few allreduce calls of flat tensors instead of one per parameter.
 */
final class GradientBuckets {
    /** DDP's default {@code bucket_cap_mb} of 25 MiB. */
    static final long DEFAULT_CAP_BYTES = 25L * 1024 * 1024;

    private final List<List<Tensor>> buckets = new ArrayList<>();

    GradientBuckets(List<Tensor> params, long capBytes) {
        List<Tensor> current = new ArrayList<>();
        long bytes = 0;
        for (int i = params.size() - 1; i >= 0; i--) {
            Tensor p = params.get(i);
            long b = p.numel() * p.element_size();
            boolean otherType = !current.isEmpty()
                    && current.get(0).scalar_type().intern() != p.scalar_type().intern();
            if (!current.isEmpty() && (otherType || bytes + b > capBytes)) {
                buckets.add(current);
                current = new ArrayList<>();
                bytes = 0;
            }
            current.add(p);
            bytes += b;
        }
        if (!current.isEmpty()) {
            buckets.add(current);
        }
    }

    /** The number of buckets, hence of allreduce calls per optimizer step. */
    int size() {
        return buckets.size();
    }

    /** The bytes one rank sends into the allreduce per optimizer step: every trainable parameter's gradient. */
    static long bytesPerStep(List<Tensor> params) {
        long b = 0;
        for (Tensor p : params) {
            b += p.numel() * p.element_size();
        }
        return b;
    }

    /** Sums each parameter's gradient over the ranks (a parameter without one counts zeros and gets the sum). */
    void allreduceGradients(DistributedContext dist, int step) {
        for (int i = 0; i < buckets.size(); i++) {
            List<Tensor> bucket = buckets.get(i);
            try (PointerScope scope = new PointerScope(); NoGradGuard g = new NoGradGuard()) {
                Tensor flat = flatten(bucket, true);
                dist.allreduceSum(List.of(flat), "the gradient allreduce (bucket " + (i + 1) + " of "
                        + buckets.size() + ") of optimizer step " + step);
                long off = 0;
                for (Tensor p : bucket) {
                    Tensor part = flat.narrow(0, off, p.numel()).view_as(p);
                    Tensor grad = p.grad();
                    if (grad.defined()) {
                        grad.copy_(part);
                    } else {
                        p.mutable_grad().put(part.clone());
                    }
                    off += p.numel();
                }
            }
        }
    }

    /** Copies rank {@code root}'s parameter values into every rank's. */
    void broadcastParameters(DistributedContext dist, int root) {
        for (int i = 0; i < buckets.size(); i++) {
            List<Tensor> bucket = buckets.get(i);
            try (PointerScope scope = new PointerScope(); NoGradGuard g = new NoGradGuard()) {
                Tensor flat = flatten(bucket, false);
                dist.broadcast(List.of(flat), root, "the broadcast of rank " + root + "'s initial trainable "
                        + "parameters (bucket " + (i + 1) + " of " + buckets.size() + ")");
                long off = 0;
                for (Tensor p : bucket) {
                    p.copy_(flat.narrow(0, off, p.numel()).view_as(p));
                    off += p.numel();
                }
            }
        }
    }

    // one contiguous copy of the bucket's gradients (zeros where none) or values
    private static Tensor flatten(List<Tensor> bucket, boolean gradients) {
        Tensor[] parts = new Tensor[bucket.size()];
        for (int j = 0; j < parts.length; j++) {
            Tensor p = bucket.get(j);
            Tensor src = gradients ? p.grad() : p.detach();
            parts[j] = (src.defined() ? src : torch.zeros_like(p)).reshape(-1);
        }
        try (TensorVector v = new TensorVector(parts)) {
            return torch.cat(v);
        }
    }
}
