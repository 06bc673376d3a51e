package dev.peft4j.io;

import static dev.peft4j.io.PickleTestTensors.fixture;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.math.BigInteger;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The restricted unpickler on its own: plain values pickled by Python's pickle module at every
 * protocol (0 to 5), and hand-written streams for the refusals.
 */
class PickleMachineTest {
    private static final PickleMachine.PersistentLoader NO_STORAGES = (pid, m) -> {
        throw m.error("no storages here");
    };

    private static Object run(byte[] pickle) throws TorchPickleException {
        return new PickleMachine(ByteBuffer.wrap(pickle), "test.pkl", NO_STORAGES).load();
    }

    private static byte[] bytes(int... b) {
        byte[] out = new byte[b.length];
        for (int i = 0; i < b.length; i++) {
            out[i] = (byte) b[i];
        }
        return out;
    }

    private static byte[] concat(byte[]... parts) {
        int n = 0;
        for (byte[] p : parts) {
            n += p.length;
        }
        ByteBuffer b = ByteBuffer.allocate(n);
        for (byte[] p : parts) {
            b.put(p);
        }
        return b.array();
    }

    private static byte[] ascii(String s) {
        return s.getBytes(java.nio.charset.StandardCharsets.ISO_8859_1);
    }

    @ParameterizedTest(name = "protocol {0}")
    @ValueSource(ints = {0, 1, 2, 3, 4, 5})
    void plainValuesOfEveryProtocol(int protocol) throws Exception {
        byte[] pickle = Files.readAllBytes(fixture("torch-pickle-goldens/plain_protocol" + protocol + ".pkl"));
        Map<?, ?> m = assertInstanceOf(Map.class, run(pickle));
        assertEquals(List.of(0L, 1L, -1L, 255L, 256L, 65535L, 65536L, -(1L << 31), 1L << 31, Long.MAX_VALUE,
                Long.MIN_VALUE, BigInteger.TWO.pow(70), BigInteger.TWO.pow(70).negate()), m.get("ints"));
        assertEquals(List.of(0.0, -1.5, 1e300, Double.POSITIVE_INFINITY), m.get("floats"));
        assertEquals("a\u00e9\u2603\uD83D\uDE00\\u0041\n", m.get("str"));
        assertArrayEquals(new byte[] {0, (byte) 0x80, (byte) 0xff}, (byte[]) m.get("bytes"));
        assertTrue(m.containsKey("none"));
        assertNull(m.get("none"));
        assertEquals(List.of(true, false), m.get("bools"));
        assertEquals(List.of(List.of(), List.of(1L), List.of(1L, 2L), List.of(1L, 2L, 3L), List.of(1L, 2L, 3L, 4L)),
                m.get("tuples"));
        assertEquals(Set.of(7L), m.get("set"));
        assertEquals(Set.of(8L), m.get("frozenset"));
        List<?> shared = assertInstanceOf(List.class, m.get("shared"));
        assertSame(shared.get(0), shared.get(1), "the memo gives one object for a shared list");
        assertEquals(Map.of("k", Map.of(1L, List.of(List.of()))), m.get("nested"));
        List<Long> range = new ArrayList<>();
        for (long i = 0; i < 2000; i++) {
            range.add(i);
        }
        assertEquals(range, m.get("long_list"));
    }

    @Test
    void unknownGlobalIsRefusedByNameBeforeAnythingIsCalled() {
        byte[] evil = concat(bytes(0x80, 2), ascii("cbuiltins\neval\n"), ascii("X"), bytes(4, 0, 0, 0), ascii("1+1"),
                bytes(0x85, 'R', '.'));
        TorchPickleException e = assertThrows(TorchPickleException.class, () -> run(evil));
        assertTrue(e.getMessage().contains("'builtins.eval' is not allowed") && e.getMessage().contains("test.pkl"),
                e.getMessage());
    }

