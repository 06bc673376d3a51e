package dev.peft4j.train;

/**
 * The subset of transformers' {@code TrainingArguments} that {@link Trainer} uses, with transformers' defaults:
 * {@code learning_rate} 5e-5, {@code weight_decay} 0, AdamW's betas (0.9, 0.999) and {@code adam_epsilon} 1e-8,
 * {@code max_grad_norm} 1.0, {@code num_train_epochs} 3 (or {@code max_steps} when set, which wins),
 * {@code gradient_accumulation_steps} 1, {@code warmup_steps} 0, {@code lr_scheduler_type} "linear" (or
 * "constant"), {@code logging_steps} 500, {@code seed} 42; {@code output_dir} with {@code save_steps} (default:
 * none) saves the active adapter to {@code output_dir/checkpoint-<step>} every so many steps. The batches are taken
 * in a new random order each epoch, drawn from {@code seed}, as transformers' {@code RandomSampler} orders the
 * examples ({@link Builder#shuffle}: off keeps the order given, as a {@code SequentialSampler}).
 */
public final class TrainingArguments {
    /** transformers' {@code lr_scheduler_type} values that are supported. */
    public enum LrSchedulerType {
        /** warmup from 0, then linear decay to 0 at the last step ({@code get_linear_schedule_with_warmup}) */
        LINEAR,
        /** warmup from 0, then constant ({@code get_constant_schedule_with_warmup}) */
        CONSTANT
    }

    final double learningRate;
    final double weightDecay;
    final double adamEpsilon;
    final double maxGradNorm;
    final int numTrainEpochs;
    final int maxSteps;
    final int gradientAccumulationSteps;
    final int warmupSteps;
    final LrSchedulerType lrSchedulerType;
    final int loggingSteps;
    final long seed;
    final java.nio.file.Path outputDir;
    final int saveSteps;
    final boolean shuffle;

    private TrainingArguments(Builder b) {
        this.learningRate = b.learningRate;
        this.weightDecay = b.weightDecay;
        this.adamEpsilon = b.adamEpsilon;
        this.maxGradNorm = b.maxGradNorm;
        this.numTrainEpochs = b.numTrainEpochs;
        this.maxSteps = b.maxSteps;
        this.gradientAccumulationSteps = b.gradientAccumulationSteps;
        this.warmupSteps = b.warmupSteps;
        this.lrSchedulerType = b.lrSchedulerType;
        this.loggingSteps = b.loggingSteps;
        this.seed = b.seed;
        this.outputDir = b.outputDir;
        this.saveSteps = b.saveSteps;
        this.shuffle = b.shuffle;
    }

    /** A builder with transformers' defaults (see the class comment). */
    public static Builder builder() {
        return new Builder();
    }

    /**
     * The learning rate at optimizer step {@code step} (0-based) of {@code total}, as transformers' schedulers give
     * it: {@code lr · step / warmup} during warmup; then {@code lr · (total - step) / (total - warmup)} (linear)
     * or {@code lr} (constant).
     */
    public double learningRateAt(int step, int total) {
        if (step < warmupSteps) {
            return learningRate * step / Math.max(1, warmupSteps);
        }
        if (lrSchedulerType == LrSchedulerType.CONSTANT) {
            return learningRate;
        }
        return learningRate * Math.max(0.0, (double) (total - step) / Math.max(1, total - warmupSteps));
    }

    /** Builder with transformers' defaults. */
    public static final class Builder {
        private double learningRate = 5e-5;
        private double weightDecay = 0.0;
        private double adamEpsilon = 1e-8;
        private double maxGradNorm = 1.0;
        private int numTrainEpochs = 3;
        private int maxSteps = -1;
        private int gradientAccumulationSteps = 1;
        private int warmupSteps = 0;
        private LrSchedulerType lrSchedulerType = LrSchedulerType.LINEAR;
        private int loggingSteps = 500;
        private long seed = 42;
        private java.nio.file.Path outputDir;
        private int saveSteps = -1;
        private boolean shuffle = true;

        private Builder() {}

        /**
         * {@code learning_rate}, the peak rate of the schedule (default 5e-5).
         * @throws IllegalArgumentException if {@code v} is not positive and finite
         */
        public Builder learningRate(double v) {
            learningRate = positive("learningRate", v);
            return this;
        }

