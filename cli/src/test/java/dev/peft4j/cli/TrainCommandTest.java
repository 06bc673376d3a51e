package dev.peft4j.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code peft4j train}: a text file in, a PEFT adapter out that lowers the loss and loads back through the CLI. */
class TrainCommandTest {
    @Test
    void trainsAnAdapterThatLowersTheLossAndLoadsBack(@TempDir Path tmp) throws Exception {
        Path model = TinyModels.llamaWithTokenizer(tmp.resolve("tiny"), 5);
        Path data = tmp.resolve("data.txt");
        Files.writeString(data, "hello world the adapter is a low rank adapter\n".repeat(24));
        Path out = tmp.resolve("adapter");
        Cli.Result r = Cli.run("train", "--model", model.toString(), "--data", data.toString(), "--out",
                out.toString(), "--seq-len", "16", "--batch-size", "4", "--lr", "1e-2", "--max-steps", "30",
                "--lora-dropout", "0", "--target-modules", "q_proj,k_proj,v_proj,o_proj");
        assertEquals(0, r.rc(), r.toString());
        Matcher mt = Pattern.compile("loss on the data ([0-9.]+) -> ([0-9.]+)").matcher(r.out());
        assertTrue(mt.find(), r.out());
        double before = Double.parseDouble(mt.group(1));
        double after = Double.parseDouble(mt.group(2));
        assertTrue(after < 0.7 * before, "loss " + before + " -> " + after);
        assertTrue(Files.exists(out.resolve("adapter_config.json")));
        assertTrue(Files.exists(out.resolve("adapter_model.safetensors")));
        // the written adapter loads through the CLI and changes the model's output
        Cli.Result base = Cli.run("generate", "--model", model.toString(), "--prompt", "hello", "--max-new-tokens",
                "6", "--print-ids");
        Cli.Result adapted = Cli.run("generate", "--model", model.toString(), "--adapter", out.toString(),
                "--prompt", "hello", "--max-new-tokens", "6", "--print-ids");
        assertEquals(0, adapted.rc(), adapted.toString());
        assertTrue(!base.out().equals(adapted.out()), "the trained adapter changes nothing:\n" + adapted.out());
    }

    @Test
    void aRunResumedFromItsCheckpointWritesTheSameAdapter(@TempDir Path tmp) throws Exception {
        Path model = TinyModels.llamaWithTokenizer(tmp.resolve("tiny"), 5);
        Path data = tmp.resolve("data.txt");
        Files.writeString(data, "hello world the adapter is a low rank adapter\n".repeat(12));
        String[] common = {"train", "--model", model.toString(), "--data", data.toString(), "--seq-len", "16",
            "--batch-size", "2", "--lr", "1e-2", "--max-steps", "6", "--save-steps", "3"};
        Path whole = tmp.resolve("whole");
        Cli.Result r = Cli.run(concat(common, "--out", whole.toString()));
        assertEquals(0, r.rc(), r.toString());
        assertTrue(Files.isDirectory(whole.resolve("checkpoint-3"))
                && Files.isDirectory(whole.resolve("checkpoint-6")));
        // a second run stopped after step 3 (its checkpoint copied), then resumed from it: the same adapter, bit for
        // bit
        Path resumed = tmp.resolve("resumed");
        copyTree(whole.resolve("checkpoint-3"), resumed.resolve("checkpoint-3"));
        r = Cli.run(concat(common, "--out", resumed.toString(), "--resume-from-checkpoint", "last"));
        assertEquals(0, r.rc(), r.toString());
        assertEquals(java.util.Arrays.toString(Files.readAllBytes(whole.resolve("adapter_model.safetensors"))),
                java.util.Arrays.toString(Files.readAllBytes(resumed.resolve("adapter_model.safetensors"))));
        r = Cli.run(concat(common, "--out", tmp.resolve("none").toString(), "--resume-from-checkpoint", "last"));
        assertEquals(2, r.rc(), r.toString());
        assertTrue(r.err().contains("no checkpoint-<step> folder in --out"), r.err());
    }

