/**
 * The adapter API: transformers' {@code PeftAdapterMixin} on every model of {@code dev.peft4j.models}.
 *
 * <ul>
 *   <li>{@link dev.peft4j.PeftAdapterMixin} — {@code loadAdapter}, {@code addAdapter}, {@code setAdapter},
 *       {@code disableAdapters}/{@code enableAdapters}, {@code activeAdapters}, {@code getAdapterStateDict},
 *       {@code deleteAdapter}, {@code saveAdapter}, {@code mergeAdapter}/{@code unmergeAdapter}/{@code mergeAndUnload},
 *       per-row adapters ({@code withAdapterNames}); implemented by {@code PreTrainedModel} through its
 *       {@link dev.peft4j.PeftAdapters}, which checks names and state and hands the work to
 *       {@code tuners.BaseTuner} and the method's {@code TunerModel};</li>
 *   <li>{@link dev.peft4j.LoadAdapterOptions} — {@code load_adapter}'s keyword arguments;</li>
 *   <li>{@link dev.peft4j.AdapterLoadReport} — missing and unexpected keys of a load (warnings, as in transformers).</li>
 * </ul>
 *
 * Each method is a package: {@code tuners.lora} ({@code LoraModel}; {@code LoraLayer} for Linear/Conv1D,
 * {@code LoraEmbedding}), {@code tuners.ia3} ({@code IA3Model}, {@code Ia3Layer}), {@code tuners.adalora}
 * ({@code AdaLoraModel}, {@code SvdLinear}); what they share is in {@code tuners} ({@code BaseTuner},
 * {@code BaseTunerLayer}, {@code ModulesToSaveWrapper}, {@code AdapterStateDict}). In-memory keys are PEFT's
 * ({@code q_proj.lora_A.default.weight}); checkpoint keys are {@code base_model.model.…lora_A.weight}.
 */
package dev.peft4j;
