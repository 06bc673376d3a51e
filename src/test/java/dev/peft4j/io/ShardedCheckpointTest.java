package dev.peft4j.io;

import static dev.peft4j.io.TestTensors.bytes;
import static dev.peft4j.io.TestTensors.fixture;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.bytedeco.pytorch.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class ShardedCheckpointTest {
    private static final Path SHARDED = fixture("safetensors-vectors/safetensors-jl/sharded/model.safetensors.index.json");
    private static final Path FULL = fixture("safetensors-vectors/safetensors-jl/non_sharded/model.safetensors");

    @TempDir
    Path tmp;

    /** A copy of the sharded fixture with its index replaced by {@code index}. */
    private Path shardedWithIndex(String index) throws IOException {
        try (Stream<Path> files = Files.list(SHARDED.getParent())) {
            for (Path f : (Iterable<Path>) files::iterator) {
                Files.copy(f, tmp.resolve(f.getFileName()));
            }
        }
        Path idx = tmp.resolve(ShardedCheckpoint.INDEX_FILE);
        Files.writeString(idx, index);
        return idx;
    }

    private static String originalIndex() throws IOException {
        return Files.readString(SHARDED);
    }

    @Test
    void shardedIndexHoldsTheSameTensorsAsTheSingleFile() throws Exception {
        // gendata.py split the same dict with huggingface_hub.split_torch_state_dict_into_shards
        for (Path open : List.of(SHARDED, SHARDED.getParent())) {
            try (ShardedCheckpoint sharded = ShardedCheckpoint.open(open); SafetensorsFile full = SafetensorsFile.open(FULL)) {
                assertEquals(6, sharded.shards().size());
                assertEquals(36, sharded.names().size());
                assertEquals(Map.of("total_size", "4305"), sharded.metadata());
                assertEquals(Map.of("format", "pt"), sharded.shards().get(0).metadata());
                assertEquals(sorted(full.names()), sorted(sharded.names()));
                Map<String, Tensor> all = sharded.tensors();
                for (String name : full.names()) {
                    try (Tensor a = full.get(name)) {
                        Tensor b = all.get(name);
                        assertEquals(a.scalar_type().intern(), b.scalar_type().intern(), name);
                        assertArrayEquals(a.shape(), b.shape(), name);
                        assertArrayEquals(bytes(a), bytes(b), name);
                    }
                }
                all.values().forEach(Tensor::close);
                // shard order: model-00001 first, its tensors in file order
                assertEquals("int64_3", sharded.names().get(0));
                assertEquals("model-00002-of-00006.safetensors",
                        sharded.shards().get(1).path().getFileName().toString());
            }
        }
    }

    private static List<String> sorted(List<String> names) {
        return names.stream().sorted().toList();
    }

    @Test
    void directoryWithModelSafetensorsOpensTheSingleFile() throws Exception {
        Files.copy(FULL, tmp.resolve("model.safetensors"));
        try (ShardedCheckpoint c = ShardedCheckpoint.open(tmp)) {
            assertEquals(1, c.shards().size());
            assertEquals(36, c.names().size());
            assertEquals(tmp.resolve("model.safetensors"), c.path());
        }
    }

    @Test
    void rejectsIndexListingATensorItsShardLacks() throws Exception {
        Path idx = shardedWithIndex(originalIndex().replace("\"weight_map\": {",
                "\"weight_map\": {\n    \"ghost\": \"model-00002-of-00006.safetensors\","));
        SafetensorsException e = assertThrows(SafetensorsException.class, () -> ShardedCheckpoint.open(idx));
        assertTrue(e.getMessage().contains(idx.toString()) && e.getMessage().contains("\"ghost\"")
                && e.getMessage().contains("model-00002-of-00006.safetensors"), e.getMessage());
    }

    @Test
    void rejectsShardTensorMissingFromTheIndex() throws Exception {
        // shard 3 holds float64_357 and bool_357; the index keeps only the first
        Path idx = shardedWithIndex(originalIndex().replace("\"bool_357\": \"model-00003-of-00006.safetensors\",", ""));
        SafetensorsException e = assertThrows(SafetensorsException.class, () -> ShardedCheckpoint.open(idx));
        assertTrue(e.getMessage().contains("\"bool_357\"") && e.getMessage().contains("not listed"), e.getMessage());
    }

    @Test
    void rejectsShardOutsideTheIndexDirectory() throws Exception {
        Path idx = shardedWithIndex("{\"weight_map\": {\"w\": \"../model-00002-of-00006.safetensors\"}}");
        SafetensorsException e = assertThrows(SafetensorsException.class, () -> ShardedCheckpoint.open(idx));
        assertTrue(e.getMessage().contains("not a file inside"), e.getMessage());
    }

    @Test
    void rejectsMissingShard() throws Exception {
        Path idx = shardedWithIndex("{\"weight_map\": {\"w\": \"model-00009-of-00009.safetensors\"}}");
        SafetensorsException e = assertThrows(SafetensorsException.class, () -> ShardedCheckpoint.open(idx));
        assertTrue(e.getMessage().contains("does not exist") && e.getMessage().contains("\"w\""), e.getMessage());
    }

    @Test
    void rejectsIndexThatIsNotJsonOrLacksWeightMap() throws Exception {
        Path idx = shardedWithIndex("{\"weight_map\": {\"w\": ");
        assertTrue(assertThrows(SafetensorsException.class, () -> ShardedCheckpoint.open(idx))
                .getMessage().contains("not valid JSON"));
        Files.writeString(idx, "{\"metadata\": {}}", StandardCharsets.UTF_8);
        assertTrue(assertThrows(SafetensorsException.class, () -> ShardedCheckpoint.open(idx))
                .getMessage().contains("weight_map"));
        Files.writeString(idx, "{\"weight_map\": {\"w\": \"a.safetensors\", \"w\": \"b.safetensors\"}}");
        assertTrue(assertThrows(SafetensorsException.class, () -> ShardedCheckpoint.open(idx))
                .getMessage().contains("Duplicate field 'w'"));
    }

    @Test
    void unknownTensorNamesTheCheckpoint() throws Exception {
        try (ShardedCheckpoint c = ShardedCheckpoint.open(SHARDED)) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> c.get("nope"));
            assertTrue(e.getMessage().contains(SHARDED.toString()) && e.getMessage().contains("\"nope\""));
        }
    }
}
