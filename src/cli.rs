//! The `rxla` command line.

use crate::config::total_steps;
pub use crate::config::{ConfigArgs, DEFAULT_CONFIG};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use runtime::provision::{self, Backend, ClientRequest};

use crate::config::TrainConfig;
use crate::registry;
use train::learner::{Resume, RunSpec};
use train::optim::Optimizer;

#[derive(Parser, Debug)]
#[command(
    name = "rxla",
    version,
    about = "Ahead-of-time compiled deep-learning training on XLA"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List the devices of a backend: platform, PJRT API version, plugin path, one line per device.
    Devices(DeviceArgs),
    /// Train a model from a config file.
    Train(TrainArgs),
    /// Print the train step's StableHLO.
    Lower(ConfigArgs),
    /// Time the compiled train step on synthetic batches; prints one JSON object.
    Bench(BenchArgs),
    /// Parameters, FLOPs per step and memory of a config's model.
    Summary(SummaryArgs),
    /// Sample text from a trained GPT run, or transform --input with an encoder-decoder run
    /// (KV-cached; sampling or beam search).
    Generate(GenerateArgs),
    /// GPT decode tokens/s with the KV cache vs recomputing, and time to first token; JSON.
    BenchGenerate(BenchGenerateArgs),
    /// Sentence embeddings from a pretrained BERT: one JSON line per text.
    Embed(EmbedArgs),
    /// Write a run's weights in another layout (`--format hf`: HF BERT, for transformers).
    Export(ExportArgs),
    /// A fine-tuned run's prediction: --text, --pair A B, or --question Q --context C.
    Predict(PredictArgs),
    /// The data pipeline's stages.
    #[command(subcommand)]
    Data(DataCommand),
    /// Compile the train and eval steps ahead of time for a target (a TPU topology or this
    /// CPU): serialized executables, a manifest, per-device memory against capacity.
    Compile(crate::compile_cmd::CompileArgs),
    /// The persistent compile cache: `ls` shows its entries, `clear` removes them.
    Cache(crate::cache_cmd::CacheArgs),
    /// Start a job of N processes on this machine: `rxla launch --local N -- <command>`.
    Launch(crate::launch::LaunchArgs),
    /// A job's smoke test: bootstrap, PJRT clients with the job's store, device exchange,
    /// lock-step steps with failure detection.
    DistCheck(crate::dist_check::DistCheckArgs),
    /// Compress a trained run (int8 quantization, low rank) and evaluate runs.
    Compress(CompressArgs),
    /// A BERT config's training batches (steps 0..N), held-out examples and step-0 weights
    /// (HF layout), for training the same run in another framework.
    #[command(hide = true)]
    Batches(crate::batches::BatchesArgs),
}

#[derive(Args, Debug, Clone)]
pub struct PredictArgs {
    #[command(flatten)]
    pub query: crate::predict::PredictArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    /// The training run's output directory (its newest checkpoint is exported).
    #[arg(long)]
    pub run: PathBuf,
    /// hf: config.json + model.safetensors + tokenizer files in HF's BERT layout.
    #[arg(long, default_value = "hf", value_parser = crate::export::FORMATS.to_vec())]
    pub format: String,
    /// The directory to write (must not exist).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// A document-pipeline stage: `rxla data <extract|filter|dedup..|tokenize..|run> --config F`
    /// (see `rxla data run --help`).
    #[command(external_subcommand)]
    Stage(Vec<OsString>),
    /// Polite web crawl into WARC (robots.txt, per-host delay, resumable frontier).
    Crawl(crate::crawl_cmd::CrawlArgs),
}

