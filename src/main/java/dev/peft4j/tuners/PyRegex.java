package dev.peft4j.tuners;

import java.util.HashMap;
import java.util.Map;
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

    /** Python's {@code re.fullmatch(pattern, s)} is not None. */
    public static boolean fullMatch(Pattern p, String s) {
        return p.matcher(s).matches();
    }

    /** Python's {@code re.match(pattern, s)} is not None (anchored at the start only). */
    public static boolean matchAtStart(Pattern p, String s) {
        return p.matcher(s).lookingAt();
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
