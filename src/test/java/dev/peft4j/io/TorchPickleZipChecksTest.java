package dev.peft4j.io;

import static dev.peft4j.io.PickleTestTensors.longs;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.zip.CRC32;
import java.util.zip.ZipEntry;
import java.util.zip.ZipOutputStream;
import org.bytedeco.javacpp.ShortPointer;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Hand-built torch.save zip archives for what the fixtures do not hold: {@code _rebuild_tensor_v3}
 * over an untyped storage (how torch &ge; 2.3 saves uint16/uint32/uint64), and every check on
 * storages and views: each bad file must be refused naming the storage, entry or value.
 */
class TorchPickleZipChecksTest {
    @TempDir
    Path tmp;

    /** Writes pickle opcodes the way Python's pickler does at protocol 2. */
    static final class Pickle {
        private final ByteArrayOutputStream out = new ByteArrayOutputStream();

        Pickle() {
            out.write(0x80);
            out.write(2);
        }

        /** A legacy persistent id: ('storage', class, key, 'cpu', numel, None). */
        Pickle legacyStorage(String storageClass, String key, long numel) {
            return op('(').str("storage").global("torch", storageClass).str(key).str("cpu").integer(numel).op('N')
                    .op('t').op('Q');
        }

        Pickle op(char c) {
            out.write(c);
            return this;
        }

        Pickle global(String module, String name) {
            out.writeBytes(("c" + module + "\n" + name + "\n").getBytes(StandardCharsets.US_ASCII));
            return this;
        }

        Pickle str(String s) {
            byte[] b = s.getBytes(StandardCharsets.UTF_8);
            out.write('X');
            out.writeBytes(ByteBuffer.allocate(4).order(ByteOrder.LITTLE_ENDIAN).putInt(b.length).array());
            out.writeBytes(b);
            return this;
        }

        Pickle integer(long v) {
            out.write(0x8a); // LONG1, 8 bytes
            out.write(8);
            out.writeBytes(ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(v).array());
            return this;
        }

        Pickle ints(long... v) {
            op('(');
            for (long x : v) {
                integer(x);
            }
            return op('t');
        }

        /** {@code _rebuild_tensor_v2/_v3(storage pid, offset, size, stride, False, OrderedDict()[, dtype])}. */
        Pickle tensor(String rebuild, String storageClass, String key, long numel, long offset, long[] size,
                long[] stride, String v3Dtype) {
            global("torch._utils", rebuild).op('(');
            op('(').str("storage").global("torch", storageClass).str(key).str("cpu").integer(numel).op('t').op('Q');
            integer(offset).ints(size).ints(stride).op((char) 0x89);
            global("collections", "OrderedDict").op(')').op('R');
            if (v3Dtype != null) {
                global("torch", v3Dtype);
            }
            return op('t').op('R');
        }

        byte[] bytes() {
            out.write('.');
            return out.toByteArray();
        }
    }

    private Path zip(byte[] pickle, Map<String, byte[]> storages) throws IOException {
        Map<String, byte[]> entries = new LinkedHashMap<>();
        entries.put("archive/data.pkl", pickle);
        entries.put("archive/byteorder", "little".getBytes(StandardCharsets.US_ASCII));
        storages.forEach((k, v) -> entries.put("archive/data/" + k, v));
        entries.put("archive/version", "3\n".getBytes(StandardCharsets.US_ASCII));
        Path file = Files.createTempFile(tmp, "hand", ".pt");
        try (ZipOutputStream z = new ZipOutputStream(Files.newOutputStream(file))) {
            for (Map.Entry<String, byte[]> e : entries.entrySet()) {
                ZipEntry ze = new ZipEntry(e.getKey());
                ze.setMethod(ZipEntry.STORED);
                ze.setSize(e.getValue().length);
                CRC32 crc = new CRC32();
                crc.update(e.getValue());
                ze.setCrc(crc.getValue());
                z.putNextEntry(ze);
                z.write(e.getValue());
                z.closeEntry();
            }
        }
        return file;
    }

    private static byte[] le16(int... v) {
        ByteBuffer b = ByteBuffer.allocate(2 * v.length).order(ByteOrder.LITTLE_ENDIAN);
        for (int x : v) {
            b.putShort((short) x);
        }
        return b.array();
    }

