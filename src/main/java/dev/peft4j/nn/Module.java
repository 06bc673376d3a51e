package dev.peft4j.nn;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.BiConsumer;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Device;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * A node of a model's module tree, named the way Hugging Face names it: {@code model.layers.0.self_attn.q_proj}
 * holds parameter {@code weight}, so the state dict key is {@code model.layers.0.self_attn.q_proj.weight}.
 *
 * <p>This is a plain Java class, not a subclass of libtorch's {@code torch::nn::Module}: adapters replace children
 * from Java ({@link #replaceSubmodule}), parents find their children by name at every forward (so a replaced child
 * is used at once), and parameters are plain {@link Tensor}s whose handles we own (libtorch's
 * {@code register_parameter} hands back handles that go stale, see spec/java-notes.md §2.6).
 *
 * <p>Ownership: a module owns its parameters, buffers and children; {@link #close()} frees them. Tensors handed out
 * by {@link #namedParameters()}, {@link #stateDict()} and the like stay owned by the module: do not close them.
 * Tensors handed in ({@link #registerParameter}, {@link #setParameter}, {@link #loadStateDict}) are taken over or
 * copied as documented there.
 */
public abstract class Module implements AutoCloseable {
    private final LinkedHashMap<String, Module> children = new LinkedHashMap<>();
    private final LinkedHashMap<String, Tensor> parameters = new LinkedHashMap<>();
    private final LinkedHashMap<String, Tensor> buffers = new LinkedHashMap<>();
    private final Set<String> nonPersistentBuffers = new LinkedHashSet<>();
    // bumped whenever any module's parameter, buffer or child map changes (in any tree): cached native state that
    // holds raw pointers to tensors compares it instead of re-checking every tensor on every forward
    private static final java.util.concurrent.atomic.AtomicLong TENSOR_EPOCH = new java.util.concurrent.atomic.AtomicLong();
    private boolean training;

    /**
     * Bumped by every change to any module's children (register, remove, replace), in any tree: a cache of a tree's
     * module list (e.g. the mixin's tuner layers) is valid while this value is unchanged.
     */
    private static final java.util.concurrent.atomic.AtomicLong STRUCTURE_VERSION = new java.util.concurrent.atomic.AtomicLong();

    /**
     * A counter that changes whenever a child module is registered, removed or replaced anywhere; equal values mean
     * no {@link #namedModules()} result has changed meanwhile. For caches of the module tree.
     */
    public static long structureVersion() {
        return STRUCTURE_VERSION.get();
    }

    /** The class name transformers would print for this module ({@code Linear}, {@code LlamaAttention}, ...). */
    public String typeName() {
        return getClass().getSimpleName();
    }

    // ---------------------------------------------------------------- registration (for subclasses)

    /** Adds {@code module} as child {@code name} (replacing nothing: names must be new); returns it. */
    protected final <M extends Module> M registerModule(String name, M module) {
        checkLocalName(name);
        if (children.containsKey(name) || parameters.containsKey(name) || buffers.containsKey(name)) {
            throw new IllegalArgumentException(typeName() + ": attribute '" + name + "' already exists");
        }
        children.put(name, module);
        STRUCTURE_VERSION.incrementAndGet();
        TENSOR_EPOCH.incrementAndGet();
        module.train(training);
        return module;
    }

    /**
     * Takes ownership of {@code tensor} as parameter {@code name}; {@code trainable} sets {@code requires_grad}.
     * The tensor is detached from any enclosing {@link PointerScope} so that the scope does not free it.
     */
    protected final Tensor registerParameter(String name, Tensor tensor, boolean trainable) {
        checkLocalName(name);
        if (children.containsKey(name) || parameters.containsKey(name) || buffers.containsKey(name)) {
            throw new IllegalArgumentException(typeName() + ": attribute '" + name + "' already exists");
        }
        keepOutOfScope(tensor);
        tensor.requires_grad_(trainable);
        parameters.put(name, tensor);
        TENSOR_EPOCH.incrementAndGet();
        return tensor;
    }

    /** Takes ownership of {@code tensor} as buffer {@code name}; non-persistent buffers stay out of the state dict. */
    protected final Tensor registerBuffer(String name, Tensor tensor, boolean persistent) {
        checkLocalName(name);
        if (children.containsKey(name) || parameters.containsKey(name) || buffers.containsKey(name)) {
            throw new IllegalArgumentException(typeName() + ": attribute '" + name + "' already exists");
        }
        keepOutOfScope(tensor);
        buffers.put(name, tensor);
        TENSOR_EPOCH.incrementAndGet();
        if (!persistent) {
            nonPersistentBuffers.add(name);
        }
        return tensor;
    }

    /** Names of this module's own parameters (not its children's), in registration order. */
    protected final Set<String> ownParameterNames() {
        return Collections.unmodifiableSet(parameters.keySet());
    }

    /** Removes child {@code name} and returns it (not closed), or null when there is none. */
    protected final Module removeModule(String name) {
        Module removed = children.remove(name);
        if (removed != null) {
            STRUCTURE_VERSION.incrementAndGet();
            TENSOR_EPOCH.incrementAndGet();
        }
        return removed;
    }

    /** Removes parameter {@code name} and returns its tensor (not closed: the caller owns it now), or null. */
    protected final Tensor removeParameter(String name) {
        TENSOR_EPOCH.incrementAndGet();
        return parameters.remove(name);
    }

    /** The current tensor of this module's own parameter {@code name} (looked up each call: it may be replaced). */
    protected final Tensor param(String name) {
        Tensor t = parameters.get(name);
        if (t == null) {
            throw new IllegalStateException(typeName() + " has no parameter '" + name + "'");
        }
        return t;
    }

    /** This module's own parameter {@code name}, or null when it has none (an optional bias). */
    protected final Tensor paramOrNull(String name) {
        return parameters.get(name);
    }

    /** The current tensor of this module's own buffer {@code name}. */
    protected final Tensor buffer(String name) {
        Tensor t = buffers.get(name);
        if (t == null) {
            throw new IllegalStateException(typeName() + " has no buffer '" + name + "'");
        }
        return t;
    }

    /** Child {@code name} (looked up each call, so that a child replaced by an adapter is used at once). */
    protected final Module child(String name) {
        Module m = children.get(name);
        if (m == null) {
            throw new IllegalStateException(typeName() + " has no child '" + name + "'");
        }
        return m;
    }

    /** Child {@code name} as a {@link Layer}: what a parent calls in its forward. */
    protected final Layer layer(String name) {
        Module m = child(name);
        if (!(m instanceof Layer)) {
            throw new IllegalStateException(typeName() + "." + name + " is a " + m.typeName() + ", not a Layer");
        }
        return (Layer) m;
    }

    // ---------------------------------------------------------------- the tree

    /** This module's own parameters (not its children's) by local name, in registration order (unmodifiable). */
    public final Map<String, Tensor> ownParameters() {
        return Collections.unmodifiableMap(parameters);
    }

    /** Direct children in registration order (unmodifiable). */
    public final Map<String, Module> children() {
        return Collections.unmodifiableMap(children);
    }

    /**
     * Every module of the tree under its dotted name, this one first as {@code ""}, in pre-order like PyTorch's
     * {@code named_modules()} (a module reachable twice is listed once, under its first name).
     */
    public final Map<String, Module> namedModules() {
        LinkedHashMap<String, Module> out = new LinkedHashMap<>();
        Set<Module> seen = Collections.newSetFromMap(new IdentityHashMap<>());
        collectModules("", this, out, seen);
        return out;
    }

    private static void collectModules(String prefix, Module m, Map<String, Module> out, Set<Module> seen) {
        if (!seen.add(m)) {
            return;
        }
        out.put(prefix, m);
        for (Map.Entry<String, Module> e : m.children.entrySet()) {
            collectModules(prefix.isEmpty() ? e.getKey() : prefix + "." + e.getKey(), e.getValue(), out, seen);
        }
    }

    /** The module at dotted path {@code name} ({@code ""} is this one); throws naming the missing part. */
    public final Module getSubmodule(String name) {
        if (name.isEmpty()) {
            return this;
        }
        Module m = this;
        String walked = "";
        for (String part : name.split("\\.", -1)) {
            Module next = m.children.get(part);
            if (next == null) {
                throw new IllegalArgumentException("no module '" + name + "': " + (walked.isEmpty() ? "the root" : walked)
                        + " (" + m.typeName() + ") has no child '" + part + "'; its children are " + m.children.keySet());
            }
            walked = walked.isEmpty() ? part : walked + "." + part;
            m = next;
        }
        return m;
    }

    /**
     * Puts {@code replacement} in place of the module at dotted path {@code name} and returns the module it replaced
     * (not closed: an adapter wrapper usually keeps it as its {@code base_layer}). The parent's forward uses the
     * replacement from the next call on. A {@link Layer} can only be replaced by a {@link Layer}.
     */
    public final Module replaceSubmodule(String name, Module replacement) {
        if (name.isEmpty()) {
            throw new IllegalArgumentException("cannot replace the root module");
        }
        if (replacement == null) {
            throw new IllegalArgumentException("replacement for '" + name + "' is null");
        }
        int dot = name.lastIndexOf('.');
        Module parent = getSubmodule(dot < 0 ? "" : name.substring(0, dot));
        String local = name.substring(dot + 1);
        Module old = parent.children.get(local);
        if (old == null) {
            throw new IllegalArgumentException("no module '" + name + "': " + parent.typeName() + " has no child '"
                    + local + "'; its children are " + parent.children.keySet());
        }
        if (old instanceof Layer && !(replacement instanceof Layer)) {
            throw new IllegalArgumentException("'" + name + "' is a Layer (" + old.typeName() + "); its replacement "
                    + replacement.typeName() + " must implement Layer too");
        }
        parent.children.put(local, replacement); // same key: keeps the registration order
        STRUCTURE_VERSION.incrementAndGet();
        TENSOR_EPOCH.incrementAndGet();
        replacement.train(parent.training);
        return old;
    }

    /**
     * Every parameter under its dotted name, in registration order. A tensor registered twice (tied weights) is
     * listed once, under its first name, as PyTorch's {@code named_parameters()} does.
     */
    public final Map<String, Tensor> namedParameters() {
        LinkedHashMap<String, Tensor> out = new LinkedHashMap<>();
        Set<Tensor> seen = Collections.newSetFromMap(new IdentityHashMap<>());
        forEachSlot(true, false, false, (name, slot) -> {
            Tensor t = slot.get();
            if (seen.add(t)) {
                out.put(name, t);
            }
        });
        return out;
    }

    /** Every buffer (persistent or not) under its dotted name. */
    public final Map<String, Tensor> namedBuffers() {
        LinkedHashMap<String, Tensor> out = new LinkedHashMap<>();
        forEachSlot(false, true, false, (name, slot) -> out.put(name, slot.get()));
        return out;
    }

    /**
     * Parameters and persistent buffers under their Hugging Face keys, tied weights listed under every name (as
     * PyTorch's {@code state_dict()} does). The tensors are the module's own: do not close them.
     */
    public final Map<String, Tensor> stateDict() {
        LinkedHashMap<String, Tensor> out = new LinkedHashMap<>();
        forEachSlot(true, true, true, (name, slot) -> out.put(name, slot.get()));
        return out;
    }

    /** The parameter at dotted path {@code name} (e.g. {@code lm_head.weight}). */
    public final Tensor getParameter(String name) {
        int dot = name.lastIndexOf('.');
        Module owner = getSubmodule(dot < 0 ? "" : name.substring(0, dot));
        Tensor t = owner.parameters.get(name.substring(dot + 1));
        if (t == null) {
            throw new IllegalArgumentException("no parameter '" + name + "': " + owner.typeName() + " has "
                    + owner.parameters.keySet());
        }
        return t;
    }

    /**
     * Makes {@code tensor} the parameter at dotted path {@code name}, taking ownership of it; the tensor it replaces
     * is returned, not closed (it may still be used elsewhere, e.g. tied). Its {@code requires_grad} is kept.
     * The shape must match unless {@code allowNewShape} (an adapter resizing an embedding).
     */
    public final Tensor setParameter(String name, Tensor tensor, boolean allowNewShape) {
        int dot = name.lastIndexOf('.');
        Module owner = getSubmodule(dot < 0 ? "" : name.substring(0, dot));
        String local = name.substring(dot + 1);
        Tensor old = owner.parameters.get(local);
        if (old == null) {
            throw new IllegalArgumentException("no parameter '" + name + "': " + owner.typeName() + " has "
                    + owner.parameters.keySet());
        }
        if (!allowNewShape && !Arrays.equals(old.shape(), tensor.shape())) {
            throw new IllegalArgumentException("parameter '" + name + "': shape " + Arrays.toString(tensor.shape())
                    + " does not match the model's " + Arrays.toString(old.shape()));
        }
        boolean trainable = old.requires_grad();
        keepOutOfScope(tensor);
        if (tensor.requires_grad() != trainable) {
            tensor.requires_grad_(trainable);
        }
        owner.parameters.put(local, tensor);
        TENSOR_EPOCH.incrementAndGet();
        return old;
    }

    /** A slot in some module's parameter or buffer map: lets the tree rewrite tensors in place (dtype, loading). */
    interface Slot {
        Tensor get();

        void set(Tensor t);
    }

    /** Visits parameters (and buffers) of the whole tree, depth first, with dotted names; duplicates included. */
    final void forEachSlot(boolean params, boolean bufs, boolean persistentOnly, BiConsumer<String, Slot> visitor) {
        visitSlots("", this, params, bufs, persistentOnly, visitor, Collections.newSetFromMap(new IdentityHashMap<>()));
    }

    private static void visitSlots(String prefix, Module m, boolean params, boolean bufs, boolean persistentOnly,
            BiConsumer<String, Slot> visitor, Set<Module> seen) {
        if (!seen.add(m)) {
            return;
        }
        String p = prefix.isEmpty() ? "" : prefix + ".";
        if (params) {
            for (String k : new ArrayList<>(m.parameters.keySet())) {
                visitor.accept(p + k, new Slot() {
                    public Tensor get() {
                        return m.parameters.get(k);
                    }

                    public void set(Tensor t) {
                        TENSOR_EPOCH.incrementAndGet();
                        m.parameters.put(k, t);
                    }
                });
            }
        }
        if (bufs) {
            for (String k : new ArrayList<>(m.buffers.keySet())) {
                if (persistentOnly && m.nonPersistentBuffers.contains(k)) {
                    continue;
                }
                visitor.accept(p + k, new Slot() {
                    public Tensor get() {
                        return m.buffers.get(k);
                    }

                    public void set(Tensor t) {
                        TENSOR_EPOCH.incrementAndGet();
                        m.buffers.put(k, t);
                    }
                });
            }
        }
        for (Map.Entry<String, Module> e : m.children.entrySet()) {
            visitSlots(p + e.getKey(), e.getValue(), params, bufs, persistentOnly, visitor, seen);
        }
    }

    // ---------------------------------------------------------------- modes, dtype, device

    /** Training mode for this module and all below it (dropout active); returns this. */
    public Module train(boolean on) {
        Set<Module> seen = Collections.newSetFromMap(new IdentityHashMap<>());
        seen.add(this);
        setTraining(this, on, seen);
        return this;
    }

    private static void setTraining(Module m, boolean on, Set<Module> seen) {
        // the modules namedModules() lists, without building their names; leaves (most modules: every adapter's
        // Linears) need no cycle check
        m.training = on;
        for (Module c : m.children.values()) {
            if (c.children.isEmpty()) {
                c.training = on;
            } else if (seen.add(c)) {
                setTraining(c, on, seen);
            }
        }
    }

    /** Evaluation mode (the default, as after transformers' {@code from_pretrained}); returns this. */
    public final Module eval() {
        return train(false);
    }

    /** Whether this module is in training mode ({@link #train}, {@link #eval}). */
    public final boolean isTraining() {
        return training;
    }

    /**
     * Moves every parameter and buffer to {@code device} (null: each stays where it is), with the tensors modules hold
     * beside them ({@link #moveHeldTensors}), and converts floating-point ones to {@code dtype} (null: each keeps its
     * own; integer buffers keep theirs), in place; tied tensors stay tied. Returns this.
     */
    public final Module to(Device device, ScalarType dtype) {
        replaceSlots((name, old) -> {
            ScalarType from = old.scalar_type().intern();
            ScalarType target = isFloating(from) && dtype != null ? dtype : from;
            if (target == from && (device == null || onDevice(old, device))) {
                return old;
            }
            return device == null ? old.to(target) : old.to(device, target);
        });
        if (device != null) {
            Set<Module> seen = Collections.newSetFromMap(new IdentityHashMap<>());
            for (Module m : namedModules().values()) {
                if (seen.add(m)) {
                    m.moveHeldTensors(device);
                }
            }
            TENSOR_EPOCH.incrementAndGet();
        }
        return this;
    }

    /**
     * Moves every parameter and buffer, and the tensors modules hold beside them (rotary frequencies), to
     * {@code device}, keeping each dtype; in place, tied tensors stay tied. Returns this.
     */
    public final Module to(Device device) {
        return to(device, null);
    }

    /**
     * Moves each parameter and buffer to the device {@code placement} gives for its name (null: it stays), and the
     * tensors each module holds beside them ({@link #moveHeldTensors}) to the device it gives for the module's name
     * ({@code ""} for this one); dtypes kept, in place. A tensor tied under several names moves once, to the device of
     * the first name visited (a caller placing tied names apart must refuse that first). Returns this.
     */
    public final Module toDevices(java.util.function.Function<String, Device> placement) {
        replaceSlots((name, old) -> {
            Device device = placement.apply(name);
            return device == null || onDevice(old, device) ? old : old.to(device, old.scalar_type().intern());
        });
        Set<Module> seen = Collections.newSetFromMap(new IdentityHashMap<>());
        for (Map.Entry<String, Module> e : namedModules().entrySet()) {
            Device device = placement.apply(e.getKey());
            if (device != null && seen.add(e.getValue())) {
                e.getValue().moveHeldTensors(device);
            }
        }
        TENSOR_EPOCH.incrementAndGet();
        return this;
    }

    /**
     * Replaces each parameter and buffer by {@code convert(name, tensor)} (returning the tensor itself keeps it), once
     * per tensor so tied names stay tied; a new tensor keeps the old one's {@code requires_grad}, and the replaced
     * ones are closed.
     */
    private void replaceSlots(java.util.function.BiFunction<String, Tensor, Tensor> convert) {
        IdentityHashMap<Tensor, Tensor> converted = new IdentityHashMap<>();
        List<Tensor> replaced = new ArrayList<>();
        try (NoGradGuard g = new NoGradGuard()) {
            forEachSlot(true, true, false, (name, slot) -> {
                Tensor old = slot.get();
                Tensor now = converted.get(old);
                if (now == null) {
                    now = convert.apply(name, old);
                    if (now != old) {
                        keepOutOfScope(now);
                        now.requires_grad_(old.requires_grad());
                        replaced.add(old);
                    }
                    converted.put(old, now);
                }
                slot.set(now);
            });
        }
        for (Tensor t : replaced) {
            t.close();
        }
    }

    private static boolean onDevice(Tensor t, Device device) {
        return t.device().str().getString().equals(device.str().getString());
    }

    /**
     * Moves the tensors this module keeps outside its parameters and buffers (constants such as rotary frequencies,
     * whose dtype a dtype change must not touch) to {@code device}; called by {@link #to(Device, ScalarType)} for
     * every module of the tree. No-op by default.
     */
    protected void moveHeldTensors(Device device) {}

    /**
     * {@code t} on {@code device} in its own dtype, closing {@code t} when a copy was made (null stays null); for
     * {@link #moveHeldTensors}.
     */
    public static Tensor movedTensor(Tensor t, Device device) {
        if (t == null || t.device().str().getString().equals(device.str().getString())) {
            return t;
        }
        Tensor now = t.to(device, t.scalar_type().intern());
        keepOutOfScope(now);
        t.close();
        return now;
    }

    /** Converts floating-point parameters and buffers to {@code dtype}, keeping the device. */
    public final Module to(ScalarType dtype) {
        return to(null, dtype);
    }

    static boolean isFloating(ScalarType t) {
        return t == ScalarType.Float || t == ScalarType.Double || t == ScalarType.Half || t == ScalarType.BFloat16;
    }

    // ---------------------------------------------------------------- state dict in

    /**
     * Loads {@code stateDict} (Hugging Face keys) into this tree, all or nothing, copying each tensor (converted
     * once to the dtype of the parameter it fills), as PyTorch's {@code load_state_dict} does. The caller may close
     * its tensors afterwards. Keys that share one tensor in this tree (tied weights,
     * e.g. {@code lm_head.weight} and {@code model.embed_tokens.weight}) need only one of them in the state dict;
     * they stay tied.
     *
     * @throws IllegalArgumentException listing every missing key, or naming a key whose shape differs
     * @return the unused keys of {@code stateDict}, which the caller reports as a warning
     */
    public final LoadReport loadStateDict(Map<String, Tensor> stateDict) {
        return loadStateDict(stateDict, false);
    }

    /**
     * As {@link #loadStateDict(Map)}; with {@code assign} (PyTorch's {@code assign=True}), a tensor already of the
     * parameter's dtype and device is adopted instead of copied: the model takes its own handle on the same storage
     * (for a mapped safetensors file, a copy-on-write view: no copy at all, and writes never reach the file).
     */
    public final LoadReport loadStateDict(Map<String, Tensor> stateDict, boolean assign) {
        LinkedHashMap<String, Slot> slots = new LinkedHashMap<>();
        forEachSlot(true, true, true, slots::put);
        // group keys by the tensor they hold now: tied keys share one
        IdentityHashMap<Tensor, List<String>> groups = new IdentityHashMap<>();
        for (Map.Entry<String, Slot> e : slots.entrySet()) {
            groups.computeIfAbsent(e.getValue().get(), t -> new ArrayList<>()).add(e.getKey());
        }
        List<String> missing = new ArrayList<>();
        for (List<String> keys : groups.values()) {
            if (keys.stream().noneMatch(stateDict::containsKey)) {
                missing.addAll(keys);
            }
        }
        if (!missing.isEmpty()) {
            List<String> ordered = new ArrayList<>(slots.keySet());
            ordered.retainAll(missing);
            throw new IllegalArgumentException("missing keys in the checkpoint (" + ordered.size() + "): " + ordered);
        }
        IdentityHashMap<Tensor, Tensor> prepared = new IdentityHashMap<>(); // old tensor -> new tensor
        try (NoGradGuard g = new NoGradGuard()) {
            for (Map.Entry<Tensor, List<String>> e : groups.entrySet()) {
                Tensor old = e.getKey();
                String key = e.getValue().stream().filter(stateDict::containsKey).findFirst().orElseThrow();
                Tensor src = stateDict.get(key);
                if (!Arrays.equals(src.shape(), old.shape())) {
                    closeAll(prepared.values());
                    throw new IllegalArgumentException("checkpoint key '" + key + "': shape "
                            + Arrays.toString(src.shape()) + " does not match the model's " + Arrays.toString(old.shape()));
                }
                prepared.put(old, convertCopy(src, old, assign));
            }
        }
        // commit: swap every slot, then free what was replaced
        for (Slot slot : slots.values()) {
            Tensor old = slot.get();
            Tensor now = prepared.get(old);
            if (old.requires_grad() != now.requires_grad()) {
                now.requires_grad_(old.requires_grad());
            }
            slot.set(now);
        }
        closeAll(prepared.keySet());
        List<String> unexpected = new ArrayList<>();
        for (String key : stateDict.keySet()) {
            if (!slots.containsKey(key)) {
                unexpected.add(key);
            }
        }
        return new LoadReport(List.copyOf(unexpected));
    }

    /** What {@link #loadStateDict} did not use. */
    public record LoadReport(List<String> unexpectedKeys) {}

    private static Tensor convertCopy(Tensor src, Tensor like, boolean assign) {
        ScalarType want = like.scalar_type().intern();
        ScalarType have = src.scalar_type().intern();
        if (!isFloating(want)) {
            want = have;
        }
        Tensor out;
        boolean cpu = like.device().is_meta() || like.device().is_cpu();
        if (cpu && src.is_cpu() && want == have) {
            // adopt: a detached handle on the same storage; else our own contiguous copy
            out = assign && src.is_contiguous() ? src.detach() : src.contiguous().clone();
        } else if (cpu) {
            out = src.to(want).contiguous();
        } else {
            out = src.to(like.device(), want);
        }
        keepOutOfScope(out);
        return out;
    }

    private static void closeAll(Iterable<Tensor> ts) {
        for (Tensor t : ts) {
            t.close();
        }
    }

    /** Detaches {@code t} from every open {@link PointerScope}, so that only its owner frees it. */
    static void keepOutOfScope(Tensor t) {
        Scopes.detachFromAll(t);
    }

    // ---------------------------------------------------------------- lifetime

    /** Frees every parameter and buffer of the tree (tied tensors once) and empties it. */
    @Override
    public void close() {
        Set<Tensor> all = Collections.newSetFromMap(new IdentityHashMap<>());
        forEachSlot(true, true, false, (name, slot) -> all.add(slot.get()));
        for (Module m : namedModules().values()) {
            m.releaseNative();
        }
        TENSOR_EPOCH.incrementAndGet();
        for (Module m : namedModules().values()) {
            m.parameters.clear();
            m.buffers.clear();
        }
        closeAll(all);
    }

    /**
     * Frees native state a module keeps beside its tensors (an adapted layer's kernel handles); called for every
     * module of the tree by {@link #close()}, before the tensors go. No-op by default.
     */
    protected void releaseNative() {}

    /**
     * A process-wide counter that changes whenever a parameter, buffer or child of any module is added, removed or
     * replaced ({@code to(dtype)}, {@code loadStateDict}, {@code setParameter}, adapters added or deleted). State
     * that caches raw pointers to module tensors rebuilds when it moves; in-place value updates do not move it.
     */
    public static long tensorEpoch() {
        return TENSOR_EPOCH.get();
    }

    private static void checkLocalName(String name) {
        if (name == null || name.isEmpty() || name.contains(".")) {
            throw new IllegalArgumentException("module attribute name must be non-empty without '.': '" + name + "'");
        }
    }

    @Override
    public String toString() {
        return typeName();
    }
}
