//! Loading weights by name: HF-style files (written here with the `safetensors` crate, as
//! torch would) mapped into our GPT through a name map with transforms, checked element by
//! element; reports and partial loads; checkpoints as sources; clear errors. The GPT tests
//! put the loaded weights on a real PJRT CPU client and train a step from them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use models::gpt::{Gpt, GptConfig};
use safetensors::tensor::{Dtype as St, TensorView};
use train::checkpoint::{self, CheckpointState};
use train::state::{compile_program, run_train_step, TrainState};
use train::step::{train_step, StepProgram};
use train::tensor::{Dtype, Tensor, TensorData};
use train::weights::{
    load_named, targets, LoadOptions, Loaded, MisShaped, Rule, Target, Transform, Unexpected,
    WeightMap,
};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rxla-weights-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Distinct values per tensor, multiples of 1/8 in [-6, 6]: exact in f16 and bf16.
fn values(salt: usize, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * 7 + salt * 13) % 97) as f32 - 48.0) * 0.125)
        .collect()
}

/// A file as torch's `save_file` writes one: raw little-endian bytes, `format: pt`.
struct HfFile(Vec<(String, St, Vec<usize>, Vec<u8>)>);

impl HfFile {
    fn f16(mut self, name: &str, shape: &[usize], v: &[f32]) -> HfFile {
        let b = v
            .iter()
            .flat_map(|&x| f16::from_f32(x).to_le_bytes())
            .collect();
        self.0.push((name.into(), St::F16, shape.to_vec(), b));
        self
    }
    fn f32(mut self, name: &str, shape: &[usize], v: &[f32]) -> HfFile {
        let b = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.0.push((name.into(), St::F32, shape.to_vec(), b));
        self
    }
    fn raw(mut self, name: &str, dtype: St, shape: &[usize], b: Vec<u8>) -> HfFile {
        self.0.push((name.into(), dtype, shape.to_vec(), b));
        self
    }
    fn write(&self, path: &Path) {
        let views: Vec<(String, TensorView)> = self
            .0
            .iter()
            .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        let meta = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
        std::fs::write(path, safetensors::serialize(views, &meta).unwrap()).unwrap();
    }
}

const V: usize = 11;
const T: usize = 5;
const D: usize = 8;
const H: usize = 2;
const HD: usize = D / H;
const L: usize = 2;

fn gpt(tied_head: bool) -> Gpt {
    Gpt(GptConfig {
        vocab_size: V,
        seq_len: T,
        d_model: D,
        n_layers: L,
        n_heads: H,
        dropout: 0.0,
        tied_head,
        attention: Default::default(),
        reversible: false,
        ff_chunks: 1,
    })
}

fn program(model: &Gpt) -> StepProgram {
    let opt = train::optim::Optimizer {
        opt: Default::default(),
        schedule: Default::default(),
        total_steps: 10,
    };
    train_step(model, &opt, 2, &Default::default(), None)
        .unwrap()
        .0
}

/// HF GPT-2 names (`GPT2Model`; Conv1D weights are stored (in, out), as ours) -> ours, as a
/// model family's map is written.
fn gpt2_map() -> WeightMap {
    let to_target = |src: &str, dst: &str| Rule::new(src, dst).then(Transform::ReshapeToTarget);
    WeightMap::new()
        .drop("h.{i}.attn.bias") // causal-mask buffers, not weights
        .drop("h.{i}.attn.masked_bias")
        .rename("wte.weight", "wte")
        .rename("wpe.weight", "wpe")
        .rename("h.{i}.ln_{n}.weight", "h{i}.ln{n}.g")
        .rename("h.{i}.ln_{n}.bias", "h{i}.ln{n}.b")
        // (D, 3D) -> (D, 3, H, hd): HF's columns are [q | k | v], each head-major.
        .rule(to_target("h.{i}.attn.c_attn.weight", "h{i}.attn.qkv.w"))
        .rule(to_target("h.{i}.attn.c_attn.bias", "h{i}.attn.qkv.b"))
        // attn.c_proj, mlp.c_fc, mlp.c_proj
        .rename("h.{i}.{m}.c_{l}.weight", "h{i}.{m}.{l}.w")
        .rename("h.{i}.{m}.c_{l}.bias", "h{i}.{m}.{l}.b")
        .rename("ln_f.weight", "ln_f.g")
        .rename("ln_f.bias", "ln_f.b")
}

