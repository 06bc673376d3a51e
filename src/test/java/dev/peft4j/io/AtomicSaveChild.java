package dev.peft4j.io;

import dev.peft4j.config.LoraConfig;
import dev.peft4j.config.PeftConfigs;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

/**
 * The child JVM of {@link AtomicFolderKillTest}, killed with {@code SIGKILL} by it.
 *
 * <ul>
 *   <li>{@code save <dir> <first> <exchange|aside> <plain|torch>}: saves the adapter folder {@code dir} as
 *       {@code saveAdapter} does ({@link #save}), over and over, save {@code k} =
 *       {@code first, first+1, ...}: config {@code base_model_name_or_path = "save-k"}, every weight equal to
 *       {@code k}. Prints {@code ready} once save {@code first} has returned.</li>
 *   <li>{@code hold <dir>}: takes the folder's lock, makes a staging folder as a live save would, prints
 *       {@code held}, and waits.</li>
 * </ul>
 */
final class AtomicSaveChild {
    private AtomicSaveChild() {}

    static final int TENSORS = 4;
    static final int ELEMENTS = 16 * 1024;

    public static void main(String[] args) throws Exception {
        Path dir = Path.of(args[1]);
        if (args[0].equals("hold")) {
            Path parent = dir.toAbsolutePath().getParent();
            String name = dir.getFileName().toString();
            FolderLock lock = FolderLock.acquire(AtomicFolder.lockFile(parent, name));
            Files.createDirectory(parent.resolve(AtomicFolder.prefix(name) + "live1.new"));
            System.out.println("held " + lock.file());
            System.out.flush();
            Thread.sleep(Long.MAX_VALUE);
            return;
        }
        int first = Integer.parseInt(args[2]);
        AtomicFolder.exchangeDisabled = args[3].equals("aside");
        boolean withTorch = args[4].equals("torch");
        save(dir, first, withTorch); // returned before "ready": no kill may undo it
        System.out.println("ready");
        System.out.flush();
        for (int k = first + 1; ; k++) {
            save(dir, k, withTorch);
        }
    }

    /**
     * Save {@code k}: what {@code PeftAdapters.saveAdapter} writes (the same {@link AtomicFolder#replace} around the
     * two files), distinguishable by {@code k}. {@code withTorch}: the weights from libtorch tensors through
     * {@link SafetensorsFile#write}; else the same bytes made here without libtorch, which a JVM starts 5x faster
     * without ({@link AtomicFolderKillTest} checks that both give the same bytes).
     */
    static void save(Path dir, int k, boolean withTorch) throws Exception {
        LoraConfig cfg = LoraConfig.builder().r(4).targetModules("q_proj").baseModelNameOrPath("save-" + k).build();
        AtomicFolder.replace(dir, staging -> {
            Path weights = staging.resolve(AdapterFolder.SAFETENSORS_NAME);
            if (withTorch) {
                writeWithTorch(weights, k);
            } else {
                writePlain(weights, k);
            }
            PeftConfigs.write(cfg, staging);
        });
    }

    static String tensorName(int i) {
        return "base_model.model.layers." + i + ".self_attn.q_proj.lora_A.weight";
    }

    static void writeWithTorch(Path file, int k) throws java.io.IOException {
        Map<String, Tensor> sd = new LinkedHashMap<>();
        try {
            for (int i = 0; i < TENSORS; i++) {
                Tensor t = torch.empty(ELEMENTS);
                try (Scalar value = new Scalar(k)) {
                    t.fill_(value);
                }
                sd.put(tensorName(i), t);
            }
            SafetensorsFile.write(file, sd, SafetensorsFile.PT_METADATA);
        } finally {
            sd.values().forEach(Tensor::close);
        }
    }

    /** The safetensors file of {@link #writeWithTorch}, byte for byte, written and synced without libtorch. */
    static void writePlain(Path file, int k) throws java.io.IOException {
        List<TensorInfo> layout = new ArrayList<>();
        long bytes = ELEMENTS * 4L;
        for (int i = 0; i < TENSORS; i++) {
            layout.add(new TensorInfo(tensorName(i), "F32", new long[] {ELEMENTS}, i * bytes, (i + 1) * bytes));
        }
        byte[] header = SafetensorsHeader.format(layout, Map.of("format", "pt"));
        ByteBuffer buf = ByteBuffer.allocate(Math.toIntExact(8 + header.length + TENSORS * bytes))
                .order(ByteOrder.LITTLE_ENDIAN);
        buf.putLong(header.length).put(header);
        while (buf.hasRemaining()) {
            buf.putFloat(k);
        }
        buf.flip();
        try (FileChannel out = FileChannel.open(file, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
            while (buf.hasRemaining()) {
                out.write(buf);
            }
            out.force(true);
        }
    }
}
