package dev.peft4j.io;

import dev.peft4j.io.PickleMachine.PyTuple;
import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * The allow-list of Python globals, mirroring {@code torch._weights_only_unpickler}: ordered dicts,
 * the tensor and parameter rebuild functions, storage classes, {@code torch.Size},
 * {@code torch.device}, dtype objects, {@code _codecs.encode} (how protocol 2 writes bytes) and
 * the builtin set types. Each is interpreted in Java; any other global is refused by name.
 */
final class PickleGlobals {
    private PickleGlobals() {}

    /** An allowed callable. */
    enum Function {
        ORDERED_DICT("collections.OrderedDict"),
        REBUILD_TENSOR("torch._utils._rebuild_tensor"),
        REBUILD_TENSOR_V2("torch._utils._rebuild_tensor_v2"),
        REBUILD_TENSOR_V3("torch._utils._rebuild_tensor_v3"),
        REBUILD_PARAMETER("torch._utils._rebuild_parameter"),
        REBUILD_PARAMETER_WITH_STATE("torch._utils._rebuild_parameter_with_state"),
        REBUILD_FROM_TYPE_V2("torch._tensor._rebuild_from_type_v2"),
        TORCH_SIZE("torch.Size"),
        TORCH_DEVICE("torch.device"),
        CODECS_ENCODE("_codecs.encode"),
        SET("builtins.set"),
        FROZENSET("builtins.frozenset"),
        BYTEARRAY("builtins.bytearray"),
        /** Only as the type argument of {@code _rebuild_from_type_v2}. */
        TENSOR_CLASS("torch.Tensor"),
        PARAMETER_CLASS("torch.nn.parameter.Parameter");

        final String qualifiedName;

        Function(String qualifiedName) {
            this.qualifiedName = qualifiedName;
        }
    }

    /** A {@code torch.<Name>Storage} class, as named in a storage's persistent id. */
    record StorageClass(String name, ScalarType dtype) {
        @Override
        public String toString() {
            return "torch." + name;
        }
    }

    /** Looks {@code module.name} up in the allow-list; refuses anything else, naming it. */
    static Object resolve(String module, String name, PickleMachine m) throws TorchPickleException {
        String qualified = module + "." + name;
        switch (qualified) {
            case "collections.OrderedDict":
                return Function.ORDERED_DICT;
            case "torch._utils._rebuild_tensor":
                return Function.REBUILD_TENSOR;
            case "torch._utils._rebuild_tensor_v2":
                return Function.REBUILD_TENSOR_V2;
            case "torch._utils._rebuild_tensor_v3":
                return Function.REBUILD_TENSOR_V3;
            case "torch._utils._rebuild_parameter":
                return Function.REBUILD_PARAMETER;
            case "torch._utils._rebuild_parameter_with_state":
                return Function.REBUILD_PARAMETER_WITH_STATE;
            case "torch._tensor._rebuild_from_type_v2":
                return Function.REBUILD_FROM_TYPE_V2;
            case "torch.Size":
                return Function.TORCH_SIZE;
            case "torch.device":
                return Function.TORCH_DEVICE;
            case "_codecs.encode":
                return Function.CODECS_ENCODE;
            case "builtins.set", "__builtin__.set":
                return Function.SET;
            case "builtins.frozenset", "__builtin__.frozenset":
                return Function.FROZENSET;
            case "builtins.bytearray", "__builtin__.bytearray":
                return Function.BYTEARRAY;
            case "torch.Tensor", "torch._tensor.Tensor":
                return Function.TENSOR_CLASS;
            case "torch.nn.parameter.Parameter", "torch.nn.Parameter":
                return Function.PARAMETER_CLASS;
            default:
                break;
        }
        if (module.equals("torch") || module.equals("torch.storage") || module.equals("torch.cuda")) {
            ScalarType storageDtype = TorchDtypes.ofStorageClass(name);
            if (storageDtype != null) {
                return new StorageClass(name, storageDtype); // CUDA storages are loaded to the CPU
            }
        }
        if (module.equals("torch")) {
            ScalarType dtype = TorchDtypes.ofName(name);
            if (dtype != null) {
                return dtype;
            }
        }
        throw m.error("global '" + PickleMachine.shorten(qualified)
                + "' is not allowed (only tensors, storages and plain values are loaded)");
    }

