//! Pure numerics on f32 slices, accumulated in f64: no tensors, no charts, no I/O.

pub mod columns;
pub mod covariance;
pub mod double_double;
pub mod gram;
pub mod histogram;
pub mod moments;
pub mod sampling;
pub mod tree;

pub use columns::ColumnMoments;
pub use covariance::CoMoments;
pub use histogram::Histogram;
pub use moments::{Located, Moments};
pub use sampling::{point_hash, BottomK, Kept, SplitMix64};
pub use tree::{Merge, Tree};
