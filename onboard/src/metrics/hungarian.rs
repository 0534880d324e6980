/// Maximum-weight one-to-one assignment of rows to columns of a (possibly rectangular)
/// non-negative weight table, by the O(n^3) Hungarian algorithm with potentials.
///
/// Returns the total weight and, for each row, its assigned column (`None` when the row is left
/// unmatched because there are more rows than columns).
pub fn max_weight_assignment(weights: &[Vec<u64>]) -> (u64, Vec<Option<usize>>) {
    let rows = weights.len();
    let cols = weights.iter().map(|r| r.len()).max().unwrap_or(0);
    let n = rows.max(cols);
    if n == 0 {
        return (0, Vec::new());
    }
    let max_w = weights.iter().flatten().copied().max().unwrap_or(0) as i64;
    let cost = |i: usize, j: usize| -> i64 {
        let w = weights.get(i).and_then(|r| r.get(j)).copied().unwrap_or(0) as i64;
        max_w - w
    };
    // 1-based arrays as in the classic formulation; p[j] = row matched to column j.
    let inf = i64::MAX / 4;
    let mut u = vec![0i64; n + 1];
    let mut v = vec![0i64; n + 1];
    let mut p = vec![0usize; n + 1];
    let mut way = vec![0usize; n + 1];
    for i in 1..=n {
        p[0] = i;
        let mut j0 = 0usize;
        let mut minv = vec![inf; n + 1];
        let mut used = vec![false; n + 1];
        loop {
            used[j0] = true;
            let i0 = p[j0];
            let mut delta = inf;
            let mut j1 = 0usize;
            for j in 1..=n {
                if !used[j] {
                    let cur = cost(i0 - 1, j - 1) - u[i0] - v[j];
                    if cur < minv[j] {
                        minv[j] = cur;
                        way[j] = j0;
                    }
                    if minv[j] < delta {
                        delta = minv[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=n {
                if used[j] {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if p[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    let mut assign = vec![None; rows];
    let mut total = 0u64;
    for (j, &i) in p.iter().enumerate().skip(1) {
        if i >= 1 && i <= rows && j <= cols {
            assign[i - 1] = Some(j - 1);
            total += weights[i - 1].get(j - 1).copied().unwrap_or(0);
        }
    }
    (total, assign)
}
