package dev.peft4j.errors;

/**
 * The root of the exceptions peft4j defines for errors of its own domain: an adapter config PEFT would refuse
 * ({@link dev.peft4j.config.PeftConfigException}), a config that selects no module of the model
 * ({@link dev.peft4j.tuners.NoMatchingModuleException}). Catch it to handle any of them in one place.
 *
 * <p>Unchecked, as Python PEFT's {@code ValueError}s are: these errors come from what a caller passed (a config,
 * a model), and a caller that knows its input is valid should not have to write a handler for them.
 *
 * <p>Three kinds of failure are deliberately <em>not</em> under this root:
 * <ul>
 *   <li>Malformed files: {@link dev.peft4j.io.SafetensorsException}, {@link dev.peft4j.io.TorchPickleException}
 *       and {@link dev.peft4j.tokenizers.TokenizerException} stay checked {@link java.io.IOException}s. They are
 *       thrown by the same calls that read the file and can fail with a missing or unreadable one
 *       ({@code NoSuchFileException}, {@code AccessDeniedException}); a damaged file is the same kind of
 *       trouble for the caller, outside the program's control, and one {@code catch (IOException e)} handles
 *       both. An unchecked root cannot have checked subclasses, so they extend {@code IOException} instead.</li>
 *   <li>Misuse of the API, as the JDK reports it: {@link IllegalArgumentException} for a bad argument (an
 *       unknown adapter name, with transformers' message), {@link IllegalStateException} for a call in the
 *       wrong state (no adapter loaded), {@link UnsupportedOperationException} for a PEFT feature peft4j
 *       refuses.</li>
 *   <li>Errors libtorch raises ({@code RuntimeException}s of the presets, with libtorch's message).</li>
 * </ul>
 */
public class Peft4jException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    /** @param message what went wrong, naming the file, key, shape or value at fault */
    public Peft4jException(String message) {
        super(message);
    }

    /**
     * @param message what went wrong, naming the file, key, shape or value at fault
     * @param cause the underlying failure
     */
    public Peft4jException(String message, Throwable cause) {
        super(message, cause);
    }
}
