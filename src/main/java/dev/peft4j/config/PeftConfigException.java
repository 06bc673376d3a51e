package dev.peft4j.config;

import dev.peft4j.errors.Peft4jException;

/**
 * An {@code adapter_config.json} (or a config being built) that PEFT would refuse, or peft4j cannot use. The message
 * names the source, the key and the value at fault. PEFT raises a {@code ValueError} for these.
 */
public class PeftConfigException extends Peft4jException {
    private static final long serialVersionUID = 1L;

    /** @param message the source, key and value at fault, and what they must be */
    public PeftConfigException(String message) {
        super(message);
    }

    /**
     * @param message the source, key and value at fault, and what they must be
     * @param cause the underlying failure (a JSON syntax error, say)
     */
    public PeftConfigException(String message, Throwable cause) {
        super(message, cause);
    }
}
