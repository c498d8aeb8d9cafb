//! The transformer MLP block: `proj(gelu(fc(x)))` with a hidden width of `hidden`.

use graph::{Graph, NodeId};

use crate::linear::{Linear, LinearW};
use crate::param::axis::{BATCH, EMBED, MLP, NONE};
use crate::param::{Init, Weights};

/// Which GELU: GPT-2's tanh approximation or BERT's exact erf form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gelu {
    Tanh,
    Erf,
}

#[derive(Debug, Clone)]
pub struct Mlp {
    pub d_model: i64,
    pub hidden: i64,
    pub gelu: Gelu,
    pub fc_std: f64,
    pub proj_std: f64,
}

#[derive(Debug, Clone, Copy)]
pub struct MlpW {
    pub gelu: Gelu,
    pub fc: LinearW,
    pub proj: LinearW,
}

impl Mlp {
    /// Declares `fc.w (D, hidden)` (column-parallel) and `proj.w (hidden, D)` (row-parallel).
    #[track_caller]
    pub fn declare<W: Weights + ?Sized>(
        &self,
        g: &mut Graph,
        w: &mut W,
        name: &str,
    ) -> graph::Result<MlpW> {
        w.push_scope(name);
        let fc = Linear::new([self.hidden])
            .init(Init::Normal { std: self.fc_std })
            .axes(&[EMBED, MLP])
            .names("w", "b")
            .declare(g, w, "fc", self.d_model);
        let proj = match &fc {
            Ok(_) => Some(
                Linear::new([self.d_model])
                    .init(Init::Normal { std: self.proj_std })
                    .axes(&[MLP, EMBED])
                    .names("w", "b")
                    .declare(g, w, "proj", self.hidden),
            ),
            Err(_) => None,
        };
        w.pop_scope();
        Ok(MlpW {
            gelu: self.gelu,
            fc: fc?,
            proj: proj.transpose()?.expect("declared with fc"),
        })
    }
}

impl MlpW {
    /// `x (B, .., D) -> (B, .., D)`.
    #[track_caller]
    pub fn apply(&self, g: &mut Graph, x: NodeId) -> graph::Result<NodeId> {
        let h = self.fc.apply(g, x)?; // (B, .., hidden)
        let h = match self.gelu {
            Gelu::Tanh => g.gelu(h)?,
            Gelu::Erf => g.gelu_erf(h)?,
        };
        let r = g.rank(h)?;
        let mut axes = vec![BATCH];
        axes.resize(r - 1, NONE);
        axes.push(MLP);
        let h = g.logical_axes(h, &axes)?;
        self.proj.apply(g, h) // (B, .., D)
    }
}
