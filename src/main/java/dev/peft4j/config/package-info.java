/**
 * Adapter configs: {@code adapter_config.json} as typed, immutable {@link dev.peft4j.config.LoraConfig},
 * {@link dev.peft4j.config.IA3Config} and {@link dev.peft4j.config.AdaLoraConfig}, read and written by
 * {@link dev.peft4j.config.PeftConfigs} exactly as Hugging Face PEFT reads and writes them.
 */
package dev.peft4j.config;
