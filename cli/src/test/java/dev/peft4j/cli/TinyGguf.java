package dev.peft4j.cli;

import dev.peft4j.gguf.GgufFile;
import dev.peft4j.kernels.Quantization;
import dev.peft4j.kernels.QuantizedWeight;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.ShortPointer;
import org.bytedeco.pytorch.Tensor;

/**
 * Test fixture: a Q8_0 copy of a float32 GGUF model file, written byte by byte as ggml's {@code docs/gguf.md} lays out
 * version 3 (the project's writer is package-private). The blocks' projections whose input width is a multiple of 32
 * become Q8_0 blocks (peft4j's quantizer, whose values and scales are ggml's: scale as fp16, then 32 int8 values);
 * every other tensor is copied as it is.
 */
final class TinyGguf {
    private TinyGguf() {}

    private static final int ALIGN = 32;
    private static final int F32 = 0;
    private static final int Q8_0 = 8;

    static Path q8(Path f32, Path out) throws IOException {
        List<String> names = new ArrayList<>();
        List<byte[]> data = new ArrayList<>();
        List<Integer> types = new ArrayList<>();
        List<long[]> dims = new ArrayList<>();
        ByteBuffer meta = le(1 << 16);
        int kvs;
        try (GgufFile g = GgufFile.open(f32)) {
            kvs = g.metadata().size();
            for (Map.Entry<String, Object> e : g.metadata().entrySet()) {
                putString(meta, e.getKey());
                int vt = g.valueType(e.getKey());
                meta.putInt(vt);
                switch (vt) {
                    case 8 -> putString(meta, (String) e.getValue());
                    case 4 -> meta.putInt((int) (long) (Long) e.getValue());
                    case 6 -> meta.putFloat((Float) e.getValue());
                    default -> throw new IllegalStateException(e.getKey() + ": value type " + vt);
                }
            }
            for (GgufFile.TensorInfo t : g.tensors().values()) {
                boolean linear = t.name().startsWith("blk.") && !t.name().endsWith("_norm.weight")
                        && t.dims()[0] % QuantizedWeight.BLOCK == 0;
                try (Tensor v = g.get(t.name())) {
                    data.add(linear ? q8Blocks(v) : raw(v));
                }
                names.add(t.name());
                types.add(linear ? Q8_0 : F32);
                dims.add(t.dims());
            }
        }
        ByteBuffer infos = le(1 << 16);
        long offset = 0;
        for (int i = 0; i < names.size(); i++) {
            putString(infos, names.get(i));
            infos.putInt(dims.get(i).length);
            for (long d : dims.get(i)) {
                infos.putLong(d);
            }
            infos.putInt(types.get(i));
            infos.putLong(offset);
            offset = align(offset + data.get(i).length);
        }
        ByteArrayOutputStream file = new ByteArrayOutputStream();
        ByteBuffer head = le(24);
        head.put("GGUF".getBytes(StandardCharsets.US_ASCII)).putInt(3).putLong(names.size()).putLong(kvs);
        file.write(head.array(), 0, head.position());
        file.write(meta.array(), 0, meta.position());
        file.write(infos.array(), 0, infos.position());
        pad(file);
        for (byte[] d : data) {
            file.write(d);
            pad(file);
        }
        Files.write(out, file.toByteArray());
        return out;
    }

    private static byte[] q8Blocks(Tensor w) {
        QuantizedWeight qw = QuantizedWeight.quantize(w.contiguous(), Quantization.INT8);
        byte[] values = raw(qw.values());
        short[] scales = new short[(int) (qw.outFeatures() * qw.inFeatures() / QuantizedWeight.BLOCK)];
        try (Tensor s = qw.scales().contiguous()) {
            new ShortPointer(s.data_ptr()).capacity(scales.length).get(scales);
        }
        ByteBuffer out = le(scales.length * (2 + QuantizedWeight.BLOCK));
        for (int b = 0; b < scales.length; b++) {
            out.putShort(scales[b]);
            out.put(values, b * QuantizedWeight.BLOCK, QuantizedWeight.BLOCK);
        }
        return out.array();
    }

    private static byte[] raw(Tensor t) {
        Tensor c = t.contiguous();
        byte[] out = new byte[(int) c.nbytes()];
        new BytePointer(c.data_ptr()).capacity(out.length).get(out);
        return out;
    }

    private static ByteBuffer le(int size) {
        return ByteBuffer.allocate(size).order(ByteOrder.LITTLE_ENDIAN);
    }

    private static void putString(ByteBuffer b, String s) {
        byte[] u = s.getBytes(StandardCharsets.UTF_8);
        b.putLong(u.length).put(u);
    }

    private static long align(long n) {
        return (n + ALIGN - 1) / ALIGN * ALIGN;
    }

    private static void pad(ByteArrayOutputStream out) {
        while (out.size() % ALIGN != 0) {
            out.write(0);
        }
    }
}
