package dev.peft4j.io;

import java.math.BigInteger;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.AbstractList;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashMap;
import java.util.IdentityHashMap;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.RandomAccess;
import java.util.Set;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * A restricted pickle virtual machine (protocols 0 to 5, the opcodes {@code torch.save} and plain
 * Python containers use). It builds only plain values, tensors and storages: every {@code GLOBAL}
 * is looked up in {@link PickleGlobals}' allow-list, the allowed callables are interpreted here,
 * and nothing else is ever called, so loading a file never runs code.
 *
 * <p>Every length read from the stream is checked against the bytes left before anything is
 * allocated; the machine is iterative (no recursion on the input's nesting).
 */
final class PickleMachine {
    /** Resolves a persistent id (a tuple naming a storage) to a storage. */
    interface PersistentLoader {
        Object load(Object pid, PickleMachine machine) throws TorchPickleException;
    }

    private static final int HIGHEST_PROTOCOL = 5;
    private static final int MAX_LONG_BYTES = 1024; // LONG1/LONG4 beyond 8 kbit are refused
    private static final int MAX_KEY_NESTING = 32;
    /**
     * Memo entries one pickle may store: {@code torch.save} memoizes about eight values per tensor,
     * so this allows state dicts of 250k tensors while capping the memo at 16 MiB.
     */
    static final int MAX_MEMO = 1 << 21;
    /** Values on the stack at once (a real pickle keeps its nesting and one batch of 1000 items). */
    static final int MAX_STACK = 1 << 20;
    /**
     * Items put into containers over the whole pickle (about 15 per tensor of a state dict): with
     * the limits above, this bounds the memory a pickle can make live to a few hundred MiB.
     */
    static final long MAX_ITEMS = 1L << 23;
    /** How the memo array holds a memoized None (null there means an empty slot). */
    private static final Object ABSENT_NONE = new Object();
    private static final Object MARK = new Object() {
        @Override
        public String toString() {
            return "MARK";
        }
    };

    private final ByteBuffer in;
    private final String source;
    private final PersistentLoader persistentLoader;
    private final ArrayList<Object> stack = new ArrayList<>();
    /** Memo indices are dense from 0 in what picklers write; a larger index than the limit is refused. */
    private Object[] memo = new Object[64];
    private int memoCount;
    private long items;
    /** Canonical copy of each tuple used as a key: equal keys become one object (see {@link PyTuple}). */
    private final HashMap<PyTuple, PyTuple> interned = new HashMap<>();
    private final Object internOwner = new Object();
    private final IdentityHashMap<String, Long> stringHashes = new IdentityHashMap<>();
    private int opcodeOffset;

    /**
     * @param in the pickle bytes from its position on; left just after {@code STOP} when done
     * @param source the file and entry, for error messages
     */
    PickleMachine(ByteBuffer in, String source, PersistentLoader persistentLoader) {
        this.in = in.duplicate().order(ByteOrder.LITTLE_ENDIAN);
        this.source = source;
        this.persistentLoader = persistentLoader;
    }

    /** Position in the stream after the last {@link #load()}. */
    int position() {
        return in.position();
    }

    /** An error at the opcode being run, naming the source. */
    TorchPickleException error(String detail) {
        return new TorchPickleException(source + ": at pickle offset " + opcodeOffset + ": " + detail);
    }

    String source() {
        return source;
    }

    /** Runs the stream up to {@code STOP} and returns the value it leaves. */
    Object load() throws TorchPickleException {
        clear();
        while (true) {
            if (!in.hasRemaining()) {
                opcodeOffset = in.position();
                throw error("truncated pickle: no STOP opcode before the end of the data");
            }
            opcodeOffset = in.position();
            int op = in.get() & 0xff;
            switch (op) {
                case 0x80 -> { // PROTO
                    int proto = u8();
                    if (proto > HIGHEST_PROTOCOL) {
                        throw error("unsupported pickle protocol " + proto);
                    }
                }
                case 0x95 -> { // FRAME: a length hint only
                    long len = in.remaining() >= 8 ? in.getLong() : -1;
                    if (len < 0 || len > in.remaining()) {
                        throw error("FRAME length " + len + " exceeds the " + in.remaining() + " bytes left");
                    }
                }
                case '.' -> { // STOP
                    if (stack.size() != 1) {
                        throw error("STOP with " + stack.size() + " values on the stack, expected 1");
                    }
                    Object result = stack.get(0);
                    if (result == MARK) {
                        throw error("STOP with a MARK on top of the stack");
                    }
                    clear();
                    return result;
                }
                case '(' -> stack.add(MARK);
                case '0' -> { // POP (a MARK on top is popped too, as Python does)
                    if (!stack.isEmpty() && stack.get(stack.size() - 1) == MARK) {
                        stack.remove(stack.size() - 1);
                    } else {
                        pop();
                    }
                }
                case '1' -> popMark(); // POP_MARK
                case '2' -> push(peek()); // DUP
                case 'N' -> push(null);
                case 0x88 -> push(Boolean.TRUE);
                case 0x89 -> push(Boolean.FALSE);
                case 'I' -> push(parseTextInt(line("INT"), true)); // INT (protocol 0; I00/I01 are bools)
                case 'L' -> push(parseTextInt(stripSuffixL(line("LONG")), false)); // LONG (protocol 0)
                case 'J' -> push((long) int32());
                case 'K' -> push((long) u8());
                case 'M' -> push((long) u16());
                case 0x8a -> push(longN(u8())); // LONG1
                case 0x8b -> push(longN(length32("LONG4"))); // LONG4
                case 'F' -> push(parseTextFloat(line("FLOAT")));
                case 'G' -> push(Double.longBitsToDouble(Long.reverseBytes(int64()))); // BINFLOAT is big-endian
                case 'X' -> push(utf8(length32("BINUNICODE")));
                case 0x8c -> push(utf8(u8())); // SHORT_BINUNICODE
                case 0x8d -> push(utf8(length64("BINUNICODE8")));
                case 'T' -> push(utf8(length32("BINSTRING"))); // Python 2 str, read as torch.load does (utf-8)
                case 'U' -> push(utf8(u8())); // SHORT_BINSTRING
                case 'B' -> push(bytes(length32("BINBYTES")));
                case 'C' -> push(bytes(u8())); // SHORT_BINBYTES
                case 0x8e -> push(bytes(length64("BINBYTES8")));
                case 0x96 -> push(bytes(length64("BYTEARRAY8")));
                case ']' -> push(new ArrayList<>());
                case 'l' -> push(new ArrayList<>(counted(popMark()))); // LIST
                case 'a' -> { // APPEND
                    Object item = pop();
                    list(peek(), "APPEND").add(item);
                    count(1);
                }
                case 'e' -> { // APPENDS
                    List<Object> items = counted(popMark());
                    list(peek(), "APPENDS").addAll(items);
                }
                case ')' -> push(PyTuple.of());
                case 't' -> push(PyTuple.of(counted(popMark()).toArray()));
                case 0x85 -> push(PyTuple.of(pop()));
                case 0x86 -> {
                    Object b = pop();
                    Object a = pop();
                    push(PyTuple.of(a, b));
                    count(2);
                }
                case 0x87 -> {
                    Object c = pop();
                    Object b = pop();
                    Object a = pop();
                    push(PyTuple.of(a, b, c));
                    count(3);
                }
                case '}' -> push(new LinkedHashMap<>());
                case 'd' -> { // DICT
                    List<Object> items = counted(popMark());
                    Map<Object, Object> dict = new LinkedHashMap<>();
                    putPairs(dict, items, "DICT");
                    push(dict);
                }
                case 's' -> { // SETITEM
                    Object value = pop();
                    Object key = pop();
                    dict(peek(), "SETITEM").put(hashable(key, "SETITEM key"), value);
                    count(2);
                }
                case 'u' -> { // SETITEMS
                    List<Object> items = counted(popMark());
                    putPairs(dict(peek(), "SETITEMS"), items, "SETITEMS");
                }
                case 0x8f -> push(new LinkedHashSet<>()); // EMPTY_SET
                case 0x90 -> { // ADDITEMS
                    List<Object> items = counted(popMark());
                    Set<Object> set = set(peek(), "ADDITEMS");
                    for (Object item : items) {
                        set.add(hashable(item, "ADDITEMS item"));
                    }
                }
                case 0x91 -> { // FROZENSET
                    Set<Object> set = new LinkedHashSet<>();
                    for (Object item : counted(popMark())) {
                        set.add(hashable(item, "FROZENSET item"));
                    }
                    push(Collections.unmodifiableSet(set));
                }
                case 'g' -> push(memoGet(parseMemoIndex(line("GET"))));
                case 'h' -> push(memoGet(u8()));
                case 'j' -> push(memoGet(u32()));
                case 'p' -> memoPut(parseMemoIndex(line("PUT")), peek());
                case 'q' -> memoPut(u8(), peek());
                case 'r' -> memoPut(u32(), peek());
                case 0x94 -> memoPut(memoCount, peek()); // MEMOIZE: the index is the memo's size
                case 'c' -> { // GLOBAL
                    String module = asciiLine("GLOBAL module");
                    String name = asciiLine("GLOBAL name");
                    push(PickleGlobals.resolve(module, name, this));
                }
                case 0x93 -> { // STACK_GLOBAL
                    Object name = pop();
                    Object module = pop();
                    if (!(module instanceof String m) || !(name instanceof String n)) {
                        throw error("STACK_GLOBAL needs two strings, got " + describe(module) + " and " + describe(name));
                    }
                    push(PickleGlobals.resolve(m, n, this));
                }
                case 'R' -> { // REDUCE
                    Object args = pop();
                    Object callable = pop();
                    push(PickleGlobals.call(callable, tuple(args, "REDUCE arguments"), this));
                }
                case 0x81 -> { // NEWOBJ: cls.__new__(cls, *args), allowed for the same classes
                    Object args = pop();
                    Object cls = pop();
                    push(PickleGlobals.call(cls, tuple(args, "NEWOBJ arguments"), this));
                }
                case 'b' -> { // BUILD: sets attributes; only OrderedDict's (state_dict()._metadata) are accepted
                    Object state = pop();
                    Object target = peek();
                    if (target instanceof LinkedHashMap<?, ?> && isAttributeDict(state)) {
                        break; // attributes of an OrderedDict are not items: dropped, as they carry no tensors
                    }
                    if (!isEmpty(state)) {
                        throw error("BUILD with a non-empty state " + describe(state) + " on " + describe(target)
                                + " is not supported");
                    }
                }
                case 'Q' -> push(persistentLoader.load(pop(), this)); // BINPERSID
                case 'P' -> push(persistentLoader.load(line("PERSID"), this)); // PERSID
                case 'i' -> throw error("opcode INST (instantiate a class) is not allowed");
                case 'o' -> throw error("opcode OBJ (instantiate a class) is not allowed");
                case 0x92 -> throw error("opcode NEWOBJ_EX is not allowed");
                case 0x82, 0x83, 0x84 -> throw error("opcode EXT (extension registry) is not allowed");
                case 0x97, 0x98 -> throw error("out-of-band buffers (NEXT_BUFFER/READONLY_BUFFER) are not supported");
                case 'S' -> throw error("opcode STRING (protocol 0 quoted str) is not supported");
                case 'V' -> push(rawUnicodeEscape(line("UNICODE", Integer.MAX_VALUE))); // protocol 0 str
                default -> throw error(String.format("unknown opcode 0x%02x", op));
            }
        }
    }

    // ---- stack ----

    private void push(Object value) throws TorchPickleException {
        if (stack.size() >= MAX_STACK) {
            throw error("more than " + MAX_STACK + " values on the pickle stack (a hostile file?)");
        }
        stack.add(value);
    }

    /** Counts items put into containers against {@link #MAX_ITEMS}. */
    private void count(long n) throws TorchPickleException {
        items += n;
        if (items > MAX_ITEMS) {
            throw error("more than " + MAX_ITEMS + " items in the pickle's containers (a hostile file?)");
        }
    }

    private List<Object> counted(List<Object> items) throws TorchPickleException {
        count(items.size());
        return items;
    }

    private void clear() {
        stack.clear();
        memo = new Object[64];
        memoCount = 0;
        items = 0;
        interned.clear();
        stringHashes.clear();
    }

    private Object pop() throws TorchPickleException {
        if (stack.isEmpty()) {
            throw error("stack underflow");
        }
        Object v = stack.remove(stack.size() - 1);
        if (v == MARK) {
            throw error("a MARK was popped as a value");
        }
        return v;
    }

    private Object peek() throws TorchPickleException {
        if (stack.isEmpty()) {
            throw error("stack underflow");
        }
        Object v = stack.get(stack.size() - 1);
        if (v == MARK) {
            throw error("a MARK was used as a value");
        }
        return v;
    }

    /** Pops everything above the topmost MARK, and the MARK. */
    private List<Object> popMark() throws TorchPickleException {
        int i = stack.size() - 1;
        while (i >= 0 && stack.get(i) != MARK) {
            i--;
        }
        if (i < 0) {
            throw error("no MARK on the stack");
        }
        List<Object> items = new ArrayList<>(stack.subList(i + 1, stack.size()));
        stack.subList(i, stack.size()).clear();
        return items;
    }

    private void memoPut(long index, Object value) throws TorchPickleException {
        if (index >= MAX_MEMO) {
            throw error("memo index " + index + " is beyond the limit of " + MAX_MEMO + " memo entries"
                    + " (a hostile file?)");
        }
        int i = (int) index;
        if (i >= memo.length) {
            memo = Arrays.copyOf(memo, (int) Math.min(MAX_MEMO, Math.max(2L * memo.length, i + 1L)));
        }
        if (memo[i] == null) {
            memoCount++;
        }
        memo[i] = value == null ? ABSENT_NONE : value;
    }

    private Object memoGet(long index) throws TorchPickleException {
        Object v = index >= 0 && index < memo.length ? memo[(int) index] : null;
        if (v == null) {
            throw error("memo index " + index + " was never stored");
        }
        return v == ABSENT_NONE ? null : v;
    }

    // ---- typed views of stack values ----

    @SuppressWarnings("unchecked")
    private List<Object> list(Object v, String op) throws TorchPickleException {
        if (v instanceof ArrayList<?> l) {
            return (List<Object>) l;
        }
        throw error(op + " on " + describe(v) + ", expected a list");
    }

    @SuppressWarnings("unchecked")
    private Map<Object, Object> dict(Object v, String op) throws TorchPickleException {
        if (v instanceof LinkedHashMap<?, ?> m) {
            return (Map<Object, Object>) m;
        }
        throw error(op + " on " + describe(v) + ", expected a dict");
    }

    @SuppressWarnings("unchecked")
    private Set<Object> set(Object v, String op) throws TorchPickleException {
        if (v instanceof LinkedHashSet<?> s) {
            return (Set<Object>) s;
        }
        throw error(op + " on " + describe(v) + ", expected a set");
    }

    PyTuple tuple(Object v, String what) throws TorchPickleException {
        if (v instanceof PyTuple t) {
            return t;
        }
        throw error(what + ": expected a tuple, got " + describe(v));
    }

    private void putPairs(Map<Object, Object> dict, List<Object> items, String op) throws TorchPickleException {
        if (items.size() % 2 != 0) {
            throw error(op + " with an odd number (" + items.size() + ") of keys and values");
        }
        for (int i = 0; i < items.size(); i += 2) {
            dict.put(hashable(items.get(i), op + " key"), items.get(i + 1));
        }
    }

    /**
     * Keys must be immutable values with value semantics (as Python's hashable ones), and tuples
     * only shallowly nested, so that hashing them cannot recurse without bound. Returns the key to
     * store: a tuple is replaced by its canonical copy, so that equal keys are one object and
     * comparing two keys never walks their trees (see {@link PyTuple#equals}).
     */
    Object hashable(Object key, String what) throws TorchPickleException {
        return canonical(key, what, 0);
    }

    private Object canonical(Object key, String what, int depth) throws TorchPickleException {
        if (key == null || key instanceof String || key instanceof Long || key instanceof BigInteger
                || key instanceof Double || key instanceof Boolean || key instanceof ScalarType) {
            return key;
        }
        if (key instanceof PyTuple t) {
            if (t.canonical != null) {
                return t.canonical; // a tuple reused through the memo is made canonical once
            }
            if (depth >= MAX_KEY_NESTING) {
                throw error(what + ": tuple nested deeper than " + MAX_KEY_NESTING);
            }
            long h = HASH_SEED;
            for (int i = 0; i < t.size(); i++) {
                Object item = canonical(t.get(i), what, depth + 1);
                t.replace(i, item); // an equal value: the tuple reads the same
                h = mix(h ^ keyHash(item));
            }
            t.keyHash = mix(h + t.size());
            t.keyHashed = true;
            PyTuple c = interned.putIfAbsent(t, t);
            if (c == null) {
                c = t;
                t.internOwner = internOwner;
            }
            t.canonical = c;
            return c;
        }
        throw error(what + ": " + describe(key) + " cannot be a dict key or set item");
    }

    /**
     * A hash of a key item mixed with a per-process seed, so that a file cannot be crafted with
     * many tuple keys of one hash (each tuple's hash is computed once, from its items' hashes).
     */
    private long keyHash(Object item) {
        if (item == null) {
            return 0x9e3779b97f4a7c15L;
        }
        if (item instanceof PyTuple t) {
            return t.keyHash;
        }
        if (item instanceof Long l) {
            return mix(l ^ HASH_SEED);
        }
        if (item instanceof Double d) {
            return mix(Double.doubleToLongBits(d) ^ HASH_SEED ^ 0x5851f42d4c957f2dL);
        }
        if (item instanceof String s) {
            Long cached = stringHashes.get(s);
            if (cached == null) {
                long h = HASH_SEED ^ 0x2545f4914f6cdd1dL;
                for (int i = 0; i < s.length(); i++) {
                    h = (h ^ s.charAt(i)) * 0x100000001b3L;
                }
                cached = mix(h);
                stringHashes.put(s, cached);
            }
            return cached;
        }
        if (item instanceof BigInteger b) {
            long h = HASH_SEED ^ 0x14057b7ef767814fL;
            for (byte x : b.toByteArray()) { // at most MAX_LONG_BYTES
                h = (h ^ (x & 0xff)) * 0x100000001b3L;
            }
            return mix(h);
        }
        return mix(item.hashCode() ^ HASH_SEED); // Boolean, ScalarType: few values
    }

    private static final long HASH_SEED = new java.security.SecureRandom().nextLong();

    /** The finalizer of SplitMix64: a bijection that spreads every input bit. */
    private static long mix(long z) {
        z = (z ^ (z >>> 30)) * 0xbf58476d1ce4e5b9L;
        z = (z ^ (z >>> 27)) * 0x94d049bb133111ebL;
        return z ^ (z >>> 31);
    }

    /** A dict of attribute names to values, with no tensor directly in it. */
    private static boolean isAttributeDict(Object state) {
        if (!(state instanceof Map<?, ?> m)) {
            return false;
        }
        for (Map.Entry<?, ?> e : m.entrySet()) {
            if (!(e.getKey() instanceof String) || e.getValue() instanceof Tensor) {
                return false;
            }
        }
        return true;
    }

    /** None, an empty dict/list/set, or a tuple of such (a BUILD state, hooks, metadata). */
    static boolean isEmpty(Object state) {
        if (state == null) {
            return true;
        }
        if (state instanceof Map<?, ?> m) {
            return m.isEmpty();
        }
        if (state instanceof Set<?> s) {
            return s.isEmpty();
        }
        if (state instanceof ArrayList<?> l) {
            return l.isEmpty();
        }
        if (state instanceof PyTuple t) { // e.g. (dict_state, slots_state)
            for (Object part : t) {
                if (!(part == null || part instanceof Map<?, ?> || part instanceof Set<?>) || !isEmpty(part)) {
                    return false;
                }
            }
            return true;
        }
        return false;
    }

    // ---- reading the stream ----

    private void need(long n, String what) throws TorchPickleException {
        if (n < 0 || n > in.remaining()) {
            throw error("truncated pickle: " + what + " needs " + n + " bytes, " + in.remaining() + " left");
        }
    }

    private int u8() throws TorchPickleException {
        need(1, "a 1-byte argument");
        return in.get() & 0xff;
    }

    private int u16() throws TorchPickleException {
        need(2, "a 2-byte argument");
        return in.getShort() & 0xffff;
    }

    private int int32() throws TorchPickleException {
        need(4, "a 4-byte argument");
        return in.getInt();
    }

    private long u32() throws TorchPickleException {
        return int32() & 0xffffffffL;
    }

    private long int64() throws TorchPickleException {
        need(8, "an 8-byte argument");
        return in.getLong();
    }

    /** A 4-byte length, checked against the bytes left. */
    private int length32(String op) throws TorchPickleException {
        long n = u32();
        need(n, op);
        return (int) n;
    }

    private int length64(String op) throws TorchPickleException {
        long n = int64();
        need(n, op);
        return (int) n;
    }

    private byte[] bytes(int n) throws TorchPickleException {
        need(n, "a byte string");
        byte[] b = new byte[n];
        in.get(b);
        return b;
    }

    private String utf8(int n) throws TorchPickleException {
        byte[] b = bytes(n);
        try {
            return StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .decode(ByteBuffer.wrap(b)).toString();
        } catch (CharacterCodingException e) {
            throw error("string of " + n + " bytes is not valid UTF-8");
        }
    }

    /** Bytes up to a newline (text opcodes of protocol 0 and GLOBAL), at most 4 KiB. */
    private String line(String op) throws TorchPickleException {
        return line(op, 4096);
    }

    private String line(String op, int maxLength) throws TorchPickleException {
        int start = in.position();
        int limit = (int) Math.min(in.limit(), (long) start + maxLength);
        for (int i = start; i < limit; i++) {
            if (in.get(i) == '\n') {
                byte[] b = new byte[i - start];
                in.get(b);
                in.get(); // the newline
                return new String(b, StandardCharsets.ISO_8859_1);
            }
        }
        throw error(op + ": no newline within " + (limit - start) + " bytes");
    }

    private String asciiLine(String op) throws TorchPickleException {
        String s = line(op);
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c < 0x20 || c > 0x7e) {
                throw error(op + " contains a non-printable character");
            }
        }
        return s;
    }

    /** Decodes Python's raw-unicode-escape: latin-1 text with backslash-u and backslash-U escapes. */
    private String rawUnicodeEscape(String latin1) throws TorchPickleException {
        StringBuilder b = new StringBuilder(latin1.length());
        for (int i = 0; i < latin1.length(); i++) {
            char c = latin1.charAt(i);
            int digits = c == '\\' && i + 1 < latin1.length()
                    ? (latin1.charAt(i + 1) == 'u' ? 4 : latin1.charAt(i + 1) == 'U' ? 8 : 0) : 0;
            if (digits == 0) {
                b.append(c);
                continue;
            }
            if (i + 2 + digits > latin1.length()) {
                throw error("UNICODE: truncated \\u escape");
            }
            try {
                int cp = Integer.parseUnsignedInt(latin1.substring(i + 2, i + 2 + digits), 16);
                b.appendCodePoint(cp);
            } catch (IllegalArgumentException e) {
                throw error("UNICODE: bad escape '" + shorten(latin1.substring(i, i + 2 + digits)) + "'");
            }
            i += 1 + digits;
        }
        return b.toString();
    }

    /** Little-endian two's complement integer of n bytes (LONG1/LONG4). */
    private Object longN(int n) throws TorchPickleException {
        if (n > MAX_LONG_BYTES) {
            throw error("integer of " + n + " bytes is longer than the " + MAX_LONG_BYTES + " allowed");
        }
        byte[] le = bytes(n);
        if (n == 0) {
            return 0L;
        }
        byte[] be = new byte[n];
        for (int i = 0; i < n; i++) {
            be[i] = le[n - 1 - i];
        }
        return normalize(new BigInteger(be));
    }

    /** Python ints come back as Long when they fit, else BigInteger. */
    private static Object normalize(BigInteger v) {
        return v.bitLength() < 64 ? (Object) v.longValue() : v;
    }

    private Object parseTextInt(String s, boolean boolAllowed) throws TorchPickleException {
        if (boolAllowed && s.equals("00")) {
            return Boolean.FALSE;
        }
        if (boolAllowed && s.equals("01")) {
            return Boolean.TRUE;
        }
        if (s.length() > 2 * MAX_LONG_BYTES + 2) {
            throw error("integer text of " + s.length() + " characters is too long");
        }
        try {
            return normalize(new BigInteger(s.trim()));
        } catch (NumberFormatException e) {
            throw error("bad integer text '" + shorten(s) + "'");
        }
    }

    private static String stripSuffixL(String s) {
        return s.endsWith("L") ? s.substring(0, s.length() - 1) : s;
    }

    private Object parseTextFloat(String s) throws TorchPickleException {
        String t = s.trim();
        switch (t) {
            case "nan":
                return Double.NaN;
            case "inf":
                return Double.POSITIVE_INFINITY;
            case "-inf":
                return Double.NEGATIVE_INFINITY;
            default:
                break;
        }
        try {
            if (!t.matches("[-+]?[0-9]*\\.?[0-9]*([eE][-+]?[0-9]+)?") || t.isEmpty()) {
                throw new NumberFormatException();
            }
            return Double.parseDouble(t);
        } catch (NumberFormatException e) {
            throw error("bad float text '" + shorten(s) + "'");
        }
    }

    private long parseMemoIndex(String s) throws TorchPickleException {
        try {
            long v = Long.parseLong(s.trim());
            if (v < 0) {
                throw new NumberFormatException();
            }
            return v;
        } catch (NumberFormatException e) {
            throw error("bad memo index '" + shorten(s) + "'");
        }
    }

    // ---- descriptions for messages (never recursive) ----

    static String describe(Object v) {
        if (v == null) {
            return "None";
        }
        if (v instanceof String s) {
            return "str '" + shorten(s) + "'";
        }
        if (v instanceof Long || v instanceof BigInteger) {
            return "int " + v;
        }
        if (v instanceof Double) {
            return "float " + v;
        }
        if (v instanceof Boolean b) {
            return b ? "True" : "False";
        }
        if (v instanceof byte[] b) {
            return "bytes of length " + b.length;
        }
        if (v instanceof PyTuple t) {
            return "tuple of " + t.size();
        }
        if (v instanceof List<?> l) {
            return "list of " + l.size();
        }
        if (v instanceof Map<?, ?> m) {
            return "dict of " + m.size();
        }
        if (v instanceof Set<?> s) {
            return "set of " + s.size();
        }
        if (v instanceof Tensor) {
            return "tensor";
        }
        if (v instanceof ScalarType) {
            return "dtype";
        }
        if (v instanceof PickleGlobals.Function f) {
            return f.qualifiedName;
        }
        return v.toString();
    }

    static String shorten(String s) {
        String t = s.length() > 80 ? s.substring(0, 80) + "..." : s;
        StringBuilder b = new StringBuilder();
        for (int i = 0; i < t.length(); i++) {
            char c = t.charAt(i);
            if (c < 0x20 || c == 0x7f) {
                b.append(String.format("\\x%02x", (int) c));
            } else {
                b.append(c);
            }
        }
        return b.toString();
    }

    /**
     * A Python tuple: an immutable list (kept distinct from a Python list, which APPEND may grow).
     *
     * <p>A tuple used as a dict key or set item is made canonical by the machine that read it:
     * its items are canonical, it hashes with a per-process seeded hash (not {@link List#hashCode},
     * so a key tuple must be looked up with an equal tuple of the same load, or found by
     * iterating), and two distinct canonical tuples of one load are unequal without comparing
     * their items. Comparing and hashing keys is then linear in their size, whatever the file.
     */
    static final class PyTuple extends AbstractList<Object> implements RandomAccess {
        private final Object[] items;
        /** The equal canonical tuple, once this one was used as a key (then it holds no tensor). */
        PyTuple canonical;
        /** The load this tuple is the canonical copy for; null when it is not one. */
        Object internOwner;
        long keyHash;
        boolean keyHashed;

        private PyTuple(Object[] items) {
            this.items = items;
        }

        static PyTuple of(Object... items) {
            return items.length == 0 ? new PyTuple(items) : new PyTuple(items.clone());
        }

        @Override
        public Object get(int index) {
            return items[index];
        }

        @Override
        public boolean equals(Object o) {
            if (o == this) {
                return true;
            }
            if (o instanceof PyTuple p) {
                if (internOwner != null && p.internOwner == internOwner) {
                    return false; // canonical copies of one load are equal only to themselves
                }
                if (keyHashed && p.keyHashed && keyHash != p.keyHash) {
                    return false;
                }
            }
            return super.equals(o); // items of key tuples are canonical: this does not recurse deeply
        }

        @Override
        public int hashCode() {
            return keyHashed ? (int) (keyHash ^ (keyHash >>> 32)) : super.hashCode();
        }

        /** For the machine's canonical keys and the loader's final pass (storages to tensors). */
        void replace(int index, Object value) {
            items[index] = value;
        }

        @Override
        public int size() {
            return items.length;
        }
    }
}
