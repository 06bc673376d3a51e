package dev.peft4j;

import static dev.peft4j.MixinSupport.bitEqual;
import static dev.peft4j.MixinSupport.maxAbsDiff;
import static dev.peft4j.MixinSupport.res;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.config.LoraConfig;
import dev.peft4j.models.AutoModel;
import dev.peft4j.models.CausalLM;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.nn.Embedding;
import dev.peft4j.nn.Layer;
import dev.peft4j.nn.Linear;
import dev.peft4j.nn.Module;
import dev.peft4j.tuners.BaseTunerLayer;
import dev.peft4j.tuners.TrainableTokensLayer;
import dev.peft4j.tuners.TrainableTokensWrapper;
import java.util.List;
import java.util.Map;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;

/**
 * Trainable tokens as PEFT applies them where peft4j used to differ: a mixed batch naming an adapter without trainable
 * tokens on the embedding is refused (PEFT's {@code KeyError}), and on a tied T5 the encoder's and decoder's
 * {@code embed_tokens} and the {@code lm_head} follow {@code shared}'s rows (PEFT's
 * {@code test_weight_tying_applied_when_model_is_tied_encoder_decoder}), while an untied mT5 ties nothing.
 */
class TrainableTokensParityTest {
    private static final String GOLDEN = "dev/peft4j/models/golden/";

    private static LoraConfig tokens(String target, Object indices) {
        return LoraConfig.builder().r(4).loraAlpha(8).targetModules(target).set("trainable_token_indices", indices)
                .build();
    }

    private static TrainableTokensLayer tokenLayer(Module m, String name) {
        return assertInstanceOf(TrainableTokensWrapper.class, m.getSubmodule(name), name).tokenAdapter();
    }

    private static Tensor forward(Module m, String name, Tensor x) {
        return ((Layer) m.getSubmodule(name)).forward(x);
    }

