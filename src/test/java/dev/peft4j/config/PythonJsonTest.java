package dev.peft4j.config;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

class PythonJsonTest {

    static String resource(String name) throws IOException {
        try (InputStream in = PythonJsonTest.class.getResourceAsStream(name)) {
            if (in == null) {
                throw new IOException("missing test resource " + name);
            }
            return new String(in.readAllBytes(), StandardCharsets.UTF_8);
        }
    }

    @Test
    void floatsAreWrittenAsPythonReprForEveryVectorPythonProduced() throws IOException {
        List<String> failures = new ArrayList<>();
        int checked = 0;
        for (String line : resource("python-float-repr.txt").split("\n")) {
            if (line.startsWith("#") || line.isBlank()) {
                continue;
            }
            String[] parts = line.split(" ");
            double d = Double.longBitsToDouble(Long.parseUnsignedLong(parts[0], 16));
            String got = PythonJson.floatRepr(d);
            if (!got.equals(parts[1])) {
                failures.add(parts[0] + ": expected " + parts[1] + ", got " + got);
            }
            checked++;
        }
        assertTrue(checked > 4000, "vectors read: " + checked);
        assertEquals(List.of(), failures);
    }

    @Test
    void floatReprKeepsAFractionAndSwitchesToExponentLikePython() {
        assertEquals("1.0", PythonJson.floatRepr(1.0));
        assertEquals("16.0", PythonJson.floatRepr(16.0));
        assertEquals("0.05", PythonJson.floatRepr(0.05));
        assertEquals("0.0001", PythonJson.floatRepr(0.0001));
        assertEquals("1e-05", PythonJson.floatRepr(1e-5));
        assertEquals("1e+16", PythonJson.floatRepr(1e16));
        assertEquals("1000000000000000.0", PythonJson.floatRepr(1e15));
        assertEquals("-0.0", PythonJson.floatRepr(-0.0));
        assertEquals("0.30000000000000004", PythonJson.floatRepr(0.1 + 0.2));
    }

    @Test
    void nonFiniteFloatsAreRefused() {
        assertThrows(IllegalArgumentException.class, () -> PythonJson.floatRepr(Double.NaN));
        assertThrows(IllegalArgumentException.class, () -> PythonJson.dumps(List.of(Double.POSITIVE_INFINITY)));
    }

    @Test
    void dumpsMatchesPythonIndentSortKeysOutputByteForByte() throws IOException {
        Object value = PythonJson.fromTree(new ObjectMapper().readTree(resource("dumps-input.json")));
        assertEquals(resource("dumps-expected.json"), PythonJson.dumps(value));
    }

    @Test
    void keysSortByCodePointNotByUtf16Unit() {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("\uff61", 1L); // U+FF61, above the surrogates as a UTF-16 unit
        m.put("\ud83d\ude00", 2L); // U+1F600: smaller UTF-16 unit, larger code point
        assertEquals("{\n  \"\\uff61\": 1,\n  \"\\ud83d\\ude00\": 2\n}", PythonJson.dumps(m));
    }

    @Test
    void intAndFloatStayDistinctThroughFreeze() {
        assertEquals("[\n  16,\n  16.0,\n  16\n]", PythonJson.dumps(PythonJson.freeze(List.of(16, 16.0, 16L))));
    }
}
