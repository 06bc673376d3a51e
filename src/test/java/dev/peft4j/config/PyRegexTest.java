package dev.peft4j.config;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;

import org.junit.jupiter.api.Test;

/** Python {@code re} syntax carried over to Java's engine where the two differ. */
class PyRegexTest {
    @Test
    void pythonsEndOfStringIsJavasLowercaseZ() {
        // Python's \Z is the very end of the string: Java's \z (Java's \Z would also match before a final newline)
        assertEquals(".*q_proj\\z", PyRegex.translate(".*q_proj\\Z"));
        assertFalse(PyRegex.matchAtStart(PyRegex.compile("q\\Z", "t"), "q\n"));
        assertEquals("[\\Z]", PyRegex.translate("[\\Z]"), "inside a class the escape is left alone");
    }
}
