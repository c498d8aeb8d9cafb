//! Running graphs on PJRT: host tensors <-> device buffers, lower + compile + execute.

use anyhow::{anyhow, bail, Context, Result};
use data::HostArray;
use graph::interp::HostTensor;
use graph::{DType, Graph, TensorType};
use lower::LowerOptions;
use runtime::cache::CacheOutcome;
use runtime::{
    bf16, f16, Buffer, Client, CompileOptions, ElementType, Executable, ShardLayout, ShardedArray,
};

/// The device element type of `d`; 4-bit types have no host buffer type here.
pub fn element_type(d: DType) -> Result<ElementType> {
    Ok(match d {
        DType::F32 => ElementType::F32,
        DType::BF16 => ElementType::BF16,
        DType::F16 => ElementType::F16,
        DType::F64 => ElementType::F64,
        DType::I32 => ElementType::S32,
        DType::I64 => ElementType::S64,
        DType::I8 => ElementType::S8,
        DType::U8 => ElementType::U8,
        DType::U32 => ElementType::U32,
        DType::Bool => ElementType::Pred,
        DType::I4 | DType::U4 => {
            bail!("{d} has no host buffer type: convert to i8/u8 in the graph")
        }
    })
}

pub fn dtype(e: ElementType) -> Result<DType> {
    Ok(match e {
        ElementType::F32 => DType::F32,
        ElementType::BF16 => DType::BF16,
        ElementType::F16 => DType::F16,
        ElementType::F64 => DType::F64,
        ElementType::S32 => DType::I32,
        ElementType::S64 => DType::I64,
        ElementType::S8 => DType::I8,
        ElementType::U8 => DType::U8,
        ElementType::U32 => DType::U32,
        ElementType::Pred => DType::Bool,
        other => bail!("element type {other} has no graph dtype"),
    })
}

/// Copies a host tensor (f64 storage) to `device`, converting to its dtype.
pub fn to_device(client: &Client, t: &HostTensor, device: usize) -> Result<Buffer> {
    let dims = t.ty.dims();
    let d = &t.data;
    let b = match t.ty.dtype {
        DType::F32 => client.buffer_from_host(
            &d.iter().map(|&x| x as f32).collect::<Vec<_>>(),
            dims,
            device,
        ),
        DType::F64 => client.buffer_from_host(d, dims, device),
        DType::BF16 => client.buffer_from_host(
            &d.iter().map(|&x| bf16::from_f64(x)).collect::<Vec<_>>(),
            dims,
            device,
        ),
        DType::F16 => client.buffer_from_host(
            &d.iter().map(|&x| f16::from_f64(x)).collect::<Vec<_>>(),
            dims,
            device,
        ),
        DType::I32 => client.buffer_from_host(
            &d.iter().map(|&x| x as i32).collect::<Vec<_>>(),
            dims,
            device,
        ),
        DType::I64 => client.buffer_from_host(
            &d.iter().map(|&x| x as i64).collect::<Vec<_>>(),
            dims,
            device,
        ),
        DType::I8 => client.buffer_from_host(
            &d.iter().map(|&x| x as i8).collect::<Vec<_>>(),
            dims,
            device,
        ),
        DType::U8 => client.buffer_from_host(
            &d.iter().map(|&x| x as u8).collect::<Vec<_>>(),
            dims,
            device,
        ),
        DType::U32 => client.buffer_from_host(
            &d.iter().map(|&x| x as u32).collect::<Vec<_>>(),
            dims,
            device,
        ),
        DType::Bool => client.buffer_from_host(
            &d.iter().map(|&x| x != 0.0).collect::<Vec<_>>(),
            dims,
            device,
        ),
        DType::I4 | DType::U4 => bail!(
            "{} has no host buffer type: convert to i8/u8 in the graph",
            t.ty.dtype
        ),
    };
    Ok(b?)
}

/// Copies a buffer back as a host tensor.
pub fn to_host(b: &Buffer) -> Result<HostTensor> {
    let dt = dtype(b.element_type())?;
    let data: Vec<f64> = match dt {
        DType::F32 => b.to_host::<f32>()?.into_iter().map(f64::from).collect(),
        DType::F64 => b.to_host::<f64>()?,
        DType::BF16 => b.to_host::<bf16>()?.into_iter().map(f64::from).collect(),
        DType::F16 => b.to_host::<f16>()?.into_iter().map(f64::from).collect(),
        DType::I32 => b.to_host::<i32>()?.into_iter().map(f64::from).collect(),
        DType::I64 => b.to_host::<i64>()?.into_iter().map(|x| x as f64).collect(),
        DType::I8 => b.to_host::<i8>()?.into_iter().map(f64::from).collect(),
        DType::U8 => b.to_host::<u8>()?.into_iter().map(f64::from).collect(),
        DType::U32 => b.to_host::<u32>()?.into_iter().map(f64::from).collect(),
        DType::Bool => b
            .to_host::<bool>()?
            .into_iter()
            .map(|x| x as u8 as f64)
            .collect(),
        DType::I4 | DType::U4 => bail!("no {dt} buffers cross the host boundary"),
    };
    HostTensor::new(TensorType::new(dt, b.dims().to_vec()), data)
        .ok_or_else(|| anyhow!("buffer size does not match its dims"))
}

/// Lowers and compiles a graph (through the compile cache); returns the StableHLO text too
/// (for errors and `rxla lower`).
pub fn compile(
    client: &Client,
    g: &Graph,
    lower_opts: &LowerOptions,
    compile_opts: &CompileOptions,
) -> Result<(String, Executable)> {
    let (mlir, exe, _) = compile_cached(client, g, lower_opts, compile_opts)?;
    Ok((mlir, exe))
}

/// [`compile`], also saying whether the executable came from the persistent compile cache.
pub fn compile_cached(
    client: &Client,
    g: &Graph,
    lower_opts: &LowerOptions,
    compile_opts: &CompileOptions,
) -> Result<(String, Executable, CacheOutcome)> {
    let mlir =
        lower::lower(g, lower_opts).with_context(|| format!("lowering graph `{}`", g.name))?;
    let (exe, outcome, _) = client
        .compile_cached(&mlir, compile_opts)
        .with_context(|| format!("compiling graph `{}` with XLA", g.name))?;
    Ok((mlir, exe, outcome))
}

/// Host arrays onto devices (a trait because `HostArray` lives in `data`, which has no PJRT).
pub trait ToDevice {
    /// Scatters the array over devices `0..` by `layout`.
    fn to_sharded(&self, client: &Client, layout: &ShardLayout) -> Result<ShardedArray>;
    /// Copies the array to one device.
    fn to_device(&self, client: &Client, device: usize) -> Result<Buffer>;
}

impl ToDevice for HostArray {
    fn to_sharded(&self, client: &Client, layout: &ShardLayout) -> Result<ShardedArray> {
        let devices: Vec<usize> = (0..layout.num_devices()).collect();
        Ok(match self {
            HostArray::F32 { data, .. } => ShardedArray::from_host(client, data, layout, &devices)?,
            HostArray::I32 { data, .. } => ShardedArray::from_host(client, data, layout, &devices)?,
        })
    }

    fn to_device(&self, client: &Client, device: usize) -> Result<Buffer> {
        Ok(match self {
            HostArray::F32 { data, dims } => client.buffer_from_host(data, dims, device)?,
            HostArray::I32 { data, dims } => client.buffer_from_host(data, dims, device)?,
        })
    }
}
