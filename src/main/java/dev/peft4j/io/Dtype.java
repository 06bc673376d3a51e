package dev.peft4j.io;

import java.util.HashMap;
import java.util.Map;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * The dtypes the safetensors format defines, declared in the order of the Rust crate's {@code Dtype}
 * enum ({@code safetensors/src/tensor.rs}): its writer sorts tensors by this order, descending, so the
 * ordinal is part of the file layout.
 */
enum Dtype {
    BOOL(8, ScalarType.Bool),
    F4(4, null), // libtorch's Float4_e2m1fn_x2 packs two values per element: no element-wise match
    F6_E2M3(6, null),
    F6_E3M2(6, null),
    U8(8, ScalarType.Byte),
    I8(8, ScalarType.Char),
    F8_E5M2(8, ScalarType.Float8_e5m2),
    F8_E4M3(8, ScalarType.Float8_e4m3fn),
    F8_E8M0(8, ScalarType.Float8_e8m0fnu),
    F8_E4M3FNUZ(8, ScalarType.Float8_e4m3fnuz),
    F8_E5M2FNUZ(8, ScalarType.Float8_e5m2fnuz),
    I16(16, ScalarType.Short),
    U16(16, ScalarType.UInt16),
    F16(16, ScalarType.Half),
    BF16(16, ScalarType.BFloat16),
    I32(32, ScalarType.Int),
    U32(32, ScalarType.UInt32),
    F32(32, ScalarType.Float),
    C64(64, ScalarType.ComplexFloat),
    F64(64, ScalarType.Double),
    I64(64, ScalarType.Long),
    U64(64, ScalarType.UInt64);

    /** Size of one element in bits. */
    final int bits;
    /** The matching libtorch type, or null where libtorch has none. */
    final ScalarType scalarType;

    private static final Map<String, Dtype> BY_NAME = new HashMap<>();
    private static final Map<ScalarType, Dtype> BY_SCALAR_TYPE = new HashMap<>();

    static {
        for (Dtype d : values()) {
            BY_NAME.put(d.name(), d);
            if (d.scalarType != null) {
                BY_SCALAR_TYPE.put(d.scalarType, d);
            }
        }
    }

    Dtype(int bits, ScalarType scalarType) {
        this.bits = bits;
        this.scalarType = scalarType;
    }

    /** The dtype named {@code name} in a header, or null if the format defines none by that name. */
    static Dtype byName(String name) {
        return BY_NAME.get(name);
    }

    /** The dtype a tensor of libtorch type {@code type} is stored as, or null if the format has none. */
    static Dtype of(ScalarType type) {
        return BY_SCALAR_TYPE.get(type.intern());
    }

    /** Element size in bytes, for the types libtorch can hold (whole bytes). */
    int elementBytes() {
        return bits / 8;
    }
}
