package dev.peft4j.tokenizers;

import ai.djl.huggingface.tokenizers.Encoding;
import ai.djl.huggingface.tokenizers.HuggingFaceTokenizer;
import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Optional;

/**
 * A Hugging Face fast tokenizer read from a model folder's {@code tokenizer.json}: text to token ids and back.
 *
 * <p>The work is done by Hugging Face's own Rust {@code tokenizers} library (through DJL's JNI binding, whose jar
 * carries the native library: nothing is downloaded), so ids match Python's {@code tokenizers} and
 * {@code transformers}' fast tokenizers exactly:
 * <ul>
 *   <li>{@link #encode(String)} is Python's {@code tokenizer.encode(text)} / {@code tokenizer(text).input_ids}:
 *       {@code add_special_tokens=True}, so the {@code post_processor} adds what the model expects (Llama's
 *       {@code <s>}, BERT's {@code [CLS] … [SEP]}). No truncation and no padding, whatever {@code tokenizer.json}
 *       stores under {@code truncation}/{@code padding} — as {@code transformers} does unless asked for them.</li>
 *   <li>{@link #decode(long[])} is {@code tokenizer.decode(ids)} ({@code skip_special_tokens=False}), through the
 *       file's {@code decoder}; ids the vocabulary lacks are dropped, as in Python. {@code transformers}' extra
 *       {@code clean_up_tokenization_spaces} pass (a {@code tokenizer_config.json} setting) is not applied.</li>
 * </ul>
 *
 * <p>A tokenizer holds native memory: close it. It may be used from several threads at once, but not closed while
 * in use. Models themselves run on token ids alone; a tokenizer is only needed for text.
 *
 * <p>Two process-wide defaults are set on first use, each only when neither the environment variable nor the
 * system property is set already: {@code OPT_OUT_TRACKING=true} (DJL otherwise probes the EC2 instance-metadata
 * address and reports usage when a tokenizer is created) and {@code RUST_FLAVOR=cpu} (on a CUDA machine DJL would
 * otherwise look for a CUDA build of the native library and try to download it; tokenizing needs no GPU). The
 * native library is unpacked once into DJL's cache folder ({@code ~/.djl.ai}, or {@code DJL_CACHE_DIR}).
 */
public final class Tokenizer implements AutoCloseable {
    /** The file a model folder keeps its tokenizer in. */
    public static final String FILE_NAME = "tokenizer.json";

    static {
        defaultProperty("OPT_OUT_TRACKING", "OPT_OUT_TRACKING", "true");
        defaultProperty("RUST_FLAVOR", "RUST_FLAVOR", "cpu");
    }

    private final Path file;
    private final HuggingFaceTokenizer hf;

    private Tokenizer(Path file, HuggingFaceTokenizer hf) {
        this.file = file;
        this.hf = hf;
    }

    /**
     * The tokenizer of a Hugging Face model folder, or empty when the folder has no {@code tokenizer.json}.
     *
     * @throws TokenizerException if {@code tokenizer.json} is there but is not a tokenizer (the message names it)
     * @throws IOException if it cannot be read
     */
    public static Optional<Tokenizer> fromPretrained(Path modelDir) throws IOException {
        Path file = modelDir.resolve(FILE_NAME);
        if (!Files.isRegularFile(file)) {
            return Optional.empty();
        }
        return Optional.of(fromFile(file));
    }

    /** Whether {@code modelDir} has a {@code tokenizer.json}. */
    public static boolean existsIn(Path modelDir) {
        return Files.isRegularFile(modelDir.resolve(FILE_NAME));
    }

    /**
     * The tokenizer saved in {@code tokenizerJson} (the format of Python's {@code Tokenizer.save}).
     *
     * @throws TokenizerException if the file is not UTF-8, not JSON, or not a tokenizer the library accepts
     * @throws IOException if it cannot be read
     */
    public static Tokenizer fromFile(Path tokenizerJson) throws IOException {
        byte[] bytes = Files.readAllBytes(tokenizerJson);
        try {
            StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT).decode(java.nio.ByteBuffer.wrap(bytes));
        } catch (CharacterCodingException e) {
            throw new TokenizerException(tokenizerJson, "not UTF-8 text", e);
        }
        // DJL's own defaults would truncate to 512 tokens and pad batches: turn both off, as transformers does
        Map<String, String> options = Map.of("truncation", "false", "padding", "false");
        HuggingFaceTokenizer hf;
        try (InputStream in = new ByteArrayInputStream(bytes)) {
            hf = HuggingFaceTokenizer.newInstance(in, options);
        } catch (UnsatisfiedLinkError | ExceptionInInitializerError | NoClassDefFoundError e) {
            throw new IllegalStateException("the Hugging Face tokenizers native library could not be loaded for "
                    + tokenizerJson + ": " + e, e);
        } catch (RuntimeException e) {
            if (isNativeLoadFailure(e)) {
                throw new IllegalStateException("the Hugging Face tokenizers native library could not be loaded for "
                        + tokenizerJson + ": " + e.getMessage(), e);
            }
            throw new TokenizerException(tokenizerJson, "not a valid tokenizer: " + e.getMessage(), e);
        }
        return new Tokenizer(tokenizerJson, hf);
    }

    /** The ids of {@code text} with the model's special tokens added (Python's {@code add_special_tokens=True}). */
    public long[] encode(String text) {
        return encode(text, true);
    }

    /**
     * The ids of {@code text}; with {@code addSpecialTokens}, the {@code post_processor}'s template adds the special
     * tokens (a BOS, or {@code [CLS]}/{@code [SEP]}); without, the plain tokens of the text.
     */
    public long[] encode(String text, boolean addSpecialTokens) {
        return encoding(text, addSpecialTokens).getIds();
    }

    /** The token strings of {@code text}, as {@link #encode(String, boolean)} gives their ids. */
    public List<String> tokens(String text, boolean addSpecialTokens) {
        return List.of(encoding(text, addSpecialTokens).getTokens());
    }

    /** The text of {@code ids}, special tokens included (Python's {@code skip_special_tokens=False}). */
    public String decode(long[] ids) {
        return decode(ids, false);
    }

    /** The text of {@code ids}; with {@code skipSpecialTokens}, tokens marked special are left out. */
    public String decode(long[] ids, boolean skipSpecialTokens) {
        Objects.requireNonNull(ids, "ids");
        for (long id : ids) {
            if (id < 0 || id > 0xFFFF_FFFFL) {
                throw new IllegalArgumentException("token id " + id + " is not a valid id (0 to 2^32-1)");
            }
        }
        return hf.decode(ids, skipSpecialTokens);
    }

    /** The {@code tokenizer.json} this was read from. */
    public Path file() {
        return file;
    }

    @Override
    public void close() {
        hf.close();
    }

    @Override
    public String toString() {
        return "Tokenizer[" + file + "]";
    }

    private Encoding encoding(String text, boolean addSpecialTokens) {
        Objects.requireNonNull(text, "text");
        return hf.encode(text, addSpecialTokens, false);
    }

    private static boolean isNativeLoadFailure(RuntimeException e) {
        for (Throwable t = e; t != null; t = t.getCause()) {
            if (t.getClass().getName().equals("ai.djl.engine.EngineException")) {
                return true;
            }
        }
        return false;
    }

    private static void defaultProperty(String env, String property, String value) {
        if (System.getenv(env) == null && System.getProperty(property) == null) {
            System.setProperty(property, value);
        }
    }
}
