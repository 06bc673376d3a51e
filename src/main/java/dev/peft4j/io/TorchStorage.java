package dev.peft4j.io;

import java.util.Arrays;
import org.bytedeco.pytorch.LongOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * A storage of a {@code torch.save} file: a region of a 1-D uint8 tensor that owns the bytes
 * (one per storage key, so tensors that share a storage in the file share memory here), and the
 * dtype the file declared for it. Tensors are rebuilt as strided views of it.
 */
final class TorchStorage {
    private static final int MAX_DIMS = 64;

    final String key;
    final ScalarType dtype;
    private final Tensor bytes;
    private final long byteOffset;
    final long nbytes;

    TorchStorage(String key, ScalarType dtype, Tensor bytes, long byteOffset, long nbytes) {
        this.key = key;
        this.dtype = dtype;
        this.bytes = bytes;
        this.byteOffset = byteOffset;
        this.nbytes = nbytes;
    }

    /** A storage that is the sub-range [elementOffset, elementOffset + numel) of this one (legacy views). */
    TorchStorage slice(String viewKey, long elementOffset, long numel) {
        int es = TorchDtypes.elementSize(dtype);
        return new TorchStorage(viewKey, dtype, bytes, byteOffset + elementOffset * es, numel * es);
    }

    /** The whole uint8 buffer this storage is a region of (its bytes are written there). */
    Tensor bytesTensor() {
        return bytes;
    }

    /** The whole storage as a 1-D tensor of its dtype (a storage saved as a value of its own). */
    Tensor wholeTensor() {
        int es = TorchDtypes.elementSize(dtype);
        Tensor typed = dtype == ScalarType.Byte ? bytes : bytes.view(dtype);
        try (LongOptional offset = new LongOptional(byteOffset / es)) {
            return typed.as_strided(new long[] {nbytes / es}, new long[] {1}, offset);
        } finally {
            if (typed != bytes) {
                typed.close();
            }
        }
    }

    long numel() {
        return nbytes / TorchDtypes.elementSize(dtype);
    }

    /**
     * The tensor {@code torch._utils._rebuild_tensor_v2} would make: a view of this storage read as
     * {@code viewDtype}, with the given element offset, sizes and strides, bounds-checked first.
     */
    Tensor view(ScalarType viewDtype, long offset, long[] size, long[] stride, PickleMachine m)
            throws TorchPickleException {
        String where = "tensor on storage '" + key + "'";
        int es = TorchDtypes.elementSize(viewDtype);
        if (size.length != stride.length) {
            throw m.error(where + ": " + size.length + " sizes but " + stride.length + " strides");
        }
        if (size.length > MAX_DIMS) {
            throw m.error(where + ": " + size.length + " dimensions, at most " + MAX_DIMS + " supported");
        }
        if (offset < 0) {
            throw m.error(where + ": negative storage offset " + offset);
        }
        if (byteOffset % es != 0 || bytes.numel() % es != 0) {
            throw m.error(where + ": storage of " + nbytes + " bytes cannot be read as " + viewDtype);
        }
        long numel = 1;
        long lastIndex = 0; // index of the last element reached, relative to the offset
        try {
            for (int d = 0; d < size.length; d++) {
                if (size[d] < 0 || stride[d] < 0) {
                    throw m.error(where + ": negative size or stride in sizes " + Arrays.toString(size)
                            + ", strides " + Arrays.toString(stride));
                }
                numel = Math.multiplyExact(numel, size[d]);
                if (size[d] > 0) {
                    lastIndex = Math.addExact(lastIndex, Math.multiplyExact(size[d] - 1, stride[d]));
                }
            }
            long storageElements = nbytes / es;
            if (numel > 0 && Math.addExact(offset, lastIndex) >= storageElements) {
                throw m.error(where + ": sizes " + Arrays.toString(size) + ", strides " + Arrays.toString(stride)
                        + " and offset " + offset + " reach element " + Math.addExact(offset, lastIndex)
                        + " of a storage of " + storageElements + " " + viewDtype + " elements");
            }
            if (numel == 0 && offset > storageElements) {
                throw m.error(where + ": offset " + offset + " is past the end of a storage of "
                        + storageElements + " elements");
            }
        } catch (ArithmeticException e) {
            throw m.error(where + ": sizes " + Arrays.toString(size) + " and strides " + Arrays.toString(stride)
                    + " overflow 64 bits");
        }
        Tensor typed = viewDtype == ScalarType.Byte ? bytes : bytes.view(viewDtype);
        try (LongOptional absoluteOffset = new LongOptional(byteOffset / es + offset)) {
            return typed.as_strided(size, stride, absoluteOffset);
        } catch (RuntimeException e) {
            throw m.error(where + ": libtorch refused the view: " + e.getMessage());
        } finally {
            if (typed != bytes) {
                typed.close();
            }
        }
    }

    @Override
    public String toString() {
        return "storage '" + key + "' (" + dtype + ", " + nbytes + " bytes)";
    }
}
