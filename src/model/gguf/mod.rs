//! GGUF files (llama.cpp's format): every family strata runs, and its tokenizer, from the
//! one file, read as llama.cpp's converter writes them and as `transformers` loads them
//! with `gguf_file=`.
//!
//! The metadata becomes the family's parameters ([`params`]); each family's loader then
//! reads its tensors by their Hugging Face names through [`store`], which finds the GGUF
//! tensor the converter wrote for each ([`names`]): one forward per family, whatever
//! file it came from.
//!
//! Weights stay in memory as the file stores them, quantized. By default each projection
//! is dequantized to f32 when the forward pass reaches it, into a reused buffer, which
//! gives the f32 weights transformers dequantizes on load, so the hidden states match it,
//! while memory stays near the file's size. With `quantized` the projections run through
//! candle's quantized matmul instead: faster, but the numbers are those of llama.cpp-style
//! int8 dot products, not transformers'.

pub(crate) mod file;
mod header;
mod names;
mod params;
mod store;
pub mod tokenizer;

use std::path::Path;

use self::file::Gguf;
pub use self::header::tensor_types;
use self::params::Params;
pub use self::params::ARCHITECTURES;
use self::store::GgufStore;
use super::error::ModelError;
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
        q = format!("{q} (quantized matmul)");
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
}

/// Shape, labels and quantization type, from the header alone.
pub fn read_info(path: &Path) -> Result<ModelInfo, ModelError> {
    let g = Gguf::open(path)?;
    let mut info = params::read(&g)?.1.info();
    describe(&g, &mut info, false);
    Ok(info)
}

/// Loads the model; `quantized` multiplies by the quantized projections directly.
pub fn load(path: &Path, quantized: bool) -> Result<Box<dyn HiddenStateModel>, ModelError> {
    let g = Gguf::open(path)?;
    let (arch, p) = params::read(&g)?;
    let store = GgufStore {
        arch,
        n_head: p.n_head(),
        n_experts: p.n_experts(),
        quantized,
        g,
    };
    let model: Box<dyn HiddenStateModel> = match &p {
        Params::Llama(p) => Box::new(super::llama::from_store(p, &store)?),
        Params::Gemma(p) => Box::new(super::gemma::from_store(p, &store)?),
        Params::Gpt2(c) => Box::new(super::gpt2::from_store(c, &store)?),
        Params::GptNeox(c) => Box::new(super::gpt_neox::from_store(c, &store)?),
    };
    let mut info = model.info().clone();
    describe(&store.g, &mut info, quantized);
    Ok(Box::new(Described { model, info }))
}
