/**
 * A module tree named the way Hugging Face names it, for adapters to live in.
 *
 * <p>{@link dev.peft4j.nn.Module} is a plain Java class (not libtorch's {@code torch::nn::Module}): children,
 * parameters and buffers under HF's local names, so that dotted paths ({@code model.layers.0.self_attn.q_proj}) and
 * state-dict keys ({@code ….q_proj.weight}) are exactly transformers'. What an adapter injector uses:
 * <ul>
 *   <li>{@link dev.peft4j.nn.Module#namedModules()} — every module under its dotted name, to match
 *       {@code target_modules} against;</li>
 *   <li>{@link dev.peft4j.nn.Module#getSubmodule(String)} and {@link dev.peft4j.nn.Module#replaceSubmodule(String,
 *       dev.peft4j.nn.Module)} — swap a {@link dev.peft4j.nn.Linear}, {@link dev.peft4j.nn.Conv1D} or
 *       {@link dev.peft4j.nn.Embedding} for a wrapper implementing {@link dev.peft4j.nn.Layer} that keeps the
 *       original as its child {@code base_layer}; parents look children up by name at every forward, so the wrapper
 *       is used from the next call on;</li>
 *   <li>{@link dev.peft4j.nn.Module#namedParameters()}, {@link dev.peft4j.nn.Module#stateDict()},
 *       {@link dev.peft4j.nn.Module#loadStateDict(java.util.Map)}, {@link dev.peft4j.nn.Module#setParameter} — state
 *       under HF keys (a wrapper's own parameters appear as {@code ….q_proj.lora_A.default.weight});</li>
 *   <li>{@link dev.peft4j.nn.Module#train(boolean)}, {@link dev.peft4j.nn.Module#to} and
 *       {@link dev.peft4j.nn.Module#close()}.</li>
 * </ul>
 * A wrapper is written as a subclass of {@code Module} that registers its children and parameters with
 * {@code registerModule} / {@code registerParameter} and implements {@code Layer.forward}.
 */
package dev.peft4j.nn;
