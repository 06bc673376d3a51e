package dev.peft4j.models;

import dev.peft4j.nn.Init;
import dev.peft4j.io.HubCache;
import dev.peft4j.io.HubDownload;
import java.io.IOException;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.TreeSet;
import java.util.function.BiFunction;
import java.util.concurrent.atomic.AtomicBoolean;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * transformers' {@code AutoModel}: reads {@code config.json}, picks the class from {@code architectures} (else from
 * {@code model_type}), builds it without memory and fills it from the folder's checkpoint.
 */
public final class AutoModel {
    private AutoModel() {}

    private static final Map<String, BiFunction<ModelConfig, Init, PreTrainedModel>> ARCHITECTURES = new LinkedHashMap<>();
    /** model_type → the architecture used when config.json names none. */
    private static final Map<String, String> DEFAULT_ARCHITECTURE = new LinkedHashMap<>();

    static {
        for (String prefix : new String[] {"Llama", "Mistral", "Qwen2"}) {
            ARCHITECTURES.put(prefix + "ForCausalLM", LlamaForCausalLM::new);
            ARCHITECTURES.put(prefix + "Model", LlamaModel::new);
        }
        ARCHITECTURES.put("GPT2LMHeadModel", GPT2LMHeadModel::new);
        ARCHITECTURES.put("GPT2Model", GPT2Model::new);
        ARCHITECTURES.put("OPTForCausalLM", OPTForCausalLM::new);
        ARCHITECTURES.put("OPTModel", OPTModel::new);
        ARCHITECTURES.put("BertModel", BertModel::new);
        ARCHITECTURES.put("BertForMaskedLM", BertForMaskedLM::new);
        ARCHITECTURES.put("BertLMHeadModel", BertForMaskedLM::new); // same keys; rejected when is_decoder=true
        ARCHITECTURES.put("BertForSequenceClassification", BertForSequenceClassification::new);
        ARCHITECTURES.put("T5ForConditionalGeneration", T5ForConditionalGeneration::new);
        ARCHITECTURES.put("MixtralForCausalLM", MixtralForCausalLM::new);
        ARCHITECTURES.put("MixtralModel", MixtralModel::new);
        ARCHITECTURES.put("MT5ForConditionalGeneration", T5ForConditionalGeneration::new);
        ARCHITECTURES.put("GemmaForCausalLM", GemmaForCausalLM::new);
        ARCHITECTURES.put("GemmaModel", GemmaModel::new);
        ARCHITECTURES.put("Gemma2ForCausalLM", Gemma2ForCausalLM::new);
        ARCHITECTURES.put("Gemma2Model", Gemma2Model::new);
        ARCHITECTURES.put("Gemma3ForCausalLM", Gemma3ForCausalLM::new);
        ARCHITECTURES.put("Gemma3TextModel", Gemma3TextModel::new);
        ARCHITECTURES.put("Qwen3ForCausalLM", Qwen3ForCausalLM::new);
        ARCHITECTURES.put("Qwen3Model", Qwen3Model::new);
        ARCHITECTURES.put("Phi3ForCausalLM", Phi3ForCausalLM::new);
        ARCHITECTURES.put("Phi3Model", Phi3Model::new);
        DEFAULT_ARCHITECTURE.put("bert", "BertModel");
        DEFAULT_ARCHITECTURE.put("gpt2", "GPT2LMHeadModel");
        DEFAULT_ARCHITECTURE.put("opt", "OPTForCausalLM");
        DEFAULT_ARCHITECTURE.put("llama", "LlamaForCausalLM");
        DEFAULT_ARCHITECTURE.put("mistral", "MistralForCausalLM");
        DEFAULT_ARCHITECTURE.put("qwen2", "Qwen2ForCausalLM");
        DEFAULT_ARCHITECTURE.put("t5", "T5ForConditionalGeneration");
        DEFAULT_ARCHITECTURE.put("mixtral", "MixtralForCausalLM");
        DEFAULT_ARCHITECTURE.put("mt5", "MT5ForConditionalGeneration");
        DEFAULT_ARCHITECTURE.put("gemma", "GemmaForCausalLM");
        DEFAULT_ARCHITECTURE.put("gemma2", "Gemma2ForCausalLM");
        DEFAULT_ARCHITECTURE.put("gemma3_text", "Gemma3ForCausalLM");
        DEFAULT_ARCHITECTURE.put("qwen3", "Qwen3ForCausalLM");
        DEFAULT_ARCHITECTURE.put("phi3", "Phi3ForCausalLM");
    }

