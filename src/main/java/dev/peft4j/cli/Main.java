package dev.peft4j.cli;

/**
 * The {@code peft4j} command. Until the full CLI lands it knows one job, {@code selfcheck}
 * (also the default), which proves libtorch and the native layer load and agree.
 */
public final class Main {
    private Main() {}

    public static void main(String[] args) {
        String cmd = args.length == 0 ? "selfcheck" : args[0];
        switch (cmd) {
            case "selfcheck":
                System.exit(SelfCheck.run(System.out));
                break;
            case "--help":
            case "-h":
            case "help":
                System.out.println("usage: peft4j [selfcheck]");
                System.exit(0);
                break;
            default:
                System.err.println("peft4j: unknown command '" + cmd + "' (known: selfcheck)");
                System.exit(2);
        }
    }
}
