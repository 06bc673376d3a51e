package dev.peft4j.train;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.peft4j.io.SafetensorsFile;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.bytedeco.pytorch.AdamW;
import org.bytedeco.pytorch.InputArchive;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.OutputArchive;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

/**
 * A training checkpoint, {@code checkpoint-<step>} as transformers names it: the active adapter as
 * {@code save_pretrained} writes it (what PEFT and {@code loadAdapter} read), and what {@link Trainer} needs to
 * resume: {@value #STATE_FILE} (transformers' {@code global_step}, {@code max_steps} and {@code log_history}, and
 * under {@code "peft4j"} the running loss sums and the trainable parameters' names), {@value #PARAMS_FILE} (the
 * trainable parameters under the model's own names) and {@value #OPTIMIZER_FILE} (libtorch's serialization of
 * AdamW's state and of the CPU random generator's state; not transformers' {@code optimizer.pt}, which is a Python
 * pickle).
 */
final class Checkpoint {
    static final String STATE_FILE = "trainer_state.json";
    static final String PARAMS_FILE = "trainable_parameters.safetensors";
    static final String OPTIMIZER_FILE = "optimizer_libtorch.pt";
    private static final String PREFIX = "checkpoint-";
    private static final ObjectMapper MAPPER = new ObjectMapper();

    private Checkpoint() {}

    /** Where a resumed run starts: the steps done, the loss sums so far and the log. */
    record State(int globalStep, double lossSum, double sinceLog, int stepsSinceLog, List<Trainer.LogEntry> log) {}

    /** Writes the adapter's files into a folder. */
    @FunctionalInterface
    interface AdapterWriter {
        void write(Path dir) throws IOException;
    }

    /** The checkpoint folder of {@code outputDir} with the highest step, or null. */
    static Path last(Path outputDir) throws IOException {
        if (!Files.isDirectory(outputDir)) {
            return null;
        }
        try (Stream<Path> s = Files.list(outputDir)) {
            return s.filter(p -> Files.isDirectory(p) && p.getFileName().toString().matches(PREFIX + "\\d+"))
                    .max(Comparator.comparingLong(p -> Long.parseLong(p.getFileName().toString()
                            .substring(PREFIX.length()))))
                    .orElse(null);
        }
    }

    /**
     * Writes the checkpoint into a temporary folder beside {@code dir}, then renames it to {@code dir} (replacing a
     * previous one), so {@code dir} is either the old checkpoint or the whole new one.
     */
    static void save(Path dir, AdapterWriter adapter, State state, int maxSteps, List<String> names,
            List<Tensor> params, AdamW opt) throws IOException {
        Path parent = dir.toAbsolutePath().getParent();
        Files.createDirectories(parent);
        Path tmp = Files.createTempDirectory(parent, dir.getFileName() + ".tmp-");
        try {
            adapter.write(tmp);
            Map<String, Tensor> p = new LinkedHashMap<>();
            for (int i = 0; i < names.size(); i++) {
                p.put(names.get(i), params.get(i).detach().contiguous());
            }
            SafetensorsFile.write(tmp.resolve(PARAMS_FILE), p);
            try (OutputArchive archive = new OutputArchive(); OutputArchive optimizer = new OutputArchive()) {
                opt.save(optimizer);
                archive.write("optimizer", optimizer);
                archive.write("rng_state", torch.getDefaultCPUGenerator().get_state());
                archive.save_to(tmp.resolve(OPTIMIZER_FILE).toString());
            }
            ObjectNode json = MAPPER.createObjectNode();
            json.put("global_step", state.globalStep());
            json.put("max_steps", maxSteps);
            ArrayNode history = json.putArray("log_history");
            for (Trainer.LogEntry e : state.log()) {
                ObjectNode o = history.addObject();
                o.put("loss", e.loss());
                o.put("learning_rate", e.learningRate());
                if (Double.isFinite(e.gradNorm())) {
                    o.put("grad_norm", e.gradNorm());
                }
                o.put("step", e.step());
            }
            ObjectNode ours = json.putObject("peft4j");
            ours.put("loss_sum", state.lossSum());
            ours.put("loss_since_log", state.sinceLog());
            ours.put("steps_since_log", state.stepsSinceLog());
            ArrayNode n = ours.putArray("trainable_parameters");
            names.forEach(n::add);
            Files.writeString(tmp.resolve(STATE_FILE),
                    MAPPER.writerWithDefaultPrettyPrinter().writeValueAsString(json));
            Path old = null;
            if (Files.exists(dir)) {
                old = Files.createTempDirectory(parent, dir.getFileName() + ".old-");
                Files.move(dir, old.resolve("c"), StandardCopyOption.ATOMIC_MOVE);
            }
            Files.move(tmp, dir, StandardCopyOption.ATOMIC_MOVE);
            if (old != null) {
                deleteTree(old);
            }
        } catch (IOException | RuntimeException e) {
            deleteTree(tmp);
            throw e;
        }
    }