    private static final Logger LOG = LoggerFactory.getLogger(AutoModel.class);
    private static final AtomicBoolean OMP_ADVICE_GIVEN = new AtomicBoolean();

    /**
     * The advice logged once per process when idle threads may spin against the threads doing the work: libtorch's
     * OpenMP team (bfloat16 GEMMs via oneDNN, element-wise ops, peft4j's kernels) and OpenBLAS's own pthreads
     * (libtorch's float32 GEMMs) both busy-wait after each call by default, for milliseconds. Null when both
     * {@code OMP_WAIT_POLICY} and {@code OPENBLAS_THREAD_TIMEOUT} are set (to anything: the user chose) or libtorch
     * runs one thread; otherwise it names the variables that are unset.
     */
    static String threadsAdvice(String ompWaitPolicy, String openblasThreadTimeout, int threads) {
        if (threads <= 1 || (ompWaitPolicy != null && openblasThreadTimeout != null)) {
            return null;
        }
        StringBuilder set = new StringBuilder();
        if (ompWaitPolicy == null) {
            set.append("OMP_WAIT_POLICY=passive");
        }
        if (openblasThreadTimeout == null) {
            set.append(set.length() > 0 ? " and " : "").append("OPENBLAS_THREAD_TIMEOUT=4");
        }
        return "libtorch runs " + threads + " threads and " + set + " is not set: idle OpenMP / OpenBLAS threads spin "
                + "between calls and take the cores from the ones working (a float32 decode step measured 4.6x slower, "
                + "an adapted float32 layer after a base one 2x slower, on 2 cores). Start the process with " + set
                + " (neither can be changed once libtorch is loaded); the ./peft4j launcher sets both.";
    }

    /**
     * Loads a llama.cpp GGUF model file in {@code dtype} (float32, bfloat16 or float16; null: float32), in eval mode:
     * a {@link CausalLM} that PEFT adapter folders load on as on the Hugging Face model. The loader is {@code
     * dev.peft4j.gguf.GgufModels#fromGguf}, which describes what loads (the {@code llama} architecture; F32, F16, BF16,
     * Q8_0 and Q4_0 tensors, the quantized projections kept as they are) and what is refused; it is reached through
     * {@link ModelFileLoader}'s service, because the GGUF package builds on this one.
     *
     * @throws IOException when the file cannot be read ({@code dev.peft4j.gguf.GgufFormatException}, an {@link
     *     IOException}, when it breaks the GGUF format)
     * @throws IllegalArgumentException naming the file and the key or tensor, when the model is not one the loader
     *     supports
     * @throws IllegalStateException when no GGUF loader is on the class path (a repackaged jar that lost {@code
     *     META-INF/services/dev.peft4j.models.ModelFileLoader})
     */
    public static PreTrainedModel fromGguf(Path file, ScalarType dtype) throws IOException {
        return fileLoader("gguf").load(file, dtype);
    }

    /** The registered {@link ModelFileLoader} of {@code format}. */
    static ModelFileLoader fileLoader(String format) {
        ClassLoader cl = AutoModel.class.getClassLoader();
        for (ModelFileLoader l : java.util.ServiceLoader.load(ModelFileLoader.class, cl)) {
            if (l.format().equals(format)) {
                return l;
            }
        }
        throw new IllegalStateException("no " + format + " model loader on the class path: the peft4j jar registers "
                + "one in META-INF/services/" + ModelFileLoader.class.getName() + " (a repackaged jar must keep it)");
    }

    /** The {@code model_type}s this build knows. */
    public static java.util.Set<String> supportedModelTypes() {
        return new TreeSet<>(DEFAULT_ARCHITECTURE.keySet());
    }

    /**
     * Loads a model folder, or a Hub repo: its files fetched into the local Hugging Face cache ({@link
     * HubDownload#modelSnapshot}; {@code cacheDir}, or when null the cache folder huggingface_hub would use;
     * {@code revision} a branch, tag or commit, null for {@code main}; the token, endpoint and offline mode from the
     * environment: {@code HF_TOKEN}, {@code HF_ENDPOINT}, {@code HF_HUB_OFFLINE}), or read from that cache when
     * offline or the Hub is unreachable; in {@code dtype} (null: the config's).
     */
    public static PreTrainedModel fromPretrained(String pathOrRepoId, String revision, String cacheDir,
            ScalarType dtype) throws IOException {
        return fromPretrained(localOrHub(pathOrRepoId, revision, cacheDir), dtype);
    }

