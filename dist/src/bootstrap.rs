//! Which process of which job this is: from flags, or detected from the scheduler's environment
//! the way `jax.distributed.initialize` does (Slurm, Open MPI, Kubernetes Indexed Jobs and
//! JobSets, Cloud TPU VM workers), or `RXLA_*` variables (what `rxla launch` sets).

use crate::error::{Error, Result};

/// The coordinator's port when the environment does not say (what JAX uses on Cloud TPU).
pub const DEFAULT_PORT: u16 = 8476;

/// One process's place in a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrap {
    /// `HOST:PORT` of the coordination service (process 0 serves it on `PORT`).
    pub coordinator: String,
    pub num_processes: u32,
    pub process_id: u32,
    /// Where this came from: `flags`, `rxla`, `slurm`, `open-mpi`, `kubernetes`, `jobset`,
    /// `tpu-vm`.
    pub source: &'static str,
}

/// What the command line gave (each may be absent; the environment fills the rest).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags {
    pub coordinator: Option<String>,
    pub num_processes: Option<u32>,
    pub process_id: Option<u32>,
}

/// Reads an environment variable (a closure, so tests pass a fake environment).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Bootstrap {
    /// The job this process belongs to; `None` for a single process (no flag and no
    /// scheduler in the environment). Flags win over what the environment says.
    pub fn resolve(flags: &Flags, env: Env) -> Result<Option<Bootstrap>> {
        let detected = detect(env)?;
        let any_flag = flags.coordinator.is_some()
            || flags.num_processes.is_some()
            || flags.process_id.is_some();
        let Some(mut b) = detected.or_else(|| {
            any_flag.then(|| Bootstrap {
                coordinator: String::new(),
                num_processes: 0,
                process_id: u32::MAX,
                source: "flags",
            })
        }) else {
            return Ok(None);
        };
        if let Some(c) = &flags.coordinator {
            b.coordinator = c.clone();
        }
        if let Some(n) = flags.num_processes {
            b.num_processes = n;
        }
        if let Some(i) = flags.process_id {
            b.process_id = i;
        }
        if b.coordinator.is_empty() {
            return Err(Error::Bootstrap(
                "no coordinator address: pass --coordinator HOST:PORT (process 0's host)".into(),
            ));
        }
        if b.num_processes == 0 {
            return Err(Error::Bootstrap(
                "no process count: pass --num-processes N".into(),
            ));
        }
        if b.process_id == u32::MAX {
            return Err(Error::Bootstrap(
                "no process id: pass --process-id I (0 for the coordinator's host)".into(),
            ));
        }
        b.check()?;
        Ok(Some(b))
    }

    fn check(&self) -> Result<()> {
        if self.process_id >= self.num_processes {
            return Err(Error::Bootstrap(format!(
                "process id {} is out of range for {} processes (ids 0..{}; from {})",
                self.process_id, self.num_processes, self.num_processes, self.source
            )));
        }
        port_of(&self.coordinator)?;
        Ok(())
    }
}

/// The port of `HOST:PORT` (`[v6]:PORT` too).
pub fn port_of(addr: &str) -> Result<u16> {
    let bad = || {
        Error::Bootstrap(format!(
            "coordinator address `{addr}` is not HOST:PORT (e.g. 10.0.0.2:{DEFAULT_PORT})"
        ))
    };
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() {
        return Err(bad());
    }
    port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad)
}

/// The first scheduler found in `env`, in this order: `RXLA_*`, Open MPI, Slurm, JobSet,
/// Kubernetes Indexed Job, Cloud TPU VM.
pub fn detect(env: Env) -> Result<Option<Bootstrap>> {
    type Detector = fn(Env) -> Result<Option<Bootstrap>>;
    let detectors: [Detector; 6] = [rxla, open_mpi, slurm, jobset, indexed_job, tpu_vm];
    for d in detectors {
        if let Some(b) = d(env)? {
            return Ok(Some(b));
        }
    }
    Ok(None)
}

fn number(env: Env, name: &str, source: &str) -> Result<u32> {
    let v = env(name)
        .ok_or_else(|| Error::Bootstrap(format!("{source} environment without {name}")))?;
    v.trim().parse().map_err(|_| {
        Error::Bootstrap(format!(
            "{name}={v} ({source}) is not a non-negative integer"
        ))
    })
}

