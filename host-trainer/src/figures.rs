//! PNG figures of a training run: loss curves, confusion matrices and a cluster montage.

use std::path::Path;

use anyhow::Context;
use image::{Rgb, RgbImage};
use onboard::render::{self, Canvas, BLACK, GRAY, WHITE};

const SERIES_COLORS: [Rgb<u8>; 4] = [
    Rgb([200, 60, 30]),
    Rgb([30, 90, 200]),
    Rgb([40, 150, 60]),
    Rgb([140, 60, 160]),
];

fn fmt_tick(v: f64) -> String {
    if v.abs() >= 100.0 || v == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

/// One panel of a line chart in the rectangle `(x, y, w, h)`: `values[i]` plotted at
/// x = i + 1 (epochs), y from min to max.
fn panel(
    c: &mut Canvas,
    (x0, y0, w, h): (i64, i64, i64, i64),
    title: &str,
    values: &[f64],
    color: Rgb<u8>,
) {
    c.text(x0, y0, title, BLACK, 1);
    let (px, py, pw, ph) = (x0 + 56, y0 + 16, w - 64, h - 40);
    c.line((px, py), (px, py + ph), BLACK, 1);
    c.line((px, py + ph), (px + pw, py + ph), BLACK, 1);
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        c.text(px + 8, py + 8, "no data", GRAY, 1);
        return;
    }
    let lo = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let span = if hi > lo { hi - lo } else { 1.0 };
    c.text(x0, py, &fmt_tick(hi), BLACK, 1);
    c.text(x0, py + ph - 8, &fmt_tick(lo), BLACK, 1);
    c.text(px, py + ph + 6, "1", BLACK, 1);
    let last = format!("{}", values.len());
    c.text(
        px + pw - 8 * last.len() as i64,
        py + ph + 6,
        &last,
        BLACK,
        1,
    );
    c.text(px + pw / 2 - 20, py + ph + 6, "epoch", GRAY, 1);
    let n = values.len().max(2) - 1;
    let pt = |i: usize, v: f64| {
        (
            px + (i as f64 / n as f64 * pw as f64) as i64,
            py + ph - ((v - lo) / span * ph as f64) as i64,
        )
    };
    for i in 0..values.len() {
        if values.len() == 1 {
            let (x, y) = pt(0, values[0]);
            c.rect(x - 2, y - 2, 5, 5, color);
        } else if i > 0 && values[i - 1].is_finite() && values[i].is_finite() {
            c.line(pt(i - 1, values[i - 1]), pt(i, values[i]), color, 2);
        }
    }
}

/// Side-by-side loss curves, one panel per (title, per-epoch values).
pub fn loss_curves(path: &Path, panels: &[(&str, &[f64])]) -> anyhow::Result<()> {
    let (w, h) = (420i64, 260i64);
    let mut c = Canvas::new((w * panels.len().max(1) as i64) as u32, h as u32, WHITE);
    for (k, (title, values)) in panels.iter().enumerate() {
        panel(
            &mut c,
            (k as i64 * w + 8, 8, w - 16, h - 16),
            title,
            values,
            SERIES_COLORS[k % SERIES_COLORS.len()],
        );
    }
    c.save_png(path)
        .with_context(|| format!("{}: cannot write figure", path.display()))
}

