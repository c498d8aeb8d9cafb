//! Host tensors of the dtypes weight files hold (f32, bf16, f16, i8, i32), their layout ops
//! (transpose, split) and their safetensors encoding. Checkpoints, Keras weight files and
//! pretrained imports all read and write tensors through here.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use half::{bf16, f16};
use safetensors::tensor::{Dtype as StDtype, SafeTensorError, SafeTensors, TensorView, View};

use files::write_atomic;

/// The element types a weight file may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dtype {
    F32,
    BF16,
    F16,
    I8,
    I32,
}

impl Dtype {
    pub fn is_float(self) -> bool {
        matches!(self, Dtype::F32 | Dtype::BF16 | Dtype::F16)
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 | Dtype::I32 => 4,
            Dtype::BF16 | Dtype::F16 => 2,
            Dtype::I8 => 1,
        }
    }

    /// Whether every value of `self` is exactly a value of `to`, so a cast loses nothing.
    pub fn widens_to(self, to: Dtype) -> bool {
        self == to
            || matches!(
                (self, to),
                (Dtype::BF16 | Dtype::F16, Dtype::F32) | (Dtype::I8, Dtype::I32)
            )
    }

    /// The dtype of a graph tensor, if weight files can hold it.
    pub fn of_graph(d: graph::DType) -> Option<Dtype> {
        match d {
            graph::DType::F32 => Some(Dtype::F32),
            graph::DType::BF16 => Some(Dtype::BF16),
            graph::DType::F16 => Some(Dtype::F16),
            graph::DType::I32 => Some(Dtype::I32),
            _ => None,
        }
    }

    fn safetensors(self) -> StDtype {
        match self {
            Dtype::F32 => StDtype::F32,
            Dtype::BF16 => StDtype::BF16,
            Dtype::F16 => StDtype::F16,
            Dtype::I8 => StDtype::I8,
            Dtype::I32 => StDtype::I32,
        }
    }

    /// The dtype of a safetensors tensor, if rxla reads it.
    pub fn of_safetensors(d: StDtype) -> Option<Dtype> {
        match d {
            StDtype::F32 => Some(Dtype::F32),
            StDtype::BF16 => Some(Dtype::BF16),
            StDtype::F16 => Some(Dtype::F16),
            StDtype::I8 => Some(Dtype::I8),
            StDtype::I32 => Some(Dtype::I32),
            _ => None,
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dtype::F32 => "f32",
            Dtype::BF16 => "bf16",
            Dtype::F16 => "f16",
            Dtype::I8 => "i8",
            Dtype::I32 => "i32",
        })
    }
}

/// The values of a tensor, row-major, in their stored dtype.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    BF16(Vec<bf16>),
    F16(Vec<f16>),
    I8(Vec<i8>),
    I32(Vec<i32>),
}

/// `$body` on the vector inside whichever variant `$data` is.
macro_rules! with_vec {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            TensorData::F32($v) => $body,
            TensorData::BF16($v) => $body,
            TensorData::F16($v) => $body,
            TensorData::I8($v) => $body,
            TensorData::I32($v) => $body,
        }
    };
}

/// `$body` (a vector) wrapped back in the variant `$data` is.
macro_rules! map_vec {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            TensorData::F32($v) => TensorData::F32($body),
            TensorData::BF16($v) => TensorData::BF16($body),
            TensorData::F16($v) => TensorData::F16($body),
            TensorData::I8($v) => TensorData::I8($body),
            TensorData::I32($v) => TensorData::I32($body),
        }
    };
}

impl TensorData {
    pub fn dtype(&self) -> Dtype {
        match self {
            TensorData::F32(_) => Dtype::F32,
            TensorData::BF16(_) => Dtype::BF16,
            TensorData::F16(_) => Dtype::F16,
            TensorData::I8(_) => Dtype::I8,
            TensorData::I32(_) => Dtype::I32,
        }
    }

