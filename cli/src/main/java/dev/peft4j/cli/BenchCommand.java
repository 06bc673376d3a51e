package dev.peft4j.cli;

import dev.peft4j.kernels.FusedLoraLinear;
import dev.peft4j.kernels.Kernels;
import dev.peft4j.models.KVCache;
import dev.peft4j.models.LlamaForCausalLM;
import dev.peft4j.models.ModelConfig;
import java.io.PrintWriter;
import java.util.ArrayList;
import java.util.List;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.InferenceMode;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import picocli.CommandLine.Command;
import dev.peft4j.kernels.Quantization;
import dev.peft4j.models.AutoModel;
import picocli.CommandLine.Option;

/**
 * {@code peft4j bench}: a quick latency table of this machine. Every number is measured here and now (median of
 * the timed runs after a warm-up); the models and layers have random weights.
 */
@Command(name = "bench", header = "A quick, measured latency table of this machine.",
        description =
            "A quick latency table of this machine, measured now (medians after a warm-up; random weights): "
            + "the decode step of a small built-in Llama, and one LoRA-adapted linear layer at decode size (1 "
            + "row), peft4j's fused native kernel against the same computation composed of libtorch calls.")
final class BenchCommand extends CliCommand {
    @Option(names = "--iterations", paramLabel = "N", defaultValue = "50",
            description = "Timed runs per row of the table (default ${DEFAULT-VALUE}).")
    int iterations;

    @Option(names = "--size", paramLabel = "D", defaultValue = "4096",
            description = "The layer's in and out features (default ${DEFAULT-VALUE}).")
    int size;

    @Option(names = "--rank", paramLabel = "R", defaultValue = "16", description = "LoRA rank (default ${DEFAULT-VALUE}).")
    int rank;

    @Option(names = "--dtype", paramLabel = "<dtype>", defaultValue = "float32",
            description = "float32 or bfloat16 (default ${DEFAULT-VALUE}).")
    String dtype;

    @Option(names = "--quantize", paramLabel = "<format>",
            description = "int8 or int4: the decode step's Llama with its transformer blocks' Linears quantized "
                    + "(docs/QUANTIZATION.md); the layer rows are unchanged.")
    String quantize;

    @Option(names = "--threads", paramLabel = "N",
            description = "libtorch and OpenBLAS threads, pinned together (default: libtorch's default, usually the "
                    + "number of cores).")
    Integer threads;

    /** One row of the table. */
    record Row(String what, double nanos, String note) {}

    @Override
    public Integer call() {
        ScalarType dt;
        try {
            dt = ModelConfig.parseDtype(dtype, "--dtype");
        } catch (IllegalArgumentException e) {
            throw usage(e.getMessage());
        }
        if (dt != ScalarType.Float && dt != ScalarType.BFloat16) {
            throw usage("--dtype: the fused kernel takes float32 or bfloat16, not " + dtype);
        }
        if (iterations < 1 || size < 1 || rank < 1 || rank > size) {
            throw usage("--iterations, --size and --rank must be ≥ 1, and --rank ≤ --size");
        }
        if (threads != null && threads < 1) {
            throw usage("--threads must be ≥ 1");
        }
        Quantization q;
        try {
            q = quantize == null ? null : Quantization.parse(quantize);
        } catch (IllegalArgumentException e) {
            throw usage("--quantize: " + e.getMessage());
        }
        // unpinned, OpenBLAS (fp32 GEMM) and libtorch's OpenMP pool each take every core and oversubscribe them
        Threads.pin(threads != null ? threads : torch.get_num_threads());
        String dtName = dt == ScalarType.Float ? "float32" : "bfloat16";
        List<Row> rows = new ArrayList<>();
        progress("timing the decode step of the built-in Llama ...");
        rows.add(decodeStep(dt, dtName, q));
        progress("timing one %dx%d layer ...", size, size);
        rows.addAll(layer(dt, dtName));
        print(rows, dtName);
        return 0;
    }

