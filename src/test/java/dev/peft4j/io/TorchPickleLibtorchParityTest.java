package dev.peft4j.io;

import static dev.peft4j.io.PickleTestTensors.fixture;
import static dev.peft4j.io.PickleTestTensors.strides;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.pytorch.ByteVector;
import org.bytedeco.pytorch.GenericDict;
import org.bytedeco.pytorch.GenericDictIterator;
import org.bytedeco.pytorch.IValue;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * An independent reference: libtorch's own C++ unpickler ({@code torch::pickle_load}) reads the
 * same zip files; every tensor must match ours bit for bit, with the same dtype, shape, strides
 * and storage offset, keys in the same order. Only files libtorch can read are compared: it
 * returns None for an {@code OrderedDict} top level (tiny_fair_checkpoint.pt, candle/test.pt) and
 * cannot load tensors saved from CUDA on a CPU build (both PEFT adapters and their logits were
 * saved from {@code cuda:0}), which is why peft4j has its own reader.
 */
class TorchPickleLibtorchParityTest {

    private static Map<String, Tensor> libtorch(String file) throws Exception {
        byte[] bytes = Files.readAllBytes(fixture(file));
        IValue v = torch.pickle_load(new ByteVector(bytes));
        Map<String, Tensor> out = new LinkedHashMap<>();
        if (v.isTensor()) {
            out.put("", v.toTensor());
            return out;
        }
        GenericDict d = v.toGenericDict();
        for (GenericDictIterator it = d.begin(); !it.equals(d.end()); it = it.increment()) {
            out.put(it.access().key().toStringRef().getString(), it.access().value().toTensor());
        }
        return out;
    }

    private static byte[] raw(Tensor t) {
        Tensor c = t.contiguous();
        long n = c.nbytes();
        byte[] b = new byte[(int) n];
        if (n > 0) {
            new BytePointer(c.data_ptr()).capacity(n).get(b);
        }
        return b;
    }

    @ParameterizedTest(name = "{0}")
    @ValueSource(strings = {
        "torch-pickle-vectors/candle/fortran_tensor_3d.pth",
        "torch-pickle-vectors/burn/float16.pt",
        "torch-pickle-vectors/burn/bool.pt",
        "torch-pickle-vectors/burn/large_shape.pt",
        "torch-pickle-vectors/burn/bfloat16.pt",
        "torch-pickle-vectors/burn/scalar.pt",
        "torch-pickle-vectors/burn/empty.pt",
        "torch-pickle-goldens/all_dtypes_dict.pt",
        "torch-pickle-goldens/views_dict.pt",
    })
    void sameTensorsAsLibtorchsUnpickler(String file) throws Exception {
        Map<String, Tensor> reference = libtorch(file);
        Object ours = TorchPickle.load(fixture(file));
        Map<String, Tensor> mine = ours instanceof Tensor t ? Map.of("", t) : TorchPickle.loadStateDict(fixture(file));
        assertEquals(new ArrayList<>(reference.keySet()), new ArrayList<>(mine.keySet()), file + " keys");
        assertTrue(!reference.isEmpty());
        for (String key : reference.keySet()) {
            Tensor want = reference.get(key);
            Tensor got = mine.get(key);
            String where = file + " " + key;
            assertEquals(want.scalar_type().intern(), got.scalar_type().intern(), where + " dtype");
            assertArrayEquals(want.shape(), got.shape(), where + " shape");
            assertArrayEquals(strides(want), strides(got), where + " strides");
            assertEquals(want.storage_offset(), got.storage_offset(), where + " storage offset");
            assertArrayEquals(raw(want), raw(got), where + " bytes");
        }
        List<String> keys = new ArrayList<>(reference.keySet());
        assertEquals(keys.size(), mine.size());
    }
}
