//! Pure numerics on f32 slices, accumulated in f64: no tensors, no charts, no I/O.

pub mod bootstrap;
pub mod cca;
pub mod cka;
pub mod columns;
pub mod covariance;
pub mod double_double;
pub mod error;
pub mod gram;
pub mod histogram;
pub mod labelled;
pub mod lens_fit;
pub mod linalg;
pub mod linear;
pub mod moments;
pub mod sampling;
pub mod sketch;
pub mod tree;

pub use columns::ColumnMoments;
pub use covariance::CoMoments;
pub use error::StatsError;
pub use histogram::Histogram;
pub use moments::{Located, Moments};
pub use sampling::{point_hash, BottomK, Kept, SplitMix64};
pub use tree::{Merge, Tree};