    /**
     * The folder {@link #fromPretrained(String, String, String, ScalarType)} loads: {@code pathOrRepoId} itself when
     * it is a directory or no repo id, else the repo's snapshot, fetched as needed.
     */
    public static Path localOrHub(String pathOrRepoId, String revision, String cacheDir) throws IOException {
        return localOrHub(pathOrRepoId, revision, cacheDir, HubDownload.Settings.fromEnvironment(null));
    }

    /** {@link #localOrHub(String, String, String)} with the Hub's endpoint, token and offline mode given. */
    public static Path localOrHub(String pathOrRepoId, String revision, String cacheDir, HubDownload.Settings hub)
            throws IOException {
        if (!HubCache.refersToHub(pathOrRepoId)) {
            return Path.of(pathOrRepoId);
        }
        return HubDownload.modelSnapshot(HubCache.root(cacheDir), pathOrRepoId, revision, hub);
    }

    /** Loads {@code dir} in the dtype its config names ({@code torch_dtype}), float32 when it names none. */
    public static PreTrainedModel fromPretrained(Path dir) throws IOException {
        return fromPretrained(dir, null);
    }

    /**
     * Loads {@code dir} in {@code dtype} (float32, bfloat16 or float16; null: the config's). Missing checkpoint keys
     * are an error listing them; unused keys are logged as a warning. The model is in eval mode.
     */
    public static PreTrainedModel fromPretrained(Path dir, ScalarType dtype) throws IOException {
        ModelConfig config = ModelConfig.read(dir);
        ScalarType target = dtype != null ? dtype : config.dtype(ScalarType.Float);
        if (target != ScalarType.Float && target != ScalarType.BFloat16 && target != ScalarType.Half) {
            throw new IllegalArgumentException("dtype " + target + " not supported; use Float, BFloat16 or Half");
        }
        PreTrainedModel model = fromConfig(config, Init.meta(target));
        try (Checkpoints.Opened ckpt = Checkpoints.open(dir)) {
            model.loadWeights(ckpt.tensors, ckpt.source);
        } catch (IOException | RuntimeException e) {
            model.close();
            throw e;
        }
        model.eval();
        String advice = threadsAdvice(System.getenv("OMP_WAIT_POLICY"), System.getenv("OPENBLAS_THREAD_TIMEOUT"),
                torch.get_num_threads());
        if (advice != null && OMP_ADVICE_GIVEN.compareAndSet(false, true)) {
            LOG.warn(advice);
        }
        return model;
    }

    /**
     * {@link #fromPretrained(Path, ScalarType)} on {@code device} ({@code "cpu"}, {@code "cuda"}, {@code "cuda:N"},
     * {@code "meta"} or {@code "auto"}, see {@link dev.peft4j.nn.Devices}): the checkpoint is read on the CPU (a
     * mapped safetensors file without a copy) and the model moved there with everything it holds
     * ({@link dev.peft4j.nn.Module#to(org.bytedeco.pytorch.Device)}); its forwards, generation and adapters then make
     * their tensors there too.
     *
     * @throws IllegalArgumentException an unknown device, or a CUDA device this libtorch does not see
     */
    public static PreTrainedModel fromPretrained(Path dir, ScalarType dtype, String device) throws IOException {
        String target = dev.peft4j.nn.Devices.canonical("device", device);
        PreTrainedModel model = fromPretrained(dir, dtype);
        if (!target.equals("cpu")) {
            try (org.bytedeco.pytorch.Device d = new org.bytedeco.pytorch.Device(target)) {
                model.to(d);
            } catch (RuntimeException e) {
                model.close();
                throw e;
            }
        }
        return model;
    }

    /**
     * {@link #fromPretrained(Path, ScalarType)} with its modules placed by {@code deviceMap} (transformers'
     * {@code device_map} as a dict: module name → device, the longest name wins), see
     * {@link PreTrainedModel#dispatch(Map)}; the checkpoint is read on the CPU, then each module moved.
     *
     * @throws IllegalArgumentException a key naming no module, a module no key covers (named), or an unknown device
     * @throws UnsupportedOperationException several devices for a model whose forward does not move activations
     */
    public static PreTrainedModel fromPretrained(Path dir, ScalarType dtype, Map<String, ?> deviceMap)
            throws IOException {
        PreTrainedModel model = fromPretrained(dir, dtype);
        try {
            return model.dispatch(deviceMap);
        } catch (RuntimeException e) {
            model.close();
            throw e;
        }
    }

