package dev.peft4j.kernels;

/** The instruction-set levels the native kernels are written for, lowest first. */
public enum Isa {
    /** Portable C++, any x86-64 (and the reference every SIMD path is tested against). */
    SCALAR,
    /** AVX2 with FMA (Haswell and later). */
    AVX2,
    /** AVX-512 F/BW/VL/DQ (Skylake-SP and later). */
    AVX512,
    /** AVX-512 with AVX512_BF16 (VDPBF16PS: Cooper Lake, Sapphire Rapids, Zen 4 and later), for bfloat16 layers. */
    AVX512_BF16;

    static Isa of(int level) {
        Isa[] all = values();
        if (level < 0 || level >= all.length) {
            throw new IllegalStateException("native layer reported an unknown ISA level " + level);
        }
        return all[level];
    }
}