    private Path oneTensor(String rebuild, String storageClass, long numel, long offset, long[] size, long[] stride,
            String v3Dtype, byte[] data) throws IOException {
        byte[] pickle = new Pickle().op('}').str("t")
                .tensor(rebuild, storageClass, "0", numel, offset, size, stride, v3Dtype).op('s').bytes();
        return zip(pickle, Map.of("0", data));
    }

    private static String refusal(Path file) {
        return assertThrows(TorchPickleException.class, () -> TorchPickle.load(file)).getMessage();
    }

    @Test
    void rebuildTensorV3ReadsAnUntypedStorageAsItsDtype() throws Exception {
        // 4 uint16 values in an 8-byte untyped storage; the tensor is [2] at element offset 1 (bytes 2..5)
        Path file = oneTensor("_rebuild_tensor_v3", "UntypedStorage", 8, 1, new long[] {2}, new long[] {1}, "uint16",
                le16(7, 65535, 300, 9));
        Tensor t = TorchPickle.loadStateDict(file).get("t");
        assertEquals(ScalarType.UInt16, t.scalar_type().intern());
        assertEquals(1, t.storage_offset());
        short[] raw = new short[2];
        new ShortPointer(t.data_ptr()).capacity(2).get(raw);
        assertArrayEquals(new short[] {(short) 65535, 300}, raw);
    }

    @Test
    void handBuiltV2MatchesItsBytes() throws Exception {
        // the builder itself, checked on a plain case: int16 [2,2] transposed view
        Path file = oneTensor("_rebuild_tensor_v2", "ShortStorage", 4, 0, new long[] {2, 2}, new long[] {1, 2}, null,
                le16(1, 2, 3, 4));
        assertArrayEquals(new long[] {1, 3, 2, 4}, longs(TorchPickle.loadStateDict(file).get("t")));
    }

    @Test
    void viewReachingPastItsStorageIsRefused() throws Exception {
        Path file = oneTensor("_rebuild_tensor_v2", "ShortStorage", 4, 1, new long[] {2, 2}, new long[] {2, 1}, null,
                le16(1, 2, 3, 4));
        String m = refusal(file);
        assertTrue(m.contains("storage '0'") && m.contains("reach element 4 of a storage of 4"), m);
    }

    @Test
    void negativeStrideIsRefused() throws Exception {
        String m = refusal(oneTensor("_rebuild_tensor_v2", "ShortStorage", 4, 3, new long[] {4}, new long[] {-1},
                null, le16(1, 2, 3, 4)));
        assertTrue(m.contains("negative size or stride"), m);
    }

    @Test
    void overflowingSizesAreRefused() throws Exception {
        String m = refusal(oneTensor("_rebuild_tensor_v2", "ShortStorage", 4, 0,
                new long[] {1L << 40, 1L << 40}, new long[] {1, 1}, null, le16(1, 2, 3, 4)));
        assertTrue(m.contains("overflow 64 bits"), m);
    }

    @Test
    void storageEntryOfTheWrongSizeIsRefusedBeforeAllocating() throws Exception {
        // the persistent id claims 2^40 elements; the entry holds 8 bytes
        String m = refusal(oneTensor("_rebuild_tensor_v2", "ShortStorage", 1L << 40, 0, new long[] {4},
                new long[] {1}, null, le16(1, 2, 3, 4)));
        assertTrue(m.contains("entry archive/data/0 holds 8 bytes, but 1099511627776 torch.ShortStorage elements"),
                m);
    }

    @Test
    void missingStorageEntryIsRefusedByName() throws Exception {
        byte[] pickle = new Pickle().op('}').str("t")
                .tensor("_rebuild_tensor_v2", "FloatStorage", "7", 1, 0, new long[] {1}, new long[] {1}, null)
                .op('s').bytes();
        String m = refusal(zip(pickle, Map.of()));
        assertTrue(m.contains("storage '7': the archive has no entry archive/data/7"), m);
    }

    @Test
    void corruptStorageBytesFailTheCrcCheck() throws Exception {
        Path file = oneTensor("_rebuild_tensor_v2", "ShortStorage", 4, 0, new long[] {4}, new long[] {1}, null,
                le16(1, 2, 3, 4));
        byte[] b = Files.readAllBytes(file);
        byte[] data = le16(1, 2, 3, 4);
        int at = indexOf(b, data);
        b[at + 3] ^= 1;
        Files.write(file, b);
        String m = refusal(file);
        assertTrue(m.contains("archive/data/0 fails its CRC-32 check"), m);
    }