    /**
     * {@link #fromPretrained(Path, ScalarType, Map)} where {@code "disk"} entries are offloaded to
     * {@code offloadFolder} (transformers' {@code offload_folder}), see {@link PreTrainedModel#dispatch(Map, Path)}.
     *
     * @throws IllegalArgumentException as {@link #fromPretrained(Path, ScalarType, Map)}
     * @throws UnsupportedOperationException as {@link #fromPretrained(Path, ScalarType, Map)}
     */
    public static PreTrainedModel fromPretrained(Path dir, ScalarType dtype, Map<String, ?> deviceMap,
            Path offloadFolder) throws IOException {
        PreTrainedModel model = fromPretrained(dir, dtype);
        try {
            return model.dispatch(deviceMap, offloadFolder);
        } catch (IOException | RuntimeException e) {
            model.close();
            throw e;
        }
    }

    /**
     * transformers' {@code from_pretrained(dir, device_map="auto", max_memory=..., offload_folder=...)}: the model is
     * read on the CPU, placed by {@link PreTrainedModel#inferDeviceMap(Map)} under {@code maxMemory} (device → bytes,
     * filled in its order, whole decoder layers, the rest to {@code "disk"}), then dispatched
     * ({@link PreTrainedModel#dispatch(Map, Path)}). {@code "sequential"} is exactly that order; {@code "auto"} and
     * {@code "balanced"} are too when {@code maxMemory} names at most one device besides the CPU (transformers'
     * {@code get_balanced_memory} then leaves the budgets as given); balancing over several GPUs is not built and is
     * refused.
     *
     * @param deviceMap {@code "auto"}, {@code "balanced"} or {@code "sequential"}
     * @param maxMemory device ({@code "cpu"}, {@code "cuda:N"}, {@code "meta"}, ...) to bytes, in placement order
     * @param offloadFolder where modules that fit no budget go ({@code "disk"}); null: such a placement is refused
     * @throws IllegalArgumentException another strategy, an unknown device or a negative budget, {@code "disk"}
     *     placements without a folder
     * @throws UnsupportedOperationException {@code "auto"} / {@code "balanced"} over several GPUs
     */
    public static PreTrainedModel fromPretrained(Path dir, ScalarType dtype, String deviceMap,
            Map<String, Long> maxMemory, Path offloadFolder) throws IOException {
        String strategy = deviceMap == null ? "" : deviceMap.toLowerCase(java.util.Locale.ROOT);
        if (!strategy.equals("auto") && !strategy.equals("balanced") && !strategy.equals("sequential")) {
            throw new IllegalArgumentException("device_map=" + deviceMap + " with max_memory: expected \"auto\", "
                    + "\"balanced\" or \"sequential\" (or pass a map of module names to devices)");
        }
        if (maxMemory == null || maxMemory.isEmpty()) {
            throw new IllegalArgumentException("max_memory: give at least one device and its budget in bytes");
        }
        long gpus = maxMemory.keySet().stream()
                .filter(d -> !d.equals("cpu") && !d.equals("meta") && !d.equals("disk")).count();
        if (!strategy.equals("sequential") && gpus > 1) {
            throw new UnsupportedOperationException("device_map=" + deviceMap + " over " + gpus + " devices: "
                    + "accelerate's balancing of max_memory across GPUs is not built; use \"sequential\" (fills them "
                    + "in order) or a map of module names to devices");
        }
        PreTrainedModel model = fromPretrained(dir, dtype);
        try {
            return model.dispatch(model.inferDeviceMap(maxMemory), offloadFolder);
        } catch (IOException | RuntimeException e) {
            model.close();
            throw e;
        }
    }

