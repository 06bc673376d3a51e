package dev.peft4j;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.peft4j.config.PeftConfig;
import dev.peft4j.config.PeftConfigs;
import dev.peft4j.io.AdapterFolder;
import dev.peft4j.io.AtomicFolder;
import dev.peft4j.io.HubCache;
import dev.peft4j.io.HubDownload;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.Map;
import java.util.Set;
import org.bytedeco.pytorch.Tensor;

/**
 * Where {@code load_adapter} finds an adapter: a local folder (its {@code subfolder}) or a Hub repo id fetched into
 * the Hugging Face cache at {@code revision} ({@code cache_dir}, {@code local_files_only}, {@code force_download},
 * {@code token}), read into its config and weights as PEFT's {@code load_peft_weights} does.
 */
final class AdapterSource {
    private static final Set<String> NOT_INJECTABLE = Set.of("PROMPT_TUNING", "MULTITASK_PROMPT_TUNING", "P_TUNING",
            "PREFIX_TUNING", "CPT", "ADAPTION_PROMPT");

    /**
     * An adapter's config and weights, and where they come from (the folder or repo id, or {@code state_dict}).
     * {@code ownWeights}: the weights were read here, and the caller frees them.
     */
    record Read(PeftConfig config, Map<String, Tensor> weights, String source, boolean ownWeights) {
    }

    private AdapterSource() {
    }

    /**
     * The adapter {@code load_adapter} is given: read from {@code pathOrRepoId} when not null (the folder's weights
     * replace a state dict passed in the options, as transformers v4 does; a config passed is used instead of the
     * folder's), else the options' config and state dict.
     */
    static Read read(String pathOrRepoId, LoadAdapterOptions o) throws IOException {
        Read read = pathOrRepoId == null ? new Read(o.peftConfig(), o.adapterStateDict(), "state_dict", false)
                : readFolder(pathOrRepoId, o, o.peftConfig());
        if (read.config() == null) {
            throw new IllegalArgumentException("You should either pass a `peft_model_id` or a `peft_config` and "
                    + "`adapter_state_dict` to load an adapter.");
        }
        if (read.weights() == null) {
            throw new IllegalArgumentException("no adapter state dict: pass `adapter_state_dict` with `peft_config`");
        }
        return read;
    }

    private static Read readFolder(String pathOrRepoId, LoadAdapterOptions o, PeftConfig config) throws IOException {
        Path dir = Path.of(pathOrRepoId);
        AtomicFolder.recover(dir); // a save killed mid-way: its leftovers removed, a half swap undone
        if (Files.exists(dir) && !Files.isDirectory(dir)) {
            throw new IllegalArgumentException("adapter model file not found in " + pathOrRepoId + ": it is a "
                    + "file; pass the folder holding adapter_config.json and the weights");
        }
        String subfolder = stringKwarg(o, "subfolder");
        if (HubCache.refersToHub(pathOrRepoId)) {
            // a repo id: its files fetched into the Hugging Face cache (adapter_kwargs' cache_dir, as in
            // transformers) at `revision`, or taken from it when offline or the Hub is unreachable
            dir = fromHub(pathOrRepoId, o, subfolder, config == null);
        } else if (subfolder != null && !subfolder.isEmpty()) {
            dir = dir.resolve(subfolder);
            if (!Files.isDirectory(dir)) {
                throw new IllegalArgumentException("adapter model file not found in " + pathOrRepoId
                        + ": no subfolder '" + subfolder + "' (" + dir + ")");
            }
        }
        if (config == null && !Files.isRegularFile(dir.resolve(PeftConfigs.CONFIG_FILE_NAME))) {
            throw new IllegalArgumentException("adapter model file not found in " + pathOrRepoId
                    + ". Make sure you are passing the correct path to the adapter model.");
        }
        if (config == null) {
            refusePromptLearning(dir.resolve(PeftConfigs.CONFIG_FILE_NAME));
            config = PeftConfigs.read(dir);
        }
        Path weights = AdapterFolder.findWeights(dir);
        if (weights == null) {
            throw new NoSuchFileException(dir.toString(), null, "adapter folder has neither "
                    + AdapterFolder.SAFETENSORS_NAME + " nor " + AdapterFolder.BIN_NAME);
        }
        return new Read(config, AdapterFolder.readWeights(weights), pathOrRepoId, true);
    }

