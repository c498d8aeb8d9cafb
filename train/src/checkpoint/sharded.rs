//! Checkpoints written by every process of a job (format 3, Orbax-style): each process writes
//! the tiles of the state it owns (a tile held by several devices, a replica, is written once,
//! by the process of its first device) into its own files of a temp directory all processes
//! share; after a barrier, process 0 checks that the tiles cover every tensor, writes
//! `state.json` (the commit marker, with the sha256 of every file) and renames the directory
//! into place, then a last barrier. `checkpoint::load` assembles the logical tensors, so a
//! sharded checkpoint restores onto any process count and mesh, one process included.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, CheckpointState, NamedTensor};
use crate::tensor;
use files::write_atomic;
use runtime::ShardLayout;

pub const FORMAT_SHARDED: u32 = 3;
const INDEX: &str = "index.json";

/// One tile of a tensor of the train state, as a process holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Tile {
    /// `params` or `optimizer`.
    pub group: Group,
    pub name: String,
    /// The logical shape.
    pub dims: Vec<i64>,
    /// Tiles per dim.
    pub tiles: Vec<i64>,
    /// This tile's index per dim.
    pub index: Vec<i64>,
    /// Row-major, the tile's shape.
    pub data: Vec<f32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Group {
    Params,
    Optimizer,
}

/// Where a tile lies in a process's file (what `shards-p{i}.json` lists).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TileEntry {
    group: Group,
    name: String,
    dims: Vec<i64>,
    tiles: Vec<i64>,
    index: Vec<i64>,
    /// Its tensor's name inside the process's safetensors file.
    key: String,
}

/// What process 0 records for the whole job in `state.json` (beside the usual fields).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ShardIndex {
    num_processes: u32,
    /// Tensor names in model order.
    params: Vec<String>,
    optimizer: Vec<String>,
    /// Per process: its tile file and tile list.
    processes: Vec<(String, String)>,
}

/// The tile indices of `layout` that process `process` writes: each distinct tile once, by
/// the process of the first device (in device order) holding it. `device_process[d]` is the
/// process of device `d`.
pub fn owned_tiles(layout: &ShardLayout, device_process: &[u32], process: u32) -> Vec<Vec<i64>> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (d, idx) in layout.device_tiles.iter().enumerate() {
        if seen.insert(idx.clone()) && device_process.get(d) == Some(&process) {
            out.push(idx.clone());
        }
    }
    out
}

/// Calls `f(tile_offset, logical_offset, len)` for each contiguous row of a tile.
fn tile_rows(dims: &[i64], tiles: &[i64], index: &[i64], mut f: impl FnMut(usize, usize, usize)) {
    let rank = dims.len();
    if rank == 0 {
        f(0, 0, 1);
        return;
    }
    let shard: Vec<i64> = dims.iter().zip(tiles).map(|(d, t)| d / t).collect();
    let start: Vec<i64> = index.iter().zip(&shard).map(|(i, s)| i * s).collect();
    let mut strides = vec![1i64; rank];
    for k in (0..rank - 1).rev() {
        strides[k] = strides[k + 1] * dims[k + 1];
    }
    let len = shard[rank - 1] as usize;
    let rows: i64 = shard[..rank - 1].iter().product();
    let mut idx = vec![0i64; rank - 1];
    for r in 0..rows {
        let off: i64 = (0..rank)
            .map(|k| (start[k] + if k < rank - 1 { idx[k] } else { 0 }) * strides[k])
            .sum();
        f(r as usize * len, off as usize, len);
        for k in (0..rank - 1).rev() {
            idx[k] += 1;
            if idx[k] < shard[k] {
                break;
            }
            idx[k] = 0;
        }
    }
}

