package dev.peft4j.io;

import java.io.IOException;
import java.io.InputStream;
import java.math.BigInteger;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Enumeration;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.zip.CRC32;
import java.util.zip.ZipEntry;
import java.util.zip.ZipFile;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.pytorch.MemoryFormatOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * Reads files written by Python's {@code torch.save} ({@code adapter_model.bin},
 * {@code pytorch_model.bin}, {@code *.pt}): the zip format (torch &ge; 1.6) and the legacy
 * non-zip format, through a restricted unpickler that rebuilds only tensors, storages, ordered
 * dicts and plain values, like {@code torch.load(weights_only=True)}. Any other Python global is
 * refused with an error naming it; loading a file never runs code.
 *
 * <p>Tensors are CPU tensors whatever device they were saved from. Tensors that shared a storage
 * in the file share memory (views of one buffer), with the file's offsets and strides kept. Each
 * storage's bytes are copied into memory libtorch owns; zip entries are checked against their
 * CRC-32. The pre-1.0 tar format is not supported.
 *
 * <p>Work and memory are bounded by the input: {@code data.pkl} may inflate to 64 MiB at most, and
 * one pickle may hold at most 2^21 memo entries, 2^20 values on its stack and 2^23 container
 * items (a state dict of 250k tensors fits). Tuples used as dict keys are compared and hashed in
 * time linear in their size. Exceeding a limit, or running out of memory or stack anyway, is a
 * {@link TorchPickleException} naming the file.
 */
public final class TorchPickle {
    private static final BigInteger LEGACY_MAGIC = new BigInteger("119547037146038801333356");
    private static final long LEGACY_PROTOCOL_VERSION = 1001;
    /** Deflate cannot expand data more than about 1032:1; a larger claimed size is a lie. */
    private static final long MAX_DEFLATE_RATIO = 1100;
    private static final int COPY_CHUNK = 1 << 20;
    /** data.pkl holds names and shapes only: a state dict of 100k tensors is about 10 MB. */
    static final long MAX_PICKLE_BYTES = 64L << 20;

    private TorchPickle() {}

    /**
     * Loads a state dict: the file's top level must be a dict (or {@code OrderedDict}) of string
     * keys to tensors. Returns a {@link LinkedHashMap} in file order. The tensors are CPU tensors
     * owning their memory (views of one buffer where the file shares a storage); the caller may
     * close them, or leave them to a {@code PointerScope} or the garbage collector.
     *
     * @throws TorchPickleException if the file is not such a state dict (a checkpoint that wraps
     *     the state dict under a key like {@code "state_dict"} is refused, naming the key), or is
     *     refused by {@link #load}
     * @throws IOException if the file cannot be read
     */
    public static Map<String, Tensor> loadStateDict(Path file) throws IOException {
        Object top = load(file);
        if (!(top instanceof Map<?, ?> dict)) {
            throw new TorchPickleException(file + ": top level is " + PickleMachine.describe(top)
                    + ", expected a dict of str to tensor");
        }
        Map<String, Tensor> out = new LinkedHashMap<>();
        for (Map.Entry<?, ?> e : dict.entrySet()) {
            if (!(e.getKey() instanceof String key)) {
                throw new TorchPickleException(file + ": top-level key " + PickleMachine.describe(e.getKey())
                        + " is not a str; not a state dict");
            }
            if (!(e.getValue() instanceof Tensor t)) {
                String hint = e.getValue() instanceof Map<?, ?>
                        ? " (a checkpoint wrapping the state dict? load it with TorchPickle.load and take that entry)"
                        : "";
                throw new TorchPickleException(file + ": entry '" + PickleMachine.shorten(key) + "' is "
                        + PickleMachine.describe(e.getValue()) + ", not a tensor" + hint);
            }
            out.put(key, t);
        }
        return out;
    }

