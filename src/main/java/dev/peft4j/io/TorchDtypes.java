package dev.peft4j.io;

import java.util.Map;
import org.bytedeco.pytorch.global.torch.ScalarType;

/** The dtypes a {@code torch.save} file may name, by storage class and by {@code torch.<dtype>} name. */
final class TorchDtypes {
    private TorchDtypes() {}

    /** {@code torch.<Name>Storage} classes of tensors that can be rebuilt (quantized ones cannot). */
    private static final Map<String, ScalarType> STORAGE_CLASSES = Map.ofEntries(
            Map.entry("DoubleStorage", ScalarType.Double),
            Map.entry("FloatStorage", ScalarType.Float),
            Map.entry("HalfStorage", ScalarType.Half),
            Map.entry("BFloat16Storage", ScalarType.BFloat16),
            Map.entry("LongStorage", ScalarType.Long),
            Map.entry("IntStorage", ScalarType.Int),
            Map.entry("ShortStorage", ScalarType.Short),
            Map.entry("CharStorage", ScalarType.Char),
            Map.entry("ByteStorage", ScalarType.Byte),
            Map.entry("BoolStorage", ScalarType.Bool),
            Map.entry("ComplexFloatStorage", ScalarType.ComplexFloat),
            Map.entry("ComplexDoubleStorage", ScalarType.ComplexDouble),
            // untyped byte storages (torch >= 2.0 uses them for dtypes without a typed storage class)
            Map.entry("UntypedStorage", ScalarType.Byte));

    /** {@code torch.<name>} dtype objects. */
    private static final Map<String, ScalarType> DTYPE_NAMES = Map.ofEntries(
            Map.entry("float32", ScalarType.Float), Map.entry("float", ScalarType.Float),
            Map.entry("float64", ScalarType.Double), Map.entry("double", ScalarType.Double),
            Map.entry("float16", ScalarType.Half), Map.entry("half", ScalarType.Half),
            Map.entry("bfloat16", ScalarType.BFloat16),
            Map.entry("int64", ScalarType.Long), Map.entry("long", ScalarType.Long),
            Map.entry("int32", ScalarType.Int), Map.entry("int", ScalarType.Int),
            Map.entry("int16", ScalarType.Short), Map.entry("short", ScalarType.Short),
            Map.entry("int8", ScalarType.Char),
            Map.entry("uint8", ScalarType.Byte),
            Map.entry("uint16", ScalarType.UInt16),
            Map.entry("uint32", ScalarType.UInt32),
            Map.entry("uint64", ScalarType.UInt64),
            Map.entry("bool", ScalarType.Bool),
            Map.entry("complex32", ScalarType.ComplexHalf), Map.entry("chalf", ScalarType.ComplexHalf),
            Map.entry("complex64", ScalarType.ComplexFloat), Map.entry("cfloat", ScalarType.ComplexFloat),
            Map.entry("complex128", ScalarType.ComplexDouble), Map.entry("cdouble", ScalarType.ComplexDouble),
            Map.entry("float8_e4m3fn", ScalarType.Float8_e4m3fn),
            Map.entry("float8_e5m2", ScalarType.Float8_e5m2),
            Map.entry("float8_e4m3fnuz", ScalarType.Float8_e4m3fnuz),
            Map.entry("float8_e5m2fnuz", ScalarType.Float8_e5m2fnuz));

    /** The dtype of storage class {@code name}, or null when it is not one we rebuild. */
    static ScalarType ofStorageClass(String name) {
        return STORAGE_CLASSES.get(name);
    }

    /** The dtype {@code torch.<name>}, or null. */
    static ScalarType ofName(String name) {
        return DTYPE_NAMES.get(name);
    }

    /** Bytes per element, from a fixed table (every dtype in the two maps above). */
    static int elementSize(ScalarType dtype) {
        return switch (dtype.intern()) {
            case Byte, Char, Bool, Float8_e4m3fn, Float8_e5m2, Float8_e4m3fnuz, Float8_e5m2fnuz -> 1;
            case Short, Half, BFloat16, UInt16 -> 2;
            case Int, Float, UInt32, ComplexHalf -> 4;
            case Long, Double, UInt64, ComplexFloat -> 8;
            case ComplexDouble -> 16;
            default -> throw new IllegalArgumentException("no element size for " + dtype);
        };
    }

    /** Size of the units to byte-swap when a file is big-endian (complex: each part). */
    static int swapUnit(ScalarType dtype) {
        int es = elementSize(dtype);
        return switch (dtype.intern()) {
            case ComplexHalf, ComplexFloat, ComplexDouble -> es / 2;
            default -> es;
        };
    }
}