/// `rxla compress [--backend ..] <quantize|lowrank|eval>`.
#[derive(Args, Debug, Clone)]
pub struct CompressArgs {
    #[command(subcommand)]
    pub command: crate::compress::CompressCommand,
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(Args, Debug, Clone)]
pub struct EmbedArgs {
    /// A pretrained model's name (all-minilm-l6-v2) or a directory in HF layout.
    #[arg(long, required_unless_present = "run", conflicts_with = "run")]
    pub pretrained: Option<String>,
    /// A BERT training run's directory (its newest checkpoint).
    #[arg(long)]
    pub run: Option<PathBuf>,
    /// A text to embed (repeat for more).
    #[arg(long, required = true)]
    pub text: Vec<String>,
    /// mean (over real tokens) or cls.
    #[arg(long, default_value = "mean", value_parser = ["mean", "cls"])]
    pub pooling: String,
    /// L2-normalize the embedding (`--normalize false` to keep its norm).
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true",
          action = clap::ArgAction::Set)]
    pub normalize: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(Args, Debug, Clone)]
pub struct GenerateArgs {
    /// The training run's output directory.
    #[arg(long)]
    pub run: PathBuf,
    /// Encoder-decoder runs: the source text to transform (instead of --prompt).
    #[arg(long)]
    pub input: Option<String>,
    /// Text to continue; repeat for a batch of prompts decoded together.
    #[arg(long, default_value = "Call me Ishmael.")]
    pub prompt: Vec<String>,
    #[arg(long, default_value_t = 200, allow_negative_numbers = true)]
    pub max_tokens: usize,
    /// Softmax temperature (0 = greedy).
    #[arg(long, default_value_t = 0.8, allow_negative_numbers = true)]
    pub temperature: f64,
    /// Sample among the k most likely tokens.
    #[arg(long, allow_negative_numbers = true)]
    pub top_k: Option<usize>,
    /// Sample among the most likely tokens whose probability adds up to p, in (0, 1].
    #[arg(long, allow_negative_numbers = true)]
    pub top_p: Option<f64>,
    /// Stop a row when it produces this token id.
    #[arg(long)]
    pub eos: Option<u32>,
    /// Beam search with this many hypotheses (instead of sampling).
    #[arg(long, allow_negative_numbers = true)]
    pub beam: Option<usize>,
    /// Beam hypotheses are ranked by log-probability / length^this.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub length_penalty: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(Args, Debug, Clone)]
pub struct SummaryArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also report the sparsity of each tensor of this run's newest checkpoint (pruning).
    #[arg(long)]
    pub run: Option<PathBuf>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Timed steps.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Peak FLOP/s for MFU (default: measured f32 matmul throughput).
    #[arg(long)]
    pub peak_flops: Option<f64>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Output directory (default: runs/<config name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue from the newest complete checkpoint in the output directory; `--resume auto`
    /// starts fresh when there is none (one restart command for schedulers).
    #[arg(long, num_args = 0..=1, default_missing_value = "latest", value_name = "auto")]
    pub resume: Option<Resume>,
    /// Load the executables `rxla compile --target cpu.. --out DIR` wrote instead of
    /// compiling (refused when the manifest does not match this client and config).
    #[arg(long, value_name = "DIR")]
    pub compiled: Option<PathBuf>,
    #[command(flatten)]
    pub device: DeviceArgs,
    #[command(flatten)]
    pub job: crate::job::JobArgs,
}

/// Where to run: backend, virtual CPU devices, plugin verbosity.
#[derive(Args, Debug, Clone)]
pub struct DeviceArgs {
    /// cpu, cuda or tpu (default: $RXLA_BACKEND, else cpu). $RXLA_PJRT_PLUGIN overrides the plugin.
    #[arg(long)]
    pub backend: Option<Backend>,
    /// Number of virtual CPU devices (cpu backend).
    #[arg(long)]
    pub cpu_devices: Option<usize>,
    /// Show the PJRT plugin's own log output.
    #[arg(short, long)]
    pub verbose: bool,
    /// cuda: device ordinals to use, e.g. `0,1` (default: all visible).
    #[arg(long, value_delimiter = ',')]
    pub gpu_devices: Option<Vec<i64>>,
    /// cuda: share of each GPU's memory the allocator may take, in (0, 1]
    /// (default: $XLA_PYTHON_CLIENT_MEM_FRACTION, else the plugin's 0.75).
    #[arg(long)]
    pub gpu_memory_fraction: Option<f64>,
    /// cuda: reserve that memory up front (default: $XLA_PYTHON_CLIENT_PREALLOCATE, else true).
    #[arg(long)]
    pub gpu_preallocate: Option<bool>,
    /// cuda: default, platform, bfc or cuda_async (default: $XLA_PYTHON_CLIENT_ALLOCATOR).
    #[arg(long)]
    pub gpu_allocator: Option<String>,
    /// Compile every program afresh: neither read nor write the compile cache
    /// (also `RXLA_COMPILE_CACHE=0`).
    #[arg(long)]
    pub no_compile_cache: bool,
}

impl DeviceArgs {
    pub fn client(&self) -> Result<runtime::Client> {
        if self.no_compile_cache {
            runtime::cache::disable();
        }
        provision::client(&self.request()).context("starting the PJRT client")
    }

