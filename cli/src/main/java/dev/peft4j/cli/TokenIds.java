package dev.peft4j.cli;

import java.util.ArrayList;
import java.util.List;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/** Token ids on the command line: rows separated by {@code ;}, ids by {@code ,} ({@code "1,2,3;4,5,6"}). */
final class TokenIds {
    private TokenIds() {}

    /** The rows of {@code text}; every id a non-negative integer, every row non-empty. */
    static long[][] parse(String text) {
        if (text == null || text.isBlank()) {
            throw new IllegalArgumentException("no token ids given");
        }
        String[] rows = text.split(";", -1);
        long[][] out = new long[rows.length][];
        for (int r = 0; r < rows.length; r++) {
            String row = rows[r].strip();
            if (row.isEmpty()) {
                throw new IllegalArgumentException("row " + r + " of the token ids is empty");
            }
            String[] parts = row.split(",", -1);
            out[r] = new long[parts.length];
            for (int i = 0; i < parts.length; i++) {
                String p = parts[i].strip();
                try {
                    out[r][i] = Long.parseLong(p);
                } catch (NumberFormatException e) {
                    throw new IllegalArgumentException("token id '" + p + "' (row " + r + ", position " + i
                            + ") is not an integer");
                }
                if (out[r][i] < 0) {
                    throw new IllegalArgumentException("token id " + out[r][i] + " (row " + r + ", position " + i
                            + ") is negative");
                }
            }
        }
        return out;
    }

    /** Checks every id is below {@code vocabSize}. */
    static void checkVocab(long[][] rows, long vocabSize) {
        for (int r = 0; r < rows.length; r++) {
            for (int i = 0; i < rows[r].length; i++) {
                if (rows[r][i] >= vocabSize) {
                    throw new IllegalArgumentException("token id " + rows[r][i] + " (row " + r + ", position " + i
                            + ") is out of the model's vocabulary (vocab_size " + vocabSize + ")");
                }
            }
        }
    }

    /** The rows as an int64 tensor {@code [rows, len]}; all rows must have the same length. */
    static Tensor rectangular(long[][] rows) {
        int len = rows[0].length;
        long[] flat = new long[rows.length * len];
        for (int r = 0; r < rows.length; r++) {
            if (rows[r].length != len) {
                throw new IllegalArgumentException("all rows need the same length: row 0 has " + len + " ids, row "
                        + r + " has " + rows[r].length);
            }
            System.arraycopy(rows[r], 0, flat, r * len, len);
        }
        return longs(flat, rows.length, len);
    }

    /**
     * The rows left-padded with {@code pad} to the longest one, as {@code [ids, attentionMask]} int64 tensors
     * (mask 0 over the padding), the layout {@code generate} takes for a batch.
     */
    static Tensor[] leftPadded(long[][] rows, long pad) {
        int len = 0;
        for (long[] row : rows) {
            len = Math.max(len, row.length);
        }
        long[] ids = new long[rows.length * len];
        long[] mask = new long[rows.length * len];
        for (int r = 0; r < rows.length; r++) {
            int off = len - rows[r].length;
            for (int i = 0; i < len; i++) {
                ids[r * len + i] = i < off ? pad : rows[r][i - off];
                mask[r * len + i] = i < off ? 0 : 1;
            }
        }
        return new Tensor[] {longs(ids, rows.length, len), longs(mask, rows.length, len)};
    }

    /** An int64 tensor {@code [rows, cols]} holding {@code flat}. */
    static Tensor longs(long[] flat, long rows, long cols) {
        try (TensorOptions o = new TensorOptions(ScalarType.Long)) {
            Tensor t = torch.zeros(new long[] {rows, cols}, o);
            t.data_ptr_long().capacity(flat.length).put(flat);
            return t;
        }
    }

    /** Row {@code r} of an int64 {@code [rows, cols]} tensor. */
    static long[] row(Tensor ids, int r) {
        Tensor x = ids.select(0, r).contiguous();
        long[] out = new long[(int) x.numel()];
        x.data_ptr_long().capacity(out.length).get(out);
        return out;
    }

    /** {@code 1,2,3} for a row. */
    static String join(long[] row) {
        List<String> s = new ArrayList<>(row.length);
        for (long v : row) {
            s.add(Long.toString(v));
        }
        return String.join(",", s);
    }
}
