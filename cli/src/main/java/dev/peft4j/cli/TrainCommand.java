package dev.peft4j.cli;

import dev.peft4j.config.LoraConfig;
import dev.peft4j.models.CausalLM;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.tokenizers.Tokenizer;
import dev.peft4j.train.DistributedContext;
import dev.peft4j.train.Trainer;
import dev.peft4j.train.TrainingArguments;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/**
 * {@code peft4j train}: fine-tunes a fresh LoRA adapter on a text file as transformers' {@code run_clm.py} example
 * does (each line tokenized, the ids concatenated and cut into blocks of {@code --seq-len}, labels = ids), with
 * {@link Trainer}, then saves the adapter as PEFT's {@code save_pretrained} does.
 */
@Command(name = "train", header = "Fine-tune a new LoRA adapter on a text file and save it.",
        description =
            "Tokenize each line of --data with the model's tokenizer.json, concatenate the ids and cut them into "
            + "blocks of --seq-len (the rest dropped, as run_clm.py's group_texts), add a LoRA adapter and train "
            + "it on those blocks, shuffled by --seed (AdamW, causal LM loss, linear schedule), then write the adapter to --out "
            + "(adapter_config.json + adapter_model.safetensors, loadable by Python PEFT). "
            + "Data parallel: --nproc-per-node N starts N ranks on this machine (several machines: each runs the same "
            + "command with --nnodes, its --node-rank and rank 0's --master-addr); a process started by torchrun or "
            + "another launcher that sets RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT joins that run. Each rank "
            + "takes its share of each epoch's batches, the gradients are averaged over the ranks, and only rank 0 "
            + "evaluates, prints and writes. --batch-size is per rank. With --gguf the base is the GGUF file "
            + "(--model then only the tokenizer's folder); its Q8_0 / Q4_0 projections stay quantized and the "
            + "LoRA trains on top, as with --quantize (QLoRA).")
final class TrainCommand extends CliCommand {
    @Mixin
    ModelOptions model;

    @Option(names = "--data", required = true, paramLabel = "<file.txt>", description = "UTF-8 text, one example per line.")
    Path data;

    @Option(names = "--out", required = true, paramLabel = "<dir>", description = "Where to write the adapter.")
    Path out;

    @Option(names = "--r", paramLabel = "N", description = "LoRA rank (default: ${DEFAULT-VALUE}).", defaultValue = "8")
    int r;

    @Option(names = "--lora-alpha", paramLabel = "A", description = "LoRA alpha (default: ${DEFAULT-VALUE}).",
            defaultValue = "16")
    int loraAlpha;

    @Option(names = "--lora-dropout", paramLabel = "P", description = "LoRA dropout (default: ${DEFAULT-VALUE}).",
            defaultValue = "0.05")
    double loraDropout;

    @Option(names = "--target-modules", split = ",", paramLabel = "m1,m2",
            description = "Modules to adapt (default: q_proj,v_proj).")
    List<String> targetModules = List.of("q_proj", "v_proj");

    @Option(names = "--seq-len", paramLabel = "N", description = "Tokens per block (default: ${DEFAULT-VALUE}).",
            defaultValue = "128")
    int seqLen;

    @Option(names = "--batch-size", paramLabel = "N", description = "Blocks per batch (default: ${DEFAULT-VALUE}).",
            defaultValue = "4")
    int batchSize;

    @Option(names = "--lr", paramLabel = "LR", description = "Learning rate (default: ${DEFAULT-VALUE}).",
            defaultValue = "2e-4")
    double lr;

    @Option(names = "--epochs", paramLabel = "N", description = "Passes over the data (default: ${DEFAULT-VALUE}).",
            defaultValue = "3")
    int epochs;

    @Option(names = "--max-steps", paramLabel = "N", description = "Optimizer steps; overrides --epochs.")
    Integer maxSteps;

    @Option(names = "--grad-accum", paramLabel = "N", description = "Batches per optimizer step (default: "
            + "${DEFAULT-VALUE}).", defaultValue = "1")
    int gradAccum;

    @Option(names = "--warmup-steps", paramLabel = "N", description = "Linear warmup (default: ${DEFAULT-VALUE}).",
            defaultValue = "0")
    int warmupSteps;

