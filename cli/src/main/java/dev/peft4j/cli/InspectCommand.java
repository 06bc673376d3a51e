package dev.peft4j.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import dev.peft4j.config.IA3Config;
import dev.peft4j.config.LayerIndices;
import dev.peft4j.config.LayersPattern;
import dev.peft4j.config.LoraSettings;
import dev.peft4j.config.ModuleSelector;
import dev.peft4j.config.PeftConfig;
import dev.peft4j.config.PeftConfigs;
import dev.peft4j.io.SafetensorsFile;
import dev.peft4j.io.TensorInfo;
import dev.peft4j.io.TorchPickle;
import dev.peft4j.models.AutoModel;
import dev.peft4j.models.ModelConfig;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.nn.Conv1D;
import dev.peft4j.nn.Embedding;
import dev.peft4j.nn.Init;
import dev.peft4j.nn.Linear;
import dev.peft4j.nn.Module;
import dev.peft4j.tuners.AdapterKeys;
import dev.peft4j.tuners.ModuleType;
import dev.peft4j.tuners.NoMatchingModuleException;
import dev.peft4j.tuners.TargetMatcher;
import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

/**
 * {@code peft4j inspect <adapter dir> [--model <dir>]}: what a PEFT adapter folder holds, and with a model, which
 * of its modules the adapter would wrap and which of its keys match nothing there. Reads headers only for
 * safetensors; an {@code adapter_model.bin} is unpickled (restricted, no code runs).
 */
@Command(name = "inspect", header = "Show what a PEFT adapter folder holds (and what it would hit in a model).",
        description =
            "Show a PEFT adapter folder: PEFT type, config, the modules its weights target, its tensors "
            + "(name, dtype, shape, bytes) and totals. With --model, which of the model's modules the config "
            + "targets, which target_modules entries match no module, and which adapter keys match nothing in the "
            + "model (a load drops them with a warning).")
final class InspectCommand extends CliCommand {
    private static final ObjectMapper JSON = new ObjectMapper();

    @Parameters(index = "0", paramLabel = "<adapter dir>", description = "A folder with adapter_config.json and "
            + "adapter_model.safetensors (or adapter_model.bin), or a repo id already in the local Hugging Face cache.")
    Path adapterDir;

    @Option(names = "--model", paramLabel = "<dir>", description = "A model folder (config.json; no weights are "
            + "read) or a repo id in the local Hugging Face cache, to match the adapter against.")
    Path modelDir;

    /** One tensor of the adapter file. */
    record Entry(String name, String dtype, long[] shape, long bytes) {}

    @Override
    public Integer call() throws IOException {
        // a repo id in place of either folder: its snapshot in the local Hugging Face cache
        adapterDir = dev.peft4j.io.HubCache.localOrCached(adapterDir.toString(), null, null);
        if (modelDir != null) {
            modelDir = dev.peft4j.io.HubCache.localOrCached(modelDir.toString(), null, null);
        }
        PeftConfig config = PeftConfigs.read(adapterDir);
        String weightsFile;
        List<Entry> entries;
        Path st = adapterDir.resolve("adapter_model.safetensors");
        Path bin = adapterDir.resolve("adapter_model.bin");
        if (Files.isRegularFile(st)) {
            weightsFile = st.getFileName().toString();
            entries = safetensorsEntries(st);
        } else if (Files.isRegularFile(bin)) {
            weightsFile = bin.getFileName().toString();
            entries = binEntries(bin);
        } else {
            throw new NoSuchFileException(adapterDir.toString(), null,
                    "no adapter_model.safetensors or adapter_model.bin there");
        }
        PrintWriter o = out();
        o.println("adapter: " + adapterDir);
        o.println("peft_type: " + config.peftType().jsonValue());
        o.println("task_type: " + (config.taskType() == null ? "None" : config.taskType().name()));
        o.println("base_model_name_or_path: " + (config.baseModelNameOrPath() == null ? "None"
                : config.baseModelNameOrPath()));
        o.println("config (" + PeftConfigs.CONFIG_FILE_NAME + "):");
        for (Map.Entry<String, Object> e : config.toJsonObject().entrySet()) {
            o.println("  " + e.getKey() + ": " + JSON.writeValueAsString(e.getValue()));
        }

        Set<String> weightModules = new LinkedHashSet<>();
        List<String> otherKeys = new ArrayList<>();
        for (Entry e : entries) {
            var parsed = AdapterKeys.parseCheckpointKey(e.name());
            if (parsed.isPresent()) {
                weightModules.add(parsed.get().module());
            } else {
                otherKeys.add(e.name());
            }
        }
        o.println("targeted modules (named by the weights): " + weightModules.size());
        for (String m : weightModules) {
            o.println("  " + m);
        }
        if (!otherKeys.isEmpty()) {
            o.println("other tensors (not adapter layers: modules_to_save, biases, embeddings, trainable tokens): " + otherKeys.size());
        }

        o.println("tensors (" + weightsFile + "): " + entries.size());
        int w = "name".length();
        for (Entry e : entries) {
            w = Math.max(w, e.name().length());
        }
        String fmt = "  %-" + w + "s  %-5s  %-14s  %12s%n";
        o.printf(fmt, "name", "dtype", "shape", "bytes");
        long params = 0;
        long bytes = 0;
        for (Entry e : entries) {
            o.printf(fmt, e.name(), e.dtype(), shape(e.shape()), String.format("%,d", e.bytes()));
            params += Arrays.stream(e.shape()).reduce(1, (a, b) -> a * b);
            bytes += e.bytes();
        }
        o.printf("total: %d tensors, %,d parameters, %,d bytes%n", entries.size(), params, bytes);

        if (modelDir != null) {
            matchModel(o, config, entries);
        }
        o.flush();
        return 0;
    }

