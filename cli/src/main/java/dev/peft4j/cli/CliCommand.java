package dev.peft4j.cli;

import java.io.PrintWriter;
import java.util.concurrent.Callable;
import picocli.CommandLine;

/** What every subcommand shares: {@code --help}, its writers, and whether stdout is a terminal. */
abstract class CliCommand implements Callable<Integer> {
    @CommandLine.Mixin
    HelpOption help;

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    final PrintWriter out() {
        return spec.commandLine().getOut();
    }

    final PrintWriter err() {
        return spec.commandLine().getErr();
    }

    /** True when stdout is a terminal: progress and timings go to stderr then; otherwise only the result is printed. */
    final boolean interactive() {
        return ((Main) spec.root().userObject()).interactive();
    }

    /** A line of progress on stderr, shown only on a terminal. */
    final void progress(String fmt, Object... args) {
        if (interactive()) {
            err().printf(fmt + "%n", args);
            err().flush();
        }
    }

    /** A usage error (exit status 2) of this command. */
    final CommandLine.ParameterException usage(String message) {
        return new CommandLine.ParameterException(spec.commandLine(), message);
    }
}
