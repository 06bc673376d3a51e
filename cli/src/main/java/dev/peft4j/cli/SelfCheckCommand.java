package dev.peft4j.cli;

import picocli.CommandLine.Command;

/** {@code peft4j selfcheck}: libtorch and the native layer load, and a native kernel agrees with libtorch. */
@Command(name = "selfcheck", header = "Check that libtorch and the native layer load and agree.",
        description =
            "Load libtorch and peft4j's native layer, print the CPU features and the kernel path chosen, and "
            + "check a native kernel against libtorch. Exit status 0 when they agree.")
final class SelfCheckCommand extends CliCommand {
    @Override
    public Integer call() {
        int rc = SelfCheck.run(out());
        out().flush();
        return rc;
    }
}
