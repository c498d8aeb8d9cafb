//! One mesh over the devices of several processes: which shards each process feeds and reads.
//! The CPU plugins have no cross-process collectives, so a job of several processes cannot
//! run here; instead each process's view is simulated on one CPU client (its 4 devices stand
//! for the 4 local devices of whichever process is being checked), and the shards every
//! process would feed must put together the single-process arrays. With libtpu in the cache,
//! the same selection is checked against a `v5e:4x4` slice (16 chips on 4 hosts).

use data::HostArray;
use models::gpt::{Gpt, GptConfig};
use runtime::{GlobalDevices, ShardLayout, ShardedArray};
use rxla::config::{OptimizerConfig, OptimizerKind, ScheduleConfig};
use train::checkpoint::sharded::owned_tiles;
use train::optim::Optimizer;
use train::parallel::{ParallelConfig, Plan};
use train::step::{train_step, Feed, Passes, StepProgram};

const T: usize = 8;

fn gpt() -> Gpt {
    Gpt(GptConfig {
        vocab_size: 64,
        seq_len: T,
        d_model: 32,
        n_layers: 2,
        n_heads: 4,
        dropout: 0.0,
        tied_head: true,
        attention: Default::default(),
        reversible: false,
        ff_chunks: 1,
    })
}

fn program(parallel: ParallelConfig, batch: usize) -> StepProgram {
    let opt = Optimizer {
        opt: OptimizerConfig {
            kind: OptimizerKind::Adamw,
            lr: 1e-2,
            ..Default::default()
        },
        schedule: ScheduleConfig::default(),
        total_steps: 10,
    };
    let passes = Passes {
        parallel: Plan::from_config(&parallel).unwrap(),
        ..Default::default()
    };
    train_step(&gpt(), &opt, batch, &passes, None).unwrap().0
}

/// Process `p`'s view of a job of `procs` processes x `per` devices whose ids interleave
/// across processes (id k on process k % procs), as plugins may number them.
fn view(procs: usize, per: usize, p: usize) -> GlobalDevices {
    let mut local = 0;
    let all: Vec<(i64, i32, Option<usize>)> = (0..procs * per)
        .map(|k| {
            let q = k % procs;
            let l = (q == p).then(|| {
                local += 1;
                local - 1
            });
            (k as i64, q as i32, l)
        })
        .collect();
    GlobalDevices::new(&all, p as i32, procs * per).unwrap()
}

/// The process's tiles of `a` pasted into `out`; returns how many elements they hold.
fn paste_local(a: &ShardedArray, out: &mut [f32]) -> usize {
    let mut n = 0;
    for (pos, tile) in a.local_tiles::<f32>().unwrap() {
        n += tile.len();
        a.layout.paste(pos, &tile, out);
    }
    n
}

fn data_arg(prog: &StepProgram) -> usize {
    prog.feeds.iter().position(|f| *f == Feed::Data(0)).unwrap()
}

/// Parameters and a global batch: what 2 processes x 4 devices feed puts together the
/// single-process arrays, each process uploading only its own tiles and rows.
fn check_job(parallel: ParallelConfig, expect_split_params: bool) {
    let client = runtime::provision::cpu_client(4).unwrap();
    let (procs, per, batch) = (2, 4, 16);
    let prog = program(parallel, batch);
    assert_eq!(prog.num_devices(), procs * per);
    for (i, p) in prog.params.iter().enumerate() {
        let full = p.initial_values(7);
        let layout = prog.param_layout(i);
        let mut got = vec![f32::NAN; full.len()];
        let mut held = 0;
        for q in 0..procs {
            let g = view(procs, per, q);
            let a = ShardedArray::from_host_local(&client, &full, &layout, &g).unwrap();
            assert_eq!(a.shards().len(), per, "{}", p.name);
            assert_eq!(a.positions(), &g.process_positions(q as i32)[..]);
            held += paste_local(&a, &mut got);
            let split = layout.tiles.iter().product::<i64>() > per as i64;
            if split {
                // Some tiles live only on the other process: no gather of them here.
                let e = a.to_host::<f32>().unwrap_err().to_string();
                assert!(e.contains("other processes"), "{e}");
            } else {
                assert_eq!(a.to_host::<f32>().unwrap(), full, "{}", p.name);
            }
        }
        assert_eq!(got, full, "{}: the processes' tiles", p.name);
        if expect_split_params && p.count() % (procs * per) == 0 && layout.tiles[0] > 1 {
            // Split over all 8 devices: each element is on exactly one process.
            assert_eq!(held, full.len(), "{}", p.name);
        }
    }
    // The batch: process q uploads only its rows (data::process_rows), and the tiles of its
    // devices are exactly those rows.
    let a = data_arg(&prog);
    let dims = prog.data_types[0].dims().to_vec();
    let layout = prog.arg_layout(a, &dims);
    let x: Vec<f32> = (0..dims.iter().product::<i64>())
        .map(|v| v as f32)
        .collect();
    let row = dims[1..].iter().product::<i64>() as usize;
    let mut got = vec![f32::NAN; x.len()];
    for q in 0..procs {
        let g = view(procs, per, q);
        let rows = data::process_rows(batch, q, procs).unwrap();
        let part = HostArray::F32 {
            data: x.clone(),
            dims: dims.clone(),
        }
        .rows(rows.clone());
        let HostArray::F32 { data: part, .. } = part else {
            unreachable!()
        };
        let r = rows.start as i64..rows.end as i64;
        let sa = ShardedArray::from_host_rows(&client, &part, r.clone(), &layout, &g).unwrap();
        assert_eq!(paste_local(&sa, &mut got), part.len());
        // Another process's rows are not this process's to feed.
        let other = data::process_rows(batch, 1 - q, procs).unwrap();
        let o = other.start as i64..other.end as i64;
        let e = ShardedArray::from_host_rows(
            &client,
            &x[other.start * row..other.end * row],
            o,
            &layout,
            &g,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("outside the given rows"), "{e}");
    }
    assert_eq!(got, x);
}