/// (our name, HF name) of every GPT parameter, written out by hand.
fn hf_names() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = [
        ("wte", "wte.weight"),
        ("wpe", "wpe.weight"),
        ("ln_f.g", "ln_f.weight"),
        ("ln_f.b", "ln_f.bias"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    for i in 0..L {
        for (a, b) in [
            ("ln1.g", "ln_1.weight"),
            ("ln1.b", "ln_1.bias"),
            ("attn.qkv.w", "attn.c_attn.weight"),
            ("attn.qkv.b", "attn.c_attn.bias"),
            ("attn.proj.w", "attn.c_proj.weight"),
            ("attn.proj.b", "attn.c_proj.bias"),
            ("ln2.g", "ln_2.weight"),
            ("ln2.b", "ln_2.bias"),
            ("mlp.fc.w", "mlp.c_fc.weight"),
            ("mlp.fc.b", "mlp.c_fc.bias"),
            ("mlp.proj.w", "mlp.c_proj.weight"),
            ("mlp.proj.b", "mlp.c_proj.bias"),
        ] {
            out.push((format!("h{i}.{a}"), format!("h.{i}.{b}")));
        }
    }
    out
}

/// Writes an HF GPT-2 file for the tiny config in f16 (without the tensors named in
/// `skip`), plus the f32 mask buffers; returns the values by HF name.
fn hf_gpt2(path: &Path, skip: &[&str]) -> HashMap<String, Vec<f32>> {
    let prog = program(&gpt(true));
    let mut file = HfFile(Vec::new());
    let mut vals = HashMap::new();
    for (salt, (ours, hf)) in hf_names().into_iter().enumerate() {
        let p = prog.params.iter().find(|p| p.name == ours).unwrap();
        let shape: Vec<usize> = match hf.as_str() {
            s if s.ends_with("c_attn.weight") => vec![D, 3 * D],
            s if s.ends_with("c_attn.bias") => vec![3 * D],
            _ => p.ty.dims().iter().map(|&d| d as usize).collect(),
        };
        if skip.contains(&hf.as_str()) {
            continue;
        }
        let v = values(salt, shape.iter().product());
        file = file.f16(&hf, &shape, &v);
        vals.insert(hf, v);
    }
    for i in 0..L {
        let mask: Vec<f32> = (0..T * T)
            .map(|k| ((k % T) <= (k / T)) as u8 as f32)
            .collect();
        file = file
            .f32(&format!("h.{i}.attn.bias"), &[1, 1, T, T], &mask)
            .f32(&format!("h.{i}.attn.masked_bias"), &[], &[-1e4]);
    }
    file.write(path);
    vals
}

fn values_of(l: &Loaded, prog: &StepProgram, name: &str) -> Vec<f32> {
    let i = prog.params.iter().position(|p| p.name == name).unwrap();
    l.tensors[i].as_ref().unwrap().data.to_f32()
}

fn host_params(st: &TrainState) -> Vec<Vec<f32>> {
    st.params
        .iter()
        .map(|p| p.to_host::<f32>().unwrap())
        .collect()
}

#[test]
fn hf_gpt2_file_fills_our_gpt_element_by_element_and_trains_from_it() {
    let dir = tmp("gpt2");
    let path = dir.join("model.safetensors");
    let hf = hf_gpt2(&path, &[]);
    let prog = program(&gpt(true));
    let want = targets(&prog.params).unwrap();
    let l = load_named(&[&path], &want, &gpt2_map(), &LoadOptions::default()).unwrap();
    let r = &l.report;
    let n = prog.params.len();
    assert_eq!(n, 4 + 12 * L);
    assert_eq!(r.loaded.len(), n);
    assert!(r.missing.is_empty() && r.mis_shaped.is_empty() && r.unexpected.is_empty());
    assert!(r.left_at_init.is_empty());
    assert_eq!(r.dropped.len(), 2 * L);
    assert_eq!(r.widened.len(), n);
    assert!(r
        .widened
        .iter()
        .all(|w| (w.1, w.2) == (Dtype::F16, Dtype::F32)));
    let text = r.to_string();
    assert!(
        text.starts_with(&format!(
            "loaded {n} of {n} model tensors from {}",
            path.display()
        )) && text.contains("widened exactly: f16 -> f32")
            && text.contains("dropped by the map (4): `h.0.attn.bias`"),
        "{text}"
    );
    // The fused qkv: ours[i, s, h, d] = HF[i, s * D + h * hd + d].
    for layer in 0..L {
        let w = values_of(&l, &prog, &format!("h{layer}.attn.qkv.w"));
        let src = &hf[&format!("h.{layer}.attn.c_attn.weight")];
        for i in 0..D {
            for s in 0..3 {
                for h in 0..H {
                    for d in 0..HD {
                        let ours = w[((i * 3 + s) * H + h) * HD + d];
                        assert_eq!(ours, src[i * 3 * D + s * D + h * HD + d], "{i} {s} {h} {d}");
                    }
                }
            }
        }
        let b = values_of(&l, &prog, &format!("h{layer}.attn.qkv.b"));
        assert_eq!(&b, &hf[&format!("h.{layer}.attn.c_attn.bias")]);
    }
    for (ours, name) in hf_names() {
        assert_eq!(values_of(&l, &prog, &ours), hf[&name], "{ours} from {name}");
    }

    // On device: the loaded values, zero optimizer state, and a step trains from them.
    let client = runtime::provision::cpu_client(1).unwrap();
    let c = compile_program(&client, prog).unwrap();
    let mut st = TrainState::init_from(&client, &c.prog, 4, &l.tensors).unwrap();
    let loaded: Vec<Vec<f32>> = l
        .tensors
        .iter()
        .map(|t| t.as_ref().unwrap().data.to_f32())
        .collect();
    assert_eq!(host_params(&st), loaded);
    assert!(st
        .state
        .iter()
        .all(|s| s.to_host::<f32>().unwrap().iter().all(|&x| x == 0.0)));
    assert_eq!(st.step, 0);
    let tokens: Vec<i32> = (0..2 * T as i32).map(|i| i % V as i32).collect();
    let batch = vec![
        data::HostArray::I32 {
            data: tokens.clone(),
            dims: vec![2, T as i64],
        },
        data::HostArray::I32 {
            data: tokens.iter().map(|t| (t + 1) % V as i32).collect(),
            dims: vec![2, T as i64],
        },
    ];
    let (loss, _, _) = run_train_step(&client, &c, &mut st, &batch).unwrap();
    let mut fresh = TrainState::init(&client, &c.prog, 4).unwrap();
    let (fresh_loss, _, _) = run_train_step(&client, &c, &mut fresh, &batch).unwrap();
    assert!(
        loss.is_finite() && loss != fresh_loss,
        "{loss} vs {fresh_loss}"
    );
    assert_ne!(
        host_params(&st),
        loaded,
        "the step updated the loaded weights"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn split_qkv_transpose_and_cast_move_each_element() {
    let dir = tmp("split");
    let path = dir.join("parts.safetensors");
    let c_attn = values(1, D * 3 * D);
    let c_bias = values(2, 3 * D);
    let lin = values(3, 6 * D); // torch Linear: (out 6, in D)
    let emb = values(4, 4 * D);
    HfFile(Vec::new())
        .f16("c_attn.weight", &[D, 3 * D], &c_attn)
        .f16("c_attn.bias", &[3 * D], &c_bias)
        .f16("lin.weight", &[6, D], &lin)
        .f16("emb.weight", &[4, D], &emb)
        .write(&path);
    let (d, h, hd) = (D as i64, H as i64, HD as i64);
    let mut want = vec![];
    for x in ["q", "k", "v"] {
        want.push(Target::f32(&format!("{x}.w"), &[d, h, hd]));
        want.push(Target::f32(&format!("{x}.b"), &[h, hd]));
    }
    want.push(Target::f32("lin.w", &[d, 6]));
    want.push(Target {
        name: "emb".into(),
        dims: vec![4, d],
        dtype: Dtype::BF16,
    });
    let split = |src: &str, sfx: &str, dim: usize| {
        let t: Vec<String> = ["q", "k", "v"]
            .iter()
            .map(|x| format!("{x}.{sfx}"))
            .collect();
        let t: Vec<&str> = t.iter().map(String::as_str).collect();
        Rule::parts(src, &t)
            .then(Transform::Split { dim, parts: 3 })
            .then(Transform::ReshapeToTarget)
    };
    let map = WeightMap::new()
        .rule(split("c_attn.weight", "w", 1))
        .rule(split("c_attn.bias", "b", 0))
        .rule(Rule::new("lin.weight", "lin.w").then(Transform::Transpose(vec![1, 0])));
    let (base, map) = (map.clone(), map.rename("emb.weight", "emb"));
    // f16 -> bf16 is no exact widening: the map must ask for the cast.
    let e = format!(
        "{:#}",
        load_named(&[&path], &want, &map, &LoadOptions::default()).unwrap_err()
    );
    assert!(
        e.contains("wrong dtype")
            && e.contains("`emb.weight`")
            && e.contains("is f16 but model tensor `emb` is bf16")
            && e.contains("Transform::Cast(Dtype::BF16)"),
        "{e}"
    );
    let map = base.rule(Rule::new("emb.weight", "emb").then(Transform::Cast(Dtype::BF16)));
    let l = load_named(&[&path], &want, &map, &LoadOptions::default()).unwrap();
    assert_eq!(l.report.loaded.len(), want.len());
    let get = |i: usize| l.tensors[i].as_ref().unwrap();
    for (s, x) in ["q", "k", "v"].iter().enumerate() {
        let w = get(2 * s);
        assert_eq!(w.name, format!("{x}.w"));
        let wv = w.data.to_f32();
        for i in 0..D {
            for hh in 0..H {
                for dd in 0..HD {
                    let want = c_attn[i * 3 * D + s * D + hh * HD + dd];
                    assert_eq!(wv[(i * H + hh) * HD + dd], want, "{x} {i} {hh} {dd}");
                }
            }
        }
        assert_eq!(get(2 * s + 1).data.to_f32(), c_bias[s * D..(s + 1) * D]);
    }
    let lw = get(6).data.to_f32();
    for i in 0..D {
        for o in 0..6 {
            assert_eq!(lw[i * 6 + o], lin[o * D + i], "lin.w[{i}, {o}]");
        }
    }
    let TensorData::BF16(e) = &get(7).data else {
        panic!("emb is bf16")
    };
    let want_emb: Vec<bf16> = emb.iter().map(|&x| bf16::from_f32(x)).collect();
    assert_eq!(e, &want_emb);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A file with a head the model lacks, a tensor of another shape, and no `lm_head`.
fn partial_file(path: &Path) {
    HfFile(Vec::new())
        .f32("enc.w", &[4, 3], &values(1, 12))
        .f32("enc.b", &[3], &values(2, 3))
        .f32("proj.w", &[3, 2], &values(3, 6))
        .f32("cls.w", &[3, 7], &values(4, 21))
        .write(path);
}

fn partial_targets() -> Vec<Target> {
    vec![
        Target::f32("enc.w", &[4, 3]),
        Target::f32("enc.b", &[3]),
        Target::f32("proj.w", &[3, 3]),
        Target::f32("lm_head.w", &[3, 5]),
    ]
}

#[test]
fn report_names_missing_unexpected_mis_shaped_and_partial_loads_need_permission() {
    let dir = tmp("partial");
    let path = dir.join("enc.safetensors");
    partial_file(&path);
    let want = partial_targets();
    let map = WeightMap::new();
    let e = format!(
        "{:#}",
        load_named(&[&path], &want, &map, &LoadOptions::default()).unwrap_err()
    );
    assert!(
        e.contains("1 model tensor(s) have no source: `lm_head.w`")
            && e.contains("LoadOptions::allow_missing")
            && e.contains("1 model tensor(s) have a source of another shape: `proj.w`")
            && e.contains("loaded 2 of 4 model tensors")
            && e.contains("`proj.w` needs [3, 3] but `proj.w` is [3, 2]")
            && e.contains("unexpected, not loaded (1): `cls.w`"),
        "{e}"
    );
    // Allowing only the missing head still refuses the mis-shaped tensor, and says so alone.
    let head = LoadOptions::default().allow_missing("lm_head.*");
    let e = format!(
        "{:#}",
        load_named(&[&path], &want, &map, &head).unwrap_err()
    );
    assert!(
        !e.contains("have no source") && e.contains("another shape: `proj.w`"),
        "{e}"
    );
    let both = head.allow_mis_shaped("proj.*");
    let l = load_named(&[&path], &want, &map, &both).unwrap();
    let r = &l.report;
    assert_eq!(r.loaded, ["enc.w", "enc.b"]);
    assert_eq!(r.missing, ["lm_head.w"]);
    assert_eq!(
        r.mis_shaped,
        vec![MisShaped {
            target: "proj.w".into(),
            want: vec![3, 3],
            source: "proj.w".into(),
            got: vec![3, 2],
            why: String::new(),
        }]
    );
    assert_eq!(
        r.unexpected,
        vec![Unexpected {
            source: "cls.w".into(),
            mapped_to: vec!["cls.w".into()],
        }]
    );
    assert_eq!(r.left_at_init, ["proj.w", "lm_head.w"]);
    let text = r.to_string();
    assert!(
        text.contains("missing (1): `lm_head.w` (left at init)")
            && text.contains("`proj.w` needs [3, 3] but `proj.w` is [3, 2] (left at init)"),
        "{text}"
    );
    assert_eq!(l.tensors[0].as_ref().unwrap().data.to_f32(), values(1, 12));
    assert_eq!(l.tensors[1].as_ref().unwrap().data.to_f32(), values(2, 3));
    assert!(l.tensors[2].is_none() && l.tensors[3].is_none());
    // A mapped name the model lacks is reported under both names.
    let renamed = WeightMap::new().rename("cls.{x}", "head.{x}");
    let l = load_named(&[&path], &want, &renamed, &both).unwrap();
    assert!(
        l.report.to_string().contains("`cls.w` (as `head.w`)"),
        "{}",
        l.report
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A run's checkpoint as the source of another model: the tied GPT's weights into an untied
/// one whose `lm_head` stays at init, only when asked; optimizer state starts at zero.
#[test]
fn checkpoint_dir_is_a_source_and_partial_loads_fill_the_rest_from_init() {
    let client = runtime::provision::cpu_client(1).unwrap();
    let tied = program(&gpt(true));
    let trained = TrainState::init(&client, &tied, 1).unwrap();
    let (params, opt) = trained.to_host(&tied).unwrap();
    let root = tmp("ckpt");
    let state = CheckpointState {
        format: 0,
        step: 3,
        seed: 1,
        config: serde_json::json!({}),
        checksums: Default::default(),
        files: vec![],
    };
    let dir = checkpoint::save(&root, &state, &params, &opt, &[], 1).unwrap();

    let untied = program(&gpt(false));
    let want = targets(&untied.params).unwrap();
    let map = WeightMap::new();
    let e = format!(
        "{:#}",
        load_named(&[&dir], &want, &map, &LoadOptions::default()).unwrap_err()
    );
    assert!(e.contains("no source: `lm_head`"), "{e}");
    let opts = LoadOptions::default().allow_missing("lm_head");
    let l = load_named(&[&dir], &want, &map, &opts).unwrap();
    assert_eq!(l.report.left_at_init, ["lm_head"]);
    assert_eq!(l.report.sources, [dir.join("params.safetensors")]);
    let st = TrainState::init_from(&client, &untied, 9, &l.tensors).unwrap();
    let fresh = TrainState::init(&client, &untied, 9).unwrap();
    let by_name: HashMap<&str, &Vec<f32>> =
        params.iter().map(|t| (t.name.as_str(), &t.data)).collect();
    for (i, p) in untied.params.iter().enumerate() {
        let got = st.params[i].to_host::<f32>().unwrap();
        match by_name.get(p.name.as_str()) {
            Some(v) => assert_eq!(&got, *v, "{} from the checkpoint", p.name),
            None => assert_eq!(
                got,
                fresh.params[i].to_host::<f32>().unwrap(),
                "{} at init",
                p.name
            ),
        }
    }
    assert!(st
        .state
        .iter()
        .all(|s| s.to_host::<f32>().unwrap().iter().all(|&x| x == 0.0)));
    // A tensor that does not fit the program is refused by `init_from` too.
    let mut wrong = l.tensors.clone();
    wrong[0] = Some(Tensor::new("x", vec![1], TensorData::F32(vec![0.0])).unwrap());
    let e = TrainState::init_from(&client, &untied, 9, &wrong)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("loaded tensor `x` is f32[1] but parameter `wte` is f32[11,8]"),
        "{e}"
    );
    let e = TrainState::init_from(&client, &untied, 9, &wrong[1..])
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("loaded tensors for the program's"), "{e}");

    // A corrupted checkpoint is refused as a source, naming the file.
    let p = dir.join("params.safetensors");
    let mut b = std::fs::read(&p).unwrap();
    let n = b.len();
    b[n - 1] ^= 1;
    std::fs::write(&p, b).unwrap();
    let e = format!("{:#}", load_named(&[&dir], &want, &map, &opts).unwrap_err());
    assert!(e.contains("params.safetensors is corrupted"), "{e}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn bad_sources_dtypes_and_collisions_are_clear_errors() {
    let dir = tmp("errors");
    let path = dir.join("w.safetensors");
    let want = vec![Target::f32("w", &[2, 2])];
    let none = WeightMap::new();
    let opts = LoadOptions::default();
    let err = |srcs: &[&Path], map: &WeightMap| -> String {
        format!("{:#}", load_named(srcs, &want, map, &opts).unwrap_err())
    };
    // Truncated and garbage files.
    HfFile(Vec::new())
        .f32("w", &[2, 2], &[1.0, 2.0, 3.0, 4.0])
        .write(&path);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 2]).unwrap();
    let e = err(&[&path], &none);
    assert!(
        e.contains("w.safetensors is not a valid safetensors file") && e.contains("truncated"),
        "{e}"
    );
    std::fs::write(&path, b"PK\x03\x04 a zip, not safetensors").unwrap();
    assert!(err(&[&path], &none).contains("not valid safetensors JSON"));
    assert!(err(&[&dir.join("nope.safetensors")], &none).contains("reading"));
    let e = err(&[&dir], &none);
    assert!(e.contains("is a directory but not a checkpoint"), "{e}");
    let e = err(&[], &none);
    assert!(e.contains("no source files"), "{e}");

    // An int8 tensor is no f32 weight without a cast (or its scales).
    HfFile(Vec::new())
        .raw("w", St::I8, &[2, 2], vec![1, 2, 0xff, 4])
        .raw(
            "pos",
            St::I64,
            &[2],
            [0i64, 1].iter().flat_map(|x| x.to_le_bytes()).collect(),
        )
        .write(&path);
    let drop_pos = WeightMap::new().drop("pos");
    let e = err(&[&path], &drop_pos);
    assert!(
        e.contains("`w`") && e.contains("is i8 but model tensor `w` is f32"),
        "{e}"
    );
    // An explicit cast converts the integers exactly; an unread dtype only matters if loaded.
    let cast = drop_pos
        .clone()
        .rule(Rule::new("w", "w").then(Transform::Cast(Dtype::F32)));
    let l = load_named(&[&path], &want, &cast, &opts).unwrap();
    assert_eq!(
        l.tensors[0].as_ref().unwrap().data.to_f32(),
        [1.0, 2.0, -1.0, 4.0]
    );
    assert_eq!(l.report.dropped, ["pos"]);
    let e = err(&[&path], &WeightMap::new().rename("pos", "w").drop("w"));
    assert!(
        e.contains("tensor `pos` is I64, which rxla does not read"),
        "{e}"
    );
    let trunc = WeightMap::new().rule(Rule::new("w", "w").then(Transform::Cast(Dtype::I8)));
    let f = dir.join("f.safetensors");
    HfFile(Vec::new()).f32("w", &[2, 2], &[0.5; 4]).write(&f);
    let e = format!(
        "{:#}",
        load_named(
            &[&f],
            &[Target {
                dtype: Dtype::I8,
                ..want[0].clone()
            }],
            &trunc,
            &opts
        )
        .unwrap_err()
    );
    assert!(e.contains("would truncate"), "{e}");

    // Two sources for one model tensor: by a rename, and by the same name in two files.
    HfFile(Vec::new())
        .f32("w", &[2, 2], &[1.0; 4])
        .f32("old.w", &[2, 2], &[2.0; 4])
        .write(&path);
    let e = err(&[&path], &WeightMap::new().rename("old.{x}", "{x}"));
    assert!(
        e.contains("model tensor `w` has two sources: `old.w`") && e.contains("and `w`"),
        "{e}"
    );
    let other = dir.join("shard2.safetensors");
    HfFile(Vec::new())
        .f32("w", &[2, 2], &[3.0; 4])
        .write(&other);
    let e = err(&[&path, &other], &none);
    assert!(
        e.contains("tensor `w` is in both") && e.contains("shard2.safetensors"),
        "{e}"
    );

    // Transforms that do not fit the source are mis-shaped, saying which step failed.
    let big = Target::f32("w", &[3, 2]);
    let map = WeightMap::new()
        .rule(Rule::new("w", "w").then(Transform::ReshapeToTarget))
        .drop("old.w");
    let e = format!(
        "{:#}",
        load_named(&[&path], &[big], &map, &opts).unwrap_err()
    );
    assert!(
        e.contains("`w` needs [3, 2] but `w` is [2, 2] and has 4 values, which cannot be reshaped to the model's [3, 2]"),
        "{e}"
    );
    let bad_t = WeightMap::new().rule(Rule::new("w", "w").then(Transform::Transpose(vec![0, 0])));
    assert!(err(&[&path], &bad_t.drop("old.w")).contains("cannot be transposed by [0, 0]"));
    let bad_pattern = LoadOptions::default().allow_missing("lm_head.{");
    let e = format!(
        "{:#}",
        load_named(&[&path], &want, &none, &bad_pattern).unwrap_err()
    );
    assert!(e.contains("name pattern `lm_head.{`"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
