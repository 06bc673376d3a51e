package dev.peft4j.nn;

import java.util.Iterator;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.PointerScope;

/**
 * Moving native objects in and out of JavaCPP {@link PointerScope}s. A scope's {@code detach} also drops a
 * reference (closing the object when it was the last), so every detach here is paired with a retain.
 */
public final class Scopes {
    private Scopes() {}

    /**
     * Takes {@code p} out of every open scope of this thread, so that only an explicit {@code close()} (or the GC)
     * frees it. Returns {@code p}.
     */
    public static <P extends Pointer> P detachFromAll(P p) {
        for (Iterator<PointerScope> it = PointerScope.getScopeIterator(); it != null && it.hasNext();) {
            PointerScope s = it.next();
            p.retainReference();
            s.detach(p);
        }
        return p;
    }

    /** Takes {@code p} out of {@code scope} only (before closing it). Returns {@code p}. */
    public static <P extends Pointer> P detach(PointerScope scope, P p) {
        p.retainReference();
        scope.detach(p);
        return p;
    }

    /**
     * Hands {@code p}, detached from a closed inner scope, to the thread's current innermost scope (if any), so that
     * the caller's scope frees it. Returns {@code p}.
     */
    public static <P extends Pointer> P handToCaller(P p) {
        PointerScope s = PointerScope.getInnerScope();
        if (s != null) {
            s.attach(p);
            p.releaseReference(); // attach retained: the scope now holds the only reference
        }
        return p;
    }
}
