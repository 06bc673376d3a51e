package dev.peft4j;

import java.util.List;

/**
 * What a {@code load_adapter} did not match: checkpoint keys no module of the model takes (unexpected) and adapter
 * parameters the checkpoint did not provide (missing, in model naming with the adapter name, left at their
 * initial values). Both are also logged as transformers' warnings; neither is an error.
 */
public record AdapterLoadReport(List<String> missingKeys, List<String> unexpectedKeys) {
    /**
     * Copies both lists; they are unmodifiable.
     * @throws NullPointerException if a list or one of its keys is null
     */
    public AdapterLoadReport {
        missingKeys = List.copyOf(missingKeys);
        unexpectedKeys = List.copyOf(unexpectedKeys);
    }
}