    /** Applies an allowed callable (REDUCE or NEWOBJ) to its arguments. */
    static Object call(Object callable, PyTuple args, PickleMachine m) throws TorchPickleException {
        if (!(callable instanceof Function f)) {
            throw m.error(PickleMachine.describe(callable) + " is not callable");
        }
        return switch (f) {
            case ORDERED_DICT -> orderedDict(args, m);
            case REBUILD_TENSOR -> rebuildTensor(f, args, 4, 4, m);
            case REBUILD_TENSOR_V2 -> rebuildTensor(f, args, 6, 7, m);
            case REBUILD_TENSOR_V3 -> rebuildTensor(f, args, 7, 8, m);
            case REBUILD_PARAMETER, REBUILD_PARAMETER_WITH_STATE -> rebuildParameter(f, args, m);
            case REBUILD_FROM_TYPE_V2 -> rebuildFromType(args, m);
            case TORCH_SIZE -> torchSize(args, m);
            case TORCH_DEVICE -> torchDevice(args, m);
            case CODECS_ENCODE -> encode(args, m);
            case SET -> setOf(f, args, m);
            case FROZENSET -> Collections.unmodifiableSet(setOf(f, args, m));
            case BYTEARRAY -> bytearray(args, m);
            case PARAMETER_CLASS -> newParameter(args, m);
            case TENSOR_CLASS -> throw m.error("calling " + f.qualifiedName + " directly is not allowed");
        };
    }

    private static TorchPickleException arity(Function f, PyTuple args, PickleMachine m) {
        return m.error(f.qualifiedName + " called with " + args.size() + " arguments");
    }

    private static Map<Object, Object> orderedDict(PyTuple args, PickleMachine m) throws TorchPickleException {
        Map<Object, Object> dict = new LinkedHashMap<>();
        if (args.isEmpty()) {
            return dict;
        }
        if (args.size() != 1) {
            throw arity(Function.ORDERED_DICT, args, m);
        }
        for (Object pair : iterable(args.get(0), Function.ORDERED_DICT, m)) {
            if (!(pair instanceof List<?> kv) || kv.size() != 2) {
                throw m.error("collections.OrderedDict: item " + PickleMachine.describe(pair)
                        + " is not a (key, value) pair");
            }
            dict.put(m.hashable(kv.get(0), "collections.OrderedDict key"), kv.get(1));
        }
        return dict;
    }

    /** {@code set(iterable)} / {@code frozenset(iterable)}: items must be hashable values. */
    private static Set<Object> setOf(Function f, PyTuple args, PickleMachine m) throws TorchPickleException {
        if (args.size() > 1) {
            throw arity(f, args, m);
        }
        Set<Object> s = new LinkedHashSet<>();
        if (args.size() == 1) {
            for (Object item : iterable(args.get(0), f, m)) {
                s.add(m.hashable(item, f.qualifiedName + " item"));
            }
        }
        return s;
    }

    private static List<?> iterable(Object v, Function f, PickleMachine m) throws TorchPickleException {
        if (v instanceof List<?> l) {
            return l;
        }
        throw m.error(f.qualifiedName + ": expected a list or tuple, got " + PickleMachine.describe(v));
    }

    /** {@code _rebuild_tensor(storage, offset, size, stride)}, v2 adds requires_grad, hooks[, metadata], v3 dtype. */
    private static Tensor rebuildTensor(Function f, PyTuple args, int minArgs, int maxArgs, PickleMachine m)
            throws TorchPickleException {
        if (args.size() < minArgs || args.size() > maxArgs) {
            throw arity(f, args, m);
        }
        if (!(args.get(0) instanceof TorchStorage storage)) {
            throw m.error(f.qualifiedName + ": argument 0 is " + PickleMachine.describe(args.get(0))
                    + ", expected a storage");
        }
        long offset = toLong(args.get(1), f, "storage_offset", m);
        long[] size = longs(args.get(2), f, "size", m);
        long[] stride = longs(args.get(3), f, "stride", m);
        boolean requiresGrad = false;
        ScalarType dtype = storage.dtype;
        if (f != Function.REBUILD_TENSOR) {
            if (!(args.get(4) instanceof Boolean b)) {
                throw m.error(f.qualifiedName + ": requires_grad is " + PickleMachine.describe(args.get(4)));
            }
            requiresGrad = b;
            checkNoHooks(args.get(5), f, m);
        }
        int metadataIndex = 6;
        if (f == Function.REBUILD_TENSOR_V3) {
            if (!(args.get(6) instanceof ScalarType d)) {
                throw m.error(f.qualifiedName + ": dtype is " + PickleMachine.describe(args.get(6)));
            }
            dtype = d;
            metadataIndex = 7;
        }
        if (args.size() > metadataIndex && !PickleMachine.isEmpty(args.get(metadataIndex))) {
            throw m.error(f.qualifiedName + ": tensor metadata " + PickleMachine.describe(args.get(metadataIndex))
                    + " is not supported");
        }
        Tensor t = storage.view(dtype, offset, size, stride, m);
        return requiresGrad ? setRequiresGrad(t, f, m) : t;
    }

