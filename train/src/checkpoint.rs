//! Checkpoints: parameters and optimizer state in safetensors, plus `state.json` (step, seed,
//! config, checksums). Written to a temp directory, fsynced, then renamed into place, so a
//! crash mid-write never leaves a directory `--resume` would pick.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

pub mod sharded;

pub use crate::tensor::NamedTensor;
use crate::tensor::{self, Dtype, TensorRef};
use files::write_atomic;

/// Every tensor f32: what rxla has always written, and what older rxla reads.
const FORMAT_F32: u32 = 1;
/// Some tensor of another dtype (bf16, f16, i8, i32); older rxla refuses it by format.
const FORMAT_TYPED: u32 = 2;
const PARAMS: &str = "params.safetensors";
const OPTIMIZER: &str = "optimizer.safetensors";
const STATE: &str = "state.json";

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

/// f32 tensors of safetensors `bytes`: bf16 and f16 widen exactly, integers are refused.
fn decode_f32(bytes: &[u8], what: &Path) -> Result<Vec<NamedTensor>> {
    tensor::decode(bytes, what)?
        .into_iter()
        .map(|t| {
            t.into_f32()
                .with_context(|| format!("reading {}", what.display()))
        })
        .collect()
}

/// Writes named tensors to one safetensors file (atomically).
pub fn write_tensors<T: TensorRef>(path: &Path, tensors: &[T]) -> Result<()> {
    tensor::write(path, tensors)
}

/// Reads every tensor of a safetensors file as f32 (bf16 and f16 widen exactly; integer
/// tensors are refused: read those with [`tensor::read`]).
pub fn read_tensors(path: &Path) -> Result<Vec<NamedTensor>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    decode_f32(&bytes, path)
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes checkpoint `step` under `root` (atomically) and keeps only the newest `keep`.
pub fn save<T: TensorRef>(
    root: &Path,
    state: &CheckpointState,
    params: &[T],
    optimizer: &[T],
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
        let all_f32 = params
            .iter()
            .chain(optimizer)
            .all(|t| t.dtype() == Dtype::F32);
        st.format = if all_f32 { FORMAT_F32 } else { FORMAT_TYPED };
        for (file, tensors) in [(PARAMS, params), (OPTIMIZER, optimizer)] {
            let bytes = tensor::encode(tensors).with_context(|| format!("writing {file}"))?;
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
            remove(&final_dir).with_context(|| format!("replacing {}", final_dir.display()))?;
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
        let _ = remove(&dir);
    }
    Ok(final_dir)
}

/// Prefix of a checkpoint directory being deleted (never listed, swept on the next start).
pub const DELETING_PREFIX: &str = ".del-";

