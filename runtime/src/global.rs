//! One mesh over the devices of every process of a job. The program is compiled for the
//! global device assignment (device ids across processes); each process feeds and reads only
//! the shards of its own (addressable) devices.
//!
//! Mesh order is process-major: the devices of process 0 (by id), then those of process 1,
//! ... So the data axis, outermost in the mesh, gives each process a contiguous block of the
//! global batch: the rows `data::process_rows` hands it.

use crate::client::Client;
use crate::error::{Error, Result};
use crate::executable::CompileOptions;
use crate::topology::Topology;

/// One device of the global mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshDevice {
    /// The plugin's global device id (what a device assignment names).
    pub id: i64,
    pub process_index: i32,
    /// Its index among this process's addressable devices (the `device` of
    /// `Client::buffer_from_host`); `None` on another process's device.
    pub local: Option<usize>,
}

/// The devices of a program over all processes, in mesh order, seen from one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalDevices {
    devices: Vec<MeshDevice>,
    process: i32,
}

impl GlobalDevices {
    /// From `(id, process_index, local index)` of every device of the job; the first `n`
    /// devices in mesh order (process-major, then id) make the mesh. Every process must give
    /// the mesh the same number of devices.
    pub fn new(all: &[(i64, i32, Option<usize>)], process: i32, n: usize) -> Result<Self> {
        let mut ids: Vec<i64> = all.iter().map(|d| d.0).collect();
        ids.sort();
        if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::InvalidArgument(format!(
                "device id {} is listed twice",
                w[0]
            )));
        }
        let mut all = all.to_vec();
        all.sort_by_key(|&(id, p, _)| (p, id));
        if n == 0 || n > all.len() {
            return Err(Error::InvalidArgument(format!(
                "a mesh of {n} device(s) over a job of {} device(s)",
                all.len()
            )));
        }
        let devices: Vec<MeshDevice> = all[..n]
            .iter()
            .map(|&(id, process_index, local)| MeshDevice {
                id,
                process_index,
                local,
            })
            .collect();
        let g = GlobalDevices { devices, process };
        let counts: Vec<(i32, usize)> = g
            .processes()
            .into_iter()
            .map(|p| (p, g.process_positions(p).len()))
            .collect();
        if counts.iter().any(|c| c.1 != counts[0].1) {
            return Err(Error::InvalidArgument(format!(
                "a mesh of {n} device(s) gives the processes unequal shares \
                 (process: devices {counts:?}): use a multiple of the devices per process"
            )));
        }
        if let Some(d) = g
            .devices
            .iter()
            .find(|d| (d.process_index == process) != d.local.is_some())
        {
            return Err(Error::InvalidArgument(format!(
                "device {} of process {} is {} from process {process}",
                d.id,
                d.process_index,
                if d.local.is_some() {
                    "addressable"
                } else {
                    "not addressable"
                }
            )));
        }
        Ok(g)
    }

    /// The client's devices (all processes'), as process `client.process_index()` sees them.
    pub fn from_client(client: &Client, n: usize) -> Result<Self> {
        let local: Vec<*mut crate::ffi::PJRT_Device> =
            client.addressable_devices().iter().map(|d| d.raw).collect();
        let all: Vec<(i64, i32, Option<usize>)> = client
            .devices()
            .iter()
            .map(|d| {
                (
                    d.id as i64,
                    d.process_index,
                    local.iter().position(|&r| r == d.raw),
                )
            })
            .collect();
        GlobalDevices::new(&all, client.process_index(), n)
    }

    /// A topology's devices as process `process` of it would see them (its devices local, in
    /// mesh order), e.g. to check what each host of a TPU slice feeds before running there.
    pub fn from_topology(topo: &Topology, process: i32, n: usize) -> Result<Self> {
        let mut all: Vec<(i64, i32)> = topo
            .devices()
            .iter()
            .map(|d| (d.id as i64, d.process_index))
            .collect();
        all.sort_by_key(|&(id, p)| (p, id));
        let mut k = 0;
        let all: Vec<(i64, i32, Option<usize>)> = all
            .into_iter()
            .map(|(id, p)| {
                let local = (p == process).then(|| {
                    k += 1;
                    k - 1
                });
                (id, p, local)
            })
            .collect();
        GlobalDevices::new(&all, process, n)
    }

    pub fn num_devices(&self) -> usize {
        self.devices.len()
    }

    pub fn devices(&self) -> &[MeshDevice] {
        &self.devices
    }

    /// The process this view is from.
    pub fn process(&self) -> i32 {
        self.process
    }

    /// Distinct process indices, ascending.
    pub fn processes(&self) -> Vec<i32> {
        let mut p: Vec<i32> = self.devices.iter().map(|d| d.process_index).collect();
        p.dedup();
        p
    }

    pub fn num_processes(&self) -> usize {
        self.processes().len()
    }

    /// Whether every device of the mesh is this process's.
    pub fn fully_addressable(&self) -> bool {
        self.devices.iter().all(|d| d.local.is_some())
    }

    /// Mesh positions of process `p`'s devices (contiguous).
    pub fn process_positions(&self, p: i32) -> Vec<usize> {
        (0..self.devices.len())
            .filter(|&k| self.devices[k].process_index == p)
            .collect()
    }

    /// Device ids of process `p`'s devices, in mesh order.
    pub fn process_device_ids(&self, p: i32) -> Vec<i64> {
        self.devices
            .iter()
            .filter(|d| d.process_index == p)
            .map(|d| d.id)
            .collect()
    }

    /// This process's `(mesh position, local device index)` pairs, in mesh order (= the
    /// order the executable takes its per-device arguments).
    pub fn local(&self) -> Vec<(usize, usize)> {
        self.devices
            .iter()
            .enumerate()
            .filter_map(|(k, d)| d.local.map(|l| (k, l)))
            .collect()
    }

    /// The process of each mesh position.
    pub fn process_of_position(&self) -> Vec<u32> {
        self.devices
            .iter()
            .map(|d| d.process_index as u32)
            .collect()
    }

    /// SPMD options for one program over the whole mesh: one replica, a partition per
    /// device, assigned to the devices' global ids in mesh order.
    pub fn compile_options(&self) -> CompileOptions {
        let mut o = CompileOptions::spmd(self.devices.len());
        o.device_assignment = Some(vec![self.devices.iter().map(|d| d.id).collect()]);
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 4 hosts x 4 chips with ids interleaved across hosts, as a plugin may number them.
    fn job(process: i32) -> Vec<(i64, i32, Option<usize>)> {
        let mut local = 0;
        (0..16)
            .map(|id| {
                let p = (id % 4) as i32;
                let l = (p == process).then(|| {
                    local += 1;
                    local - 1
                });
                (id, p, l)
            })
            .collect()
    }

    #[test]
    fn mesh_is_process_major_and_each_process_sees_its_own_devices() {
        for p in 0..4 {
            let g = GlobalDevices::new(&job(p), p, 16).unwrap();
            assert_eq!(g.num_processes(), 4);
            assert!(!g.fully_addressable());
            assert_eq!(
                g.process_positions(p),
                (4 * p as usize..4 * p as usize + 4).collect::<Vec<_>>()
            );
            assert_eq!(
                g.process_device_ids(p),
                vec![p as i64, p as i64 + 4, p as i64 + 8, p as i64 + 12]
            );
            let local = g.local();
            assert_eq!(local.len(), 4);
            assert_eq!(
                local.iter().map(|l| l.1).collect::<Vec<_>>(),
                vec![0, 1, 2, 3]
            );
            let o = g.compile_options();
            let ids = &o.device_assignment.as_ref().unwrap()[0];
            assert_eq!(ids[..5], [0, 4, 8, 12, 1]);
            assert_eq!(o.num_partitions, 16);
        }
        // Half the job: 2 hosts' devices.
        let g = GlobalDevices::new(&job(1), 1, 8).unwrap();
        assert_eq!(g.processes(), vec![0, 1]);
        // A process outside the mesh feeds nothing.
        assert!(GlobalDevices::new(&job(3), 3, 8)
            .unwrap()
            .local()
            .is_empty());
    }

    #[test]
    fn bad_meshes_are_refused_naming_why() {
        let e = GlobalDevices::new(&job(0), 0, 6).unwrap_err().to_string();
        assert!(e.contains("unequal shares"), "{e}");
        let e = GlobalDevices::new(&job(0), 0, 17).unwrap_err().to_string();
        assert!(e.contains("17"), "{e}");
        let mut twice = job(0);
        twice[1].0 = 0;
        let e = GlobalDevices::new(&twice, 0, 16).unwrap_err().to_string();
        assert!(e.contains("twice"), "{e}");
        // A local device claimed by another process.
        let mut wrong = job(0);
        wrong[1].2 = Some(9);
        let e = GlobalDevices::new(&wrong, 0, 16).unwrap_err().to_string();
        assert!(e.contains("addressable"), "{e}");
    }
}
