//! The downlink benchmark's exact value metric and reference policies.
//!
//! Items are labeled images in a fixed order. The value of a selected set `S` is
//! `sum_c v_c * H(n_c)` where `H(n) = 1 + 1/2 + ... + 1/n` and `n_c` is the number of distinct
//! observations of class `c` in `S`; an observation counts once, with the label of its first
//! image (lowest item index) in `S`.

mod values;

pub use values::{load_table, read_values, values_from, ValuesError, MAX_VALUE};

/// One benchmark item.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// File name (observation id is derived from it).
    pub file: String,
    /// File size in bytes.
    pub bytes: u64,
    /// True class id.
    pub class: usize,
}

/// Observation id of an MSL file name: the name with the capital letter directly before the
/// final `NN_DRCL.JPG` removed, so `...0031E01_DRCL.JPG` and `...0031I01_DRCL.JPG` are one
/// observation. Names without that pattern are their own observation. Only the file name part
/// of a path is used.
pub fn observation_id(file: &str) -> String {
    let name = file.rsplit('/').next().unwrap_or(file);
    let b = name.as_bytes();
    const TAIL: &str = "_DRCL.JPG";
    if b.len() >= TAIL.len() + 3 && name.ends_with(TAIL) {
        let i = b.len() - TAIL.len() - 3;
        if b[i].is_ascii_uppercase() && b[i + 1].is_ascii_digit() && b[i + 2].is_ascii_digit() {
            return format!("{}{}", &name[..i], &name[i + 1..]);
        }
    }
    name.to_string()
}

/// `H(n) = 1 + 1/2 + ... + 1/n` (0 for n = 0).
pub fn harmonic(n: usize) -> f64 {
    (1..=n).map(|k| 1.0 / k as f64).sum()
}

/// Value of the set `selected` (item indices, any order, no repeats) under `values` (per
/// class id; classes beyond the table are worth 0).
pub fn set_value(items: &[Item], obs: &[String], selected: &[usize], values: &[f64]) -> f64 {
    let mut sorted = selected.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let mut per_class = vec![0usize; values.len()];
    for &i in &sorted {
        if seen.insert(obs[i].as_str()) {
            if let Some(n) = per_class.get_mut(items[i].class) {
                *n += 1;
            }
        }
    }
    per_class
        .iter()
        .zip(values)
        .map(|(&n, &v)| v * harmonic(n))
        .sum()
}

/// Budget of a pass: `floor(fraction * sum of bytes)`.
pub fn pass_budget(items: &[Item], fraction: f64) -> u64 {
    let total: u64 = items.iter().map(|i| i.bytes).sum();
    (fraction * total as f64).floor().max(0.0) as u64
}

/// Adds items in `order` that still fit the budget; returns the selected indices.
pub fn take_in_order(items: &[Item], order: &[usize], budget: u64) -> Vec<usize> {
    let mut used = 0u64;
    let mut out = Vec::new();
    for &i in order {
        if let Some(t) = used.checked_add(items[i].bytes).filter(|t| *t <= budget) {
            used = t;
            out.push(i);
        }
    }
    out
}

/// The FIFO policy: file order, each item that fits.
pub fn fifo(items: &[Item], budget: u64) -> Vec<usize> {
    let order: Vec<usize> = (0..items.len()).collect();
    take_in_order(items, &order, budget)
}

/// SplitMix64, the benchmark's documented generator (stable across versions).
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// Next 64-bit output.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Fisher-Yates shuffle of `0..n` driven by SplitMix64 seeded with `seed`: for `i` from `n-1`
/// down to 1, swap `i` with `next_u64() % (i + 1)`.
pub fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = SplitMix64(seed);
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// The random policy for one seed: FIFO over a shuffled order.
pub fn random(items: &[Item], budget: u64, seed: u64) -> Vec<usize> {
    take_in_order(items, &shuffled(items.len(), seed), budget)
}

/// The oracle policy: knows the labels; repeatedly adds the fitting item with the highest
/// marginal value per byte (earliest item on ties) until no fitting item adds value.
pub fn oracle(items: &[Item], obs: &[String], values: &[f64], budget: u64) -> Vec<usize> {
    let mut selected: Vec<usize> = Vec::new();
    let mut in_set = vec![false; items.len()];
    let mut used = 0u64;
    let mut current = 0.0;
    loop {
        let mut best: Option<(usize, f64, f64)> = None;
        for i in 0..items.len() {
            if in_set[i] || used.checked_add(items[i].bytes).is_none_or(|t| t > budget) {
                continue;
            }
            selected.push(i);
            let v = set_value(items, obs, &selected, values);
            selected.pop();
            let gain = v - current;
            if gain <= 1e-12 {
                continue;
            }
            let per_byte = gain / items[i].bytes.max(1) as f64;
            if best.is_none_or(|(_, b, _)| per_byte > b) {
                best = Some((i, per_byte, v));
            }
        }
        let Some((i, _, v)) = best else { break };
        in_set[i] = true;
        used += items[i].bytes;
        current = v;
        selected.push(i);
    }
    selected
}

#[cfg(test)]
mod tests;