/// Deletes checkpoint `dir` so that a crash cannot leave it half deleted under its `step-`
/// name (where `state.json` could outlive the tensor files and be taken as complete): one
/// rename out of the listed names, then the deletion.
pub fn remove(dir: &Path) -> Result<()> {
    let (Some(root), Some(name)) = (dir.parent(), dir.file_name()) else {
        bail!("{} is not a checkpoint directory", dir.display());
    };
    let trash = root.join(format!(
        "{DELETING_PREFIX}{}-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::rename(dir, &trash).with_context(|| format!("moving {} away", dir.display()))?;
    if let Ok(d) = std::fs::File::open(root) {
        let _ = d.sync_all();
    }
    std::fs::remove_dir_all(&trash).with_context(|| format!("deleting {}", trash.display()))
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

/// The newest complete checkpoint of run directory `run` (`run/checkpoints/step-*`), or an error
/// saying how to make one.
pub fn newest(run: &Path) -> Result<PathBuf> {
    let root = run.join("checkpoints");
    latest(&root)?.with_context(|| {
        format!(
            "no complete checkpoint in {}: train with --out {} first",
            root.display(),
            run.display()
        )
    })
}

fn read_state(dir: &Path) -> Result<CheckpointState> {
    let state_path = dir.join(STATE);
    let text = std::fs::read_to_string(&state_path)
        .with_context(|| format!("reading {}", state_path.display()))?;
    let state: CheckpointState = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid checkpoint state", state_path.display()))?;
    let sharded = sharded::FORMAT_SHARDED;
    if state.format != FORMAT_F32 && state.format != FORMAT_TYPED && state.format != sharded {
        bail!(
            "{} has checkpoint format {}, this rxla reads formats {FORMAT_F32}, {FORMAT_TYPED} \
             and {sharded} (written by every process of a job)",
            dir.display(),
            state.format
        );
    }
    Ok(state)
}

/// The bytes of `file` of checkpoint `dir`, checked against the sha256 `state` records.
fn read_verified(dir: &Path, state: &CheckpointState, file: &str) -> Result<Vec<u8>> {
    let p = dir.join(file);
    let bytes = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
    let want = state
        .checksums
        .get(file)
        .ok_or_else(|| anyhow!("{} has no checksum for {file}", dir.join(STATE).display()))?;
    if &sha256(&bytes) != want {
        bail!(
            "checkpoint file {} is corrupted (sha256 mismatch); delete {} to resume from an \
             older checkpoint",
            p.display(),
            dir.display()
        );
    }
    Ok(bytes)
}

/// Whether `dir` is a checkpoint directory (it has a `state.json`).
pub fn is_checkpoint(dir: &Path) -> bool {
    dir.join(STATE).is_file()
}

/// The parameter file of checkpoint `dir`, verified: its path and bytes (any dtype).
pub fn params_file(dir: &Path) -> Result<(PathBuf, Vec<u8>)> {
    let state = read_state(dir)?;
    if state.format == sharded::FORMAT_SHARDED {
        // Written by a job: the logical tensors, assembled from every process's tiles.
        let (params, _) = sharded::assemble(dir, &state)?;
        return Ok((dir.join(PARAMS), tensor::encode(&params)?));
    }
    Ok((dir.join(PARAMS), read_verified(dir, &state, PARAMS)?))
}

/// The state and parameters of checkpoint `dir` in their stored dtypes (an int8-quantized
/// model's i8 weights and f32 scales included), verified; no optimizer state.
pub fn load_params_typed(dir: &Path) -> Result<(CheckpointState, Vec<tensor::Tensor>)> {
    let state = read_state(dir)?;
    let (path, bytes) = params_file(dir)?;
    for f in &state.files {
        read_verified(dir, &state, f)?;
    }
    Ok((state, tensor::decode(&bytes, &path)?))
}

/// Loads and verifies a checkpoint directory (checksums, format) with f32 tensors.
pub fn load(dir: &Path) -> Result<Checkpoint> {
    let state = read_state(dir)?;
    if state.format == sharded::FORMAT_SHARDED {
        let (params, optimizer) = sharded::assemble(dir, &state)?;
        for f in &state.files {
            read_verified(dir, &state, f)?;
        }
        return Ok(Checkpoint {
            dir: dir.to_path_buf(),
            state,
            params,
            optimizer,
        });
    }
    let params = decode_f32(&read_verified(dir, &state, PARAMS)?, &dir.join(PARAMS))?;
    let optimizer = decode_f32(
        &read_verified(dir, &state, OPTIMIZER)?,
        &dir.join(OPTIMIZER),
    )?;
    for f in &state.files {
        read_verified(dir, &state, f)?;
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
            format: FORMAT_F32,
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
        // Pruning moved the old ones out of the listed names and deleted them: nothing left.
        let names: Vec<String> = std::fs::read_dir(&root)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        // A deletion cut short after its rename is never listed, though state.json is there.
        std::fs::create_dir_all(root.join(".del-step-00000045-1")).unwrap();
        std::fs::write(root.join(".del-step-00000045-1").join(STATE), "{}").unwrap();
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

    fn nt(name: &str, dims: Vec<i64>, data: Vec<f32>) -> NamedTensor {
        NamedTensor {
            name: name.into(),
            dims,
            data,
        }
    }

    /// A checkpoint written by rxla before typed tensors (d64facf's writer, kept in
    /// `tests/fixtures`) loads, and today's writer reproduces its files byte for byte.
    #[test]
    fn format1_checkpoint_of_older_rxla_loads_and_rewrites_identically() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/checkpoint-format1/step-00000007");
        let c = load(&dir).unwrap();
        assert_eq!((c.state.format, c.state.step, c.state.seed), (1, 7, 3));
        assert_eq!(c.state.files, vec!["tokenizer.json".to_string()]);
        assert_eq!(c.state.config["model"]["kind"], "gpt");
        let wte = vec![0.5, -1.25, 2.0, 1e-3, -0.0, 3.5e10];
        assert_eq!(
            c.params,
            vec![
                nt("ln_f.g", vec![2], vec![1.0, f32::MIN_POSITIVE]),
                nt("wte.w", vec![3, 2], wte),
            ]
        );
        let names: Vec<&str> = c.optimizer.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["ln_f.g.m", "ln_f.g.v", "wte.w.m", "wte.w.v"]);
        assert_eq!(
            c.optimizer[3].data,
            vec![1e-8, 2e-8, 3e-8, 4e-8, 5e-8, 6e-8]
        );
        for (file, tensors) in [(PARAMS, &c.params), (OPTIMIZER, &c.optimizer)] {
            let old = std::fs::read(dir.join(file)).unwrap();
            assert_eq!(tensor::encode(tensors).unwrap(), old, "{file}");
        }
        let root = std::env::temp_dir().join(format!("rxla-ckpt-f1-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let tok = dir.join("tokenizer.json");
        let mut st = c.state.clone();
        st.checksums.clear();
        st.files.clear();
        let again = save(
            &root,
            &st,
            &c.params,
            &c.optimizer,
            &[("tokenizer.json", &tok)],
            1,
        )
        .unwrap();
        let back = load(&again).unwrap();
        assert_eq!(back.state.format, 1);
        assert_eq!(back.state.checksums, c.state.checksums);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn typed_checkpoint_is_format_2_and_f32_readers_widen_or_refuse() {
        use crate::tensor::{Tensor, TensorData};
        use half::bf16;
        let root = std::env::temp_dir().join(format!("rxla-ckpt-typed-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let w = Tensor::new(
            "w",
            vec![2],
            TensorData::BF16(vec![bf16::from_f32(1.5), bf16::from_f32(-0.125)]),
        )
        .unwrap();
        let q = Tensor::new("q", vec![3], TensorData::I8(vec![-128, 0, 127])).unwrap();
        let m = Tensor::from(nt("w.m", vec![2], vec![0.25, 0.5]));
        let dir = save(
            &root,
            &state(1),
            std::slice::from_ref(&w),
            std::slice::from_ref(&m),
            &[],
            1,
        )
        .unwrap();
        let c = load(&dir).unwrap();
        assert_eq!(c.state.format, 2);
        assert_eq!(c.params, vec![nt("w", vec![2], vec![1.5, -0.125])]);
        // An integer tensor is no f32 parameter: refused, naming the file and the tensor.
        let dir = save(&root, &state(2), &[w, q.clone()], &[m], &[], 1).unwrap();
        let e = format!("{:#}", load(&dir).unwrap_err());
        assert!(
            e.contains("params.safetensors") && e.contains("`q` is i8"),
            "{e}"
        );
        // The typed reader keeps it.
        let (path, bytes) = params_file(&dir).unwrap();
        let typed = tensor::decode(&bytes, &path).unwrap();
        assert_eq!(typed[0], q);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
