//! `Sharding` annotations to XLA `mhlo.sharding` strings.

use crate::{LowerError, Result};
use graph::Sharding;

/// A logical device mesh: named axes with sizes; devices are numbered
/// row-major over the axes (`[("data", 2), ("model", 2)]`: device 1 is
/// data 0, model 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mesh {
    pub axes: Vec<(String, i64)>,
}

impl Mesh {
    pub fn num_devices(&self) -> i64 {
        self.axes.iter().map(|a| a.1).product()
    }

    /// The size of axis `name` (1 when the mesh has no such axis).
    pub fn size(&self, name: &str) -> i64 {
        self.axes.iter().find(|(a, _)| a == name).map_or(1, |a| a.1)
    }

    /// Device `d`'s coordinate along each axis (row-major numbering).
    pub fn coords(&self, d: i64) -> Vec<i64> {
        let mut c = vec![0; self.axes.len()];
        let mut rest = d;
        for (k, (_, n)) in self.axes.iter().enumerate().rev() {
            c[k] = rest % n;
            rest /= n;
        }
        c
    }
}

/// Maps logical axis names (per tensor dim) to mesh axes with `rules` (logical, mesh),
/// as MaxText's logical axis rules do: for each dim the first rule whose mesh axis exists
/// with size > 1, is not taken by an earlier dim and divides the dim wins; otherwise the
/// dim is not split.
pub fn resolve_logical(
    names: &[Option<String>],
    dims: &[i64],
    rules: &[(String, String)],
    mesh: &Mesh,
) -> Vec<Option<String>> {
    let mut used: Vec<&str> = Vec::new();
    names
        .iter()
        .zip(dims)
        .map(|(name, &dim)| {
            let name = name.as_deref()?;
            let axis = rules.iter().find_map(|(l, m)| {
                let n = mesh.size(m);
                (l == name && n > 1 && dim % n == 0 && !used.contains(&m.as_str())).then_some(m)
            })?;
            used.push(axis);
            Some(axis.clone())
        })
        .collect()
}

