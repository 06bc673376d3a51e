package dev.peft4j;

import dev.peft4j.config.PeftConfig;
import java.nio.file.Path;
import java.util.Map;
import org.bytedeco.pytorch.Tensor;

/**
 * The keyword arguments of transformers' {@code load_adapter} (v4.46 signature plus v5's {@code is_trainable}
 * semantics). Build with {@link #builder()}; {@link #DEFAULTS} is every argument at its default.
 *
 * <p>A repo id instead of a folder is fetched from the Hub into the local Hugging Face cache at {@code revision}
 * (default {@code "main"}; {@link dev.peft4j.io.HubDownload}: {@code HF_ENDPOINT}, {@code token} else {@code HF_TOKEN}
 * else {@code HUGGING_FACE_HUB_TOKEN} else the login token file {@code HF_TOKEN_PATH}), or read from that cache alone when offline ({@code HF_HUB_OFFLINE}) or the Hub is
 * unreachable. {@code adapterKwargs} may carry transformers' {@code cache_dir}, {@code subfolder} (a folder inside
 * the adapter folder or repo), {@code local_files_only} (the cache alone) and {@code force_download} (files fetched
 * again even when cached; an error offline or when the Hub cannot be reached, as in huggingface_hub).
 * {@code adapterKwargs} may also carry {@code revision} and {@code token}, used as transformers v4 uses them: a
 * {@code revision} there wins over the {@code revision} argument (transformers' error log when both are given and
 * differ), a {@code token} there replaces the {@code token} argument; {@code device} is checked as a device (see
 * below). Other {@code adapterKwargs} keys, such as {@code proxies}, are refused rather than ignored.
 *
 * <p>Every adapter tensor is placed beside the weight it adapts, on that weight's device, as PEFT places it.
 * {@code deviceMap} may be {@code "auto"} (the default), accelerate's strategies {@code "balanced"},
 * {@code "balanced_low_0"}, {@code "sequential"}, a device ({@code "cpu"}, {@code "cuda"}, {@code "cuda:N"},
 * {@code "meta"}; see {@link dev.peft4j.nn.Devices}) or a map of module names to devices; each device is checked, and
 * a CUDA device the loaded libtorch does not see is refused with an error naming the argument. {@code maxMemory}'s
 * {@code "cpu"} entry (bytes as a number, or a size such as {@code "2GiB"}) bounds the adapter's bytes: a load over
 * it is refused; other devices' entries are checked. A {@code "disk"} entry in a map offloads the adapter's tensors
 * inside that module (transformers re-dispatching the model through accelerate): they are written to
 * {@code offloadFolder/adapter-<name>.safetensors} and become copy-on-write views of its mapping (same values, pages
 * read on demand and evictable); the file must stay while the adapter is loaded. {@code "disk"} needs
 * {@code offloadFolder}, and {@code offloadFolder} without a {@code "disk"} entry is refused (nothing would be
 * offloaded), as are {@code "disk"} with hotswap and {@code offloadIndex} (accelerate's index of weights already
 * offloaded as {@code .dat} files, which peft4j does not read).
 * {@code lowCpuMemUsage} is accepted and unused, as in transformers v5.
 *
 * <p>{@code hotswap}: null is transformers' {@code "auto"} (swap in place when
 * {@link PeftAdapterMixin#enablePeftHotswap} was called and an adapter of that name is loaded), true swaps the loaded
 * adapter of that name in place, false never swaps.
 */