    private void matchModel(PrintWriter o, PeftConfig config, List<Entry> entries) throws IOException {
        ModelConfig mc = ModelConfig.read(modelDir);
        // built on the meta device: module names and shapes only, no memory, no weights read
        try (PreTrainedModel model = AutoModel.fromConfig(mc, Init.meta(ScalarType.Float))) {
            Map<String, Module> modules = model.namedModules();
            Set<String> stateKeys = model.stateDict().keySet();
            o.println("model: " + modelDir + " (" + model.typeName() + ", " + (modules.size() - 1) + " modules)");
            List<String> hit;
            String why = null;
            if (config.targetModules() == null) {
                hit = List.of();
                why = "target_modules is None: PEFT would take the model type's default targets, which inspect "
                        + "does not resolve";
            } else {
                try {
                    hit = matcher(config, model, modules).selectTargets(modules.keySet(), List.of());
                } catch (NoMatchingModuleException e) {
                    hit = List.of();
                    why = e.getMessage();
                }
            }
            o.println("modules the config targets in this model: " + hit.size());
            if (why != null) {
                o.println("  (" + why + ")");
            }
            for (String m : hit) {
                o.println("  " + m + " (" + modules.get(m).typeName() + ")");
            }
            if (config.targetModules() instanceof ModuleSelector.Names names) {
                // PEFT matches a name against the whole module name or its last components
                List<String> noModule = new ArrayList<>();
                for (String n : names.names()) {
                    if (modules.keySet().stream().noneMatch(k -> k.equals(n) || k.endsWith("." + n))) {
                        noModule.add(n);
                    }
                }
                o.println("target_modules entries matching no module of this model: " + noModule.size());
                for (String n : noModule) {
                    o.println("  " + n);
                }
            }
            List<String> unmatched = new ArrayList<>();
            Set<String> withWeights = new LinkedHashSet<>();
            for (Entry e : entries) {
                var parsed = AdapterKeys.parseCheckpointKey(e.name());
                if (parsed.isPresent()) {
                    String module = parsed.get().module();
                    if (modules.containsKey(module)) {
                        withWeights.add(module);
                    } else {
                        unmatched.add(e.name());
                    }
                } else if (!matchesModelTensor(AdapterKeys.stripPeftPrefix(e.name()), stateKeys)) {
                    unmatched.add(e.name());
                }
            }
            o.println("adapter keys matching nothing in this model: " + unmatched.size()); // a load drops them
            for (String k : unmatched) {
                o.println("  " + k);
            }
            List<String> noWeights = new ArrayList<>();
            for (String m : hit) {
                if (!withWeights.contains(m)) {
                    noWeights.add(m);
                }
            }
            if (!noWeights.isEmpty()) {
                o.println("targeted modules without weights in the adapter file: " + noWeights.size());
                for (String m : noWeights) {
                    o.println("  " + m);
                }
            }
        }
    }

    /**
     * A non-layer adapter key ({@code modules_to_save} copy, base-layer bias, saved embedding) names a tensor of the
     * model once the wrapper parts are taken out.
     */
    private static boolean matchesModelTensor(String key, Set<String> stateKeys) {
        String k = key.replaceFirst("\\.modules_to_save(\\.[^.]+)?\\.", ".").replace(".base_layer.", ".");
        if (stateKeys.contains(k) || stateKeys.contains(key)) {
            return true;
        }
        // trainable_token_indices: the new rows of an embedding (or output embedding) module
        String rows = ".token_adapter.trainable_tokens_delta";
        if (key.endsWith(rows) && stateKeys.contains(key.substring(0, key.length() - rows.length()) + ".weight")) {
            return true;
        }
        // modules_to_save keys are saved without the adapter name: module.modules_to_save.weight is rewritten above
        return false;
    }

