/**
 * What PEFT's {@code peft/tuners/tuners_utils.py} and {@code peft/utils/{other,save_and_load}.py} do for every
 * method:
 *
 * <ul>
 *   <li>{@link dev.peft4j.tuners.BaseTuner}: PEFT's {@code BaseTuner} for one model — the tuner layers in it,
 *       injection of a {@link dev.peft4j.tuners.PendingAdapter}, the activation, deletion and merge loops;
 *   <li>{@link dev.peft4j.tuners.TunerModel}: a method's part ({@code LoraModel}, {@code IA3Model},
 *       {@code AdaLoraModel} in the method packages), which makes {@link dev.peft4j.tuners.PendingLayer}s;
 *   <li>{@link dev.peft4j.tuners.BaseTunerLayer}: the base of every tuner layer, and the mixed-batch context
 *       ({@code withAdapterNames}); {@link dev.peft4j.tuners.ModulesToSaveWrapper};
 *   <li>{@link dev.peft4j.tuners.AdapterStateDict}: a checkpoint loaded onto a pending adapter, an adapter's state
 *       dict as saved;
 *   <li>{@link dev.peft4j.tuners.TargetMatcher}: which modules an adapter wraps ({@code check_target_module_exists},
 *       {@code all-linear}, {@code exclude_modules}, layer filters, target-list condensation, PEFT's "nothing
 *       matched" errors);
 *   <li>{@link dev.peft4j.tuners.PatternKeys}: per-module rank/alpha ({@code rank_pattern}, {@code alpha_pattern});
 *   <li>{@link dev.peft4j.tuners.AdapterKeys}: state-dict key names in memory and in checkpoints, both ways, for
 *       PEFT's and transformers' loaders of every version that matters;
 *   <li>{@link dev.peft4j.config.PyRegex}: Python {@code re} patterns from configs, compiled for Java.
 * </ul>
 *
 * The per-method math lives in {@code tuners.lora}, {@code tuners.ia3} and {@code tuners.adalora}, as in PEFT.
 */
package dev.peft4j.tuners;