    pub fn len(&self) -> usize {
        with_vec!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values as f32: exact for f32, bf16, f16 and i8; i32 rounds past 2^24.
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            TensorData::F32(v) => v.clone(),
            TensorData::BF16(v) => v.iter().map(|x| x.to_f32()).collect(),
            TensorData::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            TensorData::I8(v) => v.iter().map(|&x| x as f32).collect(),
            TensorData::I32(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// [`TensorData::to_f32`] without a copy when the data is f32 already.
    pub fn into_f32(self) -> Vec<f32> {
        match self {
            TensorData::F32(v) => v,
            other => other.to_f32(),
        }
    }

    /// The values in dtype `to`. Floats round to nearest even; integers convert exactly or
    /// fail on a value out of range; floats never become integers (that is quantization,
    /// which needs scales).
    pub fn cast(&self, to: Dtype) -> Result<TensorData> {
        let from = self.dtype();
        if from == to {
            return Ok(self.clone());
        }
        Ok(match to {
            Dtype::F32 => TensorData::F32(self.to_f32()),
            Dtype::BF16 => {
                TensorData::BF16(self.to_f32().into_iter().map(bf16::from_f32).collect())
            }
            Dtype::F16 => TensorData::F16(self.to_f32().into_iter().map(f16::from_f32).collect()),
            Dtype::I32 | Dtype::I8 if from.is_float() => bail!(
                "casting {from} to {to} would truncate the values: integer weights need a \
                 quantizer with scales, not a cast"
            ),
            Dtype::I32 => match self {
                TensorData::I8(v) => TensorData::I32(v.iter().map(|&x| x as i32).collect()),
                _ => unreachable!("the integer dtypes are i8 and i32"),
            },
            Dtype::I8 => match self {
                TensorData::I32(v) => TensorData::I8(
                    v.iter()
                        .map(|&x| {
                            i8::try_from(x)
                                .map_err(|_| anyhow!("casting i32 to i8: {x} is out of range"))
                        })
                        .collect::<Result<_>>()?,
                ),
                _ => unreachable!("the integer dtypes are i8 and i32"),
            },
        })
    }

    /// The values with dims permuted: output dim `i` is input dim `perm[i]`.
    /// `dims` and `perm` must be consistent (checked by the caller's shape rule).
    pub fn permute(&self, dims: &[i64], perm: &[usize]) -> TensorData {
        map_vec!(self, v => permute(v, dims, perm))
    }

    /// The values split along `dim` into `parts` equal pieces (each keeps the dim).
    pub fn split(&self, dims: &[i64], dim: usize, parts: usize) -> Vec<TensorData> {
        (0..parts)
            .map(|p| map_vec!(self, v => split_part(v, dims, dim, parts, p)))
            .collect()
    }

    /// The values as little-endian bytes (the safetensors layout).
    pub fn to_le_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len() * self.dtype().size());
        match self {
            TensorData::F32(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
            TensorData::BF16(v) => v.iter().for_each(|x| out.extend(x.to_bits().to_le_bytes())),
            TensorData::F16(v) => v.iter().for_each(|x| out.extend(x.to_bits().to_le_bytes())),
            TensorData::I8(v) => out.extend(v.iter().map(|&x| x as u8)),
            TensorData::I32(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
        }
        out
    }

    /// Values from little-endian bytes; `bytes.len()` must be a multiple of the dtype size.
    pub fn from_le_bytes(dtype: Dtype, bytes: &[u8]) -> TensorData {
        let u16s = || {
            bytes
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
        };
        match dtype {
            Dtype::F32 => TensorData::F32(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            Dtype::BF16 => TensorData::BF16(u16s().map(bf16::from_bits).collect()),
            Dtype::F16 => TensorData::F16(u16s().map(f16::from_bits).collect()),
            Dtype::I8 => TensorData::I8(bytes.iter().map(|&b| b as i8).collect()),
            Dtype::I32 => TensorData::I32(
                bytes
                    .chunks_exact(4)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
        }
    }
}

/// Row-major strides of `dims`.
fn strides(dims: &[i64]) -> Vec<usize> {
    let mut s = vec![1usize; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1] as usize;
    }
    s
}

fn permute<T: Copy>(v: &[T], dims: &[i64], perm: &[usize]) -> Vec<T> {
    let in_strides = strides(dims);
    let out_dims: Vec<usize> = perm.iter().map(|&p| dims[p] as usize).collect();
    // Input stride of each output dim: walking the output in order gathers from the input.
    let step: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    let mut out = Vec::with_capacity(v.len());
    if v.is_empty() {
        return out;
    }
    let rank = out_dims.len();
    let mut idx = vec![0usize; rank];
    let mut offset = 0usize;
    loop {
        out.push(v[offset]);
        // Odometer over the output index, keeping the input offset in step.
        let mut d = rank;
        loop {
            if d == 0 {
                return out;
            }
            d -= 1;
            idx[d] += 1;
            offset += step[d];
            if idx[d] < out_dims[d] {
                break;
            }
            offset -= step[d] * idx[d];
            idx[d] = 0;
        }
    }
}

fn split_part<T: Copy>(v: &[T], dims: &[i64], dim: usize, parts: usize, p: usize) -> Vec<T> {
    let outer: usize = dims[..dim].iter().product::<i64>() as usize;
    let inner: usize = dims[dim + 1..].iter().product::<i64>() as usize;
    let n = dims[dim] as usize;
    let chunk = n / parts * inner;
    let mut out = Vec::with_capacity(outer * chunk);
    for o in 0..outer {
        let start = o * n * inner + p * chunk;
        out.extend_from_slice(&v[start..start + chunk]);
    }
    out
}

/// A named f32 tensor on the host: parameters and optimizer state as the trainer holds them
/// (checkpoints' hot path; [`Tensor`] holds the other dtypes).
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub dims: Vec<i64>,
    pub data: Vec<f32>,
}

/// A named tensor of any weight dtype on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub dims: Vec<i64>,
    pub data: TensorData,
}

impl Tensor {
    /// A tensor whose dims are non-negative and hold exactly its values.
    pub fn new(name: impl Into<String>, dims: Vec<i64>, data: TensorData) -> Result<Tensor> {
        let name = name.into();
        check_count(&name, &dims, data.len())?;
        Ok(Tensor { name, dims, data })
    }

