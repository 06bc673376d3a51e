package dev.peft4j.tuners.adalora;

/**
 * AdaLoRA's rank budget over training ({@code RankAllocator.budget_schedule}, §6.8): the full budget during the
 * {@code tinit} warm-up, then a cubic decrease towards the target budget, then the target budget for the last
 * {@code tfinal} steps.
 *
 * @param initBudget {@code init_bgt}: the summed rank of every adapted module at start ({@code init_r ×} modules)
 * @param targetBudget {@code target_bgt}: {@code target_r ×} modules
 */
public record AdaLoraSchedule(int initBudget, int targetBudget, int tinit, int tfinal, int totalStep, int deltaT) {

    /** The budget at a step, and whether the rank mask is applied at that step. */
    public record Budget(int budget, boolean mask) {}

    /**
     * Checks the schedule, with PEFT's messages.
     * @throws IllegalArgumentException if {@code totalStep} is not positive, the schedule leaves no budgeting phase, or
     *     {@code deltaT} is not positive
     */
    public AdaLoraSchedule {
        if (totalStep <= 0) {
            throw new IllegalArgumentException(
                    "AdaLoRA does not work when `total_step` is None, supply a value > 0.");
        }
        if (tinit >= totalStep - tfinal) {
            throw new IllegalArgumentException("The supplied schedule values don't allow for a budgeting phase. "
                    + "Decrease `tfinal`/`tinit` or increase `total_step`.");
        }
        if (deltaT <= 0) {
            throw new IllegalArgumentException("deltaT must be positive, got " + deltaT);
        }
    }

    /**
     * {@code budget_schedule(step)}: {@code step <= tinit} → (init, no mask); {@code step > total_step - tfinal} →
     * (target, mask); otherwise {@code c = 1 − (step − tinit)/(total_step − tfinal − tinit)},
     * {@code budget = int((init − target)·c³ + target)} (truncated toward zero, in double as Python computes it),
     * masking every {@code deltaT} steps.
     */
    public Budget at(int step) {
        if (step <= tinit) {
            return new Budget(initBudget, false);
        }
        if (step > totalStep - tfinal) {
            return new Budget(targetBudget, true);
        }
        double c = 1.0 - (double) (step - tinit) / (totalStep - tfinal - tinit);
        int budget = (int) ((initBudget - targetBudget) * Math.pow(c, 3) + targetBudget); // Python: mul_coeff**3
        return new Budget(budget, Math.floorMod(step, deltaT) == 0);
    }
}