    @Test
    void mixedBatchNamingAnAdapterWithoutTokensIsRefusedNamingAdapterAndModule() throws Exception {
        try (PointerScope s = new PointerScope();
                PreTrainedModel m = AutoModel.fromPretrained(res(GOLDEN + "gpt2-tied"), ScalarType.Float)) {
            CausalLM lm = (CausalLM) m;
            Tensor ids = torch.arange(new Scalar(16L)).remainder(new Scalar(7L)).add(new Scalar(2L)).reshape(2, 8);
            m.loadAdapter(res("dev/peft4j/tuners/trainable_tokens/gpt2-tied-list").toString(),
                    LoadAdapterOptions.builder().adapterName("tok").build());
            m.addAdapter(LoraConfig.builder().r(4).loraAlpha(8).targetModules("c_attn").build(), "plain");
            m.setAdapter("tok");
            Tensor before = lm.forward(ids, null, null, null);

            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> m.withAdapterNames(List.of("tok", "plain"), () -> lm.forward(ids, null, null, null)));
            assertTrue(e.getMessage().contains("adapter 'plain' has no trainable tokens on module 'transformer.wte'")
                    && e.getMessage().contains("[tok]"), e.getMessage());
            // the tied head refuses the same way, naming itself
            Tensor hidden = torch.ones(1, 2, tokenLayer(m, "lm_head").dim());
            e = assertThrows(IllegalArgumentException.class, () -> BaseTunerLayer.withAdapterNames(List.of("plain"),
                    () -> forward(m, "lm_head", hidden)));
            assertTrue(e.getMessage().contains("module 'lm_head'"), e.getMessage());

            // nothing changed; the base name and the adapter that holds tokens still mix
            assertTrue(bitEqual(before, lm.forward(ids, null, null, null)), "the refusal changed the model");
            Tensor mixed = m.withAdapterNames(List.of("__base__", "tok"), () -> lm.forward(ids, null, null, null));
            assertTrue(maxAbsDiff(before.select(0, 1), mixed.select(0, 1)) <= 1e-5, "row 1: adapter tok");
            // merged, PEFT's layer gives every sample the merged base: no refusal
            m.mergeAdapter("tok");
            m.withAdapterNames(List.of("tok", "plain"), () -> forward(m, "transformer.wte", ids));
        }
    }

    @Test
    void tiedT5EncoderDecoderEmbeddingsAndHeadFollowShared() throws Exception {
        try (PointerScope s = new PointerScope();
                PreTrainedModel m = AutoModel.fromPretrained(res(GOLDEN + "t5-relu-tied"), ScalarType.Float)) {
            // a list targets the input embedding, T5's `shared` (transformers' get_input_embeddings)
            m.addAdapter(tokens("q", List.of(0L, 1L, 3L)), "default");
            TrainableTokensLayer shared = tokenLayer(m, "shared");
            for (String tied : List.of("encoder.embed_tokens", "decoder.embed_tokens", "lm_head")) {
                assertSame(shared, tokenLayer(m, tied).tiedTo(), tied + " follows shared");
            }
            // as PEFT's test: make the rows diverge from the base, then the encoder, the decoder and the head see them
            try (NoGradGuard g = new NoGradGuard()) {
                shared.delta("default").copy_(torch.rand(shared.delta("default").shape()).add(new Scalar(0.5)));
            }
            Tensor ids = Tensor.create(new long[] {0, 1, 2, 3}, 1, 4);
            Tensor embIn = forward(m, "encoder.embed_tokens", ids);
            assertTrue(bitEqual(embIn.select(1, 1), shared.delta("default").select(0, 1).unsqueeze(0)),
                    "the encoder reads the trained row of token 1");
            assertTrue(bitEqual(embIn, forward(m, "decoder.embed_tokens", ids)), "the decoder reads the same rows");
            assertTrue(bitEqual(embIn, forward(m, "shared", ids)));
            // lm_head(1 / emb_in): its logit for token t at position i is sum_j W'[t, j] / W'[ids_i, j], so the
            // diagonal is d_model exactly when the head's weight carries the same rows as the encoder's embedding
            Tensor out = forward(m, "lm_head", torch.reciprocal(embIn));
            Tensor diag = torch.diagonal(out.select(0, 0).narrow(1, 0, 4));
            assertTrue(maxAbsDiff(diag, torch.full(new long[] {4}, new Scalar(32.0))) <= 1e-4, "tied head");

            // only shared's rows are saved; the tied modules hold nothing of their own
            Map<String, Tensor> saved = m.getAdapterStateDict("default");
            assertTrue(saved.keySet().stream().anyMatch(k -> k.contains("shared.token_adapter.trainable_tokens_delta")),
                    saved.keySet().toString());
            assertFalse(saved.keySet().stream().anyMatch(k -> k.contains("embed_tokens") || k.contains("lm_head")),
                    saved.keySet().toString());

            // merging and unloading keeps the four modules on one weight, with the trained rows in it
            Tensor row1 = shared.delta("default").select(0, 1).clone();
            m.mergeAndUnload();
            Tensor w = assertInstanceOf(Embedding.class, m.getSubmodule("shared")).weight();
            assertTrue(bitEqual(row1, w.select(0, 1)));
            for (String tied : List.of("encoder.embed_tokens", "decoder.embed_tokens")) {
                assertEquals(w.data_ptr().address(),
                        assertInstanceOf(Embedding.class, m.getSubmodule(tied)).weight().data_ptr().address(), tied);
            }
            assertEquals(w.data_ptr().address(),
                    assertInstanceOf(Linear.class, m.getSubmodule("lm_head")).weight().data_ptr().address());
        }
    }

    @Test
    void t5TargetsByNameAndUntiedMt5TiesNothing() throws Exception {
        try (PointerScope s = new PointerScope();
                PreTrainedModel t5 = AutoModel.fromPretrained(res(GOLDEN + "t5-relu-tied"), ScalarType.Float);
                PreTrainedModel mt5 = AutoModel.fromPretrained(res(GOLDEN + "mt5-gated-untied"), ScalarType.Float)) {
            // a name matches every module ending with it, each training its own rows; shared is not targeted, so
            // nothing follows
            t5.addAdapter(tokens("q", Map.of("embed_tokens", List.of(2L, 5L))), "default");
            for (String name : List.of("encoder.embed_tokens", "decoder.embed_tokens")) {
                TrainableTokensLayer layer = tokenLayer(t5, name);
                assertNull(layer.tiedTo(), name);
                assertEquals(2, layer.delta("default").size(0), name);
            }
            assertInstanceOf(Embedding.class, t5.getSubmodule("shared"));
            assertInstanceOf(Linear.class, t5.getSubmodule("lm_head"));

            // mT5's head is untied (tie_word_embeddings false): PEFT ties nothing, so only shared is wrapped
            mt5.addAdapter(tokens("q", List.of(0L, 1L, 3L)), "default");
            assertNull(tokenLayer(mt5, "shared").tiedTo());
            for (String name : List.of("encoder.embed_tokens", "decoder.embed_tokens")) {
                assertInstanceOf(Embedding.class, mt5.getSubmodule(name), name);
            }
            assertInstanceOf(Linear.class, mt5.getSubmodule("lm_head"));
        }
    }
}
