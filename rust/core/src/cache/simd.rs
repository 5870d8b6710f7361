//! Dot products for the vector index: f32 × f32, f32 × f16 and f32 × i8, written so LLVM
//! vectorises them, and compiled a second time with AVX2/FMA/F16C chosen at run time (the
//! wheel targets baseline x86-64, so the fast path cannot be a compile-time choice).

const LANES: usize = 16;

#[inline(always)]
fn dot_f32_body(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    // Sixteen independent accumulators: the sum is reassociated on purpose so it vectorises.
    let mut acc = [0f32; LANES];
    let ca = a.chunks_exact(LANES);
    let cb = b.chunks_exact(LANES);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

#[inline(always)]
fn dot_i8_body(a: &[f32], b: &[i8]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; LANES];
    let ca = a.chunks_exact(LANES);
    let cb = b.chunks_exact(LANES);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * f32::from(y[i]);
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * f32::from(*y);
    }
    s * I8_INV_SCALE
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_f32_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_f32_body(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_i8_avx2(a: &[f32], b: &[i8]) -> f32 {
    dot_i8_body(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f16_f16c(a: &[f32], b: &[u16]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let chunks = n / 8;
    // SAFETY: every load reads 8 elements at offset 8*i < n from slices of length ≥ n; the
    // caller checked the CPU features.
    let mut s = unsafe {
        let mut acc = _mm256_setzero_ps();
        for i in 0..chunks {
            let h = _mm_loadu_si128(b.as_ptr().add(i * 8) as *const __m128i);
            let y = _mm256_cvtph_ps(h);
            let x = _mm256_loadu_ps(a.as_ptr().add(i * 8));
            acc = _mm256_fmadd_ps(x, y, acc);
        }
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
        lanes.iter().sum::<f32>()
    };
    for i in chunks * 8..n {
        s += a[i] * f16_to_f32(b[i]);
    }
    s
}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn has_f16c() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        has_avx2() && std::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `a · b` over the shorter length.
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        return unsafe { dot_f32_avx2(a, b) };
    }
    dot_f32_body(a, b)
}

/// `a · dequantise(b)` where `b` was stored by [`quantize_i8`].
#[inline]
pub fn dot_i8(a: &[f32], b: &[i8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        return unsafe { dot_i8_avx2(a, b) };
    }
    dot_i8_body(a, b)
}

/// `a · b` where `b` holds IEEE half floats.
#[inline]
pub fn dot_f16(a: &[f32], b: &[u16]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_f16c() {
        // SAFETY: the CPU supports AVX2, FMA and F16C (checked just above).
        return unsafe { dot_f16_f16c(a, b) };
    }
    a.iter().zip(b).map(|(x, y)| x * f16_to_f32(*y)).sum()
}

/// Components of a unit vector lie in [-1, 1]; 127 steps each side keeps the dot product
/// of two quantised unit vectors within about 1e-2 of the true one.
const I8_SCALE: f32 = 127.0;
const I8_INV_SCALE: f32 = 1.0 / I8_SCALE;

pub fn quantize_i8(x: f32) -> i8 {
    (x * I8_SCALE).round().clamp(-127.0, 127.0) as i8
}

pub fn dequantize_i8(x: i8) -> f32 {
    f32::from(x) * I8_INV_SCALE
}

/// f32 → IEEE 754 binary16, rounding to nearest even (what F16C's `vcvtps2ph` does).
pub fn f32_to_f16(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32;
    let man = b & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if man != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        if e < -10 {
            return sign;
        }
        let m = man | 0x80_0000;
        let shift = (14 - e) as u32;
        let kept = m >> shift;
        let rem = m & ((1 << shift) - 1);
        let halfway = 1 << (shift - 1);
        let rounded = if rem > halfway || (rem == halfway && kept & 1 == 1) {
            kept + 1
        } else {
            kept
        };
        return sign | rounded as u16;
    }
    let r = ((e as u32) << 10) | (man >> 13);
    let rem = man & 0x1fff;
    // A carry out of the mantissa correctly bumps the exponent (up to infinity).
    let rounded = if rem > 0x1000 || (rem == 0x1000 && r & 1 == 1) {
        r + 1
    } else {
        r
    };
    sign | rounded as u16
}

/// IEEE 754 binary16 → f32 (exact).
pub fn f16_to_f32(h: u16) -> f32 {
    let negative = h & 0x8000 != 0;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    if exp == 0 {
        // Zero or subnormal: man × 2⁻²⁴.
        let v = man as f32 * (1.0 / 16_777_216.0);
        return if negative { -v } else { v };
    }
    let sign = if negative { 0x8000_0000 } else { 0 };
    let bits = if exp == 0x1f {
        sign | 0x7f80_0000 | (man << 13)
    } else {
        sign | ((exp + 127 - 15) << 23) | (man << 13)
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(a: &[f32], b: &[f32]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum()
    }

    #[test]
    fn dot_matches_reference_for_all_lengths() {
        for n in 0..70 {
            let a: Vec<f32> = (0..n).map(|i| ((i * 7 % 13) as f32 - 6.0) / 10.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 10.0).collect();
            assert!(
                (f64::from(dot_f32(&a, &b)) - reference(&a, &b)).abs() < 1e-4,
                "n={n}"
            );
            assert!((f64::from(dot_f32_body(&a, &b)) - reference(&a, &b)).abs() < 1e-4);
            let h: Vec<u16> = b.iter().map(|x| f32_to_f16(*x)).collect();
            assert!(
                (f64::from(dot_f16(&a, &h)) - reference(&a, &b)).abs() < 1e-2,
                "n={n}"
            );
            let q: Vec<i8> = b.iter().map(|x| quantize_i8(*x)).collect();
            assert!(
                (f64::from(dot_i8(&a, &q)) - reference(&a, &b)).abs() < 5e-2,
                "n={n}"
            );
        }
    }

    #[test]
    fn f16_known_values() {
        for (x, h) in [
            (0.0f32, 0x0000u16),
            (-0.0, 0x8000),
            (1.0, 0x3c00),
            (-2.0, 0xc000),
            (0.5, 0x3800),
            (65504.0, 0x7bff),
            (1e6, 0x7c00),
            (5.960_464_5e-8, 0x0001),
            (6.103_515_6e-5, 0x0400),
        ] {
            assert_eq!(f32_to_f16(x), h, "{x}");
            assert_eq!(f16_to_f32(h), if h == 0x7c00 { f32::INFINITY } else { x });
        }
        assert!(f16_to_f32(f32_to_f16(f32::NAN)).is_nan());
    }

    #[test]
    fn f16_roundtrip_of_every_half_is_exact() {
        for h in 0..=u16::MAX {
            let x = f16_to_f32(h);
            if x.is_nan() {
                continue;
            }
            assert_eq!(f32_to_f16(x), h, "{h:#x}");
        }
    }
}