        /**
         * {@code weight_decay}: AdamW's decoupled weight decay (default 0).
         * @throws IllegalArgumentException if {@code v} is negative or not finite
         */
        public Builder weightDecay(double v) {
            weightDecay = nonNegative("weightDecay", v);
            return this;
        }

        /**
         * {@code adam_epsilon}: AdamW's epsilon (default 1e-8).
         * @throws IllegalArgumentException if {@code v} is not positive and finite
         */
        public Builder adamEpsilon(double v) {
            adamEpsilon = positive("adamEpsilon", v);
            return this;
        }

        /** Gradient clipping by global norm; 0 turns it off. */
        public Builder maxGradNorm(double v) {
            maxGradNorm = nonNegative("maxGradNorm", v);
            return this;
        }

        /**
         * {@code num_train_epochs} (default 3); ignored when {@link #maxSteps} is set.
         * @throws IllegalArgumentException if {@code v} is not positive
         */
        public Builder numTrainEpochs(int v) {
            numTrainEpochs = (int) positive("numTrainEpochs", v);
            return this;
        }

        /** Optimizer steps to run (cycling through the data as often as needed); overrides the epochs. */
        public Builder maxSteps(int v) {
            maxSteps = (int) positive("maxSteps", v);
            return this;
        }

        /**
         * {@code gradient_accumulation_steps}: batches whose gradients are summed into one optimizer step (default 1).
         * @throws IllegalArgumentException if {@code v} is not positive
         */
        public Builder gradientAccumulationSteps(int v) {
            gradientAccumulationSteps = (int) positive("gradientAccumulationSteps", v);
            return this;
        }

        /**
         * {@code warmup_steps}: optimizer steps over which the rate rises from 0 (default 0).
         * @throws IllegalArgumentException if {@code v} is negative
         */
        public Builder warmupSteps(int v) {
            warmupSteps = (int) nonNegative("warmupSteps", v);
            return this;
        }

        /**
         * {@code lr_scheduler_type} (default {@link LrSchedulerType#LINEAR}).
         * @throws NullPointerException if {@code v} is null
         */
        public Builder lrSchedulerType(LrSchedulerType v) {
            lrSchedulerType = java.util.Objects.requireNonNull(v, "lrSchedulerType");
            return this;
        }

        /** Record the mean loss every this many optimizer steps (and at the last step). */
        public Builder loggingSteps(int v) {
            loggingSteps = (int) positive("loggingSteps", v);
            return this;
        }

        /**
         * {@code seed}: seeds torch's generator when training starts ({@code torch.manual_seed}) and draws the batch
         * order (default 42).
         */
        public Builder seed(long v) {
            seed = v;
            return this;
        }

        /** Where checkpoints go ({@code output_dir}); needed by {@link #saveSteps}. */
        public Builder outputDir(java.nio.file.Path v) {
            outputDir = v;
            return this;
        }

        /** Save the active adapter to {@code outputDir/checkpoint-<step>} every this many optimizer steps. */
        public Builder saveSteps(int v) {
            saveSteps = (int) positive("saveSteps", v);
            return this;
        }

        /**
         * Whether each epoch takes the batches in a new random order drawn from {@link #seed} (default true, as
         * transformers' {@code RandomSampler}; the batches themselves are given whole, so their composition stays
         * and their order changes), or in the order given.
         */
        public Builder shuffle(boolean v) {
            shuffle = v;
            return this;
        }

        /**
         * The arguments as set.
         * @throws IllegalArgumentException if {@link #saveSteps} is set without an {@link #outputDir}
         */
        public TrainingArguments build() {
            if (saveSteps > 0 && outputDir == null) {
                throw new IllegalArgumentException("saveSteps: " + saveSteps + " needs an outputDir to save into");
            }
            return new TrainingArguments(this);
        }

        private static double positive(String name, double v) {
            if (!(v > 0) || Double.isInfinite(v)) {
                throw new IllegalArgumentException(name + ": " + v + " must be a positive finite number");
            }
            return v;
        }

        private static double nonNegative(String name, double v) {
            if (!(v >= 0) || Double.isInfinite(v)) {
                throw new IllegalArgumentException(name + ": " + v + " must be a finite number >= 0");
            }
            return v;
        }
    }
}
