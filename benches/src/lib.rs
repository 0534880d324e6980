//! Shared inputs of the benchmarks: repository paths and deterministic synthetic data.

use std::path::PathBuf;

/// Repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Deterministic pseudo-random values in [-1, 1) (SplitMix64), for synthetic latents.
pub fn synthetic(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = onboard::downlink::SplitMix64(seed);
    (0..n)
        .map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
        .collect()
}

/// `n` u8 codes spread over the whole range, from `seed` (inputs and weights of the integer
/// kernels' benchmarks).
pub fn codes(n: usize, seed: u64) -> Vec<u8> {
    synthetic(n, seed)
        .iter()
        .map(|v| (v * 127.0 + 128.0) as u8)
        .collect()
}
