package dev.peft4j.nn;

import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

/** {@code torch.nn.Embedding}: rows of weight {@code (num_embeddings, embedding_dim)} picked by integer ids. */
public final class Embedding extends Module implements Layer {
    private final long numEmbeddings;
    private final long embeddingDim;

    /** A table of {@code numEmbeddings} rows of {@code embeddingDim}, its weight made by {@code init}. */
    public Embedding(long numEmbeddings, long embeddingDim, Init init) {
        this.numEmbeddings = numEmbeddings;
        this.embeddingDim = embeddingDim;
        registerParameter("weight", init.empty(numEmbeddings, embeddingDim), true);
    }

    /** The number of rows (the vocabulary size). */
    public long numEmbeddings() {
        return numEmbeddings;
    }

    /** The width of each row. */
    public long embeddingDim() {
        return embeddingDim;
    }

    /** The current weight, {@code (num_embeddings, embedding_dim)}; owned by this module, do not close it. */
    public Tensor weight() {
        return param("weight");
    }

    /** Embeds {@code ids} (int64, any shape) into {@code ids.shape + [embedding_dim]}. */
    @Override
    public Tensor forward(Tensor ids) {
        Tensor w = param("weight");
        if (w.is_meta()) {
            long[] shape = java.util.Arrays.copyOf(ids.shape(), (int) ids.dim() + 1);
            shape[shape.length - 1] = w.size(1);
            return DeviceOps.indexSelect(w, 0, ids.reshape(-1)).view(shape);
        }
        return torch.embedding(w, ids);
    }
}
