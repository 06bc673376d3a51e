package dev.peft4j.cli;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.net.URISyntaxException;
import java.nio.file.Path;

/** Runs the {@code peft4j} command in-process with captured stdout and stderr. */
final class Cli {
    private Cli() {}

    record Result(int rc, String out, String err) {
        @Override
        public String toString() {
            return "rc=" + rc + "\n--- stdout\n" + out + "--- stderr\n" + err;
        }
    }

    /** As a script would run it (stdout not a terminal). */
    static Result run(String... args) {
        return run(false, args);
    }

    static Result run(boolean interactive, String... args) {
        StringWriter out = new StringWriter();
        StringWriter err = new StringWriter();
        int rc = Main.execute(args, new PrintWriter(out), new PrintWriter(err), interactive);
        return new Result(rc, out.toString(), err.toString());
    }

    static Path resource(String relative) {
        try {
            return Path.of(Cli.class.getResource("/dev/peft4j/" + relative).toURI()).normalize();
        } catch (URISyntaxException | NullPointerException e) {
            throw new IllegalStateException("test resource missing: " + relative, e);
        }
    }
}