    private static Tensor setRequiresGrad(Tensor t, Function f, PickleMachine m) throws TorchPickleException {
        try {
            t.requires_grad_(true);
            return t;
        } catch (RuntimeException e) {
            t.close();
            throw m.error(f.qualifiedName + ": cannot set requires_grad: " + e.getMessage());
        }
    }

    private static void checkNoHooks(Object hooks, Function f, PickleMachine m) throws TorchPickleException {
        if (!PickleMachine.isEmpty(hooks)) {
            throw m.error(f.qualifiedName + ": backward hooks " + PickleMachine.describe(hooks) + " are not supported");
        }
    }

    /** {@code _rebuild_parameter(data, requires_grad, backward_hooks[, state])}. */
    private static Tensor rebuildParameter(Function f, PyTuple args, PickleMachine m) throws TorchPickleException {
        int expected = f == Function.REBUILD_PARAMETER ? 3 : 4;
        if (args.size() != expected) {
            throw arity(f, args, m);
        }
        if (!(args.get(0) instanceof Tensor data)) {
            throw m.error(f.qualifiedName + ": data is " + PickleMachine.describe(args.get(0)) + ", expected a tensor");
        }
        if (!(args.get(1) instanceof Boolean requiresGrad)) {
            throw m.error(f.qualifiedName + ": requires_grad is " + PickleMachine.describe(args.get(1)));
        }
        checkNoHooks(args.get(2), f, m);
        if (expected == 4 && !PickleMachine.isEmpty(args.get(3))) {
            throw m.error(f.qualifiedName + ": parameter state " + PickleMachine.describe(args.get(3))
                    + " is not supported");
        }
        if (requiresGrad == data.requires_grad()) {
            return data;
        }
        if (!requiresGrad) {
            data.requires_grad_(false);
            return data;
        }
        return setRequiresGrad(data, f, m);
    }

    /** {@code Parameter(data, requires_grad=True)}, as NEWOBJ of older files builds it. */
    private static Tensor newParameter(PyTuple args, PickleMachine m) throws TorchPickleException {
        if (args.isEmpty() || args.size() > 2 || !(args.get(0) instanceof Tensor data)) {
            throw m.error(Function.PARAMETER_CLASS.qualifiedName + ": expected (tensor[, requires_grad])");
        }
        boolean requiresGrad = true;
        if (args.size() == 2) {
            if (!(args.get(1) instanceof Boolean b)) {
                throw m.error(Function.PARAMETER_CLASS.qualifiedName + ": requires_grad is "
                        + PickleMachine.describe(args.get(1)));
            }
            requiresGrad = b;
        }
        if (requiresGrad == data.requires_grad()) {
            return data;
        }
        return requiresGrad ? setRequiresGrad(data, Function.PARAMETER_CLASS, m) : data.requires_grad_(false);
    }

