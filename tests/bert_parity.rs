//! all-MiniLM-L6-v2 through rxla equals HF transformers' `BertModel`: the fixture
//! (tests/fixtures/minilm_reference.json, written by scripts/bert_reference.py) holds the
//! token ids, the first dims of every token's last hidden state and the mean-pooled,
//! normalized sentence embeddings of four texts (one a pair, three padded).

mod common;

use rxla::pretrained::bert::{model_dir, pool, Encoder};
use serde_json::Value;

fn fixture() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/minilm_reference.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ints(v: &Value) -> Vec<Vec<i32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap() as i32)
                .collect()
        })
        .collect()
}

fn floats(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(a) => a.iter().flat_map(floats).collect(),
        x => vec![x.as_f64().unwrap() as f32],
    }
}

#[test]
fn wordpiece_reproduces_the_reference_token_ids() {
    let dir = model_dir("all-minilm-l6-v2").unwrap();
    let wp = data::wordpiece::WordPiece::load(&dir.join("tokenizer.json")).unwrap();
    let f = fixture();
    let (ids, segs) = (ints(&f["input_ids"]), ints(&f["token_type_ids"]));
    for (i, t) in f["texts"].as_array().unwrap().iter().enumerate() {
        let t: Vec<&str> = t
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        let e = wp.encode(t[0], t.get(1).copied()).unwrap();
        let n = e.ids.len();
        let got: Vec<i32> = e.ids.iter().map(|&x| x as i32).collect();
        assert_eq!(got, ids[i][..n], "ids of {t:?}");
        assert!(
            ids[i][n..].iter().all(|&x| x == 0),
            "only padding after {t:?}"
        );
        let got: Vec<i32> = e.segments.iter().map(|&x| x as i32).collect();
        assert_eq!(got, segs[i][..n], "segments of {t:?}");
    }
}

#[test]
fn minilm_hidden_states_and_embeddings_match_transformers() {
    let f = fixture();
    let (ids, segs, mask) = (
        ints(&f["input_ids"]),
        ints(&f["token_type_ids"]),
        ints(&f["attention_mask"]),
    );
    let (b, t) = (ids.len(), ids[0].len());
    let client = runtime::provision::cpu_client(1).unwrap();
    let dir = model_dir("all-minilm-l6-v2").unwrap();
    let enc = Encoder::load(&client, &dir, b, t).unwrap();
    // Every encoder tensor comes from the file; position_ids is dropped, nothing unused.
    assert_eq!(enc.report.loaded.len(), 103, "{}", enc.report);
    assert!(
        enc.report.missing.is_empty() && enc.report.unexpected.is_empty(),
        "{}",
        enc.report
    );
    let hidden = enc
        .hidden(&ids.concat(), &segs.concat(), &mask.concat())
        .unwrap();
    let d = enc.config.hidden_size;
    let k = f["hidden_dims"].as_u64().unwrap() as usize;
    let want = floats(&f["last_hidden_first_dims"]);
    let mut worst = 0f32;
    for (tok, w) in hidden.chunks(d).zip(want.chunks(k)) {
        for (a, b) in tok[..k].iter().zip(w) {
            worst = worst.max((a - b).abs());
        }
    }
    eprintln!(
        "max |hidden - transformers| over {} tokens: {worst:e}",
        b * t
    );
    assert!(worst <= 1e-4, "max abs difference {worst}");
    let want = floats(&f["mean_pooled_normalized"]);
    for (i, w) in want.chunks(d).enumerate() {
        let e = pool(&hidden[i * t * d..(i + 1) * t * d], &mask[i], d, true, true);
        let cos: f32 = e.iter().zip(w).map(|(a, b)| a * b).sum();
        let wn: f32 = w.iter().map(|x| x * x).sum::<f32>().sqrt();
        eprintln!("text {i}: cosine {cos:.7} (reference norm {wn:.6})");
        assert!(cos / wn >= 0.9999, "text {i}: cosine {}", cos / wn);
    }
}

fn embed_lines(args: &[&str]) -> Vec<Value> {
    let o = common::rxla_ok(args);
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn rxla_embed_prints_the_reference_embeddings_and_cls_states() {
    let f = fixture();
    let ids = ints(&f["input_ids"]);
    let d = 384;
    let emb = floats(&f["mean_pooled_normalized"]);
    let cls = floats(&f["last_hidden_first_dims"]);
    let (t, k) = (ids[0].len(), f["hidden_dims"].as_u64().unwrap() as usize);
    // Texts 2 and 1, in another order and padded to another length than the fixture's batch.
    let texts = ["Call me Ishmael.", "A man is playing a guitar."];
    let args = [
        "embed",
        "--pretrained",
        "all-minilm-l6-v2",
        "--text",
        texts[0],
        "--text",
        texts[1],
    ];
    let rows = embed_lines(&args);
    assert_eq!(rows.len(), 2);
    for (row, i) in rows.iter().zip([2usize, 1]) {
        assert_eq!(row["text"], texts[if i == 2 { 0 } else { 1 }]);
        let got = ints(&Value::Array(vec![row["token_ids"].clone()])).remove(0);
        assert_eq!(got, ids[i][..got.len()]);
        let e = floats(&row["embedding"]);
        let cos: f32 = e
            .iter()
            .zip(&emb[i * d..(i + 1) * d])
            .map(|(a, b)| a * b)
            .sum();
        assert!(cos >= 0.9999, "text {i}: cosine {cos}");
    }
    // `[CLS]` pooling, not normalized: the CLS token's last hidden state itself.
    let mut a = args.to_vec();
    a.extend(["--pooling", "cls", "--normalize", "false"]);
    let rows = embed_lines(&a);
    for (row, i) in rows.iter().zip([2usize, 1]) {
        let e = floats(&row["embedding"]);
        let want = &cls[i * t * k..i * t * k + k];
        let worst = e[..k]
            .iter()
            .zip(want)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 1e-4, "text {i}: CLS differs by {worst}");
    }
    let e = common::rxla_err(&["embed", "--pretrained", "bert-huge", "--text", "x"]);
    assert!(
        e.contains("bert-huge") && e.contains("all-minilm-l6-v2"),
        "{e}"
    );
}