    /**
     * Loads the value a {@code torch.save} file holds, as a tree of plain Java values: dict and
     * {@code OrderedDict} &rarr; {@link LinkedHashMap} (keys as they were: {@code String},
     * {@code Long}, ...); list &rarr; mutable {@link List}; tuple and {@code torch.Size} &rarr;
     * unmodifiable {@link List}; str &rarr; {@link String}; int &rarr; {@link Long} (or
     * {@link BigInteger} beyond 64 bits); float &rarr; {@link Double}; bool &rarr; {@link Boolean};
     * None &rarr; null; bytes &rarr; {@code byte[]}; set &rarr; {@link java.util.Set}; tensor and
     * {@code nn.Parameter} &rarr; {@link Tensor} (with its {@code requires_grad}); dtype &rarr;
     * {@link ScalarType}; {@code torch.device} &rarr; its string ({@code "cuda:0"}). A tuple used
     * as a dict key or set item hashes with a per-process seed, not as {@link List#hashCode}, so
     * a {@code List} built by the caller does not find it: find such keys by iterating the dict.
     *
     * @throws TorchPickleException if the file is corrupt, not a torch.save file, or names a
     *     global outside the allow-list (the message names the file and what is at fault)
     * @throws IOException if the file cannot be read
     */
    public static Object load(Path file) throws IOException {
        try {
            return loadUnbounded(file);
        } catch (OutOfMemoryError | StackOverflowError e) {
            // the machine's limits should come first; this keeps a limit missed from killing the caller
            throw new TorchPickleException(file + ": reading it ran out of "
                    + (e instanceof OutOfMemoryError ? "memory" : "stack") + " (a hostile or too large file?)", e);
        }
    }

    private static Object loadUnbounded(Path file) throws IOException {
        byte[] head = new byte[512];
        int n;
        try (InputStream in = Files.newInputStream(file)) {
            n = in.readNBytes(head, 0, head.length);
        }
        if (n >= 4 && head[0] == 'P' && head[1] == 'K' && head[2] == 3 && head[3] == 4) {
            return loadZip(file);
        }
        boolean pickleProtocol2To5 = n >= 2 && (head[0] & 0xff) == 0x80 && head[1] >= 2 && head[1] <= 5;
        boolean textLong = n >= 2 && head[0] == 'L' && head[1] >= '0' && head[1] <= '9'; // protocols 0 and 1
        if (pickleProtocol2To5 || textLong) {
            return loadLegacy(file); // which checks the magic number first
        }
        if (n >= 262 && new String(head, 257, 5, StandardCharsets.ISO_8859_1).equals("ustar")) {
            throw new TorchPickleException(file + ": the pre-1.0 tar format of torch.save is not supported");
        }
        StringBuilder hex = new StringBuilder();
        for (int i = 0; i < Math.min(n, 8); i++) {
            hex.append(String.format("%02x", head[i] & 0xff));
        }
        throw new TorchPickleException(file + ": not a torch.save file (" + n + (n == head.length ? "+" : "")
                + " bytes, starting with 0x" + hex + "); expected a zip archive or a legacy torch pickle");
    }

    // ---------------------------------------------------------------- zip format

