package dev.peft4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.peft4j.config.PeftConfigException;
import dev.peft4j.errors.Peft4jException;
import dev.peft4j.config.PeftConfigs;
import dev.peft4j.io.SafetensorsException;
import dev.peft4j.io.SafetensorsFile;
import dev.peft4j.io.TorchPickle;
import dev.peft4j.io.TorchPickleException;
import dev.peft4j.models.PreTrainedModel;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.lang.management.ThreadMXBean;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.TreeMap;
import java.util.stream.Stream;
import java.util.zip.ZipEntry;
import java.util.zip.ZipInputStream;
import java.util.zip.ZipOutputStream;
import org.bytedeco.pytorch.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A seeded mutation fuzzer over real adapter files: safetensors, {@code torch.save} pickles ({@code .bin},
 * {@code .pt}) and {@code adapter_config.json}, taken from the test resources. Each input is a seed file with one to
 * three mutations (bit flips, byte inserts and deletes, truncation, edits of header length fields, JSON value swaps
 * and replacements, splices of two seeds, edits of the pickle inside a zip re-zipped with valid CRCs). Most inputs
 * go to the parsers directly; one in {@value #MODEL_LOAD_EVERY} is an adapter folder loaded into a small model.
 *
 * <p>Asserted for every input: it loads or is refused with a documented exception type whose message names the
 * file; it takes under a second of CPU time; the JVM survives; and a refused load leaves the model's state dict,
 * configs and layers as they were.
 *
 * <p>{@code -Dpeft4j.fuzz.inputs=N} (default {@value #DEFAULT_INPUTS}) and {@code -Dpeft4j.fuzz.seed=S} set the
 * campaign; {@code benchmarks/fuzz-adapters.sh} runs a long one. An input that fails is written to
 * {@code target/fuzz-findings/} to be replayed.
 */
class AdapterFilesFuzzTest {
    static final int DEFAULT_INPUTS = 20_000;
    static final int MODEL_LOAD_EVERY = 100;
    private static final long CPU_LIMIT_NANOS = 1_000_000_000L;
    private static final ObjectMapper JSON = new ObjectMapper();

    @TempDir
    Path tmp;

    enum Kind { SAFETENSORS, PICKLE, CONFIG }

    record Seed(Kind kind, String name, byte[] bytes) {}

    private volatile String current = "(none yet)";

    @Test
    void mutatedAdapterFilesAreLoadedOrRefusedCleanly() throws Exception {
        int inputs = Integer.getInteger("peft4j.fuzz.inputs", DEFAULT_INPUTS);
        long seed = Long.getLong("peft4j.fuzz.seed", 20261207L);
        List<Seed> seeds = seeds();
        Duration wallStop = Duration.ofSeconds(Math.max(600, inputs / 20));
        Stats stats = assertTimeoutPreemptively(wallStop, () -> campaign(seeds, inputs, seed),
                () -> "stuck on input " + current);
        System.out.println(stats.summary());
        assertEquals(inputs, stats.inputs);
    }

    // ------------------------------------------------------------------ campaign

    static final class Stats {
        int inputs;
        int loaded;
        long startNanos = System.nanoTime();
        long maxCpuNanos;
        String maxCpuInput = "";
        long maxWallNanos;
        final Map<String, Integer> refusals = new TreeMap<>();

        void refused(Throwable e) {
            refusals.merge(e.getClass().getSimpleName(), 1, Integer::sum);
        }

        String summary() {
            double s = (System.nanoTime() - startNanos) / 1e9;
            return String.format("fuzz: %d inputs in %.1f s (%.0f/s); loaded %d, refused %s; slowest input %.1f ms CPU"
                    + " (%s), %.1f ms wall", inputs, s, inputs / s, loaded, refusals, maxCpuNanos / 1e6, maxCpuInput,
                    maxWallNanos / 1e6);
        }
    }

    private Stats campaign(List<Seed> seeds, int inputs, long seed) throws Exception {
        Random r = new Random(seed);
        Stats stats = new Stats();
        ThreadMXBean threads = ManagementFactory.getThreadMXBean();
        Path adapter = tinyLlamaAdapter();
        Seed adapterConfig = new Seed(Kind.CONFIG, "tiny-llama adapter_config.json",
                Files.readAllBytes(adapter.resolve("adapter_config.json")));
        Seed adapterWeights = new Seed(Kind.SAFETENSORS, "tiny-llama adapter_model.safetensors",
                Files.readAllBytes(adapter.resolve("adapter_model.safetensors")));
        ModelUnderTest model = new ModelUnderTest();
        try {
            for (int i = 0; i < inputs; i++) {
                boolean throughModel = i % MODEL_LOAD_EVERY == MODEL_LOAD_EVERY - 1;
                Seed s = throughModel ? (r.nextBoolean() ? adapterConfig : adapterWeights)
                        : seeds.get(r.nextInt(seeds.size()));
                List<String> ops = new ArrayList<>();
                byte[] input = mutateMany(s, seeds, r, ops);
                current = i + ": " + s.name() + " " + ops;
                long cpu0 = threads.getCurrentThreadCpuTime();
                long wall0 = System.nanoTime();
                Throwable refusal;
                Path file;
                if (throughModel) {
                    Path dir = Files.createDirectories(tmp.resolve("in" + i));
                    Files.copy(adapter.resolve("adapter_config.json"), dir.resolve("adapter_config.json"));
                    Files.copy(adapter.resolve("adapter_model.safetensors"), dir.resolve("adapter_model.safetensors"));
                    file = dir.resolve(s == adapterConfig ? "adapter_config.json" : "adapter_model.safetensors");
                    Files.write(file, input);
                    refusal = model.load(dir);
                } else {
                    file = tmp.resolve("in" + i + switch (s.kind()) {
                        case SAFETENSORS -> ".safetensors";
                        case PICKLE -> ".bin";
                        case CONFIG -> ".json";
                    });
                    Files.write(file, input);
                    refusal = parse(s.kind(), file);
                }
                long cpu = threads.getCurrentThreadCpuTime() - cpu0;
                long wall = System.nanoTime() - wall0;
                stats.inputs++;
                if (cpu > stats.maxCpuNanos) {
                    stats.maxCpuNanos = cpu;
                    stats.maxCpuInput = current;
                }
                stats.maxWallNanos = Math.max(stats.maxWallNanos, wall);
                if (refusal == null) {
                    stats.loaded++;
                } else {
                    stats.refused(refusal);
                    String why = undocumented(refusal, file, throughModel);
                    if (why != null) {
                        keep(input, file, current);
                        throw new AssertionError("input " + current + ": " + why + ": " + refusal, refusal);
                    }
                }
                if (cpu > CPU_LIMIT_NANOS) {
                    keep(input, file, current);
                    fail("input " + current + " took " + cpu / 1_000_000 + " ms of CPU time");
                }
                deleteTree(file.getFileName().toString().startsWith("adapter_") ? file.getParent() : file);
                if (inputs >= 100_000 && (i + 1) % (inputs / 20) == 0) {
                    System.out.println(stats.summary());
                }
            }
        } finally {
            model.close();
        }
        return stats;
    }

    /** Null when {@code e} is a documented refusal of {@code file}; else what is wrong with it. */
    private static String undocumented(Throwable e, Path file, boolean throughModel) {
        if (e instanceof NumberFormatException || e instanceof java.util.regex.PatternSyntaxException) {
            return "a raw " + e.getClass().getSimpleName() + " escaped";
        }
        if (throughModel) {
            // load_adapter: a config or weights refused (Peft4jException: a bad config, a config that matches no
            // module), PEFT's ValueError (IllegalArgumentException), or a PEFT feature peft4j refuses
            // (UnsupportedOperationException: use_dora, layer_replication, ...)
            boolean documented = e instanceof SafetensorsException || e instanceof TorchPickleException
                    || e instanceof Peft4jException || e instanceof IllegalArgumentException
                    || e instanceof UnsupportedOperationException;
            return documented ? null : "not a documented exception of loadAdapter";
        }
        boolean documented = e instanceof SafetensorsException || e instanceof TorchPickleException
                || e instanceof PeftConfigException || e instanceof UnsupportedOperationException;
        if (!documented) {
            return "not a documented exception of the parser";
        }
        String m = String.valueOf(e.getMessage());
        return m.contains(file.getFileName().toString()) ? null : "the message does not name the file";
    }

    /** Reads {@code file} with the parser of its kind, touching every tensor; null when it loads. */
    private static Throwable parse(Kind kind, Path file) {
        try {
            switch (kind) {
                case SAFETENSORS -> {
                    try (SafetensorsFile f = SafetensorsFile.open(file)) {
                        for (String name : f.names()) {
                            try (Tensor t = f.get(name)) {
                                t.numel();
                            }
                        }
                    }
                }
                case PICKLE -> closeTensors(TorchPickle.load(file));
                case CONFIG -> PeftConfigs.read(file);
            }
            return null;
        } catch (Exception e) {
            return e;
        } catch (OutOfMemoryError | StackOverflowError e) {
            return e;
        }
    }

    private static void closeTensors(Object value) {
        if (value instanceof Tensor t) {
            t.close();
        } else if (value instanceof Map<?, ?> m) {
            m.values().forEach(AdapterFilesFuzzTest::closeTensors);
        }
    }

    /** A small model that adapters are loaded into; rebuilt after a load that succeeds. */
    private static final class ModelUnderTest {
        private PreTrainedModel model = MixinSupport.tinyLlama(7);
        private Map<String, Tensor> before = MixinLoraTest.snapshot(model);

        Throwable load(Path dir) {
            try {
                model.loadAdapter(dir);
            } catch (Exception e) {
                assertUnchanged(e);
                return e;
            } catch (OutOfMemoryError | StackOverflowError e) {
                return e;
            }
            model.close();
            model = MixinSupport.tinyLlama(7);
            return null;
        }

        private void assertUnchanged(Exception refusal) {
            Map<String, Tensor> now = model.stateDict();
            assertEquals(before.keySet(), now.keySet(), () -> "a refused load changed the modules: " + refusal);
            before.forEach((k, v) -> assertTrue(MixinSupport.bitEqual(v, now.get(k)),
                    () -> "a refused load changed " + k + ": " + refusal));
            assertTrue(model.peftAdapters().peftConfig().isEmpty(), () -> "a refused load left a config: " + refusal);
            assertTrue(model.peftAdapters().tunerLayers().isEmpty(), () -> "a refused load left layers: " + refusal);
        }

        void close() {
            model.close();
        }
    }

    private Path tinyLlamaAdapter() throws IOException {
        Path dir = tmp.resolve("tiny-llama-adapter");
        try (PreTrainedModel m = MixinSupport.tinyLlama(7)) {
            m.addAdapter(dev.peft4j.config.LoraConfig.builder().r(4).loraAlpha(8)
                    .targetModules("q_proj", "v_proj", "embed_tokens")
                    .initLoraWeights(new dev.peft4j.config.InitLoraWeights.Flag(false)).build(), "x");
            m.saveAdapter(dir, "x");
        }
        return dir;
    }

    private static void keep(byte[] input, Path file, String what) {
        try {
            Path dir = Files.createDirectories(Path.of("target", "fuzz-findings"));
            Files.write(dir.resolve(file.getFileName()), input);
            Files.writeString(dir.resolve(file.getFileName() + ".txt"), what + "\n");
        } catch (IOException ignored) {
            // the assertion that follows reports the input anyway
        }
    }

    private static void deleteTree(Path p) throws IOException {
        if (Files.isDirectory(p)) {
            try (Stream<Path> s = Files.list(p)) {
                for (Path c : (Iterable<Path>) s::iterator) {
                    Files.deleteIfExists(c);
                }
            }
        }
        Files.deleteIfExists(p);
    }

    // ------------------------------------------------------------------ seeds

    /** Small real files of each kind from the test resources. */
    static List<Seed> seeds() throws IOException {
        Path res = MixinSupport.res("fixtures").getParent();
        List<Seed> out = new ArrayList<>();
        try (Stream<Path> files = Files.walk(res)) {
            for (Path p : (Iterable<Path>) files.sorted()::iterator) {
                String n = p.getFileName().toString();
                if (!Files.isRegularFile(p) || Files.size(p) > 80_000) {
                    continue;
                }
                Kind kind = n.endsWith(".safetensors") ? Kind.SAFETENSORS
                        : n.endsWith(".bin") || n.endsWith(".pt") || n.endsWith(".pth") ? Kind.PICKLE
                        : n.equals("adapter_config.json") ? Kind.CONFIG : null;
                if (kind != null) {
                    out.add(new Seed(kind, res.relativize(p).toString(), Files.readAllBytes(p)));
                }
            }
        }
        assertTrue(out.stream().filter(s -> s.kind() == Kind.SAFETENSORS).count() >= 10, "safetensors seeds");
        assertTrue(out.stream().filter(s -> s.kind() == Kind.PICKLE).count() >= 10, "pickle seeds");
        assertTrue(out.stream().filter(s -> s.kind() == Kind.CONFIG).count() >= 4, "config seeds");
        return out;
    }

    // ------------------------------------------------------------------ mutations

    private static final long[] INTERESTING = {0, 1, -1, 7, 8, 0x7f, 0x80, 0xff, 0x7fff, 0xffff, 0x7fffffffL,
        0x80000000L, 0xffffffffL, 1L << 32, 1L << 40, Long.MAX_VALUE, Long.MIN_VALUE};

    static byte[] mutateMany(Seed s, List<Seed> seeds, Random r, List<String> ops) {
        byte[] b = s.bytes();
        int n = 1 + r.nextInt(3);
        for (int k = 0; k < n; k++) {
            b = mutate(s.kind(), b, seeds, r, ops);
        }
        return b;
    }

    static byte[] mutate(Kind kind, byte[] in, List<Seed> seeds, Random r, List<String> ops) {
        int op = r.nextInt(10);
        if (op >= 7) { // structure-aware
            byte[] out = switch (kind) {
                case SAFETENSORS -> op == 7 ? editSafetensorsLength(in, r, ops) : editSafetensorsHeader(in, r, ops);
                case PICKLE -> op == 7 ? editZipField(in, r, ops) : mutatePickleInZip(in, r, ops);
                case CONFIG -> editJson(in, r, ops);
            };
            if (out != null) {
                return out;
            }
        }
        return mutateBytes(kind, in, seeds, r, ops);
    }

    private static final String SPECIAL = "\"{}[],:0\\\u00ff.";

    static byte[] mutateBytes(Kind kind, byte[] in, List<Seed> seeds, Random r, List<String> ops) {
        int len = in.length;
        switch (r.nextInt(7)) {
            case 0 -> {
                byte[] out = in.clone();
                int flips = 1 + r.nextInt(4);
                for (int i = 0; i < flips && len > 0; i++) {
                    int at = r.nextInt(len);
                    out[at] ^= (byte) (1 << r.nextInt(8));
                }
                ops.add("flip" + flips);
                return out;
            }
            case 1 -> {
                int at = r.nextInt(len + 1);
                byte[] ins = new byte[1 + r.nextInt(16)];
                for (int i = 0; i < ins.length; i++) {
                    ins[i] = r.nextBoolean() ? (byte) r.nextInt(256) : (byte) SPECIAL.charAt(r.nextInt(SPECIAL.length()));
                }
                ops.add("insert" + ins.length + "@" + at);
                return concat(slice(in, 0, at), ins, slice(in, at, len));
            }
            case 2 -> {
                if (len == 0) {
                    return in;
                }
                int at = r.nextInt(len);
                int n = Math.min(len - at, 1 + r.nextInt(16));
                ops.add("delete" + n + "@" + at);
                return concat(slice(in, 0, at), slice(in, at + n, len));
            }
            case 3 -> {
                int at = len == 0 ? 0 : r.nextInt(len);
                ops.add("truncate@" + at);
                return slice(in, 0, at);
            }
            case 4 -> {
                if (len < 8) {
                    return in;
                }
                int width = 1 << r.nextInt(4);
                int at = r.nextInt(len - width + 1);
                long v = INTERESTING[r.nextInt(INTERESTING.length)];
                byte[] out = in.clone();
                ByteBuffer.wrap(out).order(ByteOrder.LITTLE_ENDIAN).position(at).put(le(v, width));
                ops.add("int" + width + "=" + v + "@" + at);
                return out;
            }
            case 5 -> {
                List<Seed> same = seeds.stream().filter(s -> s.kind() == kind).toList();
                byte[] other = same.get(r.nextInt(same.size())).bytes();
                int a = r.nextInt(len + 1);
                int b = r.nextInt(other.length + 1);
                ops.add("splice@" + a + "/" + b);
                return concat(slice(in, 0, a), slice(other, b, other.length));
            }
            default -> {
                if (len < 2) {
                    return in;
                }
                int a = r.nextInt(len);
                int n = Math.min(len - a, 1 + r.nextInt(64));
                int to = r.nextInt(len - n + 1);
                byte[] out = in.clone();
                System.arraycopy(in, a, out, to, n);
                ops.add("copy" + n + "@" + a + ">" + to);
                return out;
            }
        }
    }

    /** The safetensors header length (first 8 bytes) set to a value near the real one or an extreme one. */
    static byte[] editSafetensorsLength(byte[] in, Random r, List<String> ops) {
        if (in.length < 8) {
            return null;
        }
        long real = ByteBuffer.wrap(in).order(ByteOrder.LITTLE_ENDIAN).getLong(0);
        long[] choices = {real + 1, real - 1, real + 8, 0, 1, 2, in.length - 8, in.length - 7, in.length,
            real * 2, 100_000_001, 1L << 31, Long.MAX_VALUE, -1, INTERESTING[r.nextInt(INTERESTING.length)]};
        long v = choices[r.nextInt(choices.length)];
        byte[] out = in.clone();
        ByteBuffer.wrap(out).order(ByteOrder.LITTLE_ENDIAN).putLong(0, v);
        ops.add("headerLength=" + v);
        return out;
    }

    /** The safetensors header's JSON edited (values swapped or replaced), re-prefixed with its new length. */
    static byte[] editSafetensorsHeader(byte[] in, Random r, List<String> ops) {
        if (in.length < 8) {
            return null;
        }
        long n = ByteBuffer.wrap(in).order(ByteOrder.LITTLE_ENDIAN).getLong(0);
        if (n < 2 || n > in.length - 8) {
            return null;
        }
        byte[] edited = editJson(slice(in, 8, 8 + (int) n), r, ops);
        if (edited == null) {
            return null;
        }
        ByteBuffer len = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(0, edited.length);
        return concat(len.array(), edited, slice(in, 8 + (int) n, in.length));
    }

    /** One value of a JSON document swapped with another, replaced, or its key removed. */
    static byte[] editJson(byte[] in, Random r, List<String> ops) {
        JsonNode root;
        try {
            root = JSON.readTree(in);
        } catch (IOException e) {
            return null;
        }
        if (root == null || !root.isContainerNode()) {
            return null;
        }
        List<JsonNode[]> slots = new ArrayList<>(); // {parent, key as text node or index}
        collect(root, slots);
        if (slots.isEmpty()) {
            return null;
        }
        JsonNode[] slot = slots.get(r.nextInt(slots.size()));
        int what = r.nextInt(3);
        JsonNode value;
        if (what == 0) {
            JsonNode[] other = slots.get(r.nextInt(slots.size()));
            value = get(other).deepCopy();
            JsonNode mine = get(slot).deepCopy();
            set(other, mine);
            ops.add("jsonSwap");
        } else if (what == 1) {
            value = interestingJson(r);
            ops.add("jsonSet=" + shorten(value.toString()));
        } else {
            value = null;
            ops.add("jsonRemove");
        }
        if (value == null) {
            if (slot[0] instanceof ObjectNode o) {
                o.remove(slot[1].asText());
            } else {
                ((ArrayNode) slot[0]).remove(slot[1].asInt());
            }
        } else {
            set(slot, value);
        }
        try {
            return JSON.writeValueAsBytes(root);
        } catch (IOException e) {
            return null;
        }
    }

    private static void collect(JsonNode node, List<JsonNode[]> slots) {
        JsonNodeFactory f = JsonNodeFactory.instance;
        if (node instanceof ObjectNode o) {
            for (Iterator<String> it = o.fieldNames(); it.hasNext(); ) {
                String k = it.next();
                slots.add(new JsonNode[] {o, f.textNode(k)});
                collect(o.get(k), slots);
            }
        } else if (node instanceof ArrayNode a) {
            for (int i = 0; i < a.size(); i++) {
                slots.add(new JsonNode[] {a, f.numberNode(i)});
                collect(a.get(i), slots);
            }
        }
    }

    private static JsonNode get(JsonNode[] slot) {
        return slot[0] instanceof ObjectNode o ? o.get(slot[1].asText()) : slot[0].get(slot[1].asInt());
    }

    private static void set(JsonNode[] slot, JsonNode value) {
        if (slot[0] instanceof ObjectNode o) {
            o.set(slot[1].asText(), value);
        } else {
            ((ArrayNode) slot[0]).set(slot[1].asInt(), value);
        }
    }

    private static JsonNode interestingJson(Random r) {
        JsonNodeFactory f = JsonNodeFactory.instance;
        return switch (r.nextInt(16)) {
            case 0 -> f.nullNode();
            case 1 -> f.booleanNode(r.nextBoolean());
            case 2 -> f.numberNode(INTERESTING[r.nextInt(INTERESTING.length)]);
            case 3 -> f.numberNode(-r.nextInt(5));
            case 4 -> f.numberNode(1e308 * (r.nextBoolean() ? 10 : 1));
            case 5 -> f.numberNode(new java.math.BigInteger("123456789012345678901234567890"));
            case 6 -> f.textNode("");
            case 7 -> f.textNode("x".repeat(1 + r.nextInt(2000)));
            case 8 -> f.textNode(r.nextBoolean() ? "(.*)*(.*)*(.*)*z" : "((.*)*)*z");
            case 9 -> f.textNode(r.nextBoolean() ? "[" : "(?P<a>x)(?P=b)");
            case 10 -> f.arrayNode();
            case 11 -> f.objectNode();
            case 12 -> f.arrayNode().add(f.numberNode(r.nextInt(10))).add(f.numberNode(-1));
            case 13 -> f.textNode("\u00e9\u2603\ud83d\ude00");
            case 14 -> f.numberNode(r.nextDouble() * 8 - 4);
            default -> {
                ArrayNode deep = f.arrayNode();
                ArrayNode at = deep;
                for (int i = 0; i < 200; i++) {
                    at = at.addArray();
                }
                yield deep;
            }
        };
    }

    /** One size, length or offset field of a zip local or central header set to an interesting value. */
    static byte[] editZipField(byte[] in, Random r, List<String> ops) {
        List<Integer> local = new ArrayList<>();
        List<Integer> central = new ArrayList<>();
        for (int i = 0; i + 46 <= in.length; i++) {
            if (in[i] == 'P' && in[i + 1] == 'K') {
                if (in[i + 2] == 3 && in[i + 3] == 4) {
                    local.add(i);
                } else if (in[i + 2] == 1 && in[i + 3] == 2) {
                    central.add(i);
                }
            }
        }
        if (local.isEmpty() && central.isEmpty()) {
            return null;
        }
        boolean useLocal = central.isEmpty() || (!local.isEmpty() && r.nextBoolean());
        int base = useLocal ? local.get(r.nextInt(local.size())) : central.get(r.nextInt(central.size()));
        // local: crc 14, csize 18, usize 22, name len 26 (2), extra len 28 (2)
        // central: csize 20, usize 24, name len 28 (2), extra len 30 (2), local offset 42
        int[][] fields = useLocal ? new int[][] {{14, 4}, {18, 4}, {22, 4}, {26, 2}, {28, 2}}
                : new int[][] {{20, 4}, {24, 4}, {28, 2}, {30, 2}, {42, 4}};
        int[] field = fields[r.nextInt(fields.length)];
        long v = INTERESTING[r.nextInt(INTERESTING.length)] + (r.nextBoolean() ? 0 : r.nextInt(3) - 1);
        byte[] out = in.clone();
        ByteBuffer.wrap(out).order(ByteOrder.LITTLE_ENDIAN).position(base + field[0]).put(le(v, field[1]));
        ops.add((useLocal ? "zipLocal+" : "zipCentral+") + field[0] + "=" + v);
        return out;
    }

    /** The {@code data.pkl} of a torch zip mutated as bytes, the archive rewritten with valid CRCs. */
    static byte[] mutatePickleInZip(byte[] in, Random r, List<String> ops) {
        List<String> names = new ArrayList<>();
        List<byte[]> contents = new ArrayList<>();
        try (ZipInputStream z = new ZipInputStream(new java.io.ByteArrayInputStream(in))) {
            for (ZipEntry e; (e = z.getNextEntry()) != null; ) {
                names.add(e.getName());
                contents.add(z.readAllBytes());
            }
        } catch (IOException | RuntimeException e) {
            return null;
        }
        int pkl = names.indexOf(names.stream().filter(n -> n.endsWith("/data.pkl")).findFirst().orElse(""));
        if (pkl < 0) {
            return null;
        }
        List<String> inner = new ArrayList<>();
        contents.set(pkl, mutateBytes(Kind.PICKLE, contents.get(pkl), List.of(new Seed(Kind.PICKLE, "self",
                contents.get(pkl))), r, inner));
        ops.add("pickle:" + inner);
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        try (ZipOutputStream z = new ZipOutputStream(out)) {
            for (int i = 0; i < names.size(); i++) {
                z.putNextEntry(new ZipEntry(names.get(i)));
                z.write(contents.get(i));
                z.closeEntry();
            }
        } catch (IOException e) {
            return null;
        }
        return out.toByteArray();
    }

    private static byte[] le(long v, int width) {
        byte[] b = new byte[width];
        for (int i = 0; i < width; i++) {
            b[i] = (byte) (v >>> (8 * i));
        }
        return b;
    }

    private static byte[] slice(byte[] b, int from, int to) {
        return java.util.Arrays.copyOfRange(b, from, to);
    }

    private static byte[] concat(byte[]... parts) {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        for (byte[] p : parts) {
            out.writeBytes(p);
        }
        return out.toByteArray();
    }

    private static String shorten(String s) {
        return s.length() > 40 ? s.substring(0, 40) + "..." : s;
    }
}
