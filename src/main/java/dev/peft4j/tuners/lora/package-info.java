/**
 * LoRA ({@code peft/tuners/lora}): {@link dev.peft4j.tuners.lora.LoraModel} (which modules get an adapter, with
 * which new tensors), the layers {@link dev.peft4j.tuners.lora.LoraLayer} (Linear, Conv1D) and
 * {@link dev.peft4j.tuners.lora.LoraEmbedding}, {@link dev.peft4j.tuners.lora.LoraMath} — forward, mixed-batch forward,
 * Embedding, merge/unmerge and dtype rules as composed libtorch ops (the autograd path and the fused kernels'
 * reference) — and {@link dev.peft4j.tuners.lora.LoraInit} ({@code init_lora_weights}).
 */
package dev.peft4j.tuners.lora;
