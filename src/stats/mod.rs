//! Pure numerics on f32 slices, accumulated in f64: no tensors, no charts, no I/O.

pub mod covariance;
pub mod histogram;
pub mod moments;
pub mod sampling;

pub use covariance::CoMoments;
pub use histogram::Histogram;
pub use moments::{Located, Moments};
pub use sampling::{Reservoir, SplitMix64};