/// Row-normalized heat map of `counts[r][c]` with row and column labels and the raw counts.
pub fn heatmap(
    path: &Path,
    title: &str,
    row_label: &str,
    col_label: &str,
    rows: &[String],
    cols: &[String],
    counts: &[Vec<u64>],
) -> anyhow::Result<()> {
    let cell = 22i64;
    let left = 8 + 8 * rows.iter().map(|r| r.len()).max().unwrap_or(4).min(22) as i64;
    let top = 40 + 8 * cols.iter().map(|c| c.len()).max().unwrap_or(2).min(3) as i64;
    let w = left + cell * cols.len() as i64 + 16;
    let h = top + cell * rows.len() as i64 + 24;
    let mut c = Canvas::new(w.max(320) as u32, h as u32, WHITE);
    c.text(8, 6, title, BLACK, 1);
    c.text(
        8,
        20,
        &format!("rows: {row_label}; columns: {col_label}; shade = row share"),
        GRAY,
        1,
    );
    for (j, name) in cols.iter().enumerate() {
        let short: String = name.chars().take(3).collect();
        c.text(left + j as i64 * cell + 1, top - 12, &short, BLACK, 1);
    }
    for (i, name) in rows.iter().enumerate() {
        let short: String = name.chars().take(22).collect();
        let y = top + i as i64 * cell;
        c.text(8, y + 7, &short, BLACK, 1);
        let row = counts.get(i).map(Vec::as_slice).unwrap_or(&[]);
        let total: u64 = row.iter().sum();
        for j in 0..cols.len() {
            let n = row.get(j).copied().unwrap_or(0);
            let share = if total > 0 {
                n as f64 / total as f64
            } else {
                0.0
            };
            let x = left + j as i64 * cell;
            c.rect(x, y, cell - 1, cell - 1, render::heat(share));
            if n > 0 {
                let label = if n > 999 {
                    "1k+".to_string()
                } else {
                    n.to_string()
                };
                let ink = if share > 0.5 { WHITE } else { BLACK };
                c.text(
                    x + (cell - 8 * label.len() as i64) / 2,
                    y + 7,
                    &label,
                    ink,
                    1,
                );
            }
        }
    }
    c.save_png(path)
        .with_context(|| format!("{}: cannot write figure", path.display()))
}

/// Confusion-matrix PNG of `pred` against `truth`: one row per class present in `truth`
/// (named), one column per class id.
pub fn confusion(
    path: &Path,
    title: &str,
    classes: &[String],
    truth: &[usize],
    pred: &[usize],
) -> anyhow::Result<()> {
    let present: Vec<usize> = (0..classes.len()).filter(|c| truth.contains(c)).collect();
    let table = onboard::metrics::contingency(truth, pred);
    let rows: Vec<String> = present.iter().map(|&c| classes[c].clone()).collect();
    let counts: Vec<Vec<u64>> = present
        .iter()
        .map(|&c| {
            (0..classes.len())
                .map(|j| table.get(c).and_then(|r| r.get(j)).copied().unwrap_or(0))
                .collect()
        })
        .collect();
    let ids: Vec<String> = (0..classes.len()).map(|c| c.to_string()).collect();
    heatmap(
        path,
        title,
        "true class",
        "predicted class id",
        &rows,
        &ids,
        &counts,
    )
}

/// Montage of sample images per cluster, each row captioned with the cluster's majority class.
/// `samples[k]` lists up to a few image paths of cluster k.
pub fn cluster_montage(
    path: &Path,
    samples: &[Vec<&Path>],
    labels: &[String],
    per_row: usize,
) -> anyhow::Result<()> {
    let mut tiles: Vec<(RgbImage, Vec<String>)> = Vec::new();
    for (k, paths) in samples.iter().enumerate() {
        for slot in 0..per_row {
            let img = paths
                .get(slot)
                .and_then(|p| onboard::preprocess::decode_file(p).ok())
                .map(|i| i.to_rgb8())
                .unwrap_or_else(|| RgbImage::from_pixel(8, 8, WHITE));
            let caption = if slot == 0 {
                vec![
                    format!("cluster {k}"),
                    labels.get(k).cloned().unwrap_or_default(),
                ]
            } else {
                vec![String::new(), String::new()]
            };
            tiles.push((img, caption));
        }
    }
    render::contact_sheet(
        "cluster montage (rows: clusters, majority class under the first image)",
        &tiles,
        per_row,
    )
    .save_png(path)
    .with_context(|| format!("{}: cannot write figure", path.display()))
}