    private static Object loadZip(Path file) throws IOException {
        long fileSize = Files.size(file);
        ZipFile zip;
        try {
            zip = new ZipFile(file.toFile());
        } catch (IOException e) { // ZipException, or EOFException for an end record that points past the end
            throw new TorchPickleException(file + ": corrupt zip archive: " + messageOf(e), e);
        }
        List<Tensor> allocated = new ArrayList<>();
        try (zip) {
            String prefix = archivePrefix(zip, file);
            ZipEntry byteorderEntry = zip.getEntry(prefix + "byteorder");
            ByteOrder order = ByteOrder.LITTLE_ENDIAN;
            if (byteorderEntry != null) {
                String bo = new String(readSmallEntry(zip, byteorderEntry, 16, file), StandardCharsets.US_ASCII);
                order = switch (bo.trim()) {
                    case "little" -> ByteOrder.LITTLE_ENDIAN;
                    case "big" -> ByteOrder.BIG_ENDIAN;
                    default -> throw new TorchPickleException(file + ": entry " + byteorderEntry.getName()
                            + " holds '" + PickleMachine.shorten(bo) + "', expected 'little' or 'big'");
                };
            }
            ZipEntry pklEntry = zip.getEntry(prefix + "data.pkl");
            if (pklEntry == null) {
                throw new TorchPickleException(file + ": zip archive has no entry " + prefix + "data.pkl"
                        + " (a TorchScript archive or not a torch.save file)");
            }
            byte[] pickle = readSmallEntry(zip, pklEntry, Math.min(MAX_PICKLE_BYTES, maxInflated(pklEntry, fileSize)),
                    file);
            Map<String, TorchStorage> storages = new HashMap<>();
            long[] spent = {0};
            ByteOrder fileOrder = order;
            PickleMachine.PersistentLoader loader = (pid, m) -> zipStorage(pid, m, zip, prefix, fileOrder, fileSize,
                    storages, spent, allocated, file);
            Object result = new PickleMachine(ByteBuffer.wrap(pickle), file + " (entry " + pklEntry.getName() + ")",
                    loader).load();
            return storagesToTensors(result);
        } catch (TorchPickleException e) {
            throw e;
        } catch (IOException | IllegalArgumentException e) { // ZipFile: IAE for an entry name not in UTF-8
            throw new TorchPickleException(file + ": corrupt zip archive: " + messageOf(e), e);
        } finally {
            for (Tensor t : allocated) {
                t.close(); // the tensors' views keep the memory they use alive
            }
        }
    }

    /** The folder all entries live in ({@code archive/}), as torch's reader takes it from the first entry. */
    private static String archivePrefix(ZipFile zip, Path file) throws TorchPickleException {
        Enumeration<? extends ZipEntry> entries = zip.entries();
        if (!entries.hasMoreElements()) {
            throw new TorchPickleException(file + ": zip archive is empty");
        }
        String first = entries.nextElement().getName();
        int slash = first.indexOf('/');
        if (slash <= 0) {
            throw new TorchPickleException(file + ": first zip entry '" + PickleMachine.shorten(first)
                    + "' is not inside an archive folder; not a torch.save file");
        }
        return first.substring(0, slash + 1);
    }

    private static long maxInflated(ZipEntry e, long fileSize) {
        return e.getMethod() == ZipEntry.STORED ? fileSize : fileSize * MAX_DEFLATE_RATIO;
    }

    private static byte[] readSmallEntry(ZipFile zip, ZipEntry e, long max, Path file) throws IOException {
        long size = e.getSize();
        long cap = Math.min(max, Integer.MAX_VALUE - 16);
        if (size > cap) {
            throw new TorchPickleException(file + ": entry " + e.getName() + " claims " + size
                    + " bytes, more than the " + cap + " allowed");
        }
        try (InputStream in = zip.getInputStream(e)) {
            byte[] data = in.readNBytes((int) (size >= 0 ? size : cap) + 1);
            if (size >= 0 && data.length != size || data.length > cap) {
                throw new TorchPickleException(file + ": entry " + e.getName() + " holds " + data.length
                        + (data.length > size ? "+" : "") + " bytes, its header says " + size);
            }
            checkCrc(e, data, 0, data.length, null, file);
            return data;
        }
    }

    private static void checkCrc(ZipEntry e, byte[] data, int off, int len, CRC32 crc, Path file)
            throws TorchPickleException {
        CRC32 c = crc != null ? crc : new CRC32();
        c.update(data, off, len);
        if (crc == null && e.getCrc() != -1 && c.getValue() != e.getCrc()) {
            throw new TorchPickleException(file + ": entry " + e.getName() + " fails its CRC-32 check (corrupt data)");
        }
    }

