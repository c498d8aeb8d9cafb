//! Checkpoints: parameters and optimizer state in safetensors, plus `state.json` (step, seed,
//! config, checksums). Written to a temp directory, fsynced, then renamed into place, so a
//! crash mid-write never leaves a directory `--resume` would pick.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};

use files::write_atomic;

const FORMAT: u32 = 1;
const PARAMS: &str = "params.safetensors";
const OPTIMIZER: &str = "optimizer.safetensors";
const STATE: &str = "state.json";

/// A named f32 tensor on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub dims: Vec<i64>,
    pub data: Vec<f32>,
}

/// What `state.json` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointState {
    pub format: u32,
    /// Optimizer updates done; the next step to run.
    pub step: usize,
    pub seed: u64,
    /// The run's config (as JSON) when the checkpoint was written.
    pub config: serde_json::Value,
    /// sha256 of each tensor file.
    pub checksums: HashMap<String, String>,
    /// Extra files saved with the checkpoint (e.g. `tokenizer.json`).
    #[serde(default)]
    pub files: Vec<String>,
}

/// A loaded checkpoint.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub dir: PathBuf,
    pub state: CheckpointState,
    pub params: Vec<NamedTensor>,
    pub optimizer: Vec<NamedTensor>,
}

fn dir_name(step: usize) -> String {
    format!("step-{step:08}")
}

fn to_safetensors(tensors: &[NamedTensor]) -> Result<Vec<u8>> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|t| t.data.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b)| {
            let shape: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
            Ok((t.name.clone(), TensorView::new(Dtype::F32, shape, b)?))
        })
        .collect::<Result<_>>()?;
    Ok(safetensors::serialize(views, &None)?)
}

fn from_safetensors(bytes: &[u8], what: &Path) -> Result<Vec<NamedTensor>> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| anyhow!("{} is not a valid safetensors file: {e}", what.display()))?;
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            bail!(
                "{}: tensor `{name}` is {:?}, expected F32",
                what.display(),
                view.dtype()
            );
        }
        let data = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        out.push(NamedTensor {
            name,
            dims: view.shape().iter().map(|&d| d as i64).collect(),
            data,
        });
    }
    Ok(out)
}

/// Writes named tensors to one safetensors file (atomically).
pub fn write_tensors(path: &Path, tensors: &[NamedTensor]) -> Result<()> {
    Ok(write_atomic(path, &to_safetensors(tensors)?)?)
}

