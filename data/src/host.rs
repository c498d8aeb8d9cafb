//! Host arrays: the typed batches data sources hand the trainer.

/// A typed host array fed to a program (a batch input).
#[derive(Debug, Clone, PartialEq)]
pub enum HostArray {
    F32 { data: Vec<f32>, dims: Vec<i64> },
    I32 { data: Vec<i32>, dims: Vec<i64> },
}

impl HostArray {
    pub fn dims(&self) -> &[i64] {
        match self {
            HostArray::F32 { dims, .. } | HostArray::I32 { dims, .. } => dims,
        }
    }
}
