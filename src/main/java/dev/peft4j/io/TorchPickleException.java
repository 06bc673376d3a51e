package dev.peft4j.io;

import java.io.IOException;

/**
 * A {@code torch.save} file was refused: it is corrupt, truncated, of a format not supported, or it
 * asks for a Python global outside the weights-only allow-list. The message names the file and the
 * entry, opcode, global, key or value at fault.
 */
public final class TorchPickleException extends IOException {
    private static final long serialVersionUID = 1L;

    /** A refusal described by {@code message} (which names the file). */
    public TorchPickleException(String message) {
        super(message);
    }

    /** A refusal described by {@code message} (which names the file), caused by {@code cause}. */
    public TorchPickleException(String message, Throwable cause) {
        super(message, cause);
    }
}
