package dev.peft4j;

import dev.peft4j.config.PeftConfig;
import dev.peft4j.errors.Peft4jException;
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
 * {@link IllegalStateException} for a call in the wrong state), except where peft4j has its own type under
 * {@link Peft4jException} (a bad config, a config that matches no module). The methods that act on loaded
 * adapters throw {@link IllegalStateException} "No adapter loaded. Please load an adapter first." while the model
 * has none (transformers' {@code _check_peft}).
 *
 * <p>Adding, loading, deleting, activating and merging change the model's modules: they must not run while
 * another thread uses the model. A hotswap ({@code loadAdapter} with {@link LoadAdapterOptions#hotswap()}) is the
 * exception: it may run while other threads run forwards of a {@code dev.peft4j.models} model, each of which computes
 * with the old adapter or the new one, never a mix (the swap commits under the write side of
 * {@link PeftAdapters#forwardLock()}, which every forward holds). The per-row names of {@link #withAdapterNames} are
 * held per thread.
 */
public interface PeftAdapterMixin {
    /**
     * The adapter state of this model, which every other method delegates to.
     *
     * @return the model's one {@link PeftAdapters}
     */
    PeftAdapters peftAdapters();

    /**
     * {@code load_adapter(peft_model_id, **kwargs)}: an adapter folder as PEFT's {@code save_pretrained} writes it
     * ({@code adapter_config.json} and {@code adapter_model.safetensors} or {@code .bin}), a Hugging Face repo id
     * found in the local hub cache, or a config and state dict given in {@code options}. The adapter is injected
     * into the model and made the active one of every layer of its method ({@code tuner_layer_cls}: LoRA and AdaLoRA
     * share one, IA³ has its own), as PEFT's injection does; an adapter of another method stays active where it is. On
     * a module that holds an adapter of another method the new layer wraps that one as its {@code base_layer} and
     * applies its adapter to the inner layer's output, as PEFT nests them (DoRA around another method's layer is
     * refused, and so is merging such a stack).
     *
     * @param pathOrRepoId the folder or repo id, or null with {@code options.peftConfig()} and its state dict
     * @param options the keyword arguments of {@code load_adapter}; {@link LoadAdapterOptions#DEFAULTS} for none
     * @return the checkpoint keys the model lacked and the model keys the checkpoint lacked (PEFT's warnings)
     * @throws IOException the folder or a file in it is missing or unreadable; a malformed weights file is the
     *     {@code IOException} subclass {@link dev.peft4j.io.SafetensorsException} or
     *     {@link dev.peft4j.io.TorchPickleException}
     * @throws dev.peft4j.config.PeftConfigException {@code adapter_config.json} is one PEFT would refuse
     * @throws dev.peft4j.tuners.NoMatchingModuleException the config's targets match no module of this model
     * @throws IllegalArgumentException an adapter of that name exists already, or a tensor's shape does not fit
     *     the model's layer ("size mismatch for ..."); the model is left as it was
     * @throws UnsupportedOperationException a PEFT method, variant or config field peft4j does not implement
     *     (aLoRA's {@code alora_invocation_tokens}, {@code target_parameters}, ...: the message names the field and the
     *     adapter; docs/CONFIG-FIELDS.md lists them); the model is left as it was
     *
     * <p>With hotswap (see {@link LoadAdapterOptions}) the loaded adapter of that name keeps its name and targets and
     * takes the new weights and scaling in place: the configs must agree on {@code use_rslora}, {@code lora_dropout},
     * {@code alpha_pattern} and {@code use_dora} (PEFT's "Configs are incompatible: ..."), every checkpoint key must
     * be one of the adapter's ("Hot swapping the adapter did not succeed, unexpected keys found: ..."), old factors the
     * checkpoint lacks become zeros, and a smaller rank is zero-padded. A DoRA adapter's magnitude vector is swapped
     * the same way (zeros when the checkpoint lacks it). Only LoRA adapters hotswap. Any error leaves the model as it
     * was.
     */
    default AdapterLoadReport loadAdapter(String pathOrRepoId, LoadAdapterOptions options) throws IOException {
        return peftAdapters().loadAdapter(pathOrRepoId, options);
    }

    /**
     * Loads the adapter folder under the name {@code "default"}, as {@code load_adapter(folder)}.
     *
     * @param folder a folder PEFT's {@code save_pretrained} wrote
     * @return the missing and unexpected keys
     * @throws IOException as {@link #loadAdapter(String, LoadAdapterOptions)}
     * @throws Peft4jException as {@link #loadAdapter(String, LoadAdapterOptions)}
     */
    default AdapterLoadReport loadAdapter(Path folder) throws IOException {
        return loadAdapter(folder.toString(), LoadAdapterOptions.DEFAULTS);
    }

    /**
     * Loads the adapter folder under {@code adapterName}, as {@code load_adapter(folder, adapter_name=...)}.
     *
     * @param folder a folder PEFT's {@code save_pretrained} wrote
     * @param adapterName the name it gets here; null for {@code "default"}
     * @return the missing and unexpected keys
     * @throws IOException as {@link #loadAdapter(String, LoadAdapterOptions)}
     * @throws Peft4jException as {@link #loadAdapter(String, LoadAdapterOptions)}
     */
    default AdapterLoadReport loadAdapter(Path folder, String adapterName) throws IOException {
        return loadAdapter(folder.toString(), LoadAdapterOptions.named(adapterName));
    }

    /**
     * In-memory adapter: {@code load_adapter(peft_config=…, adapter_state_dict=…, adapter_name=…)}.
     *
     * @param config the adapter's config
     * @param stateDict checkpoint-keyed tensors ({@code base_model.model.} prefix optional); copied, the caller
     *     keeps them
     * @param adapterName the name it gets; null for {@code "default"}
     * @return the missing and unexpected keys
     * @throws IOException not thrown for an in-memory adapter (the signature is the folder loader's)
     * @throws Peft4jException as {@link #loadAdapter(String, LoadAdapterOptions)}
     */
    default AdapterLoadReport loadAdapter(PeftConfig config, Map<String, Tensor> stateDict, String adapterName)
            throws IOException {
        return loadAdapter(null, LoadAdapterOptions.builder().peftConfig(config).adapterStateDict(stateDict)
                .adapterName(adapterName).build());
    }

    /**
     * {@code add_adapter(adapter_config, adapter_name)}: injects a freshly initialised adapter (PEFT's
     * initialisation) for training, and makes it the only active one.
     *
     * @param config the new adapter's config
     * @param adapterName its name; null for {@code "default"}
     * @throws IllegalArgumentException {@code config} is null, or an adapter of that name exists already
     * @throws dev.peft4j.tuners.NoMatchingModuleException the config's targets match no module of this model
     * @throws UnsupportedOperationException a PEFT method or option peft4j does not implement
     */
    default void addAdapter(PeftConfig config, String adapterName) {
        peftAdapters().addAdapter(config, adapterName);
    }

    /**
     * Adds an adapter named {@code "default"}: {@link #addAdapter(PeftConfig, String)}.
     *
     * @param config the new adapter's config
     * @throws Peft4jException as {@link #addAdapter(PeftConfig, String)}
     */
    default void addAdapter(PeftConfig config) {
        addAdapter(config, null);
    }

    /**
     * {@code set_adapter}: makes these adapters the active ones, in every adapted layer.
     *
     * @param adapterNames names of loaded adapters
     * @throws IllegalArgumentException a name is not loaded (transformers' message lists the loaded ones), or
     *     several names where a {@code modules_to_save} module can take one
     * @throws IllegalStateException no adapter is loaded
     */
    default void setAdapter(String... adapterNames) {
        peftAdapters().setAdapter(List.of(adapterNames), adapterNames.length != 1);
    }

    /**
     * {@code disable_adapters}: the model computes as its base until {@link #enableAdapters} (a merged layer is
     * unmerged). {@code modules_to_save} copies stay off after {@code enableAdapters}, as in transformers.
     *
     * @throws IllegalStateException no adapter is loaded
     */
    default void disableAdapters() {
        peftAdapters().disableAdapters();
    }

    /**
     * {@code enable_adapters}: the active adapters apply again after {@link #disableAdapters}.
     *
     * @throws IllegalStateException no adapter is loaded
     */
    default void enableAdapters() {
        peftAdapters().enableAdapters();
    }

    /**
     * transformers' {@code enable_peft_hotswap(target_rank, check_compiled)}: from now on a {@code loadAdapter} under
     * the name of a loaded adapter swaps it in place (hotswap "auto"), and each LoRA adapter loaded is zero-padded to
     * {@code targetRank} (its outputs unchanged), so that adapters of any rank up to it swap in without new tensors.
     *
     * @param targetRank the highest rank of the adapters to be swapped in
     * @param checkCompiled {@code "error"}, {@code "warn"} or {@code "ignore"}: what to do when an adapter is loaded
     *     already
     * @throws IllegalStateException "Call `enable_peft_hotswap` before loading the first adapter." ({@code "error"})
     * @throws IllegalArgumentException an unknown {@code checkCompiled}, or {@code targetRank} below 1
     */
    default void enablePeftHotswap(int targetRank, String checkCompiled) {
        peftAdapters().enablePeftHotswap(targetRank, checkCompiled);
    }

    /**
     * {@link #enablePeftHotswap(int, String)} with transformers' default {@code check_compiled="error"}.
     *
     * @param targetRank the highest rank of the adapters to be swapped in
     * @throws IllegalStateException an adapter is loaded already
     */
    default void enablePeftHotswap(int targetRank) {
        enablePeftHotswap(targetRank, "error");
    }

    /**
     * transformers v4's deprecated {@code active_adapter()}: the first active adapter; logs transformers' deprecation
     * warning.
     *
     * @return the first of {@link #activeAdapters()}
     * @throws IllegalStateException no adapter is loaded
     * @deprecated as in transformers, use {@link #activeAdapters()}
     */
    @Deprecated
    default String activeAdapter() {
        return peftAdapters().activeAdapter();
    }

    /**
     * {@code active_adapters()}.
     *
     * @return the names of the active adapters, in activation order (an immutable list)
     * @throws IllegalStateException no adapter is loaded
     */
    default List<String> activeAdapters() {
        return peftAdapters().activeAdapters();
    }

    /**
     * {@code get_adapter_state_dict(adapter_name)}: the adapter's tensors under their checkpoint keys without
     * {@code base_model.model.}.
     *
     * @param adapterName a loaded adapter; null for the first active one
     * @return the model's own tensors (do not close them)
     * @throws IllegalArgumentException no adapter of that name is loaded
     * @throws IllegalStateException no adapter is loaded
     */
    default Map<String, Tensor> getAdapterStateDict(String adapterName) {
        return peftAdapters().getAdapterStateDict(adapterName);
    }

    /**
     * {@code get_adapter_state_dict(adapter_name, state_dict)}: the keys {@link #getAdapterStateDict(String)} gives,
     * with their values taken from {@code stateDict} (keyed as the model's own state dict, adapter names included,
     * e.g. {@code model.layers.0.self_attn.q_proj.lora_A.default.weight}) instead of the model.
     *
     * @param adapterName a loaded adapter; null for the first active one
     * @param stateDict the tensors to pick from; null for the model's own
     * @return checkpoint-keyed tensors of {@code stateDict} (not copied); keys {@code stateDict} lacks are left out
     * @throws IllegalArgumentException no adapter of that name is loaded
     * @throws IllegalStateException no adapter is loaded
     */
    default Map<String, Tensor> getAdapterStateDict(String adapterName, Map<String, Tensor> stateDict) {
        return peftAdapters().getAdapterStateDict(adapterName, stateDict);
    }

    /**
     * The first active adapter's state dict: {@link #getAdapterStateDict(String)} with null.
     *
     * @return the model's own tensors under their checkpoint keys
     * @throws IllegalStateException no adapter is loaded
     */
    default Map<String, Tensor> getAdapterStateDict() {
        return getAdapterStateDict(null);
    }

    /**
     * {@code delete_adapter(adapter_names)}: removes the adapters from every layer, with their configs; the others
     * stay. Deleting the last one leaves the model with no adapter loaded.
     *
     * @param adapterNames names of loaded adapters
     * @throws IllegalArgumentException a name is not loaded; nothing is deleted then
     * @throws IllegalStateException no adapter is loaded
     */
    default void deleteAdapter(String... adapterNames) {
        peftAdapters().deleteAdapter(List.of(adapterNames));
    }

    /**
     * What {@code save_pretrained} writes for an adapter: {@code adapter_config.json} and
     * {@code adapter_model.safetensors}, each written atomically, loadable by Python PEFT.
     *
     * @param dir the folder, created if missing; files of the same names are replaced
     * @param adapterName the adapter to save; null for the single active one
     * @throws IOException the folder or a file cannot be written
     * @throws IllegalArgumentException no adapter of that name, or null with several active adapters
     * @throws IllegalStateException no adapter is loaded
     */
    default void saveAdapter(Path dir, String adapterName) throws IOException {
        peftAdapters().saveAdapter(dir, adapterName);
    }

    /**
     * PEFT's {@code merge_adapter(adapter_names)}: adds the adapters' deltas into the base weights, so the forward
     * costs what the base model's does; {@link #unmergeAdapter} takes them out again.
     *
     * @param adapterNames adapters to merge; none for the active ones
     * @throws IllegalArgumentException a name is not loaded
     * @throws IllegalStateException no adapter is loaded
     */
    default void mergeAdapter(String... adapterNames) {
        peftAdapters().mergeAdapter(adapterNames.length == 0 ? null : List.of(adapterNames), false);
    }

    /**
     * PEFT's {@code unmerge_adapter()}: subtracts every merged delta from the base weights (exact up to rounding).
     *
     * @throws IllegalStateException no adapter is loaded
     */
    default void unmergeAdapter() {
        peftAdapters().unmergeAdapter();
    }

    /**
     * PEFT's {@code merge_and_unload(adapter_names=...)}: merges, then puts each base layer back in place of its
     * adapter layer and drops every adapter; the model is a plain model again, with no adapter loaded.
     *
     * @param adapterNames adapters to merge; none for the active ones
     * @throws IllegalArgumentException a name is not loaded
     * @throws IllegalStateException no adapter is loaded
     */
    default void mergeAndUnload(String... adapterNames) {
        peftAdapters().mergeAndUnload(adapterNames.length == 0 ? null : List.of(adapterNames), false);
    }

    /**
     * PEFT's {@code merge_adapter(adapter_names, safe_merge)}: a safe merge computes each merged weight aside and
     * checks it for non-finite values before writing it.
     *
     * @param safeMerge whether to check first
     * @param adapterNames adapters to merge; null for the active ones
     * @throws IllegalArgumentException a name is not loaded, or (safe merge) "NaNs detected in the merged
     *     weights. The adapter ... seems to be broken": the layer at fault keeps its weight
     * @throws IllegalStateException no adapter is loaded
     */
    default void mergeAdapter(boolean safeMerge, List<String> adapterNames) {
        peftAdapters().mergeAdapter(adapterNames, safeMerge);
    }

    /**
     * PEFT's {@code merge_and_unload(safe_merge, adapter_names)}: {@link #mergeAndUnload(String...)} with PEFT's
     * safe merge available.
     *
     * @param safeMerge whether to check each merged weight for non-finite values first
     * @param adapterNames adapters to merge; null for the active ones
     * @throws IllegalArgumentException a name is not loaded, or (safe merge) non-finite merged weights
     * @throws IllegalStateException no adapter is loaded
     */
    default void mergeAndUnload(boolean safeMerge, List<String> adapterNames) {
        peftAdapters().mergeAndUnload(adapterNames, safeMerge);
    }

    /**
     * PEFT's {@code add_weighted_adapter(adapters, weights, adapter_name, combination_type, svd_rank, svd_clamp,
     * density=..., majority_sign_method=...)}: a new LoRA adapter from existing ones, frozen and not active; see
     * {@link PeftAdapters#addWeightedAdapter}.
     *
     * @param adapters the LoRA adapters to combine
     * @param weights one weight per adapter (negative subtracts)
     * @param adapterName the new adapter's name (nothing happens when it exists)
     * @param combinationType {@code cat}, {@code linear}, {@code svd}, {@code ties}, {@code ties_svd},
     *     {@code magnitude_prune}, {@code magnitude_prune_svd}, {@code dare_linear}, {@code dare_ties},
     *     {@code dare_linear_svd}, {@code dare_ties_svd} (their masks from a CPU generator seeded with
     *     {@link PeftAdapters#DEFAULT_DARE_SEED})
     * @param density the fraction kept by the ties, magnitude_prune and dare types, or null
     */
    default void addWeightedAdapter(List<String> adapters, List<Double> weights, String adapterName,
            String combinationType, Double density) {
        peftAdapters().addWeightedAdapter(adapters, weights, adapterName, combinationType, null, null, density,
                "total");
    }

    /**
     * {@link #addWeightedAdapter(List, List, String, String, Double)} with the {@code dare_*} masks drawn from a
     * libtorch CPU generator seeded with {@code seed}: the same seed gives the same adapter (not the one PEFT gives
     * from that seed in Python: the random streams differ).
     *
     * @param adapters the LoRA adapters to combine
     * @param weights one weight per adapter (negative subtracts)
     * @param adapterName the new adapter's name (nothing happens when it exists)
     * @param combinationType as in {@link #addWeightedAdapter(List, List, String, String, Double)}
     * @param density the fraction kept by the ties, magnitude_prune and dare types, or null
     * @param seed the seed of the dare types' masks
     */
    default void addWeightedAdapter(List<String> adapters, List<Double> weights, String adapterName,
            String combinationType, Double density, long seed) {
        try (org.bytedeco.pytorch.Generator g = org.bytedeco.pytorch.global.torch.createCPUGenerator(seed)) {
            peftAdapters().addWeightedAdapter(adapters, weights, adapterName, combinationType, null, null, density,
                    "total", g);
        }
    }

    /**
     * Runs {@code forward} with one adapter name per batch row: PEFT's mixed-batch inference
     * ({@code forward(..., adapter_names=[...])}). The names hold for the calling thread, during the call only.
     *
     * @param adapterNames one name per row of the batch {@code forward} runs; {@code "__base__"} for no adapter
     * @param forward the model call, typically {@code () -> lm.forward(ids, mask, null, null)}
     * @param <T> what {@code forward} returns
     * @return what {@code forward} returned
     * @throws IllegalArgumentException a name is neither loaded nor {@code "__base__"}; PEFT's refusals of a
     *     mixed batch (merged adapters, a method without mixed-batch support) come from inside the call
     * @throws IllegalStateException no adapter is loaded
     */
    default <T> T withAdapterNames(List<String> adapterNames, Supplier<T> forward) {
        return peftAdapters().withAdapterNames(adapterNames, forward);
    }
}
