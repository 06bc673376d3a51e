package dev.peft4j.train;

import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import org.bytedeco.javacpp.chrono.Milliseconds;
import org.bytedeco.pytorch.AllreduceOptions;
import org.bytedeco.pytorch.BroadcastOptions;
import org.bytedeco.pytorch.ProcessGroupGloo;
import org.bytedeco.pytorch.Store;
import org.bytedeco.pytorch.TCPStore;
import org.bytedeco.pytorch.TCPStoreOptions;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.Work;

/**
 * One process (rank) of a data-parallel run, on libtorch's c10d: a {@code TCPStore} hosted by rank 0 at
 * {@code MASTER_ADDR:MASTER_PORT} for the rendezvous, and a Gloo process group (CPU) for the collectives, as
 * {@code torch.distributed.init_process_group("gloo")} sets them up from torchrun's environment.
 *
 * <p>A collective that does not complete within the timeout, or whose peer's connection closes, throws; the
 * exception then names the ranks found lost: every rank beats a counter in the store from a daemon thread, and the
 * ranks whose counter stopped (or rank 0, when the store it hosts is gone) are reported, with the error a failing
 * rank left in the store before it exited ({@link #reportFailure}).
 *
 * <p>Thread safety: the collectives of one context must be called from one thread at a time, in the same order on
 * every rank (as with {@code torch.distributed}); the heartbeat thread uses its own store connection.
 */
public final class DistributedContext implements AutoCloseable {
    /** The collective timeout when {@code PEFT4J_DIST_TIMEOUT_S} is not set: torch's default for Gloo, 30 minutes. */
    public static final Duration DEFAULT_TIMEOUT = Duration.ofMinutes(30);
    private static final String KEY_PREFIX = "peft4j/";
    private static final long HEARTBEAT_MS = 500;

    private final int rank;
    private final int worldSize;
    private final int localRank;
    private final int localWorldSize;
    private final String masterAddr;
    private final int masterPort;
    private final Duration timeout;
    private final TCPStore store;
    private final ProcessGroupGloo group;
    private final Thread heartbeat;
    private volatile boolean closed;

    private DistributedContext(int rank, int worldSize, int localRank, int localWorldSize, String masterAddr,
            int masterPort, Duration timeout) {
        this.rank = rank;
        this.worldSize = worldSize;
        this.localRank = localRank;
        this.localWorldSize = localWorldSize;
        this.masterAddr = masterAddr;
        this.masterPort = masterPort;
        this.timeout = timeout;
        TCPStoreOptions so = new TCPStoreOptions();
        so.port((short) masterPort); // c10d's uint16_t, passed through as the same 16 bits
        so.isServer(rank == 0);
        so.timeout(new Milliseconds(timeout.toMillis()));
        try {
            this.store = new TCPStore(masterAddr, so);
        } catch (RuntimeException e) {
            throw new IllegalStateException("rank " + rank + ": cannot " + (rank == 0 ? "host" : "reach")
                    + " the rendezvous store at " + masterAddr + ":" + masterPort + " (MASTER_ADDR:MASTER_PORT): "
                    + e.getMessage(), e);
        }
        ProcessGroupGloo.Options o = ProcessGroupGloo.Options.create(new Milliseconds(timeout.toMillis()));
        o.devices().push_back(glooDevice(masterAddr));
        try {
            this.group = new ProcessGroupGloo(store, rank, worldSize, o);
        } catch (RuntimeException e) {
            throw new IllegalStateException("rank " + rank + " of " + worldSize + ": the Gloo rendezvous through "
                    + masterAddr + ":" + masterPort + " failed: " + e.getMessage(), e);
        }
        Store beatStore = store.clone();
        heartbeat = new Thread(() -> beat(beatStore), "peft4j-dist-heartbeat-" + rank);
        heartbeat.setDaemon(true);
        heartbeat.start();
    }

