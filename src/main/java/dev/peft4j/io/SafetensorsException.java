package dev.peft4j.io;

import java.io.IOException;
import java.nio.file.Path;

/**
 * A safetensors file (or a sharded checkpoint's index) is malformed. The message names the file and,
 * where one is at fault, the tensor, followed by what is wrong with it.
 */
public final class SafetensorsException extends IOException {
    private static final long serialVersionUID = 1L;

    private final transient Path file;
    /** The tensor at fault, or null when the file as a whole is. */
    private final String tensor;

    SafetensorsException(Path file, String tensor, String problem) {
        super(format(file, tensor, problem));
        this.file = file;
        this.tensor = tensor;
    }

    SafetensorsException(Path file, String tensor, String problem, Throwable cause) {
        super(format(file, tensor, problem), cause);
        this.file = file;
        this.tensor = tensor;
    }

    /** The file at fault. */
    public Path file() {
        return file;
    }

    /** The tensor at fault, or {@code null} when the problem is not about one tensor. */
    public String tensor() {
        return tensor;
    }

    private static String format(Path file, String tensor, String problem) {
        return tensor == null ? file + ": " + problem : file + ": tensor \"" + tensor + "\": " + problem;
    }
}
