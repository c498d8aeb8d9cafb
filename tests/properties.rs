//! Readers of untrusted bytes never panic: the config parser (files and `--set` overrides),
//! checkpoint tensor files (safetensors), IDX image files and `metrics.jsonl` — on arbitrary
//! bytes and on inputs shaped like the real thing, so the checks past the header are reached.

use proptest::prelude::*;
use rxla::config::{apply_set, parse_section, TrainConfig};

const GOOD: &str = include_str!("bad_inputs/files/gpt.toml");

/// Parses and validates a config text the way `TrainConfig::load` does.
fn parse_config(text: &str, sets: &[String]) -> anyhow::Result<TrainConfig> {
    let mut table: toml::Table = text.parse()?;
    for s in sets {
        apply_set(&mut table, s)?;
    }
    let cfg: TrainConfig = parse_section(toml::Value::Table(table), "")?;
    cfg.validate()?;
    Ok(cfg)
}

/// Keys of the real config, to aim overrides where they are read.
const KEYS: &[&str] = &[
    "seed",
    "model.kind",
    "model.seq_len",
    "model.d_model",
    "data.dataset",
    "data.val_fraction",
    "data.max_eval_windows",
    "data.tokenizer",
    "train.batch_size",
    "train.steps",
    "train.log_every",
    "train.remat",
    "train.precision",
    "train.grad_accum",
    "train.peak_flops",
    "train.resume",
    "train.on_nonfinite",
    "train.early_stopping",
    "optimizer.kind",
    "optimizer.lr",
    "optimizer.clip_norm",
    "schedule.kind",
    "schedule.min_lr_ratio",
    "parallel.data",
    "parallel.tensor",
    "parallel.rules",
];

/// A safetensors file: an 8-byte little-endian header length, a JSON header, the data.
fn safetensors_bytes(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    b
}

fn read_tensor_file(bytes: &[u8]) -> anyhow::Result<Vec<train::checkpoint::NamedTensor>> {
    let dir = std::env::temp_dir().join(format!("rxla-prop-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let p = dir.join(format!("{:?}.safetensors", std::thread::current().id()));
    std::fs::write(&p, bytes)?;
    train::checkpoint::read_tensors(&p)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn config_text_never_panics(text in "\\PC{0,400}") {
        let _ = parse_config(&text, &[]);
    }

    #[test]
    fn config_overrides_never_panic(
        key in prop::sample::select(KEYS),
        junk_key in "[a-z._]{0,12}",
        value in prop_oneof![
            "-?[0-9]{1,25}",
            "-?[0-9]*\\.[0-9]*(e-?[0-9]{1,3})?",
            Just("nan".to_string()),
            Just("inf".to_string()),
            Just("-inf".to_string()),
            "\\PC{0,30}",
            "\\{[a-z_]{1,8}=[0-9a-z\"]{0,6}\\}",
            "\\[[0-9, ]{0,12}\\]",
        ],
    ) {
        let sets = vec![format!("{key}={value}"), format!("{junk_key}={value}")];
        let _ = parse_config(GOOD, &sets[..1]);
        let _ = parse_config(GOOD, &sets);
    }

    #[test]
    fn tensor_files_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = read_tensor_file(&bytes);
    }

    #[test]
    fn tensor_files_with_lying_headers_never_panic(
        dtype in prop::sample::select(&["F32", "F16", "BF16", "I64", "U8", "BOOL", "Q4"][..]),
        shape in prop::collection::vec(0u64..6, 0..4),
        start in 0u64..64,
        len in 0u64..64,
        data in prop::collection::vec(any::<u8>(), 0..96),
        huge in any::<bool>(),
    ) {
        let shape = if huge { vec![u64::MAX / 2, 4] } else { shape };
        let header = format!(
            r#"{{"w":{{"dtype":"{dtype}","shape":{shape:?},"data_offsets":[{start},{}]}}}}"#,
            start + len
        );
        let _ = read_tensor_file(&safetensors_bytes(&header, &data));
    }

    #[test]
    fn idx_files_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..64),
        rank in 0u8..5,
        dims in prop::collection::vec(any::<u32>(), 0..5),
        data in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let _ = data::mnist::parse_idx(&bytes);
        // A real magic and rank, then dims that may overflow or disagree with the data.
        let mut f = vec![0, 0, 8, rank];
        for d in &dims {
            f.extend_from_slice(&(d % 9).to_be_bytes());
        }
        f.extend_from_slice(&data);
        let _ = data::mnist::parse_idx(&f);
        let mut g = vec![0, 0, 8, rank];
        for d in &dims {
            g.extend_from_slice(&d.to_be_bytes());
        }
        let _ = data::mnist::parse_idx(&g);
    }
}

/// What the properties rest on: the good config parses, and real-looking files are read.
#[test]
fn the_generators_reach_the_readers() {
    parse_config(GOOD, &[]).unwrap();
    let header = r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    let t = read_tensor_file(&safetensors_bytes(header, &[0, 0, 128, 63, 0, 0, 0, 64])).unwrap();
    assert_eq!(t[0].data, vec![1.0, 2.0]);
    let (dims, data) = data::mnist::parse_idx(&[0, 0, 8, 1, 0, 0, 0, 2, 7, 9]).unwrap();
    assert_eq!((dims, data), (vec![2], &[7u8, 9][..]));
}
