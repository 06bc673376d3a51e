package dev.peft4j.nn;

import java.util.Locale;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.bytedeco.pytorch.Device;
import org.bytedeco.pytorch.global.torch;

/**
 * The devices a model or an adapter can be placed on, named as PyTorch names them: {@code "cpu"}, {@code "cuda"}
 * (the current CUDA device, 0), {@code "cuda:N"}, {@code "meta"} (shapes without data, for checks), and
 * {@code "auto"} (the first CUDA device when there is one, else the CPU). A CUDA device is refused, naming the option
 * it came from, when the loaded libtorch has none: the default build loads the CPU libtorch, the {@code -Pgpu} build
 * the CUDA one (docs/GPU.md).
 */
public final class Devices {
    private Devices() {}

    private static final Pattern SPEC = Pattern.compile("(cpu|cuda|meta)(?::(\\d+))?");

    /** Whether the loaded libtorch sees a CUDA device ({@code torch.cuda.is_available()}). */
    public static boolean cudaAvailable() {
        return torch.cuda_is_available();
    }

    /** The number of CUDA devices the loaded libtorch sees (0 without CUDA). */
    public static int cudaDeviceCount() {
        return cudaAvailable() ? torch.cuda_device_count() & 0xff : 0;
    }

    /** What {@code "auto"} resolves to here: {@code "cuda:0"} when a CUDA device is present, else {@code "cpu"}. */
    public static String auto() {
        return cudaAvailable() ? "cuda:0" : "cpu";
    }

    /**
     * The canonical name of {@code spec} ({@code "cpu"}, {@code "meta"}, {@code "cuda:N"}), with {@code "auto"}
     * resolved ({@link #auto()}) and an integer {@code N} read as {@code "cuda:N"}, as accelerate reads device maps.
     *
     * @param option the argument {@code spec} came from, named in the error ({@code device}, {@code device_map['x']})
     * @throws IllegalArgumentException an unknown device, or a CUDA device that is not present
     */
    public static String canonical(String option, Object spec) {
        String at = option + (option.endsWith("]") ? " = " : "=") + spec;
        String s = spec instanceof Number n ? "cuda:" + n.longValue() : spec instanceof String str
                ? str.trim().toLowerCase(Locale.ROOT) : null;
        if ("auto".equals(s)) {
            return auto();
        }
        Matcher m = s == null ? null : SPEC.matcher(s);
        if (m == null || !m.matches()) {
            throw new IllegalArgumentException(at + ": expected \"cpu\", \"cuda\", \"cuda:N\", "
                    + "\"meta\" or \"auto\"");
        }
        String type = m.group(1);
        if (type.equals("cpu") || type.equals("meta")) {
            if (m.group(2) != null && !m.group(2).equals("0")) {
                throw new IllegalArgumentException(at + ": there is one " + type + " device");
            }
            return type;
        }
        int index = m.group(2) == null ? 0 : Integer.parseInt(m.group(2));
        int count = cudaDeviceCount();
        if (count == 0) {
            throw new IllegalArgumentException(at + ": no CUDA device is present (the loaded "
                    + "libtorch reports torch.cuda.is_available() = false; the default build loads the CPU libtorch, "
                    + "build with -Pgpu on a machine with an NVIDIA GPU, see docs/GPU.md)");
        }
        if (index >= count) {
            throw new IllegalArgumentException(at + ": CUDA device " + index + " is not present ("
                    + count + " device" + (count == 1 ? "" : "s") + ": cuda:0 .. cuda:" + (count - 1) + ")");
        }
        return "cuda:" + index;
    }

    /** {@link #canonical} as a libtorch {@link Device} (the caller closes it). */
    public static Device resolve(String option, Object spec) {
        return new Device(canonical(option, spec));
    }
}