    @Option(names = "--seed", paramLabel = "N", description = "Seed of the adapter's init and of dropout (default: "
            + "${DEFAULT-VALUE}).", defaultValue = "42")
    long seed;

    @Option(names = "--save-steps", paramLabel = "N", description = "Write a checkpoint to <out>/checkpoint-<step> "
            + "every N optimizer steps (the adapter, and what --resume-from-checkpoint needs).")
    Integer saveSteps;

    @Option(names = "--resume-from-checkpoint", paramLabel = "<dir>|last", description = "Continue a run from one "
            + "of its checkpoints (same --data and settings); 'last': the highest checkpoint-<step> in --out.")
    String resumeFrom;

    @Option(names = "--nproc-per-node", paramLabel = "N", description = "Start N ranks on this machine (as "
            + "torchrun); each uses cores / N threads unless --threads is given.")
    Integer nprocPerNode;

    @Option(names = "--nnodes", paramLabel = "N", description = "Machines in the run, each with --nproc-per-node "
            + "ranks (default: ${DEFAULT-VALUE}).", defaultValue = "1")
    int nnodes;

    @Option(names = "--node-rank", paramLabel = "I", description = "This machine's index in [0, --nnodes) (default: "
            + "${DEFAULT-VALUE}).", defaultValue = "0")
    int nodeRank;

    @Option(names = "--master-addr", paramLabel = "HOST", description = "Address of node 0, where rank 0 hosts the "
            + "rendezvous store (default: ${DEFAULT-VALUE}).", defaultValue = "127.0.0.1")
    String masterAddr;

    @Option(names = "--master-port", paramLabel = "PORT", description = "Its TCP port (default: ${DEFAULT-VALUE}).",
            defaultValue = "29500")
    int masterPort;

    @Override
    public Integer call() throws IOException {
        boolean launched = System.getenv(LocalLauncher.LAUNCHED) != null;
        if (nprocPerNode != null && !launched) {
            return launch();
        }
        DistributedContext dist;
        try {
            dist = DistributedContext.fromEnvironment(System.getenv());
        } catch (IllegalArgumentException e) {
            throw usage("torchrun environment: " + e.getMessage());
        }
        try {
            if (dist != null) {
                // the machine's cores shared by its ranks
                Threads.pin(Math.max(1, Runtime.getRuntime().availableProcessors() / dist.localWorldSize()));
            }
            return run(dist);
        } catch (RuntimeException | IOException | Error e) {
            if (dist != null) {
                dist.reportFailure(e);
            }
            throw e;
        } finally {
            if (dist != null) {
                dist.close();
            }
        }
    }

    private int launch() throws IOException {
        if (nprocPerNode < 1 || nnodes < 1 || nodeRank < 0 || nodeRank >= nnodes) {
            throw usage("--nproc-per-node " + nprocPerNode + ", --nnodes " + nnodes + ", --node-rank " + nodeRank
                    + ": need N >= 1, nodes >= 1 and 0 <= node rank < nodes");
        }
        if (masterPort < 1 || masterPort > 65535) {
            throw usage("--master-port " + masterPort + " is not a TCP port");
        }
        List<String> args = spec.commandLine().getParseResult().originalArgs();
        try {
            return LocalLauncher.launch(args, nprocPerNode, nnodes, nodeRank, masterAddr, masterPort, out(), err());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException("interrupted while waiting for the ranks", e);
        }
    }

