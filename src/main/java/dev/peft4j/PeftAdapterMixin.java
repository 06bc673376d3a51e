package dev.peft4j;

import dev.peft4j.config.PeftConfig;
import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.function.Supplier;
import org.bytedeco.pytorch.Tensor;

/**
 * transformers' {@code PeftAdapterMixin} ({@code integrations/peft.py}) with PEFT's semantics, for every model of
 * {@code dev.peft4j.models}: each method delegates to the model's {@link PeftAdapters}. Error messages are
 * transformers' and PEFT's; Python's {@code ValueError} is an {@link IllegalArgumentException} (or
 * {@link IllegalStateException} for a call in the wrong state).
 */
public interface PeftAdapterMixin {
    /** The adapter state of this model. */
    PeftAdapters peftAdapters();

    /** {@code load_adapter(peft_model_id, **kwargs)}: a local adapter folder, or config + state dict in the options. */
    default AdapterLoadReport loadAdapter(String pathOrRepoId, LoadAdapterOptions options) throws IOException {
        return peftAdapters().loadAdapter(pathOrRepoId, options);
    }

    default AdapterLoadReport loadAdapter(Path folder) throws IOException {
        return loadAdapter(folder.toString(), LoadAdapterOptions.DEFAULTS);
    }

    default AdapterLoadReport loadAdapter(Path folder, String adapterName) throws IOException {
        return loadAdapter(folder.toString(), LoadAdapterOptions.named(adapterName));
    }

    /** In-memory adapter: {@code load_adapter(peft_config=…, adapter_state_dict=…, adapter_name=…)}. */
    default AdapterLoadReport loadAdapter(PeftConfig config, Map<String, Tensor> stateDict, String adapterName)
            throws IOException {
        return loadAdapter(null, LoadAdapterOptions.builder().peftConfig(config).adapterStateDict(stateDict)
                .adapterName(adapterName).build());
    }

    default void addAdapter(PeftConfig config, String adapterName) {
        peftAdapters().addAdapter(config, adapterName);
    }

    default void addAdapter(PeftConfig config) {
        addAdapter(config, null);
    }

    default void setAdapter(String... adapterNames) {
        peftAdapters().setAdapter(List.of(adapterNames), adapterNames.length != 1);
    }

    default void disableAdapters() {
        peftAdapters().disableAdapters();
    }

    default void enableAdapters() {
        peftAdapters().enableAdapters();
    }

    default List<String> activeAdapters() {
        return peftAdapters().activeAdapters();
    }

    /** Checkpoint keys without {@code base_model.model.}; the model's own tensors (do not close them). */
    default Map<String, Tensor> getAdapterStateDict(String adapterName) {
        return peftAdapters().getAdapterStateDict(adapterName);
    }

    default Map<String, Tensor> getAdapterStateDict() {
        return getAdapterStateDict(null);
    }

    default void deleteAdapter(String... adapterNames) {
        peftAdapters().deleteAdapter(List.of(adapterNames));
    }

    /** What {@code save_pretrained} writes for an adapter: {@code adapter_config.json} + {@code adapter_model.safetensors}. */
    default void saveAdapter(Path dir, String adapterName) throws IOException {
        peftAdapters().saveAdapter(dir, adapterName);
    }

    default void mergeAdapter(String... adapterNames) {
        peftAdapters().mergeAdapter(adapterNames.length == 0 ? null : List.of(adapterNames), false);
    }

    default void unmergeAdapter() {
        peftAdapters().unmergeAdapter();
    }

    default void mergeAndUnload(String... adapterNames) {
        peftAdapters().mergeAndUnload(adapterNames.length == 0 ? null : List.of(adapterNames), false);
    }

    /** PEFT's {@code merge_adapter(adapter_names, safe_merge)}: a safe merge checks for non-finite weights first. */
    default void mergeAdapter(boolean safeMerge, List<String> adapterNames) {
        peftAdapters().mergeAdapter(adapterNames, safeMerge);
    }

    /** PEFT's {@code merge_and_unload(safe_merge, adapter_names)}. */
    default void mergeAndUnload(boolean safeMerge, List<String> adapterNames) {
        peftAdapters().mergeAndUnload(adapterNames, safeMerge);
    }

    /** Runs {@code forward} with one adapter name per batch row ({@code adapter_names=}, {@code "__base__"} = none). */
    default <T> T withAdapterNames(List<String> adapterNames, Supplier<T> forward) {
        return peftAdapters().withAdapterNames(adapterNames, forward);
    }
}