    @Test
    void stackGlobalIsCheckedAgainstTheSameAllowList() {
        byte[] evil = concat(bytes(0x80, 4, 0x8c, 5), ascii("posix"), bytes(0x8c, 6), ascii("system"),
                bytes(0x93, '.'));
        TorchPickleException e = assertThrows(TorchPickleException.class, () -> run(evil));
        assertTrue(e.getMessage().contains("'posix.system'"), e.getMessage());
    }

    @Test
    void instObjAndExtensionOpcodesAreRefused() {
        for (byte[] p : new byte[][] {concat(bytes('('), ascii("iposix\nsystem\n.")), bytes('(', 'o', '.'),
            bytes(0x82, 1, '.'), bytes(0x92, '.')}) {
            TorchPickleException e = assertThrows(TorchPickleException.class, () -> run(p));
            assertTrue(e.getMessage().contains("not allowed"), e.getMessage());
        }
    }

    @Test
    void callingAValueThatIsNotAnAllowedFunctionIsRefused() {
        // ("x",) applied to a string
        byte[] p = concat(bytes(0x80, 2, 'X', 1, 0, 0, 0, 'f', 'X', 1, 0, 0, 0, 'x', 0x85, 'R', '.'));
        TorchPickleException e = assertThrows(TorchPickleException.class, () -> run(p));
        assertTrue(e.getMessage().contains("is not callable"), e.getMessage());
    }

    @Test
    void lengthsBeyondTheDataAreRefusedBeforeAllocating() {
        // BINUNICODE claiming 4 GiB - 1, BINBYTES8 claiming 2^62
        TorchPickleException e1 = assertThrows(TorchPickleException.class,
                () -> run(bytes(0x80, 2, 'X', 0xff, 0xff, 0xff, 0xff, 'a', '.')));
        assertTrue(e1.getMessage().contains("BINUNICODE needs 4294967295 bytes, 2 left"), e1.getMessage());
        TorchPickleException e2 = assertThrows(TorchPickleException.class,
                () -> run(bytes(0x80, 4, 0x8e, 0, 0, 0, 0, 0, 0, 0, 0x40, '.')));
        assertTrue(e2.getMessage().contains("BINBYTES8"), e2.getMessage());
        TorchPickleException e3 = assertThrows(TorchPickleException.class,
                () -> run(bytes(0x80, 2, 0x8b, 0, 0, 0, 0x10, '.')));
        assertTrue(e3.getMessage().contains("LONG4 needs 268435456 bytes"), e3.getMessage());
    }

    @Test
    void structuralErrorsNameTheOpcodeOffset() {
        TorchPickleException underflow = assertThrows(TorchPickleException.class, () -> run(bytes(0x80, 2, 'a', '.')));
        assertTrue(underflow.getMessage().contains("at pickle offset 2: stack underflow"), underflow.getMessage());
        TorchPickleException noStop = assertThrows(TorchPickleException.class, () -> run(bytes(0x80, 2, ']')));
        assertTrue(noStop.getMessage().contains("no STOP"), noStop.getMessage());
        TorchPickleException memo = assertThrows(TorchPickleException.class, () -> run(bytes(0x80, 2, 'h', 3, '.')));
        assertTrue(memo.getMessage().contains("memo index 3 was never stored"), memo.getMessage());
        TorchPickleException proto = assertThrows(TorchPickleException.class, () -> run(bytes(0x80, 6, 'N', '.')));
        assertTrue(proto.getMessage().contains("unsupported pickle protocol 6"), proto.getMessage());
        TorchPickleException unknown = assertThrows(TorchPickleException.class, () -> run(bytes(0xf0)));
        assertTrue(unknown.getMessage().contains("unknown opcode 0xf0"), unknown.getMessage());
        TorchPickleException two = assertThrows(TorchPickleException.class, () -> run(bytes('N', 'N', '.')));
        assertTrue(two.getMessage().contains("STOP with 2 values"), two.getMessage());
    }