/// `RXLA_COORDINATOR_PORT`, else `default`.
fn port(env: Env, default: u16) -> Result<u16> {
    match env("RXLA_COORDINATOR_PORT") {
        None => Ok(default),
        Some(p) => p.parse().ok().filter(|p| *p > 0).ok_or_else(|| {
            Error::Bootstrap(format!("RXLA_COORDINATOR_PORT={p} is not a port number"))
        }),
    }
}

/// `host:port`, bracketing an IPv6 literal.
fn join(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Set by `rxla launch` (and usable from any scheduler's job script).
fn rxla(env: Env) -> Result<Option<Bootstrap>> {
    let Some(coordinator) = env("RXLA_COORDINATOR") else {
        return Ok(None);
    };
    Ok(Some(Bootstrap {
        coordinator,
        num_processes: number(env, "RXLA_NUM_PROCESSES", "rxla")?,
        process_id: number(env, "RXLA_PROCESS_ID", "rxla")?,
        source: "rxla",
    }))
}

/// `mpirun`: ranks from `OMPI_COMM_WORLD_*`; the coordinator on the launcher's host (from
/// `OMPI_MCA_orte_hnp_uri`) at a port derived from the job id, as JAX does.
fn open_mpi(env: Env) -> Result<Option<Bootstrap>> {
    if env("OMPI_COMM_WORLD_SIZE").is_none() {
        return Ok(None);
    }
    let num_processes = number(env, "OMPI_COMM_WORLD_SIZE", "Open MPI")?;
    let process_id = number(env, "OMPI_COMM_WORLD_RANK", "Open MPI")?;
    let coordinator = match (env("RXLA_COORDINATOR_HOST"), env("OMPI_MCA_orte_hnp_uri")) {
        (Some(h), _) => join(&h, port(env, DEFAULT_PORT)?),
        (None, Some(uri)) => {
            // "1531576321.0;tcp://10.0.0.5,172.17.0.1:41231"
            let job: u64 = uri
                .split('.')
                .next()
                .and_then(|j| j.parse().ok())
                .ok_or_else(|| {
                    Error::Bootstrap(format!(
                        "cannot read the job id of OMPI_MCA_orte_hnp_uri={uri}"
                    ))
                })?;
            let host = uri
                .split_once("tcp://")
                .map(|(_, rest)| rest.split([',', ':', ';']).next().unwrap_or(""))
                .filter(|h| !h.is_empty())
                .ok_or_else(|| {
                    Error::Bootstrap(format!("no tcp:// host in OMPI_MCA_orte_hnp_uri={uri}"))
                })?;
            join(host, port(env, (job % 4096) as u16 + 32768)?)
        }
        (None, None) => {
            return Err(Error::Bootstrap(
                "Open MPI environment without OMPI_MCA_orte_hnp_uri (Open MPI 5 / PMIx): set \
                 RXLA_COORDINATOR_HOST to rank 0's host or pass --coordinator HOST:PORT"
                    .into(),
            ))
        }
    };
    Ok(Some(Bootstrap {
        coordinator,
        num_processes,
        process_id,
        source: "open-mpi",
    }))
}

/// `srun`: `SLURM_NTASKS`, `SLURM_PROCID`; the coordinator on the step's first node at a port
/// derived from the job id (as JAX does), so two jobs sharing a node do not collide.
fn slurm(env: Env) -> Result<Option<Bootstrap>> {
    let Some(job) = env("SLURM_JOB_ID") else {
        return Ok(None);
    };
    if env("SLURM_PROCID").is_none() {
        // `sbatch` script itself, not a task of `srun`.
        return Ok(None);
    }
    let num_processes = number(env, "SLURM_NTASKS", "Slurm")?;
    let process_id = number(env, "SLURM_PROCID", "Slurm")?;
    let nodes = env("SLURM_STEP_NODELIST")
        .or_else(|| env("SLURM_JOB_NODELIST"))
        .ok_or_else(|| Error::Bootstrap("Slurm environment without SLURM_STEP_NODELIST".into()))?;
    let host = first_host(&nodes)?;
    let job: u64 = job
        .parse()
        .map_err(|_| Error::Bootstrap(format!("SLURM_JOB_ID={job} is not a number")))?;
    let default = (job % 4096) as u16 + (65535 - 4096 + 1);
    Ok(Some(Bootstrap {
        coordinator: join(&host, port(env, default)?),
        num_processes,
        process_id,
        source: "slurm",
    }))
}

/// The first host of a Slurm node list: `node[003-005,9],gpu1` → `node003`.
pub fn first_host(list: &str) -> Result<String> {
    let bad = || Error::Bootstrap(format!("cannot read the Slurm node list `{list}`"));
    let list = list.trim();
    let first_end = list.find([',', '[']).unwrap_or(list.len());
    let prefix = &list[..first_end];
    if list[first_end..].starts_with('[') {
        let close = list[first_end..].find(']').ok_or_else(bad)? + first_end;
        let inner = &list[first_end + 1..close];
        let first = inner.split([',', '-']).next().ok_or_else(bad)?;
        let suffix_end = list[close + 1..]
            .find(',')
            .map_or(list.len(), |i| i + close + 1);
        let suffix = &list[close + 1..suffix_end];
        if prefix.is_empty() && first.is_empty() {
            return Err(bad());
        }
        return Ok(format!("{prefix}{first}{suffix}"));
    }
    if prefix.is_empty() {
        return Err(bad());
    }
    Ok(prefix.to_string())
}

/// A Kubernetes JobSet: pods `<jobset>-<job>-<j>-<index>` in the headless service `<jobset>`;
/// the coordinator is pod 0 of job 0. Processes: `RXLA_NUM_PROCESSES` (the jobs'
/// parallelism × replicas).
fn jobset(env: Env) -> Result<Option<Bootstrap>> {
    let (Some(set), Some(job)) = (env("JOBSET_NAME"), env("REPLICATED_JOB_NAME")) else {
        return Ok(None);
    };
    let index = number(env, "JOB_COMPLETION_INDEX", "JobSet")?;
    let job_index = env("JOB_INDEX").map_or(Ok(0), |_| number(env, "JOB_INDEX", "JobSet"))?;
    let per_job = env("RXLA_PROCESSES_PER_JOB")
        .map(|_| number(env, "RXLA_PROCESSES_PER_JOB", "JobSet"))
        .transpose()?;
    let num_processes = k8s_processes(env, "JobSet")?;
    let process_id = match per_job {
        Some(p) => job_index * p + index,
        None => index,
    };
    let service = env("RXLA_K8S_SERVICE").unwrap_or_else(|| set.clone());
    Ok(Some(Bootstrap {
        coordinator: join(
            &format!("{set}-{job}-0-0.{service}"),
            port(env, DEFAULT_PORT)?,
        ),
        num_processes,
        process_id,
        source: "jobset",
    }))
}

fn k8s_processes(env: Env, source: &str) -> Result<u32> {
    if env("RXLA_NUM_PROCESSES").is_none() {
        return Err(Error::Bootstrap(format!(
            "{source} pod without RXLA_NUM_PROCESSES: set it in the pod template to the \
             number of pods (the Job's completions)"
        )));
    }
    number(env, "RXLA_NUM_PROCESSES", source)
}

/// A Kubernetes Indexed Job: `JOB_COMPLETION_INDEX` is the process id; pods are
/// `<job>-<index>` in a headless service (`subdomain`), so the coordinator is
/// `<job>-0.<service>`. The Job's name comes from the pod's `HOSTNAME`, the service from
/// `RXLA_K8S_SERVICE` (default: the Job's name).
fn indexed_job(env: Env) -> Result<Option<Bootstrap>> {
    let Some(_) = env("JOB_COMPLETION_INDEX") else {
        return Ok(None);
    };
    let process_id = number(env, "JOB_COMPLETION_INDEX", "Kubernetes Indexed Job")?;
    let num_processes = k8s_processes(env, "Kubernetes Indexed Job")?;
    let host = env("HOSTNAME")
        .ok_or_else(|| Error::Bootstrap("Kubernetes Indexed Job pod without HOSTNAME".into()))?;
    let job = host
        .strip_suffix(&format!("-{process_id}"))
        .ok_or_else(|| {
            Error::Bootstrap(format!(
                "pod hostname `{host}` is not `<job>-{process_id}`: is this an Indexed Job?"
            ))
        })?
        .to_string();
    let service = env("RXLA_K8S_SERVICE").unwrap_or_else(|| job.clone());
    Ok(Some(Bootstrap {
        coordinator: join(&format!("{job}-0.{service}"), port(env, DEFAULT_PORT)?),
        num_processes,
        process_id,
        source: "kubernetes",
    }))
}

/// A Cloud TPU VM slice: `TPU_WORKER_HOSTNAMES` (every worker's address, in worker order) and
/// `TPU_WORKER_ID` (the variables libtpu reads too); the coordinator is worker 0.
fn tpu_vm(env: Env) -> Result<Option<Bootstrap>> {
    let Some(hosts) = env("TPU_WORKER_HOSTNAMES") else {
        return Ok(None);
    };
    let hosts: Vec<&str> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    if hosts.is_empty() {
        return Err(Error::Bootstrap("TPU_WORKER_HOSTNAMES is empty".into()));
    }
    let process_id = number(env, "TPU_WORKER_ID", "Cloud TPU VM")?;
    Ok(Some(Bootstrap {
        coordinator: join(hosts[0], port(env, DEFAULT_PORT)?),
        num_processes: hosts.len() as u32,
        process_id,
        source: "tpu-vm",
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn detected(pairs: &[(&str, &str)]) -> Bootstrap {
        Bootstrap::resolve(&Flags::default(), &env(pairs))
            .unwrap()
            .unwrap()
    }

    fn error(pairs: &[(&str, &str)]) -> String {
        Bootstrap::resolve(&Flags::default(), &env(pairs))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn no_scheduler_is_one_process() {
        assert_eq!(
            Bootstrap::resolve(&Flags::default(), &env(&[("HOME", "/x")])).unwrap(),
            None
        );
    }

    #[test]
    fn flags_alone_and_over_the_environment() {
        let flags = Flags {
            coordinator: Some("10.0.0.2:1234".into()),
            num_processes: Some(4),
            process_id: Some(3),
        };
        let b = Bootstrap::resolve(&flags, &env(&[])).unwrap().unwrap();
        assert_eq!(
            (
                b.coordinator.as_str(),
                b.num_processes,
                b.process_id,
                b.source
            ),
            ("10.0.0.2:1234", 4, 3, "flags")
        );
        // A flag overrides the detected value; the rest stays detected.
        let only_coord = Flags {
            coordinator: Some("h:9".into()),
            ..Flags::default()
        };
        let b = Bootstrap::resolve(
            &only_coord,
            &env(&[
                ("SLURM_JOB_ID", "7"),
                ("SLURM_NTASKS", "2"),
                ("SLURM_PROCID", "1"),
                ("SLURM_STEP_NODELIST", "n1,n2"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (
                b.coordinator.as_str(),
                b.num_processes,
                b.process_id,
                b.source
            ),
            ("h:9", 2, 1, "slurm")
        );
        let partial = Flags {
            coordinator: Some("h:9".into()),
            num_processes: Some(2),
            ..Flags::default()
        };
        let e = Bootstrap::resolve(&partial, &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--process-id"), "{e}");
        let bad = Flags {
            process_id: Some(2),
            ..flags.clone()
        };
        let bad = Flags {
            num_processes: Some(2),
            ..bad
        };
        let e = Bootstrap::resolve(&bad, &env(&[])).unwrap_err().to_string();
        assert!(e.contains("process id 2 is out of range for 2"), "{e}");
        let bad = Flags {
            coordinator: Some("nohost".into()),
            ..flags
        };
        let e = Bootstrap::resolve(&bad, &env(&[])).unwrap_err().to_string();
        assert!(e.contains("not HOST:PORT"), "{e}");
    }

    #[test]
    fn rxla_launch_env() {
        let b = detected(&[
            ("RXLA_COORDINATOR", "127.0.0.1:5000"),
            ("RXLA_NUM_PROCESSES", "4"),
            ("RXLA_PROCESS_ID", "2"),
        ]);
        assert_eq!(
            b,
            Bootstrap {
                coordinator: "127.0.0.1:5000".into(),
                num_processes: 4,
                process_id: 2,
                source: "rxla"
            }
        );
        let e = error(&[
            ("RXLA_COORDINATOR", "127.0.0.1:5000"),
            ("RXLA_NUM_PROCESSES", "four"),
            ("RXLA_PROCESS_ID", "2"),
        ]);
        assert!(e.contains("RXLA_NUM_PROCESSES=four"), "{e}");
    }

    #[test]
    fn slurm_srun_tasks() {
        let b = detected(&[
            ("SLURM_JOB_ID", "123456"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_PROCID", "5"),
            ("SLURM_STEP_NODELIST", "gpu[017-020,033],login1"),
        ]);
        // JAX's port rule: job id mod 4096 above 61440.
        assert_eq!(b.coordinator, format!("gpu017:{}", 123456 % 4096 + 61440));
        assert_eq!((b.num_processes, b.process_id, b.source), (8, 5, "slurm"));
        // The batch script itself (no task id) is not a task.
        assert_eq!(
            Bootstrap::resolve(&Flags::default(), &env(&[("SLURM_JOB_ID", "1")])).unwrap(),
            None
        );
        assert_eq!(first_host("a1,a2").unwrap(), "a1");
        assert_eq!(first_host("node[9]-ib").unwrap(), "node9-ib");
        assert_eq!(first_host("n[1-2]-ib,m").unwrap(), "n1-ib");
        assert!(first_host("[").is_err());
    }

    #[test]
    fn open_mpi_ranks() {
        let b = detected(&[
            ("OMPI_COMM_WORLD_SIZE", "4"),
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
            (
                "OMPI_MCA_orte_hnp_uri",
                "1531576321.0;tcp://10.0.0.5,172.17.0.1:41231",
            ),
        ]);
        assert_eq!(
            b.coordinator,
            format!("10.0.0.5:{}", 1531576321u64 % 4096 + 32768)
        );
        assert_eq!(
            (b.num_processes, b.process_id, b.source),
            (4, 1, "open-mpi")
        );
        let e = error(&[("OMPI_COMM_WORLD_SIZE", "4"), ("OMPI_COMM_WORLD_RANK", "1")]);
        assert!(e.contains("RXLA_COORDINATOR_HOST"), "{e}");
        let b = detected(&[
            ("OMPI_COMM_WORLD_SIZE", "2"),
            ("OMPI_COMM_WORLD_RANK", "0"),
            ("RXLA_COORDINATOR_HOST", "fe80::1"),
            ("RXLA_COORDINATOR_PORT", "7000"),
        ]);
        assert_eq!(b.coordinator, "[fe80::1]:7000");
    }

    #[test]
    fn kubernetes_indexed_job_and_jobset() {
        let b = detected(&[
            ("JOB_COMPLETION_INDEX", "3"),
            ("HOSTNAME", "train-gpt-3"),
            ("RXLA_NUM_PROCESSES", "4"),
            ("RXLA_K8S_SERVICE", "workers"),
        ]);
        assert_eq!(
            b,
            Bootstrap {
                coordinator: format!("train-gpt-0.workers:{DEFAULT_PORT}"),
                num_processes: 4,
                process_id: 3,
                source: "kubernetes"
            }
        );
        let e = error(&[("JOB_COMPLETION_INDEX", "3"), ("HOSTNAME", "train-gpt-3")]);
        assert!(e.contains("RXLA_NUM_PROCESSES"), "{e}");
        let e = error(&[
            ("JOB_COMPLETION_INDEX", "3"),
            ("HOSTNAME", "other"),
            ("RXLA_NUM_PROCESSES", "4"),
        ]);
        assert!(e.contains("not `<job>-3`"), "{e}");
        let b = detected(&[
            ("JOBSET_NAME", "llm"),
            ("REPLICATED_JOB_NAME", "slice"),
            ("JOB_INDEX", "1"),
            ("JOB_COMPLETION_INDEX", "2"),
            ("RXLA_PROCESSES_PER_JOB", "4"),
            ("RXLA_NUM_PROCESSES", "8"),
        ]);
        assert_eq!(
            b,
            Bootstrap {
                coordinator: format!("llm-slice-0-0.llm:{DEFAULT_PORT}"),
                num_processes: 8,
                process_id: 6,
                source: "jobset"
            }
        );
    }

    #[test]
    fn cloud_tpu_vm_workers() {
        let b = detected(&[
            (
                "TPU_WORKER_HOSTNAMES",
                "10.130.0.7,10.130.0.8,10.130.0.9,10.130.0.10",
            ),
            ("TPU_WORKER_ID", "2"),
        ]);
        assert_eq!(
            b,
            Bootstrap {
                coordinator: format!("10.130.0.7:{DEFAULT_PORT}"),
                num_processes: 4,
                process_id: 2,
                source: "tpu-vm"
            }
        );
        let e = error(&[("TPU_WORKER_HOSTNAMES", "a,b"), ("TPU_WORKER_ID", "2")]);
        assert!(e.contains("out of range for 2"), "{e}");
        let e = error(&[("TPU_WORKER_HOSTNAMES", "a,b")]);
        assert!(e.contains("without TPU_WORKER_ID"), "{e}");
    }
}
