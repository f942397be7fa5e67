//! Bounded, seeded samples of a stream of points (reservoir sampling, Algorithm R): memory
//! is the sample size, whatever the corpus size, and the same seed and stream give the
//! same sample.

/// splitmix64: small, seeded, and stable across platforms and versions (unlike a crate's
/// default generator, whose stream may change between releases and break reproducibility).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..=max` without modulo bias (Lemire's method, with rejection).
    pub fn below_or_eq(&mut self, max: u64) -> u64 {
        let range = max.wrapping_add(1);
        if range == 0 {
            return self.next_u64();
        }
        let threshold = range.wrapping_neg() % range;
        loop {
            let m = (self.next_u64() as u128) * (range as u128);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }
}

/// A sample of at most `capacity` points, each `T`, tagged with its position in the stream.
#[derive(Debug, Clone)]
pub struct Reservoir<T> {
    capacity: usize,
    seen: u64,
    items: Vec<(u64, T)>,
    rng: Option<SplitMix64>,
}

impl<T> Reservoir<T> {
    /// The first `capacity` points of the stream.
    pub fn first(capacity: usize) -> Self {
        Self {
            capacity,
            seen: 0,
            items: Vec::with_capacity(capacity.min(1 << 16)),
            rng: None,
        }
    }

    /// A uniform random sample of `capacity` points, seeded.
    pub fn random(capacity: usize, seed: u64) -> Self {
        Self {
            rng: Some(SplitMix64::new(seed)),
            ..Self::first(capacity)
        }
    }

    /// Offers the next point; `make` is called only if the point is kept.
    pub fn offer(&mut self, make: impl FnOnce() -> T) {
        let t = self.seen;
        self.seen += 1;
        if self.items.len() < self.capacity {
            self.items.push((t, make()));
        } else if let Some(rng) = &mut self.rng {
            let j = rng.below_or_eq(t) as usize;
            if j < self.capacity {
                self.items[j] = (t, make());
            }
        }
    }

    /// True when a `first` sample is full (the rest of the stream can be skipped).
    pub fn is_done(&self) -> bool {
        self.rng.is_none() && self.items.len() >= self.capacity
    }

    /// Points offered so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// The sample in stream order, with stream positions.
    pub fn into_sorted(mut self) -> Vec<(u64, T)> {
        self.items.sort_by_key(|(t, _)| *t);
        self.items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_keeps_the_head() {
        let mut r = Reservoir::first(3);
        for i in 0..10 {
            r.offer(|| i);
        }
        assert!(r.is_done());
        assert_eq!(r.into_sorted(), vec![(0, 0), (1, 1), (2, 2)]);
    }

    #[test]
    fn random_is_seeded_bounded_and_roughly_uniform() {
        let run = |seed| {
            let mut r = Reservoir::random(100, seed);
            for i in 0..10_000u64 {
                r.offer(|| i);
            }
            r.into_sorted()
        };
        let a = run(1);
        assert_eq!(a.len(), 100);
        assert_eq!(a, run(1));
        assert_ne!(a, run(2));
        // Uniform: about half the sample comes from each half of the stream.
        let low = a.iter().filter(|(t, _)| *t < 5_000).count();
        assert!((30..=70).contains(&low), "{low}");
    }
}
