//! `Sequential`: layers in order, `compile`, `fit`, `evaluate`, `predict`, `summary`, weights.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::rc::Rc;

use anyhow::{bail, Context, Result};
use graph::{DType, Graph, NodeId, TensorType};
use models::{Forward, Mode, Model, Params};
use runtime::{Client, ShardLayout, ShardedArray};
use train::exec::ToDevice;

use super::data::{examples, rows, Dataset};
use super::fit::eval_batches;
use super::fit::{fit_loop, FitOptions, History, Logs, TrainStep};
use super::layers::{Ctx, Layer};
use super::loss::{metric_per_example, Loss, Metric, Output};
use data::HostArray;
use train::checkpoint::{Checkpoint, NamedTensor};
use train::learner::Snapshot;
use train::optim::Optimizer;
use train::state::{
    arguments, compile_program, execute_sharded, run_train_step, Compiled, StepScalars, TrainState,
};
use train::step::{eval_step, train_step, Passes};

thread_local! {
    static CLIENT: std::cell::RefCell<Option<Rc<Client>>> = const { std::cell::RefCell::new(None) };
}

/// The process's PJRT client (backend from `$RXLA_BACKEND`, else CPU), created on first use.
pub fn client() -> Result<Rc<Client>> {
    CLIENT.with(|c| {
        if let Some(cl) = c.borrow().as_ref() {
            return Ok(cl.clone());
        }
        let cl = Rc::new(runtime::provision::client(
            &runtime::provision::ClientRequest::default(),
        )?);
        *c.borrow_mut() = Some(cl.clone());
        Ok(cl)
    })
}

/// What `compile` fixed.
#[derive(Debug, Clone)]
struct CompileSpec {
    optimizer: Optimizer,
    loss: Loss,
    metrics: Vec<Metric>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Program {
    Train,
    Eval,
    Predict,
}

/// A stack of layers, each feeding the next.
pub struct Sequential {
    pub name: String,
    layers: Vec<(String, Box<dyn Layer>)>,
    compiled: Option<CompileSpec>,
    programs: HashMap<(Program, usize), Compiled>,
    /// Weights (and optimizer state) on device, once built, fitted or loaded.
    pub state: Option<TrainState>,
    /// Seed of the initial weights and of dropout.
    pub seed: u64,
    /// Layers whose weights do not train (Keras' `layer.trainable = False`).
    frozen: Vec<String>,
}

impl Default for Sequential {
    fn default() -> Self {
        Self::new()
    }
}

impl Sequential {
    pub fn new() -> Self {
        Sequential {
            name: "sequential".into(),
            layers: Vec::new(),
            compiled: None,
            programs: HashMap::new(),
            state: None,
            seed: 0,
            frozen: Vec::new(),
        }
    }

    /// Keras' `model.get_layer(name).trainable = trainable`: a frozen layer's weights get no
    /// gradient and no optimizer state and come out of every train step unchanged (its
    /// batch-norm statistics still update, as Keras 1 did). Takes effect at the next `fit`.
    pub fn set_trainable(&mut self, layer: &str, trainable: bool) -> Result<()> {
        if !self.layers.iter().any(|(n, _)| n == layer) {
            let names: Vec<&str> = self.layers.iter().map(|(n, _)| n.as_str()).collect();
            bail!("the model has no layer `{layer}`; its layers are {names:?}");
        }
        self.frozen.retain(|n| n != layer);
        if !trainable {
            self.frozen.push(layer.to_string());
        }
        self.programs.retain(|(p, _), _| *p != Program::Train);
        Ok(())
    }

    /// Whether layer `name`'s weights train.
    pub fn is_trainable(&self, layer: &str) -> bool {
        !self.frozen.iter().any(|n| n == layer)
    }

    pub fn named(mut self, name: &str) -> Self {
        self.name = name.into();
        self
    }

    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Appends a layer, named like Keras does (`conv2d`, `conv2d_1`, ...).
    #[allow(clippy::should_implement_trait)]
    pub fn add(mut self, layer: impl Layer + 'static) -> Self {
        let base = layer.base_name();
        let k = self
            .layers
            .iter()
            .filter(|(_, l)| l.base_name() == base)
            .count();
        let name = if k == 0 {
            base.to_string()
        } else {
            format!("{base}_{k}")
        };
        self.layers.push((name, Box::new(layer)));
        self
    }

