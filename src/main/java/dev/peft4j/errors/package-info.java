/**
 * The root of peft4j's exceptions, {@link dev.peft4j.errors.Peft4jException}. A package of its own, depended on by
 * every other and depending on none, so that no package-level import circle runs through it.
 */
package dev.peft4j.errors;
