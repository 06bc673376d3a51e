package dev.peft4j.tuners;

import dev.peft4j.errors.Peft4jException;

/**
 * No module of the model was selected for adaptation: PEFT's {@code NoMatchingPeftModuleError} (a
 * {@code ValueError}), raised by {@code inject_adapter} with the same messages.
 */
public class NoMatchingModuleException extends Peft4jException {
    private static final long serialVersionUID = 1L;

    /** @param message PEFT's message: which of target_modules, exclude_modules and the layers matched nothing */
    public NoMatchingModuleException(String message) {
        super(message);
    }
}