    private Row decodeStep(ScalarType dt, String dtName, Quantization q) {
        int prompt = 16;
        double ns;
        try (LlamaForCausalLM lm = BuiltinLlama.create(dt, 0); InferenceMode im = new InferenceMode();
                KVCache cache = lm.newCache(); PointerScope outer = new PointerScope()) {
            if (q != null) {
                AutoModel.quantize(lm, q);
            }
            long[] ids = new long[prompt];
            for (int i = 0; i < prompt; i++) {
                ids[i] = 1 + i * 7L;
            }
            lm.forward(TokenIds.longs(ids, 1, prompt), null, null, cache);
            Tensor next = TokenIds.longs(new long[] {5}, 1, 1);
            ns = Timing.medianNanos(Math.min(5, iterations), iterations, () -> {
                try (PointerScope s = new PointerScope()) {
                    lm.forward(next, null, null, cache);
                    cache.truncate(prompt); // every timed step decodes at the same position
                }
            });
        }
        return new Row("decode step at position 16 (KV cache): built-in " + BuiltinLlama.describe() + ", " + dtName
                + (q == null ? "" : ", blocks " + q.ggmlName()), ns,
                String.format("%.0f tokens/s", 1e9 / ns));
    }

    private List<Row> layer(ScalarType dt, String dtName) {
        List<Row> rows = new ArrayList<>();
        float scale = 2.0f;
        try (PointerScope outer = new PointerScope(); InferenceMode im = new InferenceMode();
                TensorOptions o = new TensorOptions(ScalarType.Float)) {
            torch.manual_seed(1);
            Tensor w = torch.randn(new long[] {size, size}, o).mul_(new Scalar(0.02)).to(dt).contiguous();
            Tensor a = torch.randn(new long[] {rank, size}, o).mul_(new Scalar(0.02)).to(dt).contiguous();
            Tensor b = torch.randn(new long[] {size, rank}, o).mul_(new Scalar(0.02)).to(dt).contiguous();
            Tensor x = torch.randn(new long[] {1, size}, o).to(dt).contiguous();
            String shape = size + "x" + size + " " + dtName + ", 1 row";
            Scalar s = new Scalar(scale);
            double diff;
            double[] t;
            try (FusedLoraLinear f = new FusedLoraLinear(w, null)) {
                f.setAdapters(List.of(new FusedLoraLinear.Adapter(a, b, scale)));
                t = Timing.interleavedMedianNanos(5, iterations, () -> {
                    try (PointerScope sc = new PointerScope()) {
                        torch.linear(x, w);
                    }
                }, () -> {
                    try (PointerScope sc = new PointerScope()) {
                        torch.linear(x, w).add_(torch.linear(torch.linear(x, a), b), s);
                    }
                }, () -> {
                    try (PointerScope sc = new PointerScope()) {
                        f.forward(x);
                    }
                });
                Tensor ref = torch.linear(x, w).add_(torch.linear(torch.linear(x, a), b), s).to(ScalarType.Float);
                diff = f.forward(x).to(ScalarType.Float).sub(ref).abs().max().item_double();
            }
            double base = t[0];
            double composed = t[1];
            double fused = t[2];
            rows.add(new Row("layer " + shape + ": libtorch linear, no adapter", base, "1.00x"));
            rows.add(new Row("layer " + shape + ": + LoRA r=" + rank + ", composed of libtorch calls",
                    composed, String.format("%.2fx", composed / base)));
            rows.add(new Row("layer " + shape + ": + LoRA r=" + rank + ", fused (peft4j native, "
                    + Kernels.activeIsa().name().toLowerCase() + ")", fused,
                    String.format("%.2fx (%.2fx of composed; max |fused - composed| %.1e)", fused / base,
                            fused / composed, diff)));
        }
        return rows;
    }

    private void print(List<Row> rows, String dtName) {
        PrintWriter o = out();
        int n = torch.get_num_threads();
        o.printf("peft4j bench: measured on this machine, %d %s (libtorch and OpenBLAS), median of %d runs"
                + " after a warm-up; random weights%n", n, n == 1 ? "thread" : "threads", iterations);
        int w = 4;
        for (Row r : rows) {
            w = Math.max(w, r.what().length());
        }
        String fmt = "%-" + w + "s  %12s  %s%n";
        o.printf(fmt, "what", "median", "");
        for (Row r : rows) {
            o.printf(fmt, r.what(), formatNanos(r.nanos()), r.note());
        }
        o.flush();
    }

    static String formatNanos(double ns) {
        if (ns >= 1e6) {
            return String.format("%.2f ms", ns / 1e6);
        }
        return String.format("%.1f µs", ns / 1e3);
    }
}
