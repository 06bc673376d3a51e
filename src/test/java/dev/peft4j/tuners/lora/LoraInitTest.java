package dev.peft4j.tuners.lora;

import static dev.peft4j.tuners.Goldens.floats;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * Statistical checks use 64·512 = 32768 draws: the sample standard deviation then has a relative standard error of
 * 1/√(2n) ≈ 0.4 %, so a 5 % band is > 10 standard errors wide (no flakiness) yet catches a wrong scale (1/r vs 1/√r,
 * bound 1/in vs 1/√in: factors ≥ 2 here).
 */
class LoraInitTest {
    private PointerScope scope;

    @BeforeEach
    void openScope() {
        scope = new PointerScope();
    }

    @AfterEach
    void closeScope() {
        scope.close();
    }

    static double std(float[] v) {
        double m = 0;
        for (float f : v) {
            m += f;
        }
        m /= v.length;
        double s = 0;
        for (float f : v) {
            s += (f - m) * (f - m);
        }
        return Math.sqrt(s / (v.length - 1));
    }

    static double maxAbs(float[] v) {
        double m = 0;
        for (float f : v) {
            m = Math.max(m, Math.abs(f));
        }
        return m;
    }

    @Test
    void defaultInitIsKaimingUniformAWithZeroB() {
        Tensor a = torch.empty(64, 512);
        Tensor b = torch.ones(16, 64);
        Tensor bias = torch.ones(16);
        LoraInit.initLinear(a, b, bias, LoraInit.Mode.DEFAULT, torch.createCPUGenerator(42));
        float[] av = floats(a);
        double bound = 1 / Math.sqrt(512);
        assertTrue(maxAbs(av) <= bound, "|A| <= 1/sqrt(in)");
        // U(-c, c) has standard deviation c/sqrt(3)
        assertEquals(bound / Math.sqrt(3), std(av), 0.05 * bound / Math.sqrt(3));
        assertEquals(0.0, maxAbs(floats(b)));
        assertEquals(0.0, maxAbs(floats(bias)));
    }

    @Test
    void gaussianInitHasStdOneOverRank() {
        Tensor a = torch.empty(64, 512);
        Tensor b = torch.ones(16, 64);
        LoraInit.initLinear(a, b, null, LoraInit.Mode.GAUSSIAN, torch.createCPUGenerator(1));
        assertEquals(1.0 / 64, std(floats(a)), 0.05 / 64);
        assertEquals(0.0, maxAbs(floats(b)));
    }

    @Test
    void randomInitLeavesBNonZeroWithinLinearDefaultBound() {
        Tensor a = torch.empty(64, 512);
        Tensor b = torch.zeros(512, 64);
        LoraInit.initLinear(a, b, null, LoraInit.Mode.RANDOM, torch.createCPUGenerator(2));
        float[] bv = floats(b);
        double bound = 1 / Math.sqrt(64);
        assertTrue(maxAbs(bv) <= bound);
        assertEquals(bound / Math.sqrt(3), std(bv), 0.05 * bound / Math.sqrt(3));
    }

    @Test
    void sameSeedSameWeightsOtherSeedOtherWeights() {
        Tensor a1 = torch.empty(4, 8);
        Tensor a2 = torch.empty(4, 8);
        Tensor a3 = torch.empty(4, 8);
        LoraInit.initLinear(a1, torch.empty(3, 4), null, LoraInit.Mode.DEFAULT, torch.createCPUGenerator(9));
        LoraInit.initLinear(a2, torch.empty(3, 4), null, LoraInit.Mode.DEFAULT, torch.createCPUGenerator(9));
        LoraInit.initLinear(a3, torch.empty(3, 4), null, LoraInit.Mode.DEFAULT, torch.createCPUGenerator(10));
        assertArrayEquals(floats(a1), floats(a2));
        assertFalse(Arrays.equals(floats(a1), floats(a3)));
    }

    @Test
    void embeddingDefaultInitZeroAStandardNormalB() {
        Tensor ea = torch.ones(64, 512);
        Tensor eb = torch.empty(512, 64);
        LoraInit.initEmbedding(ea, eb, LoraInit.Mode.DEFAULT, torch.createCPUGenerator(3));
        assertEquals(0.0, maxAbs(floats(ea)));
        assertEquals(1.0, std(floats(eb)), 0.05);
        LoraInit.initEmbedding(ea, eb, LoraInit.Mode.RANDOM, torch.createCPUGenerator(3));
        assertEquals(1.0, std(floats(ea)), 0.05);
    }

    @Test
    void parseAcceptsBooleansAndGaussianOnly() {
        assertEquals(LoraInit.Mode.DEFAULT, LoraInit.parse(true));
        assertEquals(LoraInit.Mode.RANDOM, LoraInit.parse(false));
        assertEquals(LoraInit.Mode.GAUSSIAN, LoraInit.parse("Gaussian"));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> LoraInit.parse("pissa"));
        assertTrue(e.getMessage().startsWith("init_lora_weights=pissa is not supported"), e.getMessage());
    }
}