    @Test
    void appendToATupleAndMutableKeysAreRefused() {
        // EMPTY_TUPLE, NONE, APPEND
        TorchPickleException t = assertThrows(TorchPickleException.class, () -> run(bytes(')', 'N', 'a', '.')));
        assertTrue(t.getMessage().contains("APPEND on tuple"), t.getMessage());
        // {[]: None}
        TorchPickleException k = assertThrows(TorchPickleException.class, () -> run(bytes('}', ']', 'N', 's', '.')));
        assertTrue(k.getMessage().contains("cannot be a dict key"), k.getMessage());
    }

    @Test
    void setAndOrderedDictCalledWithItems() throws Exception {
        // builtins.set([(1, 2)]) and collections.OrderedDict([("a", 1)]), as protocol 2 writes them
        Object set = run(concat(bytes(0x80, 2), ascii("cbuiltins\nset\n"), bytes(']', 'K', 1, 'K', 2, 0x86, 'a', 0x85,
                'R', '.')));
        assertEquals(Set.of(List.of(1L, 2L)), set);
        Object od = run(concat(bytes(0x80, 2), ascii("ccollections\nOrderedDict\n"), bytes(']', 'X', 1, 0, 0, 0, 'a',
                'K', 1, 0x86, 'a', 0x85, 'R', '.')));
        assertEquals(Map.of("a", 1L), od);
        // a list cannot be a set item (unhashable in Python too)
        TorchPickleException e = assertThrows(TorchPickleException.class, () -> run(concat(bytes(0x80, 2),
                ascii("cbuiltins\nset\n"), bytes(']', ']', 'a', 0x85, 'R', '.'))));
        assertTrue(e.getMessage().contains("builtins.set item: list of 0 cannot be a dict key or set item"),
                e.getMessage());
    }

    @Test
    void deeplyNestedListsDoNotOverflowTheStack() throws Exception {
        // 200k nested lists: ] ( ] ( ] ... a a a; the machine is iterative
        int depth = 200_000;
        ByteBuffer b = ByteBuffer.allocate(2 * depth + 2);
        for (int i = 0; i < depth; i++) {
            b.put((byte) ']');
        }
        for (int i = 1; i < depth; i++) {
            b.put((byte) 'a');
        }
        b.put((byte) '.');
        Object v = run(java.util.Arrays.copyOf(b.array(), b.position()));
        assertInstanceOf(List.class, v);
    }

    @Test
    void aLargeTupleReusedAsAKeyStaysLinear() {
        // a 200k-item tuple memoized, then set as a dict key 200k times: hashing is checked and cached once
        int n = 200_000;
        ByteBuffer b = ByteBuffer.allocate(3 * n + 64);
        b.put((byte) 0x80).put((byte) 2).put((byte) '}').put((byte) '(');
        for (int i = 0; i < n; i++) {
            b.put((byte) 'N');
        }
        b.put((byte) 't').put((byte) 'q').put((byte) 0).put((byte) '0'); // TUPLE, BINPUT 0, POP
        for (int i = 0; i < n / 2; i++) {
            b.put((byte) 'h').put((byte) 0).put((byte) 'N').put((byte) 's');
        }
        b.put((byte) '.');
        byte[] pickle = java.util.Arrays.copyOf(b.array(), b.position());
        Object v = org.junit.jupiter.api.Assertions.assertTimeoutPreemptively(java.time.Duration.ofSeconds(10),
                () -> run(pickle));
        assertEquals(1, assertInstanceOf(Map.class, v).size());
    }

    @Test
    void persistentIdsGoToTheLoader() {
        // ('storage',) BINPERSID: the test loader refuses, and its message comes out
        TorchPickleException e = assertThrows(TorchPickleException.class,
                () -> run(bytes(0x80, 2, 'X', 7, 0, 0, 0, 's', 't', 'o', 'r', 'a', 'g', 'e', 0x85, 'Q', '.')));
        assertTrue(e.getMessage().contains("no storages here"), e.getMessage());
    }
}
