/**
 * The adapter API: transformers' {@code PeftAdapterMixin} on every model of {@code dev.peft4j.models}.
 *
 * <ul>
 *   <li>{@link dev.peft4j.PeftAdapterMixin} — {@code loadAdapter}, {@code addAdapter}, {@code setAdapter},
 *       {@code disableAdapters}/{@code enableAdapters}, {@code activeAdapters}, {@code getAdapterStateDict},
 *       {@code deleteAdapter}, {@code saveAdapter}, {@code mergeAdapter}/{@code unmergeAdapter}/{@code mergeAndUnload},
 *       per-row adapters ({@code withAdapterNames}); implemented by {@code PreTrainedModel} through its
 *       {@link dev.peft4j.PeftAdapters};</li>
 *   <li>{@link dev.peft4j.LoadAdapterOptions} — {@code load_adapter}'s keyword arguments;</li>
 *   <li>{@link dev.peft4j.AdapterLoadReport} — missing and unexpected keys of a load (warnings, as in transformers).</li>
 * </ul>
 *
 * Tuner layers live in {@code tuners.lora} ({@code LoraLayer} for Linear/Conv1D, {@code LoraEmbedding}),
 * {@code tuners.ia3} ({@code Ia3Layer}), {@code tuners.adalora} ({@code SvdLinear}) and {@code tuners}
 * ({@code BaseTunerLayer}, {@code ModulesToSaveWrapper}). In-memory keys are PEFT's
 * ({@code q_proj.lora_A.default.weight}); checkpoint keys are {@code base_model.model.…lora_A.weight}.
 */
package dev.peft4j;