    pub fn request(&self) -> ClientRequest {
        ClientRequest {
            backend: self.backend,
            cpu_devices: self.cpu_devices,
            verbose: self.verbose,
            gpu: runtime::gpu::GpuOptions {
                visible_devices: self.gpu_devices.clone(),
                memory_fraction: self.gpu_memory_fraction,
                preallocate: self.gpu_preallocate,
                allocator: self.gpu_allocator.clone(),
            },
        }
    }

    /// The request for a client with at least `needed` devices when that is ours to choose:
    /// on the cpu backend without `--cpu-devices`, that many virtual devices.
    fn request_for(&self, needed: usize) -> Result<ClientRequest> {
        let mut req = self.request();
        let cpu = provision::backend_from_env(self.backend)? == Backend::Cpu;
        if needed > 1 && cpu && req.cpu_devices.is_none() {
            req.cpu_devices = Some(needed);
        }
        Ok(req)
    }

    /// [`DeviceArgs::client_for`] for process `job` of a job: the plugin gets the job's
    /// store and process id.
    pub fn client_in_job(&self, needed: usize, job: &dist::Session) -> Result<runtime::Client> {
        if self.no_compile_cache {
            runtime::cache::disable();
        }
        let req = self.request_for(needed)?;
        provision::client_in_job(&req, &crate::job::runtime_job(job)).with_context(|| {
            format!(
                "starting the PJRT client of process {} of {}",
                job.process_id(),
                job.num_processes()
            )
        })
    }

    /// A client with at least `needed` devices (see [`DeviceArgs::request_for`]).
    pub fn client_for(&self, needed: usize) -> Result<runtime::Client> {
        if self.no_compile_cache {
            runtime::cache::disable();
        }
        provision::client(&self.request_for(needed)?).context("starting the PJRT client")
    }
}

/// Devices the config's `[parallel]` plan needs.
fn devices_needed(cfg: &TrainConfig) -> Result<usize> {
    Ok(train::parallel::Plan::from_config(&cfg.parallel)?.map_or(1, |p| p.num_devices()))
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Devices(args) => devices(&args),
        Command::Train(args) => train(&args),
        Command::Lower(args) => lower_cmd(&args),
        Command::Bench(args) => bench_cmd(&args),
        Command::Summary(args) => summary_cmd(&args),
        Command::Generate(args) => generate_cmd(&args),
        Command::BenchGenerate(args) => bench_generate_cmd(&args),
        Command::Embed(args) => embed_cmd(&args),
        Command::Export(args) => export_cmd(&args),
        Command::Predict(args) => crate::predict::predict_cmd(&args.query, || args.device.client()),
        Command::Data(DataCommand::Crawl(args)) => crate::crawl_cmd::run(&args),
        Command::Data(DataCommand::Stage(argv)) => crate::data_cmd::stage_cmd(argv),
        Command::Cache(args) => crate::cache_cmd::run(&args),
        Command::Compile(args) => crate::compile_cmd::run(&args),
        Command::Launch(args) => crate::launch::run(&args),
        Command::DistCheck(args) => crate::dist_check::run(&args),
        Command::Compress(args) => crate::compress::run(&args.command, &|| args.device.client()),
        Command::Batches(args) => crate::batches::run(&args),
    }
}

