package dev.peft4j.config;

/**
 * An {@code adapter_config.json} (or a config being built) that PEFT would refuse, or peft4j cannot use. The message
 * names the source, the key and the value at fault.
 */
public class PeftConfigException extends IllegalArgumentException {
    private static final long serialVersionUID = 1L;

    public PeftConfigException(String message) {
        super(message);
    }

    public PeftConfigException(String message, Throwable cause) {
        super(message, cause);
    }
}