    private static int indexOf(byte[] hay, byte[] needle) {
        outer:
        for (int i = 0; i + needle.length <= hay.length; i++) {
            for (int j = 0; j < needle.length; j++) {
                if (hay[i + j] != needle[j]) {
                    continue outer;
                }
            }
            return i;
        }
        throw new AssertionError("not found");
    }

    @Test
    void quantizedStorageIsRefusedByName() throws Exception {
        String m = refusal(oneTensor("_rebuild_tensor_v2", "QInt8Storage", 1, 0, new long[] {1}, new long[] {1}, null,
                new byte[] {1}));
        assertTrue(m.contains("'torch.QInt8Storage' is not allowed"), m);
    }

    @Test
    void archiveWithoutDataPklIsRefused() throws Exception {
        Path file = tmp.resolve("nopkl.pt");
        try (ZipOutputStream z = new ZipOutputStream(Files.newOutputStream(file))) {
            z.putNextEntry(new ZipEntry("archive/constants.pkl"));
            z.write(new byte[] {(byte) 0x80, 2, 'N', '.'});
            z.closeEntry();
        }
        String m = refusal(file);
        assertTrue(m.contains("no entry archive/data.pkl"), m);
    }

    @Test
    void requiresGradOnAnIntegerTensorIsRefusedCleanly() throws Exception {
        byte[] pickle = new Pickle().op('}').str("t").global("torch._utils", "_rebuild_tensor_v2").op('(')
                .op('(').str("storage").global("torch", "LongStorage").str("0").str("cpu").integer(1).op('t')
                .op('Q').integer(0).ints(1).ints(1).op((char) 0x88)
                .global("collections", "OrderedDict").op(')').op('R').op('t').op('R').op('s').bytes();
        String m = refusal(zip(pickle, Map.of("0", new byte[8])));
        assertTrue(m.contains("cannot set requires_grad"), m);
    }

    /** A legacy stream: magic, protocol 1001, sys_info, {"t": tensor over storage "k"}, ["k"], then data. */
    private Path legacy(long pidNumel, long dataNumel, byte[] data) throws IOException {
        ByteArrayOutputStream f = new ByteArrayOutputStream();
        f.writeBytes(new byte[] {(byte) 0x80, 2, (byte) 0x8a, 10, 0x6c, (byte) 0xfc, (byte) 0x9c, 0x46, (byte) 0xf9,
            0x20, 0x6a, (byte) 0xa8, 0x50, 0x19, '.'}); // LONG1 0x1950a86a20f9469cfc6c
        f.writeBytes(new Pickle().integer(1001).bytes());
        f.writeBytes(new Pickle().op('}').str("little_endian").op((char) 0x88).op('s').bytes());
        f.writeBytes(new Pickle().op('}').str("t").global("torch._utils", "_rebuild_tensor_v2").op('(')
                .legacyStorage("ShortStorage", "k", pidNumel).integer(0).ints(2).ints(1).op((char) 0x89)
                .global("collections", "OrderedDict").op(')').op('R').op('t').op('R').op('s').bytes());
        f.writeBytes(new Pickle().op(']').str("k").op('a').bytes());
        f.writeBytes(ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(dataNumel).array());
        f.writeBytes(data);
        Path file = Files.createTempFile(tmp, "legacy", ".pt");
        Files.write(file, f.toByteArray());
        return file;
    }

    @Test
    void handBuiltLegacyStreamLoads() throws Exception {
        Tensor t = TorchPickle.loadStateDict(legacy(2, 2, le16(-3, 5))).get("t");
        assertArrayEquals(new long[] {-3, 5}, longs(t));
    }

    @Test
    void legacyStorageLargerThanTheFileIsRefusedBeforeAllocating() throws Exception {
        String m = refusal(legacy(1L << 40, 2, le16(-3, 5)));
        assertTrue(m.contains("storage 'k': 1099511627776 elements of torch.ShortStorage cannot fit"), m);
    }

    @Test
    void legacyElementCountMismatchIsRefused() throws Exception {
        String m = refusal(legacy(2, 3, le16(-3, 5, 7)));
        assertTrue(m.contains("storage 'k' has 3 elements in the data section, its persistent id says 2"), m);
    }

    @Test
    void truncatedLegacyDataIsRefused() throws Exception {
        String m = refusal(legacy(2, 2, new byte[] {1, 0, 2}));
        assertTrue(m.contains("truncated: storage 'k' needs 4 bytes, 3 left"), m);
    }