    /** Builds the architecture {@code config} names, its parameters made by {@code init} (not loaded). */
    public static PreTrainedModel fromConfig(ModelConfig config, Init init) {
        String type = config.modelType();
        boolean known = type != null && DEFAULT_ARCHITECTURE.containsKey(type);
        if (!known && config.has("auto_map")) {
            // as transformers: a known model_type runs the built-in class even when auto_map names custom code
            // (Phi-3's configs do); an unknown one would need trust_remote_code, Python the JVM cannot run
            throw new IllegalArgumentException(config.source() + ": model_type '" + type + "' names custom code ("
                    + "auto_map: a trust_remote_code model), which is not supported; supported model types: "
                    + supportedModelTypes());
        }
        if (type == null || !DEFAULT_ARCHITECTURE.containsKey(type)) {
            throw new IllegalArgumentException(config.source() + ": model_type '" + type + "' is not supported; supported: "
                    + supportedModelTypes());
        }
        String arch = config.architecture();
        if (arch == null) {
            arch = DEFAULT_ARCHITECTURE.get(type);
        }
        BiFunction<ModelConfig, Init, PreTrainedModel> make = ARCHITECTURES.get(arch);
        if (make == null) {
            throw new IllegalArgumentException(config.source() + ": architecture '" + arch + "' is not supported; supported: "
                    + new TreeSet<>(ARCHITECTURES.keySet()));
        }
        return make.apply(config, init);
    }

    /** {@link #fromPretrained(Path, ScalarType)} for an encoder-decoder with a language-model head (T5, mT5). */
    public static Seq2SeqLM seq2SeqLM(Path dir, ScalarType dtype) throws IOException {
        PreTrainedModel m = fromPretrained(dir, dtype);
        if (!(m instanceof Seq2SeqLM)) {
            String arch = m.typeName();
            m.close();
            throw new IllegalArgumentException(dir + ": " + arch + " is not an encoder-decoder language model");
        }
        return (Seq2SeqLM) m;
    }

    /** {@link #fromPretrained(Path, ScalarType)} for a model with a language-model head. */
    public static CausalLM causalLM(Path dir, ScalarType dtype) throws IOException {
        PreTrainedModel m = fromPretrained(dir, dtype);
        if (!(m instanceof CausalLM)) {
            String arch = m.typeName();
            boolean seq2seq = m instanceof Seq2SeqLM;
            m.close();
            throw new IllegalArgumentException(dir + ": " + arch + (seq2seq
                    ? " is an encoder-decoder, not a causal LM (load it with AutoModel.seq2SeqLM)"
                    : " has no language-model head"));
        }
        return (CausalLM) m;
    }

    // ---------------------------------------------------------------- weight-only quantization at load

    /** Names of the transformer blocks' module lists: Llama / Mistral / Qwen2 / OPT {@code layers}, BERT {@code layer}. */
    private static final java.util.regex.Pattern BLOCK_LINEAR =
            java.util.regex.Pattern.compile("(^|.*\\.)(layers|layer|h)\\.\\d+\\..+");

    /**
     * {@link #fromPretrained(Path, ScalarType)}, then {@link #quantize(PreTrainedModel, Quantization)} when
     * {@code quantization} is not null: loaded in {@code dtype} (float32 or bfloat16 for a quantized model: the dtype
     * the layers compute in, and the dtype of the embeddings, norms, {@code lm_head} and of LoRA adapters added
     * later), then every Linear of the transformer blocks quantized.
     *
     * @throws IllegalArgumentException as {@link #quantize} does, the model closed
     */
    public static PreTrainedModel fromPretrained(Path dir, ScalarType dtype, dev.peft4j.kernels.Quantization quantization)
            throws IOException {
        PreTrainedModel model = fromPretrained(dir, dtype);
        if (quantization == null) {
            return model;
        }
        try {
            quantize(model, quantization);
        } catch (RuntimeException e) {
            model.close();
            throw e;
        }
        return model;
    }

    /** {@link #fromPretrained(Path, ScalarType, dev.peft4j.kernels.Quantization)} for a model with a language-model head. */
    public static CausalLM causalLM(Path dir, ScalarType dtype, dev.peft4j.kernels.Quantization quantization)
            throws IOException {
        PreTrainedModel m = fromPretrained(dir, dtype, quantization);
        if (!(m instanceof CausalLM)) {
            String arch = m.typeName();
            m.close();
            throw new IllegalArgumentException(dir + ": " + arch + " has no language-model head");
        }
        return (CausalLM) m;
    }

