//! `[model] attention = { kind = .. }`: which kernel computes attention and its sizes,
//! checked against the sequence length (errors name the keys and the numbers).

use serde::{Deserialize, Serialize};

use crate::attention::AttentionKernel;

/// `model.attention`: which kernel computes attention, and its sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AttentionConfig {
    /// softmax(q kᵀ) v with the `(T, T)` scores in memory.
    #[default]
    Dense,
    /// Exact attention over key/value chunks with a running max and sum (Rabe & Staats).
    Chunked {
        #[serde(default = "default_chunk")]
        chunk: usize,
    },
    /// Each query sees the last `window` keys (causal) or ±window/2, blockwise.
    Local { window: usize },
    /// BigBird: neighbour blocks, `global` leading tokens, `random` blocks per row.
    BlockSparse {
        block: usize,
        #[serde(default)]
        global: usize,
        #[serde(default)]
        random: usize,
        #[serde(default)]
        seed: u64,
    },
    /// Rows then columns of the `[R, C]` grid the sequence folds into (R·C = T).
    Axial { shape: [usize; 2] },
    /// Reformer: shared-QK attention within LSH buckets, `n_hashes` rounds.
    Lsh {
        bucket_size: usize,
        #[serde(default = "one")]
        n_hashes: usize,
    },
}

fn default_chunk() -> usize {
    512
}
fn one() -> usize {
    1
}

impl AttentionConfig {
    /// The kernel for sequences of `model.seq_len` tokens; errors name the keys under `key`
    /// (`model.attention`) and the numbers.
    pub fn kernel(
        &self,
        causal: bool,
        seq_len: usize,
        key: &str,
    ) -> Result<AttentionKernel, String> {
        self.kernel_over(causal, seq_len, "model.seq_len", key)
    }

    /// [`Self::kernel`] for sequences whose length is config key `len_key` (an
    /// encoder–decoder's `model.src_len`).
    pub fn kernel_over(
        &self,
        causal: bool,
        len: usize,
        len_key: &str,
        key: &str,
    ) -> Result<AttentionKernel, String> {
        let t = len;
        let positive = |name: &str, v: usize| {
            if v == 0 {
                Err(format!("{key}.{name} must be at least 1, got 0"))
            } else {
                Ok(())
            }
        };
        // A size at least T means one block of T; a smaller one must divide T.
        let block_of = |name: &str, v: usize| -> Result<i64, String> {
            positive(name, v)?;
            if v >= t {
                Ok(t as i64)
            } else if !t.is_multiple_of(v) {
                Err(format!(
                    "{key}.{name} ({v}) must divide {len_key} ({t}): {t} = {} x {v} + {}",
                    t / v,
                    t % v
                ))
            } else {
                Ok(v as i64)
            }
        };
        Ok(match *self {
            AttentionConfig::Dense => AttentionKernel::Dense { causal },
            AttentionConfig::Chunked { chunk } => AttentionKernel::Chunked {
                causal,
                chunk: block_of("chunk", chunk)?,
            },
            AttentionConfig::Local { window } => AttentionKernel::Local {
                causal,
                window: window as i64,
                block: block_of("window", window)?,
            },
            AttentionConfig::BlockSparse {
                block,
                global,
                random,
                seed,
            } => {
                let b = block_of("block", block)?;
                if global > t || !global.is_multiple_of(b as usize) {
                    return Err(format!(
                        "{key}.global ({global}) must be a multiple of {key}.block ({b}) \
                         and at most {len_key} ({t})"
                    ));
                }
                AttentionKernel::BlockSparse {
                    causal,
                    block: b,
                    global: global as i64,
                    random: random as i64,
                    seed,
                }
            }
            AttentionConfig::Axial { shape: [r, c] } => {
                positive("shape[0]", r)?;
                positive("shape[1]", c)?;
                if r * c != t {
                    return Err(format!(
                        "{key}.shape [{r}, {c}] has {} positions but {len_key} is {t} \
                         (R x C must equal T)",
                        r * c
                    ));
                }
                AttentionKernel::Axial {
                    causal,
                    rows: r as i64,
                    cols: c as i64,
                }
            }
            AttentionConfig::Lsh {
                bucket_size,
                n_hashes,
            } => {
                positive("n_hashes", n_hashes)?;
                AttentionKernel::Lsh {
                    causal,
                    bucket_size: block_of("bucket_size", bucket_size)?,
                    n_hashes: n_hashes as i64,
                }
            }
        })
    }

    /// Chunked attention applies no dropout to its probabilities (its backward recomputes
    /// them): an error naming `key` when `rate` asks for it.
    pub fn check_dropout(&self, rate: f64, key: &str) -> Result<(), String> {
        match self {
            AttentionConfig::Chunked { .. } if rate > 0.0 => Err(format!(
                "model.attention kind \"chunked\" has no dropout on attention probabilities; \
                 set {key} = 0 (got {rate}) or use another kind"
            )),
            _ => Ok(()),
        }
    }

    /// Whether the kernel draws random numbers each step (and so needs the step's seed).
    pub fn needs_seed(&self) -> bool {
        matches!(self, AttentionConfig::Lsh { .. })
    }
}