    /// The model's input node for a batch of `batch` examples.
    pub fn input(&self, g: &mut Graph, batch: usize) -> graph::Result<NodeId> {
        let (_, first) = self.layers.first().ok_or_else(|| {
            graph::GraphError::Invalid("the model has no layers: add some first".into())
        })?;
        let shape = first.input_shape().ok_or_else(|| {
            graph::GraphError::Invalid(format!(
                "the first layer ({}) needs `.input_shape([..])` (Embedding: `.input_length(n)`)",
                first.kind()
            ))
        })?;
        let mut d = vec![batch as i64];
        d.extend(shape);
        g.input("x", TensorType::new(first.input_dtype(), d))
    }

    /// Applies the layers to `x`; `on_layer` sees each layer's output.
    pub fn call_with(
        &self,
        cx: &mut Ctx,
        x: NodeId,
        mut on_layer: impl FnMut(&str, &dyn Layer, &mut Ctx, NodeId),
    ) -> graph::Result<Output> {
        let mut h = x;
        let mut out = None;
        for (i, (name, layer)) in self.layers.iter().enumerate() {
            cx.salt = i as u32 + 1;
            let pre = cx.scope(name, |cx| layer.call(cx, h))?;
            let act = layer.activation();
            let y = act.apply(cx.g, pre)?;
            on_layer(name, layer.as_ref(), cx, y);
            out = Some(Output { pre, act, y });
            h = y;
        }
        out.ok_or_else(|| graph::GraphError::Invalid("the model has no layers".into()))
    }

    /// Applies the layers to `x`.
    pub fn call(&self, cx: &mut Ctx, x: NodeId) -> graph::Result<Output> {
        self.call_with(cx, x, |_, _, _, _| {})
    }

    /// Fixes the optimizer, loss and metrics (`model.compile(Adam::new(1e-3), Loss::.., &[..])`).
    pub fn compile(&mut self, optimizer: impl Into<Optimizer>, loss: Loss, metrics: &[Metric]) {
        self.compiled = Some(CompileSpec {
            optimizer: optimizer.into(),
            loss,
            metrics: metrics.to_vec(),
        });
        self.programs.retain(|(p, _), _| *p == Program::Predict);
    }

    fn config(&self) -> Result<&CompileSpec> {
        self.compiled
            .as_ref()
            .context("the model is not compiled: call model.compile(optimizer, loss, metrics)")
    }

    /// Layer names, output shapes and parameter counts, as Keras prints them.
    pub fn summary(&self) -> Result<Summary> {
        let mut g = Graph::new("summary");
        let mut p = Params::new();
        let mut cx = Ctx::new(&mut g, &mut p, Mode::Eval);
        let x = self.input(cx.g, 1)?;
        let mut rows = Vec::new();
        let mut before = 0;
        self.call_with(&mut cx, x, |name, layer, cx, y| {
            let now = cx.p.total();
            rows.push(SummaryRow {
                name: name.to_string(),
                kind: layer.kind().to_string(),
                output_shape: cx.g.dims(y).map(|d| d[1..].to_vec()).unwrap_or_default(),
                params: now - before,
            });
            before = now;
        })?;
        let frozen = std::mem::take(&mut cx.non_trainable);
        let in_frozen_layer = |n: &str| {
            self.frozen.iter().any(|l| {
                n.strip_prefix(l.as_str())
                    .is_some_and(|r| r.starts_with('.'))
            })
        };
        let non_trainable: usize = p
            .specs
            .iter()
            .filter(|s| frozen.contains(&s.name) || in_frozen_layer(&s.name))
            .map(|s| s.count())
            .sum();
        let total = p.total();
        Ok(Summary {
            name: self.name.clone(),
            rows,
            total,
            trainable: total - non_trainable,
            non_trainable,
        })
    }

