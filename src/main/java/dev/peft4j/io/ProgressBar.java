package dev.peft4j.io;

import java.io.PrintStream;
import java.util.Locale;

/**
 * A one-line download progress bar on stderr, redrawn in place ({@code \r}) at most every 100 ms, as huggingface_hub's
 * tqdm bars are: name, percent, bytes done and total, rate. Shown only when the process runs on a terminal and
 * {@code HF_HUB_DISABLE_PROGRESS_BARS} is not set; otherwise {@link #open} gives one that prints nothing, so logs, CI
 * and tests see no output. Own code rather than a library: the maintained JVM ones (me.tongfei:progressbar) bring in
 * jline for terminal handling, and a single line on stderr needs none of it.
 */
class ProgressBar implements AutoCloseable {
    private static final ProgressBar NONE = new ProgressBar(null, "", -1, 0);
    private static final long REDRAW_NANOS = 100_000_000L;

    private final PrintStream out;
    private final String name;
    private final long total;
    private final long initial;
    private final long startNanos = System.nanoTime();
    private long done;
    private long lastDraw;

    ProgressBar(PrintStream out, String name, long total, long initial) {
        this.out = out;
        this.name = name.length() > 40 ? "(…)" + name.substring(name.length() - 40) : name;
        this.total = total;
        this.initial = initial;
        this.done = initial;
    }

    /** A bar for {@code name} ({@code total} bytes or -1, {@code initial} already there), or none when not shown. */
    static ProgressBar open(String name, long total, long initial, boolean allowed) {
        return allowed && onTerminal() ? new ProgressBar(System.err, name, total, initial) : NONE;
    }

    /**
     * Whether this JVM runs on a terminal: {@code System.console()} is null when stdin or stdout is redirected; from
     * Java 22 on it may be a console that is no terminal, which {@code Console.isTerminal()} tells.
     */
    static boolean onTerminal() {
        java.io.Console c = System.console();
        if (c == null) {
            return false;
        }
        try {
            return (Boolean) java.io.Console.class.getMethod("isTerminal").invoke(c);
        } catch (ReflectiveOperationException e) {
            return true; // before Java 22 a console is always a terminal
        }
    }

    void advance(long bytes) {
        if (out == null) {
            return;
        }
        done += bytes;
        long now = System.nanoTime();
        if (now - lastDraw >= REDRAW_NANOS) {
            lastDraw = now;
            draw(now);
        }
    }

    @Override
    public void close() {
        if (out != null) {
            draw(System.nanoTime());
            out.print('\n');
            out.flush();
        }
    }

    private void draw(long now) {
        double secs = Math.max((now - startNanos) / 1e9, 1e-3);
        String rate = size((long) ((done - initial) / secs)) + "/s";
        String line = total > 0
                ? String.format(Locale.ROOT, "%s: %3d%% %s/%s %s", name, (int) (100 * done / total), size(done),
                        size(total), rate)
                : String.format(Locale.ROOT, "%s: %s %s", name, size(done), rate);
        out.print("\r" + line);
        out.flush();
    }

    static String size(long bytes) {
        if (bytes < 1000) {
            return bytes + "B";
        }
        String[] units = {"kB", "MB", "GB", "TB"};
        double v = bytes;
        int i = -1;
        while (v >= 1000 && i < units.length - 1) {
            v /= 1000;
            i++;
        }
        return String.format(Locale.ROOT, "%.1f%s", v, units[i]);
    }
}
