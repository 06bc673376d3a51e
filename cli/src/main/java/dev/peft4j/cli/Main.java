package dev.peft4j.cli;

import java.io.PrintWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.AccessDeniedException;
import java.nio.file.FileSystemException;
import java.nio.file.NoSuchFileException;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParseResult;
import picocli.CommandLine.ScopeType;

/**
 * The {@code peft4j} command: {@code demo} (the default), {@code selfcheck}, {@code inspect}, {@code logits},
 * {@code generate}, {@code bench}, {@code merge}, {@code train}, {@code serve}, {@code export-gguf}.
 *
 * <p>Exit status 0 on success, 1 on failure, 2 on a usage error. An error is one line on stderr
 * ({@code peft4j <command>: <what went wrong>}); {@code --verbose} adds the stack trace. When stdout is not a
 * terminal, commands print their result only (no progress or timing chatter), so scripts can read it.
 */
@Command(name = "peft4j",
        description =
            "Hugging Face PEFT adapters on libtorch, from the command line. Without a command: demo. Exit "
            + "status: 0 ok, 1 failure, 2 usage error.",
        subcommands = {DemoCommand.class, SelfCheckCommand.class, InspectCommand.class, LogitsCommand.class, GenerateCommand.class,
                BenchCommand.class, MergeCommand.class, TrainCommand.class, ServeCommand.class, ExportGgufCommand.class,
                CommandLine.HelpCommand.class},
        versionProvider = Main.Version.class)
public final class Main implements Runnable {
    /** What a run with no arguments does. */
    static final String DEFAULT_COMMAND = "demo";

    @CommandLine.Mixin
    HelpOption help;

    @Option(names = {"-V", "--version"}, versionHelp = true, description = "Print the version and exit.")
    boolean version;

    @Option(names = "--verbose", scope = ScopeType.INHERIT, description = "On error, print the stack trace too.")
    boolean verbose;

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    private final boolean interactive;

    Main(boolean interactive) {
        this.interactive = interactive;
    }

    /** Whether stdout is a terminal: only then do commands print progress and other chatter. */
    boolean interactive() {
        return interactive;
    }

    @Override
    public void run() {
        throw new CommandLine.ParameterException(spec.commandLine(), "a command is required: one of "
                + spec.subcommands().keySet());
    }

    /** The {@code peft4j} command: runs {@code args} on stdout and stderr (UTF-8) and exits with its status. */
    public static void main(String[] args) {
        PrintWriter out = new PrintWriter(new java.io.OutputStreamWriter(System.out, StandardCharsets.UTF_8), true);
        PrintWriter err = new PrintWriter(new java.io.OutputStreamWriter(System.err, StandardCharsets.UTF_8), true);
        int rc = execute(args, out, err, System.console() != null);
        out.flush();
        err.flush();
        System.exit(rc);
    }

    /** Runs the command line {@code args}, writing to {@code out} and {@code err}; returns the exit status. */
    public static int execute(String[] args, PrintWriter out, PrintWriter err, boolean interactive) {
        CommandLine cl = commandLine(out, err, interactive);
        // no command (nothing, or only --verbose): the default command
        boolean onlyVerbose = java.util.Arrays.stream(args).allMatch("--verbose"::equals);
        String[] effective = args;
        if (onlyVerbose) {
            effective = java.util.Arrays.copyOf(args, args.length + 1);
            effective[args.length] = DEFAULT_COMMAND;
        }
        int rc = cl.execute(effective);
        out.flush();
        err.flush();
        return rc;
    }

    static CommandLine commandLine(PrintWriter out, PrintWriter err, boolean interactive) {
        CommandLine cl = new CommandLine(new Main(interactive));
        cl.setOut(out);
        cl.setErr(err);
        cl.setExitCodeExceptionMapper(e -> e instanceof CommandLine.ParameterException ? 2 : 1);
        cl.setParameterExceptionHandler((ex, argv) -> {
            CommandLine where = ex.getCommandLine();
            where.getErr().println(qualifiedName(where) + ": " + oneLine(ex.getMessage()) + " (see '"
                    + qualifiedName(where) + " --help')");
            if (verbose(cl.getParseResult())) {
                ex.printStackTrace(where.getErr());
            }
            return 2;
        });
        cl.setExecutionExceptionHandler((ex, where, parseResult) -> {
            where.getErr().println(qualifiedName(where) + ": " + describe(ex));
            if (verbose(cl.getParseResult())) {
                ex.printStackTrace(where.getErr());
            }
            return 1;
        });
        return cl;
    }

    /** {@code peft4j <version>}: the version Maven built this jar as (a resource filtered at build time). */
    static final class Version implements CommandLine.IVersionProvider {
        static final String RESOURCE = "/dev/peft4j/cli/version.properties";

        @Override
        public String[] getVersion() throws java.io.IOException {
            return new String[] {"peft4j " + version()};
        }

        static String version() throws java.io.IOException {
            java.util.Properties p = new java.util.Properties();
            try (java.io.InputStream in = Main.class.getResourceAsStream(RESOURCE)) {
                if (in == null) {
                    throw new java.io.FileNotFoundException(RESOURCE + " is missing from the class path");
                }
                p.load(in);
            }
            return p.getProperty("version");
        }
    }

    /** {@code peft4j logits}, from the command's place in the tree. */
    static String qualifiedName(CommandLine cl) {
        String name = cl.getCommandName();
        for (CommandLine p = cl.getParent(); p != null; p = p.getParent()) {
            name = p.getCommandName() + " " + name;
        }
        return name;
    }

    private static boolean verbose(ParseResult pr) {
        for (ParseResult p = pr; p != null; p = p.subcommand()) {
            if (p.hasMatchedOption("--verbose")) {
                return true;
            }
        }
        return false;
    }

    /** One line saying what went wrong: the message, with the kind of file-system error where the message is bare. */
    static String describe(Throwable e) {
        String msg = e.getMessage();
        if (e instanceof NoSuchFileException f) {
            return "no such file: " + f.getFile() + (f.getReason() != null ? " (" + f.getReason() + ")" : "");
        }
        if (e instanceof AccessDeniedException f) {
            return "permission denied: " + f.getFile();
        }
        if (e instanceof FileSystemException f && f.getReason() != null) {
            return f.getFile() + ": " + f.getReason();
        }
        if (msg == null || msg.isBlank()) {
            return e.getClass().getSimpleName() + (e.getCause() != null ? ": " + describe(e.getCause()) : "");
        }
        int native_ = msg.indexOf("Exception raised from ");
        if (native_ > 0) {
            // a c10::Error: its message, without libtorch's source location and native stack frames
            msg = msg.substring(0, native_);
        }
        if (e instanceof OutOfMemoryError) {
            return "out of memory: " + msg;
        }
        return oneLine(msg);
    }

    private static String oneLine(String msg) {
        return msg == null ? "" : msg.strip().replaceAll("\\s*\\R\\s*", "; ");
    }
}