/// Tile `index` of a logical tensor (row-major `full`) cut into `tiles`.
pub fn cut_tile(full: &[f32], dims: &[i64], tiles: &[i64], index: &[i64]) -> Vec<f32> {
    let n: i64 = dims.iter().zip(tiles).map(|(d, t)| d / t).product();
    let mut out = vec![0f32; n as usize];
    tile_rows(dims, tiles, index, |t, l, len| {
        out[t..t + len].copy_from_slice(&full[l..l + len])
    });
    out
}

/// What every process of the job passes to [`save`] (the same on all of them).
pub struct SaveJob<'a> {
    pub root: &'a Path,
    pub state: &'a CheckpointState,
    /// Tensor names in model order.
    pub params: &'a [String],
    pub optimizer: &'a [String],
    /// Extra files process 0 saves (e.g. `tokenizer.json`).
    pub extra_files: &'a [(&'a str, &'a Path)],
    pub keep: usize,
    pub process: u32,
    pub num_processes: u32,
}

fn tmp_dir(root: &Path, step: usize) -> PathBuf {
    root.join(format!(".tmp-step-{step:08}-job"))
}

/// Writes this process's `tiles` of checkpoint `job.state.step`; `barrier(name)` must wait
/// for every process of the job (the coordination service's barrier). Returns the
/// checkpoint's directory once process 0 committed it.
pub fn save(
    job: &SaveJob,
    tiles: &[Tile],
    barrier: &mut dyn FnMut(&str) -> Result<()>,
) -> Result<PathBuf> {
    let step = job.state.step;
    let tmp = tmp_dir(job.root, step);
    let final_dir = job.root.join(format!("step-{step:08}"));
    if job.process == 0 {
        // A temp dir left by a crashed attempt goes before anyone writes.
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    }
    barrier(&format!("checkpoint/{step}/begin"))?;
    // This process's tiles: one safetensors file and its tile list.
    let p = job.process;
    let mut named = Vec::with_capacity(tiles.len());
    let mut entries = Vec::with_capacity(tiles.len());
    for t in tiles {
        let shard: Vec<i64> = t.dims.iter().zip(&t.tiles).map(|(d, n)| d / n).collect();
        if shard.iter().product::<i64>() as usize != t.data.len() {
            bail!(
                "tile {:?} of `{}` holds {} values, not {:?}",
                t.index,
                t.name,
                t.data.len(),
                shard
            );
        }
        let key = format!(
            "{}/{}@{}",
            match t.group {
                Group::Params => "params",
                Group::Optimizer => "optimizer",
            },
            t.name,
            t.index
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(".")
        );
        named.push(NamedTensor {
            name: key.clone(),
            dims: shard,
            data: t.data.clone(),
        });
        entries.push(TileEntry {
            group: t.group,
            name: t.name.clone(),
            dims: t.dims.clone(),
            tiles: t.tiles.clone(),
            index: t.index.clone(),
            key,
        });
    }
    let bytes = tensor::encode(&named).context("encoding this process's tiles")?;
    write_atomic(&tmp.join(format!("shards-p{p}.safetensors")), &bytes)?;
    write_atomic(
        &tmp.join(format!("shards-p{p}.json")),
        serde_json::to_string(&entries)?.as_bytes(),
    )?;
    barrier(&format!("checkpoint/{step}/written"))?;
    if p == 0 {
        commit(job, &tmp, &final_dir)?;
    }
    barrier(&format!("checkpoint/{step}/committed"))?;
    Ok(final_dir)
}

