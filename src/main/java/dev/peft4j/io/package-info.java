/**
 * Checkpoint files: safetensors read by memory-mapping ({@link dev.peft4j.io.SafetensorsFile}, zero-copy
 * libtorch tensors, every header checked), written atomically in the byte layout of Python's
 * {@code safetensors}, and sharded checkpoints through {@code model.safetensors.index.json}
 * ({@link dev.peft4j.io.ShardedCheckpoint}). Malformed input raises
 * {@link dev.peft4j.io.SafetensorsException} naming the file and tensor. Adapter folders are replaced as a whole
 * ({@link dev.peft4j.io.AtomicFolder}), so a crash leaves the old adapter or the new one, never a mix.
 */
package dev.peft4j.io;