    /** PEFT's target selection for {@code config} on {@code model}: target/exclude modules, modules_to_save, layers. */
    static TargetMatcher matcher(PeftConfig config, PreTrainedModel model, Map<String, Module> modules) {
        TargetMatcher.Builder b = TargetMatcher.builder();
        ModuleSelector targets = config.targetModules();
        if (targets instanceof ModuleSelector.Names n) {
            b.targetModules(n.asSet());
        } else if (targets instanceof ModuleSelector.Regex r) {
            if (TargetMatcher.isAllLinear(r.pattern())) {
                Map<String, ModuleType> types = new LinkedHashMap<>();
                for (Map.Entry<String, Module> e : modules.entrySet()) {
                    types.put(e.getKey(), moduleType(e.getValue()));
                }
                String outputEmbedding = modules.containsKey("lm_head") ? "lm_head"
                        : modules.containsKey("cls.predictions.decoder") ? "cls.predictions.decoder" : null;
                boolean seqCls = config.taskType() != null && config.taskType().name().equals("SEQ_CLS");
                b.targetModules(TargetMatcher.allLinearTargets(types, outputEmbedding, seqCls, List.of()));
            } else {
                b.targetModules(r.pattern());
            }
        }
        ModuleSelector exclude = config.excludeModules();
        if (exclude instanceof ModuleSelector.Names n) {
            b.excludeModules(n.asSet());
        } else if (exclude instanceof ModuleSelector.Regex r) {
            b.excludeModules(r.pattern());
        }
        if (config.modulesToSave() != null) {
            b.modulesToSave(config.modulesToSave());
        }
        if (config instanceof LoraSettings lora) {
            LayerIndices layers = lora.layersToTransform();
            if (layers instanceof LayerIndices.Single s) {
                b.layersToTransform(s.index());
            } else if (layers instanceof LayerIndices.Listed l) {
                b.layersToTransform(l.indices());
            }
            LayersPattern pattern = lora.layersPattern();
            if (pattern instanceof LayersPattern.Single s) {
                b.layersPattern(s.pattern());
            } else if (pattern instanceof LayersPattern.Listed l) {
                b.layersPattern(l.patterns());
            }
        } else if (!(config instanceof IA3Config)) {
            throw new IllegalStateException("unexpected config " + config.getClass().getSimpleName());
        }
        return b.build();
    }

    static ModuleType moduleType(Module m) {
        if (m instanceof Linear) {
            return ModuleType.LINEAR;
        }
        if (m instanceof Conv1D) {
            return ModuleType.TRANSFORMERS_CONV1D;
        }
        if (m instanceof Embedding) {
            return ModuleType.EMBEDDING;
        }
        return ModuleType.OTHER;
    }

    private static List<Entry> safetensorsEntries(Path file) throws IOException {
        List<Entry> out = new ArrayList<>();
        try (SafetensorsFile f = SafetensorsFile.open(file)) {
            for (TensorInfo i : f.infos()) {
                out.add(new Entry(i.name(), i.dtype(), i.shape(), i.byteSize()));
            }
        }
        return out;
    }

    private static List<Entry> binEntries(Path file) throws IOException {
        List<Entry> out = new ArrayList<>();
        try (PointerScope scope = new PointerScope()) {
            for (Map.Entry<String, Tensor> e : TorchPickle.loadStateDict(file).entrySet()) {
                Tensor t = e.getValue();
                out.add(new Entry(e.getKey(), dtypeName(t.scalar_type().intern()), t.shape(),
                        t.numel() * t.element_size()));
            }
        }
        return out;
    }

    /** The safetensors name of a libtorch dtype ({@code F32}, {@code BF16}, ...). */
    static String dtypeName(ScalarType t) {
        switch (t) {
            case Float: return "F32";
            case BFloat16: return "BF16";
            case Half: return "F16";
            case Double: return "F64";
            case Long: return "I64";
            case Int: return "I32";
            case Short: return "I16";
            case Char: return "I8";
            case Byte: return "U8";
            case Bool: return "BOOL";
            default: return t.name();
        }
    }

    static String shape(long[] s) {
        StringBuilder b = new StringBuilder("[");
        for (int i = 0; i < s.length; i++) {
            b.append(i > 0 ? ", " : "").append(s[i]);
        }
        return b.append(']').toString();
    }
}
