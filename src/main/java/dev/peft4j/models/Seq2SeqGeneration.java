package dev.peft4j.models;

import java.util.ArrayList;
import java.util.List;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Generator;
import org.bytedeco.pytorch.InferenceMode;
import org.bytedeco.pytorch.LongOptional;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * transformers' {@code generate} for a {@link Seq2SeqLM}: the prompt goes to the encoder once; the decoder starts
 * from {@link Seq2SeqLM#decoderStartTokenId()} and extends its ids one token per step over a {@link Seq2SeqCache}
 * (its self-attention keys and values appended, the cross-attention's computed once). Greedy or seeded sampling as
 * {@link Generation.Options} say; rows that produced {@code eos} continue with {@code pad}.
 */
public final class Seq2SeqGeneration {
    private Seq2SeqGeneration() {}

    /**
     * The decoder ids {@code [B, 1 + new]} (int64, starting with the decoder start token; a tensor the caller owns)
     * generated for the encoder input {@code inputIds} {@code [B, S]} ({@code attentionMask} null for an unpadded
     * batch). Runs without autograd.
     */
    public static Tensor generate(Seq2SeqLM lm, Tensor inputIds, Tensor attentionMask, Generation.Options options) {
        return generate(lm, inputIds, attentionMask, options, true);
    }

    /**
     * As {@link #generate(Seq2SeqLM, Tensor, Tensor, Generation.Options)}; with {@code useCache} false every step
     * runs the decoder over all of its ids again (transformers' {@code use_cache=False}), which gives the same ids.
     */
    public static Tensor generate(Seq2SeqLM lm, Tensor inputIds, Tensor attentionMask, Generation.Options options,
            boolean useCache) {
        Attention.checkIds("input_ids", inputIds);
        long batch = inputIds.size(0);
        List<Tensor> produced = new ArrayList<>();
        Tensor result;
        try (InferenceMode im = new InferenceMode(); Seq2SeqCache cache = useCache ? lm.newCache() : null;
                Generator gen = torch.make_generator_cpu(options.seed());
                PointerScope outer = new PointerScope()) {
            Tensor ids = inputIds.to(ScalarType.Long);
            Tensor mask = attentionMask == null ? null : attentionMask.to(ScalarType.Long);
            Tensor encoded = lm.encode(ids, mask);
            Tensor start = torch.full(new long[] {batch, 1}, new Scalar(lm.decoderStartTokenId()),
                    Generation.optionsOn(ScalarType.Long, ids));
            Tensor decoded = start;
            Tensor finished = torch.zeros(new long[] {batch, 1}, Generation.optionsOn(ScalarType.Bool, ids));
            Tensor step = start;
            for (int i = 0; i < options.maxNewTokens(); i++) {
                Tensor next;
                try (PointerScope scope = new PointerScope()) {
                    Tensor logits = lm.decode(useCache ? step : decoded, encoded, mask, cache);
                    Tensor last = logits.select(1, logits.size(1) - 1).to(ScalarType.Float);
                    next = options.doSample() ? Generation.sampleOnCpu(last, options, gen)
                            : last.argmax(new LongOptional(-1), true);
                    // the prompt's device (a model split across devices gives logits on its head's)
                    next = PreTrainedModel.onDeviceOfTensor(next, ids);
                    if (options.eosTokenId() >= 0) {
                        next = next.masked_fill(finished, new Scalar(options.padTokenId()));
                        finished = ScopeUtil.keep(scope,
                                finished.logical_or(next.eq(new Scalar(options.eosTokenId()))));
                    }
                    next = ScopeUtil.keep(scope, next.contiguous());
                    if (!useCache) {
                        decoded = ScopeUtil.keep(scope, torch.cat(new TensorVector(decoded, next), 1));
                    }
                }
                ScopeUtil.handToCaller(next);
                if (options.eosTokenId() >= 0) {
                    ScopeUtil.handToCaller(finished);
                }
                if (!useCache) {
                    ScopeUtil.handToCaller(decoded);
                }
                produced.add(next);
                step = next;
                if (options.eosTokenId() >= 0 && finished.all().item_bool()) {
                    break;
                }
            }
            TensorVector parts = new TensorVector(start);
            for (Tensor t : produced) {
                parts.push_back(t);
            }
            result = ScopeUtil.keep(outer, torch.cat(parts, 1));
        }
        return ScopeUtil.handToCaller(result);
    }
}
