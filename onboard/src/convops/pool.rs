//! [`OutputPool`]: output tensors an op hands to tract and takes back once tract has dropped
//! them, so that after the first image a graph's replaced ops allocate nothing.

use std::sync::{Arc, Mutex};

use tract_onnx::prelude::*;

/// Most tensors one op keeps (one per graph state running it at the same time, plus slack).
const KEEP: usize = 4;

/// The op's output tensors from earlier runs. Cloning an op gives it an empty pool, and pools
/// compare equal (they hold no part of what the op computes).
#[derive(Debug, Default)]
pub struct OutputPool(Mutex<Vec<Arc<Tensor>>>);

impl Clone for OutputPool {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for OutputPool {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl Eq for OutputPool {}

impl OutputPool {
    /// Runs `fill` on a tensor of `dt` and `shape` (whose values `fill` must all overwrite: a
    /// reused tensor holds an earlier run's) and returns it for tract. The tensor is one of the
    /// pool's that no one else holds any more (tract has dropped it), else a new one the pool
    /// keeps while it has room. Never blocks: a pool busy in another thread is passed over.
    pub fn output(
        &self,
        dt: DatumType,
        shape: &[usize],
        fill: impl FnOnce(&mut Tensor) -> TractResult<()>,
    ) -> TractResult<TValue> {
        let Ok(mut kept) = self.0.try_lock() else {
            let mut t = Tensor::zero_dt(dt, shape)?;
            fill(&mut t)?;
            return Ok(t.into_tvalue());
        };
        let free = kept.iter_mut().position(|a| {
            Arc::get_mut(a).is_some_and(|t| t.datum_type() == dt && t.shape() == shape)
        });
        let i = match free {
            Some(i) => i,
            None if kept.len() >= KEEP => {
                let mut t = Tensor::zero_dt(dt, shape)?;
                fill(&mut t)?;
                return Ok(t.into_tvalue());
            }
            None => {
                kept.push(Arc::new(Tensor::zero_dt(dt, shape)?));
                kept.len() - 1
            }
        };
        match Arc::get_mut(&mut kept[i]) {
            Some(t) => fill(t)?,
            None => return Err(TractError::msg("pooled output tensor is shared")),
        }
        Ok(TValue::from_const(kept[i].clone()))
    }
}