    pub fn dtype(&self) -> Dtype {
        self.data.dtype()
    }

    /// The f32 tensor the trainer holds: floats widen exactly; integers are refused, since
    /// an integer weight (a quantized one) means nothing without its scales.
    pub fn into_f32(self) -> Result<NamedTensor> {
        if !self.dtype().is_float() {
            bail!(
                "tensor `{}` is {}, not a float: dequantize it with its scales, or load it with \
                 train::weights (a Cast rule), not as f32 parameters",
                self.name,
                self.dtype()
            );
        }
        Ok(NamedTensor {
            name: self.name,
            dims: self.dims,
            data: self.data.into_f32(),
        })
    }
}

impl From<NamedTensor> for Tensor {
    fn from(t: NamedTensor) -> Tensor {
        Tensor {
            name: t.name,
            dims: t.dims,
            data: TensorData::F32(t.data),
        }
    }
}

fn check_count(name: &str, dims: &[i64], len: usize) -> Result<Vec<usize>> {
    let shape: Vec<usize> = dims
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<_, _>>()
        .map_err(|_| anyhow!("tensor `{name}` has a negative dim in {dims:?}"))?;
    let n: usize = shape.iter().product();
    if n != len {
        bail!("tensor `{name}` has shape {dims:?} ({n} values) but holds {len} values");
    }
    Ok(shape)
}

/// What the safetensors writer needs of a tensor, so f32 checkpoint tensors
/// ([`NamedTensor`]) and typed ones ([`Tensor`]) encode alike, without a copy.
pub trait TensorRef {
    fn name(&self) -> &str;
    fn dims(&self) -> &[i64];
    fn dtype(&self) -> Dtype;
    fn num_values(&self) -> usize;
    fn le_bytes(&self) -> Vec<u8>;
}

impl TensorRef for Tensor {
    fn name(&self) -> &str {
        &self.name
    }
    fn dims(&self) -> &[i64] {
        &self.dims
    }
    fn dtype(&self) -> Dtype {
        self.data.dtype()
    }
    fn num_values(&self) -> usize {
        self.data.len()
    }
    fn le_bytes(&self) -> Vec<u8> {
        self.data.to_le_bytes()
    }
}

impl TensorRef for NamedTensor {
    fn name(&self) -> &str {
        &self.name
    }
    fn dims(&self) -> &[i64] {
        &self.dims
    }
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn num_values(&self) -> usize {
        self.data.len()
    }
    fn le_bytes(&self) -> Vec<u8> {
        self.data.iter().flat_map(|x| x.to_le_bytes()).collect()
    }
}

/// A tensor as the safetensors crate serializes it: bytes made one tensor at a time, so
/// writing holds the file and one tensor, not a second copy of every tensor.
struct Encoded<'a, T> {
    t: &'a T,
    shape: Vec<usize>,
}