    /**
     * Joins the run described by torchrun's environment: {@code RANK}, {@code WORLD_SIZE}, {@code MASTER_ADDR},
     * {@code MASTER_PORT}, and {@code LOCAL_RANK} / {@code LOCAL_WORLD_SIZE} (default: the rank and the world); the
     * collective timeout is {@code PEFT4J_DIST_TIMEOUT_S} seconds ({@link #DEFAULT_TIMEOUT} when unset). Returns
     * null when {@code WORLD_SIZE} is unset or 1: a single-process run.
     */
    public static DistributedContext fromEnvironment(Map<String, String> env) {
        String ws = env.get("WORLD_SIZE");
        if (ws == null || ws.isBlank() || intVar(env, "WORLD_SIZE", null) == 1) {
            return null;
        }
        int world = intVar(env, "WORLD_SIZE", null);
        int rank = intVar(env, "RANK", null);
        String addr = env.get("MASTER_ADDR");
        if (addr == null || addr.isBlank()) {
            throw new IllegalArgumentException("MASTER_ADDR: not set (WORLD_SIZE is " + world + ")");
        }
        int port = intVar(env, "MASTER_PORT", null);
        int localRank = intVar(env, "LOCAL_RANK", rank);
        int localWorld = intVar(env, "LOCAL_WORLD_SIZE", world);
        String t = env.get("PEFT4J_DIST_TIMEOUT_S");
        Duration timeout = t == null || t.isBlank() ? DEFAULT_TIMEOUT
                : Duration.ofSeconds(intVar(env, "PEFT4J_DIST_TIMEOUT_S", null));
        return init(rank, world, localRank, localWorld, addr, port, timeout);
    }

    /**
     * Joins a run of {@code worldSize} ranks as {@code rank}; rank 0 hosts the store on {@code masterPort}, the
     * others connect to it. Blocks until every rank has joined (or the timeout passes).
     */
    public static DistributedContext init(int rank, int worldSize, int localRank, int localWorldSize,
            String masterAddr, int masterPort, Duration timeout) {
        if (worldSize < 1 || rank < 0 || rank >= worldSize) {
            throw new IllegalArgumentException("RANK " + rank + " is not in [0, WORLD_SIZE " + worldSize + ")");
        }
        if (localWorldSize < 1 || localRank < 0 || localRank >= localWorldSize) {
            throw new IllegalArgumentException("LOCAL_RANK " + localRank + " is not in [0, LOCAL_WORLD_SIZE "
                    + localWorldSize + ")");
        }
        if (masterPort < 1 || masterPort > 65535) {
            throw new IllegalArgumentException("MASTER_PORT " + masterPort + " is not a TCP port");
        }
        if (timeout.isNegative() || timeout.isZero()) {
            throw new IllegalArgumentException("timeout " + timeout + " is not positive");
        }
        return new DistributedContext(rank, worldSize, localRank, localWorldSize, masterAddr, masterPort, timeout);
    }

    private static int intVar(Map<String, String> env, String name, Integer dflt) {
        String v = env.get(name);
        if (v == null || v.isBlank()) {
            if (dflt == null) {
                throw new IllegalArgumentException(name + ": not set");
            }
            return dflt;
        }
        try {
            return Integer.parseInt(v.trim());
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException(name + ": '" + v + "' is not an integer", e);
        }
    }

    /** This process's rank in [0, worldSize). */
    public int rank() {
        return rank;
    }

    /** The number of ranks. */
    public int worldSize() {
        return worldSize;
    }

    /** This process's rank among those on its machine. */
    public int localRank() {
        return localRank;
    }

    /** The number of ranks on this machine. */
    public int localWorldSize() {
        return localWorldSize;
    }

    /** Whether this is rank 0, the one that logs, evaluates and saves. */
    public boolean isMain() {
        return rank == 0;
    }

    /** The collective timeout. */
    public Duration timeout() {
        return timeout;
    }

    /** Blocks until every rank has called it (a Gloo barrier). */
    public void barrier() {
        complete(group.barrier(), "barrier");
    }

    /**
     * Sums each tensor (contiguous, CPU) over the ranks, in place ({@code dist.all_reduce}); {@code what} names the
     * call in the error when it fails.
     */
    public void allreduceSum(List<Tensor> tensors, String what) {
        try (TensorVector v = new TensorVector(tensors.toArray(new Tensor[0]));
                AllreduceOptions o = new AllreduceOptions()) {
            o.timeout(new Milliseconds(timeout.toMillis()));
            complete(group.allreduce(v, o), what);
        }
    }

    /**
     * Copies rank {@code root}'s tensors (contiguous, CPU) into every rank's, in place ({@code dist.broadcast});
     * {@code what} names the call in the error when it fails.
     */
    public void broadcast(List<Tensor> tensors, int root, String what) {
        try (TensorVector v = new TensorVector(tensors.toArray(new Tensor[0]));
                BroadcastOptions o = new BroadcastOptions()) {
            o.rootRank(root);
            o.timeout(new Milliseconds(timeout.toMillis()));
            complete(group.broadcast(v, o), what);
        }
    }