    // a string-valued entry of load_adapter's adapter_kwargs (cache_dir, subfolder), or null
    private static String stringKwarg(LoadAdapterOptions o, String key) {
        Object v = o.adapterKwargs() == null ? null : o.adapterKwargs().get(key);
        if (v == null) {
            return null;
        }
        if (v instanceof String str) {
            return str;
        }
        if (v instanceof Path path) {
            return path.toString();
        }
        throw new IllegalArgumentException("adapter_kwargs['" + key + "']: expected a string or a Path, got "
                + v.getClass().getSimpleName());
    }

    // the snapshot folder (subfolder included) holding the adapter's config (when needed) and weights: safetensors,
    // else .bin, as load_peft_weights looks for them on the Hub
    private static Path fromHub(String repoId, LoadAdapterOptions o, String subfolder, boolean needConfig)
            throws IOException {
        Path root = HubCache.root(stringKwarg(o, "cache_dir"));
        HubDownload.Settings hub = HubDownload.Settings.fromEnvironment(o.token());
        Object localOnly = o.adapterKwargs() == null ? null : o.adapterKwargs().get("local_files_only");
        if (Boolean.TRUE.equals(localOnly)) {
            hub = new HubDownload.Settings(hub.endpoint(), hub.token(), true);
        } else if (localOnly != null && !Boolean.FALSE.equals(localOnly)) {
            throw new IllegalArgumentException("adapter_kwargs['local_files_only']: expected a boolean, got "
                    + localOnly);
        }
        Object force = o.adapterKwargs() == null ? null : o.adapterKwargs().get("force_download");
        if (force != null && !(force instanceof Boolean)) {
            throw new IllegalArgumentException("adapter_kwargs['force_download']: expected a boolean, got " + force);
        }
        hub = hub.withForceDownload(Boolean.TRUE.equals(force));
        String prefix = subfolder == null || subfolder.isEmpty() ? "" : subfolder.replaceAll("/+$", "") + "/";
        String revision = o.revision();
        if (needConfig) {
            Path cfg = HubDownload.file(root, repoId, revision, prefix + PeftConfigs.CONFIG_FILE_NAME, hub);
            if (cfg == null) {
                throw new IllegalArgumentException("adapter model file not found in " + repoId
                        + ". Make sure you are passing the correct path to the adapter model.");
            }
            // the weights at the config's commit, whatever the branch does meanwhile
            revision = HubCache.commitOf(root, repoId, cfg);
        }
        Path weights = HubDownload.file(root, repoId, revision, prefix + AdapterFolder.SAFETENSORS_NAME, hub);
        if (weights == null) {
            weights = HubDownload.file(root, repoId, revision, prefix + AdapterFolder.BIN_NAME, hub);
        }
        if (weights == null) {
            throw new IllegalArgumentException("Can't find weights for " + repoId + " in " + repoId + " or in the "
                    + "Hugging Face Hub. Please check that the file adapter_model.bin or adapter_model.safetensors is "
                    + "present at " + repoId + ".");
        }
        return weights.getParent();
    }

    /** {@code inject_adapter_in_model}'s refusal of prompt-learning and adaption-prompt configs, in its words. */
    private static void refusePromptLearning(Path configFile) throws IOException {
        JsonNode root;
        try {
            root = new ObjectMapper().readTree(configFile.toFile());
        } catch (IOException e) { // invalid JSON or encoding, or no file
            return; // PeftConfigs.read reports it, naming the file
        }
        if (root != null && root.isObject() && root.path("peft_type").isTextual()
                && NOT_INJECTABLE.contains(root.get("peft_type").asText())) {
            throw new IllegalArgumentException(configFile + ": `create_and_replace` does not support prompt learning "
                    + "and adaption prompt yet.");
        }
    }
}
