package dev.peft4j.config;

import java.util.HashMap;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.regex.PatternSyntaxException;

/**
 * Python {@code re} patterns, as PEFT configs carry them, compiled as Java patterns with the same meaning.
 *
 * <p>Python 3 {@code str} patterns are Unicode-aware by default ({@code \d}, {@code \w}, {@code \s} match any
 * Unicode digit, word or space character), so every pattern is compiled with
 * {@link Pattern#UNICODE_CHARACTER_CLASS}. The syntax that differs between the two engines is rewritten:
 *
 * <ul>
 *   <li>named groups {@code (?P<name>…)} and back-references {@code (?P=name)} become Java's {@code (?<pygN>…)} and
 *       {@code \k<pygN>} (Java group names cannot hold {@code _}, Python's can);
 *   <li>{@code \Z} (Python: the very end) becomes Java's {@code \z};
 *   <li>a <code>&#123;</code> that does not open a valid repetition (<code>a&#123;</code>,
 *       <code>&#123;x&#125;</code>) is a literal in Python and is escaped; {@code {,n}} (Python: 0 to n)
 *       becomes {@code {0,n}} and {@code {,}} becomes {@code {0,}};
 *   <li>inside a character class, {@code [} and {@code &} are literals in Python (Java would read a nested class or
 *       an intersection) and are escaped.
 * </ul>
 *
 * Python-only constructs with no Java equivalent (conditional groups {@code (?(1)…)}, the {@code (?a)} / {@code
 * (?L)} flags) are rejected by the Java compiler and reported as an {@link IllegalArgumentException} naming the
 * field and the pattern. Matching itself is the same: {@link #fullMatch} is Python's {@code re.fullmatch},
 * {@link #matchAtStart} is {@code re.match} (anchored at the start, not at the end).
 */
public final class PyRegex {
    private PyRegex() {}

    /** Compiles the Python pattern {@code regex}; {@code field} names the config value in error messages. */
    public static Pattern compile(String regex, String field) {
        if (regex == null) {
            throw new IllegalArgumentException(field + ": regular expression is null");
        }
        String java = translate(regex);
        try {
            return Pattern.compile(java, Pattern.UNICODE_CHARACTER_CLASS);
        } catch (PatternSyntaxException e) {
            throw new IllegalArgumentException(field + ": invalid regular expression " + PyRepr.str(regex) + ": "
                    + e.getDescription(), e);
        }
    }

    /**
     * Python's {@code re.fullmatch(pattern, s)} is not None.
     *
     * @throws PeftConfigException naming the pattern and {@code s} when matching takes more steps than
     *     {@link #stepBudget} allows (a pattern that backtracks catastrophically, as {@code (.*)*(.*)*z})
     */
    public static boolean fullMatch(Pattern p, String s) {
        BudgetedText text = new BudgetedText(s);
        try {
            return p.matcher(text).matches();
        } catch (BudgetedText.Exhausted e) {
            throw overBudget(p, s);
        }
    }

    /**
     * Python's {@code re.match(pattern, s)} is not None (anchored at the start only).
     *
     * @throws PeftConfigException as {@link #fullMatch} does
     */
    public static boolean matchAtStart(Pattern p, String s) {
        return groupsAtStart(p, s) != null;
    }

    /**
     * Python's {@code re.match(pattern, s)}: the groups of the match anchored at the start (index 0 the whole
     * match), or null when it does not match.
     *
     * @throws PeftConfigException as {@link #fullMatch} does
     */
    public static String[] groupsAtStart(Pattern p, String s) {
        BudgetedText text = new BudgetedText(s);
        try {
            Matcher m = p.matcher(text);
            if (!m.lookingAt()) {
                return null;
            }
            String[] groups = new String[m.groupCount() + 1];
            for (int i = 0; i < groups.length; i++) {
                groups[i] = m.group(i);
            }
            return groups;
        } catch (BudgetedText.Exhausted e) {
            throw overBudget(p, s);
        }
    }