    fn program(&mut self, kind: Program, batch: usize) -> Result<&Compiled> {
        if !self.programs.contains_key(&(kind, batch)) {
            let client = client()?;
            let prog = match kind {
                Program::Train => {
                    let c = self.config()?;
                    let net = Net {
                        seq: self,
                        head: Some((c.loss, c.metrics.clone())),
                    };
                    // Layer names are [a-z0-9_]: literal patterns. One alternation, so a
                    // frozen layer without weights (Flatten) is not a no-match error.
                    let mut passes = Passes::default();
                    if !self.frozen.is_empty() {
                        passes.groups.freeze = vec![self.frozen.join("|")];
                    }
                    train_step(&net, &c.optimizer, batch, &passes, None)
                        .context("building the train step (set_trainable: a frozen layer must have weights)")?
                        .0
                }
                Program::Eval => {
                    let c = self.config()?;
                    let net = Net {
                        seq: self,
                        head: Some((c.loss, c.metrics.clone())),
                    };
                    eval_step(&net, batch, None)?
                }
                Program::Predict => eval_step(
                    &Net {
                        seq: self,
                        head: None,
                    },
                    batch,
                    None,
                )?,
            };
            let c = compile_program(&client, prog)?;
            self.programs.insert((kind, batch), c);
        }
        Ok(&self.programs[&(kind, batch)])
    }

    /// Weights on device, initialized from the seed on first use; optimizer slots are added
    /// (zero) when the train program needs them.
    fn ensure_state(&mut self, kind: Program, batch: usize) -> Result<()> {
        let seed = self.seed;
        self.program(kind, batch)?;
        let c = &self.programs[&(kind, batch)];
        let slots = c.prog.slots.len();
        let np = c.prog.params.len();
        let ready = match &self.state {
            None => false,
            Some(st) if st.params.len() != np => {
                bail!("the model's weights do not match its layers")
            }
            Some(st) => {
                let with_state = (0..np)
                    .filter(|&i| c.prog.state_index(i, 0).is_some())
                    .count();
                kind != Program::Train || st.state.len() == with_state * slots
            }
        };
        if ready {
            return Ok(());
        }
        let client = client()?;
        let fresh = TrainState::init(&client, &c.prog, seed)?;
        match &mut self.state {
            Some(st) => st.state = fresh.state,
            None => self.state = Some(fresh),
        }
        Ok(())
    }

    /// Trains; see [`FitOptions`].
    pub fn fit(&mut self, data: &Dataset, opts: FitOptions) -> Result<History> {
        fit_loop(self, data, opts)
    }

    /// Loss and metrics over `data`, in batches of `batch_size` (the last one padded).
    pub fn evaluate(&mut self, data: &Dataset, batch_size: usize) -> Result<Logs> {
        data.y.as_ref().context("evaluate needs targets (y)")?;
        self.evaluate_batches(&eval_batches(data, batch_size))
    }

    /// Loss and metrics over padded batches of inputs and targets.
    fn evaluate_batches(&mut self, batches: &[(Vec<HostArray>, usize)]) -> Result<Logs> {
        let batch_size = batches.first().map_or(1, |(b, _)| examples(&b[0])).max(1);
        self.ensure_state(Program::Eval, batch_size)?;
        let client = client()?;
        let c = &self.programs[&(Program::Eval, batch_size)];
        if let Some((first, _)) = batches.first() {
            train::state::check_data(&c.prog, first, "evaluation")?;
        }
        let st = self.state.as_ref().context("weights")?;
        let (sums, n) = train::state::evaluate(&client, c, &st.params, batches)?;
        let mut logs = Logs::default();
        for (name, s) in c.prog.per_example.iter().zip(sums) {
            logs.insert(name.clone(), s / n.max(1) as f64);
        }
        Ok(logs)
    }

    /// The model's outputs for inputs `x`, in batches of `batch_size`.
    pub fn predict(&mut self, x: &HostArray, batch_size: usize) -> Result<HostArray> {
        self.ensure_state(Program::Predict, batch_size)?;
        let client = client()?;
        let c = &self.programs[&(Program::Predict, batch_size)];
        let st = self.state.as_ref().context("weights")?;
        let mut data = Vec::new();
        let mut dims = Vec::new();
        for (idx, valid) in super::fit::padded_batches(examples(x), batch_size) {
            let xb = rows(x, &idx);
            train::state::check_data(&c.prog, std::slice::from_ref(&xb), "prediction")?;
            let buf = xb.to_sharded(&client, &ShardLayout::replicated(xb.dims(), 1))?;
            let args = arguments(&c.prog, &st.params, &[], StepScalars::default(), &[&buf])?;
            let out = execute_sharded(c, &args)?;
            let v = out[0].to_host::<f32>()?;
            let per = v.len() / batch_size;
            data.extend_from_slice(&v[..valid * per]);
            dims = out[0].dims().to_vec();
        }
        dims[0] = examples(x) as i64;
        Ok(HostArray::F32 { data, dims })
    }

