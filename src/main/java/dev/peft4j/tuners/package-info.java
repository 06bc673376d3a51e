/**
 * What PEFT's {@code peft/tuners/tuners_utils.py} and {@code peft/utils/{other,save_and_load}.py} do for every
 * method, as plain Java on plain inputs (strings, lists, maps):
 *
 * <ul>
 *   <li>{@link dev.peft4j.tuners.TargetMatcher}: which modules an adapter wraps ({@code check_target_module_exists},
 *       {@code all-linear}, {@code exclude_modules}, layer filters, target-list condensation, PEFT's "nothing
 *       matched" errors);
 *   <li>{@link dev.peft4j.tuners.PatternKeys}: per-module rank/alpha ({@code rank_pattern}, {@code alpha_pattern});
 *   <li>{@link dev.peft4j.tuners.AdapterKeys}: state-dict key names in memory and in checkpoints, both ways, for
 *       PEFT's and transformers' loaders of every version that matters;
 *   <li>{@link dev.peft4j.tuners.PyRegex}: Python {@code re} patterns from configs, compiled for Java.
 * </ul>
 *
 * The per-method math lives in {@code tuners.lora}, {@code tuners.ia3} and {@code tuners.adalora}, as in PEFT.
 */
package dev.peft4j.tuners;
