package dev.peft4j.train;

import dev.peft4j.models.CausalLM;
import dev.peft4j.models.PreTrainedModel;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.AdamW;
import org.bytedeco.pytorch.AdamWOptions;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * Fine-tunes the trainable parameters of a causal language model (after {@code addAdapter}: the adapter's, PEFT's
 * {@code _mark_only_adapters_as_trainable} having frozen the rest) as transformers' {@code Trainer} does for a
 * causal LM: AdamW, the loss of {@code ForCausalLMLoss} (labels shifted left by one, {@code -100} ignored, in
 * float32), averaged over all the labels of an optimizer step's batches however they fall between them
 * ({@code num_items_in_batch}, as transformers since 4.46), gradient accumulation, clipping by global norm, a
 * linear or constant schedule with warmup. Each epoch takes every batch once, in a new order drawn from
 * {@code seed} (or in the order given, {@link TrainingArguments.Builder#shuffle}), {@code gradient_accumulation_steps}
 * batches per optimizer step and what is left in the epoch's last step, as transformers does; {@code max_steps}
 * runs as many epochs as it needs, the last one cut short. The model is in training mode (dropout on) while it runs
 * and goes back to its previous mode after. The forwards run on libtorch's composed ops, the autograd path; the
 * fused kernels are for inference.
 *
 * <p>Data parallel ({@link #distributed}): with a world of N ranks, as transformers' Trainer under {@code torchrun},
 * rank 0's initial trainable parameters are broadcast to all; each epoch's order (the same on every rank, drawn
 * from {@code seed}) is padded by repeating its first entries to a multiple of N and rank r takes entries r, r + N,
 * r + 2N, ... ({@code DistributedSampler}'s split, applied to the list of batches: each batch is one rank's
 * micro-batch); an optimizer step takes {@code gradient_accumulation_steps} of the rank's batches. The label count
 * of a step is summed over the ranks before the forwards, each rank's loss is divided by that global count, and
 * the gradients are summed over the ranks (allreduce in buckets of about 25 MB, as DDP) before clipping and the
 * step: the update is the one a single process makes on all the ranks' batches of the step together. Only rank 0
 * saves checkpoints; every rank can resume from one.
 */
public final class Trainer {
    /** One batch: token ids {@code [batch, seq]} (int64), attention mask (or null) and labels ({@code -100}: ignored). */
    public record Batch(Tensor inputIds, Tensor attentionMask, Tensor labels) {
        /** Labels = the ids, with padding (mask 0) ignored, as {@code DataCollatorForLanguageModeling(mlm=False)}. */
        public static Batch causalLM(Tensor inputIds, Tensor attentionMask) {
            Tensor labels = attentionMask == null ? inputIds.clone()
                    : inputIds.masked_fill(attentionMask.eq(new Scalar(0L)), new Scalar(-100L));
            return new Batch(inputIds, attentionMask, labels);
        }
    }

    /** The mean loss over the optimizer steps since the previous entry, at optimizer step {@code step} (1-based). */
    public record LogEntry(int step, double loss, double learningRate, double gradNorm) {}

    /** transformers' {@code TrainOutput}: optimizer steps run and the mean training loss over all of them. */
    public record TrainOutput(int globalStep, double trainingLoss, List<LogEntry> log) {}

    /**
     * Called after each optimizer step, before the gradients are cleared (transformers' {@code on_step_end}): where
     * PEFT's AdaLoRA loop calls {@code update_and_allocate(global_step)}
     * ({@link dev.peft4j.tuners.adalora.AdaLoraRankAllocator#updateAndAllocate}), which reads the gradients.
     */
    @FunctionalInterface
    public interface StepCallback {
        /** @param globalStep optimizer steps done, 1-based; the gradients of this step are still there */
        void onStepEnd(int globalStep);
    }

    private final PreTrainedModel model;
    private final CausalLM lm;
    private final TrainingArguments args;
    private StepCallback callback;
    private DistributedContext dist;

    /** @param model a causal LM ({@link CausalLM}) with trainable parameters (e.g. an adapter added by addAdapter) */
    public Trainer(PreTrainedModel model, TrainingArguments args) {
        if (!(model instanceof CausalLM)) {
            throw new IllegalArgumentException("model: " + model.getClass().getSimpleName()
                    + " is not a causal LM; the Trainer trains CausalLM models");
        }
        this.model = model;
        this.lm = (CausalLM) model;
        this.args = args;
    }

    /** Sets the callback run after each optimizer step (null: none); returns this trainer. */
    public Trainer onStepEnd(StepCallback c) {
        this.callback = c;
        return this;
    }

    /**
     * Trains as one rank of {@code context}'s data-parallel run (null: a single process); returns this trainer.
     * Every rank must call {@link #train} with the same data list and arguments.
     */
    public Trainer distributed(DistributedContext context) {
        this.dist = context;
        return this;
    }

    /** Runs the training loop over {@code data}; returns the steps run, the mean loss and the log. */
    public TrainOutput train(List<Batch> data) {
        return train(data, null);
    }

    /**
     * transformers' {@code train(resume_from_checkpoint=...)}: the training loop over {@code data}, continued from a
     * checkpoint this trainer wrote ({@code outputDir/checkpoint-<step>}, see {@link #lastCheckpoint}), or from the
     * start when {@code resumeFromCheckpoint} is null. The trainable parameters, AdamW's state, the random state
     * (dropout) and the log are restored and the steps already run skipped, batch order included, so a run resumed
     * with the same data and arguments ends where the uninterrupted run would have. The returned loss and log cover
     * the whole run. A checkpoint that does not fit the model (other trainable parameters or shapes) is refused
     * before anything is changed.
     */
    public TrainOutput train(List<Batch> data, java.nio.file.Path resumeFromCheckpoint) {
        try {
            return trainLoop(data, resumeFromCheckpoint);
        } catch (RuntimeException | Error e) {
            if (dist != null) {
                dist.reportFailure(e); // so the other ranks' errors name this one's
            }
            throw e;
        }
    }

    private TrainOutput trainLoop(List<Batch> data, java.nio.file.Path resumeFromCheckpoint) {
        if (data.isEmpty()) {
            throw new IllegalArgumentException("data: no batches to train on");
        }
        List<Tensor> params = new ArrayList<>();
        List<String> names = new ArrayList<>(); // the trainable parameters' names, in the order of params
        for (Map.Entry<String, Tensor> e : model.namedParameters().entrySet()) {
            if (e.getValue().requires_grad()) {
                params.add(e.getValue());
                names.add(e.getKey());
            }
        }
        if (params.isEmpty()) {
            throw new IllegalStateException("model: no trainable parameters; add an adapter with addAdapter (or set "
                    + "requires_grad on the parameters to train)");
        }
        int accum = args.gradientAccumulationSteps;
        int n = data.size();
        int world = dist == null ? 1 : dist.worldSize();
        int rank = dist == null ? 0 : dist.rank();
        GradientBuckets buckets = dist == null ? null : new GradientBuckets(params, GradientBuckets.DEFAULT_CAP_BYTES);
        if (buckets != null) {
            buckets.broadcastParameters(dist, 0);
        }
        int perRank = (n + world - 1) / world; // DistributedSampler's num_samples, padding included
        // transformers: an epoch's batches in steps of `accum`, the last step of the epoch taking what is left
        int stepsPerEpoch = (perRank + accum - 1) / accum;
        int total = args.maxSteps > 0 ? args.maxSteps : stepsPerEpoch * args.numTrainEpochs;
        boolean wasTraining = model.isTraining();
        torch.manual_seed(args.seed);
        model.train(true);
        List<LogEntry> log = new ArrayList<>();
        double lossSum = 0;
        double sinceLog = 0;
        int stepsSinceLog = 0;
        TensorVector pv = new TensorVector(params.toArray(new Tensor[0]));
        AdamWOptions opts = newOptions(args);
        long[] labelCounts = new long[n];
        for (int i = 0; i < labelCounts.length; i++) {
            labelCounts[i] = labelCount(data.get(i).labels());
        }
        // the batch order of each epoch: a permutation drawn from the seed, a new one per epoch
        java.util.Random orderRng = new java.util.Random(args.seed);
        int[] order = new int[n];
        int[] shard = new int[perRank];
        try (AdamW opt = new AdamW(pv, opts)) {
            opt.zero_grad(true);
            int first = 0;
            if (resumeFromCheckpoint != null) {
                Checkpoint.State st;
                try {
                    st = Checkpoint.restore(resumeFromCheckpoint, names, params, opt, total);
                } catch (java.io.IOException e) {
                    throw new java.io.UncheckedIOException("resume from " + resumeFromCheckpoint, e);
                }
                first = st.globalStep();
                lossSum = st.lossSum();
                sinceLog = st.sinceLog();
                stepsSinceLog = st.stepsSinceLog();
                log.addAll(st.log());
                // the epoch orders the skipped steps drew (the current epoch's included unless it starts now)
                for (int e = 0; e < first / stepsPerEpoch + (first % stepsPerEpoch > 0 ? 1 : 0); e++) {
                    nextEpochOrder(order, args.shuffle ? orderRng : null);
                }
                shard(order, rank, world, shard);
            }
            for (int step = first; step < total; step++) {
                double lr = args.learningRateAt(step, total);
                opt.param_groups().get(0).options().set_lr(lr);
                // the step's batches, and the labels they predict in all (transformers' num_items_in_batch)
                int k = step % stepsPerEpoch;
                if (k == 0) {
                    nextEpochOrder(order, args.shuffle ? orderRng : null);
                    shard(order, rank, world, shard);
                }
                int[] window = java.util.Arrays.copyOfRange(shard, k * accum, Math.min(perRank, (k + 1) * accum));
                long items = 0;
                for (int bi : window) {
                    items += labelCounts[bi];
                }
                if (dist != null) {
                    items = sumOverRanks(items, "the label count of optimizer step " + (step + 1));
                }
                if (items == 0) {
                    throw new IllegalStateException("optimizer step " + (step + 1) + ": its batches "
                            + java.util.Arrays.toString(window) + " have no label to predict (every label after the "
                            + "first position is -100)");
                }
                double stepLoss = 0;
                for (int bi : window) {
                    Batch b = data.get(bi);
                    try (PointerScope scope = new PointerScope()) {
                        Tensor logits = lm.forward(b.inputIds(), b.attentionMask(), null, null);
                        // summed over the batch's labels, divided by the step's: the step's loss is the mean over
                        // all its labels, however they fall between the batches
                        Tensor loss = causalLmLossSum(logits, b.labels()).div(new Scalar((double) items));
                        double v = loss.item_double();
                        if (!Double.isFinite(v)) {
                            throw new IllegalStateException("loss is " + v + " at optimizer step " + (step + 1)
                                    + " (batch " + bi + "); lower the learning rate (now " + lr + ")");
                        }
                        loss.backward();
                        stepLoss += v;
                    }
                }
                if (buckets != null) {
                    buckets.allreduceGradients(dist, step + 1);
                    stepLoss = sumOverRanks(stepLoss, "the loss of optimizer step " + (step + 1));
                }
                double gradNorm = Double.NaN;
                if (args.maxGradNorm > 0) {
                    gradNorm = torch.clip_grad_norm_(pv, args.maxGradNorm);
                }
                opt.step();
                if (callback != null) {
                    callback.onStepEnd(step + 1);
                }
                opt.zero_grad(true);
                lossSum += stepLoss;
                sinceLog += stepLoss;
                stepsSinceLog++;
                if ((step + 1) % args.loggingSteps == 0 || step + 1 == total) {
                    log.add(new LogEntry(step + 1, sinceLog / stepsSinceLog, lr, gradNorm));
                    sinceLog = 0;
                    stepsSinceLog = 0;
                }
                if (args.saveSteps > 0 && (step + 1) % args.saveSteps == 0 && (dist == null || dist.isMain())) {
                    saveCheckpoint(new Checkpoint.State(step + 1, lossSum, sinceLog, stepsSinceLog, log), total,
                            names, params, opt);
                }
            }
        } finally {
            opts.close();
            pv.close();
            model.train(wasTraining);
        }
        return new TrainOutput(total, lossSum / total, Collections.unmodifiableList(log));
    }

    /**
     * {@code DistributedSampler}'s split of an epoch's order: padded to a multiple of {@code world} by repeating
     * its entries from the start (as often as needed), then entries {@code rank, rank + world, ...} into
     * {@code shard} (of length ceil(n / world)).
     */
    static void shard(int[] order, int rank, int world, int[] shard) {
        for (int i = 0; i < shard.length; i++) {
            shard[i] = order[(rank + i * world) % order.length];
        }
    }

    private long sumOverRanks(long v, String what) {
        try (PointerScope scope = new PointerScope()) {
            Tensor t = org.bytedeco.pytorch.AbstractTensor.create(new long[] {v}, 1);
            dist.allreduceSum(List.of(t), what);
            return t.item_long();
        }
    }

    private double sumOverRanks(double v, String what) {
        try (PointerScope scope = new PointerScope()) {
            Tensor t = org.bytedeco.pytorch.AbstractTensor.create(new double[] {v}, 1);
            dist.allreduceSum(List.of(t), what);
            return t.item_double();
        }
    }

    // 0..n-1, shuffled (Fisher-Yates) when rng is not null
    static void nextEpochOrder(int[] order, java.util.Random rng) {
        for (int i = 0; i < order.length; i++) {
            order[i] = i;
        }
        if (rng != null) {
            for (int i = order.length - 1; i > 0; i--) {
                int j = rng.nextInt(i + 1);
                int t = order[i];
                order[i] = order[j];
                order[j] = t;
            }
        }
    }

    /**
     * transformers' {@code Trainer.evaluate} loss: the model in eval mode without gradients, each batch's
     * {@link #causalLmLoss} counted once per sequence in it (its {@code eval_loss}: batch losses repeated by batch
     * size, then averaged). The model's mode is restored after.
     */
    public double evaluate(List<Batch> data) {
        if (data.isEmpty()) {
            throw new IllegalArgumentException("data: no batches to evaluate on");
        }
        boolean wasTraining = model.isTraining();
        model.train(false);
        double sum = 0;
        long sequences = 0;
        try (org.bytedeco.pytorch.NoGradGuard g = new org.bytedeco.pytorch.NoGradGuard()) {
            for (Batch b : data) {
                try (PointerScope scope = new PointerScope()) {
                    Tensor logits = lm.forward(b.inputIds(), b.attentionMask(), null, null);
                    long n = b.inputIds().size(0);
                    sum += causalLmLoss(logits, b.labels()).item_double() * n;
                    sequences += n;
                }
            }
        } finally {
            model.train(wasTraining);
        }
        return sum / sequences;
    }

    /**
     * transformers' {@code get_last_checkpoint}: the {@code checkpoint-<step>} folder in {@code outputDir} with the
     * highest step, or null when there is none.
     */
    public static java.nio.file.Path lastCheckpoint(java.nio.file.Path outputDir) throws java.io.IOException {
        return Checkpoint.last(outputDir);
    }

    /**
     * transformers' checkpoint of a model with an adapter, into {@code output_dir/checkpoint-<step>}: the active
     * adapter as {@code save_pretrained} writes it (what PEFT loads), and what a resumed run needs (see
     * {@link Checkpoint}). Written to a temporary folder, then renamed.
     */
    private void saveCheckpoint(Checkpoint.State state, int total, List<String> names, List<Tensor> params,
            AdamW opt) {
        int step = state.globalStep();
        java.util.List<String> active = model.activeAdapters();
        if (active.isEmpty()) {
            throw new IllegalStateException("saveSteps: no active adapter to save at step " + step);
        }
        java.nio.file.Path dir = args.outputDir.resolve("checkpoint-" + step);
        try {
            Checkpoint.save(dir, tmp -> model.saveAdapter(tmp, active.get(0)), state, total, names, params, opt);
        } catch (java.io.IOException e) {
            throw new java.io.UncheckedIOException("checkpoint at step " + step + " into " + dir, e);
        }
    }

    /** AdamW as transformers builds it: betas (0.9, 0.999) (libtorch's defaults too), the given epsilon and decay. */
    static AdamWOptions newOptions(TrainingArguments args) {
        AdamWOptions opts = new AdamWOptions(args.learningRate);
        opts.weight_decay().put(args.weightDecay); // libtorch's default is 1e-2, transformers' 0
        opts.eps().put(args.adamEpsilon);
        return opts;
    }

    // the labels a batch predicts: those after the first position that are not -100
    static long labelCount(Tensor labels) {
        long t = labels.size(1);
        if (t < 2) {
            return 0;
        }
        try (PointerScope scope = new PointerScope()) {
            return labels.narrow(1, 1, t - 1).ne(new Scalar(-100L)).sum().item_long();
        }
    }

    /**
     * {@link #causalLmLoss} summed instead of averaged over the labels: transformers' {@code ForCausalLMLoss} given
     * {@code num_items_in_batch}, before the division by it.
     */
    static Tensor causalLmLossSum(Tensor logits, Tensor labels) {
        Tensor[] s = shifted(logits, labels);
        long sum = 2; // at::Reduction::Sum
        return torch.cross_entropy_loss(s[0], s[1], new org.bytedeco.pytorch.TensorOptional(), sum, -100L, 0.0);
    }

    /**
     * transformers' {@code ForCausalLMLoss}: position t predicts label t + 1; logits in float32; cross entropy
     * averaged over the labels that are not {@code -100}.
     */
    public static Tensor causalLmLoss(Tensor logits, Tensor labels) {
        Tensor[] s = shifted(logits, labels);
        return torch.cross_entropy(s[0], s[1]);
    }

    // {logits of positions 0..t-2 in float32 as [rows, vocab], labels of positions 1..t-1 as [rows]}
    private static Tensor[] shifted(Tensor logits, Tensor labels) {
        if (logits.dim() != 3 || labels.dim() != 2 || logits.size(0) != labels.size(0)
                || logits.size(1) != labels.size(1)) {
            throw new IllegalArgumentException("logits " + java.util.Arrays.toString(logits.shape()) + " and labels "
                    + java.util.Arrays.toString(labels.shape()) + ": expected [batch, seq, vocab] and [batch, seq]");
        }
        long t = logits.size(1);
        long vocab = logits.size(2);
        return new Tensor[] {logits.narrow(1, 0, t - 1).to(ScalarType.Float).reshape(-1, vocab),
            labels.narrow(1, 1, t - 1).reshape(-1)};
    }
}
