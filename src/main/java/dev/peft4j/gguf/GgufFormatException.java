package dev.peft4j.gguf;

import java.io.IOException;
import java.nio.file.Path;

/** A GGUF file that breaks the format (ggml's {@code docs/gguf.md}); the message names the file and what is wrong. */
public final class GgufFormatException extends IOException {
    private static final long serialVersionUID = 1L;

    private final transient Path file;

    GgufFormatException(Path file, String problem) {
        super(file + ": malformed GGUF: " + problem);
        this.file = file;
    }

    /** The file at fault. */
    public Path file() {
        return file;
    }
}
