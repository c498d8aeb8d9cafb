//! Per-process rows of the global batch. In a job of N processes, process p builds only rows
//! `process_rows(batch, p, N)` of every step's batch, and those rows are exactly the ones the
//! single-process batch of that step has there: batches stay a function of (seed, step), so a
//! run resumes exactly on a different number of processes.

use std::ops::Range;

use anyhow::{bail, Result};

use crate::host::HostArray;

/// The rows of a `batch`-row global batch that process `process` of `processes` builds:
/// contiguous equal blocks, in process order (the data axis is split the same way).
pub fn process_rows(batch: usize, process: usize, processes: usize) -> Result<Range<usize>> {
    if processes == 0 || process >= processes {
        bail!("process {process} is out of range for {processes} processes");
    }
    if !batch.is_multiple_of(processes) {
        bail!(
            "train.batch_size {batch} does not split evenly over {processes} processes: make \
             it a multiple of {processes}"
        );
    }
    let per = batch / processes;
    Ok(process * per..(process + 1) * per)
}

impl HostArray {
    /// Rows `rows` of the leading dim.
    pub fn rows(&self, rows: Range<usize>) -> HostArray {
        fn cut<T: Clone>(data: &[T], dims: &[i64], rows: &Range<usize>) -> (Vec<T>, Vec<i64>) {
            let per: usize = dims[1..].iter().product::<i64>() as usize;
            let mut d = dims.to_vec();
            d[0] = rows.len() as i64;
            (data[rows.start * per..rows.end * per].to_vec(), d)
        }
        match self {
            HostArray::F32 { data, dims } => {
                let (data, dims) = cut(data, dims, &rows);
                HostArray::F32 { data, dims }
            }
            HostArray::I32 { data, dims } => {
                let (data, dims) = cut(data, dims, &rows);
                HostArray::I32 { data, dims }
            }
        }
    }

    /// Arrays of equal trailing dims stacked along the leading dim (the inverse of `rows`).
    pub fn concat(parts: &[HostArray]) -> Result<HostArray> {
        let Some(first) = parts.first() else {
            bail!("nothing to concatenate");
        };
        let mut dims = first.dims().to_vec();
        dims[0] = 0;
        for p in parts {
            if p.dims()[1..] != first.dims()[1..] {
                bail!("cannot stack {:?} on {:?}", p.dims(), first.dims());
            }
            dims[0] += p.dims()[0];
        }
        Ok(match first {
            HostArray::F32 { .. } => HostArray::F32 {
                data: parts
                    .iter()
                    .map(|p| match p {
                        HostArray::F32 { data, .. } => Ok(data.clone()),
                        _ => bail!("mixed dtypes"),
                    })
                    .collect::<Result<Vec<_>>>()?
                    .concat(),
                dims,
            },
            HostArray::I32 { .. } => HostArray::I32 {
                data: parts
                    .iter()
                    .map(|p| match p {
                        HostArray::I32 { data, .. } => Ok(data.clone()),
                        _ => bail!("mixed dtypes"),
                    })
                    .collect::<Result<Vec<_>>>()?
                    .concat(),
                dims,
            },
        })
    }
}
