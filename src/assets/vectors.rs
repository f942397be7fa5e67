//! Vectors files: named directions in a model's hidden space, as safetensors (what the
//! `directions` kind saves, a steering vector, a persona vector, a probe's weights): each
//! tensor one `[d]` vector, in f32, f16, bf16 or f64, widened to f32. Read once by the
//! run's setup ([`super::Assets`]); the `project` kind groups the names into vectors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

/// A vectors file, read.
#[derive(Debug)]
pub struct Vectors {
    /// The file.
    pub path: PathBuf,
    /// sha256 of its bytes.
    pub sha256: String,
    /// Every tensor by name, widened to f32.
    pub tensors: BTreeMap<String, Vec<f32>>,
}

/// Why a vectors file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum VectorsError {
    /// Missing or unreadable.
    #[error("{}: {detail}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// A tensor that is not one vector of a float type.
    #[error("{}: tensor {name:?} is {what}: a vectors file holds one [d] float vector per name", path.display())]
    Tensor {
        /// The file.
        path: PathBuf,
        /// The tensor.
        name: String,
        /// Its shape and dtype.
        what: String,
    },
}

/// Reads the vectors file at `path` (relative to `base`, the spec's folder).
pub fn load(path: &Path, base: &Path) -> Result<Vectors, VectorsError> {
    let full = base.join(path);
    let err = |detail: String| VectorsError::File {
        path: full.clone(),
        detail,
    };
    let bytes = std::fs::read(&full).map_err(|e| {
        err(format!(
            "{e} (paths are relative to the spec file; `directions` with `save: DIR` writes DIR/directions.safetensors)"
        ))
    })?;
    let file = SafeTensors::deserialize(&bytes)
        .map_err(|e| err(format!("not a safetensors file ({e})")))?;
    let mut tensors = BTreeMap::new();
    for (name, view) in file.tensors() {
        let bad = || VectorsError::Tensor {
            path: full.clone(),
            name: name.clone(),
            what: format!("{:?} {:?}", view.shape(), view.dtype()),
        };
        if view.shape().len() != 1 {
            return Err(bad());
        }
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F64 => data
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or_default()) as f32)
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            _ => return Err(bad()),
        };
        tensors.insert(name, values);
    }
    Ok(Vectors {
        path: full,
        sha256: crate::digest::sha256_hex(&bytes),
        tensors,
    })
}