    /// The weights as named host tensors (`conv2d.kernel`, ...).
    pub fn get_weights(&mut self) -> Result<Vec<NamedTensor>> {
        self.ensure_state(Program::Predict, 1)?;
        let prog = &self.programs[&(Program::Predict, 1)].prog;
        let st = self.state.as_ref().context("weights")?;
        prog.params
            .iter()
            .zip(&st.params)
            .map(|(p, b)| {
                Ok(NamedTensor {
                    name: p.name.clone(),
                    dims: p.ty.dims().to_vec(),
                    data: b.to_host::<f32>()?,
                })
            })
            .collect()
    }

    /// Writes the weights to a safetensors file (atomically).
    pub fn save_weights(&mut self, path: &Path) -> Result<()> {
        let w = self.get_weights()?;
        train::checkpoint::write_tensors(path, &w)
    }

    /// Loads weights saved by `save_weights` (names and shapes must match the layers).
    pub fn load_weights(&mut self, path: &Path) -> Result<()> {
        let tensors = train::checkpoint::read_tensors(path)?;
        self.ensure_state(Program::Predict, 1)?;
        let client = client()?;
        let prog = &self.programs[&(Program::Predict, 1)].prog;
        let want: Vec<(String, Vec<i64>)> = prog
            .params
            .iter()
            .map(|p| (p.name.clone(), p.ty.dims().to_vec()))
            .collect();
        let ordered = Checkpoint::ordered(&tensors, &want, "weight")
            .with_context(|| format!("loading weights from {}", path.display()))?;
        let params: Vec<ShardedArray> = ordered
            .iter()
            .map(|t| {
                ShardedArray::from_host(
                    &client,
                    &t.data,
                    &ShardLayout::replicated(&t.dims, 1),
                    &[0],
                )
            })
            .collect::<Result<_, _>>()?;
        self.state.as_mut().context("weights")?.params = params;
        Ok(())
    }
}

impl TrainStep for Sequential {
    fn begin(&mut self, batch_size: usize) -> Result<()> {
        self.config()?;
        self.ensure_state(Program::Train, batch_size)
    }

    fn train_step(&mut self, batch: &[HostArray]) -> Result<Logs> {
        if batch.len() < 2 {
            bail!("fit needs targets (y)");
        }
        let bs = examples(&batch[0]);
        self.ensure_state(Program::Train, bs)?;
        let client = client()?;
        let c = &self.programs[&(Program::Train, bs)];
        let st = self.state.as_mut().context("weights")?;
        if st.step == 0 {
            train::state::check_data(&c.prog, batch, "training")?;
        }
        let (loss, _, _) = run_train_step(&client, c, st, batch)?;
        let mut logs = Logs::default();
        logs.insert("loss", loss as f64);
        Ok(logs)
    }

    fn evaluate(&mut self, batches: &[(Vec<HostArray>, usize)]) -> Result<Logs> {
        self.evaluate_batches(batches)
    }

    fn learning_rate(&self) -> f64 {
        let base = self.compiled.as_ref().map_or(0.0, |c| c.optimizer.opt.lr);
        base * self.state.as_ref().map_or(1.0, |s| s.lr_scale as f64)
    }

    fn set_learning_rate(&mut self, lr: f64) -> Result<()> {
        let base = self.config()?.optimizer.opt.lr;
        let st = self
            .state
            .as_mut()
            .context("set the learning rate after fit began")?;
        st.lr_scale = (lr / base) as f32;
        Ok(())
    }

    fn save_weights(&mut self, path: &Path) -> Result<()> {
        Sequential::save_weights(self, path)
    }

