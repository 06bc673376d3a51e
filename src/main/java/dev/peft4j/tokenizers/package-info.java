/**
 * Text to token ids and back, from a model folder's {@code tokenizer.json}: {@link dev.peft4j.tokenizers.Tokenizer},
 * a thin wrapper over Hugging Face's Rust {@code tokenizers} (through DJL), with the ids of Python's fast tokenizers.
 * Optional: models run on token ids alone. Malformed files raise {@link dev.peft4j.tokenizers.TokenizerException}
 * naming the file.
 */
package dev.peft4j.tokenizers;
