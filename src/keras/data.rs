//! In-memory datasets for `fit`: inputs `x` and (optional) targets `y`, examples along dim 0.

use anyhow::{bail, Result};

use data::HostArray;

/// `x` and optional `y` with the same number of examples.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub x: HostArray,
    pub y: Option<HostArray>,
}

/// Examples of an array (its leading dim).
pub fn examples(a: &HostArray) -> usize {
    a.dims().first().copied().unwrap_or(0).max(0) as usize
}

/// The rows `idx` of `a`, stacked.
pub fn rows(a: &HostArray, idx: &[usize]) -> HostArray {
    let mut dims = a.dims().to_vec();
    let len: usize = dims[1..].iter().product::<i64>() as usize;
    dims[0] = idx.len() as i64;
    fn pick<T: Copy>(data: &[T], idx: &[usize], len: usize) -> Vec<T> {
        let mut out = Vec::with_capacity(idx.len() * len);
        for &i in idx {
            out.extend_from_slice(&data[i * len..(i + 1) * len]);
        }
        out
    }
    match a {
        HostArray::F32 { data, .. } => HostArray::F32 {
            data: pick(data, idx, len),
            dims,
        },
        HostArray::I32 { data, .. } => HostArray::I32 {
            data: pick(data, idx, len),
            dims,
        },
    }
}

impl Dataset {
    pub fn new(x: HostArray, y: HostArray) -> Result<Dataset> {
        if examples(&x) != examples(&y) {
            bail!(
                "x has {} examples but y has {}: give one target per input",
                examples(&x),
                examples(&y)
            );
        }
        Ok(Dataset { x, y: Some(y) })
    }

    /// Inputs only (unsupervised steps such as a GAN's).
    pub fn unlabeled(x: HostArray) -> Dataset {
        Dataset { x, y: None }
    }

    pub fn len(&self) -> usize {
        examples(&self.x)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The examples at `idx`.
    pub fn rows(&self, idx: &[usize]) -> Dataset {
        Dataset {
            x: rows(&self.x, idx),
            y: self.y.as_ref().map(|y| rows(y, idx)),
        }
    }

    /// The first `n` examples (all when fewer).
    pub fn take(&self, n: usize) -> Dataset {
        let idx: Vec<usize> = (0..n.min(self.len())).collect();
        self.rows(&idx)
    }

    /// MNIST split `train` or `test`: images `[n, 28, 28, 1]` in [0, 1], integer labels.
    pub fn mnist(split: &str) -> Result<Dataset> {
        let s = data::mnist::load(split)?;
        let (h, w, c) = s.hwc;
        Dataset::new(
            HostArray::F32 {
                data: s.images,
                dims: vec![s.n as i64, h as i64, w as i64, c as i64],
            },
            HostArray::I32 {
                data: s.labels,
                dims: vec![s.n as i64],
            },
        )
    }
}

/// Integer class labels `[n]` to one-hot rows `[n, classes]` (Keras `to_categorical`).
pub fn to_categorical(labels: &HostArray, classes: usize) -> Result<HostArray> {
    let HostArray::I32 { data, dims } = labels else {
        bail!("to_categorical needs integer labels");
    };
    let mut out = vec![0f32; data.len() * classes];
    for (i, &l) in data.iter().enumerate() {
        if l < 0 || l as usize >= classes {
            bail!("label {l} out of range 0..{classes}");
        }
        out[i * classes + l as usize] = 1.0;
    }
    let mut d = dims.clone();
    d.push(classes as i64);
    Ok(HostArray::F32 { data: out, dims: d })
}