fn devices(args: &DeviceArgs) -> Result<()> {
    let client = args.client()?;
    let plugin = client.plugin();
    let (major, minor) = plugin.api_version();
    println!("platform:          {}", client.platform_name());
    println!("platform version:  {}", client.platform_version());
    println!("PJRT API version:  {major}.{minor}");
    println!("plugin:            {}", plugin.path().display());
    for (k, v) in plugin.attributes() {
        println!("plugin attribute:  {k} = {v}");
    }
    let devices = client.devices();
    println!("devices:           {}", devices.len());
    for d in devices {
        println!(
            "  device {:>3}  kind={}  process={}  addressable={}",
            d.id, d.kind, d.process_index, d.addressable
        );
    }
    for i in 0..client.addressable_devices().len() {
        // GPU/TPU allocators report this; CPU plugins may not implement it.
        match client.device_memory_stats(i) {
            Ok(m) => println!("  device {i:>3} memory: {}", memory_line(&m)),
            Err(_) if i == 0 => {
                println!("  memory stats:    not reported by this plugin");
                break;
            }
            Err(_) => break,
        }
    }
    Ok(())
}

fn memory_line(m: &runtime::DeviceMemoryStats) -> String {
    let mb = |b: i64| format!("{:.1} MB", b as f64 / (1 << 20) as f64);
    let mut s = format!("in use {}", mb(m.bytes_in_use));
    for (label, v) in [
        ("peak", m.peak_bytes_in_use),
        ("limit", m.bytes_limit),
        ("reserved", m.bytes_reserved),
        ("pool", m.pool_bytes),
    ] {
        if let Some(v) = v {
            s.push_str(&format!(", {label} {}", mb(v)));
        }
    }
    s
}

fn load_config(args: &ConfigArgs) -> Result<TrainConfig> {
    TrainConfig::load(&args.config, &args.sets)
}

fn optimizer(cfg: &TrainConfig, steps: usize) -> Result<Optimizer> {
    let o = Optimizer {
        opt: cfg.optimizer.clone(),
        schedule: cfg.schedule.clone(),
        total_steps: cfg.schedule.decay_steps.unwrap_or(steps),
    };
    o.validate()?;
    Ok(o)
}

/// The PJRT client of a run: in a job, created with the job's store, and it must see the
/// devices of every process (one program spans them).
fn train_client(
    device: &DeviceArgs,
    cfg: &TrainConfig,
    job: Option<&dist::Session>,
) -> Result<runtime::Client> {
    let needed = devices_needed(cfg)?;
    let Some(job) = job else {
        return device.client_for(needed);
    };
    let client = device.client_in_job(needed, job)?;
    let n = job.num_processes() as usize;
    let mut seen: Vec<i32> = client.devices().iter().map(|d| d.process_index).collect();
    seen.sort();
    seen.dedup();
    if n > 1 && seen.len() < n {
        bail!(
            "this is process {} of a job of {n}, but the {} PJRT plugin shows the devices of \
             {} process(es) only: it has no cross-process support (the CPU plugins have none), \
             so one program cannot span the job. Train across processes on GPUs or TPUs; on \
             CPU, run one process with `--cpu-devices N` for N devices",
            job.process_id(),
            client.platform_name(),
            seen.len()
        );
    }
    Ok(client)
}

/// Locks run directory `out` (one process per run) and says how the run starts.
fn lock_run(out: &Path, resume: Resume) -> Result<files::DirLock> {
    // First, before anything is written there.
    let lock = files::DirLock::acquire(out).map_err(|e| match e {
        files::Error::Locked { pid, .. } => anyhow::anyhow!(
            "another rxla process (pid {}) is training in {}: wait for it, stop it (kill -TERM \
             checkpoints and exits), or choose another --out",
            pid.map_or("unknown".into(), |p| p.to_string()),
            out.display()
        ),
        e => anyhow::Error::new(e).context(format!("locking {}", out.display())),
    })?;
    let point = train::learner::resume_point(&out.join("checkpoints"), resume)?;
    eprintln!(
        "{}",
        train::learner::start_line(out, resume, point.as_ref())
    );
    if let Some(pid) = lock.took_over_from {
        eprintln!(
            "rxla: took over the lock of {} left by pid {pid}, which is gone",
            out.display()
        );
    }
    Ok(lock)
}