    /** Persistent id {@code ('storage', StorageClass, key, location, numel)} of the zip format. */
    private static TorchStorage zipStorage(Object pid, PickleMachine m, ZipFile zip, String prefix, ByteOrder order,
            long fileSize, Map<String, TorchStorage> storages, long[] spent, List<Tensor> allocated, Path file)
            throws TorchPickleException {
        PickleMachine.PyTuple t = m.tuple(pid, "persistent id");
        if (t.size() != 5 || !"storage".equals(t.get(0))) {
            throw m.error("persistent id " + PickleMachine.describe(pid)
                    + " is not ('storage', type, key, location, numel)");
        }
        if (!(t.get(1) instanceof PickleGlobals.StorageClass type)) {
            throw m.error("persistent id: storage type is " + PickleMachine.describe(t.get(1)));
        }
        if (!(t.get(2) instanceof String key)) {
            throw m.error("persistent id: storage key is " + PickleMachine.describe(t.get(2)));
        }
        if (!(t.get(3) instanceof String)) {
            throw m.error("persistent id: storage location is " + PickleMachine.describe(t.get(3)));
        }
        TorchStorage cached = storages.get(key);
        if (cached != null) {
            return cached; // torch.load also reuses the first load of a key
        }
        long numel = PickleGlobals.toLong(t.get(4), PickleGlobals.Function.REBUILD_TENSOR_V2, "storage numel", m);
        int es = TorchDtypes.elementSize(type.dtype());
        if (numel < 0 || numel > Long.MAX_VALUE / es) {
            throw m.error("storage '" + PickleMachine.shorten(key) + "': bad element count " + numel);
        }
        long nbytes = numel * es;
        String name = prefix + "data/" + key;
        ZipEntry e = zip.getEntry(name);
        if (e == null || e.isDirectory()) {
            throw m.error("storage '" + PickleMachine.shorten(key) + "': the archive has no entry " + name);
        }
        if (e.getSize() >= 0 && e.getSize() != nbytes) {
            throw m.error("storage '" + key + "': entry " + name + " holds " + e.getSize() + " bytes, but "
                    + numel + " " + type + " elements need " + nbytes);
        }
        if (nbytes > maxInflated(e, fileSize)) {
            throw m.error("storage '" + key + "': " + nbytes + " bytes cannot come from a file of " + fileSize);
        }
        // entries may overlap in a crafted archive: the storages together must fit the file too
        long cost = e.getMethod() == ZipEntry.STORED ? nbytes : (nbytes + MAX_DEFLATE_RATIO - 1) / MAX_DEFLATE_RATIO;
        if (cost > fileSize - spent[0]) {
            throw m.error("storage '" + key + "': the storages add up to more bytes than a file of " + fileSize
                    + " can hold (overlapping zip entries?)");
        }
        spent[0] += cost;
        Tensor bytes = allocateBytes(nbytes, m, key);
        allocated.add(bytes);
        try (InputStream in = zip.getInputStream(e)) {
            CRC32 crc = new CRC32();
            long copied = copyInto(bytes, nbytes, in, order, type.dtype(), crc);
            if (copied != nbytes || in.read() != -1) {
                throw m.error("storage '" + key + "': entry " + name + " holds "
                        + (copied != nbytes ? copied : (nbytes + "+")) + " bytes, expected " + nbytes);
            }
            if (e.getCrc() != -1 && crc.getValue() != e.getCrc()) {
                throw m.error("storage '" + key + "': entry " + name + " fails its CRC-32 check (corrupt data)");
            }
        } catch (TorchPickleException tpe) {
            throw tpe;
        } catch (IOException io) {
            throw new TorchPickleException(m.source() + ": storage '" + key + "': cannot read entry " + name
                    + ": " + messageOf(io), io);
        }
        TorchStorage s = new TorchStorage(key, type.dtype(), bytes, 0, nbytes);
        storages.put(key, s);
        return s;
    }

