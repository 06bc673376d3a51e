package dev.peft4j.cli;

import dev.peft4j.models.PreTrainedModel;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import picocli.CommandLine.Option;

/**
 * {@code --adapter <dir>[=name]} (repeatable), {@code --active}, {@code --disable}, {@code --merge}: PEFT adapter
 * folders loaded into the model through the adapter mixin ({@code loadAdapter}, {@code setAdapter},
 * {@code disableAdapters}, {@code mergeAdapter}).
 */
final class AdapterOptions {
    @Option(names = "--adapter", paramLabel = "<dir>[=name]", description =
            "A PEFT adapter folder to load (repeatable), or a Hub repo id (fetched into the local Hugging Face "
            + "cache), named 'name' (default: 'default'; name every adapter after the first).")
    List<String> adapters = new ArrayList<>();

    @Option(names = "--adapter-revision", paramLabel = "<rev>", description =
            "For adapters given as repo ids: the branch, tag or commit to fetch (default: main).")
    String revision;

    @Option(names = "--active", split = ",", paramLabel = "n1,n2",
            description = "The adapters to activate (default: the first one loaded).")
    List<String> active;

    @Option(names = "--disable", description = "Load the adapters, then run with them disabled (the base model).")
    boolean disable;

    @Option(names = "--merge", description = "Merge the active adapters into the base weights before running.")
    boolean merge;

    /** Folder → adapter name, in command-line order; usage errors as {@link IllegalArgumentException}. */
    Map<String, Path> parse() {
        Map<String, Path> out = new LinkedHashMap<>();
        for (String spec : adapters) {
            int eq = spec.lastIndexOf('=');
            String name;
            String dir;
            if (eq >= 0 && spec.indexOf('/', eq) < 0) {
                dir = spec.substring(0, eq);
                name = spec.substring(eq + 1);
                if (name.isEmpty() || dir.isEmpty()) {
                    throw new IllegalArgumentException("--adapter " + spec + ": expected <dir>=<name>");
                }
            } else {
                dir = spec;
                name = "default";
            }
            if (out.containsKey(name)) {
                throw new IllegalArgumentException("--adapter " + spec + ": the name '" + name + "' is taken"
                        + (eq < 0 ? "; name it: --adapter " + spec + "=<name>" : ""));
            }
            out.put(name, Path.of(dir));
        }
        if (out.isEmpty() && (active != null || disable || merge)) {
            throw new IllegalArgumentException("--active, --disable and --merge need at least one --adapter");
        }
        if (disable && merge) {
            throw new IllegalArgumentException("--disable and --merge exclude each other");
        }
        if (active != null) {
            for (String a : active) {
                if (!out.containsKey(a)) {
                    throw new IllegalArgumentException("--active " + a + ": no adapter of that name; loaded: "
                            + out.keySet());
                }
            }
        }
        return out;
    }

    /**
     * Loads the adapters into {@code model} (repo ids with {@code hub}'s token and cache) and sets them up as the
     * options say; returns the active names.
     */
    List<String> apply(PreTrainedModel model, Map<String, Path> folders, ModelOptions hub) throws IOException {
        if (folders.isEmpty()) {
            return List.of();
        }
        for (Map.Entry<String, Path> e : folders.entrySet()) {
            model.loadAdapter(e.getValue().toString(), hub.adapterOptions(e.getKey(), revision));
        }
        List<String> act = active != null ? active : List.of(folders.keySet().iterator().next());
        model.setAdapter(act.toArray(String[]::new));
        if (disable) {
            model.disableAdapters();
        } else if (merge) {
            model.mergeAdapter();
        }
        return act;
    }
}