/// Process 0: check coverage, write `state.json` last, rename into place, keep the newest.
fn commit(job: &SaveJob, tmp: &Path, final_dir: &Path) -> Result<()> {
    let mut st = job.state.clone();
    st.format = FORMAT_SHARDED;
    st.checksums.clear();
    st.files.clear();
    let mut processes = Vec::new();
    let mut all = Vec::new();
    for q in 0..job.num_processes {
        let (data, list) = (
            format!("shards-p{q}.safetensors"),
            format!("shards-p{q}.json"),
        );
        for f in [&data, &list] {
            let b = std::fs::read(tmp.join(f))
                .with_context(|| format!("process {q} did not write {f}"))?;
            st.checksums.insert(f.clone(), sha256(&b));
        }
        let entries: Vec<TileEntry> = serde_json::from_slice(&std::fs::read(tmp.join(&list))?)?;
        all.extend(entries);
        processes.push((data, list));
    }
    coverage(&all, job.params, job.optimizer)?;
    for (name, src) in job.extra_files {
        let bytes = std::fs::read(src).with_context(|| format!("reading {}", src.display()))?;
        st.checksums.insert(name.to_string(), sha256(&bytes));
        write_atomic(&tmp.join(name), &bytes)?;
        st.files.push(name.to_string());
    }
    let index = ShardIndex {
        num_processes: job.num_processes,
        params: job.params.to_vec(),
        optimizer: job.optimizer.to_vec(),
        processes,
    };
    let index_bytes = serde_json::to_vec_pretty(&index)?;
    st.checksums.insert(INDEX.into(), sha256(&index_bytes));
    write_atomic(&tmp.join(INDEX), &index_bytes)?;
    write_atomic(
        &tmp.join("state.json"),
        serde_json::to_string_pretty(&st)?.as_bytes(),
    )?;
    if final_dir.exists() {
        std::fs::remove_dir_all(final_dir)?;
    }
    std::fs::rename(tmp, final_dir)
        .with_context(|| format!("renaming the checkpoint into {}", final_dir.display()))?;
    if let Ok(d) = std::fs::File::open(job.root) {
        let _ = d.sync_all();
    }
    let mut old = checkpoint::list(job.root)?;
    let n = old.len();
    for (_, d) in old.drain(..n.saturating_sub(job.keep.max(1))) {
        let _ = std::fs::remove_dir_all(d);
    }
    Ok(())
}

