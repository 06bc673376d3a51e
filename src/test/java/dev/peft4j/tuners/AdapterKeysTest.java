package dev.peft4j.tuners;

import static dev.peft4j.tuners.AdapterKeys.Param.ADALORA_A;
import static dev.peft4j.tuners.AdapterKeys.Param.ADALORA_B;
import static dev.peft4j.tuners.AdapterKeys.Param.ADALORA_E;
import static dev.peft4j.tuners.AdapterKeys.Param.IA3_L;
import static dev.peft4j.tuners.AdapterKeys.Param.LORA_A;
import static dev.peft4j.tuners.AdapterKeys.Param.LORA_B;
import static dev.peft4j.tuners.AdapterKeys.Param.LORA_B_BIAS;
import static dev.peft4j.tuners.AdapterKeys.Param.LORA_EMBEDDING_A;
import static dev.peft4j.tuners.AdapterKeys.Param.LORA_MAGNITUDE_VECTOR;
import static dev.peft4j.tuners.AdapterKeys.Param.RANKNUM;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.tuners.AdapterKeys.ParsedKey;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import org.junit.jupiter.api.Test;

class AdapterKeysTest {
    static final String Q = "model.layers.0.self_attn.q_proj";

    @Test
    void llamaLoraKeysOfSpecSection59BothWays() {
        // transformers integration in memory <-> checkpoint
        assertEquals("model.layers.0.self_attn.q_proj.lora_A.default.weight", AdapterKeys.modelKey(Q, "default", LORA_A));
        assertEquals("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", AdapterKeys.checkpointKey(Q, LORA_A));
        assertEquals("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", AdapterKeys.checkpointKey(Q, LORA_B));
        // PeftModel in memory -> checkpoint: adapter name removed, prefix kept
        assertEquals("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", AdapterKeys.removeAdapterName(
                "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight", "default"));
        // checkpoint -> PeftModel in memory, name-based
        assertEquals("base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight",
                AdapterKeys.insertAdapterName("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight",
                        "default", AdapterKeys.LORA_PREFIX));
        // checkpoint -> transformers in memory (v4 and v5)
        assertEquals("model.layers.0.self_attn.q_proj.lora_A.other.weight", AdapterKeys.transformersV4ModelKey(
                "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", "other", AdapterKeys.LORA_PREFIX));
        assertEquals("model.layers.0.self_attn.q_proj.lora_A.other.weight", AdapterKeys.transformersV5ModelKey(
                "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", "other", List.of("lora_")));
        assertEquals("lm_head.weight", AdapterKeys.transformersV5ModelKey("base_model.model.lm_head.weight", "x",
                List.of("lora_")));
    }

