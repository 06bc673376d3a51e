/**
 * AdaLoRA ({@code peft/tuners/adalora}): {@link dev.peft4j.tuners.adalora.AdaLoraMath} — the SVD-form delta
 * {@code B·(A⊙E)·s/(ranknum+1e-5)}, forward, merge/unmerge, init and {@code rank_pattern} slicing. Rank allocation
 * during training ({@code RankAllocator}) is not here yet.
 */
package dev.peft4j.tuners.adalora;