/// Every tensor named, each of its tiles exactly once, one tiling per tensor.
fn coverage(all: &[TileEntry], params: &[String], optimizer: &[String]) -> Result<()> {
    let mut by: BTreeMap<(Group, &str), Vec<&TileEntry>> = BTreeMap::new();
    for e in all {
        by.entry((e.group, e.name.as_str())).or_default().push(e);
    }
    for (group, names) in [(Group::Params, params), (Group::Optimizer, optimizer)] {
        for name in names {
            let es = by.remove(&(group, name.as_str())).unwrap_or_default();
            let Some(first) = es.first() else {
                bail!("no process wrote {group:?} tensor `{name}`");
            };
            let count: i64 = first.tiles.iter().product();
            let mut seen = std::collections::HashSet::new();
            for e in &es {
                if e.tiles != first.tiles || e.dims != first.dims {
                    bail!("tensor `{name}` was written with two tilings");
                }
                if !seen.insert(e.index.clone()) {
                    bail!(
                        "tile {:?} of `{name}` was written twice (replicas must be deduplicated)",
                        e.index
                    );
                }
            }
            if seen.len() as i64 != count {
                bail!("tensor `{name}` has {} of its {count} tiles", seen.len());
            }
        }
    }
    if let Some(((g, n), _)) = by.into_iter().next() {
        bail!("a process wrote {g:?} tensor `{n}`, which the model does not have");
    }
    Ok(())
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn read_verified(dir: &Path, st: &CheckpointState, file: &str) -> Result<Vec<u8>> {
    let p = dir.join(file);
    let bytes = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
    let want = st
        .checksums
        .get(file)
        .ok_or_else(|| anyhow!("{} records no checksum for {file}", dir.display()))?;
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

/// The logical params and optimizer tensors (model order) of sharded checkpoint `dir`.
pub(crate) fn assemble(
    dir: &Path,
    st: &CheckpointState,
) -> Result<(Vec<NamedTensor>, Vec<NamedTensor>)> {
    let index: ShardIndex = serde_json::from_slice(&read_verified(dir, st, INDEX)?)
        .with_context(|| format!("{} is not a valid shard index", dir.join(INDEX).display()))?;
    let mut full: HashMap<(Group, String), NamedTensor> = HashMap::new();
    for (data, list) in &index.processes {
        let entries: Vec<TileEntry> = serde_json::from_slice(&read_verified(dir, st, list)?)?;
        let path = dir.join(data);
        let tensors = tensor::decode(&read_verified(dir, st, data)?, &path)?;
        let by_key: HashMap<&str, &tensor::Tensor> =
            tensors.iter().map(|t| (t.name.as_str(), t)).collect();
        for e in &entries {
            let t = by_key
                .get(e.key.as_str())
                .ok_or_else(|| anyhow!("{} lacks tile `{}`", path.display(), e.key))?;
            let values = (*t).clone().into_f32()?.data;
            let n: i64 = e.dims.iter().product();
            let slot = full
                .entry((e.group, e.name.clone()))
                .or_insert_with(|| NamedTensor {
                    name: e.name.clone(),
                    dims: e.dims.clone(),
                    data: vec![0f32; n as usize],
                });
            tile_rows(&e.dims, &e.tiles, &e.index, |t, l, len| {
                slot.data[l..l + len].copy_from_slice(&values[t..t + len])
            });
        }
    }
    let mut take = |group: Group, names: &[String]| -> Result<Vec<NamedTensor>> {
        names
            .iter()
            .map(|n| {
                full.remove(&(group, n.clone()))
                    .ok_or_else(|| anyhow!("sharded checkpoint {} lacks `{n}`", dir.display()))
            })
            .collect()
    };
    Ok((
        take(Group::Params, &index.params)?,
        take(Group::Optimizer, &index.optimizer)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    fn state(step: usize) -> CheckpointState {
        CheckpointState {
            format: 1,
            step,
            seed: 3,
            config: serde_json::json!({"model": {"kind": "mlp"}}),
            checksums: Default::default(),
            files: vec![],
        }
    }

    fn t(name: &str, dims: Vec<i64>) -> NamedTensor {
        let n: i64 = dims.iter().product();
        let salt = name.len() as f32;
        NamedTensor {
            name: name.into(),
            dims,
            data: (0..n).map(|i| i as f32 * 0.5 - salt).collect(),
        }
    }

    /// 8 devices, 2 per process: a tensor split 8 ways over its rows, one split 2 x 2
    /// (each tile on two devices), one replicated everywhere.
    fn layouts(dims: &[Vec<i64>]) -> Vec<ShardLayout> {
        let rows4 = ShardLayout {
            dims: dims[0].clone(),
            tiles: vec![8, 1],
            device_tiles: (0..8).map(|d| vec![d, 0]).collect(),
        };
        let grid = ShardLayout {
            dims: dims[1].clone(),
            tiles: vec![2, 2],
            device_tiles: (0..8).map(|d| vec![(d / 2) % 2, d % 2]).collect(),
        };
        let rep = ShardLayout::replicated(&dims[2], 8);
        vec![rows4, grid, rep]
    }

    #[test]
    fn four_processes_write_their_tiles_and_one_process_reads_the_whole_state() {
        let root = std::env::temp_dir().join(format!("rxla-sharded-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let params = vec![t("w", vec![8, 3]), t("u", vec![4, 6]), t("b", vec![5])];
        let optimizer: Vec<NamedTensor> = params
            .iter()
            .map(|p| NamedTensor {
                name: format!("{}.m", p.name),
                ..t(&format!("{}.m", p.name), p.dims.clone())
            })
            .collect();
        let dims: Vec<Vec<i64>> = params.iter().map(|p| p.dims.clone()).collect();
        let lay = layouts(&dims);
        let device_process: Vec<u32> = (0..8).map(|d| d / 2).collect();
        let names = |ts: &[NamedTensor]| ts.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
        let (pn, on) = (names(&params), names(&optimizer));
        let barrier = Arc::new(Barrier::new(4));
        let written = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4u32)
                .map(|p| {
                    let (barrier, root, lay, device_process) =
                        (barrier.clone(), &root, &lay, &device_process);
                    let (params, optimizer, pn, on) = (&params, &optimizer, &pn, &on);
                    s.spawn(move || {
                        let mut tiles = Vec::new();
                        for (group, ts) in [(Group::Params, params), (Group::Optimizer, optimizer)]
                        {
                            for (t, l) in ts.iter().zip(lay) {
                                for idx in owned_tiles(l, device_process, p) {
                                    tiles.push(Tile {
                                        group,
                                        name: t.name.clone(),
                                        dims: t.dims.clone(),
                                        tiles: l.tiles.clone(),
                                        data: cut_tile(&t.data, &t.dims, &l.tiles, &idx),
                                        index: idx,
                                    });
                                }
                            }
                        }
                        let n = tiles.len();
                        let st = state(6);
                        let job = SaveJob {
                            root,
                            state: &st,
                            params: pn,
                            optimizer: on,
                            extra_files: &[],
                            keep: 2,
                            process: p,
                            num_processes: 4,
                        };
                        save(&job, &tiles, &mut |_| {
                            barrier.wait();
                            Ok(())
                        })
                        .unwrap();
                        n
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        });
        // Replicas written once: w's 8 row tiles 2 per process, u's 4 grid tiles by processes
        // 0 and 1 (devices 0-3 hold each once), b by process 0; for params and optimizer.
        assert_eq!(written, vec![10, 8, 4, 4]);
        let c = checkpoint::load(&root.join("step-00000006")).unwrap();
        assert_eq!(c.state.format, FORMAT_SHARDED);
        assert_eq!(c.params, params);
        assert_eq!(c.optimizer, optimizer);
        assert_eq!(
            checkpoint::latest(&root).unwrap().unwrap(),
            root.join("step-00000006")
        );
        // A corrupted tile file is refused by name.
        let f = root.join("step-00000006/shards-p1.safetensors");
        let mut b = std::fs::read(&f).unwrap();
        let last = b.len() - 1;
        b[last] ^= 1;
        std::fs::write(&f, b).unwrap();
        let e = format!(
            "{:#}",
            checkpoint::load(&root.join("step-00000006")).unwrap_err()
        );
        assert!(e.contains("shards-p1.safetensors is corrupted"), "{e}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn missing_or_duplicated_tiles_are_not_committed() {
        let root = std::env::temp_dir().join(format!("rxla-sharded-bad-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let w = t("w", vec![4, 2]);
        let tile = |i: i64| Tile {
            group: Group::Params,
            name: "w".into(),
            dims: w.dims.clone(),
            tiles: vec![2, 1],
            index: vec![i, 0],
            data: cut_tile(&w.data, &w.dims, &[2, 1], &[i, 0]),
        };
        let st = state(2);
        let names = vec!["w".to_string()];
        let job = SaveJob {
            root: &root,
            state: &st,
            params: &names,
            optimizer: &[],
            extra_files: &[],
            keep: 1,
            process: 0,
            num_processes: 1,
        };
        let e = format!("{:#}", save(&job, &[tile(0)], &mut |_| Ok(())).unwrap_err());
        assert!(e.contains("`w` has 1 of its 2 tiles"), "{e}");
        let e = format!(
            "{:#}",
            save(&job, &[tile(0), tile(0)], &mut |_| Ok(())).unwrap_err()
        );
        assert!(e.contains("w@0.0"), "{e}");
        assert!(
            checkpoint::latest(&root).unwrap().is_none(),
            "nothing committed"
        );
        save(&job, &[tile(1), tile(0)], &mut |_| Ok(())).unwrap();
        assert_eq!(
            checkpoint::load(&root.join("step-00000002"))
                .unwrap()
                .params,
            vec![w]
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
