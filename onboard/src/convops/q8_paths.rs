//! Every integer kernel path this CPU can run, by name, for the tests and benchmarks that
//! compare them with each other and with the definition ([`super::q8_kernel`]).

#[cfg(target_arch = "x86_64")]
use super::q8_kernel::depthwise_lengths_match;
use super::q8_kernel::{depthwise_q8, depthwise_q8_portable, DepthwiseQ8, Requant};
#[cfg(test)]
use super::q8_kernel::{lengths_match, pointwise_q8, pointwise_q8_portable, PackedQ8};

/// A pointwise kernel path: `(x, w, rq, out) -> lengths matched`.
#[cfg(test)]
pub(super) type PointwiseFn = fn(&[u8], &PackedQ8, &Requant, &mut [u8]) -> bool;
/// A depthwise kernel path: `(x, weights, requantization, out)`, false when a length does not
/// match (as [`depthwise_q8`]).
pub type DepthwiseFn = fn(&[u8], &DepthwiseQ8, &Requant, &mut [u8]) -> bool;

/// Every pointwise path this CPU can run, by name (the dispatched one included).
#[cfg(test)]
pub(super) fn pointwise_paths() -> Vec<(&'static str, PointwiseFn)> {
    let mut all: Vec<(&'static str, PointwiseFn)> = vec![
        ("dispatched", pointwise_q8),
        ("portable", pointwise_q8_portable),
    ];
    #[cfg(target_arch = "x86_64")]
    {
        fn avx2(x: &[u8], w: &PackedQ8, rq: &Requant, out: &mut [u8]) -> bool {
            if !lengths_match(x, w, rq, out) {
                return false;
            }
            // SAFETY: listed only when the CPU has AVX2; lengths checked above.
            #[allow(unsafe_code)]
            unsafe {
                super::q8_kernel::gemm_avx2(x, w, rq, out)
            };
            true
        }
        fn vnni(x: &[u8], w: &PackedQ8, rq: &Requant, out: &mut [u8]) -> bool {
            if !lengths_match(x, w, rq, out) {
                return false;
            }
            // SAFETY: listed only when the CPU has AVX-512 VNNI; lengths checked above.
            #[allow(unsafe_code)]
            unsafe {
                super::q8_x86::gemm_vnni(x, w, rq, out)
            };
            true
        }
        if super::x86::has_avx2_fma() {
            all.push(("avx2", avx2));
        }
        if super::q8_x86::has_vnni() {
            all.push(("avx512vnni", vnni));
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        use super::q8_neon::{gemm_neon, has_dotprod, Multiply};
        fn neon(x: &[u8], w: &PackedQ8, rq: &Requant, out: &mut [u8], m: Multiply) -> bool {
            let Some(bias) = w.bias_128.as_deref() else {
                return pointwise_q8_portable(x, w, rq, out);
            };
            if !lengths_match(x, w, rq, out) {
                return false;
            }
            // SAFETY: `Sdot` listed only when the CPU has the dot product; lengths checked
            // above; `bias` holds a value per packed channel.
            #[allow(unsafe_code)]
            unsafe {
                gemm_neon(x, w, bias, rq, out, m)
            };
            true
        }
        fn sdot(x: &[u8], w: &PackedQ8, rq: &Requant, out: &mut [u8]) -> bool {
            neon(x, w, rq, out, Multiply::Sdot)
        }
        fn smull(x: &[u8], w: &PackedQ8, rq: &Requant, out: &mut [u8]) -> bool {
            neon(x, w, rq, out, Multiply::Smull)
        }
        all.push(("neon-smull", smull));
        if has_dotprod() {
            all.push(("neon-sdot", sdot));
        }
    }
    all
}

/// Every depthwise path this CPU can run, by name (the dispatched one included), for the tests
/// and benchmarks that compare them.
pub fn depthwise_q8_paths() -> Vec<(&'static str, DepthwiseFn)> {
    // Only x86-64 has further depthwise paths (on aarch64 the dispatched one is NEON's).
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut all: Vec<(&'static str, DepthwiseFn)> = vec![
        ("dispatched", depthwise_q8),
        ("portable", depthwise_q8_portable),
    ];
    #[cfg(target_arch = "x86_64")]
    {
        fn avx2(x: &[u8], w: &DepthwiseQ8, rq: &Requant, out: &mut [u8]) -> bool {
            if !depthwise_lengths_match(x, w, rq, out) {
                return false;
            }
            // SAFETY: listed only when the CPU has AVX2; lengths checked above.
            #[allow(unsafe_code)]
            unsafe {
                super::q8_kernel::depthwise_avx2(x, w, rq, out)
            };
            true
        }
        fn avx512(x: &[u8], w: &DepthwiseQ8, rq: &Requant, out: &mut [u8]) -> bool {
            if !depthwise_lengths_match(x, w, rq, out) {
                return false;
            }
            // SAFETY: listed only when the CPU has AVX-512 F and BW; lengths checked above.
            #[allow(unsafe_code)]
            unsafe {
                super::q8_x86::depthwise_avx512(x, w, rq, out)
            };
            true
        }
        if super::x86::has_avx2_fma() {
            all.push(("avx2", avx2));
        }
        fn vnni(x: &[u8], w: &DepthwiseQ8, rq: &Requant, out: &mut [u8]) -> bool {
            if !depthwise_lengths_match(x, w, rq, out) || !super::q8_x86_dw::takes(w) {
                // The test geometries this path does not take (stride 3, fewer than 16
                // channels) are the other paths'.
                return avx512(x, w, rq, out);
            }
            // SAFETY: listed only when the CPU has AVX-512 VNNI; lengths checked above; the
            // path takes this geometry.
            #[allow(unsafe_code)]
            unsafe {
                super::q8_x86_dw::depthwise_vnni(x, w, rq, out)
            };
            true
        }
        if super::q8_x86::has_avx512bw() {
            all.push(("avx512", avx512));
        }
        if super::q8_x86::has_vnni() {
            all.push(("avx512-vnni", vnni));
        }
    }
    all
}
