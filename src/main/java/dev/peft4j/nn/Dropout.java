package dev.peft4j.nn;

import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

/** {@code torch.nn.Dropout}: identity in eval mode (returns a new handle on the same tensor), random in training. */
public final class Dropout extends Module implements Layer {
    private final double p;

    /**
     * Dropout with probability {@code p} of zeroing each element in training.
     * @throws IllegalArgumentException if {@code p} is not in [0, 1]
     */
    public Dropout(double p) {
        if (p < 0 || p > 1) {
            throw new IllegalArgumentException("dropout probability must be in [0, 1], got " + p);
        }
        this.p = p;
    }

    /** The probability of zeroing an element in training. */
    public double p() {
        return p;
    }

    @Override
    public Tensor forward(Tensor x) {
        if (!isTraining() || p == 0) {
            return new Tensor(x); // a new reference, so the caller may close input and output independently
        }
        return torch.dropout(x, p, true);
    }
}
