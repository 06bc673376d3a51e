package dev.peft4j.serve;

import dev.peft4j.LoadAdapterOptions;
import dev.peft4j.config.LoraConfig;
import dev.peft4j.config.PeftConfig;
import dev.peft4j.config.PeftConfigs;
import dev.peft4j.config.PeftType;
import dev.peft4j.io.AdapterFolder;
import dev.peft4j.io.HubCache;
import dev.peft4j.io.HubDownload;
import dev.peft4j.models.CausalLM;
import dev.peft4j.models.Generation;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.models.SlotKVCache;
import dev.peft4j.tokenizers.Tokenizer;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.BitSet;
import java.util.HashSet;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CancellationException;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.ThreadFactory;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;
import java.util.function.Supplier;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.InferenceMode;
import org.bytedeco.pytorch.LongOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Serves many LoRA adapters of one causal LM to many concurrent requests, with continuous batching.
 *
 * <p><b>Model.</b> One scheduler thread owns the model and a preallocated {@link SlotKVCache} of
 * {@code maxConcurrent} slots × {@code maxLength} positions. Each step it (1) runs queued commands (an adapter just
 * read from disk installed in the model, an unregistration), (2) drops cancelled and timed-out requests, (3) admits
 * waiting requests into free slots (first come, first served, except that a request whose adapter is still loading
 * lets later ones pass), (4) runs prompt prefills, at most {@code prefillChunk} prompt tokens per step so that running
 * requests keep decoding, several requests' chunks of one length in one forward, and (5) decodes one token for every
 * request past its prompt in <em>one</em> forward whose rows carry different adapters (PEFT's mixed batch,
 * {@code __base__} for the base model). Requests join and leave at every step; the running requests are kept on the
 * lowest slots (a request in a freed slot's place is moved down), so that a decode step's rows are consecutive slots
 * of the cache.
 *
 * <p><b>Adapters.</b> {@link #register} reads only an adapter's config; at most {@code maxResidentAdapters} are
 * loaded at once, on first use, and the least recently used one that no running request holds is unloaded to make
 * room. Reading an adapter's weights happens on a loader thread, so a cold adapter delays only its own requests; the
 * short install of the read tensors into the model runs on the scheduler between steps. Only LoRA adapters are
 * served (the mixed-batch path is LoRA's).
 *
 * <p><b>Thread safety.</b> {@link #submit}, {@link #register}, {@link #unregister}, {@link #stats} and
 * {@link #close} may be called from any thread. Nothing else may use the model while the engine runs (no forward, no
 * adapter loaded or deleted by hand): the scheduler thread is its only user. Results complete and listeners run on
 * the engine's callback threads, never the scheduler. A failure inside one request (an adapter that fails to load,
 * a listener that throws, a forward that throws for its row) fails that request only.
 *
 * <p><b>Memory.</b> Bounded by the slot cache ({@link SlotKVCache#bytes}), the resident adapters and the wait queue
 * ({@code maxWaiting}): {@link #submit} refuses a request that cannot fit in a slot, and one more than the queue
 * holds ({@link QueueFullException}).
 *
 * <p>Supported models: those whose {@link CausalLM#supportsSlotCache()} is true (Llama, Mistral, Qwen2, Qwen3, Gemma,
 * Gemma 2, Gemma 3, Phi-3); others are refused at construction.
 */
public final class ServingEngine implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(ServingEngine.class);
    private static final String BASE = "__base__";
    private static final int LATENCY_WINDOW = 4096;

    private final PreTrainedModel model;
    private final CausalLM lm;
    private final Tokenizer tokenizer;
    private final int maxConcurrent;
    private final int maxLength;
    private final int maxWaiting;
    private final int maxResident;
    private final int prefillChunk;
    private final Duration defaultTimeout;
    private final Integer threads;
    private final long vocabSize;
    private final Set<Long> eosIds;

    private final ConcurrentHashMap<String, AdapterEntry> registry = new ConcurrentHashMap<>();
    private final ConcurrentLinkedQueue<Sequence> incoming = new ConcurrentLinkedQueue<>();
    private final ConcurrentLinkedQueue<Runnable> commands = new ConcurrentLinkedQueue<>();
    private final AtomicInteger queued = new AtomicInteger();
    private final AtomicLong ids = new AtomicLong();
    private final ReentrantLock lock = new ReentrantLock();
    private final Condition wake = lock.newCondition();
    private boolean signalled;
    private volatile boolean closing;
    private volatile boolean cancelOnClose;
    private final Thread scheduler;
    private final ExecutorService loader;
    private final ExecutorService callbacks;
    private final CompletableFuture<Void> started = new CompletableFuture<>();

    // scheduler-thread state
    private final ArrayDeque<Sequence> waiting = new ArrayDeque<>();
    private final List<Sequence> running = new ArrayList<>();
    private final BitSet usedSlots = new BitSet();
    private final LinkedHashMap<String, AdapterEntry> residentLru = new LinkedHashMap<>(16, 0.75f, true);
    private int loading;
    private SlotKVCache cache;

    // counters (written by the scheduler, read by stats())
    private volatile int runningCount;
    private volatile int residentCount;
    private volatile int maxResidentObserved;
    private final AtomicLong hits = new AtomicLong();
    private final AtomicLong misses = new AtomicLong();
    private final AtomicLong loads = new AtomicLong();
    private final AtomicLong evictions = new AtomicLong();
    private final AtomicLong loadFailures = new AtomicLong();
    private final AtomicLong completed = new AtomicLong();
    private final AtomicLong failed = new AtomicLong();
    private final AtomicLong cancelled = new AtomicLong();
    private final AtomicLong generated = new AtomicLong();
    private final AtomicLong steps = new AtomicLong();
    private final AtomicLong prefillTokens = new AtomicLong();
    private final AtomicLong prefillNanos = new AtomicLong();
    private final AtomicLong decodeTokens = new AtomicLong();
    private final AtomicLong decodeNanos = new AtomicLong();
    private volatile double tokensPerSecond;
    private long rateWindowStart = System.nanoTime();
    private long rateWindowTokens;
    private final long[] ttfts = new long[LATENCY_WINDOW];
    private final long[] tpots = new long[LATENCY_WINDOW];
    private long latencyCount;

    private ServingEngine(Builder b) {
        if (!(b.model instanceof CausalLM c)) {
            throw new IllegalArgumentException(b.model.typeName() + " has no language-model head: serving needs a "
                    + "causal LM");
        }
        if (!c.supportsSlotCache()) {
            throw new UnsupportedOperationException(b.model.typeName() + " is not supported by the serving engine: "
                    + "it needs a slot KV cache, which only the Llama family (Llama, Mistral, Qwen2) and Qwen3, Gemma, "
                    + "Gemma 2, Gemma 3 and Phi-3 have");
        }
        java.util.Set<String> devices = new java.util.TreeSet<>();
        b.model.namedParameters().values().forEach(t -> devices.add(t.device().str().getString()));
        if (devices.size() > 1) {
            throw new UnsupportedOperationException(b.model.typeName() + " is placed across devices " + devices
                    + " by a device_map: the serving engine runs a model on one device (generate() runs a split model)");
        }
        if (b.model.peftAdapters().isLoaded()) {
            throw new IllegalArgumentException("the model already holds adapters " + b.model.peftAdapters()
                    .peftConfig().keySet() + ": give the engine a model without adapters and register them with it");
        }
        model = b.model;
        lm = c;
        tokenizer = b.tokenizer;
        maxConcurrent = b.maxConcurrent;
        maxLength = b.maxLength;
        maxWaiting = b.maxWaiting;
        maxResident = b.maxResidentAdapters;
        prefillChunk = b.prefillChunk;
        defaultTimeout = b.defaultTimeout;
        threads = b.threads;
        vocabSize = lm.config().getLong("vocab_size");
        eosIds = eosIds(lm);
        loader = b.loader != null ? b.loader : Executors.newSingleThreadExecutor(daemon("peft4j-serve-loader"));
        callbacks = Executors.newCachedThreadPool(daemon("peft4j-serve-callback"));
        scheduler = new Thread(this::schedule, "peft4j-serve-scheduler");
        scheduler.setDaemon(true);
        scheduler.start();
        try {
            started.get();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            close();
            throw new IllegalStateException("interrupted while the engine started", e);
        } catch (ExecutionException e) {
            close();
            Throwable cause = e.getCause();
            throw cause instanceof RuntimeException r ? r : new IllegalStateException(cause);
        }
    }

    private static ThreadFactory daemon(String name) {
        AtomicInteger n = new AtomicInteger();
        return r -> {
            Thread t = new Thread(r, name + "-" + n.incrementAndGet());
            t.setDaemon(true);
            return t;
        };
    }

    private static Set<Long> eosIds(CausalLM lm) {
        Set<Long> out = new HashSet<>();
        var n = lm.config().json().get("eos_token_id");
        if (n != null && n.isArray()) {
            n.forEach(e -> {
                if (e.canConvertToLong()) {
                    out.add(e.asLong());
                }
            });
        } else if (n != null && n.canConvertToLong()) {
            out.add(n.asLong());
        }
        return Set.copyOf(out);
    }

    /** A builder for an engine over {@code model} (a causal LM of the Llama family, without adapters). */
    public static Builder builder(PreTrainedModel model) {
        return new Builder(model);
    }

    /** Engine settings; each is checked at {@link #build()}. */
    public static final class Builder {
        private final PreTrainedModel model;
        private Tokenizer tokenizer;
        private int maxConcurrent = 16;
        private int maxLength = 512;
        private int maxWaiting = 1024;
        private int maxResidentAdapters = 16;
        private int prefillChunk = 128;
        private Duration defaultTimeout;
        private Integer threads;
        ExecutorService loader; // tests: a loader that holds loads back

        private Builder(PreTrainedModel model) {
            if (model == null) {
                throw new IllegalArgumentException("model is null");
            }
            this.model = model;
        }

        /** For text prompts, text results and stop strings; the caller keeps ownership (close it after the engine). */
        public Builder tokenizer(Tokenizer v) {
            tokenizer = v;
            return this;
        }

        /** Slots of the KV cache: the most requests decoded together (default 16). */
        public Builder maxConcurrent(int v) {
            maxConcurrent = v;
            return this;
        }

        /** Positions per slot: a request's prompt plus new tokens must fit (default 512). */
        public Builder maxLength(int v) {
            maxLength = v;
            return this;
        }

        /** Requests waiting for a slot; one more is refused at submit (default 1024). */
        public Builder maxWaiting(int v) {
            maxWaiting = v;
            return this;
        }

        /** Adapters loaded in the model at once (default 16). */
        public Builder maxResidentAdapters(int v) {
            maxResidentAdapters = v;
            return this;
        }

        /** Prompt tokens prefilled per step, over all requests (default 128). */
        public Builder prefillChunk(int v) {
            prefillChunk = v;
            return this;
        }

        /** Timeout of requests that set none (default: none). */
        public Builder defaultTimeout(Duration v) {
            defaultTimeout = v;
            return this;
        }

        /** libtorch intra-op threads of the scheduler thread (default: libtorch's default). */
        public Builder threads(int v) {
            threads = v;
            return this;
        }

        /**
         * Starts the engine: its scheduler thread allocates the slot cache.
         *
         * @throws IllegalArgumentException for a setting out of range or a model that holds adapters
         * @throws UnsupportedOperationException for a model without a slot cache (not of the Llama family), or one
         *     placed across several devices by a device_map
         */
        public ServingEngine build() {
            positive("maxConcurrent", maxConcurrent);
            positive("maxLength", maxLength);
            positive("maxWaiting", maxWaiting);
            positive("maxResidentAdapters", maxResidentAdapters);
            positive("prefillChunk", prefillChunk);
            if (threads != null) {
                positive("threads", threads);
            }
            if (defaultTimeout != null && (defaultTimeout.isNegative() || defaultTimeout.isZero())) {
                throw new IllegalArgumentException("defaultTimeout must be positive, got " + defaultTimeout);
            }
            return new ServingEngine(this);
        }

        private static void positive(String what, int v) {
            if (v < 1) {
                throw new IllegalArgumentException(what + " must be ≥ 1, got " + v);
            }
        }
    }

    // ------------------------------------------------------------------ public API

    /**
     * Registers an adapter under {@code name}: a local PEFT adapter folder, or a Hub repo id (its
     * {@code adapter_config.json} fetched into the Hugging Face cache now, its weights on first use). Reads only the
     * config; the weights are read when a request first needs them. As
     * {@link #register(String, String, LoadAdapterOptions)} with the default options (the environment's Hub token and
     * cache, the main revision).
     *
     * @throws IllegalArgumentException for a taken or invalid name, or an adapter that is not LoRA
     * @throws IOException when the folder or its config cannot be read (naming it)
     */
    public void register(String name, String folderOrRepoId) throws IOException {
        register(name, folderOrRepoId, LoadAdapterOptions.DEFAULTS);
    }

    /**
     * Registers an adapter under {@code name} as {@code loadAdapter} finds it: a local PEFT adapter folder, or a Hub
     * repo id fetched into the Hugging Face cache at {@code options.revision()} with {@code options.token()} and the
     * {@code adapterKwargs} {@code cache_dir}, {@code subfolder}, {@code local_files_only} and
     * {@code force_download}. The config is read now (fetched, for a repo id); the weights on first use, at the
     * commit the config came from (whatever the branch does meanwhile), with the same token and cache. The token is
     * kept in memory only. For a local folder the Hub options do not apply (as in {@code loadAdapter}).
     *
     * @throws IllegalArgumentException for a taken or invalid name, an adapter that is not LoRA, or an option the
     *     engine does not apply (a {@code peft_config}, a state dict, a device map but "auto", offloading, trainable
     *     adapters, another {@code adapter_kwargs} key, an {@code adapterName} other than {@code name})
     * @throws IOException when the folder or its config cannot be read or fetched (naming it)
     */
    public void register(String name, String folderOrRepoId, LoadAdapterOptions options) throws IOException {
        checkOpen();
        if (name == null || name.isBlank() || name.equals(BASE)) {
            throw new IllegalArgumentException("adapter name must be non-blank and not '" + BASE + "', got '" + name
                    + "'");
        }
        if (registry.containsKey(name)) {
            throw new IllegalArgumentException("an adapter named '" + name + "' is already registered");
        }
        HubFetch hub = HubFetch.of(name, options);
        Path dir;
        String repoId = null;
        String revision = null;
        if (!Files.exists(Path.of(folderOrRepoId)) && HubCache.refersToHub(folderOrRepoId)) {
            repoId = folderOrRepoId;
            Path cfg = HubDownload.file(hub.root(), repoId, options.revision(), hub.prefix()
                    + PeftConfigs.CONFIG_FILE_NAME, hub.settings());
            if (cfg == null) {
                throw new IllegalArgumentException("adapter model file not found in " + repoId
                        + (options.revision() == null ? "" : " at revision " + options.revision()) + ": it has no "
                        + hub.prefix() + PeftConfigs.CONFIG_FILE_NAME);
            }
            revision = HubCache.commitOf(hub.root(), repoId, cfg);
            dir = cfg.getParent();
        } else {
            dir = Path.of(folderOrRepoId);
            if (!Files.isDirectory(dir)) {
                throw new NoSuchFileException(folderOrRepoId, null, "not an adapter folder (no such directory) nor a "
                        + "Hub repo id");
            }
            if (!hub.prefix().isEmpty()) {
                dir = dir.resolve(hub.prefix());
                if (!Files.isDirectory(dir)) {
                    throw new NoSuchFileException(dir.toString(), null, "adapter folder " + folderOrRepoId
                            + " has no subfolder '" + hub.prefix() + "'");
                }
            }
            if (!Files.isRegularFile(dir.resolve(PeftConfigs.CONFIG_FILE_NAME))) {
                throw new NoSuchFileException(dir.toString(), null, "adapter folder has no "
                        + PeftConfigs.CONFIG_FILE_NAME);
            }
        }
        PeftConfig config = PeftConfigs.read(dir);
        if (config.peftType() != PeftType.LORA) {
            throw new IllegalArgumentException(folderOrRepoId + ": a " + config.peftType() + " adapter; the serving "
                    + "engine serves LoRA adapters only (mixed batches are LoRA's)");
        }
        if (config instanceof LoraConfig lc && lc.useDora()) {
            throw new IllegalArgumentException(folderOrRepoId + ": a DoRA adapter (use_dora); the serving engine "
                    + "runs mixed batches, which PEFT refuses for DoRA (\"Cannot pass `adapter_names` when DoRA is "
                    + "enabled.\"): load it with loadAdapter and generate without adapter_names");
        }
        if (config instanceof LoraConfig lc && lc.trainableTokenIndices() != null) {
            // PEFT's trainable-tokens layer raises for a mixed-batch row whose adapter holds no rows there, so one
            // such adapter would fail every batch it shares with another adapter's requests.
            throw new IllegalArgumentException(folderOrRepoId + ": an adapter with trainable_token_indices; the "
                    + "serving engine runs mixed batches, where PEFT refuses a row whose adapter has no trainable "
                    + "tokens on the embedding: load it with loadAdapter and generate without adapter_names");
        }
        AdapterEntry e = new AdapterEntry(name, folderOrRepoId, dir, repoId, revision, hub, config);
        if (registry.putIfAbsent(name, e) != null) {
            throw new IllegalArgumentException("an adapter named '" + name + "' is already registered");
        }
    }

    /** Where and how a repo-id adapter is fetched: the cache root, the Hub settings, the subfolder prefix. */
    private record HubFetch(Path root, HubDownload.Settings settings, String prefix) {
        private static final Set<String> KWARGS = Set.of("cache_dir", "subfolder", "local_files_only",
                "force_download");

        static HubFetch of(String name, LoadAdapterOptions o) throws IOException {
            if (o == null) {
                throw new IllegalArgumentException("options are null: pass LoadAdapterOptions.DEFAULTS");
            }
            boolean deviceMap = o.deviceMap() != null && !"auto".equals(o.deviceMap());
            String refused = o.peftConfig() != null ? "peft_config" : o.adapterStateDict() != null
                    ? "adapter_state_dict" : deviceMap ? "device_map" : o.maxMemory() != null ? "max_memory"
                    : o.offloadFolder() != null ? "offload_folder" : o.offloadIndex() != null ? "offload_index"
                    : o.isTrainable() ? "is_trainable" : null;
            if (refused != null) {
                throw new IllegalArgumentException("register('" + name + "'): " + refused + " does not apply to the "
                        + "serving engine, which reads adapters from a folder or the Hub for inference");
            }
            if (o.adapterName() != null && !o.adapterName().equals(name)) {
                throw new IllegalArgumentException("register('" + name + "'): the options name the adapter '"
                        + o.adapterName() + "'; leave adapterName unset or give the same name");
            }
            Map<String, Object> kw = o.adapterKwargs() == null ? Map.of() : o.adapterKwargs();
            for (String k : kw.keySet()) {
                if (!KWARGS.contains(k)) {
                    throw new IllegalArgumentException("register('" + name + "'): adapter_kwargs['" + k + "'] does not"
                            + " apply to the serving engine (it takes " + new java.util.TreeSet<>(KWARGS) + ")");
                }
            }
            String cacheDir = string(name, kw, "cache_dir");
            String subfolder = string(name, kw, "subfolder");
            HubDownload.Settings hub = HubDownload.Settings.fromEnvironment(o.token());
            Object localOnly = kw.get("local_files_only");
            Object force = kw.get("force_download");
            for (Object[] flag : new Object[][] {{"local_files_only", localOnly}, {"force_download", force}}) {
                if (flag[1] != null && !(flag[1] instanceof Boolean)) {
                    throw new IllegalArgumentException("register('" + name + "'): adapter_kwargs['" + flag[0]
                            + "']: expected a boolean, got " + flag[1]);
                }
            }
            if (Boolean.TRUE.equals(localOnly)) {
                hub = new HubDownload.Settings(hub.endpoint(), hub.token(), true);
            }
            hub = hub.withForceDownload(Boolean.TRUE.equals(force));
            String prefix = subfolder == null || subfolder.isEmpty() ? "" : subfolder.replaceAll("/+$", "") + "/";
            return new HubFetch(HubCache.root(cacheDir), hub, prefix);
        }

        private static String string(String name, Map<String, Object> kw, String key) {
            Object v = kw.get(key);
            if (v == null || v instanceof String) {
                return (String) v;
            }
            if (v instanceof Path p) {
                return p.toString();
            }
            throw new IllegalArgumentException("register('" + name + "'): adapter_kwargs['" + key + "']: expected a "
                    + "string or a Path, got " + v.getClass().getSimpleName());
        }
    }

    /** {@link #register(String, String)} of a local folder. */
    public void register(String name, Path folder) throws IOException {
        register(name, folder.toString());
    }

    /**
     * Unregisters an adapter (unloading it when it is resident). Refuses while a request waits for it or runs with
     * it: cancel those, or retry once they finished.
     *
     * @throws UnknownAdapterException when no adapter has that name
     * @throws IllegalStateException while requests use it, or once the engine is closed
     */
    public void unregister(String name) {
        if (!registry.containsKey(name)) {
            throw new UnknownAdapterException(name, "no adapter named '" + name + "' is registered");
        }
        onScheduler(() -> {
            AdapterEntry e = registry.get(name);
            if (e == null) {
                throw new UnknownAdapterException(name, "no adapter named '" + name + "' is registered");
            }
            pullIncoming();
            long users = waiting.stream().filter(s -> name.equals(s.adapter)).count()
                    + running.stream().filter(s -> name.equals(s.adapter)).count();
            if (users > 0) {
                throw new IllegalStateException("adapter '" + name + "' is used by " + users + " request(s), running "
                        + "or waiting: cancel them, or unregister it once they finished");
            }
            registry.remove(name);
            e.removed = true;
            if (e.state == AdapterState.RESIDENT) {
                unload(e);
            }
            return null;
        });
    }

    /** The registered adapters' names, in no particular order. */
    public Set<String> adapters() {
        return Set.copyOf(registry.keySet());
    }

    /** Whether {@code name} is registered. */
    public boolean isRegistered(String name) {
        return name != null && registry.containsKey(name);
    }

    /** The tokenizer given to the builder, or null. */
    public Tokenizer tokenizer() {
        return tokenizer;
    }

    /** Positions per slot: a request's prompt plus its new tokens must fit. */
    public int maxLength() {
        return maxLength;
    }

    /**
     * Queues a request; returns at once. Callable from any thread.
     *
     * @throws UnknownAdapterException for an adapter that is not registered
     * @throws IllegalArgumentException for a prompt that does not fit a slot ({@code prompt + maxNewTokens >
     *     maxLength}), a token id outside the vocabulary, or text (a text prompt, stop strings) without a tokenizer
     * @throws QueueFullException when {@code maxWaiting} requests wait already
     * @throws IllegalStateException once the engine is closing
     */
    public RequestHandle submit(ServeRequest request) {
        checkOpen();
        String adapter = request.adapter();
        if (adapter != null && !registry.containsKey(adapter)) {
            throw new UnknownAdapterException(adapter, "no adapter named '" + adapter + "' is registered; registered: "
                    + new java.util.TreeSet<>(registry.keySet()));
        }
        if (tokenizer == null && (request.promptText() != null || !request.stopStrings().isEmpty())) {
            throw new IllegalArgumentException((request.promptText() != null ? "a text prompt" : "stop strings")
                    + " need a tokenizer, and the engine has none: give token ids");
        }
        long[] prompt = request.promptText() != null ? tokenizer.encode(request.promptText(),
                request.addSpecialTokens()) : request.promptIds();
        if (prompt.length == 0) {
            throw new IllegalArgumentException("the prompt encodes to no tokens: nothing to continue");
        }
        for (int i = 0; i < prompt.length; i++) {
            if (prompt[i] < 0 || prompt[i] >= vocabSize) {
                throw new IllegalArgumentException("prompt token " + i + " is " + prompt[i] + ", outside the "
                        + "vocabulary [0, " + vocabSize + ")");
            }
        }
        if ((long) prompt.length + request.maxNewTokens() > maxLength) {
            throw new IllegalArgumentException("the request needs " + prompt.length + " prompt + "
                    + request.maxNewTokens() + " new = " + (prompt.length + request.maxNewTokens())
                    + " positions; the engine's slots hold " + maxLength);
        }
        if (queued.incrementAndGet() > maxWaiting) {
            queued.decrementAndGet();
            throw new QueueFullException("the wait queue is full (" + maxWaiting + " requests): retry later");
        }
        long id = ids.incrementAndGet();
        Duration timeout = request.timeout() != null ? request.timeout() : defaultTimeout;
        Sequence s = new Sequence(id, request, prompt, timeout);
        RequestHandle h = new RequestHandle(id, s.future, s.cancel, s.publisher);
        s.future.whenComplete((r, t) -> {
            s.publisher.end(t);
            if (t != null && !s.finishedByEngine) {
                s.cancelRequested = true; // completed or cancelled by its holder
                wakeUp();
            }
        });
        incoming.add(s);
        wakeUp();
        if (closing) {
            s.cancelRequested = true;
        }
        return h;
    }

    /** The engine's counters now. */
    public EngineStats stats() {
        double[] lat;
        synchronized (ttfts) {
            int n = (int) Math.min(latencyCount, LATENCY_WINDOW);
            long[] a = Arrays.copyOf(ttfts, n);
            long[] b = Arrays.copyOf(tpots, n);
            lat = new double[] {pct(a, 0.5), pct(a, 0.99), pct(b, 0.5), pct(b, 0.99)};
        }
        return new EngineStats(runningCount, queued.get(), maxConcurrent, registry.size(), residentCount,
                maxResidentObserved, hits.get(), misses.get(), loads.get(), evictions.get(), loadFailures.get(),
                completed.get(), failed.get(), cancelled.get(), generated.get(), tokensPerSecond, steps.get(),
                lat[0], lat[1], lat[2], lat[3], prefillTokens.get(), prefillNanos.get(), decodeTokens.get(),
                decodeNanos.get());
    }

    private static double pct(long[] v, double p) {
        if (v.length == 0) {
            return 0;
        }
        Arrays.sort(v);
        int i = (int) Math.min(v.length - 1, Math.max(0, Math.ceil(p * v.length) - 1));
        return v[i] / 1e6;
    }

    /**
     * Stops taking requests and waits up to {@code timeout} for the submitted ones to finish, then closes (cancelling
     * what is left). Returns whether everything finished in time.
     */
    public boolean drain(Duration timeout) throws InterruptedException {
        closing = true;
        wakeUp();
        long deadline = System.nanoTime() + timeout.toNanos();
        while (System.nanoTime() < deadline && (queued.get() > 0 || runningCount > 0)) {
            Thread.sleep(5);
        }
        boolean done = queued.get() == 0 && runningCount == 0;
        close();
        return done;
    }

    /**
     * Cancels every request not finished (their results complete with a {@link CancellationException}), stops the
     * scheduler and frees the slot cache. The model (with the adapters still loaded) and the tokenizer stay the
     * caller's. Idempotent.
     */
    @Override
    public void close() {
        closing = true;
        cancelOnClose = true;
        wakeUp();
        if (Thread.currentThread() != scheduler) {
            try {
                scheduler.join();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
        loader.shutdownNow();
        callbacks.shutdown();
        try {
            callbacks.awaitTermination(10, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    private void checkOpen() {
        if (closing) {
            throw new IllegalStateException("the serving engine is closed");
        }
    }

    private void wakeUp() {
        lock.lock();
        try {
            signalled = true;
            wake.signalAll();
        } finally {
            lock.unlock();
        }
    }

    /** Runs {@code body} on the scheduler thread between steps and returns its result (its exception rethrown). */
    private <T> T onScheduler(Supplier<T> body) {
        checkOpen();
        CompletableFuture<T> f = new CompletableFuture<>();
        commands.add(() -> {
            try {
                f.complete(body.get());
            } catch (Throwable t) {
                f.completeExceptionally(t);
            }
        });
        wakeUp();
        try {
            return f.get();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted", e);
        } catch (ExecutionException e) {
            if (e.getCause() instanceof RuntimeException r) {
                throw r;
            }
            throw new IllegalStateException(e.getCause());
        }
    }

    // ------------------------------------------------------------------ the scheduler

    private void schedule() {
        try (InferenceMode im = new InferenceMode()) {
            try {
                if (threads != null) {
                    torch.set_num_threads(threads);
                }
                cache = lm.newSlotCache(maxConcurrent, maxLength);
            } catch (RuntimeException e) {
                started.completeExceptionally(e);
                return;
            }
            started.complete(null);
            while (true) {
                runCommands();
                pullIncoming();
                long now = System.nanoTime();
                reap(now);
                if (closing && (cancelOnClose || waiting.isEmpty() && running.isEmpty())) {
                    break;
                }
                compactSlots();
                admit();
                boolean worked = step();
                if (!worked) {
                    idle(nextDeadline());
                }
            }
        } catch (Throwable t) {
            LOG.error("the serving engine's scheduler failed; failing every request", t);
            closing = true;
            runCommands();
            pullIncoming();
            for (Sequence s : new ArrayList<>(running)) {
                fail(s, t);
            }
            for (Sequence s : new ArrayList<>(waiting)) {
                fail(s, t);
            }
        } finally {
            closing = true;
            runCommands();
            pullIncoming();
            for (Sequence s : new ArrayList<>(running)) {
                fail(s, new CancellationException("the serving engine closed"));
            }
            for (Sequence s : new ArrayList<>(waiting)) {
                fail(s, new CancellationException("the serving engine closed"));
            }
            failCommands();
            if (cache != null) {
                cache.close();
            }
        }
    }

    private void failCommands() {
        // commands queued after the loop ended (an unregistration racing close) must not hang their callers
        Runnable r;
        while ((r = commands.poll()) != null) {
            r.run();
        }
    }

    private long nextDeadline() {
        long d = Long.MAX_VALUE;
        for (Sequence s : waiting) {
            d = Math.min(d, s.deadline);
        }
        for (Sequence s : running) {
            d = Math.min(d, s.deadline);
        }
        return d;
    }

    private void idle(long deadline) throws InterruptedException {
        lock.lock();
        try {
            if (!signalled) {
                long wait = deadline == Long.MAX_VALUE ? TimeUnit.MILLISECONDS.toNanos(200)
                        : Math.max(0, deadline - System.nanoTime()) + 1;
                wake.awaitNanos(Math.min(wait, TimeUnit.MILLISECONDS.toNanos(200)));
            }
            signalled = false;
        } finally {
            lock.unlock();
        }
    }

    private void runCommands() {
        Runnable r;
        while ((r = commands.poll()) != null) {
            r.run();
        }
    }

    private void pullIncoming() {
        Sequence s;
        while ((s = incoming.poll()) != null) {
            waiting.add(s);
        }
    }

    /** Drops cancelled, timed-out and listener-failed requests, waiting or running. */
    private void reap(long now) {
        for (Iterator<Sequence> it = waiting.iterator(); it.hasNext();) {
            Sequence s = it.next();
            Throwable why = endCause(s, now);
            if (why != null) {
                it.remove();
                queued.decrementAndGet();
                end(s, why);
            }
        }
        for (Sequence s : new ArrayList<>(running)) {
            Throwable why = endCause(s, now);
            if (why != null) {
                fail(s, why);
            }
        }
    }

    private Throwable endCause(Sequence s, long now) {
        if (s.listenerError != null) {
            return s.listenerError;
        }
        if (s.cancelRequested || s.future.isDone() || closing && cancelOnClose) {
            return new CancellationException(closing && !s.cancelRequested ? "the serving engine closed"
                    : "request " + s.id + " was cancelled");
        }
        if (now - s.deadline > 0) {
            return new TimeoutException("request " + s.id + " ran past its timeout of " + s.timeout.toMillis() + " ms");
        }
        return null;
    }

    /**
     * Moves the sequences of the highest slots into the slots freed below them, so that the running requests hold
     * slots {@code 0 .. running - 1}: a decode step's rows are then consecutive slots, which attention reads as a
     * view of the cache instead of gathering them (a copy of every layer's keys and values at every step). A move
     * copies the sequence's cached positions once.
     */
    private void compactSlots() {
        int hole;
        while ((hole = usedSlots.nextClearBit(0)) < usedSlots.length()) {
            int top = usedSlots.length() - 1;
            Sequence moved = null;
            for (Sequence s : running) {
                if (s.slot == top) {
                    moved = s;
                    break;
                }
            }
            if (moved == null) {
                usedSlots.clear(top); // not reachable: every used slot belongs to a running request
                continue;
            }
            cache.moveSlot(top, hole, moved.cached);
            usedSlots.clear(top);
            usedSlots.set(hole);
            moved.slot = hole;
        }
    }

    /** Moves waiting requests into free slots; starts the adapter loads they need. */
    private void admit() {
        for (Iterator<Sequence> it = waiting.iterator(); it.hasNext() && running.size() < maxConcurrent;) {
            Sequence s = it.next();
            AdapterEntry e = null;
            if (s.adapter != null) {
                e = registry.get(s.adapter);
                if (e == null) {
                    it.remove();
                    queued.decrementAndGet();
                    end(s, new UnknownAdapterException(s.adapter, "adapter '" + s.adapter + "' was unregistered"));
                    continue;
                }
                if (!s.counted) {
                    s.counted = true;
                    (e.state == AdapterState.RESIDENT ? hits : misses).incrementAndGet();
                }
                if (e.state == AdapterState.COLD && !startLoad(e)) {
                    continue; // no room for its adapter yet: later requests may pass
                }
                if (e.state != AdapterState.RESIDENT) {
                    continue;
                }
                residentLru.get(e.name); // touch: most recently used
                e.pinned++;
            }
            it.remove();
            queued.decrementAndGet();
            s.slot = usedSlots.nextClearBit(0);
            usedSlots.set(s.slot);
            s.admitted = System.nanoTime();
            if (s.request.doSample()) {
                s.generator = torch.make_generator_cpu(s.request.seed());
                s.sampling = Generation.Options.sampling(s.request.maxNewTokens(), s.request.temperature(),
                        s.request.topK(), s.request.topP(), s.request.seed());
            }
            running.add(s);
            runningCount = running.size();
        }
    }

    /** Starts loading {@code e} if there is room (evicting the least recently used idle adapter); false if not. */
    private boolean startLoad(AdapterEntry e) {
        if (residentCount + loading >= maxResident) {
            AdapterEntry victim = null;
            for (AdapterEntry r : residentLru.values()) {
                if (r.pinned == 0) {
                    victim = r;
                    break;
                }
            }
            if (victim == null) {
                return false;
            }
            unload(victim);
            evictions.incrementAndGet();
        }
        e.state = AdapterState.LOADING;
        loading++;
        maxResidentObserved = Math.max(maxResidentObserved, residentCount + loading);
        loads.incrementAndGet();
        loader.execute(() -> {
            try {
                Map<String, Tensor> sd = readWeights(e);
                commands.add(() -> install(e, sd));
            } catch (Throwable t) {
                commands.add(() -> loadFailed(e, t));
            }
            wakeUp();
        });
        return true;
    }

    private static Map<String, Tensor> readWeights(AdapterEntry e) throws IOException {
        Path weights;
        if (e.repoId != null) {
            HubFetch h = e.hub;
            // the config was fetched at registration: the weights need no second forced download
            HubDownload.Settings hub = h.settings().withForceDownload(false);
            weights = HubDownload.file(h.root(), e.repoId, e.revision, h.prefix() + AdapterFolder.SAFETENSORS_NAME,
                    hub);
            if (weights == null) {
                weights = HubDownload.file(h.root(), e.repoId, e.revision, h.prefix() + AdapterFolder.BIN_NAME, hub);
            }
        } else {
            weights = AdapterFolder.findWeights(e.dir);
        }
        if (weights == null) {
            throw new NoSuchFileException(e.source, null, "adapter has neither " + AdapterFolder.SAFETENSORS_NAME
                    + " nor " + AdapterFolder.BIN_NAME);
        }
        return AdapterFolder.readWeights(weights);
    }

    private void install(AdapterEntry e, Map<String, Tensor> sd) {
        loading--;
        try {
            if (e.removed || closing) {
                e.state = AdapterState.COLD;
                return;
            }
            try (InferenceMode off = new InferenceMode(false)) {
                model.loadAdapter(e.config, sd, e.name); // parameters made outside inference mode
            }
            e.state = AdapterState.RESIDENT;
            residentLru.put(e.name, e);
            residentCount = residentLru.size();
        } catch (IOException | RuntimeException ex) {
            e.state = AdapterState.COLD;
            failWaitingFor(e, ex);
        } finally {
            for (Tensor t : sd.values()) {
                t.close();
            }
        }
    }

    private void loadFailed(AdapterEntry e, Throwable t) {
        loading--;
        e.state = AdapterState.COLD;
        failWaitingFor(e, t);
    }

    private void failWaitingFor(AdapterEntry e, Throwable cause) {
        loadFailures.incrementAndGet();
        LOG.warn("adapter '{}' ({}) failed to load: {}", e.name, e.source, cause.toString());
        IllegalStateException err = new IllegalStateException("adapter '" + e.name + "' (" + e.source
                + ") failed to load: " + cause.getMessage(), cause);
        for (Iterator<Sequence> it = waiting.iterator(); it.hasNext();) {
            Sequence s = it.next();
            if (e.name.equals(s.adapter)) {
                it.remove();
                queued.decrementAndGet();
                end(s, err);
            }
        }
    }

    private void unload(AdapterEntry e) {
        try (InferenceMode off = new InferenceMode(false)) {
            model.deleteAdapter(e.name);
        }
        e.state = AdapterState.COLD;
        residentLru.remove(e.name);
        residentCount = residentLru.size();
    }

    /**
     * One step: prompt chunks within the prefill budget (several requests' chunks of one length in one forward), then
     * one decode forward of every request past its prompt, its rows in slot order.
     */
    private boolean step() {
        boolean worked = prefillStep();
        List<Sequence> rows = new ArrayList<>();
        for (Sequence s : running) {
            if (s.prefilled == s.prompt.length && s.produced > 0) {
                rows.add(s);
            }
        }
        if (!rows.isEmpty()) {
            // in slot order: with the slots compacted (see release) the rows' slots are consecutive, and attention
            // reads the cache through a view rather than gathering the rows' slots
            rows.sort((x, y) -> Integer.compare(x.slot, y.slot));
            long t0 = System.nanoTime();
            decode(rows);
            decodeNanos.addAndGet(System.nanoTime() - t0);
            worked = true;
        }
        if (worked) {
            steps.incrementAndGet();
            long now = System.nanoTime();
            if (now - rateWindowStart >= 1_000_000_000L) {
                long g = generated.get();
                tokensPerSecond = (g - rateWindowTokens) * 1e9 / (now - rateWindowStart);
                rateWindowStart = now;
                rateWindowTokens = g;
            }
        }
        return worked;
    }

    /**
     * Prefills within the step's budget of {@code prefillChunk} prompt tokens, in groups: a group is the first few
     * requests still prefilling (in admission order) and one chunk length, run as one {@code [rows, length]} forward
     * (no padding, so each row's cache and logits are those of a forward of its own). Of the groups led by the oldest
     * request, the one that prefills the most tokens goes first; what is left of the budget goes to the next group.
     */
    private boolean prefillStep() {
        List<Sequence> todo = new ArrayList<>();
        for (Sequence s : running) {
            if (s.prefilled < s.prompt.length) {
                todo.add(s);
            }
        }
        int budget = prefillChunk;
        boolean worked = false;
        while (budget > 0 && !todo.isEmpty()) {
            int bestRows = 1;
            int bestLength = Math.min(todo.get(0).prompt.length - todo.get(0).prefilled, budget);
            int minLeft = Integer.MAX_VALUE;
            for (int k = 1; k <= todo.size() && k <= budget; k++) {
                Sequence s = todo.get(k - 1);
                minLeft = Math.min(minLeft, s.prompt.length - s.prefilled);
                int length = Math.min(minLeft, budget / k);
                if ((long) k * length >= (long) bestRows * bestLength) {
                    bestRows = k;
                    bestLength = length;
                }
            }
            List<Sequence> group = new ArrayList<>(todo.subList(0, bestRows));
            todo.subList(0, bestRows).clear();
            budget -= bestRows * bestLength;
            long t0 = System.nanoTime();
            prefill(group, bestLength);
            prefillNanos.addAndGet(System.nanoTime() - t0);
            worked = true;
        }
        return worked;
    }

    /** The next {@code n} prompt tokens of each request of {@code group} in one forward. */
    private void prefill(List<Sequence> group, int n) {
        int b = group.size();
        try (PointerScope scope = new PointerScope()) {
            long[] chunk = new long[b * n];
            int[] slots = new int[b];
            long[] past = new long[b];
            List<String> names = new ArrayList<>(b);
            for (int i = 0; i < b; i++) {
                Sequence s = group.get(i);
                System.arraycopy(s.prompt, s.prefilled, chunk, i * n, n);
                slots[i] = s.slot;
                past[i] = s.cached;
                names.add(s.adapterOrBase());
            }
            Tensor logits = forward(Tensor.create(chunk, b, n), slots, past, names);
            // the requests whose prompt this chunk ends get their first token (only theirs: a seeded row draws once)
            List<Sequence> done = new ArrayList<>();
            long[] doneRows = new long[b];
            for (int i = 0; i < b; i++) {
                Sequence s = group.get(i);
                if (s.prefilled + n == s.prompt.length) {
                    doneRows[done.size()] = i;
                    done.add(s);
                }
            }
            long[] first = done.isEmpty() ? new long[0] : pick(done.size() == b ? logits
                    : logits.index_select(0, Tensor.create(Arrays.copyOf(doneRows, done.size()), done.size())), done);
            prefillTokens.addAndGet((long) b * n);
            for (Sequence s : group) {
                s.cached += n;
                s.prefilled += n;
            }
            for (int i = 0; i < done.size(); i++) {
                emit(done.get(i), first[i]);
            }
        } catch (RuntimeException e) {
            if (b == 1) {
                fail(group.get(0), e);
                return;
            }
            // isolate the row at fault: each row alone (its chunk rewriting the same cache positions)
            for (Sequence s : group) {
                prefill(List.of(s), n);
            }
        }
    }

    private void decode(List<Sequence> rows) {
        long[] next;
        try (PointerScope scope = new PointerScope()) {
            int b = rows.size();
            long[] tokens = new long[b];
            int[] slots = new int[b];
            long[] past = new long[b];
            List<String> names = new ArrayList<>(b);
            for (int i = 0; i < b; i++) {
                Sequence s = rows.get(i);
                tokens[i] = s.out[s.produced - 1];
                slots[i] = s.slot;
                past[i] = s.cached;
                names.add(s.adapterOrBase());
            }
            Tensor logits = forward(Tensor.create(tokens, b, 1), slots, past, names);
            next = pick(logits, rows);
        } catch (RuntimeException e) {
            if (rows.size() == 1) {
                fail(rows.get(0), e);
                return;
            }
            // isolate the row at fault: each row alone (rewriting the same cache positions)
            for (Sequence s : rows) {
                decode(List.of(s));
            }
            return;
        }
        decodeTokens.addAndGet(rows.size());
        for (int i = 0; i < rows.size(); i++) {
            Sequence s = rows.get(i);
            s.cached++;
            emit(s, next[i]);
        }
    }

    private Tensor forward(Tensor ids, int[] slots, long[] past, List<String> names) {
        Supplier<Tensor> f = () -> lm.forwardSlots(ids, cache, slots, past);
        // with adapters loaded, every row names its own (the base model's rows too): the active adapter must not apply
        return residentCount > 0 ? model.withAdapterNames(names, f) : f.get();
    }

    /** The next token of each row: argmax, or a draw from the row's own seeded generator. */
    private long[] pick(Tensor logits, List<Sequence> rows) {
        Tensor f = logits.to(ScalarType.Float);
        long[] out = new long[rows.size()];
        Tensor greedy = f.argmax(new LongOptional(-1), false).contiguous();
        greedy.data_ptr_long().capacity(out.length).get(out);
        for (int i = 0; i < rows.size(); i++) {
            Sequence s = rows.get(i);
            if (s.generator != null) {
                out[i] = Generation.sample(f.narrow(0, i, 1), s.sampling, s.generator).item_long();
            }
        }
        return out;
    }

    /** Records a new token of {@code s}, streams it, and ends the request when it is done. */
    private void emit(Sequence s, long token) {
        long now = System.nanoTime();
        s.out[s.produced++] = token;
        if (s.produced == 1) {
            s.firstToken = now;
        }
        s.lastToken = now;
        generated.incrementAndGet();
        FinishReason reason = s.request.stopTokenIds().contains(token) || !s.request.ignoreEos()
                && eosIds.contains(token) ? FinishReason.STOP : null;
        String delta = null;
        boolean textNow = tokenizer != null; // for the listener, the publisher's subscribers and stop strings
        if (reason == null && s.produced == s.request.maxNewTokens()) {
            reason = FinishReason.LENGTH;
        }
        if (textNow) {
            String text = textOf(s, reason == FinishReason.STOP);
            int stopAt = firstStop(text, s.request.stopStrings());
            if (stopAt >= 0) {
                text = text.substring(0, stopAt);
                reason = FinishReason.STOP;
            }
            int safe = reason != null ? text.length() : safeLength(text, s.request.stopStrings());
            if (safe > s.emittedChars && text.startsWith(s.emittedText)) {
                delta = text.substring(s.emittedChars, safe);
                s.emittedText = text.substring(0, safe);
                s.emittedChars = safe;
            } else {
                delta = "";
            }
            s.text = text;
        }
        TokenListener l = s.request.listener();
        int index = s.produced - 1;
        String d = tokenizer == null ? null : delta;
        s.post(() -> {
            if (s.listenerError == null) {
                s.publisher.add(new StreamedToken(index, token, d));
                if (l != null) {
                    try {
                        l.onToken(index, token, d);
                    } catch (RuntimeException | Error e) {
                        throw e;
                    } catch (Exception e) {
                        s.listenerError = e;
                        wakeUp();
                    }
                }
            }
        });
        if (reason != null) {
            finish(s, reason);
        }
    }

    private String textOf(Sequence s, boolean dropLastToken) {
        if (s.detokenizer == null) {
            s.detokenizer = new IncrementalDetokenizer(tokenizer);
        }
        return s.detokenizer.text(s.out, dropLastToken ? s.produced - 1 : s.produced);
    }

    private static int firstStop(String text, List<String> stops) {
        int best = -1;
        for (String stop : stops) {
            int i = text.indexOf(stop);
            if (i >= 0 && (best < 0 || i < best)) {
                best = i;
            }
        }
        return best;
    }

    /** How much of {@code text} can be streamed: not an incomplete character, not what may start a stop string. */
    private static int safeLength(String text, List<String> stops) {
        int end = text.length();
        while (end > 0 && text.charAt(end - 1) == '\uFFFD') {
            end--;
        }
        int held = 0;
        for (String stop : stops) {
            for (int k = Math.min(stop.length() - 1, end); k > held; k--) {
                if (text.startsWith(stop.substring(0, k), end - k)) {
                    held = k;
                    break;
                }
            }
        }
        return end - held;
    }

    private void finish(Sequence s, FinishReason reason) {
        release(s);
        String text = s.text;
        if (tokenizer != null && text == null) {
            text = textOf(s, reason == FinishReason.STOP);
        }
        long queuedNs = s.admitted - s.submitted;
        long ttft = s.firstToken - s.submitted;
        long tpot = s.produced > 1 ? (s.lastToken - s.firstToken) / (s.produced - 1) : 0;
        ServeResult r = new ServeResult(s.id, s.adapter, s.prompt, Arrays.copyOf(s.out, s.produced), text, reason,
                new ServeResult.Timings(queuedNs, ttft, tpot, s.lastToken - s.submitted));
        synchronized (ttfts) {
            int i = (int) (latencyCount++ % LATENCY_WINDOW);
            ttfts[i] = ttft;
            tpots[i] = tpot;
        }
        completed.incrementAndGet();
        s.finishedByEngine = true;
        s.post(() -> {
            if (s.listenerError != null) {
                s.future.completeExceptionally(s.listenerError);
            } else {
                s.future.complete(r);
            }
        });
    }

    /** Ends a running request with an error. */
    private void fail(Sequence s, Throwable why) {
        if (running.contains(s)) {
            release(s);
        } else if (waiting.remove(s)) {
            queued.decrementAndGet();
        }
        end(s, why);
    }

    private void end(Sequence s, Throwable why) {
        (why instanceof CancellationException ? cancelled : failed).incrementAndGet();
        s.finishedByEngine = true;
        s.post(() -> s.future.completeExceptionally(why));
    }

    private void release(Sequence s) {
        running.remove(s);
        runningCount = running.size();
        if (s.slot >= 0) {
            try {
                cache.clearSlot(s.slot);
            } finally {
                usedSlots.clear(s.slot);
                s.slot = -1;
            }
        }
        if (s.adapter != null) {
            AdapterEntry e = registry.get(s.adapter);
            if (e != null && e.pinned > 0) {
                e.pinned--;
            }
        }
        if (s.generator != null) {
            s.generator.close();
            s.generator = null;
        }
    }

    // ------------------------------------------------------------------ state

    private enum AdapterState { COLD, LOADING, RESIDENT }

    private static final class AdapterEntry {
        final String name;
        final String source;
        final Path dir;
        final String repoId;
        final String revision;
        final HubFetch hub;
        final PeftConfig config;
        // scheduler thread only
        AdapterState state = AdapterState.COLD;
        int pinned;
        boolean removed;

        AdapterEntry(String name, String source, Path dir, String repoId, String revision, HubFetch hub,
                PeftConfig config) {
            this.name = name;
            this.source = source;
            this.dir = dir;
            this.repoId = repoId;
            this.revision = revision;
            this.hub = hub;
            this.config = config;
        }
    }

    /** A request in the engine. Fields without {@code volatile} belong to the scheduler thread. */
    private final class Sequence {
        final long id;
        final ServeRequest request;
        final String adapter;
        final long[] prompt;
        final long[] out;
        final long submitted = System.nanoTime();
        final long deadline;
        final Duration timeout;
        final CompletableFuture<ServeResult> future = new CompletableFuture<>();
        final Runnable cancel = () -> {
            cancelRequested = true;
            wakeUp();
        };
        final TokenPublisher publisher = new TokenPublisher(cancel);
        volatile boolean cancelRequested;
        volatile Throwable listenerError;
        volatile boolean finishedByEngine;
        boolean counted;
        int slot = -1;
        long cached;
        int prefilled;
        int produced;
        long admitted;
        long firstToken;
        long lastToken;
        org.bytedeco.pytorch.Generator generator;
        Generation.Options sampling;
        String text;
        String emittedText = "";
        int emittedChars;
        IncrementalDetokenizer detokenizer; // the text of out, a few tokens decoded per step
        private final ConcurrentLinkedQueue<Runnable> events = new ConcurrentLinkedQueue<>();
        private final AtomicInteger pending = new AtomicInteger();

        Sequence(long id, ServeRequest request, long[] prompt, Duration timeout) {
            this.id = id;
            this.request = request;
            this.adapter = request.adapter();
            this.prompt = prompt;
            this.out = new long[request.maxNewTokens()];
            this.timeout = timeout;
            this.deadline = timeout == null ? Long.MAX_VALUE : submitted + timeout.toNanos();
        }

        String adapterOrBase() {
            return adapter == null ? BASE : adapter;
        }

        /** Runs {@code r} on a callback thread after the events posted before it, one at a time. */
        void post(Runnable r) {
            events.add(r);
            if (pending.getAndIncrement() == 0) {
                try {
                    callbacks.execute(this::drain);
                } catch (java.util.concurrent.RejectedExecutionException e) {
                    drain(); // callbacks shut down (closing): run here
                }
            }
        }

        private void drain() {
            do {
                Runnable r = events.poll();
                try {
                    if (r != null) {
                        r.run();
                    }
                } catch (Throwable t) {
                    if (listenerError == null) {
                        listenerError = t;
                        wakeUp();
                    }
                }
            } while (pending.decrementAndGet() > 0);
        }
    }
}
