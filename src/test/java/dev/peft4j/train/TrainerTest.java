package dev.peft4j.train;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.config.LoraConfig;
import dev.peft4j.models.AutoModel;
import dev.peft4j.models.CausalLM;
import dev.peft4j.models.PreTrainedModel;
import java.net.URISyntaxException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.AdamW;
import org.bytedeco.pytorch.AdamWOptions;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@link Trainer} against hand-computed references: the schedule's learning rates, the causal LM loss, one and two
 * AdamW steps (the closed form of Adam's bias-corrected update), and a real run on a tiny Llama: the loss falls,
 * only the adapter moves, and the saved adapter reloads to the same logits.
 */
class TrainerTest {
    private static Path tinyLlama() throws URISyntaxException {
        return Path.of(TrainerTest.class.getResource("/dev/peft4j/models/golden/llama-gqa-llama3rope").toURI());
    }

    @Test
    void learningRatesFollowTransformersLinearAndConstantSchedulesWithWarmup() {
        TrainingArguments lin = TrainingArguments.builder().learningRate(1e-3).warmupSteps(2).build();
        // get_linear_schedule_with_warmup(total 10, warmup 2): step / 2 during warmup, then (10 - step) / 8
        double[] want = {0, 5e-4, 1e-3, 7/8e3, 6/8e3, 5/8e3, 4/8e3, 3/8e3, 2/8e3, 1/8e3};
        for (int s = 0; s < 10; s++) {
            assertEquals(want[s], lin.learningRateAt(s, 10), 1e-15, "linear, step " + s);
        }
        TrainingArguments cst = TrainingArguments.builder().learningRate(1e-3).warmupSteps(4)
                .lrSchedulerType(TrainingArguments.LrSchedulerType.CONSTANT).build();
        assertEquals(2.5e-4, cst.learningRateAt(1, 10), 1e-15);
        assertEquals(1e-3, cst.learningRateAt(9, 10), 1e-15);
        assertEquals(1e-3, TrainingArguments.builder().learningRate(1e-3).build().learningRateAt(0, 5), 1e-15,
                "no warmup: the full rate at the first step");
        assertThrows(IllegalArgumentException.class, () -> TrainingArguments.builder().learningRate(0));
    }

    @Test
    void causalLmLossIsTheMeanCrossEntropyOfTheNextTokenOverUnignoredLabels() {
        try (PointerScope s = new PointerScope()) {
            // batch 1, 3 positions, vocab 2; position t predicts label t + 1
            Tensor logits = torch.tensor(new float[] {0f, 1f, 2f, 0f, 5f, 5f}).reshape(1, 3, 2);
            Tensor labels = torch.tensor(new long[] {7, 1, -100}).reshape(1, 3);
            // only position 0 -> label 1 counts: -log softmax([0, 1])[1] = log(1 + e^-1)
            assertEquals(Math.log(1 + Math.exp(-1)), Trainer.causalLmLoss(logits, labels).item_double(), 1e-6);
            Tensor labels2 = torch.tensor(new long[] {7, 1, 0}).reshape(1, 3);
            double want = (Math.log(1 + Math.exp(-1)) + Math.log(1 + Math.exp(-2))) / 2;
            assertEquals(want, Trainer.causalLmLoss(logits, labels2).item_double(), 1e-6);
        }
    }

    @Test
    void adamWStepsMatchTheClosedFormWithTransformersDefaults() {
        try (PointerScope s = new PointerScope()) {
            double lr = 0.1;
            double wd = 0.01;
            TrainingArguments args = TrainingArguments.builder().learningRate(lr).weightDecay(wd).build();
            Tensor p = torch.tensor(new float[] {1f, -2f}).to(ScalarType.Double).requires_grad_(true);
            double[] g1 = {0.5, 0.25};
            double[] g2 = {-0.375, 1.0}; // exact in float32, copied in as such
            try (TensorVector pv = new TensorVector(p); AdamWOptions o = Trainer.newOptions(args);
                    AdamW opt = new AdamW(pv, o)) {
                double[] want = {1.0, -2.0};
                double[] m = new double[2];
                double[] v = new double[2];
                double b1 = 0.9;
                double b2 = 0.999;
                for (int step = 1; step <= 2; step++) {
                    double[] g = step == 1 ? g1 : g2;
                    opt.zero_grad(true);
                    Tensor gt = torch.tensor(new float[] {(float) g[0], (float) g[1]}).to(ScalarType.Double);
                    p.mul(gt).sum().backward(); // d/dp Σ p·g = g
                    opt.step();
                    for (int i = 0; i < 2; i++) { // torch.optim.AdamW: decoupled decay, then Adam's update
                        want[i] *= 1 - lr * wd;
                        m[i] = b1 * m[i] + (1 - b1) * g[i];
                        v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
                        double mh = m[i] / (1 - Math.pow(b1, step));
                        double vh = v[i] / (1 - Math.pow(b2, step));
                        want[i] -= lr * mh / (Math.sqrt(vh) + 1e-8);
                    }
                    for (int i = 0; i < 2; i++) {
                        assertEquals(want[i], p.get(i).item_double(), 1e-12, "step " + step + ", element " + i);
                    }
                }
            }
        }
    }

    @Test
    void trainingAFreshLoraAdapterLowersTheLossMovesOnlyTheAdapterAndSavesIt(@TempDir Path tmp) throws Exception {
        try (PointerScope s = new PointerScope();
                PreTrainedModel model = AutoModel.fromPretrained(tinyLlama(), ScalarType.Float)) {
            model.addAdapter(LoraConfig.builder().r(8).loraAlpha(16).loraDropout(0.0)
                    .targetModules("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj").build(), "fit");
            Map<String, Tensor> before = new HashMap<>();
            model.namedParameters().forEach((k, v) -> before.put(k, v.clone()));
            // two batches of a repeating pattern over the vocabulary of 50; the second padded on the right
            Tensor ids1 = torch.arange(new org.bytedeco.pytorch.Scalar(24L)).remainder(new org.bytedeco.pytorch.Scalar(6L))
                    .add(new org.bytedeco.pytorch.Scalar(3L)).reshape(2, 12);
            Tensor ids2 = ids1.flip(1).contiguous();
            Tensor mask2 = torch.ones(2, 12).to(ScalarType.Long);
            mask2.narrow(1, 10, 2).zero_();
            List<Trainer.Batch> data = List.of(Trainer.Batch.causalLM(ids1, null), Trainer.Batch.causalLM(ids2, mask2));
            assertEquals(-100L, data.get(1).labels().get(0).get(11).item_long(), "padding is ignored");
            TrainingArguments args = TrainingArguments.builder().learningRate(1e-2).maxSteps(30).warmupSteps(3)
                    .loggingSteps(5).seed(7).build();
            Trainer.TrainOutput out = new Trainer(model, args).train(data);
            assertEquals(30, out.globalStep());
            assertEquals(6, out.log().size());
            double first = out.log().get(0).loss();
            double last = out.log().get(out.log().size() - 1).loss();
            assertTrue(last < 0.5 * first, "loss " + first + " -> " + last + " did not halve");
            assertTrue(!model.isTraining(), "back in eval mode");
            // evaluate: batch losses weighted by their sequences, no dropout, no gradients; lower than before training
            Trainer trainer = new Trainer(model, args);
            double eval = trainer.evaluate(data);
            double wantEval = 0;
            try (NoGradGuard ng = new NoGradGuard()) {
                for (Trainer.Batch b : data) {
                    wantEval += Trainer.causalLmLoss(((CausalLM) model).forward(b.inputIds(), b.attentionMask(), null,
                            null), b.labels()).item_double() * 2 / 4;
                }
            }
            assertEquals(wantEval, eval, 1e-9);
            assertTrue(eval < first, "eval loss " + eval + " after training, first logged training loss " + first);
            for (Map.Entry<String, Tensor> e : model.namedParameters().entrySet()) {
                boolean changed = !e.getValue().equal(before.get(e.getKey()));
                boolean adapter = e.getKey().contains("lora_");
                if (e.getKey().contains("lora_B")) {
                    assertTrue(changed, e.getKey() + " did not move");
                }
                if (!adapter) {
                    assertTrue(!changed, e.getKey() + ": a base parameter moved");
                }
            }
            model.saveAdapter(tmp.resolve("fit"), "fit");
            assertTrue(Files.exists(tmp.resolve("fit/adapter_model.safetensors")));
            try (PreTrainedModel fresh = AutoModel.fromPretrained(tinyLlama(), ScalarType.Float);
                    NoGradGuard ng = new NoGradGuard()) {
                fresh.loadAdapter(tmp.resolve("fit"), "fit");
                Tensor want = ((CausalLM) model).forward(ids1, null, null, null);
                Tensor got = ((CausalLM) fresh).forward(ids1, null, null, null);
                double d = want.sub(got).abs().max().item_double();
                assertTrue(d <= 1e-5, "reloaded adapter gives other logits: max |diff| " + d);
            }
        }
    }

    @Test
    void refusesAModelWithNothingToTrain() throws Exception {
        try (PointerScope s = new PointerScope();
                PreTrainedModel model = AutoModel.fromPretrained(tinyLlama(), ScalarType.Float)) {
            model.namedParameters().values().forEach(t -> t.requires_grad_(false));
            Trainer t = new Trainer(model, TrainingArguments.builder().maxSteps(1).build());
            Tensor ids = torch.ones(1, 4).to(ScalarType.Long);
            IllegalStateException e = assertThrows(IllegalStateException.class,
                    () -> t.train(List.of(Trainer.Batch.causalLM(ids, null))));
            assertTrue(e.getMessage().startsWith("model: no trainable parameters"), e.getMessage());
            // a batch whose labels are all ignored has no loss (NaN, as in transformers): named, not run on
            model.addAdapter(LoraConfig.builder().r(2).targetModules("q_proj").build(), "n");
            Tensor mask = torch.zeros(1, 4).to(ScalarType.Long);
            mask.narrow(1, 0, 1).fill_(new org.bytedeco.pytorch.Scalar(1L));
            e = assertThrows(IllegalStateException.class, () -> new Trainer(model, TrainingArguments.builder()
                    .maxSteps(1).build()).train(List.of(Trainer.Batch.causalLM(ids, mask))));
            assertTrue(e.getMessage().contains("optimizer step 1: its batches [0] have no label to predict"),
                    e.getMessage());
        }
    }

    @Test
    void anAccumulatedStepAveragesOverAllItsLabelsAsTransformersNumItemsInBatch() throws Exception {
        try (PointerScope s = new PointerScope();
                PreTrainedModel model = AutoModel.fromPretrained(tinyLlama(), ScalarType.Float)) {
            model.addAdapter(LoraConfig.builder().r(2).targetModules("q_proj").build(), "n");
            // batch 0 predicts 11 labels, batch 1 only 2 (the rest padding), batch 2 none at all
            Tensor ids = torch.arange(new org.bytedeco.pytorch.Scalar(12L)).add(new org.bytedeco.pytorch.Scalar(3L))
                    .reshape(1, 12);
            Tensor short2 = torch.zeros(1, 12).to(ScalarType.Long);
            short2.narrow(1, 0, 3).fill_(new org.bytedeco.pytorch.Scalar(1L));
            Tensor none = torch.zeros(1, 12).to(ScalarType.Long);
            none.narrow(1, 0, 1).fill_(new org.bytedeco.pytorch.Scalar(1L));
            List<Trainer.Batch> data = List.of(Trainer.Batch.causalLM(ids, null),
                    Trainer.Batch.causalLM(ids.flip(1).contiguous(), short2), Trainer.Batch.causalLM(ids, none));
            double[] mean = new double[3];
            long[] count = {11, 2, 0};
            try (NoGradGuard ng = new NoGradGuard()) {
                for (int i = 0; i < 2; i++) {
                    mean[i] = Trainer.causalLmLoss(((CausalLM) model).forward(data.get(i).inputIds(),
                            data.get(i).attentionMask(), null, null), data.get(i).labels()).item_double();
                }
            }
            // one step over all three at rate 0 (warmup): its loss is the mean over the 13 labels, not the mean of
            // the batches' means (transformers before 4.46), and the batch without labels adds nothing
            Trainer.TrainOutput out = new Trainer(model, TrainingArguments.builder().learningRate(1e-9).maxSteps(1)
                    .warmupSteps(5).gradientAccumulationSteps(3).shuffle(false).build()).train(data);
            double want = (mean[0] * count[0] + mean[1] * count[1]) / (count[0] + count[1]);
            assertEquals(want, out.log().get(0).loss(), 1e-5 * want);  // the step: composed ops, `mean`: fused kernels
            assertTrue(Math.abs((mean[0] + mean[1]) / 3 - want) > 1e-3, "the two averages differ here");
        }
    }

    @Test
    void eachStepRunsAtItsScheduledRateSoAWarmupStepAtRateZeroMovesNothing() throws Exception {
        try (PointerScope s = new PointerScope();
                PreTrainedModel model = AutoModel.fromPretrained(tinyLlama(), ScalarType.Float)) {
            model.addAdapter(LoraConfig.builder().r(4).targetModules("q_proj", "v_proj").build(), "w");
            Map<String, Tensor> before = new HashMap<>();
            model.namedParameters().forEach((k, v) -> before.put(k, v.clone()));
            List<Trainer.Batch> data = List.of(Trainer.Batch.causalLM(
                    torch.arange(new org.bytedeco.pytorch.Scalar(10L)).reshape(1, 10), null));
            Trainer.TrainOutput out = new Trainer(model, TrainingArguments.builder().learningRate(0.1).maxSteps(1)
                    .warmupSteps(4).build()).train(data);
            assertEquals(0.0, out.log().get(0).learningRate());
            model.namedParameters().forEach((k, v) -> assertTrue(v.equal(before.get(k)), k + " moved at rate 0"));
            // the next steps run at 0.1 / 4 and 0.2 / 4: now the adapter's B moves
            new Trainer(model, TrainingArguments.builder().learningRate(0.1).maxSteps(2).warmupSteps(1).build())
                    .train(data);
            assertTrue(!model.getParameter("model.layers.0.self_attn.q_proj.lora_B.w.weight")
                    .equal(before.get("model.layers.0.self_attn.q_proj.lora_B.w.weight")), "lora_B did not move");
        }
    }

    @Test
    void eachEpochTakesEveryBatchOnceInANewOrderDrawnFromTheSeed() throws Exception {
        try (PointerScope s = new PointerScope();
                PreTrainedModel model = AutoModel.fromPretrained(tinyLlama(), ScalarType.Float)) {
            model.addAdapter(LoraConfig.builder().r(4).targetModules("q_proj").build(), "o");
            // five batches with five different losses; at learning rate 0 nothing moves, so each step's logged
            // loss names the batch it ran on (within 1e-5: training runs the composed ops, this the fused kernels)
            List<Trainer.Batch> data = new java.util.ArrayList<>();
            List<Double> losses = new java.util.ArrayList<>();
            for (int i = 0; i < 5; i++) {
                Tensor ids = torch.arange(new org.bytedeco.pytorch.Scalar(12L)).mul(new org.bytedeco.pytorch.Scalar(
                        (long) (i + 1))).remainder(new org.bytedeco.pytorch.Scalar(50L)).reshape(1, 12);
                Trainer.Batch b = Trainer.Batch.causalLM(ids, null);
                data.add(b);
                double loss;
                try (NoGradGuard ng = new NoGradGuard()) {
                    loss = Trainer.causalLmLoss(((CausalLM) model).forward(ids, null, null, null), b.labels())
                            .item_double();
                }
                for (double other : losses) {
                    assertTrue(Math.abs(other - loss) > 1e-3,
                            "the batches' losses are distinct: " + losses + ", " + loss);
                }
                losses.add(loss);
            }
            java.util.function.Function<TrainingArguments, List<Integer>> order = a -> {
                List<Integer> seen = new java.util.ArrayList<>();
                for (Trainer.LogEntry e : new Trainer(model, a).train(data).log()) {
                    int bi = -1;
                    for (int i = 0; i < losses.size(); i++) {
                        if (Math.abs(losses.get(i) - e.loss()) < 1e-5) {
                            bi = i;
                        }
                    }
                    assertTrue(bi >= 0, "step " + e.step() + ": loss " + e.loss() + " is no batch's " + losses);
                    seen.add(bi);
                }
                return seen;
            };
            TrainingArguments.Builder base = TrainingArguments.builder().learningRate(1e-9).warmupSteps(100)
                    .numTrainEpochs(3).loggingSteps(1);  // warmup: every step here runs at rate 0
            List<Integer> run = order.apply(base.seed(3).build());
            assertEquals(15, run.size());
            List<List<Integer>> epochs = List.of(run.subList(0, 5), run.subList(5, 10), run.subList(10, 15));
            for (List<Integer> epoch : epochs) {
                assertEquals(List.of(0, 1, 2, 3, 4), epoch.stream().sorted().toList(),
                        "an epoch takes every batch once");
            }
            assertTrue(!epochs.get(0).equals(epochs.get(1)) || !epochs.get(1).equals(epochs.get(2)),
                    "the order is drawn anew each epoch: " + run);
            assertTrue(!epochs.get(0).equals(List.of(0, 1, 2, 3, 4)) || !epochs.get(1).equals(List.of(0, 1, 2, 3, 4)),
                    "shuffled: " + run);
            assertEquals(run, order.apply(base.seed(3).build()), "the same seed, the same order");
            assertTrue(!run.equals(order.apply(base.seed(4).build())), "another seed, another order");
            assertEquals(List.of(0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1, 2, 3, 4),
                    order.apply(base.seed(3).shuffle(false).build()), "shuffle(false): the order given");
        }
    }

    @Test
    void anEpochsLastStepTakesTheBatchesLeftAsTransformersDoes() throws Exception {
        try (PointerScope s = new PointerScope();
                PreTrainedModel model = AutoModel.fromPretrained(tinyLlama(), ScalarType.Float)) {
            model.addAdapter(LoraConfig.builder().r(2).targetModules("q_proj").build(), "n");
            List<Trainer.Batch> data = new java.util.ArrayList<>();
            double[] mean = new double[3];
            for (int i = 0; i < 3; i++) {
                Tensor ids = torch.arange(new org.bytedeco.pytorch.Scalar(12L)).mul(new org.bytedeco.pytorch.Scalar(
                        (long) (i + 2))).remainder(new org.bytedeco.pytorch.Scalar(47L)).reshape(1, 12);
                data.add(Trainer.Batch.causalLM(ids, null));
                try (NoGradGuard ng = new NoGradGuard()) {
                    mean[i] = Trainer.causalLmLoss(((CausalLM) model).forward(ids, null, null, null),
                            data.get(i).labels()).item_double();
                }
            }
            // 3 batches, 2 per step: each epoch is steps {0, 1} and {2}; 2 epochs are 4 steps (at rate 0: warmup)
            Trainer.TrainOutput out = new Trainer(model, TrainingArguments.builder().learningRate(1e-9)
                    .warmupSteps(10).gradientAccumulationSteps(2).numTrainEpochs(2).loggingSteps(1).shuffle(false)
                    .build()).train(data);
            assertEquals(4, out.globalStep());
            double[] want = {(mean[0] + mean[1]) / 2, mean[2], (mean[0] + mean[1]) / 2, mean[2]};
            for (int i = 0; i < 4; i++) {
                assertEquals(want[i], out.log().get(i).loss(), 1e-5 * want[i], "step " + (i + 1));
            }
        }
    }

    @Test
    void readmeTrainingSnippetRunsAsWritten(@TempDir Path tmp) throws Exception {
        try (PointerScope s = new PointerScope();
                PreTrainedModel model = AutoModel.fromPretrained(tinyLlama(), ScalarType.Float)) {
            Tensor ids = torch.arange(new org.bytedeco.pytorch.Scalar(16L)).remainder(new org.bytedeco.pytorch.Scalar(5L))
                    .reshape(2, 8);
            Tensor mask = torch.ones_like(ids);
            Path cwd = tmp;
            // ---- docs/GUIDE.md snippet ("Training"), paths prefixed with cwd ----
            model.addAdapter(LoraConfig.builder().r(8).loraAlpha(16).targetModules("q_proj", "v_proj").build(), "sql");
            TrainingArguments args = TrainingArguments.builder().learningRate(2e-4).maxSteps(200).warmupSteps(10)
                    .gradientAccumulationSteps(4).build();
            Trainer.TrainOutput out = new Trainer(model, args).train(List.of(Trainer.Batch.causalLM(ids, mask)));
            model.saveAdapter(cwd.resolve("out/sql"), "sql");
            // ---- end of snippet ----
            assertEquals(200, out.globalStep());
            assertTrue(out.trainingLoss() > 0 && Double.isFinite(out.trainingLoss()));
            assertTrue(Files.exists(cwd.resolve("out/sql/adapter_config.json")));
        }
    }

    @Test
    void theStepCallbackRunsAfterEachOptimizerStepWithTheGradientsStillThere(@TempDir Path tmp) throws Exception {
        try (PointerScope s = new PointerScope();
                PreTrainedModel model = AutoModel.fromPretrained(tinyLlama(), ScalarType.Float)) {
            model.addAdapter(LoraConfig.builder().r(4).targetModules("q_proj").build(), "cb");
            Tensor a = model.getParameter("model.layers.0.self_attn.q_proj.lora_A.cb.weight");
            List<Integer> steps = new java.util.ArrayList<>();
            List<Trainer.Batch> data = List.of(Trainer.Batch.causalLM(
                    torch.arange(new org.bytedeco.pytorch.Scalar(10L)).reshape(1, 10), null));
            new Trainer(model, TrainingArguments.builder().maxSteps(3).gradientAccumulationSteps(2)
                    .outputDir(tmp).saveSteps(2).build())
                    .onStepEnd(step -> {
                        assertTrue(a.grad().defined(), "no gradient at step " + step);
                        steps.add(step);
                    }).train(data);
            assertEquals(List.of(1, 2, 3), steps);
            assertTrue(!a.grad().defined(), "gradients are cleared after the last step");
            // saveSteps 2 of 3 steps: one checkpoint, the adapter as it was after step 2 (A moved at step 3 since)
            assertTrue(Files.exists(tmp.resolve("checkpoint-2/adapter_model.safetensors")));
            assertTrue(!Files.exists(tmp.resolve("checkpoint-3")));
            Map<String, Tensor> saved = dev.peft4j.io.AdapterFolder.readWeights(
                    tmp.resolve("checkpoint-2/adapter_model.safetensors"));
            Tensor savedA = saved.get("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
            assertTrue(savedA != null && !savedA.equal(a), "checkpoint-2 holds step 2's A, not the final one");
        }
    }

    @Test
    void aRunResumedFromACheckpointEndsWhereTheUninterruptedRunDoes(@TempDir Path tmp) throws Exception {
        List<Trainer.Batch> data = new java.util.ArrayList<>();
        for (int i = 0; i < 3; i++) {
            data.add(Trainer.Batch.causalLM(torch.arange(new org.bytedeco.pytorch.Scalar(24L))
                    .mul(new org.bytedeco.pytorch.Scalar((long) (i + 2))).remainder(new org.bytedeco.pytorch.Scalar(
                            41L)).reshape(2, 12), null));
        }
        // dropout on (the random state must come back), accumulation over 2 of 3 batches (epochs of 2 steps, the
        // checkpoint at step 3 in the middle of one), log windows of 4 steps (the partial window's loss comes back)
        java.util.function.Function<Path, TrainingArguments> args = dir -> TrainingArguments.builder()
                .learningRate(1e-2).maxSteps(6).gradientAccumulationSteps(2).warmupSteps(1).loggingSteps(4)
                .seed(5).outputDir(dir).saveSteps(3).build();
        LoraConfig config = LoraConfig.builder().r(4).loraDropout(0.1).targetModules("q_proj", "v_proj").build();
        try (PointerScope s = new PointerScope();
                PreTrainedModel a = AutoModel.fromPretrained(tinyLlama(), ScalarType.Float);
                PreTrainedModel c = AutoModel.fromPretrained(tinyLlama(), ScalarType.Float);
                PreTrainedModel d = AutoModel.fromPretrained(tinyLlama(), ScalarType.Float)) {
            a.addAdapter(config, "run");
            Trainer.TrainOutput whole = new Trainer(a, args.apply(tmp.resolve("a"))).train(data);
            Path ckpt = tmp.resolve("a/checkpoint-3");
            assertEquals(tmp.resolve("a/checkpoint-6"), Trainer.lastCheckpoint(tmp.resolve("a")));
            for (String f : List.of("adapter_config.json", "adapter_model.safetensors", Checkpoint.STATE_FILE,
                    Checkpoint.PARAMS_FILE, Checkpoint.OPTIMIZER_FILE)) {
                assertTrue(Files.isRegularFile(ckpt.resolve(f)), f + " in " + ckpt);
            }

            c.addAdapter(config, "run");  // another random init: the checkpoint's parameters replace it
            Trainer.TrainOutput resumed = new Trainer(c, args.apply(tmp.resolve("c"))).train(data, ckpt);
            assertEquals(whole.log(), resumed.log(), "the log, steps before the checkpoint included");
            assertEquals(whole.trainingLoss(), resumed.trainingLoss());
            for (Map.Entry<String, Tensor> e : a.namedParameters().entrySet()) {
                assertTrue(e.getValue().equal(c.getParameter(e.getKey())), e.getKey() + " differs after resuming");
            }
            assertTrue(Files.exists(tmp.resolve("c/checkpoint-6")) && !Files.exists(tmp.resolve("c/checkpoint-3")),
                    "the resumed run saves from where it starts");

            // another rank: refused, naming the parameter, and the model keeps its own weights
            d.addAdapter(LoraConfig.builder().r(2).loraDropout(0.1).targetModules("q_proj", "v_proj").build(), "run");
            Map<String, Tensor> before = new HashMap<>();
            d.namedParameters().forEach((k, v) -> before.put(k, v.clone()));
            RuntimeException refused = assertThrows(RuntimeException.class,
                    () -> new Trainer(d, args.apply(tmp.resolve("d"))).train(data, ckpt));
            assertTrue(refused.getMessage().contains("model.layers.0.self_attn.q_proj.lora_A.run.weight")
                    && refused.getMessage().contains("Float[4, 32], the model's Float[2, 32]"),
                    refused.getMessage());
            d.namedParameters().forEach((k, v) -> assertTrue(v.equal(before.get(k)),
                    k + " changed by a refused resume"));
            assertThrows(java.io.UncheckedIOException.class,
                    () -> new Trainer(d, args.apply(tmp.resolve("d"))).train(data, tmp.resolve("a")));
            // a damaged optimizer file: refused, naming it, before the parameters are touched
            Path bad = Files.createDirectories(tmp.resolve("bad/checkpoint-3"));
            try (java.util.stream.Stream<Path> files = Files.list(ckpt)) {
                for (Path f : files.toList()) {
                    Files.copy(f, bad.resolve(f.getFileName()));
                }
            }
            byte[] opt = Files.readAllBytes(bad.resolve(Checkpoint.OPTIMIZER_FILE));
            Files.write(bad.resolve(Checkpoint.OPTIMIZER_FILE), java.util.Arrays.copyOf(opt, opt.length / 2));
            Map<String, Tensor> cBefore = new HashMap<>();
            c.namedParameters().forEach((k, v) -> cBefore.put(k, v.clone()));
            java.io.UncheckedIOException damaged = assertThrows(java.io.UncheckedIOException.class,
                    () -> new Trainer(c, args.apply(tmp.resolve("e"))).train(data, bad));
            assertTrue(damaged.getCause().getMessage().contains(Checkpoint.OPTIMIZER_FILE),
                    damaged.getCause().getMessage());
            c.namedParameters().forEach((k, v) -> assertTrue(v.equal(cBefore.get(k)),
                    k + " changed by a refused resume"));
        }
    }

    @Test
    void adaLoraTrainsWithItsRankAllocatorInTheStepCallback() throws Exception {
        try (PointerScope s = new PointerScope();
                PreTrainedModel model = AutoModel.fromPretrained(tinyLlama(), ScalarType.Float)) {
            // 2 layers x (q_proj, v_proj) = 4 modules of initial rank 6, pruned to 2 each on average by step 10
            model.addAdapter(dev.peft4j.config.AdaLoraConfig.builder().initR(6).targetR(2).tinit(2).tfinal(3)
                    .deltaT(1).totalStep(10).targetModules("q_proj", "v_proj").build(), "default");
            List<Trainer.Batch> data = List.of(Trainer.Batch.causalLM(
                    torch.arange(new org.bytedeco.pytorch.Scalar(24L)).remainder(new org.bytedeco.pytorch.Scalar(7L))
                            .reshape(2, 12), null));
            List<Integer> budgets = new java.util.ArrayList<>();
            try (dev.peft4j.tuners.adalora.AdaLoraRankAllocator ra = dev.peft4j.tuners.adalora.AdaLoraRankAllocator
                    .create(model.namedParameters(), "default", 2, 2, 3, 10, 1, 0.85, 0.85)) {
                new Trainer(model, TrainingArguments.builder().learningRate(1e-2).maxSteps(10).build())
                        .onStepEnd(step -> budgets.add(
                                ra.updateAndAllocate(model.namedParameters(), step, false).budget()))
                        .train(data);
            }
            assertEquals(10, budgets.size());
            assertEquals(24, budgets.get(0), "the initial budget: 4 modules x rank 6");
            assertEquals(8, budgets.get(9), "the target budget: 4 modules x rank 2");
            long kept = 0;
            for (Map.Entry<String, Tensor> e : model.namedParameters().entrySet()) {
                if (e.getKey().contains("lora_E")) {
                    kept += e.getValue().ne(new org.bytedeco.pytorch.Scalar(0.0)).sum().item_long();
                }
            }
            assertTrue(kept <= 8, kept + " singular values left, the budget is 8");
        }
    }
}
