//! GGUF files (llama.cpp's format): every family strata runs, and its tokenizer, from the
//! one file, read as llama.cpp's converter writes them and as `transformers` loads them
//! with `gguf_file=`.
//!
//! The file's `general.architecture` finds its family in the table of families
//! ([`super::families`]), which reads its parameters from the metadata ([`meta`]); the
//! family's loader then reads its tensors by their Hugging Face names through [`store`],
//! which finds the GGUF tensor the converter wrote for each ([`names`]): one forward per
//! family, whatever file it came from.
//!
//! Weights stay in memory as the file stores them, quantized. By default each projection
//! is dequantized to f32 when the forward pass reaches it, into a reused buffer, which
//! gives the f32 weights transformers dequantizes on load, so the hidden states match it,
//! while memory stays near the file's size. With `quantized` the projections multiply the
//! blocks as stored instead ([`crate::model::quant`]): the numbers are llama.cpp's 8-bit
//! activations times quantized weights, not transformers'.

pub(crate) mod file;
mod header;
pub(crate) mod meta;
mod names;
mod store;
pub mod tokenizer;

use std::path::Path;

use self::file::Gguf;
pub use self::header::tensor_types;
use self::meta::Meta;
use self::store::GgufStore;
use super::error::ModelError;
use super::families;
use super::family::Params;
use super::stack::{HiddenStateModel, ModelInfo};

/// Whether `path` is a GGUF file (by its magic bytes).
pub fn is_gguf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"GGUF"
}

/// What a report records of the file: its architecture and the tensor types it holds.
fn describe(g: &Gguf, info: &mut ModelInfo, quantized: bool) {
    let mut q = g.quantization();
    if quantized {
        let slow = g.unbatched_types();
        q = match slow.is_empty() {
            true => format!("{q} (quantized matmul)"),
            false => format!(
                "{q} (quantized matmul; {} one row at a time)",
                slow.join(", ")
            ),
        };
    }
    info.quantization = Some(q);
    info.tensor_types = Some(g.types());
}

/// A family's model with the file's description added to its [`ModelInfo`].
struct Described {
    model: Box<dyn HiddenStateModel>,
    info: ModelInfo,
}

impl HiddenStateModel for Described {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn forward_with(
        &self,
        batch: &[&[u32]],
        capture: &super::capture::Capture,
    ) -> Result<Vec<super::stack::TextStates>, ModelError> {
        self.model.forward_with(batch, capture)
    }

    fn readout(&self) -> Option<&dyn super::stack::Readout> {
        self.model.readout()
    }

    fn resume(
        &self,
        ids: &[u32],
        x: &[f32],
        patch: &super::stack::Patch,
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        self.model.resume(ids, x, patch)
    }
}

/// The file's architecture, checked to be one strata reads, and its family's parameters.
fn read_params(g: &Gguf) -> Result<(String, Box<dyn Params>), ModelError> {
    let arch = g.string("general.architecture").ok_or_else(|| {
        g.err("metadata `general.architecture` is missing; every GGUF model file names its architecture there: the file is damaged or not a model".into())
    })?;
    let family = families::of_gguf(&arch).ok_or_else(|| ModelError::UnsupportedArchitecture {
        path: g.path.clone(),
        model_type: arch.clone(),
        supported: format!("GGUF: {}", families::gguf_architectures().join(", ")),
    })?;
    let params = family.gguf_params(&Meta { g, arch: &arch })?;
    Ok((arch, params))
}

/// Shape, labels and quantization type, from the header alone.
pub fn read_info(path: &Path) -> Result<ModelInfo, ModelError> {
    let g = Gguf::open(path)?;
    let mut info = read_params(&g)?.1.info();
    describe(&g, &mut info, false);
    Ok(info)
}

/// Loads the model; `quantized` multiplies by the quantized projections directly.
pub fn load(path: &Path, quantized: bool) -> Result<Box<dyn HiddenStateModel>, ModelError> {
    let g = Gguf::open(path)?;
    let (arch, p) = read_params(&g)?;
    let store = GgufStore {
        arch,
        n_head: p.n_head(),
        n_experts: p.n_experts(),
        quantized,
        g,
    };
    let model = p.load(&store)?;
    let mut info = model.info().clone();
    describe(&store.g, &mut info, quantized);
    Ok(Box::new(Described { model, info }))
}
