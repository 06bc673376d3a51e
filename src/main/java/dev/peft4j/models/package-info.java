/**
 * transformers architectures on the {@link dev.peft4j.nn} module tree, loaded from Hugging Face folders.
 *
 * <p>{@link dev.peft4j.models.AutoModel#fromPretrained(java.nio.file.Path)} reads {@code config.json}, builds the
 * class {@code architectures} names — {@link dev.peft4j.models.LlamaForCausalLM} (also Mistral, Qwen2),
 * {@link dev.peft4j.models.GPT2LMHeadModel}, {@link dev.peft4j.models.OPTForCausalLM}, {@link
 * dev.peft4j.models.BertModel}, {@link dev.peft4j.models.BertForMaskedLM}, {@link
 * dev.peft4j.models.BertForSequenceClassification} and the bare base models — on the meta device, then fills it from
 * {@code model.safetensors}, a sharded index or {@code pytorch_model.bin}. Decoders implement
 * {@link dev.peft4j.models.CausalLM} (batched forward with attention mask, position ids and
 * {@link dev.peft4j.models.KVCache}); {@link dev.peft4j.models.Generation} decodes greedily or by seeded sampling.
 *
 * <p>Every forward runs in its own {@link org.bytedeco.javacpp.PointerScope}: temporaries are freed when it returns,
 * and the returned tensor goes to the caller's innermost scope (or to the caller, to close, when there is none).
 * Concurrent use of one model is untested: serialise forwards on a model, and never replace submodules or load
 * weights while a forward runs.
 */
package dev.peft4j.models;
