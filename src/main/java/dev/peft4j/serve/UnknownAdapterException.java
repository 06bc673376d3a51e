package dev.peft4j.serve;

/** A request or call named an adapter that is not registered with the engine. */
public final class UnknownAdapterException extends IllegalArgumentException {
    private static final long serialVersionUID = 1L;
    private final String adapter;

    UnknownAdapterException(String adapter, String message) {
        super(message);
        this.adapter = adapter;
    }

    /** The name asked for. */
    public String adapter() {
        return adapter;
    }
}
