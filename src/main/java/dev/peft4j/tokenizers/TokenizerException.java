package dev.peft4j.tokenizers;

import java.io.IOException;
import java.nio.file.Path;

/** A {@code tokenizer.json} is malformed. The message names the file, then says what is wrong with it. */
public final class TokenizerException extends IOException {
    private static final long serialVersionUID = 1L;

    private final transient Path file;

    TokenizerException(Path file, String problem, Throwable cause) {
        super(file + ": " + problem, cause);
        this.file = file;
    }

    /** The file at fault. */
    public Path file() {
        return file;
    }
}
