package dev.peft4j.config;

import java.util.List;

/**
 * {@code layers_to_transform}: one layer index (a JSON int) or a list of them. Written back in the form it was read.
 */
public sealed interface LayerIndices permits LayerIndices.Single, LayerIndices.Listed {

    /** Whether layer {@code index} is selected. */
    boolean includes(int index);

    /** Whether PEFT applies the layer filter at all: an int always, a list only when non-empty (§4.1 step 7). */
    boolean filters();

    /** A single index, {@code "layers_to_transform": 3}. */
    record Single(int index) implements LayerIndices {
        @Override
        public boolean includes(int i) {
            return i == index;
        }

        @Override
        public boolean filters() {
            return true;
        }
    }

    /** A list of indices, {@code "layers_to_transform": [0, 1]}. */
    record Listed(List<Integer> indices) implements LayerIndices {
        /**
         * Copies the list.
         * @throws NullPointerException if the list or an index is null
         */
        public Listed {
            indices = List.copyOf(indices);
        }

        @Override
        public boolean includes(int i) {
            return indices.contains(i);
        }

        @Override
        public boolean filters() {
            return !indices.isEmpty();
        }
    }

    /** One index. */
    static LayerIndices of(int index) {
        return new Single(index);
    }

    /** A list of indices. */
    static LayerIndices of(List<Integer> indices) {
        return new Listed(indices);
    }
}