    /**
     * Reads the checkpoint in {@code dir} and, once all of it is checked against the model, copies the trainable
     * parameters and the random state into place and AdamW's state into {@code opt} (a fresh optimizer over
     * {@code params}). Nothing is changed when it does not fit.
     */
    static State restore(Path dir, List<String> names, List<Tensor> params, AdamW opt, int maxSteps)
            throws IOException {
        Path stateFile = dir.resolve(STATE_FILE);
        if (!Files.isRegularFile(stateFile)) {
            throw new java.nio.file.NoSuchFileException(stateFile.toString(), null,
                    "not a checkpoint this Trainer wrote (no " + STATE_FILE + ")");
        }
        JsonNode json = MAPPER.readTree(stateFile.toFile());
        JsonNode ours = json.path("peft4j");
        if (!json.path("global_step").canConvertToInt() || !ours.isObject()) {
            throw new IOException(stateFile + ": no global_step or peft4j section");
        }
        int step = json.get("global_step").asInt();
        if (step < 0 || step > maxSteps) {
            throw new IllegalArgumentException(stateFile + ": global_step " + step + " is past this run's " + maxSteps
                    + " steps");
        }
        List<String> saved = new ArrayList<>();
        ours.path("trainable_parameters").forEach(x -> saved.add(x.asText()));
        if (!saved.equals(names)) {
            List<String> missing = new ArrayList<>(names);
            missing.removeAll(saved);
            List<String> extra = new ArrayList<>(saved);
            extra.removeAll(names);
            throw new IllegalArgumentException(stateFile + ": the checkpoint's trainable parameters are not the "
                    + "model's: missing " + missing + ", unexpected " + extra
                    + (missing.isEmpty() && extra.isEmpty() ? " (another order)" : ""));
        }
        List<Trainer.LogEntry> log = new ArrayList<>();
        for (JsonNode e : json.path("log_history")) {
            log.add(new Trainer.LogEntry(e.path("step").asInt(), e.path("loss").asDouble(),
                    e.path("learning_rate").asDouble(),
                    e.has("grad_norm") ? e.get("grad_norm").asDouble() : Double.NaN));
        }
        try (SafetensorsFile f = SafetensorsFile.open(dir.resolve(PARAMS_FILE))) {
            List<Tensor> values = new ArrayList<>();
            for (int i = 0; i < names.size(); i++) {
                String k = names.get(i);
                if (!f.contains(k)) {
                    throw new IllegalArgumentException(f.path() + ": no tensor '" + k + "'");
                }
                Tensor t = f.get(k);
                Tensor p = params.get(i);
                if (!Arrays.equals(t.shape(), p.shape()) || t.scalar_type().intern() != p.scalar_type().intern()) {
                    throw new IllegalArgumentException(f.path() + ": '" + k + "' is " + t.scalar_type()
                            + Arrays.toString(t.shape()) + ", the model's " + p.scalar_type()
                            + Arrays.toString(p.shape()));
                }
                values.add(t);
            }
            Tensor rng = new Tensor();
            try (InputArchive archive = new InputArchive(); InputArchive optimizer = new InputArchive()) {
                archive.load_from(dir.resolve(OPTIMIZER_FILE).toString());
                archive.read("optimizer", optimizer);
                archive.read("rng_state", rng);
                opt.load(optimizer);
            } catch (RuntimeException e) {
                throw new IOException(dir.resolve(OPTIMIZER_FILE) + ": cannot read AdamW's state from it ("
                        + e.getMessage() + ")", e);
            }
            try (NoGradGuard g = new NoGradGuard()) {
                for (int i = 0; i < values.size(); i++) {
                    params.get(i).copy_(values.get(i));
                }
            }
            torch.getDefaultCPUGenerator().set_state(rng);
        }
        return new State(step, ours.path("loss_sum").asDouble(), ours.path("loss_since_log").asDouble(),
                ours.path("steps_since_log").asInt(), log);
    }

    private static void deleteTree(Path root) throws IOException {
        if (!Files.exists(root)) {
            return;
        }
        try (Stream<Path> s = Files.walk(root)) {
            for (Path p : s.sorted(Comparator.reverseOrder()).toList()) {
                Files.delete(p);
            }
        }
    }
}