/// The `mhlo.sharding` string of `s` for a rank-`rank` value, e.g.
/// `{devices=[2,1,2]0,2,1,3 last_tile_dim_replicate}`.
pub fn hlo_sharding(s: &Sharding, rank: usize, mesh: Option<&Mesh>) -> Result<String> {
    let spec = match s {
        Sharding::Replicated => return Ok("{replicated}".into()),
        Sharding::Raw(r) => return Ok(r.clone()),
        Sharding::Mesh(spec) => spec,
        Sharding::Logical(_) => {
            return Err(LowerError::Invalid(
                "Sharding::Logical must be resolved to mesh axes first (resolve_logical)".into(),
            ))
        }
    };
    let mesh =
        mesh.ok_or_else(|| LowerError::Invalid("Sharding::Mesh needs LowerOptions::mesh".into()))?;
    if spec.len() != rank {
        return Err(LowerError::Invalid(format!(
            "{} mesh axes for a rank-{rank} value",
            spec.len()
        )));
    }
    // Which mesh axis each tensor dim uses.
    let mut used = vec![false; mesh.axes.len()];
    let mut dim_axis = Vec::with_capacity(rank);
    for name in spec {
        match name {
            None => dim_axis.push(None),
            Some(n) => {
                let k = mesh
                    .axes
                    .iter()
                    .position(|(a, _)| a == n)
                    .ok_or_else(|| LowerError::Invalid(format!("mesh has no axis {n:?}")))?;
                if used[k] {
                    return Err(LowerError::Invalid(format!("mesh axis {n:?} used twice")));
                }
                used[k] = true;
                dim_axis.push(Some(k));
            }
        }
    }
    if dim_axis.iter().all(Option::is_none) {
        return Ok("{replicated}".into());
    }
    let rep_axes: Vec<usize> = (0..mesh.axes.len()).filter(|&k| !used[k]).collect();
    let rep: i64 = rep_axes.iter().map(|&k| mesh.axes[k].1).product();
    let mut tile: Vec<i64> = dim_axis
        .iter()
        .map(|a| a.map_or(1, |k| mesh.axes[k].1))
        .collect();
    // Order of mesh axes as the tile's (row-major) dims enumerate them.
    let mut order: Vec<usize> = dim_axis.iter().flatten().copied().collect();
    if rep > 1 {
        tile.push(rep);
        order.extend(&rep_axes);
    }
    let sizes: Vec<i64> = order.iter().map(|&k| mesh.axes[k].1).collect();
    let mut strides = vec![1i64; mesh.axes.len()];
    for k in (0..mesh.axes.len().saturating_sub(1)).rev() {
        strides[k] = strides[k + 1] * mesh.axes[k + 1].1;
    }
    let mut devices = Vec::with_capacity(mesh.num_devices() as usize);
    let mut coord = vec![0i64; order.len()];
    loop {
        devices.push(
            order
                .iter()
                .zip(&coord)
                .map(|(&k, &c)| c * strides[k])
                .sum::<i64>()
                .to_string(),
        );
        let mut i = order.len();
        loop {
            if i == 0 {
                let t: Vec<String> = tile.iter().map(|d| d.to_string()).collect();
                let suffix = if rep > 1 {
                    " last_tile_dim_replicate"
                } else {
                    ""
                };
                return Ok(format!(
                    "{{devices=[{}]{}{suffix}}}",
                    t.join(","),
                    devices.join(",")
                ));
            }
            i -= 1;
            coord[i] += 1;
            if coord[i] < sizes[i] {
                break;
            }
            coord[i] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh() -> Mesh {
        Mesh {
            axes: vec![("data".into(), 2), ("model".into(), 2)],
        }
    }

    #[test]
    fn mesh_specs_to_strings() {
        let m = mesh();
        let s = |v: Vec<Option<&str>>| {
            let spec = Sharding::Mesh(v.into_iter().map(|x| x.map(String::from)).collect());
            hlo_sharding(&spec, 2, Some(&m)).unwrap()
        };
        assert_eq!(
            s(vec![Some("data"), None]),
            "{devices=[2,1,2]0,1,2,3 last_tile_dim_replicate}"
        );
        assert_eq!(
            s(vec![None, Some("model")]),
            "{devices=[1,2,2]0,2,1,3 last_tile_dim_replicate}"
        );
        assert_eq!(
            s(vec![Some("model"), Some("data")]),
            "{devices=[2,2]0,2,1,3}"
        );
        assert_eq!(s(vec![None, None]), "{replicated}");
        let bad = Sharding::Mesh(vec![Some("x".into()), None]);
        assert!(hlo_sharding(&bad, 2, Some(&m)).is_err());
        assert!(hlo_sharding(&bad, 2, None).is_err());
    }

    #[test]
    fn logical_axes_resolve_by_rules() {
        let m = mesh();
        let rules: Vec<(String, String)> = [("batch", "data"), ("embed", "data"), ("mlp", "model")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let r = |names: &[Option<&str>], dims: &[i64]| {
            let names: Vec<Option<String>> = names.iter().map(|n| n.map(String::from)).collect();
            resolve_logical(&names, dims, &rules, &m)
        };
        let s = |v: &str| Some(v.to_string());
        // batch takes `data` first, so the activation's embed stays whole.
        assert_eq!(
            r(&[Some("batch"), None, Some("embed")], &[4, 3, 8]),
            vec![s("data"), None, None]
        );
        // A parameter's embed is split over `data` (fsdp) and mlp over `model`.
        assert_eq!(
            r(&[Some("embed"), Some("mlp")], &[8, 32]),
            vec![s("data"), s("model")]
        );
        // Not divisible, or no rule: not split.
        assert_eq!(
            r(&[Some("embed"), Some("vocab")], &[7, 8]),
            vec![None, None]
        );
        assert_eq!(m.coords(3), vec![1, 1]);
        assert_eq!(m.coords(2), vec![1, 0]);
        assert_eq!(m.size("model"), 2);
        assert_eq!(m.size("stage"), 1);
    }
}
