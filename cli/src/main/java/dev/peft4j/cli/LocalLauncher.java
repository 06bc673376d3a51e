package dev.peft4j.cli;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintWriter;
import java.lang.management.ManagementFactory;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

/**
 * What {@code torchrun --nproc-per-node N} does for one machine: starts N copies of this command as child JVMs with
 * torchrun's environment ({@code RANK}, {@code LOCAL_RANK}, {@code WORLD_SIZE}, {@code LOCAL_WORLD_SIZE},
 * {@code MASTER_ADDR}, {@code MASTER_PORT}) and {@value #LAUNCHED} set (so they run the command instead of launching
 * again), forwards their output line by line prefixed with the rank, and fails when any fails. When one fails the
 * others get {@link #GRACE_SECONDS} s to report their own errors (the lost rank, from the collectives) before they
 * are stopped; the children are also stopped when this process exits.
 */
final class LocalLauncher {
    /** Set in each child's environment: the child runs the command as a rank. */
    static final String LAUNCHED = "PEFT4J_LAUNCHED";
    static final int GRACE_SECONDS = 30;

    private LocalLauncher() {}

    /** The environment of local rank {@code local} of node {@code nodeRank}. */
    static Map<String, String> rankEnvironment(int nprocPerNode, int nnodes, int nodeRank, int local,
            String masterAddr, int masterPort) {
        return Map.of("RANK", String.valueOf(nodeRank * nprocPerNode + local), "LOCAL_RANK", String.valueOf(local),
                "WORLD_SIZE", String.valueOf(nnodes * nprocPerNode), "LOCAL_WORLD_SIZE", String.valueOf(nprocPerNode),
                "GROUP_RANK", String.valueOf(nodeRank), "MASTER_ADDR", masterAddr,
                "MASTER_PORT", String.valueOf(masterPort), LAUNCHED, "1");
    }

    /**
     * Runs {@code args} (this command's arguments, as given) in {@code nprocPerNode} children and waits for them;
     * returns 0 when all exit 0, else the first failure's exit status.
     */
    static int launch(List<String> args, int nprocPerNode, int nnodes, int nodeRank, String masterAddr,
            int masterPort, PrintWriter out, PrintWriter err) throws IOException, InterruptedException {
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        List<String> jvm = new ArrayList<>();
        for (String a : ManagementFactory.getRuntimeMXBean().getInputArguments()) {
            if (!a.startsWith("-agentlib:jdwp") && !a.startsWith("-Xrunjdwp")) { // one debug port, not N
                jvm.add(a);
            }
        }
        List<Process> children = new ArrayList<>();
        List<Thread> pumps = new ArrayList<>();
        Thread reaper = new Thread(() -> children.forEach(Process::destroyForcibly));
        Runtime.getRuntime().addShutdownHook(reaper);
        try {
            for (int local = 0; local < nprocPerNode; local++) {
                List<String> cmd = new ArrayList<>();
                cmd.add(java);
                cmd.addAll(jvm);
                cmd.add("-cp");
                cmd.add(System.getProperty("java.class.path"));
                cmd.add(Main.class.getName());
                cmd.addAll(args);
                ProcessBuilder pb = new ProcessBuilder(cmd);
                pb.environment().putAll(rankEnvironment(nprocPerNode, nnodes, nodeRank, local, masterAddr,
                        masterPort));
                Process p = pb.start();
                children.add(p);
                int rank = nodeRank * nprocPerNode + local;
                pumps.add(pump(p.getInputStream(), out, "[rank " + rank + "] "));
                pumps.add(pump(p.getErrorStream(), err, "[rank " + rank + "] "));
            }
            int failedRank = -1;
            int failedCode = 0;
            long graceEnd = Long.MAX_VALUE;
            while (true) {
                boolean running = false;
                for (int i = 0; i < children.size(); i++) {
                    Process p = children.get(i);
                    if (p.isAlive()) {
                        running = true;
                    } else if (p.exitValue() != 0 && failedRank < 0) {
                        failedRank = nodeRank * nprocPerNode + i;
                        failedCode = p.exitValue();
                        graceEnd = System.nanoTime() + TimeUnit.SECONDS.toNanos(GRACE_SECONDS);
                    }
                }
                if (!running) {
                    break;
                }
                if (System.nanoTime() > graceEnd) {
                    children.forEach(Process::destroyForcibly);
                }
                Thread.sleep(100);
            }
            for (Thread t : pumps) {
                t.join(5000);
            }
            if (failedRank >= 0) {
                synchronized (err) {
                    err.println("peft4j train: rank " + failedRank + " exited with status " + failedCode
                            + "; the run failed");
                    err.flush();
                }
                return failedCode;
            }
            return 0;
        } finally {
            children.forEach(Process::destroyForcibly);
            try {
                Runtime.getRuntime().removeShutdownHook(reaper);
            } catch (IllegalStateException ignored) {
                // already shutting down: the hook runs
            }
        }
    }

    // copies a child's lines to the writer, each prefixed; one writer is shared, so lines are written whole
    private static Thread pump(java.io.InputStream in, PrintWriter to, String prefix) {
        Thread t = new Thread(() -> {
            try (BufferedReader r = new BufferedReader(new InputStreamReader(in, StandardCharsets.UTF_8))) {
                String line;
                while ((line = r.readLine()) != null) {
                    synchronized (to) {
                        to.println(prefix + line);
                        to.flush();
                    }
                }
            } catch (IOException ignored) {
                // the child ended
            }
        }, "peft4j-launch-output");
        t.setDaemon(true);
        t.start();
        return t;
    }
}
