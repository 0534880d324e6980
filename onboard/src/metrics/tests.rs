use super::*;

fn brute_force_best(table: &[Vec<u64>]) -> u64 {
    fn go(table: &[Vec<u64>], row: usize, used: &mut Vec<bool>) -> u64 {
        if row == table.len() {
            return 0;
        }
        let mut best = go(table, row + 1, used);
        for j in 0..used.len() {
            if !used[j] {
                used[j] = true;
                let w = table[row].get(j).copied().unwrap_or(0);
                best = best.max(w + go(table, row + 1, used));
                used[j] = false;
            }
        }
        best
    }
    let cols = table.iter().map(|r| r.len()).max().unwrap_or(0);
    go(table, 0, &mut vec![false; cols])
}

struct Lcg(u64);
impl Lcg {
    fn next(&mut self, m: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % m
    }
}

#[test]
fn hungarian_equals_brute_force_on_random_tables() {
    let mut rng = Lcg(7);
    for trial in 0..200 {
        let rows = 1 + rng.next(6) as usize;
        let cols = 1 + rng.next(6) as usize;
        let table: Vec<Vec<u64>> = (0..rows)
            .map(|_| (0..cols).map(|_| rng.next(20)).collect())
            .collect();
        let (total, assign) = max_weight_assignment(&table);
        assert_eq!(total, brute_force_best(&table), "trial {trial}: {table:?}");
        let mut seen = vec![false; cols];
        let mut sum = 0;
        for (i, a) in assign.iter().enumerate() {
            if let Some(j) = *a {
                assert!(!seen[j], "column {j} assigned twice");
                seen[j] = true;
                sum += table[i][j];
            }
        }
        assert_eq!(sum, total);
    }
}

#[test]
fn hungarian_and_majority_accuracy_by_hand() {
    // Clusters 0,0,0,1,1,2 against classes 0,0,1,1,1,1.
    let truth = [0, 0, 1, 1, 1, 1];
    let clusters = [0, 0, 0, 1, 1, 2];
    // One-to-one: cluster0->class0 (2), cluster1->class1 (2): 4/6.
    assert!((hungarian_accuracy(&truth, &clusters) - 4.0 / 6.0).abs() < 1e-12);
    // Majority: 2 + 2 + 1 = 5/6.
    assert!((majority_accuracy(&truth, &clusters) - 5.0 / 6.0).abs() < 1e-12);
    assert_eq!(
        cluster_majority_labels(&truth, &clusters, 4),
        vec![Some(0), Some(1), Some(1), None]
    );
}

#[test]
fn nmi_and_ari_hand_computed() {
    // Identical partitions up to renaming.
    assert!((nmi(&[0, 0, 1, 1], &[1, 1, 0, 0]) - 1.0).abs() < 1e-12);
    assert!((ari(&[0, 0, 1, 1], &[1, 1, 0, 0]) - 1.0).abs() < 1e-12);
    // truth [0,0,1,1], clusters [0,1,0,1]: independent, MI = 0; ARI = -0.5.
    assert!(nmi(&[0, 0, 1, 1], &[0, 1, 0, 1]).abs() < 1e-12);
    assert!((ari(&[0, 0, 1, 1], &[0, 1, 0, 1]) + 0.5).abs() < 1e-12);
    // truth [0,0,0,1,1,1], clusters [0,0,1,1,2,2]:
    // H(U) = ln 2, H(V) = ln 3, I = 2/6 ln 2 + 1/6 ln 1 ... computed term by term:
    // n_00=2: 2/6 ln(6*2/(3*2)) = 1/3 ln 2; n_01=1: 1/6 ln(6/(3*2)) = 0;
    // n_11=1: 0; n_12=2: 1/3 ln 2. I = 2/3 ln 2.
    let want = (2.0 / 3.0 * 2f64.ln()) / ((2f64.ln() + 3f64.ln()) / 2.0);
    assert!((nmi(&[0, 0, 0, 1, 1, 1], &[0, 0, 1, 1, 2, 2]) - want).abs() < 1e-12);
    // ARI: sum_ij C(n_ij,2) = 1 + 1 = 2; a = 3 + 3 = 6; b = 1 + 1 + 1 = 3; C(6,2) = 15.
    // expected = 18/15 = 1.2; max = 4.5; ARI = (2 - 1.2) / (4.5 - 1.2) = 0.8/3.3.
    assert!((ari(&[0, 0, 0, 1, 1, 1], &[0, 0, 1, 1, 2, 2]) - 0.8 / 3.3).abs() < 1e-12);
}

#[test]
fn f1_reports_by_hand() {
    let truth = [0, 0, 1, 1, 2];
    let pred = [0, 1, 1, 1, 0];
    let r = class_reports(&truth, &pred, 4);
    assert!((r[0].recall - 0.5).abs() < 1e-12 && (r[0].precision - 0.5).abs() < 1e-12);
    assert!((r[1].recall - 1.0).abs() < 1e-12 && (r[1].precision - 2.0 / 3.0).abs() < 1e-12);
    assert_eq!(r[2].f1, 0.0);
    assert_eq!(r[3].support, 0);
    // Class 3 never occurs and is excluded from the macro average.
    let f1_1 = 2.0 * (2.0 / 3.0) / (1.0 + 2.0 / 3.0);
    assert!((macro_f1(&r) - (0.5 + f1_1 + 0.0) / 3.0).abs() < 1e-12);
    assert!((accuracy(&truth, &pred) - 0.6).abs() < 1e-12);
    // Recalls 0.5, 1, 0 over the three classes present.
    assert!((balanced_accuracy(&r) - 0.5).abs() < 1e-12);
    assert_eq!(balanced_accuracy(&class_reports(&[], &[], 3)), 0.0);
}
