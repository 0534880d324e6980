//! Writes a model bundle folder: graphs and manifest are staged in a hidden sibling folder and
//! moved into place only when complete, so a crash never leaves a half-written bundle.

use std::path::{Path, PathBuf};

use anyhow::Context;
use onboard::bundle::{
    sha256_hex, write_atomic, GraphEntry, GraphInput, GraphRole, Manifest, Precision,
};

use crate::export::{self, Op};

/// A bundle being assembled in a staging folder.
#[derive(Debug)]
pub struct Staging {
    /// Final destination.
    pub dest: PathBuf,
    /// Staging folder (sibling of `dest`).
    pub dir: PathBuf,
}

impl Staging {
    /// Creates an empty staging folder next to `dest`.
    pub fn new(dest: &Path) -> anyhow::Result<Self> {
        let name = dest
            .file_name()
            .with_context(|| format!("{}: the bundle path needs a folder name", dest.display()))?
            .to_string_lossy()
            .into_owned();
        let parent = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).with_context(|| {
            format!(
                "{}: cannot create the bundle's parent folder",
                parent.display()
            )
        })?;
        let dir = parent.join(format!(".{name}.staging-{}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("{}: cannot clear the staging folder", dir.display()))?;
        }
        std::fs::create_dir(&dir).with_context(|| {
            format!(
                "{}: cannot create the staging folder (disk full or read-only?)",
                dir.display()
            )
        })?;
        Ok(Self {
            dest: dest.to_path_buf(),
            dir,
        })
    }

    /// Writes one ONNX graph reading `input` of shape `input_shape`; returns its manifest
    /// entry.
    pub fn write_graph(
        &self,
        role: GraphRole,
        ops: &[Op],
        (input, input_shape): (GraphInput, &[i64]),
        out_dim: usize,
        doc: &str,
    ) -> anyhow::Result<GraphEntry> {
        let file = match role {
            GraphRole::Encoder => "encoder.f32.onnx",
            GraphRole::Classifier => "classifier.f32.onnx",
        };
        let model = export::build_model_for_input(file, ops, input_shape, out_dim as i64, doc)?;
        let bytes = export::encode(&model);
        let path = self.dir.join(file);
        write_atomic(&path, &bytes)
            .with_context(|| format!("{}: cannot write the graph (disk full?)", path.display()))?;
        Ok(GraphEntry {
            role,
            file: file.to_string(),
            sha256: sha256_hex(&bytes),
            precision: Precision::F32,
            output_dim: out_dim,
            input,
        })
    }

    /// Writes any extra text file (model card, metrics).
    pub fn write_text(&self, name: &str, text: &str) -> anyhow::Result<()> {
        let path = self.dir.join(name);
        write_atomic(&path, text.as_bytes())
            .with_context(|| format!("{}: cannot write (disk full?)", path.display()))
    }

    /// Validates and writes the manifest.
    pub fn write_manifest(&self, m: &Manifest) -> anyhow::Result<()> {
        m.validate()
            .map_err(|e| anyhow::anyhow!("refusing to write an invalid manifest: {e}"))?;
        m.write(&self.dir)
            .with_context(|| format!("{}: cannot write the manifest", self.dir.display()))
    }

    /// Moves the staged bundle to its destination, replacing an existing bundle there only
    /// after the new one is complete.
    pub fn commit(self) -> anyhow::Result<PathBuf> {
        let old = self.dest.with_file_name(format!(
            ".{}.old-{}",
            self.dest
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            std::process::id()
        ));
        if self.dest.exists() {
            std::fs::rename(&self.dest, &old).with_context(|| {
                format!(
                    "{}: cannot move the previous bundle aside",
                    self.dest.display()
                )
            })?;
        }
        if let Err(e) = std::fs::rename(&self.dir, &self.dest) {
            if old.exists() {
                let _ = std::fs::rename(&old, &self.dest);
            }
            return Err(e).with_context(|| {
                format!(
                    "{}: cannot move the new bundle into place",
                    self.dest.display()
                )
            });
        }
        if old.exists() {
            std::fs::remove_dir_all(&old)
                .with_context(|| format!("{}: cannot remove the previous bundle", old.display()))?;
        }
        Ok(self.dest.clone())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.dir.exists() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
