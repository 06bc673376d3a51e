package dev.peft4j.tuners;

/**
 * No module of the model was selected for adaptation: PEFT's {@code NoMatchingPeftModuleError} (a
 * {@code ValueError}), raised by {@code inject_adapter} with the same messages.
 */
public class NoMatchingModuleException extends IllegalArgumentException {
    private static final long serialVersionUID = 1L;

    public NoMatchingModuleException(String message) {
        super(message);
    }
}