    fn checkpoint_tensors(&mut self) -> Result<Option<Snapshot>> {
        let prog = &self.train_program()?.prog;
        let st = self.state.as_ref().context("weights")?;
        let (params, optimizer) = st.to_host(prog)?;
        Ok(Some(Snapshot {
            params,
            optimizer,
            seed: st.seed,
        }))
    }

    fn restore(&mut self, c: &Checkpoint) -> Result<()> {
        let client = client()?;
        let st = TrainState::from_checkpoint(&client, &self.train_program()?.prog, c)?;
        self.state = Some(st);
        Ok(())
    }
}

impl Sequential {
    /// The compiled train program (`fit` compiles it first).
    fn train_program(&self) -> Result<&Compiled> {
        self.programs
            .iter()
            .find(|((p, _), _)| *p == Program::Train)
            .map(|(_, c)| c)
            .context("the model has no train program yet: call fit first")
    }
}

/// A Sequential as the trainer's model: input `x`, target `y`, loss and metrics per example;
/// without a head, the per-example output is the prediction.
struct Net<'a> {
    seq: &'a Sequential,
    head: Option<(Loss, Vec<Metric>)>,
}

impl Model for Net<'_> {
    fn forward(
        &self,
        g: &mut Graph,
        p: &mut Params,
        batch: usize,
        mode: Mode,
    ) -> graph::Result<Forward> {
        let mut cx = Ctx::new(g, p, mode);
        let x = self.seq.input(cx.g, batch)?;
        let out = self.seq.call(&mut cx, x)?;
        let (rng_seed, updates) = (cx.rng, std::mem::take(&mut cx.updates));
        let Some((loss, metrics)) = &self.head else {
            let zero = g.scalar(0.0, DType::F32)?;
            return Ok(Forward {
                inputs: vec![x],
                loss: zero,
                per_example: vec![("prediction".into(), out.y)],
                rng_seed,
                updates,
            });
        };
        let ty = loss.target_type(g.ty(out.y)?);
        let y = g.input("y", ty)?;
        let per = loss.per_example(g, out, y)?;
        let mean = g.mean_all(per)?;
        let mut per_example = vec![("loss".to_string(), per)];
        for &m in metrics {
            let v = metric_per_example(g, m, *loss, out, y)?;
            per_example.push((m.name().to_string(), v));
        }
        Ok(Forward {
            inputs: vec![x, y],
            loss: mean,
            per_example,
            rng_seed,
            updates,
        })
    }
}

/// One row of `summary()`.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryRow {
    pub name: String,
    pub kind: String,
    /// Output shape without the batch dim (printed as `(None, ..)`).
    pub output_shape: Vec<i64>,
    pub params: usize,
}

/// What `summary()` reports; `Display` prints Keras's table.
#[derive(Debug, Clone)]
pub struct Summary {
    pub name: String,
    pub rows: Vec<SummaryRow>,
    pub total: usize,
    pub trainable: usize,
    pub non_trainable: usize,
}

/// `93322` -> `93,322`.
fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = 65;
        writeln!(f, "Model: \"{}\"", self.name)?;
        writeln!(f, "{}", "_".repeat(w))?;
        writeln!(
            f,
            " {:<32}{:<22}{:<10}",
            "Layer (type)", "Output Shape", "Param #"
        )?;
        writeln!(f, "{}", "=".repeat(w))?;
        for (i, r) in self.rows.iter().enumerate() {
            let shape: Vec<String> = std::iter::once("None".to_string())
                .chain(r.output_shape.iter().map(|d| d.to_string()))
                .collect();
            let shape = if shape.len() == 1 {
                "(None,)".to_string()
            } else {
                format!("({})", shape.join(", "))
            };
            let layer = format!("{} ({})", r.name, r.kind);
            writeln!(f, " {layer:<32}{shape:<22}{:<10}", thousands(r.params))?;
            if i + 1 < self.rows.len() {
                writeln!(f)?;
            }
        }
        writeln!(f, "{}", "=".repeat(w))?;
        writeln!(f, "Total params: {}", thousands(self.total))?;
        writeln!(f, "Trainable params: {}", thousands(self.trainable))?;
        writeln!(f, "Non-trainable params: {}", thousands(self.non_trainable))?;
        write!(f, "{}", "_".repeat(w))
    }
}
