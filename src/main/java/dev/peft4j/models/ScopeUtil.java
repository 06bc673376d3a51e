package dev.peft4j.models;

import dev.peft4j.nn.Scopes;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.PointerScope;

/** Moving results out of the per-forward {@link PointerScope} (see {@link Scopes}). */
final class ScopeUtil {
    private ScopeUtil() {}

    /** Takes {@code p} out of every open scope: its holder (a cache, a model) closes it. */
    static <P extends Pointer> P detach(P p) {
        return Scopes.detachFromAll(p);
    }

    /** Takes {@code p} out of {@code scope} before it closes; pair with {@link #handToCaller}. */
    static <P extends Pointer> P keep(PointerScope scope, P p) {
        return Scopes.detach(scope, p);
    }

    /** Attaches {@code p} to the caller's innermost scope, if any (after the forward's own scope is closed). */
    static <P extends Pointer> P handToCaller(P p) {
        return Scopes.handToCaller(p);
    }
}
