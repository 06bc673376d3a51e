/**
 * Serving many LoRA adapters of one causal LM to many concurrent requests: {@link dev.peft4j.serve.ServingEngine}
 * (continuous batching over a preallocated {@link dev.peft4j.models.SlotKVCache}, mixed-adapter decode batches, an
 * LRU cache of resident adapters) and {@link dev.peft4j.serve.CompletionsServer} (OpenAI-compatible completions over
 * HTTP, {@code peft4j serve}).
 */
package dev.peft4j.serve;
