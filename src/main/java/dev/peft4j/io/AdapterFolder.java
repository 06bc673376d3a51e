package dev.peft4j.io;

import dev.peft4j.config.PeftConfig;
import dev.peft4j.config.PeftConfigs;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.Collections;
import java.util.Map;
import org.bytedeco.pytorch.Tensor;

/**
 * A PEFT adapter folder as {@code save_pretrained} writes it and {@code load_peft_weights} reads it:
 * {@code adapter_config.json} plus {@code adapter_model.safetensors}, or else the legacy pickle {@code adapter_model.bin}
 * (safetensors wins when both exist, as PEFT prefers it locally). Only the folder's top level is looked at.
 *
 * <p>The state dict keeps the checkpoint's own keys ({@code base_model.model.…lora_A.weight}). Safetensors tensors are
 * copy-on-write views of the mapped file; the caller owns every tensor (close them, or leave them to a scope).
 */
public record AdapterFolder(Path dir, PeftConfig config, Path weightsFile, Map<String, Tensor> stateDict) {
    /** The weights file name PEFT writes and reads first. */
    public static final String SAFETENSORS_NAME = "adapter_model.safetensors";
    /** The pickled weights file name PEFT reads when there is no safetensors file. */
    public static final String BIN_NAME = "adapter_model.bin";

    /** Wraps {@code stateDict} in an unmodifiable view (the tensors are not copied). */
    public AdapterFolder {
        stateDict = Collections.unmodifiableMap(stateDict);
    }

    /** The weights file PEFT would read in {@code dir}: safetensors first, else {@code .bin}; null when neither. */
    public static Path findWeights(Path dir) {
        Path st = dir.resolve(SAFETENSORS_NAME);
        if (Files.isRegularFile(st)) {
            return st;
        }
        Path bin = dir.resolve(BIN_NAME);
        return Files.isRegularFile(bin) ? bin : null;
    }

    /**
     * Reads config and weights of the adapter in {@code dir}.
     *
     * @throws NoSuchFileException naming the folder when it is not a directory, has no {@code adapter_config.json}, or
     *     has neither weights file
     * @throws IOException when a weights file is malformed ({@link SafetensorsException}, {@link TorchPickleException},
     *     naming the file) or holds no tensor at all
     * @throws dev.peft4j.config.PeftConfigException when the config is invalid
     */
    public static AdapterFolder read(Path dir) throws IOException {
        AtomicFolder.recover(dir);
        if (!Files.isDirectory(dir)) {
            throw new NoSuchFileException(dir.toString(), null, "not an adapter folder: no such directory");
        }
        if (!Files.isRegularFile(dir.resolve(PeftConfigs.CONFIG_FILE_NAME))) {
            throw new NoSuchFileException(dir.toString(), null, "adapter folder has no "
                    + PeftConfigs.CONFIG_FILE_NAME + " (adapter model file not found in " + dir
                    + ". Make sure you are passing the correct path to the adapter model.)");
        }
        PeftConfig config = PeftConfigs.read(dir);
        Path weights = findWeights(dir);
        if (weights == null) {
            throw new NoSuchFileException(dir.toString(), null, "adapter folder has neither " + SAFETENSORS_NAME
                    + " nor " + BIN_NAME + " (Can't find weights for " + dir + ")");
        }
        Map<String, Tensor> sd = readWeights(weights);
        return new AdapterFolder(dir, config, weights, sd);
    }

    /**
     * Reads an adapter weights file by its name: {@code *.safetensors} mapped, anything else as a restricted torch
     * pickle.
     *
     * @throws IOException naming the file when it holds no tensor
     */
    public static Map<String, Tensor> readWeights(Path weights) throws IOException {
        Map<String, Tensor> sd;
        if (weights.getFileName().toString().endsWith(".safetensors")) {
            try (SafetensorsFile f = SafetensorsFile.open(weights)) {
                sd = f.tensors();
            }
        } else {
            sd = TorchPickle.loadStateDict(weights);
        }
        if (sd.isEmpty()) {
            throw new IOException(weights + ": the adapter state dict is empty (no tensor in the file)");
        }
        return sd;
    }
}
