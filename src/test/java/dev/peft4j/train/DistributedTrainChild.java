package dev.peft4j.train;

import dev.peft4j.config.LoraConfig;
import dev.peft4j.io.SafetensorsFile;
import dev.peft4j.models.AutoModel;
import dev.peft4j.models.PreTrainedModel;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * One rank of {@link DistributedTrainerTest}'s runs, in its own JVM with torchrun's environment: trains the tiny
 * Llama's LoRA ({@code args: outputDir maxSteps saveSteps resumeCheckpoint|-}), prints {@code step N} after each
 * optimizer step and writes its final trainable parameters to {@code outputDir/params-rank<R>.safetensors}; exits 1
 * with the error on stderr when training fails.
 */
public final class DistributedTrainChild {
    private DistributedTrainChild() {}

    static final int MICRO_BATCHES = 4;
    static final int SEQ = 8;

    public static void main(String[] a) throws Exception {
        torch.set_num_threads(1);
        Path out = Path.of(a[0]);
        int maxSteps = Integer.parseInt(a[1]);
        int saveSteps = Integer.parseInt(a[2]);
        Path resume = a[3].equals("-") ? null : Path.of(a[3]);
        DistributedContext ctx;
        try {
            ctx = DistributedContext.fromEnvironment(System.getenv());
        } catch (RuntimeException e) {
            e.printStackTrace();
            System.exit(1);
            return;
        }
        int rank = ctx == null ? 0 : ctx.rank();
        int world = ctx == null ? 1 : ctx.worldSize();
        try (PreTrainedModel model = newModel(1000 + rank)) { // another initial adapter per rank: rank 0's wins
            Trainer t = new Trainer(model, arguments(out, maxSteps, saveSteps)).distributed(ctx)
                    .onStepEnd(s -> System.out.println("step " + s));
            Trainer.TrainOutput o = t.train(data(world), resume);
            writeParams(model, out.resolve("params-rank" + rank + ".safetensors"));
            System.out.println("done " + o.globalStep() + " loss " + o.trainingLoss());
            if (ctx != null) {
                ctx.barrier();
                ctx.close();
            }
        } catch (Throwable e) {
            e.printStackTrace();
            System.exit(1);
        }
        System.exit(0);
    }

    static PreTrainedModel newModel(long initSeed) throws Exception {
        PreTrainedModel model = AutoModel.fromPretrained(Path.of(DistributedTrainChild.class
                .getResource("/dev/peft4j/models/golden/llama-gqa-llama3rope").toURI()), ScalarType.Float);
        model.peftAdapters().seed(initSeed); // the adapter init generator's seed
        model.addAdapter(LoraConfig.builder().r(4).loraAlpha(8).loraDropout(0.0).targetModules("q_proj", "v_proj")
                .build(), "d");
        return model;
    }

    static TrainingArguments arguments(Path out, int maxSteps, int saveSteps) {
        // per rank 2 batches a step: with 4 micro-batches and 2 ranks (or 2 double batches and 1), a step is an epoch
        TrainingArguments.Builder b = TrainingArguments.builder().learningRate(1e-2).maxSteps(maxSteps)
                .gradientAccumulationSteps(2).warmupSteps(1).maxGradNorm(1.0).seed(7).outputDir(out).loggingSteps(1);
        return (saveSteps > 0 ? b.saveSteps(saveSteps) : b).build();
    }

    /**
     * The training set: {@value #MICRO_BATCHES} one-sequence micro-batches with different padding (so the ranks'
     * label counts differ) for 2 ranks; for 1 process the same sequences as 2 batches of 2, so each optimizer step
     * of either covers all of them.
     */
    static List<Trainer.Batch> data(int world) {
        Tensor[] ids = new Tensor[MICRO_BATCHES];
        Tensor[] masks = new Tensor[MICRO_BATCHES];
        for (int i = 0; i < MICRO_BATCHES; i++) {
            ids[i] = torch.arange(new Scalar((long) SEQ)).mul(new Scalar((long) (i + 3))).add(new Scalar((long) i))
                    .remainder(new Scalar(47L)).reshape(1, SEQ);
            float[] m = new float[SEQ];
            for (int j = 0; j < SEQ - i; j++) {
                m[j] = 1;
            }
            masks[i] = torch.tensor(m).to(ScalarType.Long).reshape(1, SEQ);
        }
        List<Trainer.Batch> data = new ArrayList<>();
        if (world == 1) {
            for (int i = 0; i < MICRO_BATCHES; i += 2) {
                data.add(Trainer.Batch.causalLM(torch.cat(new TensorVector(ids[i], ids[i + 1])),
                        torch.cat(new TensorVector(masks[i], masks[i + 1]))));
            }
        } else if (world == 2) {
            for (int i = 0; i < MICRO_BATCHES; i++) {
                data.add(Trainer.Batch.causalLM(ids[i], masks[i]));
            }
        } else {
            throw new IllegalArgumentException("world " + world + ": this test data is for 1 or 2 processes");
        }
        return data;
    }

    static Map<String, Tensor> trainable(PreTrainedModel model) {
        Map<String, Tensor> p = new LinkedHashMap<>();
        for (Map.Entry<String, Tensor> e : model.namedParameters().entrySet()) {
            if (e.getValue().requires_grad()) {
                p.put(e.getKey(), e.getValue().detach().clone());
            }
        }
        return p;
    }

    static void writeParams(PreTrainedModel model, Path file) throws Exception {
        SafetensorsFile.write(file, trainable(model));
    }
}