impl<T: TensorRef> View for Encoded<'_, T> {
    fn dtype(&self) -> StDtype {
        self.t.dtype().safetensors()
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.t.le_bytes())
    }
    fn data_len(&self) -> usize {
        self.t.num_values() * self.t.dtype().size()
    }
}

/// The safetensors bytes of `tensors` (names must be unique).
pub fn encode<T: TensorRef>(tensors: &[T]) -> Result<Vec<u8>> {
    let mut seen = HashSet::new();
    let mut views = Vec::with_capacity(tensors.len());
    for t in tensors {
        if !seen.insert(t.name()) {
            bail!(
                "two tensors are named `{}`: names in a weight file must be unique",
                t.name()
            );
        }
        let shape = check_count(t.name(), t.dims(), t.num_values())?;
        views.push((t.name().to_string(), Encoded { t, shape }));
    }
    Ok(safetensors::serialize(views, &None)?)
}

/// Writes `tensors` to one safetensors file (atomically).
pub fn write<T: TensorRef>(path: &Path, tensors: &[T]) -> Result<()> {
    let bytes = encode(tensors).with_context(|| format!("writing {}", path.display()))?;
    Ok(write_atomic(path, &bytes)?)
}

/// The crate's error in words a user can act on.
fn explain(e: &SafeTensorError) -> String {
    match e {
        SafeTensorError::HeaderTooSmall | SafeTensorError::InvalidHeaderLength => {
            "it is too short for its header (truncated?)".into()
        }
        SafeTensorError::MetadataIncompleteBuffer => {
            "its size does not match its header (truncated, or bytes appended)".into()
        }
        SafeTensorError::InvalidHeader
        | SafeTensorError::InvalidHeaderStart
        | SafeTensorError::InvalidHeaderDeserialization
        | SafeTensorError::HeaderTooLarge => "its header is not valid safetensors JSON".into(),
        SafeTensorError::InvalidOffset(name) => {
            format!("the data offsets of tensor `{name}` are inconsistent")
        }
        SafeTensorError::TensorInvalidInfo | SafeTensorError::ValidationOverflow => {
            "a tensor's shape and dtype do not match its byte range".into()
        }
        other => format!("{other}"),
    }
}

/// The header of a safetensors file in `bytes` (tensor data stays in `bytes`).
pub fn parse<'a>(bytes: &'a [u8], what: &Path) -> Result<SafeTensors<'a>> {
    SafeTensors::deserialize(bytes).map_err(|e| {
        anyhow!(
            "{} is not a valid safetensors file: {}; re-download or re-export it",
            what.display(),
            explain(&e)
        )
    })
}

/// The dtype of tensor `name` of file `what`, or an error if rxla does not read it.
pub fn dtype_of(name: &str, d: StDtype, what: &Path) -> Result<Dtype> {
    Dtype::of_safetensors(d).ok_or_else(|| {
        anyhow!(
            "{}: tensor `{name}` is {d:?}, which rxla does not read (it reads f32, bf16, f16, i8 \
             and i32): convert the file, or drop the tensor from the load",
            what.display()
        )
    })
}

