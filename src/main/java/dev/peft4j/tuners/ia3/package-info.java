/**
 * IA³ ({@code peft/tuners/ia3}): {@link dev.peft4j.tuners.ia3.IA3Model} (which modules get an adapter, with which
 * new vectors), the layer {@link dev.peft4j.tuners.ia3.Ia3Layer}, {@link dev.peft4j.tuners.ia3.Ia3Targets} (feed-forward classification) and
 * {@link dev.peft4j.tuners.ia3.Ia3Math} (input/output scaling, merge/unmerge).
 */
package dev.peft4j.tuners.ia3;
