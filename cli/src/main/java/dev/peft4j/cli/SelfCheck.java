package dev.peft4j.cli;

import dev.peft4j.kernels.Isa;
import dev.peft4j.kernels.Kernels;
import java.io.PrintWriter;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * Loads libtorch and peft4j's native layer, prints what they see (versions, threads, CPU features,
 * the kernel path chosen) and runs one native kernel against libtorch. Exit status 0 when all agree.
 */
final class SelfCheck {
    private SelfCheck() {}

    static int run(PrintWriter out) {
        out.println("peft4j self-check");
        Tensor probe = torch.ones(2);
        out.println("  libtorch        : loaded, " + torch.get_num_threads() + " intra-op threads, parallel backend "
                + firstLine(torch.get_parallel_info().getString(), "ATen parallel backend"));
        out.println("  native layer    : " + Kernels.libraryPath());
        out.println("  cpu features    : " + Kernels.cpuFeatures());
        out.println("  kernel path     : " + Kernels.activeIsa().name().toLowerCase()
                + " (best supported: " + Kernels.bestIsa().name().toLowerCase() + "), threads: "
                + Kernels.threadPool());
        boolean ok = probe.defined();
        for (ScalarType dt : new ScalarType[] {ScalarType.Float, ScalarType.BFloat16}) {
            for (Isa isa : Isa.values()) {
                if (isa.ordinal() > Kernels.bestIsa().ordinal()) {
                    continue;
                }
                Isa before = Kernels.activeIsa();
                Kernels.setActiveIsa(isa);
                torch.manual_seed(42);
                Tensor x = torch.randn(1027).to(dt);
                Tensor y = torch.randn(1027).to(dt);
                Tensor expected = y.clone().add_(x);
                Kernels.axpy(y, x, 1.0f);
                boolean same = y.equal(expected);
                Kernels.setActiveIsa(before);
                ok &= same;
                out.printf("  axpy %-8s %-6s: %s%n", dt, isa.name().toLowerCase(),
                        same ? "matches libtorch add_" : "DIFFERS from libtorch add_");
            }
        }
        out.println(ok ? "OK" : "FAILED");
        return ok ? 0 : 1;
    }

    private static String firstLine(String info, String key) {
        for (String line : info.split("\n")) {
            if (line.startsWith(key)) {
                return line.substring(line.indexOf(':') + 1).trim();
            }
        }
        return "?";
    }
}
