//! Sharded arrays: one logical array held as per-device buffers, with host scatter (slice
//! per device) and gather (assemble the tiles).

use crate::buffer::Buffer;
use crate::client::Client;
use crate::dtype::NativeType;
use crate::error::{Error, Result};
use crate::global::GlobalDevices;

/// How a logical array of shape `dims` is cut into equal tiles over devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardLayout {
    /// The logical (global) shape.
    pub dims: Vec<i64>,
    /// Tiles per dim (1: the dim is whole on every device).
    pub tiles: Vec<i64>,
    /// For each device, in execution order: its tile index per dim. Devices with equal
    /// indices hold replicas.
    pub device_tiles: Vec<Vec<i64>>,
}

impl ShardLayout {
    /// Every device holds the whole array.
    pub fn replicated(dims: &[i64], devices: usize) -> ShardLayout {
        ShardLayout {
            dims: dims.to_vec(),
            tiles: vec![1; dims.len()],
            device_tiles: vec![vec![0; dims.len()]; devices],
        }
    }

    /// The per-device (tile) shape.
    pub fn shard_dims(&self) -> Vec<i64> {
        self.dims
            .iter()
            .zip(&self.tiles)
            .map(|(d, t)| d / t)
            .collect()
    }

    pub fn num_devices(&self) -> usize {
        self.device_tiles.len()
    }

