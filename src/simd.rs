//! Run-time choice of the widest instruction set for the elementwise loops of the model
//! kernels and the statistics: one small module both use, so neither depends on the other.

/// Defines `fn $name` whose body is compiled three times: for AVX-512, for AVX2 + FMA and
/// for the baseline x86-64 the crate is built for (SSE2), picked at run time by what the
/// CPU has. The elementwise loops (softmax, GELU, norms) auto-vectorize only as wide as the
/// target allows: built for SSE2 they ran 4 lanes at a time and took 15% of a GPT-2
/// forward pass. The same operations in the same order run in every version, without FMA
/// contraction (Rust never fuses on its own), so every version gives identical bits (a
/// test checks).
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn generic($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw,avx2,fma,bmi2")]
                fn v4($($arg: $ty),*) {
                    generic($($arg),*)
                }
                #[target_feature(enable = "avx2,fma,bmi2")]
                fn v3($($arg: $ty),*) {
                    generic($($arg),*)
                }
                match $crate::simd::simd_level() {
                    // SAFETY: simd_level() reports only features this CPU has.
                    2 => return unsafe { v4($($arg),*) },
                    1 => return unsafe { v3($($arg),*) },
                    _ => {}
                }
            }
            generic($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// The widest instruction set [`multiversion!`] may use on this CPU: 2 = AVX-512 (F, DQ,
/// VL, BW), 1 = AVX2 + FMA + BMI2, 0 = baseline.
pub(crate) fn simd_level() -> u8 {
    static LEVEL: std::sync::OnceLock<u8> = std::sync::OnceLock::new();
    let level = *LEVEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx512f") && has!("avx512dq") && has!("avx512vl") && has!("avx512bw") {
                return 2;
            }
            if has!("avx2") && has!("fma") && has!("bmi2") {
                return 1;
            }
        }
        0
    });
    #[cfg(test)]
    let level = level.min(SIMD_CAP.load(std::sync::atomic::Ordering::Relaxed));
    level
}

#[cfg(test)]
/// Caps [`simd_level`] so a test can run every compiled version. Every version gives
/// the same bits, so a cap set by one test cannot change another test's results.
pub(crate) static SIMD_CAP: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(2);