    private static Tensor allocateBytes(long nbytes, PickleMachine m, String key) throws TorchPickleException {
        try (TensorOptions opts = new TensorOptions(ScalarType.Byte);
                MemoryFormatOptional format = new MemoryFormatOptional()) {
            return torch.empty(new long[] {nbytes}, opts, format);
        } catch (RuntimeException | OutOfMemoryError e) {
            throw m.error("storage '" + key + "': cannot allocate " + nbytes + " bytes: " + e.getMessage());
        }
    }

    /**
     * Streams up to {@code nbytes} from {@code in} into the tensor's memory, swapping byte order
     * when the file is big-endian; returns the number of bytes copied (less when the stream ends).
     */
    private static long copyInto(Tensor bytes, long nbytes, InputStream in, ByteOrder order, ScalarType dtype,
            CRC32 crc) throws IOException {
        if (nbytes == 0) {
            return 0; // an empty tensor has no data pointer
        }
        BytePointer dst = new BytePointer(bytes.data_ptr()).capacity(nbytes);
        int unit = TorchDtypes.swapUnit(dtype);
        byte[] buf = new byte[(int) Math.min(COPY_CHUNK, nbytes)];
        long done = 0;
        while (done < nbytes) {
            int want = (int) Math.min(buf.length, nbytes - done);
            int got = in.readNBytes(buf, 0, want);
            if (crc != null) {
                crc.update(buf, 0, got);
            }
            if (order == ByteOrder.BIG_ENDIAN && unit > 1) {
                swap(buf, got - got % unit, unit);
            }
            dst.position(done).put(buf, 0, got);
            done += got;
            if (got < want) {
                break;
            }
        }
        return done;
    }

    private static void swap(byte[] buf, int len, int unit) {
        for (int i = 0; i < len; i += unit) {
            for (int a = i, b = i + unit - 1; a < b; a++, b--) {
                byte x = buf[a];
                buf[a] = buf[b];
                buf[b] = x;
            }
        }
    }

    /**
     * Replaces storages that are values of their own (not inside a tensor) by 1-D tensors over
     * them, walking the tree iteratively (it may be deep or cyclic).
     */
    @SuppressWarnings("unchecked")
    private static Object storagesToTensors(Object root) {
        if (root instanceof TorchStorage s) {
            return s.wholeTensor();
        }
        java.util.ArrayDeque<Object> todo = new java.util.ArrayDeque<>();
        java.util.Set<Object> seen = java.util.Collections.newSetFromMap(new java.util.IdentityHashMap<>());
        if (root != null) {
            todo.push(root);
        }
        while (!todo.isEmpty()) {
            Object c = todo.pop();
            if (!seen.add(c)) {
                continue;
            }
            if (c instanceof LinkedHashMap<?, ?> m) {
                for (Map.Entry<Object, Object> e : ((Map<Object, Object>) m).entrySet()) {
                    e.setValue(visit(e.getValue(), todo));
                }
            } else if (c instanceof ArrayList<?> l) {
                for (int i = 0; i < l.size(); i++) {
                    ((List<Object>) l).set(i, visit(l.get(i), todo));
                }
            } else if (c instanceof PickleMachine.PyTuple t) {
                for (int i = 0; i < t.size(); i++) {
                    t.replace(i, visit(t.get(i), todo));
                }
            }
        }
        return root;
    }

    private static Object visit(Object v, java.util.ArrayDeque<Object> todo) {
        if (v instanceof TorchStorage s) {
            return s.wholeTensor();
        }
        if (v instanceof Map<?, ?> || v instanceof List<?>) {
            todo.push(v);
        }
        return v;
    }

    private static String messageOf(Exception e) {
        return e.getMessage() != null ? e.getMessage() : e.getClass().getSimpleName();
    }

    // ---------------------------------------------------------------- legacy format

