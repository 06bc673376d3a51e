package dev.peft4j.tuners.adalora;

import static dev.peft4j.tuners.Goldens.goldenCase;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import com.fasterxml.jackson.databind.JsonNode;
import org.junit.jupiter.api.Test;

class AdaLoraScheduleTest {

    @Test
    void everyStepMatchesPeftBudgetSchedule() {
        JsonNode c = goldenCase("adalora_budget_schedule");
        AdaLoraSchedule s = new AdaLoraSchedule(c.path("init_bgt").asInt(), c.path("target_bgt").asInt(),
                c.path("tinit").asInt(), c.path("tfinal").asInt(), c.path("total_step").asInt(), c.path("delta_t").asInt());
        JsonNode steps = c.path("steps");
        for (int step = 0; step < steps.size(); step++) {
            AdaLoraSchedule.Budget expected = new AdaLoraSchedule.Budget(steps.get(step).get(0).asInt(),
                    steps.get(step).get(1).asBoolean());
            assertEquals(expected, s.at(step), "step " + step);
        }
    }

    @Test
    void handComputedMidpoint() {
        // init 100, target 20, tinit 0, tfinal 0, total 10: step 5 -> c = 0.5, 80 * 0.125 + 20 = 30
        AdaLoraSchedule s = new AdaLoraSchedule(100, 20, 0, 0, 10, 5);
        assertEquals(new AdaLoraSchedule.Budget(30, true), s.at(5));
        assertEquals(new AdaLoraSchedule.Budget(100, false), s.at(0));
        assertEquals(new AdaLoraSchedule.Budget(20, true), s.at(11));
    }

    @Test
    void scheduleWithoutBudgetingPhaseIsRefusedWithPeftMessage() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> new AdaLoraSchedule(10, 5, 50, 50, 100, 1));
        assertEquals("The supplied schedule values don't allow for a budgeting phase. Decrease `tfinal`/`tinit` or "
                + "increase `total_step`.", e.getMessage());
        assertEquals("AdaLoRA does not work when `total_step` is None, supply a value > 0.",
                assertThrows(IllegalArgumentException.class, () -> new AdaLoraSchedule(10, 5, 0, 0, 0, 1)).getMessage());
    }
}
