//! What `prioritize` hands its reader: the plan as a table or JSON, delivered completely (to
//! stdout or `--plan-out FILE`, flushed and synced) before anything is recorded as sent, and the
//! contact sheet of the selection.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use onboard::bundle::ClassEntry;
use onboard::decide::Decision;
use onboard::triage::Plan;

use crate::prioritize::{Analysed, Skips};

/// A planned pass, ready to be shown.
pub struct PlanView<'a> {
    /// The analysed images, in the plan's item order.
    pub rows: &'a [Analysed],
    /// Files that could not be analysed.
    pub skipped: &'a Skips,
    /// The plan over `rows`.
    pub plan: &'a Plan,
    /// Science value per class.
    pub values: &'a [f32],
    /// The bundle's classes.
    pub classes: &'a [ClassEntry],
    /// The budget asked for (`None`: unlimited).
    pub budget_bytes: Option<u64>,
}

impl PlanView<'_> {
    fn selected(&self, i: usize) -> bool {
        matches!(self.plan.outcomes[i].decision, Decision::Selected(_))
    }

    /// Indices of the selected rows, in downlink order.
    pub fn selected_in_order(&self) -> Vec<usize> {
        self.plan
            .order()
            .into_iter()
            .filter(|&i| self.selected(i))
            .collect()
    }

    fn reason(&self, i: usize) -> String {
        match self.plan.outcomes[i].decision {
            Decision::Selected(r) => format!("selected #{}", r + 1),
            Decision::NoRoom => "no room left in the budget".to_string(),
            Decision::NoValue => match self.plan.duplicate_of[i] {
                Some(d) => format!(
                    "no value left: duplicate of {}",
                    self.rows[d].name.display()
                ),
                None => "no value left".to_string(),
            },
        }
    }

    /// The plan as one pretty-printed JSON object (with a final newline).
    pub fn json(&self, model: &Path, precision: &str) -> anyhow::Result<String> {
        let (plan, rows) = (self.plan, self.rows);
        let entries: Vec<_> = plan
            .order()
            .into_iter()
            .map(|i| {
                let r = &rows[i];
                let a = &r.analysis;
                let expected_value: f32 =
                    a.probs.iter().zip(self.values).map(|(p, v)| p * v).sum();
                serde_json::json!({
                    "file": r.name.display(), "bytes": r.bytes, "class": self.classes[a.class].name,
                    "confidence": a.confidence, "cluster": a.cluster, "novelty": a.novelty,
                    "score": plan.outcomes[i].initial_gain,
                    "selected": self.selected(i), "reason": self.reason(i),
                    "parts": {
                        "expected_class_value": expected_value,
                        "marginal_gain": plan.outcomes[i].gain,
                        "quality": plan.quality[i],
                        "quality_flags": {"blank": a.quality.blank, "overexposed": a.quality.overexposed, "dominant_channel": a.quality.dominant_channel},
                        "duplicate_of": plan.duplicate_of[i].map(|d| rows[d].name.display()),
                    },
                })
            })
            .collect();
        let skipped: Vec<_> = self
            .skipped
            .iter()
            .map(|(f, reason)| serde_json::json!({"file": f.display(), "reason": reason}))
            .collect();
        let doc = serde_json::json!({
            "model": model.display().to_string(),
            "precision": precision,
            "budget_bytes": self.budget_bytes,
            "bytes_selected": plan.bytes,
            "plan": entries,
            "skipped": skipped,
        });
        Ok(serde_json::to_string_pretty(&doc)? + "\n")
    }

    /// The plan as a table, highest priority first, with a summary line.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:>4} {:<40} {:>9} {:<22} {:>5} {:>4} {:>7} {:>6}  decision\n",
            "rank", "file", "bytes", "class", "conf", "clus", "novelty", "score"
        );
        for (rank, i) in self.plan.order().into_iter().enumerate() {
            let (r, a) = (&self.rows[i], &self.rows[i].analysis);
            out.push_str(&format!(
                "{:>4} {:<40} {:>9} {:<22} {:>5.2} {:>4} {:>7.2} {:>6.3}  {}\n",
                rank + 1,
                r.name.display(),
                r.bytes,
                self.classes[a.class].name,
                a.confidence,
                a.cluster,
                a.novelty,
                self.plan.outcomes[i].initial_gain,
                self.reason(i)
            ));
        }
        out.push_str(&format!(
            "{} images planned, {} selected ({} bytes), {} skipped\n",
            self.rows.len(),
            self.selected_in_order().len(),
            self.plan.bytes,
            self.skipped.len()
        ));
        out
    }

    /// Draws the selected images of `dir` in downlink order with class and score into the PNG
    /// file `sheet` (written atomically; an existing path that is not a regular file is
    /// refused).
    pub fn sheet(&self, dir: &Path, sheet: &Path) -> anyhow::Result<()> {
        let tiles: Vec<_> = self
            .selected_in_order()
            .into_iter()
            .enumerate()
            .filter_map(|(rank, i)| {
                let r = &self.rows[i];
                let img = onboard::preprocess::decode_file(&dir.join(r.name.to_os_string()))
                    .ok()?
                    .to_rgb8();
                let caption = vec![
                    format!("#{} {}", rank + 1, self.classes[r.analysis.class].name),
                    format!(
                        "score {:.2} {}kB",
                        self.plan.outcomes[i].initial_gain,
                        r.bytes.div_ceil(1024)
                    ),
                ];
                Some((img, caption))
            })
            .collect();
        let title = format!(
            "downlink plan: {} images, {} bytes of {}",
            tiles.len(),
            self.plan.bytes,
            self.budget_bytes
                .map_or("unlimited".into(), |b| b.to_string())
        );
        onboard::render::contact_sheet(&title, &tiles, 6)
            .save_png(sheet)
            .with_context(|| {
                format!(
                    "{}: cannot write the contact sheet (the plan was delivered)",
                    sheet.display()
                )
            })
    }
}

/// Writes `text` completely to `plan_out` (atomically, synced) or to stdout (flushed); an error
/// names where and says that nothing was recorded as sent.
pub fn deliver(text: &str, plan_out: Option<&Path>) -> anyhow::Result<()> {
    let nothing = "nothing was recorded as sent";
    match plan_out {
        Some(p) => onboard::bundle::write_atomic(p, text.as_bytes())
            .with_context(|| format!("{}: cannot write the plan; {nothing}", p.display())),
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .with_context(|| format!("cannot write the plan to stdout; {nothing}"))
        }
    }
}