    private void complete(Work work, String what) {
        try (work) {
            if (!work._wait(new Milliseconds(timeout.toMillis()))) {
                throw new RuntimeException("did not complete within " + timeout);
            }
        } catch (RuntimeException e) {
            throw new IllegalStateException("rank " + rank + " of " + worldSize + ": " + what + " failed: "
                    + lostRanks() + " (" + e.getMessage() + ")", e);
        }
    }

    /**
     * Records why this rank stops in the store (best effort), so that the other ranks' errors can say it; call it
     * before exiting on an error.
     */
    public void reportFailure(Throwable error) {
        try {
            store.set(KEY_PREFIX + "failed/" + rank, String.valueOf(error));
        } catch (RuntimeException ignored) {
            // the store is gone with rank 0: nothing to tell
        }
    }

    // which ranks stopped beating (watched for three heartbeats), with the errors they left
    String lostRanks() {
        try {
            long[] before = beats();
            Thread.sleep(HEARTBEAT_MS * 3);
            long[] after = beats();
            Map<Integer, String> lost = new TreeMap<>();
            for (int r = 0; r < worldSize; r++) {
                String failed = failure(r);
                if (failed != null) {
                    lost.put(r, "rank " + r + " failed: " + failed);
                } else if (r != rank && after[r] == before[r]) {
                    lost.put(r, "rank " + r + " is lost (no heartbeat for " + HEARTBEAT_MS * 3 + " ms)");
                }
            }
            return lost.isEmpty() ? "no rank found lost (every rank's heartbeat is live)"
                    : String.join("; ", lost.values());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return "interrupted while looking for the lost rank";
        } catch (RuntimeException e) {
            return "rank 0 is lost (the rendezvous store it hosts at " + masterAddr + ":" + masterPort
                    + " does not answer: " + firstLine(e.getMessage()) + ")";
        }
    }

    private long[] beats() {
        long[] b = new long[worldSize];
        for (int r = 0; r < worldSize; r++) {
            // add(key, 0) reads a counter without waiting for it to exist
            b[r] = store.add(KEY_PREFIX + "heartbeat/" + r, 0);
        }
        return b;
    }

    private String failure(int r) {
        String key = KEY_PREFIX + "failed/" + r;
        try (org.bytedeco.pytorch.StringVector k = new org.bytedeco.pytorch.StringVector(key)) {
            if (!store.check(k)) {
                return null;
            }
        }
        return store.get_to_str(key);
    }

    private static String firstLine(String s) {
        if (s == null) {
            return "";
        }
        int nl = s.indexOf('\n');
        return nl < 0 ? s : s.substring(0, nl);
    }

    private void beat(Store beatStore) {
        String key = KEY_PREFIX + "heartbeat/" + rank;
        try {
            while (!closed) {
                beatStore.add(key, 1);
                Thread.sleep(HEARTBEAT_MS);
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        } catch (RuntimeException e) {
            // the store went away (rank 0 ended): the collectives report it
        }
    }

    /**
     * Leaves the run: stops the heartbeat and releases the process group and the store. Rank 0 hosts the store, so
     * it should close last; call {@link #barrier} first when the others may still need it.
     */
    @Override
    public void close() {
        closed = true;
        heartbeat.interrupt();
        try {
            heartbeat.join(HEARTBEAT_MS * 4);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        group.close();
        store.close();
    }

    @Override
    public String toString() {
        return "rank " + rank + " of " + worldSize + " (local " + localRank + " of " + localWorldSize + ") via "
                + masterAddr + ":" + masterPort;
    }

    // as torch: the interface named by GLOO_SOCKET_IFNAME, else loopback for a loopback master, else the address
    // this machine's hostname resolves to
    private static org.bytedeco.pytorch.gloo.Device glooDevice(String masterAddr) {
        String ifname = System.getenv("GLOO_SOCKET_IFNAME");
        if (ifname != null && !ifname.isBlank()) {
            return ProcessGroupGloo.createDeviceForInterface(ifname.split(",")[0].trim());
        }
        if (masterAddr.equals("localhost") || masterAddr.startsWith("127.")) {
            return ProcessGroupGloo.createDeviceForHostname("127.0.0.1");
        }
        return ProcessGroupGloo.createDefaultDevice();
    }
}