    @Test
    void bareTensorIsNotAStateDict() {
        String m = assertThrows(TorchPickleException.class, () -> TorchPickle.loadStateDict(
                PickleTestTensors.fixture("peft-regression-lora-opt125m/output_bnb_8bit.pt"))).getMessage();
        assertTrue(m.contains("top level is tensor, expected a dict of str to tensor"), m);
    }

    /**
     * A crafted archive whose central directory lists {@code copies} storage entries that all point
     * at the same bytes (local header): each entry alone fits the file, together they do not.
     */
    private Path overlappingZip(int copies, int floats) throws IOException {
        Pickle p = new Pickle().op('}');
        for (int i = 0; i < copies; i++) {
            p.str("t" + i).tensor("_rebuild_tensor_v2", "FloatStorage", String.valueOf(i), floats, 0,
                    new long[] {floats}, new long[] {1}, null).op('s');
        }
        byte[] pkl = p.bytes();
        byte[] data = new byte[4 * floats];
        ByteBuffer f = ByteBuffer.allocate(1 << 16).order(ByteOrder.LITTLE_ENDIAN);
        int pklOffset = f.position();
        localHeader(f, "archive/data.pkl", pkl);
        int dataOffset = f.position();
        localHeader(f, "archive/data/0", data);
        int cenOffset = f.position();
        centralHeader(f, "archive/data.pkl", pkl, pklOffset);
        for (int i = 0; i < copies; i++) {
            centralHeader(f, "archive/data/" + i, data, dataOffset);
        }
        int cenSize = f.position() - cenOffset;
        f.putInt(0x06054b50).putShort((short) 0).putShort((short) 0).putShort((short) (copies + 1))
                .putShort((short) (copies + 1)).putInt(cenSize).putInt(cenOffset).putShort((short) 0);
        Path file = tmp.resolve("overlap" + copies + ".pt");
        Files.write(file, java.util.Arrays.copyOf(f.array(), f.position()));
        return file;
    }

    private static long crc(byte[] b) {
        CRC32 c = new CRC32();
        c.update(b);
        return c.getValue();
    }

    private static void localHeader(ByteBuffer f, String name, byte[] data) {
        byte[] n = name.getBytes(StandardCharsets.US_ASCII);
        f.putInt(0x04034b50).putShort((short) 20).putShort((short) 0).putShort((short) 0).putInt(0)
                .putInt((int) crc(data)).putInt(data.length).putInt(data.length).putShort((short) n.length)
                .putShort((short) 0).put(n).put(data);
    }

    private static void centralHeader(ByteBuffer f, String name, byte[] data, int localOffset) {
        byte[] n = name.getBytes(StandardCharsets.US_ASCII);
        f.putInt(0x02014b50).putShort((short) 20).putShort((short) 20).putShort((short) 0).putShort((short) 0)
                .putInt(0).putInt((int) crc(data)).putInt(data.length).putInt(data.length).putShort((short) n.length)
                .putShort((short) 0).putShort((short) 0).putShort((short) 0).putShort((short) 0).putInt(0)
                .putInt(localOffset).put(n);
    }

    @Test
    void overlappingEntriesCannotMultiplyTheMemoryAFileClaims() throws Exception {
        // one entry over the 4 KB block loads: the hand-crafted archive is a valid zip...
        Map<String, Tensor> one = TorchPickle.loadStateDict(overlappingZip(1, 1024));
        assertEquals(1, one.size());
        // ...forty of them claim 160 KB from a file of about 7 KB: refused before allocating past the file
        String m = refusal(overlappingZip(40, 1024));
        assertTrue(m.contains("the storages add up to more bytes than a file of"), m);
    }

    @Test
    void nonEmptyBackwardHooksAreRefused() throws Exception {
        // backward_hooks = {"h": None} instead of an empty OrderedDict
        byte[] pickle = new Pickle().op('}').str("t").global("torch._utils", "_rebuild_tensor_v2").op('(')
                .op('(').str("storage").global("torch", "FloatStorage").str("0").str("cpu").integer(1).op('t')
                .op('Q').integer(0).ints(1).ints(1).op((char) 0x89)
                .op('}').str("h").op('N').op('s').op('t').op('R').op('s').bytes();
        String m = refusal(zip(pickle, Map.of("0", new byte[4])));
        assertTrue(m.contains("backward hooks"), m);
    }
}