public record LoadAdapterOptions(String adapterName, String revision, String token, Object deviceMap,
        Map<String, Object> maxMemory, Path offloadFolder, Path offloadIndex, PeftConfig peftConfig,
        Map<String, Tensor> adapterStateDict, boolean lowCpuMemUsage, boolean isTrainable,
        Map<String, Object> adapterKwargs, Boolean hotswap) {

    /**
     * Every argument at transformers' default: adapter name {@code "default"} when loaded,
     * {@code deviceMap} {@code "auto"}, the rest null or false.
     */
    public static final LoadAdapterOptions DEFAULTS = builder().build();

    /** A builder with every argument at its default ({@link #DEFAULTS}). */
    public static Builder builder() {
        return new Builder();
    }

    /** Shorthand for the options with only {@code adapterName} set. */
    public static LoadAdapterOptions named(String adapterName) {
        return builder().adapterName(adapterName).build();
    }

    /**
     * Builds {@link LoadAdapterOptions}; each setter names the transformers argument it stands for. Not thread-safe.
     */
    public static final class Builder {
        private String adapterName;
        private String revision;
        private String token;
        private Object deviceMap = "auto";
        private Map<String, Object> maxMemory;
        private Path offloadFolder;
        private Path offloadIndex;
        private PeftConfig peftConfig;
        private Map<String, Tensor> adapterStateDict;
        private boolean lowCpuMemUsage;
        private boolean isTrainable;
        private Map<String, Object> adapterKwargs;
        private Boolean hotswap;

        /** {@code adapter_name}; null means {@code "default"}. */
        public Builder adapterName(String v) {
            adapterName = v;
            return this;
        }

        /** {@code revision}: the Hub branch, tag or commit to fetch; null means {@code "main"}. */
        public Builder revision(String v) {
            revision = v;
            return this;
        }

        /**
         * {@code token}: the Hub access token; null falls back to {@code HF_TOKEN}, {@code HUGGING_FACE_HUB_TOKEN},
         * then the login token file.
         */
        public Builder token(String v) {
            token = v;
            return this;
        }

        /** {@code device_map}: {@code "auto"} (the default), a strategy, a device or a map onto devices; see the class. */
        public Builder deviceMap(Object v) {
            deviceMap = v;
            return this;
        }

        /** {@code max_memory}: null, or per-device limits; the {@code "cpu"} one bounds the adapter's tensors. */
        public Builder maxMemory(Map<String, Object> v) {
            maxMemory = v;
            return this;
        }

        /** {@code offload_folder}: where the adapter's tensors in {@code "disk"} modules of the device map go. */
        public Builder offloadFolder(Path v) {
            offloadFolder = v;
            return this;
        }

        /** {@code offload_index}: must be null (accelerate's index of {@code .dat} files is not read). */
        public Builder offloadIndex(Path v) {
            offloadIndex = v;
            return this;
        }

        /**
         * {@code peft_config}: the config to use instead of the folder's {@code adapter_config.json}; with no folder,
         * the config of {@link #adapterStateDict}.
         */
        public Builder peftConfig(PeftConfig v) {
            peftConfig = v;
            return this;
        }

        /** Checkpoint-keyed tensors ({@code base_model.model.} prefix optional); copied, the caller keeps them. */
        public Builder adapterStateDict(Map<String, Tensor> v) {
            adapterStateDict = v;
            return this;
        }

        /** {@code low_cpu_mem_usage}: accepted and unused, as in transformers v5. */
        public Builder lowCpuMemUsage(boolean v) {
            lowCpuMemUsage = v;
            return this;
        }

        /**
         * {@code is_trainable}: load the adapter trainable ({@code inference_mode} false); false, the default, loads it
         * frozen.
         */
        public Builder isTrainable(boolean v) {
            isTrainable = v;
            return this;
        }

        /**
         * {@code adapter_kwargs}: {@code cache_dir}, {@code subfolder}, {@code local_files_only},
         * {@code force_download}, {@code revision}, {@code token}, {@code device} (see the class comment) and
         * {@code key_mapping}.
         */
        public Builder adapterKwargs(Map<String, Object> v) {
            adapterKwargs = v;
            return this;
        }

        /**
         * {@code hotswap}: null for transformers' {@code "auto"}, true to replace the loaded adapter of the same name
         * in place, false to load beside it (an error when the name is taken).
         */
        public Builder hotswap(Boolean v) {
            hotswap = v;
            return this;
        }

        /** The options as set; the builder can be reused. */
        public LoadAdapterOptions build() {
            return new LoadAdapterOptions(adapterName, revision, token, deviceMap, maxMemory, offloadFolder,
                    offloadIndex, peftConfig, adapterStateDict, lowCpuMemUsage, isTrainable, adapterKwargs, hotswap);
        }
    }
}