    /** {@code _rebuild_from_type_v2(func, new_type, args, state)} for plain tensors and parameters. */
    private static Object rebuildFromType(PyTuple args, PickleMachine m) throws TorchPickleException {
        String name = Function.REBUILD_FROM_TYPE_V2.qualifiedName;
        if (args.size() != 4) {
            throw arity(Function.REBUILD_FROM_TYPE_V2, args, m);
        }
        Object func = args.get(0);
        if (func != Function.REBUILD_TENSOR_V2 && func != Function.REBUILD_TENSOR_V3
                && func != Function.REBUILD_TENSOR && func != Function.REBUILD_PARAMETER) {
            throw m.error(name + ": function " + PickleMachine.describe(func) + " is not allowed");
        }
        if (args.get(1) != Function.TENSOR_CLASS && args.get(1) != Function.PARAMETER_CLASS) {
            throw m.error(name + ": type " + PickleMachine.describe(args.get(1)) + " is not allowed");
        }
        if (!PickleMachine.isEmpty(args.get(3))) {
            throw m.error(name + ": state " + PickleMachine.describe(args.get(3)) + " is not supported");
        }
        return call(func, m.tuple(args.get(2), name + " arguments"), m);
    }

    private static PyTuple torchSize(PyTuple args, PickleMachine m) throws TorchPickleException {
        if (args.size() != 1) {
            throw arity(Function.TORCH_SIZE, args, m);
        }
        long[] dims = longs(args.get(0), Function.TORCH_SIZE, "sizes", m);
        Object[] boxed = new Object[dims.length];
        for (int i = 0; i < dims.length; i++) {
            boxed[i] = dims[i];
        }
        return PyTuple.of(boxed);
    }

    /** {@code torch.device("cuda:0")} or {@code torch.device("cuda", 0)}: the device string. */
    private static String torchDevice(PyTuple args, PickleMachine m) throws TorchPickleException {
        if (args.size() == 1 && args.get(0) instanceof String s) {
            return s;
        }
        if (args.size() == 2 && args.get(0) instanceof String s && args.get(1) instanceof Long i) {
            return s + ":" + i;
        }
        throw m.error("torch.device: unsupported arguments (" + args.size() + ")");
    }

    /** {@code _codecs.encode(str, "latin1")}: how protocol 2 pickles Python 3 bytes. */
    private static byte[] encode(PyTuple args, PickleMachine m) throws TorchPickleException {
        if (args.size() == 2 && args.get(0) instanceof String s && args.get(1) instanceof String enc) {
            return latin1(s, enc, "_codecs.encode", m);
        }
        throw m.error("_codecs.encode: expected (str, encoding), got " + args.size() + " arguments");
    }

    private static byte[] bytearray(PyTuple args, PickleMachine m) throws TorchPickleException {
        if (args.isEmpty()) {
            return new byte[0];
        }
        if (args.size() == 1 && args.get(0) instanceof byte[] b) {
            return b.clone();
        }
        if (args.size() == 2 && args.get(0) instanceof String s && args.get(1) instanceof String enc) {
            return latin1(s, enc, "builtins.bytearray", m);
        }
        throw m.error("builtins.bytearray: unsupported arguments (" + args.size() + ")");
    }

    private static byte[] latin1(String s, String encoding, String who, PickleMachine m)
            throws TorchPickleException {
        String e = encoding.toLowerCase(java.util.Locale.ROOT).replace('_', '-');
        if (!e.equals("latin1") && !e.equals("latin-1") && !e.equals("iso-8859-1")) {
            throw m.error(who + ": encoding '" + PickleMachine.shorten(encoding) + "' is not supported");
        }
        for (int i = 0; i < s.length(); i++) {
            if (s.charAt(i) > 0xff) {
                throw m.error(who + ": character U+" + Integer.toHexString(s.charAt(i)) + " is not latin-1");
            }
        }
        return s.getBytes(StandardCharsets.ISO_8859_1);
    }

    static long toLong(Object v, Function f, String what, PickleMachine m) throws TorchPickleException {
        if (v instanceof Long l) {
            return l;
        }
        if (v instanceof BigInteger) {
            throw m.error(f.qualifiedName + ": " + what + " " + v + " does not fit in 64 bits");
        }
        throw m.error(f.qualifiedName + ": " + what + " is " + PickleMachine.describe(v) + ", expected an int");
    }

    private static long[] longs(Object v, Function f, String what, PickleMachine m) throws TorchPickleException {
        if (!(v instanceof List<?> l)) {
            throw m.error(f.qualifiedName + ": " + what + " is " + PickleMachine.describe(v) + ", expected a tuple");
        }
        List<Object> items = new ArrayList<>(l);
        long[] out = new long[items.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = toLong(items.get(i), f, what + "[" + i + "]", m);
        }
        return out;
    }
}
