package dev.peft4j.io;

import static dev.peft4j.io.TestTensors.bytes;
import static dev.peft4j.io.TestTensors.fixture;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

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
    void rejectsShardNameThatIsNoFileName() throws Exception {
        Path idx = shardedWithIndex("{\"weight_map\": {\"w\": \"a\\u0000b.safetensors\"}}");
        SafetensorsException e = assertThrows(SafetensorsException.class, () -> ShardedCheckpoint.open(idx));
        assertTrue(e.getMessage().contains("not a valid file name") && e.getMessage().contains("\"w\""), e.getMessage());
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

    @Test
    void opensASingleSafetensorsFileAndTensorsOutliveClose() throws Exception {
        ShardedCheckpoint c = ShardedCheckpoint.open(FULL);
        assertEquals(List.of(FULL), c.shards().stream().map(SafetensorsFile::path).toList());
        Tensor t = c.get("float32_357");
        c.close();
        try (SafetensorsFile full = SafetensorsFile.open(FULL); Tensor again = full.get("float32_357")) {
            assertArrayEquals(bytes(again), bytes(t));
        }
        t.close();
        assertThrows(IllegalStateException.class, () -> c.get("float32_357"));
    }

    /**
     * gendata.py split its dict with huggingface_hub's split_torch_state_dict_into_shards(max_shard_size=1000)
     * and saved each shard with safetensors: given the same tensors in the same order (the index's
     * weight_map order), our writer produces the same six shard files, byte for byte.
     */
    @Test
    void writesTheSameShardsAsHuggingfaceHubsSplit() throws Exception {
        com.fasterxml.jackson.databind.JsonNode weightMap = new com.fasterxml.jackson.databind.ObjectMapper()
                .readTree(SHARDED.toFile()).get("weight_map");
        Path out = tmp.resolve("saved");
        try (SafetensorsFile full = SafetensorsFile.open(FULL)) {
            Map<String, Tensor> ordered = new java.util.LinkedHashMap<>();
            weightMap.fieldNames().forEachRemaining(name -> ordered.put(name, full.get(name)));
            ShardedCheckpoint.write(out, ordered, 1000);
            ordered.values().forEach(Tensor::close);
        }
        for (int i = 1; i <= 6; i++) {
            String shard = String.format("model-%05d-of-00006.safetensors", i);
            assertArrayEquals(Files.readAllBytes(SHARDED.resolveSibling(shard)), Files.readAllBytes(out.resolve(shard)), shard);
        }
        try (ShardedCheckpoint back = ShardedCheckpoint.open(out)) {
            assertEquals(Map.of("total_size", "4305"), back.metadata());
            assertEquals(sorted(List.copyOf((java.util.Collection<String>) iterable(weightMap.fieldNames()))),
                    sorted(back.names()));
            for (String name : back.names()) {
                assertEquals(weightMap.get(name).textValue(), shardName(back, name), name);
            }
        }
    }

    private static List<String> iterable(java.util.Iterator<String> it) {
        List<String> all = new java.util.ArrayList<>();
        it.forEachRemaining(all::add);
        return all;
    }

    private static String shardName(ShardedCheckpoint c, String tensor) {
        return c.shards().stream().filter(s -> s.contains(tensor)).findFirst().orElseThrow()
                .path().getFileName().toString();
    }

    /** Python: json.dumps(index, indent=2, sort_keys=True) + "\n" (ensure_ascii, code-point key order). */
    @Test
    void indexTextMatchesPythonsJsonDumps() {
        Map<String, String> weightMap = new java.util.HashMap<>();
        weightMap.put("b.weight", "model-00002-of-00002.safetensors");
        weightMap.put("a.w\u00e9ight", "model-00001-of-00002.safetensors");
        weightMap.put("\uD83D\uDE00", "model-00002-of-00002.safetensors");
        weightMap.put("\uffff", "model-00001-of-00002.safetensors");
        weightMap.put("q\"\\\u007f", "model-00001-of-00002.safetensors");
        Map<String, String> pythonOrder = new java.util.TreeMap<>((a, b) ->
                java.util.Arrays.compare(a.codePoints().toArray(), b.codePoints().toArray()));
        pythonOrder.putAll(weightMap);
        // printed by python3 -c 'import json; print(json.dumps({...}, indent=2, sort_keys=True))'
        String python = "{\n"
                + "  \"metadata\": {\n"
                + "    \"total_size\": 28\n"
                + "  },\n"
                + "  \"weight_map\": {\n"
                + "    \"a.w\\u00e9ight\": \"model-00001-of-00002.safetensors\",\n"
                + "    \"b.weight\": \"model-00002-of-00002.safetensors\",\n"
                + "    \"q\\\"\\\\\\u007f\": \"model-00001-of-00002.safetensors\",\n"
                + "    \"\\uffff\": \"model-00001-of-00002.safetensors\",\n"
                + "    \"\\ud83d\\ude00\": \"model-00002-of-00002.safetensors\"\n"
                + "  }\n"
                + "}\n";
        assertEquals(python, ShardedCheckpoint.indexJson(28, pythonOrder));
    }

    @Test
    void savingOneShardWritesModelSafetensorsAndRemovesStaleShards() throws Exception {
        Path out = tmp.resolve("saved");
        try (SafetensorsFile full = SafetensorsFile.open(FULL)) {
            Map<String, Tensor> all = full.tensors();
            ShardedCheckpoint.write(out, all, 1000);
            assertTrue(Files.exists(out.resolve(ShardedCheckpoint.INDEX_FILE)));
            try (Stream<Path> files = Files.list(out)) {
                assertTrue(files.count() >= 3, "shards + index");
            }
            ShardedCheckpoint.write(out, all, 1L << 30);
            all.values().forEach(Tensor::close);
        }
        try (Stream<Path> files = Files.list(out)) {
            assertEquals(List.of("model.safetensors"), files.map(p -> p.getFileName().toString()).toList());
        }
        try (ShardedCheckpoint back = ShardedCheckpoint.open(out)) {
            assertEquals(36, back.names().size());
        }
    }

    /** Corrupted index files (bytes flipped, JSON-significant bytes dropped in) fail only with SafetensorsException. */
    @Test
    void corruptedIndexesOnlyEverFailWithSafetensorsException() throws Exception {
        byte[] index = Files.readAllBytes(SHARDED);
        shardedWithIndex(originalIndex());
        Path idx = tmp.resolve(ShardedCheckpoint.INDEX_FILE);
        java.util.Random random = new java.util.Random(42);
        byte[] json = "{}[]\":,0123456789-./\\\u0000 ".getBytes(StandardCharsets.UTF_8);
        int opened = 0;
        int rejected = 0;
        for (int i = 0; i < 1500; i++) {
            byte[] m = index.clone();
            for (int k = 1 + random.nextInt(3); k > 0; k--) {
                int at = random.nextInt(m.length);
                m[at] = random.nextBoolean() ? json[random.nextInt(json.length)] : (byte) (m[at] ^ (1 << random.nextInt(8)));
            }
            Files.write(idx, m);
            try (ShardedCheckpoint c = ShardedCheckpoint.open(idx)) {
                c.names().forEach(n -> c.get(n).close());
                opened++;
            } catch (SafetensorsException expected) {
                rejected++;
            } catch (Throwable unexpected) {
                fail("index mutant " + i + ": " + new String(m, StandardCharsets.UTF_8), unexpected);
            }
        }
        assertTrue(rejected > 500 && opened > 10, "opened " + opened + ", rejected " + rejected);
    }
}