    /**
     * The legacy stream: pickles of the magic number, the protocol version, the system info, the
     * object, the list of storage keys; then per key an int64 element count and the raw bytes.
     */
    private static Object loadLegacy(Path file) throws IOException {
        List<Tensor> allocated = new ArrayList<>();
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            long fileSize = ch.size();
            ByteBuffer data = ch.map(FileChannel.MapMode.READ_ONLY, 0, Math.min(fileSize, Integer.MAX_VALUE - 8));
            String source = file + " (legacy format)";
            PickleMachine.PersistentLoader none = (pid, m) -> {
                throw m.error("unexpected persistent id in a header pickle");
            };
            PickleMachine header = new PickleMachine(data, source + " magic number", none);
            Object magic = header.load();
            if (!LEGACY_MAGIC.equals(magic instanceof Long l ? BigInteger.valueOf(l) : magic)) {
                throw new TorchPickleException(source + ": bad magic number " + PickleMachine.describe(magic));
            }
            int pos = header.position();
            PickleMachine protocol = new PickleMachine(data.position(pos), source + " protocol version", none);
            Object version = protocol.load();
            if (!Long.valueOf(LEGACY_PROTOCOL_VERSION).equals(version)) {
                throw new TorchPickleException(source + ": protocol version " + PickleMachine.describe(version)
                        + " is not supported, expected " + LEGACY_PROTOCOL_VERSION);
            }
            pos = protocol.position();
            PickleMachine sysInfo = new PickleMachine(data.position(pos), source + " sys_info", none);
            Object info = sysInfo.load();
            ByteOrder order = ByteOrder.LITTLE_ENDIAN;
            if (info instanceof Map<?, ?> infoMap && Boolean.FALSE.equals(infoMap.get("little_endian"))) {
                order = ByteOrder.BIG_ENDIAN;
            } else if (!(info instanceof Map<?, ?>)) {
                throw new TorchPickleException(source + ": sys_info is " + PickleMachine.describe(info) + ", expected a dict");
            }
            pos = sysInfo.position();

            Map<String, TorchStorage> roots = new LinkedHashMap<>();
            long[] reserved = {0};
            PickleMachine.PersistentLoader loader = (pid, m) -> legacyStorage(pid, m, roots, reserved, fileSize,
                    allocated);
            PickleMachine body = new PickleMachine(data.position(pos), source, loader);
            Object result = body.load();
            pos = body.position();
            PickleMachine keysPickle = new PickleMachine(data.position(pos), source + " storage keys", none);
            Object keys = keysPickle.load();
            long offset = keysPickle.position();
            if (!(keys instanceof List<?> keyList)) {
                throw new TorchPickleException(source + ": storage key list is " + PickleMachine.describe(keys));
            }
            java.util.Set<String> seen = new java.util.HashSet<>();
            for (Object k : keyList) {
                TorchStorage s = k instanceof String key ? roots.get(key) : null;
                if (s == null || !seen.add((String) k)) {
                    throw new TorchPickleException(source + ": storage key " + PickleMachine.describe(k)
                            + (s == null ? " names no storage of the object" : " is listed twice"));
                }
                offset = readLegacyStorage(ch, offset, fileSize, s, order, source);
            }
            if (seen.size() != roots.size()) {
                List<String> missing = new ArrayList<>(roots.keySet());
                missing.removeAll(seen);
                throw new TorchPickleException(source + ": no data for storage '"
                        + PickleMachine.shorten(missing.get(0)) + "'");
            }
            return storagesToTensors(result);
        } finally {
            for (Tensor t : allocated) {
                t.close(); // the tensors' views keep the memory they use alive
            }
        }
    }

    /** Persistent id {@code ('storage', StorageClass, root_key, location, numel, view_metadata)}. */
    private static TorchStorage legacyStorage(Object pid, PickleMachine m, Map<String, TorchStorage> roots,
            long[] reserved, long fileSize, List<Tensor> allocated) throws TorchPickleException {
        PickleMachine.PyTuple t = m.tuple(pid, "persistent id");
        if (t.size() != 6 || !"storage".equals(t.get(0))) {
            throw m.error("persistent id " + PickleMachine.describe(pid)
                    + " is not ('storage', type, key, location, numel, view_metadata)");
        }
        if (!(t.get(1) instanceof PickleGlobals.StorageClass type)) {
            throw m.error("persistent id: storage type is " + PickleMachine.describe(t.get(1)));
        }
        if (!(t.get(2) instanceof String key)) {
            throw m.error("persistent id: storage key is " + PickleMachine.describe(t.get(2)));
        }
        if (!(t.get(3) instanceof String)) {
            throw m.error("persistent id: storage location is " + PickleMachine.describe(t.get(3)));
        }
        PickleGlobals.Function f = PickleGlobals.Function.REBUILD_TENSOR_V2;
        TorchStorage root = roots.get(key);
        if (root == null) {
            long numel = PickleGlobals.toLong(t.get(4), f, "storage numel", m);
            int es = TorchDtypes.elementSize(type.dtype());
            if (numel < 0 || numel > (fileSize - reserved[0]) / es) {
                throw m.error("storage '" + PickleMachine.shorten(key) + "': " + numel + " elements of " + type
                        + " cannot fit in the rest of a file of " + fileSize + " bytes");
            }
            reserved[0] += numel * es;
            Tensor bytes = allocateBytes(numel * es, m, key);
            allocated.add(bytes);
            root = new TorchStorage(key, type.dtype(), bytes, 0, numel * es);
            roots.put(key, root);
        }
        Object view = t.get(5);
        if (view == null) {
            return root;
        }
        PickleMachine.PyTuple v = m.tuple(view, "storage view metadata");
        if (v.size() != 3 || !(v.get(0) instanceof String viewKey)) {
            throw m.error("storage '" + key + "': view metadata is not (view_key, offset, size)");
        }
        long offset = PickleGlobals.toLong(v.get(1), f, "view offset", m);
        long size = PickleGlobals.toLong(v.get(2), f, "view size", m);
        if (offset < 0 || size < 0 || offset > root.numel() || size > root.numel() - offset) {
            throw m.error("storage '" + key + "': view [" + offset + ", +" + size + ") is outside its "
                    + root.numel() + " elements");
        }
        return root.slice(viewKey, offset, size);
    }

    /** Reads one storage's int64 element count and bytes at {@code offset}; returns the offset after it. */
    private static long readLegacyStorage(FileChannel ch, long offset, long fileSize, TorchStorage s, ByteOrder order,
            String source) throws IOException {
        if (fileSize - offset < 8) {
            throw new TorchPickleException(source + ": truncated: no element count for storage '" + s.key + "'");
        }
        ByteBuffer count = ByteBuffer.allocate(8).order(order);
        readFully(ch, count, offset);
        long numel = count.getLong(0);
        if (numel != s.numel()) {
            throw new TorchPickleException(source + ": storage '" + s.key + "' has " + numel
                    + " elements in the data section, its persistent id says " + s.numel());
        }
        offset += 8;
        if (fileSize - offset < s.nbytes) {
            throw new TorchPickleException(source + ": truncated: storage '" + s.key + "' needs " + s.nbytes
                    + " bytes, " + (fileSize - offset) + " left");
        }
        InputStream in = java.nio.channels.Channels.newInputStream(ch.position(offset));
        long copied = copyInto(s.bytesTensor(), s.nbytes, in, order, s.dtype, null);
        if (copied != s.nbytes) {
            throw new TorchPickleException(source + ": truncated storage '" + s.key + "'");
        }
        return offset + s.nbytes;
    }

    private static void readFully(FileChannel ch, ByteBuffer dst, long offset) throws IOException {
        while (dst.hasRemaining()) {
            int r = ch.read(dst, offset + dst.position());
            if (r < 0) {
                throw new java.io.EOFException();
            }
        }
    }
}
