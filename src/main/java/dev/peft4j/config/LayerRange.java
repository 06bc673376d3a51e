package dev.peft4j.config;

/** One {@code [start, end)} pair of {@code layer_replication}. */
public record LayerRange(int start, int end) {}