    /**
     * Replaces every {@link dev.peft4j.nn.Linear} inside the model's transformer blocks ({@code layers.N.…}: the
     * attention projections and the MLP) by a {@link dev.peft4j.nn.QuantizedLinear} in {@code format}, in place,
     * freeing the floating-point weights. Embeddings, norms and the output head ({@code lm_head}) stay as loaded:
     * llama.cpp too keeps its output tensor above Q4_0 (Q6_K, or Q8_0) and its token embedding is a row lookup, not
     * a matrix product. Call it before adding adapters (a layer that already holds adapters keeps its base).
     *
     * @return the quantized modules' names, in model order
     * @throws IllegalArgumentException when the model has no such Linear (GPT-2's blocks hold {@code Conv1D}s), or
     *         naming the first module that cannot be quantized (dtype other than float32 / bfloat16, input width not
     *         a multiple of 32, non-finite weights); the modules before it are quantized already
     */
    public static java.util.List<String> quantize(PreTrainedModel model, dev.peft4j.kernels.Quantization format) {
        java.util.List<String> names = new java.util.ArrayList<>();
        for (Map.Entry<String, dev.peft4j.nn.Module> e : model.namedModules().entrySet()) {
            if (e.getValue() instanceof dev.peft4j.nn.Linear && BLOCK_LINEAR.matcher(e.getKey()).matches()) {
                names.add(e.getKey());
            }
        }
        if (names.isEmpty()) {
            throw new IllegalArgumentException(model.typeName() + " has no Linear layer in its transformer blocks to "
                    + "quantize to " + format + " (only nn.Linear weights are quantized; GPT-2's Conv1D are not)");
        }
        for (String name : names) {
            dev.peft4j.nn.Linear l = (dev.peft4j.nn.Linear) model.getSubmodule(name);
            dev.peft4j.nn.QuantizedLinear q = dev.peft4j.nn.QuantizedLinear.quantize(l, format, name);
            model.replaceSubmodule(name, q).close();
        }
        return names;
    }

    /**
     * {@link #quantize(PreTrainedModel, dev.peft4j.kernels.Quantization)}, then the output head ({@code lm_head})
     * too, in {@code headFormat}, when it is not null: llama.cpp's choice for its quantized models, which store the
     * output tensor in {@code Q8_0} in a {@code Q8_0} model and in {@code Q6_K} in a {@code Q4_0} one. peft4j has no
     * 6-bit format; {@link dev.peft4j.kernels.Quantization#INT8} for the head of an int4 model reads 70 MB per token
     * at TinyLlama's size where {@code Q6_K} reads 54 MB and bfloat16 131 MB. A head tied to the token embedding
     * ({@code tie_word_embeddings}) is refused: the two share one tensor.
     *
     * @return the quantized modules' names, in model order, {@code lm_head} last when quantized
     * @throws IllegalArgumentException as {@link #quantize(PreTrainedModel, dev.peft4j.kernels.Quantization)} does,
     *         or when {@code headFormat} is given and the model has no {@code lm_head} Linear, or one tied to
     *         another parameter (naming it); nothing is quantized then
     */
    public static java.util.List<String> quantize(PreTrainedModel model, dev.peft4j.kernels.Quantization format,
            dev.peft4j.kernels.Quantization headFormat) {
        if (headFormat != null && !(model.namedModules().get("lm_head") instanceof dev.peft4j.nn.Linear)) {
            throw new IllegalArgumentException(model.typeName() + " has no lm_head Linear to quantize to "
                    + headFormat);
        }
        if (headFormat != null) {
            org.bytedeco.pytorch.Tensor headWeight = ((dev.peft4j.nn.Linear) model.getSubmodule("lm_head")).weight();
            for (Map.Entry<String, org.bytedeco.pytorch.Tensor> e : model.namedParameters().entrySet()) {
                if (e.getValue() == headWeight && !e.getKey().equals("lm_head.weight")) {
                    throw new IllegalArgumentException(model.typeName() + ": lm_head is tied to " + e.getKey()
                            + " (tie_word_embeddings); quantizing a tied head to " + headFormat + " is not supported");
                }
            }
        }
        java.util.List<String> names = quantize(model, format);
        if (headFormat != null) {
            dev.peft4j.nn.Linear head = (dev.peft4j.nn.Linear) model.getSubmodule("lm_head");
            dev.peft4j.nn.QuantizedLinear q = dev.peft4j.nn.QuantizedLinear.quantize(head, headFormat, "lm_head");
            model.replaceSubmodule("lm_head", q).close();
            names.add("lm_head");
        }
        return names;
    }
}
