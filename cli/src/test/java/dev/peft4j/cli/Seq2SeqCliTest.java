package dev.peft4j.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.io.SafetensorsFile;
import java.nio.file.Path;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code peft4j logits} and {@code generate} on an encoder-decoder (the tiny T5 of the model goldens): the decoder's
 * logits for --decoder-input-ids, generation from the encoder's prompt, and the usage errors around them.
 */
class Seq2SeqCliTest {
    static final Path T5 = Cli.resource("models/golden/t5-relu-tied");

    @Test
    void logitsTakeDecoderInputIdsAndMatchTheReference(@TempDir Path tmp) throws Exception {
        try (PointerScope s = new PointerScope(); SafetensorsFile gold = SafetensorsFile.open(T5.resolve("golden.safetensors"))) {
            long[] enc = TokenIds.row(gold.get("input_ids"), 0); // row 0 is unpadded
            long[] dec = TokenIds.row(gold.get("decoder_input_ids"), 0);
            Path out = tmp.resolve("t5.safetensors");
            Cli.Result r = Cli.run("logits", "--model", T5.toString(), "--input-ids", TokenIds.join(enc),
                    "--decoder-input-ids", TokenIds.join(dec), "--out", out.toString());
            assertEquals(0, r.rc(), r.toString());
            try (SafetensorsFile f = SafetensorsFile.open(out)) {
                Tensor expected = gold.get("logits").narrow(0, 0, 1);
                Tensor got = f.get("logits");
                assertArrayEquals(new long[] {1, 5, 50}, got.shape(), "the decoder's [batch, seq, vocab]");
                float d = expected.sub(got.to(ScalarType.Float)).abs().max().item_float();
                assertTrue(d <= 1e-5f, "max |diff| " + d);
            }
        }
    }

    @Test
    void decoderInputIdsAreRequiredForAnEncoderDecoderAndRefusedForOthers(@TempDir Path tmp) throws Exception {
        Path out = tmp.resolve("o.safetensors");
        Cli.Result missing = Cli.run("logits", "--model", T5.toString(), "--input-ids", "1,2,3", "--out", out.toString());
        assertEquals(2, missing.rc(), missing.toString());
        assertTrue(missing.err().contains("--decoder-input-ids"), missing.toString());
        Cli.Result rows = Cli.run("logits", "--model", T5.toString(), "--input-ids", "1,2,3;4,5,6",
                "--decoder-input-ids", "0,1", "--out", out.toString());
        assertEquals(2, rows.rc(), rows.toString());
        assertTrue(rows.err().contains("1 rows"), rows.toString());
        Path llama = TinyModels.llama(tmp.resolve("tiny"), 3);
        Cli.Result notSeq2Seq = Cli.run("logits", "--model", llama.toString(), "--input-ids", "1,2,3",
                "--decoder-input-ids", "0,1", "--out", out.toString());
        assertEquals(2, notSeq2Seq.rc(), notSeq2Seq.toString());
        assertTrue(notSeq2Seq.err().contains("encoder-decoder"), notSeq2Seq.toString());
    }

    @Test
    void generateFeedsThePromptToTheEncoder() throws Exception {
        try (PointerScope s = new PointerScope(); SafetensorsFile gold = SafetensorsFile.open(T5.resolve("golden.safetensors"))) {
            long[] enc = TokenIds.row(gold.get("input_ids"), 0);
            Cli.Result r = Cli.run("generate", "--model", T5.toString(), "--input-ids", TokenIds.join(enc),
                    "--max-new-tokens", "8", "--ignore-eos");
            assertEquals(0, r.rc(), r.toString());
            assertEquals(TokenIds.join(TokenIds.row(gold.get("greedy_ids"), 0)), r.out().strip(),
                    "the decoder's ids, start token first, as the reference generates them");
        }
    }
}
