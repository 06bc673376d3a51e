package dev.peft4j.models;

import java.util.ArrayList;
import java.util.List;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.BoolOptional;
import org.bytedeco.pytorch.Generator;
import org.bytedeco.pytorch.GeneratorOptional;
import org.bytedeco.pytorch.InferenceMode;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.T_TensorTensor_T;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * transformers' {@code generate} for a {@link CausalLM}, with a {@link KVCache}: greedy, or sampling with
 * temperature, top-k and top-p applied in that order (transformers' logits-processor order), from a seeded
 * generator so that a seed reproduces a run. Rows that produced {@code eos} continue with {@code pad}.
 */
public final class Generation {
    private Generation() {}

    /** Decoding options. {@code topK} 0 and {@code topP} 1 disable those filters; {@code eosTokenId} &lt; 0: none. */
    public record Options(int maxNewTokens, boolean doSample, double temperature, int topK, double topP, long seed,
            long eosTokenId, long padTokenId) {
        /**
         * @throws IllegalArgumentException for {@code maxNewTokens < 0}, a non-positive temperature when sampling,
         *     {@code topK < 0} or {@code topP} outside (0, 1]
         */
        public Options {
            if (maxNewTokens < 0) {
                throw new IllegalArgumentException("maxNewTokens must be ≥ 0, got " + maxNewTokens);
            }
            if (doSample && !(temperature > 0)) {
                throw new IllegalArgumentException("temperature must be > 0 when sampling, got " + temperature);
            }
            if (topK < 0) {
                throw new IllegalArgumentException("topK must be ≥ 0, got " + topK);
            }
            if (!(topP > 0 && topP <= 1)) {
                throw new IllegalArgumentException("topP must be in (0, 1], got " + topP);
            }
        }

        /** Greedy decoding of {@code maxNewTokens} tokens, no end token. */
        public static Options greedy(int maxNewTokens) {
            return new Options(maxNewTokens, false, 1.0, 0, 1.0, 0, -1, 0);
        }

        /** Seeded sampling. */
        public static Options sampling(int maxNewTokens, double temperature, int topK, double topP, long seed) {
            return new Options(maxNewTokens, true, temperature, topK, topP, seed, -1, 0);
        }

        /** These options, stopping a row at {@code eos} and padding it with {@code pad} afterwards. */
        public Options withEos(long eos, long pad) {
            return new Options(maxNewTokens, doSample, temperature, topK, topP, seed, eos, pad);
        }
    }

    /**
     * Generates up to {@code options.maxNewTokens()} tokens after {@code inputIds} {@code [B, T]} (left-pad a batch;
     * {@code attentionMask} may be null for an unpadded one). Returns {@code [B, T + new]} int64 ids, a tensor the
     * caller owns. Runs without autograd.
     *
     * <p>A model with a {@link SlotKVCache} (the Llama family), given rows without padding, decodes over one slot
     * per row, preallocated for {@code T + maxNewTokens} positions and written in place, on the native decode path
     * while {@link dev.peft4j.kernels.DecodeKernels#enabled()}; other models, padded batches, and the libtorch path
     * ({@code -Dpeft4j.decode=libtorch}) use a {@link KVCache} that grows by concatenation.
     */
    public static Tensor generate(CausalLM lm, Tensor inputIds, Tensor attentionMask, Options options) {
        Attention.checkIds("input_ids", inputIds);
        if (inputIds.is_cpu() && lm.supportsSlotCache() && dev.peft4j.kernels.DecodeKernels.enabled()
                && unpadded(attentionMask)) {
            return generateOverSlots(lm, inputIds, options);
        }
        long batch = inputIds.size(0);
        List<Tensor> produced = new ArrayList<>();
        Tensor mask = null;
        Tensor finished = null;
        Tensor result;
        try (InferenceMode im = new InferenceMode(); KVCache cache = lm.newCache();
                Generator gen = torch.make_generator_cpu(options.seed());
                PointerScope outer = new PointerScope()) {
            Tensor ids = inputIds.to(ScalarType.Long);
            mask = attentionMask != null ? attentionMask.to(ScalarType.Long) : torch.ones_like(ids);
            finished = torch.zeros(new long[] {batch, 1}, optionsOn(ScalarType.Bool, ids));
            Tensor step = ids;
            for (int i = 0; i < options.maxNewTokens(); i++) {
                try (PointerScope scope = new PointerScope()) {
                    Tensor logits = lm.forward(step, mask, null, cache);
                    Tensor last = logits.select(1, logits.size(1) - 1).to(ScalarType.Float);
                    Tensor next = options.doSample() ? sampleOnCpu(last, options, gen) : last.argmax(
                            new org.bytedeco.pytorch.LongOptional(-1), true);
                    // the prompt's device (a model split across devices gives logits on its head's)
                    next = PreTrainedModel.onDeviceOfTensor(next, ids);
                    if (options.eosTokenId() >= 0) {
                        next = next.masked_fill(finished, new Scalar(options.padTokenId()));
                        finished = finished.logical_or(next.eq(new Scalar(options.eosTokenId())));
                        ScopeUtil.keep(scope, finished);
                    }
                    Tensor ones = torch.ones(new long[] {batch, 1}, optionsOn(ScalarType.Long, ids));
                    mask = torch.cat(new TensorVector(mask, ones), 1);
                    ScopeUtil.keep(scope, mask);
                    ScopeUtil.keep(scope, next);
                    produced.add(next);
                    step = next;
                }
                outer.attach(step);
                step.releaseReference();
                outer.attach(mask);
                mask.releaseReference();
                if (options.eosTokenId() >= 0) {
                    outer.attach(finished);
                    finished.releaseReference();
                    if (finished.all().item_bool()) {
                        break;
                    }
                }
            }
            result = concat(outer, ids, produced);
        }
        return ScopeUtil.handToCaller(result);
    }

    /** No mask, or a mask of ones only (no padding: every row's positions are 0 .. T-1). */
    private static boolean unpadded(Tensor attentionMask) {
        if (attentionMask == null) {
            return true;
        }
        try (PointerScope scope = new PointerScope()) {
            return !attentionMask.ne(new Scalar(1)).any().item_bool();
        }
    }

    /** {@link #generate} over a slot cache, one slot per row: the same tokens, no per-step concatenation. */
    private static Tensor generateOverSlots(CausalLM lm, Tensor inputIds, Options options) {
        int batch = Math.toIntExact(inputIds.size(0));
        long promptLength = inputIds.size(1);
        int[] slotOf = new int[batch];
        for (int i = 0; i < batch; i++) {
            slotOf[i] = i;
        }
        long[] past = new long[batch];
        List<Tensor> produced = new ArrayList<>();
        Tensor finished = null;
        Tensor result;
        int capacity = Math.toIntExact(Math.max(1, promptLength + options.maxNewTokens()));
        try (InferenceMode im = new InferenceMode(); SlotKVCache cache = lm.newSlotCache(batch, capacity);
                Generator gen = torch.make_generator_cpu(options.seed());
                PointerScope outer = new PointerScope()) {
            Tensor ids = inputIds.to(ScalarType.Long);
            finished = torch.zeros(new long[] {batch, 1}, optionsOn(ScalarType.Bool, ids));
            Tensor step = ids;
            for (int i = 0; i < options.maxNewTokens(); i++) {
                try (PointerScope scope = new PointerScope()) {
                    Tensor last = lm.forwardSlots(step, cache, slotOf, past).to(ScalarType.Float);
                    long stepLength = step.size(1);
                    for (int r = 0; r < batch; r++) {
                        past[r] += stepLength;
                    }
                    Tensor next = options.doSample() ? sampleOnCpu(last, options, gen) : last.argmax(
                            new org.bytedeco.pytorch.LongOptional(-1), true);
                    // the prompt's device (a model split across devices gives logits on its head's)
                    next = PreTrainedModel.onDeviceOfTensor(next, ids);
                    if (options.eosTokenId() >= 0) {
                        next = next.masked_fill(finished, new Scalar(options.padTokenId()));
                        finished = finished.logical_or(next.eq(new Scalar(options.eosTokenId())));
                        ScopeUtil.keep(scope, finished);
                    }
                    ScopeUtil.keep(scope, next);
                    produced.add(next);
                    step = next;
                }
                outer.attach(step);
                step.releaseReference();
                if (options.eosTokenId() >= 0) {
                    outer.attach(finished);
                    finished.releaseReference();
                    if (finished.all().item_bool()) {
                        break;
                    }
                }
            }
            result = concat(outer, ids, produced);
        }
        return ScopeUtil.handToCaller(result);
    }

    /** Options of {@code dtype} on the device of {@code like}: what a step creates goes where its inputs are. */
    static TensorOptions optionsOn(ScalarType dtype, Tensor like) {
        return new TensorOptions(dtype).device(new org.bytedeco.pytorch.DeviceOptional(like.device()));
    }

    /**
     * {@link #sample} with the CPU generator {@code gen}: logits on another device are drawn from on the CPU (one
     * {@code [B, vocab]} copy per step, so that a seed gives the same ids on every device) and the ids go back there.
     */
    static Tensor sampleOnCpu(Tensor logits, Options o, Generator gen) {
        if (logits.is_cpu()) {
            return sample(logits, o, gen);
        }
        try (org.bytedeco.pytorch.Device cpu = new org.bytedeco.pytorch.Device("cpu")) {
            return sample(logits.to(cpu, logits.scalar_type().intern()), o, gen).to(logits.device(), ScalarType.Long);
        }
    }

    private static Tensor concat(PointerScope outer, Tensor ids, List<Tensor> produced) {
        TensorVector parts = new TensorVector(ids);
        for (Tensor t : produced) {
            parts.push_back(t);
        }
        return ScopeUtil.keep(outer, torch.cat(parts, 1));
    }

    /**
     * Temperature, then top-k, then top-p (nucleus) filtering of float logits {@code [B, vocab]}; one multinomial
     * draw per row from {@code gen}: the next ids {@code [B, 1]}, as {@link #generate} draws them. Temporaries go to
     * the caller's scope.
     */
    public static Tensor sample(Tensor logits, Options o, Generator gen) {
        Tensor l = o.temperature() == 1.0 ? logits : logits.div(new Scalar(o.temperature()));
        long vocab = l.size(-1);
        T_TensorTensor_T sorted = l.sort(-1, true); // descending
        Tensor values = sorted.get0();
        Tensor order = sorted.get1();
        Tensor remove = torch.zeros_like(values).to(ScalarType.Bool);
        if (o.topK() > 0 && o.topK() < vocab) {
            // keep the k largest (ties with the k-th kept, as transformers' `logits < kth value`)
            Tensor kth = values.narrow(-1, o.topK() - 1, 1);
            remove = remove.logical_or(values.lt(kth));
        }
        if (o.topP() < 1.0) {
            // drop the tail once the mass of the tokens before it reaches top_p; always keep the first
            Tensor probs = values.masked_fill(remove, new Scalar(Double.NEGATIVE_INFINITY)).softmax(-1);
            Tensor before = probs.cumsum(-1).sub(probs);
            remove = remove.logical_or(before.gt(new Scalar(o.topP())).logical_or(before.eq(new Scalar(o.topP()))));
        }
        Tensor filtered = values.masked_fill(remove, new Scalar(Double.NEGATIVE_INFINITY));
        Tensor pick = filtered.softmax(-1).multinomial(1, false, new GeneratorOptional(gen));
        return order.gather(-1, pick);
    }
}