/// The run's data. In a job, process 0 prepares it (tokenizer, token caches in `out`) and
/// the others then read what it wrote.
fn job_data(
    cfg: &mut TrainConfig,
    out: &Path,
    job: Option<&dist::Session>,
) -> Result<Box<dyn data::DataSource>> {
    let Some(j) = job else {
        return registry::data(cfg, out);
    };
    const PREPARED: &str = "rxla/train/data";
    if j.process_id() != 0 {
        j.barrier(PREPARED)?;
    }
    let data = registry::data(cfg, out)?;
    if j.process_id() == 0 {
        j.barrier(PREPARED)?;
    }
    Ok(data)
}

/// SIGTERM and SIGINT set the returned flag to the signal's number (the loop then
/// checkpoints and stops); a second one exits at once.
fn stop_on_signals() -> Result<Arc<AtomicUsize>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let which = Arc::new(AtomicUsize::new(0));
    let armed = Arc::new(AtomicBool::new(false));
    for sig in [SIGTERM, SIGINT] {
        // Registration order is call order: the shutdown checks the flag before it is set.
        signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, armed.clone())?;
        signal_hook::flag::register(sig, armed.clone())?;
        signal_hook::flag::register_usize(sig, which.clone(), sig as usize)?;
    }
    Ok(which)
}

