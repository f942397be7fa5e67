//! Why two partial statistics do not merge, or sums give no statistic: below every
//! accumulator of this folder.

/// A merge or a finish of exact sums that cannot be done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatsError {
    /// A tree of per-text states does not continue where this one ends.
    #[error("texts {end}.. expected next, got a state starting at text {start}")]
    NotNext {
        /// The first text this range expects next.
        end: u64,
        /// The first text of the range offered.
        start: u64,
    },
    /// A tree block that is not aligned to its size, or leaves a gap.
    #[error("a block at text {start} of level {level} is not an aligned, contiguous block")]
    Unaligned {
        /// Its first text.
        start: u64,
        /// Its level (it spans `2^level` texts).
        level: u32,
    },
    /// Two accumulators over different things: which.
    #[error("{0}")]
    Differ(&'static str),
    /// Fixed-point sums past their range.
    #[error("the exact sums overflowed (activations beyond 1e11, or a sum beyond 3.8e22)")]
    Overflow,
}
