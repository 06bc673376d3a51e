/**
 * AdaLoRA ({@code peft/tuners/adalora}): {@link dev.peft4j.tuners.adalora.AdaLoraMath} — the SVD-form delta
 * {@code B·(A⊙E)·s/(ranknum+1e-5)}, forward, merge/unmerge, init, {@code rank_pattern} slicing and the orthogonal
 * regulariser — and {@link dev.peft4j.tuners.adalora.AdaLoraSchedule} (the rank budget over training). The
 * importance scores and E-masking of {@code RankAllocator.update_ipt}/{@code mask_to_budget} are not here yet.
 */
package dev.peft4j.tuners.adalora;