fn train(args: &TrainArgs) -> Result<()> {
    let mut cfg = load_config(&args.config)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| train::learner::default_out(&args.config.config));
    // A job of several processes trains one run: they share `out` (a shared file system
    // across hosts); process 0 holds its lock and writes its logs.
    let job = match args.job.bootstrap()? {
        Some(b) => Some(args.job.join(b)?),
        None => None,
    };
    let leader = job.as_ref().is_none_or(|j| j.process_id() == 0);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let resume = args.resume.unwrap_or(cfg.train.resume);
    // Held to the end of the run; the other processes of a job share process 0's directory.
    let _lock = if leader {
        Some(lock_run(&out, resume)?)
    } else {
        None
    };
    let interrupt = stop_on_signals()?;
    let mut data = job_data(&mut cfg, &out, job.as_ref())?;
    let model = crate::compress::train_model(&cfg)?;
    let steps = total_steps(&cfg, data.steps_per_epoch())?;
    let opt = optimizer(&cfg, steps)?;
    let client = train_client(&args.device, &cfg, job.as_ref())?;
    if let Some(dir) = &args.compiled {
        crate::compile_cmd::use_compiled(dir, &cfg, &client, &args.config.config)?;
    }
    let tokenizer = out.join(data::tokenizer::TOKENIZER_FILE);
    let init_weights = |p: &[models::ParamSpec]| crate::compress::initial_weights(&cfg, p);
    let spec = RunSpec {
        model: model.as_ref(),
        optimizer: opt,
        steps,
        eval_every: cfg.train.eval_every,
        log_every: cfg.train.log_every,
        eval_batch: cfg.train.eval_batch_size.unwrap_or(cfg.train.batch_size),
        seed: cfg.seed,
        out: out.clone(),
        config_json: serde_json::to_value(&cfg)?,
        checkpoint_every: cfg.train.checkpoint_every,
        keep_checkpoints: cfg.train.keep_checkpoints,
        resume,
        on_nonfinite: cfg.train.nonfinite()?,
        skip_failed_checkpoints: cfg.train.on_checkpoint_error
            == crate::config::OnCheckpointError::Skip,
        interrupt: Some(interrupt),
        extra_files: if tokenizer.is_file() {
            vec![(
                data::tokenizer::TOKENIZER_FILE.to_string(),
                tokenizer.clone(),
            )]
        } else {
            Vec::new()
        },
        peak_flops: cfg.train.peak_flops,
        passes: cfg.passes()?,
        init_weights: Some(&init_weights as _),
        job: job.as_ref(),
    };
    let mut callbacks: Vec<Box<dyn train::learner::Callback>> = Vec::new();
    // Every process of a job stops early at the same step: their evaluations are equal.
    if let Some(es) = &cfg.train.early_stopping {
        callbacks.push(Box::new(
            train::callbacks::EarlyStopping::new(&es.monitor, es.patience)
                .min_delta(es.min_delta)
                .on_evaluations(),
        ));
    }
    // Process 0 writes the run's files.
    if cfg.train.tensorboard && leader {
        callbacks.push(Box::new(train::callbacks::TensorBoard::new(
            out.join("tensorboard"),
        )));
    }
    let summary = train::learner::train(&client, &spec, data.as_mut(), callbacks)?;
    if let Some(j) = job {
        j.finish()?;
    }
    // What follows (scores, a sample) runs on process 0's devices alone.
    if !leader {
        return Ok(());
    }
    if let Some(sig) = summary.get("stopped_by_signal").and_then(|v| v.as_u64()) {
        let name = signal_hook::low_level::signal_name(sig as i32).unwrap_or("a signal");
        match summary["steps"].as_u64() {
            Some(0) | None => eprintln!("rxla: stopped by {name} before the first step"),
            Some(step) => eprintln!(
                "rxla: stopped by {name} at step {step}; checkpoint saved in {}. Run the same \
                 command with --resume auto to continue",
                out.join("checkpoints").display()
            ),
        }
        return Ok(());
    }
    let mut summary = summary;
    let qa = cfg.model_kind()? == "encdec" && cfg.data.dataset == "squad";
    if qa || crate::finetune::is_task_model(cfg.model_kind()?) {
        let scores = match qa {
            true => crate::generate::squad_scores(&client, &out)?,
            false => crate::finetune::evaluate_run(&client, &out)?,
        };
        eprintln!("rxla: {}", serde_json::Value::Object(scores.clone()));
        for (k, v) in scores {
            summary[k] = v;
        }
        files::write_json_atomic(&out.join("summary.json"), &summary)?;
    }
    let baselines = data.eval_baselines();
    if !baselines.is_empty() {
        for (k, v) in &baselines {
            summary[k.as_str()] = serde_json::json!(v);
        }
        files::write_json_atomic(&out.join("summary.json"), &summary)?;
    }
    if let Some(u) = summary
        .get("eval_mlm_unigram_accuracy")
        .and_then(|v| v.as_f64())
    {
        let f = |k: &str| summary.get(k).and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
        eprintln!(
            "rxla: held out: MLM accuracy {:.4} (unigram baseline {u:.4}), MLM loss {:.4} \
             (unigram {:.4}), NSP accuracy {:.4}",
            f("eval_mlm_accuracy"),
            f("eval_mlm_loss"),
            f("eval_mlm_unigram_loss"),
            f("eval_nsp_accuracy"),
        );
    }
    if let Some(bpb) = summary.get("eval_bits_per_byte").and_then(|v| v.as_f64()) {
        eprintln!("rxla: validation bits per byte {bpb:.4}");
    }
    if cfg.model_kind()? == "gpt" && tokenizer.is_file() {
        let prompt = "Call me Ishmael.";
        let opts = crate::generate::SampleOptions {
            max_tokens: 200,
            temperature: 0.8,
            top_k: None,
            top_p: None,
            seed: cfg.seed,
            eos: None,
        };
        // A nicety after training: a prompt longer than the model's window is no failure.
        match crate::generate::from_run(&client, &out, prompt, &opts) {
            Ok((text, _)) => {
                let text = crate::generate::printable(&text);
                eprintln!("rxla: sample:\n{prompt}{text}\n");
            }
            Err(e) => eprintln!("rxla: no sample: {e:#}"),
        }
    }
    println!("{}", serde_json::to_string(&summary)?);
    eprintln!("rxla: wrote {}", out.join("summary.json").display());
    Ok(())
}

