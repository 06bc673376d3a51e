/**
 * AdaLoRA ({@code peft/tuners/adalora}): {@link dev.peft4j.tuners.adalora.AdaLoraModel} (which modules get an
 * adapter, with which new triplets; {@code rank_pattern} on load and save), the layer
 * {@link dev.peft4j.tuners.adalora.SvdLinear}, {@link dev.peft4j.tuners.adalora.AdaLoraMath} — the SVD-form delta
 * {@code B·(A⊙E)·s/(ranknum+1e-5)}, forward, merge/unmerge, init, {@code rank_pattern} slicing and the orthogonal
 * regulariser — {@link dev.peft4j.tuners.adalora.AdaLoraSchedule} (the rank budget over training) and
 * {@link dev.peft4j.tuners.adalora.AdaLoraRankAllocator} (importance scores and E-masking).
 */
package dev.peft4j.tuners.adalora;