    /// Tiles must divide their dims and every device index must name a tile.
    pub fn check(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidArgument(m));
        if self.tiles.len() != self.dims.len() {
            return bad(format!(
                "layout of {:?} has {} tile counts",
                self.dims,
                self.tiles.len()
            ));
        }
        for (d, t) in self.dims.iter().zip(&self.tiles) {
            if *t < 1 || d % t != 0 {
                return bad(format!(
                    "shape {:?} cannot be cut into {:?} equal tiles",
                    self.dims, self.tiles
                ));
            }
        }
        for (dev, idx) in self.device_tiles.iter().enumerate() {
            if idx.len() != self.dims.len() || idx.iter().zip(&self.tiles).any(|(i, t)| i >= t) {
                return bad(format!(
                    "device {dev}'s tile {idx:?} is outside tiles {:?}",
                    self.tiles
                ));
            }
        }
        Ok(())
    }

    /// The rows (of the first dim) device `d`'s tile spans: `(first, end)`.
    pub fn tile_rows(&self, d: usize) -> (i64, i64) {
        match (self.dims.first(), self.tiles.first()) {
            (Some(&n), Some(&t)) => {
                let s = n / t;
                let i = self.device_tiles[d][0];
                (i * s, (i + 1) * s)
            }
            _ => (0, 1),
        }
    }

    /// This process's share of the array: the tiles on its devices of mesh `g`, each tile
    /// once, as `(mesh position, tile index)`.
    pub fn local_tiles(&self, g: &GlobalDevices) -> Vec<(usize, Vec<i64>)> {
        let mut out: Vec<(usize, Vec<i64>)> = Vec::new();
        for (pos, _) in g.local() {
            let idx = &self.device_tiles[pos];
            if !out.iter().any(|(_, i)| i == idx) {
                out.push((pos, idx.clone()));
            }
        }
        out
    }

    /// The elements of device `d`'s tile cut from the logical array `data` (row-major).
    pub fn cut<T: Copy>(&self, d: usize, data: &[T]) -> Vec<T> {
        let mut tile = Vec::with_capacity(self.shard_dims().iter().product::<i64>() as usize);
        self.rows(d, |_, src, len| {
            tile.extend_from_slice(&data[src..src + len])
        });
        tile
    }

    /// Writes device `d`'s tile into the logical array `out` (row-major).
    pub fn paste<T: Copy>(&self, d: usize, tile: &[T], out: &mut [T]) {
        self.rows(d, |src, dst, len| {
            out[dst..dst + len].copy_from_slice(&tile[src..src + len])
        });
    }

    /// Calls `f(tile_offset, logical_offset, len)` for each contiguous row of device `d`'s
    /// tile: where it lies in the tile and in the logical array (row-major elements).
    fn rows(&self, d: usize, mut f: impl FnMut(usize, usize, usize)) {
        let shard = self.shard_dims();
        let rank = shard.len();
        if rank == 0 {
            f(0, 0, 1);
            return;
        }
        let start: Vec<i64> = self.device_tiles[d]
            .iter()
            .zip(&shard)
            .map(|(i, s)| i * s)
            .collect();
        let mut strides = vec![1i64; rank];
        for k in (0..rank - 1).rev() {
            strides[k] = strides[k + 1] * self.dims[k + 1];
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
}

/// A logical array as per-device buffers: `shards[k]` lives on device `devices[k]` and is
/// the tile of mesh position `positions[k]`. In a job of several processes a process holds
/// only the shards of its own devices; the others' are not addressable here.
#[derive(Debug)]
pub struct ShardedArray {
    pub layout: ShardLayout,
    shards: Vec<Buffer>,
    positions: Vec<usize>,
}

impl ShardedArray {
    /// Scatters `data` (row-major, the layout's logical shape): each device gets its tile.
    pub fn from_host<T: NativeType>(
        client: &Client,
        data: &[T],
        layout: &ShardLayout,
        devices: &[usize],
    ) -> Result<ShardedArray> {
        layout.check()?;
        let n: i64 = layout.dims.iter().product();
        if data.len() as i64 != n {
            return Err(Error::InvalidArgument(format!(
                "host data has {} elements but shape {:?} needs {n}",
                data.len(),
                layout.dims
            )));
        }
        if devices.len() != layout.num_devices() {
            return Err(Error::InvalidArgument(format!(
                "layout is for {} device(s) but {} were given",
                layout.num_devices(),
                devices.len()
            )));
        }
        let shard = layout.shard_dims();
        let mut shards = Vec::with_capacity(devices.len());
        for (d, &dev) in devices.iter().enumerate() {
            let buf = if layout.tiles.iter().all(|&t| t == 1) {
                client.buffer_from_host(data, &shard, dev)?
            } else {
                let mut tile = Vec::with_capacity(shard.iter().product::<i64>() as usize);
                layout.rows(d, |_, src, len| {
                    tile.extend_from_slice(&data[src..src + len])
                });
                client.buffer_from_host(&tile, &shard, dev)?
            };
            shards.push(buf);
        }
        Ok(ShardedArray {
            layout: layout.clone(),
            positions: (0..shards.len()).collect(),
            shards,
        })
    }

    /// Scatters only this process's tiles of `data` (the whole logical array, e.g. initial
    /// values every process computes from the seed) to its devices of the global mesh `g`.
    pub fn from_host_local<T: NativeType>(
        client: &Client,
        data: &[T],
        layout: &ShardLayout,
        g: &GlobalDevices,
    ) -> Result<ShardedArray> {
        let rows = layout.dims.first().copied().unwrap_or(1);
        ShardedArray::from_host_rows(client, data, 0..rows, layout, g)
    }

    /// Scatters this process's tiles from `part`: rows `rows` (of the first dim) of the
    /// logical array, e.g. the process's rows of a global batch. Each of its tiles must lie
    /// within those rows.
    pub fn from_host_rows<T: NativeType>(
        client: &Client,
        part: &[T],
        rows: std::ops::Range<i64>,
        layout: &ShardLayout,
        g: &GlobalDevices,
    ) -> Result<ShardedArray> {
        layout.check()?;
        if g.num_devices() != layout.num_devices() {
            return Err(Error::InvalidArgument(format!(
                "layout is for {} device(s) but the mesh has {}",
                layout.num_devices(),
                g.num_devices()
            )));
        }
        let row_elems: i64 = layout.dims.iter().skip(1).product();
        let want = (rows.end - rows.start) * row_elems;
        if rows.start < 0
            || rows.end > layout.dims.first().copied().unwrap_or(1)
            || part.len() as i64 != want
        {
            return Err(Error::InvalidArgument(format!(
                "host data of {} elements for rows {rows:?} of shape {:?} (needs {want})",
                part.len(),
                layout.dims
            )));
        }
        let shard = layout.shard_dims();
        let (mut shards, mut positions) = (Vec::new(), Vec::new());
        for (pos, dev) in g.local() {
            let (lo, hi) = layout.tile_rows(pos);
            if lo < rows.start || hi > rows.end {
                return Err(Error::InvalidArgument(format!(
                    "device {} (mesh position {pos}) holds rows {lo}..{hi} of {:?}, outside \
                     the given rows {rows:?}",
                    g.devices()[pos].id,
                    layout.dims
                )));
            }
            let skip = (rows.start * row_elems) as usize;
            let mut tile = Vec::with_capacity(shard.iter().product::<i64>() as usize);
            layout.rows(pos, |_, src, len| {
                tile.extend_from_slice(&part[src - skip..src - skip + len])
            });
            shards.push(client.buffer_from_host(&tile, &shard, dev)?);
            positions.push(pos);
        }
        Ok(ShardedArray {
            layout: layout.clone(),
            shards,
            positions,
        })
    }

    /// Wraps this process's buffers of a program over the global mesh (its outputs on the
    /// local devices, in mesh order).
    pub fn from_local_shards(
        layout: ShardLayout,
        g: &GlobalDevices,
        shards: Vec<Buffer>,
    ) -> Result<ShardedArray> {
        layout.check()?;
        let positions: Vec<usize> = g.local().into_iter().map(|l| l.0).collect();
        if shards.len() != positions.len() || layout.num_devices() != g.num_devices() {
            return Err(Error::InvalidArgument(format!(
                "{} shard(s) for {} local device(s) of a {}-device mesh (layout over {})",
                shards.len(),
                positions.len(),
                g.num_devices(),
                layout.num_devices()
            )));
        }
        check_shard_dims(&layout, &shards)?;
        Ok(ShardedArray {
            layout,
            shards,
            positions,
        })
    }

    /// Wraps per-device buffers (e.g. a program's outputs) checked against the layout.
    pub fn from_shards(layout: ShardLayout, shards: Vec<Buffer>) -> Result<ShardedArray> {
        layout.check()?;
        if shards.len() != layout.num_devices() {
            return Err(Error::InvalidArgument(format!(
                "{} shard(s) for a layout over {} device(s)",
                shards.len(),
                layout.num_devices()
            )));
        }
        check_shard_dims(&layout, &shards)?;
        Ok(ShardedArray {
            layout,
            positions: (0..shards.len()).collect(),
            shards,
        })
    }

    /// Gathers the logical array to the host (each tile read once). An array with tiles only
    /// on other processes' devices cannot be gathered here: read [`Self::local_tiles`].
    pub fn to_host<T: NativeType + Default>(&self) -> Result<Vec<T>> {
        if self.layout.tiles.iter().all(|&t| t == 1) {
            return match self.shards.first() {
                Some(b) => b.to_host(),
                None => Err(Error::InvalidArgument(format!(
                    "no shard of the {:?} array is on this process's devices",
                    self.layout.dims
                ))),
            };
        }
        let n = self.layout.dims.iter().product::<i64>() as usize;
        let mut out = vec![T::default(); n];
        let mut filled = 0usize;
        for (pos, tile) in self.local_tiles::<T>()? {
            filled += tile.len();
            self.layout.rows(pos, |src, dst, len| {
                out[dst..dst + len].copy_from_slice(&tile[src..src + len])
            });
        }
        if filled != n {
            return Err(Error::InvalidArgument(format!(
                "this process holds {filled} of the {n} elements of the {:?} array (the other \
                 tiles are on other processes' devices): gather per process with local_tiles",
                self.layout.dims
            )));
        }
        Ok(out)
    }

    /// This process's distinct tiles (replicas read once): `(mesh position, tile data)`;
    /// the tile index is `layout.device_tiles[position]`.
    pub fn local_tiles<T: NativeType + Default>(&self) -> Result<Vec<(usize, Vec<T>)>> {
        let mut seen: Vec<&Vec<i64>> = Vec::new();
        let mut out = Vec::new();
        for (b, &pos) in self.shards.iter().zip(&self.positions) {
            let idx = &self.layout.device_tiles[pos];
            if seen.contains(&idx) {
                continue;
            }
            seen.push(idx);
            out.push((pos, b.to_host::<T>()?));
        }
        Ok(out)
    }

    /// Mesh positions of the shards held here, in [`Self::shards`] order.
    pub fn positions(&self) -> &[usize] {
        &self.positions
    }

    /// The per-device buffers, in the layout's device order.
    pub fn shards(&self) -> &[Buffer] {
        &self.shards
    }

    pub fn into_shards(self) -> Vec<Buffer> {
        self.shards
    }

    pub fn dims(&self) -> &[i64] {
        &self.layout.dims
    }

    /// Bytes this array takes on one device (its tile).
    pub fn bytes_per_device(&self) -> usize {
        self.shards.first().map_or(0, |b| b.size_in_bytes())
    }
}

fn check_shard_dims(layout: &ShardLayout, shards: &[Buffer]) -> Result<()> {
    let want = layout.shard_dims();
    if let Some(b) = shards.iter().find(|b| b.dims() != want.as_slice()) {
        return Err(Error::InvalidArgument(format!(
            "shard of shape {:?} for tiles of {want:?} (logical {:?})",
            b.dims(),
            layout.dims
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_cover_each_tile_once() {
        // [4, 6] cut into 2 x 3 tiles of [2, 2] over 6 devices.
        let l = ShardLayout {
            dims: vec![4, 6],
            tiles: vec![2, 3],
            device_tiles: (0..6).map(|d| vec![d / 3, d % 3]).collect(),
        };
        l.check().unwrap();
        let mut hit = [0; 24];
        for d in 0..6 {
            let mut got = Vec::new();
            l.rows(d, |t, src, len| {
                got.push((t, src));
                for h in &mut hit[src..src + len] {
                    *h += 1;
                }
            });
            assert_eq!(got.len(), 2);
        }
        assert!(hit.iter().all(|&h| h == 1));
        let mut got = Vec::new();
        l.rows(5, |t, src, len| got.push((t, src, len)));
        assert_eq!(got, vec![(0, 2 * 6 + 4, 2), (2, 3 * 6 + 4, 2)]);
        let bad = ShardLayout {
            tiles: vec![3, 3],
            ..l
        };
        assert!(bad.check().is_err());
    }
}