fn lower_cmd(args: &ConfigArgs) -> Result<()> {
    let cfg = load_config(args)?;
    let model = registry::model(&cfg)?;
    let steps = cfg.train.steps.unwrap_or(1).max(1);
    let opt = optimizer(&cfg, steps)?;
    let passes = cfg.passes()?;
    let (prog, _) = if matches!(passes.remat, train::step::Remat::Budget(_)) {
        let client = provision::client(&ClientRequest::default())?;
        train::state::build_train_step(
            &client,
            model.as_ref(),
            &opt,
            cfg.train.batch_size.max(1),
            &passes,
        )?
    } else {
        train::step::train_step(
            model.as_ref(),
            &opt,
            cfg.train.batch_size.max(1),
            &passes,
            None,
        )?
    };
    print!("{}", lower::lower(&prog.graph, &prog.lower_options())?);
    Ok(())
}

fn bench_cmd(args: &BenchArgs) -> Result<()> {
    let cfg = load_config(&args.config)?;
    let model = registry::model(&cfg)?;
    let steps = cfg.train.steps.unwrap_or(1000).max(1);
    let opt = optimizer(&cfg, steps)?;
    if cfg.train.batch_size == 0 {
        bail!("config key `train.batch_size` must be at least 1");
    }
    let client = args.device.client_for(devices_needed(&cfg)?)?;
    let out = crate::bench::bench(
        &client,
        &crate::bench::BenchSpec {
            model: model.as_ref(),
            optimizer: opt,
            batch: cfg.train.batch_size,
            steps: args.steps,
            warmup: args.warmup,
            peak_flops: args.peak_flops,
            passes: cfg.passes()?,
        },
    )?;
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

fn summary_cmd(args: &SummaryArgs) -> Result<()> {
    let cfg = load_config(&args.config)?;
    let model = registry::model(&cfg)?;
    let steps = cfg.train.steps.unwrap_or(1).max(1);
    let opt = optimizer(&cfg, steps)?;
    let client = args.device.client_for(devices_needed(&cfg)?)?;
    let (prog, report) = train::state::build_train_step(
        &client,
        model.as_ref(),
        &opt,
        cfg.train.batch_size.max(1),
        &cfg.passes()?,
    )?;
    let mut s = crate::summary::summarize(&prog, Some(&client))?;
    s["passes"] = report.to_json();
    let sparsity = match &args.run {
        Some(run) => Some(crate::compress::sparsity_of_run(run)?),
        None => None,
    };
    if let Some((json, _)) = &sparsity {
        s["sparsity"] = json.clone();
    }
    if args.json {
        println!("{}", serde_json::to_string(&s)?);
    } else {
        print!("{}", crate::summary::render(&s));
        if let Some((_, text)) = &sparsity {
            print!("{text}");
        }
    }
    Ok(())
}

fn generate_cmd(args: &GenerateArgs) -> Result<()> {
    let req = crate::generate::GenerateRequest {
        prompts: args.prompt.clone(),
        sample: crate::generate::SampleOptions {
            max_tokens: args.max_tokens,
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            seed: args.seed,
            eos: args.eos,
        },
        beam: args.beam,
        length_penalty: args.length_penalty,
    };
    req.validate()?; // before starting the client: a typo fails at once
    let client = args.device.client()?;
    let g = match &args.input {
        Some(input) => crate::generate::generate_seq2seq(&client, &args.run, input, &req)?,
        None => crate::generate::generate_gpt(&client, &args.run, &req)?,
    };
    if let Some(beam) = args.beam {
        eprintln!(
            "rxla: beam {beam}: best of {} tokens in {:.2} s (KV cache)",
            g.tokens[0].len(),
            g.decode_s
        );
    } else if args.input.is_some() {
        eprintln!(
            "rxla: {} tokens at {:.0} tokens/s (KV cache)",
            g.tokens[0].len(),
            g.tokens_per_s()
        );
    } else {
        eprintln!(
            "rxla: {} tokens; first after {:.1} ms, then {:.0} tokens/s (KV cache)",
            g.tokens.iter().map(|t| t.len()).sum::<usize>(),
            g.time_to_first_token_s * 1e3,
            g.tokens_per_s()
        );
    }
    Ok(())
}

fn embed_cmd(args: &EmbedArgs) -> Result<()> {
    use crate::pretrained::bert::model_dir;
    // A run is embedded through its HF export (one loader for both), in a temp directory.
    let exported = match &args.run {
        Some(run) => {
            let tmp = std::env::temp_dir().join(format!("rxla-embed-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&tmp);
            crate::export::export_hf(run, &tmp)?;
            Some(tmp)
        }
        None => None,
    };
    let dir = match (&exported, &args.pretrained) {
        (Some(d), _) => d.clone(),
        (None, Some(p)) => model_dir(p)?,
        (None, None) => bail!("give --pretrained NAME|DIR or --run DIR"),
    };
    let result = embed_from(args, &dir);
    if let Some(d) = exported {
        let _ = std::fs::remove_dir_all(d);
    }
    result
}

fn embed_from(args: &EmbedArgs, dir: &std::path::Path) -> Result<()> {
    use crate::pretrained::bert::{embed, Pooling};
    let pooling = if args.pooling == "cls" {
        Pooling::Cls
    } else {
        Pooling::Mean
    };
    let client = args.device.client()?;
    for e in embed(&client, dir, &args.text, pooling, args.normalize)? {
        println!("{}", serde_json::to_string(&e)?);
    }
    Ok(())
}

fn export_cmd(args: &ExportArgs) -> Result<()> {
    let e = crate::export::export_hf(&args.run, &args.out)
        .with_context(|| format!("exporting {}", args.run.display()))?;
    eprintln!(
        "rxla: wrote {} ({} tensors from step {}) in HF BERT layout: load it with \
         transformers' BertForPreTraining.from_pretrained or `rxla embed --pretrained {}`",
        e.dir.display(),
        e.tensors,
        e.step,
        e.dir.display()
    );
    Ok(())
}

#[derive(clap::Args, Debug, Clone)]
pub struct BenchGenerateArgs {
    /// A GPT training run (its newest checkpoint); or leave it out and give --config.
    #[arg(long)]
    pub run: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Batch sizes to time (repeatable).
    #[arg(long = "batch", default_values_t = [1usize, 16])]
    pub batches: Vec<usize>,
    /// Prompt tokens per row before the timed decode.
    #[arg(long, default_value_t = 8)]
    pub prompt_len: usize,
    /// Tokens per row per timed generation (default: what fits in the context after the
    /// prompt).
    #[arg(long)]
    pub tokens: Option<usize>,
    /// Timed repeats (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    #[command(flatten)]
    pub device: DeviceArgs,
}

fn bench_generate_cmd(args: &BenchGenerateArgs) -> Result<()> {
    use crate::generate::bench::{bench_generate, initial_params, GenBenchSpec};
    use models::gpt::{Gpt, GptConfig};
    let (cfg, params) = match &args.run {
        Some(run) => {
            let r = crate::generate::Run::load(run)?;
            (r.gpt(run)?, r.params)
        }
        None => {
            let c = crate::config::TrainConfig::load(&args.config.config, &args.config.sets)?;
            let cfg: GptConfig = if c.model_kind()? == "gpt" {
                c.model_config()?
            } else {
                anyhow::bail!(
                    "`rxla bench-generate` times GPT models; {} is a `{}` config",
                    args.config.config.display(),
                    c.model_kind()?
                )
            };
            Gpt(cfg.clone()).validate().map_err(anyhow::Error::msg)?;
            let p = initial_params(&cfg, c.seed)?;
            (cfg, p)
        }
    };
    if args.batches.contains(&0) || args.repeats == 0 {
        anyhow::bail!("--batch and --repeats must be at least 1");
    }
    if args.prompt_len == 0 || args.prompt_len >= cfg.seq_len {
        anyhow::bail!(
            "--prompt-len {} must be in 1..{} (model.seq_len)",
            args.prompt_len,
            cfg.seq_len
        );
    }
    let spec = GenBenchSpec {
        batches: args.batches.clone(),
        prompt_len: args.prompt_len,
        tokens: args.tokens.unwrap_or(cfg.seq_len - args.prompt_len),
        ttft_prompt_len: cfg.seq_len.min(128),
        repeats: args.repeats,
    };
    let client = args.device.client()?;
    let out = bench_generate(&client, &cfg, &params, &spec)?;
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}