    private int run(DistributedContext dist) throws IOException {
        boolean main = dist == null || dist.isMain();
        if (seqLen < 2 || batchSize < 1) {
            throw usage("--seq-len must be >= 2 and --batch-size >= 1");
        }
        if (!Files.isRegularFile(data)) {
            throw usage("--data " + data + ": no such file");
        }
        model.check();
        Path dir = model.dir();
        if (!Tokenizer.existsIn(dir)) {
            throw usage("--model " + dir + " has no " + Tokenizer.FILE_NAME + ": train tokenizes --data with it"
                    + (model.gguf() != null ? " (the GGUF's own vocabulary is not read)" : ""));
        }
        TrainingArguments args;
        try {
            TrainingArguments.Builder b = TrainingArguments.builder().learningRate(lr).numTrainEpochs(epochs)
                    .gradientAccumulationSteps(gradAccum).warmupSteps(warmupSteps).seed(seed).loggingSteps(10);
            if (maxSteps != null) {
                b.maxSteps(maxSteps);
            }
            if (saveSteps != null) {
                b.outputDir(out).saveSteps(saveSteps);
            }
            args = b.build();
        } catch (IllegalArgumentException e) {
            throw usage(e.getMessage());
        }
        Path resume = null;
        if (resumeFrom != null) {
            resume = resumeFrom.equals("last") ? Trainer.lastCheckpoint(out) : Path.of(resumeFrom);
            if (resume == null) {
                throw usage("--resume-from-checkpoint last: no checkpoint-<step> folder in --out " + out);
            }
            if (!Files.isDirectory(resume)) {
                throw usage("--resume-from-checkpoint " + resume + ": no such folder");
            }
        }
        List<long[]> blocks = new ArrayList<>();
        try (Tokenizer tok = Tokenizer.fromFile(dir.resolve(Tokenizer.FILE_NAME))) {
            long[] stream = new long[0];
            int len = 0;
            for (String line : Files.readAllLines(data, StandardCharsets.UTF_8)) {
                if (line.isBlank()) {
                    continue;
                }
                long[] ids = tok.encode(line);
                if (len + ids.length > stream.length) {
                    stream = java.util.Arrays.copyOf(stream, Math.max(2 * stream.length, len + ids.length));
                }
                System.arraycopy(ids, 0, stream, len, ids.length);
                len += ids.length;
            }
            for (int i = 0; i + seqLen <= len; i += seqLen) {
                blocks.add(java.util.Arrays.copyOfRange(stream, i, i + seqLen));
            }
            if (blocks.isEmpty()) {
                throw usage("--data " + data + ": " + len + " tokens, fewer than one block of --seq-len " + seqLen);
            }
        }
        // blocks in a seeded random order before they are batched, so a batch mixes blocks from across the data (the
        // Trainer then takes the batches in a new order each epoch, as transformers' sampler orders the examples)
        java.util.Collections.shuffle(blocks, new java.util.Random(seed));
        progress("loading %s", model.source());
        try (PreTrainedModel m = model.load()) {
            if (!(m instanceof CausalLM)) {
                throw usage(model.source() + ": " + m.typeName() + " is not a causal LM");
            }
            long vocab = m.config().getLong("vocab_size");
            List<Trainer.Batch> batches = new ArrayList<>();
            for (int i = 0; i < blocks.size(); i += batchSize) {
                List<long[]> rows = blocks.subList(i, Math.min(blocks.size(), i + batchSize));
                long[][] arr = rows.toArray(new long[0][]);
                TokenIds.checkVocab(arr, vocab);
                Tensor ids = TokenIds.rectangular(arr);
                batches.add(Trainer.Batch.causalLM(ids, null));
            }
            torch.manual_seed(seed);
            m.addAdapter(LoraConfig.builder().r(r).loraAlpha(loraAlpha).loraDropout(loraDropout)
                    .targetModules(targetModules.toArray(String[]::new)).build(), "default");
            Trainer trainer = new Trainer(m, args).distributed(dist);
            double before = main ? trainer.evaluate(batches) : Double.NaN;
            long t0 = System.nanoTime();
            Trainer.TrainOutput o = trainer.train(batches, resume);
            double seconds = (System.nanoTime() - t0) / 1e9;
            if (main) {
                double after = trainer.evaluate(batches);
                for (Trainer.LogEntry e : o.log()) {
                    progress("step %d: loss %.4f, lr %.3g, grad norm %.3g", e.step(), e.loss(), e.learningRate(),
                            e.gradNorm());
                }
                m.saveAdapter(out, "default");
                out().printf("%d blocks of %d tokens, %d steps in %.1f s%s; loss on the data %.4f -> %.4f; wrote %s%n",
                        blocks.size(), seqLen, o.globalStep(), seconds,
                        dist == null ? "" : " on " + dist.worldSize() + " ranks", before, after, out);
                out().flush();
            }
            if (dist != null) {
                dist.barrier(); // rank 0 hosts the store: the others leave before it closes
            }
        }
        return 0;
    }
}