    @Test
    void modulesToSaveKeysOfSpecSection59() {
        assertEquals("lm_head.modules_to_save.default.weight",
                AdapterKeys.modulesToSaveModelKey("lm_head", "default", "weight"));
        assertEquals("lm_head.weight", AdapterKeys.modulesToSaveCheckpointKey("lm_head", "default",
                "lm_head.modules_to_save.default.weight"));
        assertEquals("base_model.model.lm_head.weight", AdapterKeys.modulesToSaveCheckpointKey(
                "base_model.model.lm_head", "default", "base_model.model.lm_head.modules_to_save.default.weight"));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> AdapterKeys.modulesToSaveCheckpointKey("lm_head", "other", "lm_head.modules_to_save.default.weight"));
        assertTrue(e.getMessage().contains("lm_head.modules_to_save.default.weight"), e.getMessage());
    }

    @Test
    void ia3AndAdaloraKeysHaveNoWeightSuffix() {
        String down = "model.layers.0.mlp.down_proj";
        assertEquals("base_model.model.model.layers.0.mlp.down_proj.ia3_l", AdapterKeys.checkpointKey(down, IA3_L));
        assertEquals("model.layers.0.mlp.down_proj.ia3_l.default", AdapterKeys.modelKey(down, "default", IA3_L));
        assertEquals("base_model.model.model.layers.0.mlp.down_proj.ia3_l.default",
                AdapterKeys.insertAdapterName("base_model.model.model.layers.0.mlp.down_proj.ia3_l", "default",
                        AdapterKeys.IA3_PREFIX));
        assertEquals("base_model.model.model.layers.0.self_attn.q_proj.lora_A", AdapterKeys.checkpointKey(Q, ADALORA_A));
        assertEquals("base_model.model.model.layers.0.self_attn.q_proj.lora_E", AdapterKeys.checkpointKey(Q, ADALORA_E));
        assertEquals("model.layers.0.self_attn.q_proj.lora_E.default", AdapterKeys.removeAdapterName(
                "model.layers.0.self_attn.q_proj.lora_E.default.default", "default"));
        assertEquals("model.layers.0.self_attn.q_proj.lora_E",
                AdapterKeys.removeAdapterName("model.layers.0.self_attn.q_proj.lora_E.default", "default"));
        assertEquals("x.lora_E.ada", AdapterKeys.insertAdapterName("x.lora_E", "ada", AdapterKeys.LORA_PREFIX));
    }

    @Test
    void ranknumIsNeverSaved() {
        assertEquals("m.ranknum.default", AdapterKeys.modelKey("m", "default", RANKNUM));
        assertThrows(IllegalArgumentException.class, () -> AdapterKeys.checkpointKey("m", RANKNUM));
    }

    @Test
    void parseCheckpointKeyTellsLoraFromAdaloraBySuffix() {
        assertEquals(Optional.of(new ParsedKey(Q, LORA_A)),
                AdapterKeys.parseCheckpointKey("base_model.model." + Q + ".lora_A.weight"));
        assertEquals(Optional.of(new ParsedKey(Q, ADALORA_A)), AdapterKeys.parseCheckpointKey(Q + ".lora_A"));
        assertEquals(Optional.of(new ParsedKey(Q, ADALORA_B)), AdapterKeys.parseCheckpointKey(Q + ".lora_B"));
        assertEquals(Optional.of(new ParsedKey("embed", LORA_EMBEDDING_A)),
                AdapterKeys.parseCheckpointKey("base_model.model.embed.lora_embedding_A"));
        assertEquals(Optional.of(new ParsedKey("fc", LORA_B_BIAS)), AdapterKeys.parseCheckpointKey("fc.lora_B.bias"));
        assertEquals(Optional.of(new ParsedKey("fc", LORA_MAGNITUDE_VECTOR)),
                AdapterKeys.parseCheckpointKey("fc.lora_magnitude_vector"));
        assertEquals(Optional.empty(), AdapterKeys.parseCheckpointKey("base_model.model.lm_head.weight"));
        assertEquals(Optional.empty(), AdapterKeys.parseCheckpointKey(Q + ".base_layer.bias"));
        for (AdapterKeys.Param p : AdapterKeys.Param.values()) {
            if (p.isSaved()) {
                assertEquals(Optional.of(new ParsedKey(Q, p)), AdapterKeys.parseCheckpointKey(AdapterKeys.checkpointKey(Q, p)),
                        p.name());
            }
        }
    }

    @Test
    void adapterNamedLikeAModuleIsRemovedOnlyAtItsPosition() {
        // test_low_level_api: an adapter called "v_proj"
        String key = "model.v_proj.lora_A.v_proj.weight";
        assertEquals("model.v_proj.lora_A.weight", AdapterKeys.removeAdapterName(key, "v_proj"));
        // PEFT <= 0.13 stripped it everywhere
        assertEquals("model.lora_A.weight", AdapterKeys.removeAdapterNameLegacy(key, "v_proj"));
        assertEquals("model.v_proj.lora_A.v_proj.weight",
                AdapterKeys.insertAdapterName("model.v_proj.lora_A.weight", "v_proj", AdapterKeys.LORA_PREFIX));
    }

    @Test
    void modulesNamedWithTheLoraPrefixUseTheLastOccurrence() {
        assertEquals("lora_foo.lora_A.default.weight",
                AdapterKeys.insertAdapterName("lora_foo.lora_A.weight", "default", AdapterKeys.LORA_PREFIX));
        assertEquals("foo_lora.lora_B.default.weight",
                AdapterKeys.insertAdapterName("foo_lora.lora_B.weight", "default", AdapterKeys.LORA_PREFIX));
        // prefix inside a module name deeper than one component: left alone (PEFT #3433 guard)
        assertEquals("lora_head.dense.weight",
                AdapterKeys.insertAdapterName("lora_head.dense.weight", "default", AdapterKeys.LORA_PREFIX));
        // PEFT <= 0.13 took the text between the first two occurrences ("foo."), so it replaced "" everywhere
        assertEquals("default.ldefault.odefault.rdefault.adefault._default.fdefault.odefault.odefault..default.ldefault."
                + "odefault.rdefault.adefault._default.Adefault..default.wdefault.edefault.idefault.gdefault.hdefault."
                + "tdefault.",
                AdapterKeys.insertAdapterNameLegacy("lora_foo.lora_A.weight", "default", AdapterKeys.LORA_PREFIX));
        assertEquals("weightx.lora_A.default.weight",
                AdapterKeys.insertAdapterName("weightx.lora_A.weight", "default", AdapterKeys.LORA_PREFIX));
        assertEquals("default.weightx.lora_A.default.weight",
                AdapterKeys.insertAdapterNameLegacy("weightx.lora_A.weight", "default", AdapterKeys.LORA_PREFIX));
    }

    @Test
    void doraMagnitudeKeysDropAndRegainWeight() {
        assertEquals("fc.lora_magnitude_vector.default.weight", AdapterKeys.modelKey("fc", "default", LORA_MAGNITUDE_VECTOR));
        assertEquals("base_model.model.fc.lora_magnitude_vector", AdapterKeys.checkpointKey("fc", LORA_MAGNITUDE_VECTOR));
        assertEquals("fc.lora_magnitude_vector.default.weight",
                AdapterKeys.insertAdapterName("fc.lora_magnitude_vector", "default", AdapterKeys.LORA_PREFIX));
    }

    @Test
    void structuralMappingInvertsRemovalAndAcceptsPrefixedKeys() {
        Map<String, String> m = AdapterKeys.checkpointToModelKeys(List.of(
                "lora_foo.lora_A.default.weight", "lora_foo.lora_B.default.weight", "emb.lora_embedding_A.default"),
                "default");
        assertEquals("lora_foo.lora_A.default.weight", m.get("lora_foo.lora_A.weight"));
        assertEquals("lora_foo.lora_A.default.weight", m.get("base_model.model.lora_foo.lora_A.weight"));
        assertEquals("emb.lora_embedding_A.default", m.get("base_model.model.emb.lora_embedding_A"));
        assertEquals(6, m.size());
        assertThrows(IllegalArgumentException.class, () -> AdapterKeys.checkpointToModelKeys(
                List.of("a.lora_E.x", "a.lora_E"), "x"));
    }

    @Test
    void transformersV5RenameAlsoHitsModulesNamedWithThePrefix() {
        assertEquals("model.lora_proj.a.lora_A.a.weight", AdapterKeys.transformersV5ModelKey(
                "base_model.model.model.lora_proj.lora_A.weight", "a", List.of("lora_")));
        assertEquals("model.layers.0.mlp.down_proj.ia3_l.default", AdapterKeys.transformersV5ModelKey(
                "base_model.model.model.layers.0.mlp.down_proj.ia3_l", "default", List.of("lora_", "ia3_")));
    }

    @Test
    void adaloraRankPatternKeysLoseTheAdapterAndNameTheirModule() {
        String trained = "encoder.block.0.layer.0.SelfAttention.q.lora_E.default";
        String saved = AdapterKeys.rankPatternSaveKey(trained, "default");
        assertEquals("encoder.block.0.layer.0.SelfAttention.q.lora_E", saved);
        assertEquals("encoder.block.0.layer.0.SelfAttention.q", AdapterKeys.rankPatternModule(trained, "default"));
        assertEquals("encoder.block.0.layer.0.SelfAttention.q", AdapterKeys.rankPatternModule(saved, "default"));
        // PEFT's substring test: adapter "a" occurs in "lora_E", so one component too many is cut
        assertEquals("encoder.block.0.layer.0.SelfAttention", AdapterKeys.rankPatternModule(saved, "a"));
        assertThrows(IllegalArgumentException.class, () -> AdapterKeys.rankPatternModule("lora_E", "x"));
    }

    @Test
    void emptyNamesAreRejected() {
        assertThrows(IllegalArgumentException.class, () -> AdapterKeys.modelKey(Q, "", LORA_A));
        assertThrows(IllegalArgumentException.class, () -> AdapterKeys.checkpointKey("", LORA_A));
    }
}