/// Decodes tensor `name` of file `what`.
pub fn decode_view(name: &str, view: &TensorView<'_>, what: &Path) -> Result<Tensor> {
    let dtype = dtype_of(name, view.dtype(), what)?;
    Ok(Tensor {
        name: name.to_string(),
        dims: view.shape().iter().map(|&d| d as i64).collect(),
        data: TensorData::from_le_bytes(dtype, view.data()),
    })
}

/// Every tensor of safetensors `bytes` (from file `what`), sorted by name.
pub fn decode(bytes: &[u8], what: &Path) -> Result<Vec<Tensor>> {
    let st = parse(bytes, what)?;
    let mut views = st.tensors();
    views.sort_by(|a, b| a.0.cmp(&b.0));
    views
        .iter()
        .map(|(name, view)| decode_view(name, view, what))
        .collect()
}

/// Every tensor of a safetensors file, sorted by name.
pub fn read(path: &Path) -> Result<Vec<Tensor>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    decode(&bytes, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("rxla-tensor-{}-{name}", std::process::id()))
    }

    fn data_of(dtype: Dtype) -> TensorData {
        // Values each dtype represents exactly, edge cases included.
        let f = [0.0f32, -0.0, 1.0, -2.5, 0.15625, 24576.0, -1.0e-3];
        match dtype {
            Dtype::F32 => TensorData::F32(vec![
                0.0,
                -0.0,
                1.0,
                -2.5,
                1e-30,
                f32::MAX,
                f32::MIN_POSITIVE,
            ]),
            Dtype::BF16 => TensorData::BF16(f.iter().map(|&x| bf16::from_f32(x)).collect()),
            Dtype::F16 => TensorData::F16(f.iter().map(|&x| f16::from_f32(x)).collect()),
            Dtype::I8 => TensorData::I8(vec![-128, -1, 0, 1, 64, 127, 3]),
            Dtype::I32 => TensorData::I32(vec![i32::MIN, -1, 0, 1, 1 << 24, i32::MAX, 7]),
        }
    }

    #[test]
    fn every_dtype_round_trips_exactly() {
        let all = [Dtype::F32, Dtype::BF16, Dtype::F16, Dtype::I8, Dtype::I32];
        let tensors: Vec<Tensor> = all
            .iter()
            .map(|&d| Tensor::new(format!("t.{d}"), vec![7], data_of(d)).unwrap())
            .collect();
        let p = tmp("all.safetensors");
        write(&p, &tensors).unwrap();
        let back = read(&p).unwrap();
        let mut want = tensors.clone();
        want.sort_by(|a, b| a.name.cmp(&b.name));
        // Bit for bit (-0.0 included): compare the encoded bytes too.
        assert_eq!(back, want);
        for (b, w) in back.iter().zip(&want) {
            assert_eq!(b.data.to_le_bytes(), w.data.to_le_bytes(), "{}", w.name);
            assert_eq!(b.dtype(), w.dtype());
        }
        // The exact widenings give the same numbers as f32.
        let bf = &back.iter().find(|t| t.name == "t.bf16").unwrap().data;
        assert_eq!(
            bf.to_f32(),
            vec![
                0.0,
                -0.0,
                1.0,
                -2.5,
                0.15625,
                24576.0,
                bf16::from_f32(-1.0e-3).to_f32()
            ]
        );
        let h = back.iter().find(|t| t.name == "t.f16").unwrap().clone();
        assert_eq!(
            h.into_f32().unwrap().data[..6],
            [0.0, -0.0, 1.0, -2.5, 0.15625, 24576.0]
        );
        let e = back[3].clone().into_f32().unwrap_err().to_string();
        assert!(e.contains("`t.i32` is i32, not a float"), "{e}");
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn casts_round_or_refuse() {
        let x = TensorData::F32(vec![1.0, 1.0 + 1.0 / 256.0, -3.0e38, 0.1]);
        // bf16 keeps 7 mantissa bits: 1 + 2^-8 is a tie, rounded to even (1.0).
        let b = x.cast(Dtype::BF16).unwrap();
        assert_eq!(b.to_f32()[..2], [1.0, 1.0]);
        assert_eq!(b.to_f32()[3], bf16::from_f32(0.1).to_f32());
        // f16 overflows to -inf past 65504.
        assert_eq!(x.cast(Dtype::F16).unwrap().to_f32()[2], f32::NEG_INFINITY);
        let e = x.cast(Dtype::I8).unwrap_err().to_string();
        assert!(e.contains("quantizer"), "{e}");
        let i = TensorData::I8(vec![-128, 5]);
        assert_eq!(i.cast(Dtype::I32).unwrap(), TensorData::I32(vec![-128, 5]));
        let wide = TensorData::I32(vec![5, 300]);
        let e = wide.cast(Dtype::I8).unwrap_err().to_string();
        assert!(e.contains("300 is out of range"), "{e}");
        assert!(Dtype::BF16.widens_to(Dtype::F32) && !Dtype::F32.widens_to(Dtype::BF16));
        assert!(!Dtype::I8.widens_to(Dtype::F32));
    }

    #[test]
    fn permute_and_split_move_the_right_elements() {
        // x[i, j, k] = 100 i + 10 j + k, dims (2, 3, 4).
        let dims = [2i64, 3, 4];
        let v: Vec<i32> = (0..2)
            .flat_map(|i| (0..3).flat_map(move |j| (0..4).map(move |k| 100 * i + 10 * j + k)))
            .collect();
        let x = TensorData::I32(v);
        let TensorData::I32(y) = x.permute(&dims, &[2, 0, 1]) else {
            panic!()
        };
        // y[k, i, j] = x[i, j, k], dims (4, 2, 3).
        for k in 0..4 {
            for i in 0..2 {
                for j in 0..3 {
                    assert_eq!(
                        y[k * 6 + i * 3 + j],
                        100 * i as i32 + 10 * j as i32 + k as i32
                    );
                }
            }
        }
        let parts = x.split(&dims, 2, 2); // two (2, 3, 2)
        let TensorData::I32(second) = &parts[1] else {
            panic!()
        };
        assert_eq!(second[..4], [2, 3, 12, 13]);
        assert_eq!(second.len(), 12);
        assert_eq!(second[11], 123);
        let rows = x.split(&dims, 0, 2);
        assert_eq!(rows[1].to_f32()[0], 100.0);
        // Scalars and empty tensors pass through.
        assert_eq!(
            TensorData::F32(vec![4.0]).permute(&[], &[]),
            TensorData::F32(vec![4.0])
        );
        assert!(TensorData::F32(vec![]).permute(&[0, 3], &[1, 0]).is_empty());
    }

    #[test]
    fn bad_files_and_tensors_are_clear_errors() {
        let t = Tensor::new("w", vec![2, 2], TensorData::F32(vec![1.0, 2.0, 3.0, 4.0])).unwrap();
        let p = tmp("bad.safetensors");
        write(&p, std::slice::from_ref(&t)).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        // Truncated.
        std::fs::write(&p, &bytes[..bytes.len() - 3]).unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(
            e.contains("bad.safetensors") && e.contains("truncated"),
            "{e}"
        );
        std::fs::write(&p, &bytes[..5]).unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(e.contains("too short"), "{e}");
        // A corrupted header.
        let mut b = bytes.clone();
        b[9] = b'#';
        std::fs::write(&p, &b).unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(e.contains("not valid safetensors JSON"), "{e}");
        // A dtype rxla does not read (f64), written with the crate itself.
        let raw = 1.0f64.to_le_bytes();
        let v = TensorView::new(StDtype::F64, vec![1], &raw).unwrap();
        std::fs::write(&p, safetensors::serialize([("d", v)], &None).unwrap()).unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(
            e.contains("tensor `d` is F64, which rxla does not read"),
            "{e}"
        );
        // Writing refuses duplicate names and shapes that do not hold the data.
        let e = encode(&[t.clone(), t.clone()]).unwrap_err().to_string();
        assert!(e.contains("two tensors are named `w`"), "{e}");
        let e = Tensor::new("v", vec![3], TensorData::I8(vec![1]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`v` has shape [3] (3 values) but holds 1"),
            "{e}"
        );
        std::fs::remove_file(&p).unwrap();
    }
}