/// Reads every tensor of a safetensors file (F32 only).
pub fn read_tensors(path: &Path) -> Result<Vec<NamedTensor>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    from_safetensors(&bytes, path)
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes checkpoint `step` under `root` (atomically) and keeps only the newest `keep`.
pub fn save(
    root: &Path,
    state: &CheckpointState,
    params: &[NamedTensor],
    optimizer: &[NamedTensor],
    extra_files: &[(&str, &Path)],
    keep: usize,
) -> Result<PathBuf> {
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let final_dir = root.join(dir_name(state.step));
    let tmp = root.join(format!(
        ".tmp-{}-{}",
        dir_name(state.step),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let result = (|| -> Result<()> {
        let mut st = state.clone();
        st.format = FORMAT;
        for (file, tensors) in [(PARAMS, params), (OPTIMIZER, optimizer)] {
            let bytes = to_safetensors(tensors)?;
            st.checksums.insert(file.to_string(), sha256(&bytes));
            write_atomic(&tmp.join(file), &bytes)?;
        }
        for (name, src) in extra_files {
            let bytes = std::fs::read(src).with_context(|| format!("reading {}", src.display()))?;
            st.checksums.insert(name.to_string(), sha256(&bytes));
            write_atomic(&tmp.join(name), &bytes)?;
            st.files.push(name.to_string());
        }
        write_atomic(
            &tmp.join(STATE),
            serde_json::to_string_pretty(&st)?.as_bytes(),
        )?;
        if final_dir.exists() {
            std::fs::remove_dir_all(&final_dir)
                .with_context(|| format!("replacing {}", final_dir.display()))?;
        }
        std::fs::rename(&tmp, &final_dir)
            .with_context(|| format!("renaming checkpoint into {}", final_dir.display()))?;
        if let Ok(d) = std::fs::File::open(root) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result?;
    // Keep the newest `keep` complete checkpoints.
    let mut all = list(root)?;
    all.sort();
    let n = all.len();
    for (_, dir) in all.into_iter().take(n.saturating_sub(keep.max(1))) {
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(final_dir)
}

/// Complete checkpoints under `root` as (step, dir); temp directories are ignored.
pub fn list(root: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else {
        return Ok(out);
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(step) = name
            .strip_prefix("step-")
            .and_then(|s| s.parse::<usize>().ok())
        {
            if e.path().join(STATE).is_file() {
                out.push((step, e.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The newest complete checkpoint under `root`, if any.
pub fn latest(root: &Path) -> Result<Option<PathBuf>> {
    Ok(list(root)?.pop().map(|(_, d)| d))
}

/// Loads and verifies a checkpoint directory (checksums, format).
pub fn load(dir: &Path) -> Result<Checkpoint> {
    let state_path = dir.join(STATE);
    let text = std::fs::read_to_string(&state_path)
        .with_context(|| format!("reading {}", state_path.display()))?;
    let state: CheckpointState = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid checkpoint state", state_path.display()))?;
    if state.format != FORMAT {
        bail!(
            "{} has checkpoint format {}, this rxla reads format {FORMAT}",
            dir.display(),
            state.format
        );
    }
    let read = |file: &str| -> Result<Vec<u8>> {
        let p = dir.join(file);
        let bytes = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
        let want = state
            .checksums
            .get(file)
            .ok_or_else(|| anyhow!("{} has no checksum for {file}", state_path.display()))?;
        if &sha256(&bytes) != want {
            bail!(
                "checkpoint file {} is corrupted (sha256 mismatch); delete {} to resume from an \
                 older checkpoint",
                p.display(),
                dir.display()
            );
        }
        Ok(bytes)
    };
    let params = from_safetensors(&read(PARAMS)?, &dir.join(PARAMS))?;
    let optimizer = from_safetensors(&read(OPTIMIZER)?, &dir.join(OPTIMIZER))?;
    for f in &state.files {
        read(f)?;
    }
    Ok(Checkpoint {
        dir: dir.to_path_buf(),
        state,
        params,
        optimizer,
    })
}

impl Checkpoint {
    /// Tensors in the order of `want` (name, dims), with a clear error for a mismatch.
    pub fn ordered(
        tensors: &[NamedTensor],
        want: &[(String, Vec<i64>)],
        what: &str,
    ) -> Result<Vec<NamedTensor>> {
        let by_name: HashMap<&str, &NamedTensor> =
            tensors.iter().map(|t| (t.name.as_str(), t)).collect();
        if tensors.len() != want.len() {
            bail!(
                "checkpoint has {} {what} tensors but the model has {}: it was written for another model",
                tensors.len(),
                want.len()
            );
        }
        want.iter()
            .map(|(name, dims)| {
                let t = by_name.get(name.as_str()).ok_or_else(|| {
                    anyhow!(
                        "checkpoint lacks {what} tensor `{name}`: it was written for another model"
                    )
                })?;
                if &t.dims != dims {
                    bail!(
                        "checkpoint {what} tensor `{name}` has shape {:?} but the model needs {:?}",
                        t.dims,
                        dims
                    );
                }
                Ok((*t).clone())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, v: f32) -> NamedTensor {
        NamedTensor {
            name: name.into(),
            dims: vec![2],
            data: vec![v, -v],
        }
    }

    fn state(step: usize) -> CheckpointState {
        CheckpointState {
            format: FORMAT,
            step,
            seed: 3,
            config: serde_json::json!({"a": 1}),
            checksums: HashMap::new(),
            files: vec![],
        }
    }

    #[test]
    fn save_load_keep_and_corruption() {
        let root = std::env::temp_dir().join(format!("rxla-ckpt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for step in [10, 20, 30, 40] {
            save(
                &root,
                &state(step),
                &[t("w", step as f32)],
                &[t("w.m", 1.0)],
                &[],
                2,
            )
            .unwrap();
        }
        let steps: Vec<usize> = list(&root).unwrap().iter().map(|x| x.0).collect();
        assert_eq!(steps, vec![30, 40]);
        // A crash mid-write leaves only a temp dir, which is never picked.
        std::fs::create_dir_all(root.join(".tmp-step-00000050-1")).unwrap();
        std::fs::create_dir_all(root.join("step-00000060")).unwrap(); // no state.json
        let dir = latest(&root).unwrap().unwrap();
        let c = load(&dir).unwrap();
        assert_eq!(c.state.step, 40);
        assert_eq!(c.params, vec![t("w", 40.0)]);
        // Corrupt a byte: refused with a clear error.
        let p = dir.join(PARAMS);
        let mut b = std::fs::read(&p).unwrap();
        let last = b.len() - 1;
        b[last] ^= 1;
        std::fs::write(&p, b).unwrap();
        let err = load(&dir).unwrap_err().to_string();
        assert!(err.contains("corrupted"), "{err}");
        // Wrong shapes or names for the model.
        let want = vec![("w".to_string(), vec![3])];
        let err = Checkpoint::ordered(&[t("w", 1.0)], &want, "parameter")
            .unwrap_err()
            .to_string();
        assert!(err.contains("shape [2]") && err.contains("[3]"), "{err}");
        let want = vec![("v".to_string(), vec![2])];
        let err = Checkpoint::ordered(&[t("w", 1.0)], &want, "parameter")
            .unwrap_err()
            .to_string();
        assert!(err.contains("lacks parameter tensor `v`"), "{err}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
