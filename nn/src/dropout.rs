//! Inverted dropout, on only when a seed is given (training).

use graph::{Graph, NodeId};

/// Dropout with a per-model salt counter, so each call site draws its own mask.
#[derive(Debug, Clone, Copy)]
pub struct Dropout {
    pub rate: f64,
}

impl Dropout {
    /// `x` with elements dropped at `rate` when `seed` is set; each call takes the next salt.
    #[track_caller]
    pub fn apply(
        &self,
        g: &mut Graph,
        x: NodeId,
        seed: Option<NodeId>,
        salt: &mut u32,
    ) -> graph::Result<NodeId> {
        match seed {
            Some(s) if self.rate > 0.0 => {
                *salt += 1;
                g.dropout(x, self.rate, s, *salt)
            }
            _ => Ok(x),
        }
    }
}