#[test]
fn fsdp_over_two_processes_feeds_each_tile_once() {
    check_job(
        ParallelConfig {
            data: 8,
            fsdp: true,
            ..Default::default()
        },
        true,
    );
}

#[test]
fn tensor_parallel_within_and_data_across_processes() {
    check_job(
        ParallelConfig {
            data: 4,
            tensor: 2,
            ..Default::default()
        },
        false,
    );
}

#[test]
fn the_checkpoint_owners_are_the_processes_holding_the_tiles() {
    let prog = program(
        ParallelConfig {
            data: 4,
            tensor: 2,
            ..Default::default()
        },
        8,
    );
    let views: Vec<GlobalDevices> = (0..2).map(|q| view(2, 4, q)).collect();
    let proc_of = views[0].process_of_position();
    for i in 0..prog.params.len() {
        let layout = prog.param_layout(i);
        let mut all: Vec<Vec<i64>> = Vec::new();
        for (q, g) in views.iter().enumerate() {
            let mine: Vec<Vec<i64>> = layout.local_tiles(g).into_iter().map(|t| t.1).collect();
            let owned = owned_tiles(&layout, &proc_of, q as u32);
            // A process writes only tiles it holds, each tile is written once.
            assert!(
                owned.iter().all(|t| mine.contains(t)),
                "{owned:?} vs {mine:?}"
            );
            all.extend(owned);
        }
        let mut distinct = layout.device_tiles.clone();
        distinct.sort();
        distinct.dedup();
        all.sort();
        assert_eq!(all, distinct, "{}", prog.params[i].name);
    }
}

fn libtpu_available() -> bool {
    runtime::provision::cached_libtpu().is_some()
        || std::env::var("RXLA_TPU_TESTS").is_ok_and(|v| v == "1")
}

/// The v5e:4x4 slice as libtpu describes it: each host's devices are its 4 chips, and the
/// tiles and batch rows every host feeds under fsdp over 16 are its own.
#[test]
fn v5e_4x4_hosts_feed_their_own_chips() {
    if !libtpu_available() {
        eprintln!("skipped: libtpu is not cached (set RXLA_TPU_TESTS=1 to fetch it)");
        return;
    }
    let plugin =
        runtime::provision::load_plugin(&runtime::provision::tpu_plugin_path().unwrap()).unwrap();
    let topo =
        runtime::Topology::create(&plugin, "v5e:4x4", &runtime::CreateOptions::new()).unwrap();
    assert_eq!(topo.devices().len(), 16);
    assert_eq!(topo.num_processes(), 4);
    let batch = 32;
    let prog = program(
        ParallelConfig {
            data: 16,
            fsdp: true,
            ..Default::default()
        },
        batch,
    );
    let a = data_arg(&prog);
    let dims = prog.data_types[0].dims().to_vec();
    let batch_layout: ShardLayout = prog.arg_layout(a, &dims);
    let views: Vec<GlobalDevices> = (0..4)
        .map(|p| GlobalDevices::from_topology(&topo, p, 16).unwrap())
        .collect();
    let proc_of = views[0].process_of_position();
    let mut ids = Vec::new();
    for (p, g) in views.iter().enumerate() {
        let mut want: Vec<i64> = topo
            .devices()
            .iter()
            .filter(|d| d.process_index == p as i32)
            .map(|d| d.id as i64)
            .collect();
        want.sort();
        let got = g.process_device_ids(p as i32);
        eprintln!("process {p}: devices {got:?}");
        assert_eq!(got, want);
        assert_eq!(g.local().len(), 4);
        ids.extend(got);
        // Its batch tiles are its rows of the global batch.
        let rows = data::process_rows(batch, p, 4).unwrap();
        for (pos, _) in g.local() {
            let (lo, hi) = batch_layout.tile_rows(pos);
            assert!(rows.start as i64 <= lo && hi <= rows.end as i64, "{pos}");
        }
    }
    // One program over all 16 chips, compiled for their global ids.
    let o = views[0].compile_options();
    assert_eq!(o.num_partitions, 16);
    assert_eq!(o.device_assignment.as_ref().unwrap()[0], ids);
    // Every parameter's tiles are written by the hosts holding them, each once.
    for i in 0..prog.params.len() {
        let layout = prog.param_layout(i);
        let mut all = Vec::new();
        for (p, g) in views.iter().enumerate() {
            let mine: Vec<Vec<i64>> = layout.local_tiles(g).into_iter().map(|t| t.1).collect();
            let owned = owned_tiles(&layout, &proc_of, p as u32);
            assert!(owned.iter().all(|t| mine.contains(t)));
            all.extend(owned);
        }
        all.sort();
        let mut distinct = layout.device_tiles.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(all, distinct);
    }
}