    /**
     * Characters the regex engine may read while matching a string of {@code length} characters: several times
     * what a pattern without nested repetition needs on a module name (quadratic backtracking over a 300-character
     * name reads about 90k), and a millisecond or so of work, so that a config matched against thousands of
     * module names stays fast. {@code (.*)*(.*)*(.*)*z} reads about 190k characters on a 31-character name.
     */
    static long stepBudget(int length) {
        return 100_000L + 1_000L * length;
    }

    private static PeftConfigException overBudget(Pattern p, String s) {
        return new PeftConfigException("regular expression " + PyRepr.str(p.pattern()) + " needs more than "
                + stepBudget(s.length()) + " steps to match " + PyRepr.str(s)
                + " (catastrophic backtracking); rewrite it without nested repetition");
    }

    /** A string whose reads are counted: the engine reads a character at each step, backtracking included. */
    private static final class BudgetedText implements CharSequence {
        /** Thrown past the budget; caught in this class's callers only. */
        static final class Exhausted extends RuntimeException {
            private static final long serialVersionUID = 1L;

            Exhausted() {
                super(null, null, false, false);
            }
        }

        private final String s;
        private long left;

        BudgetedText(String s) {
            this.s = s;
            this.left = stepBudget(s.length());
        }

        @Override
        public char charAt(int index) {
            if (--left < 0) {
                throw new Exhausted();
            }
            return s.charAt(index);
        }

        @Override
        public int length() {
            return s.length();
        }

        @Override
        public CharSequence subSequence(int start, int end) {
            return s.substring(start, end);
        }

        @Override
        public String toString() {
            return s;
        }
    }

    static String translate(String py) {
        StringBuilder out = new StringBuilder(py.length() + 8);
        Map<String, String> groupNames = new HashMap<>();
        boolean inClass = false;
        int classStart = -1;
        int n = py.length();
        for (int i = 0; i < n; i++) {
            char c = py.charAt(i);
            if (c == '\\') {
                if (i + 1 >= n) {
                    out.append(c); // dangling escape: let the compiler report it
                    continue;
                }
                char d = py.charAt(i + 1);
                if (d == 'Z' && !inClass) {
                    out.append("\\z");
                } else {
                    out.append(c).append(d);
                }
                i++;
                continue;
            }
            if (inClass) {
                if (c == ']' && i > classStart) {
                    inClass = false;
                    out.append(c);
                } else if (c == '[' || c == '&') {
                    out.append('\\').append(c);
                } else {
                    out.append(c);
                }
                continue;
            }
            if (c == '[') {
                inClass = true;
                out.append(c);
                // a ']' right after '[' or '[^' is a literal in both engines
                classStart = i + 1;
                if (classStart < n && py.charAt(classStart) == '^') {
                    out.append('^');
                    i++;
                    classStart++;
                }
                if (classStart < n && py.charAt(classStart) == ']') {
                    out.append("\\]");
                    i++;
                    classStart++;
                }
                continue;
            }
            if (c == '(' && py.startsWith("(?P<", i)) {
                int end = py.indexOf('>', i + 4);
                if (end > 0) {
                    String name = py.substring(i + 4, end);
                    String javaName = "pyg" + (groupNames.size() + 1);
                    groupNames.put(name, javaName);
                    out.append("(?<").append(javaName).append('>');
                    i = end;
                    continue;
                }
            }
            if (c == '(' && py.startsWith("(?P=", i)) {
                int end = py.indexOf(')', i + 4);
                if (end > 0) {
                    String name = py.substring(i + 4, end);
                    String javaName = groupNames.get(name);
                    if (javaName == null) {
                        throw new IllegalArgumentException("regular expression " + PyRepr.str(py)
                                + ": back-reference to unknown group name " + PyRepr.str(name));
                    }
                    out.append("\\k<").append(javaName).append('>');
                    i = end;
                    continue;
                }
            }
            if (c == '{') {
                int end = py.indexOf('}', i);
                String body = end > 0 ? py.substring(i + 1, end) : null;
                if (body != null && body.matches("\\d*(,\\d*)?") && !body.isEmpty()) {
                    out.append('{').append(body.startsWith(",") ? "0" + body : body).append('}');
                    i = end;
                } else {
                    out.append("\\{");
                }
                continue;
            }
            if (c == '}') {
                out.append("\\}");
                continue;
            }
            out.append(c);
        }
        return out.toString();
    }
}
