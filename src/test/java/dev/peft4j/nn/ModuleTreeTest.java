package dev.peft4j.nn;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;

/** The module-tree API the adapter injector builds on: names, lookup, replacement, state dict, dtype, lifetime. */
class ModuleTreeTest {
    /** A two-layer toy: {@code layers.N.proj} Linear, {@code embed} tied to {@code head}. */
    static final class Toy extends Module {
        Toy(Init init) {
            registerModule("embed", new Embedding(10, 4, init));
            ModuleList<Block> layers = registerModule("layers", new ModuleList<>());
            layers.add(new Block(init));
            layers.add(new Block(init));
            registerModule("head", new Linear(4, 10, false, init));
            setParameter("head.weight", getParameter("embed.weight"), false).close();
        }

        Tensor forward(Tensor ids) {
            Tensor x = layer("embed").forward(ids);
            @SuppressWarnings("unchecked")
            ModuleList<Block> layers = (ModuleList<Block>) child("layers");
            for (int i = 0; i < layers.size(); i++) {
                x = layers.get(i).forward(x);
            }
            return layer("head").forward(x);
        }
    }

    static final class Block extends Module implements Layer {
        Block(Init init) {
            registerModule("proj", new Linear(4, 4, true, init));
            registerModule("act", new Activation(Activation.Kind.GELU_TANH));
            registerModule("drop", new Dropout(0.5));
        }

        @Override
        public Tensor forward(Tensor x) {
            return layer("drop").forward(layer("act").forward(layer("proj").forward(x))).add_(x);
        }
    }

    /** What an adapter wrapper does: keeps the base layer as a child and adds to its output. */
    static final class Doubler extends Module implements Layer {
        Doubler(Module base) {
            registerModule("base_layer", base);
        }

        @Override
        public Tensor forward(Tensor x) {
            Tensor y = layer("base_layer").forward(x);
            return y.mul_(new org.bytedeco.pytorch.Scalar(2.0));
        }
    }

    static Toy toy() {
        Toy t = new Toy(Init.cpu(ScalarType.Float));
        Init.normal(t, 0.5, 7);
        return t;
    }

    @Test
    void namedModulesAndParametersUseDottedHfNames() {
        try (PointerScope s = new PointerScope(); Toy t = toy()) {
            assertEquals(List.of("", "embed", "layers", "layers.0", "layers.0.proj", "layers.0.act", "layers.0.drop",
                    "layers.1", "layers.1.proj", "layers.1.act", "layers.1.drop", "head"),
                    new ArrayList<>(t.namedModules().keySet()));
            // tied head.weight is listed once by namedParameters, under every name by stateDict
            assertEquals(List.of("embed.weight", "layers.0.proj.weight", "layers.0.proj.bias", "layers.1.proj.weight",
                    "layers.1.proj.bias"), new ArrayList<>(t.namedParameters().keySet()));
            assertTrue(t.stateDict().containsKey("head.weight"));
            assertSame(t.stateDict().get("head.weight"), t.stateDict().get("embed.weight"));
            assertEquals("Linear", t.getSubmodule("layers.1.proj").typeName());
            assertEquals(4, ((Linear) t.getSubmodule("layers.1.proj")).inFeatures());
        }
    }