    @Test
    void nprocPerNodeTrainsOnTwoLocalRanksAndOnlyRankZeroWrites(@TempDir Path tmp) throws Exception {
        Path model = TinyModels.llamaWithTokenizer(tmp.resolve("tiny"), 5);
        Path data = tmp.resolve("data.txt");
        Files.writeString(data, "hello world the adapter is a low rank adapter\n".repeat(12));
        Path out = tmp.resolve("adapter");
        int port;
        try (java.net.ServerSocket s = new java.net.ServerSocket(0)) {
            port = s.getLocalPort();
        }
        Cli.Result r = Cli.run("train", "--model", model.toString(), "--data", data.toString(), "--out",
                out.toString(), "--seq-len", "16", "--batch-size", "2", "--lr", "1e-2", "--max-steps", "4",
                "--save-steps", "2", "--nproc-per-node", "2", "--master-port", String.valueOf(port));
        assertEquals(0, r.rc(), r.toString());
        Matcher mt = Pattern.compile("(?m)^\\[rank (\\d)\\] .* 4 steps in .* on 2 ranks; loss on the data")
                .matcher(r.out());
        assertTrue(mt.find(), r.out());
        assertEquals("0", mt.group(1), "rank 0 prints the summary");
        assertTrue(!mt.find(), "only rank 0 prints it:\n" + r.out());
        assertTrue(Files.exists(out.resolve("adapter_model.safetensors")));
        assertTrue(Files.isDirectory(out.resolve("checkpoint-2")) && Files.isDirectory(out.resolve("checkpoint-4")));
        Cli.Result adapted = Cli.run("generate", "--model", model.toString(), "--adapter", out.toString(),
                "--prompt", "hello", "--max-new-tokens", "4", "--print-ids");
        assertEquals(0, adapted.rc(), adapted.toString());
        // a rank that fails fails the launch, with its error forwarded
        r = Cli.run("train", "--model", model.toString(), "--data", tmp.resolve("missing.txt").toString(), "--out",
                out.toString(), "--nproc-per-node", "2", "--master-port", String.valueOf(port));
        assertEquals(2, r.rc(), r.toString());
        assertTrue(r.err().contains("[rank 1] ") && r.err().contains("missing.txt: no such file")
                && r.err().contains("exited with status 2"), r.err());
    }

    private static String[] concat(String[] a, String... b) {
        String[] c = java.util.Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, c, a.length, b.length);
        return c;
    }

    private static void copyTree(Path from, Path to) throws java.io.IOException {
        Files.createDirectories(to);
        try (java.util.stream.Stream<Path> s = Files.list(from)) {
            for (Path p : s.toList()) {
                Files.copy(p, to.resolve(p.getFileName()));
            }
        }
    }

    @Test
    void refusesDataShorterThanOneBlockAndAModelWithoutTokenizer(@TempDir Path tmp) throws Exception {
        Path model = TinyModels.llamaWithTokenizer(tmp.resolve("tiny"), 5);
        Path data = tmp.resolve("short.txt");
        Files.writeString(data, "hello\n");
        Cli.Result r = Cli.run("train", "--model", model.toString(), "--data", data.toString(), "--out",
                tmp.resolve("a").toString(), "--seq-len", "64");
        assertEquals(2, r.rc(), r.toString());
        assertTrue(r.err().contains("fewer than one block of --seq-len 64"), r.err());
        Path bare = TinyModels.llama(tmp.resolve("bare"), 5);
        r = Cli.run("train", "--model", bare.toString(), "--data", data.toString(), "--out", tmp.resolve("b").toString());
        assertEquals(2, r.rc(), r.toString());
        assertTrue(r.err().contains("has no tokenizer.json"), r.err());
    }
}
