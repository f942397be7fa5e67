//! The files a spec names beside its model, which the run reads once at its start and
//! hands to the kinds ready to use: tuned lenses now, and whatever a kind names next (a
//! sparse autoencoder, a vectors file). A kind declares what it needs ([`AssetRef`]); the run's
//! setup resolves every need, records where each came from, and the kind finds the result
//! in [`Assets`]. So no kind reads a file, the network or the environment.

pub mod env;
pub mod sae;
pub mod torch_save;
pub mod tuned_lens;
pub mod vectors;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use env::AssetEnv;
pub use sae::{Sae, SaeError, SaeLocation};
pub use tuned_lens::{LensError, TunedLens, TunedLensSource};
pub use vectors::{Vectors, VectorsError};

/// An external file a kind reads, as the spec names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum AssetRef {
    /// A tuned lens: a folder, or the id it is published under.
    TunedLens(String),
    /// A sparse autoencoder, and the input scale the spec gives it (`f64::to_bits`).
    Sae(SaeLocation, Option<u64>),
    /// A vectors file (safetensors), relative to the spec's folder.
    Vectors(std::path::PathBuf),
}

/// Every asset of a run, read, or why it could not be: the kind that needs an asset
/// reports its error by the field that names it, after the checks it makes first.
#[derive(Debug, Default)]
pub struct Assets {
    lenses: BTreeMap<String, Result<TunedLens, LensError>>,
    saes: BTreeMap<(SaeLocation, Option<u64>), ReadSae>,
    vectors: BTreeMap<std::path::PathBuf, Result<Vectors, VectorsError>>,
}

/// An SAE read once and shared by every analysis that applies it, or why it could not be.
pub type ReadSae = Result<Arc<Sae>, Arc<SaeError>>;

impl Assets {
    /// Reads `asset` for a model of `layers` blocks of `width`, unless it was read
    /// already; a relative SAE, lens or vectors path is found beside the spec (`base`).
    pub fn resolve(
        &mut self,
        asset: &AssetRef,
        env: &AssetEnv,
        base: &std::path::Path,
        model: (usize, usize),
    ) {
        match asset {
            AssetRef::TunedLens(id) => {
                if !self.lenses.contains_key(id) {
                    self.lenses
                        .insert(id.clone(), tuned_lens::load(id, base, env, model));
                }
            }
            AssetRef::Sae(at, scale) => {
                let key = (at.clone(), *scale);
                self.saes.entry(key).or_insert_with(|| {
                    sae::load(at, base, scale.map(f64::from_bits), env)
                        .map(Arc::new)
                        .map_err(Arc::new)
                });
            }
            AssetRef::Vectors(path) => {
                self.vectors
                    .entry(path.clone())
                    .or_insert_with(|| vectors::load(path, base));
            }
        }
    }

    /// The vectors file the spec names, once resolved (`None`: never asked for).
    pub fn vectors(&self, path: &std::path::Path) -> Option<&Result<Vectors, VectorsError>> {
        self.vectors.get(path)
    }

    /// The SAE the spec names, once resolved (`None`: never asked for).
    pub fn sae(&self, at: &SaeLocation, scale: Option<f64>) -> Option<&ReadSae> {
        self.saes.get(&(at.clone(), scale.map(f64::to_bits)))
    }

    /// The tuned lens the spec names `id`, once resolved (`None`: never asked for).
    pub fn tuned_lens(&self, id: &str) -> Option<&Result<TunedLens, LensError>> {
        self.lenses.get(id)
    }
}