    @Test
    void getSubmoduleNamesTheMissingPart() {
        try (PointerScope s = new PointerScope(); Toy t = toy()) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> t.getSubmodule("layers.1.q_proj"));
            assertTrue(e.getMessage().contains("layers.1") && e.getMessage().contains("q_proj")
                    && e.getMessage().contains("[proj, act, drop]"), e.getMessage());
        }
    }

    @Test
    void replacedSubmoduleIsUsedByTheParentsNextForward() {
        try (PointerScope s = new PointerScope(); Toy t = toy()) {
            Tensor ids = torch.arange(new org.bytedeco.pytorch.Scalar(0), new org.bytedeco.pytorch.Scalar(5),
                    new org.bytedeco.pytorch.TensorOptions(ScalarType.Long)).view(1, 5);
            Tensor before = t.forward(ids);
            Module base = t.getSubmodule("layers.0.proj");
            Module old = t.replaceSubmodule("layers.0.proj", new Doubler(base));
            assertSame(base, old);
            assertEquals(List.of("layers.0.proj.base_layer.weight", "layers.0.proj.base_layer.bias"),
                    t.namedParameters().keySet().stream().filter(k -> k.startsWith("layers.0.")).toList());
            Tensor after = t.forward(ids);
            assertTrue(after.sub(before).abs().max().item_float() > 1e-3, "the replacement changed nothing");
            // undoing the replacement restores the output exactly
            t.replaceSubmodule("layers.0.proj", old);
            assertEquals(0f, t.forward(ids).sub(before).abs().max().item_float());
            // a Layer cannot be replaced by a non-Layer
            assertThrows(IllegalArgumentException.class, () -> t.replaceSubmodule("layers.0.proj", new ModuleList<>()));
        }
    }

    /** A LoRA-shaped wrapper: base_layer plus per-adapter containers, as PEFT names them. */
    static final class LoraLike extends Module implements Layer {
        LoraLike(Linear base) {
            registerModule("base_layer", base);
            ModuleDict<Linear> a = registerModule("lora_A", new ModuleDict<>());
            ModuleDict<Linear> b = registerModule("lora_B", new ModuleDict<>());
            a.put("default", new Linear(base.inFeatures(), 2, false, Init.cpu(ScalarType.Float)));
            b.put("default", new Linear(2, base.outFeatures(), false, Init.cpu(ScalarType.Float)));
            registerModule("lora_embedding_A", new ParameterDict()).put("default", torch.zeros(2, 3), true);
        }

        @SuppressWarnings("unchecked")
        void deleteAdapter(String name) {
            ((ModuleDict<Linear>) child("lora_A")).remove(name).close();
            ((ModuleDict<Linear>) child("lora_B")).remove(name).close();
            ((ParameterDict) child("lora_embedding_A")).remove(name).close();
        }

        @Override
        public Tensor forward(Tensor x) {
            return layer("base_layer").forward(x);
        }
    }

    @Test
    void adapterContainersNameParametersByAdapterAndCanBeEmptied() {
        try (PointerScope s = new PointerScope(); Toy t = toy()) {
            t.replaceSubmodule("layers.1.proj", new LoraLike((Linear) t.getSubmodule("layers.1.proj")));
            assertEquals(List.of("layers.1.proj.base_layer.weight", "layers.1.proj.base_layer.bias",
                    "layers.1.proj.lora_A.default.weight", "layers.1.proj.lora_B.default.weight",
                    "layers.1.proj.lora_embedding_A.default"),
                    t.namedParameters().keySet().stream().filter(k -> k.startsWith("layers.1.")).toList());
            ((LoraLike) t.getSubmodule("layers.1.proj")).deleteAdapter("default");
            assertEquals(List.of("layers.1.proj.base_layer.weight", "layers.1.proj.base_layer.bias"),
                    t.namedParameters().keySet().stream().filter(k -> k.startsWith("layers.1.")).toList());
            assertEquals(List.of(), ((ModuleDict<?>) t.getSubmodule("layers.1.proj.lora_A")).keys());
        }
    }

    @Test
    void stateDictRoundTripsAndMissingUnusedAndMisshapenKeysAreReported() {
        try (PointerScope s = new PointerScope(); Toy a = toy(); Toy b = new Toy(Init.meta(ScalarType.Float))) {
            Map<String, Tensor> sd = new LinkedHashMap<>(a.stateDict());
            sd.remove("head.weight"); // tied: the embedding alone suffices
            sd.put("layers.0.proj.extra", torch.zeros(1));
            Module.LoadReport r = b.loadStateDict(sd);
            assertEquals(List.of("layers.0.proj.extra"), r.unexpectedKeys());
            for (Map.Entry<String, Tensor> e : a.stateDict().entrySet()) {
                Tensor mine = b.stateDict().get(e.getKey());
                assertEquals(0f, mine.sub(e.getValue()).abs().max().item_float(), e.getKey());
                assertFalse(mine.data_ptr().address() == e.getValue().data_ptr().address(), "must copy " + e.getKey());
            }
            assertSame(b.getParameter("head.weight"), b.getParameter("embed.weight"), "tie kept after loading");

            Map<String, Tensor> partial = new LinkedHashMap<>(a.stateDict());
            partial.remove("layers.1.proj.bias");
            partial.remove("layers.0.proj.weight");
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> b.loadStateDict(partial));
            assertTrue(e.getMessage().contains("[layers.0.proj.weight, layers.1.proj.bias]"), e.getMessage());

            Map<String, Tensor> wrong = new LinkedHashMap<>(a.stateDict());
            wrong.put("layers.1.proj.weight", torch.zeros(4, 5));
            Tensor kept = b.getParameter("layers.0.proj.weight");
            e = assertThrows(IllegalArgumentException.class, () -> b.loadStateDict(wrong));
            assertTrue(e.getMessage().contains("layers.1.proj.weight") && e.getMessage().contains("[4, 5]"), e.getMessage());
            assertSame(kept, b.getParameter("layers.0.proj.weight"), "a failed load leaves the model as it was");
        }
    }

    @Test
    void toBfloat16ConvertsEveryFloatTensorAndKeepsTies() {
        try (PointerScope s = new PointerScope(); Toy t = toy()) {
            t.getParameter("layers.0.proj.weight").requires_grad_(false);
            t.to(ScalarType.BFloat16);
            for (Map.Entry<String, Tensor> e : t.stateDict().entrySet()) {
                assertEquals(ScalarType.BFloat16, e.getValue().scalar_type().intern(), e.getKey());
            }
            assertSame(t.getParameter("head.weight"), t.getParameter("embed.weight"));
            assertFalse(t.getParameter("layers.0.proj.weight").requires_grad());
            assertTrue(t.getParameter("layers.1.proj.weight").requires_grad());
        }
    }

    @Test
    void trainModeReachesEveryModuleAndEnablesDropout() {
        try (PointerScope s = new PointerScope(); Toy t = toy()) {
            Tensor x = torch.ones(1000);
            Dropout d = (Dropout) t.getSubmodule("layers.1.drop");
            assertEquals(0f, d.forward(x).sub(x).abs().max().item_float(), "eval: identity");
            t.train(true);
            assertTrue(d.isTraining());
            float zeros = d.forward(x).eq(new org.bytedeco.pytorch.Scalar(0)).sum().item_float();
            assertTrue(zeros > 300 && zeros < 700, "p=0.5 dropped " + zeros + " of 1000");
            t.eval();
            assertFalse(t.getSubmodule("layers.0.proj").isTraining());
        }
    }

    @Test
    void closeFreesEveryTensorOnce() {
        Toy t = toy();
        List<Tensor> all = new ArrayList<>(t.stateDict().values());
        t.close();
        for (Tensor x : all) {
            assertTrue(x.isNull());
        }
    }
}
