package dev.peft4j.nn;

/** {@code torch.nn.ModuleList}: children named {@code 0}, {@code 1}, ... */
public final class ModuleList<M extends Module> extends Module {
    private int size;

    /** Appends {@code module} as child {@code size()}; returns it. */
    public M add(M module) {
        return registerModule(Integer.toString(size++), module);
    }

    /** The number of children added. */
    public int size() {
        return size;
    }

    /** Child {@code i} (the current one: an adapter may have replaced it). */
    @SuppressWarnings("unchecked")
    public M get(int i) {
        return (M) child(Integer.toString(i));
    }
}
