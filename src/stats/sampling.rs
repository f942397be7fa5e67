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
}

/// A hash of a point's identity, the same wherever and whenever the point is seen: the
/// sample of `sample: random` depends on no stream order, so every split of the corpus into
/// shards or batches picks the same points.
pub fn point_hash(seed: u64, text: u64, position: u64) -> u64 {
    let mut h = SplitMix64::new(seed ^ 0x5354_5241_5441_0001);
    let a = h.next_u64() ^ text;
    let b = SplitMix64::new(a).next_u64() ^ position;
    SplitMix64::new(b).next_u64()
}

/// One kept point: ordered by its key, then by where it sits.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kept<T> {
    /// The sort key (a hash, or 0 to keep the first points).
    pub key: u64,
    /// Global index of the point's text.
    pub text: u64,
    /// Position of the point within its text.
    pub position: u64,
    /// Position of the point in the stream, counted from the first point of the range
    /// this sample covers.
    pub offset: u64,
    /// The point.
    pub value: T,
}

impl<T> Kept<T> {
    /// The sample's order: key, then text, then position.
    pub fn order(&self) -> (u64, u64, u64) {
        (self.key, self.text, self.position)
    }
}

/// A candidate point: `(key, text, position, offset)`, as in [`Kept`].
pub type Candidate = (u64, u64, u64, u64);

/// The `capacity` points of smallest key (ties: first in text order) among all offered:
/// a bottom-k sample. With a hash as the key it is a uniform random sample; with a
/// constant key it is the first points. Two samples of consecutive ranges merge into
/// exactly the sample of both, so it is the same for any split of the stream.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BottomK<T> {
    /// How many points to keep.
    pub capacity: usize,
    /// Points offered so far (the range's stream length).
    pub seen: u64,
    /// The kept points, ascending in [`Kept::order`].
    pub items: Vec<Kept<T>>,
}

impl<T> BottomK<T> {
    /// An empty sample of at most `capacity` points.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            seen: 0,
            items: Vec::new(),
        }
    }

    /// Once full, the order a point must beat to enter.
    fn threshold(&self) -> Option<(u64, u64, u64)> {
        if self.items.len() < self.capacity {
            None
        } else {
            Some(self.items.last().map_or((0, 0, 0), Kept::order))
        }
    }

    /// Would a point of this key and place enter the sample?
    pub fn admits(&self, key: u64, text: u64, position: u64) -> bool {
        self.capacity > 0 && self.threshold().is_none_or(|t| (key, text, position) < t)
    }

    /// Offers candidates; `make(position)` builds the value of a point that enters.
    pub fn extend(&mut self, candidates: impl Iterator<Item = Candidate>, make: impl Fn(u64) -> T) {
        let bar = self.threshold();
        let mut fresh: Vec<Candidate> = candidates
            .filter(|c| bar.is_none_or(|t| (c.0, c.1, c.2) < t))
            .collect();
        if fresh.is_empty() || self.capacity == 0 {
            return;
        }
        fresh.sort_unstable_by_key(|c| (c.0, c.1, c.2));
        fresh.truncate(self.capacity);
        let fresh = fresh.into_iter().map(|(key, text, position, offset)| Kept {
            key,
            text,
            position,
            offset,
            value: make(position),
        });
        self.absorb(fresh.collect());
    }

    /// Merges sorted `fresh` into the sorted items, keeping the smallest `capacity`.
    fn absorb(&mut self, fresh: Vec<Kept<T>>) {
        let old = std::mem::take(&mut self.items);
        let mut a = old.into_iter().peekable();
        let mut b = fresh.into_iter().peekable();
        while self.items.len() < self.capacity {
            let take_a = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) => x.order() <= y.order(),
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let next = if take_a { a.next() } else { b.next() };
            self.items.extend(next);
        }
    }

    /// Counts `n` points offered (whether or not kept).
    pub fn count(&mut self, n: u64) {
        self.seen += n;
    }

    /// Folds in the sample of the range that follows this one.
    pub fn merge(&mut self, right: BottomK<T>) {
        let shift = self.seen;
        self.seen += right.seen;
        let mut fresh = right.items;
        for k in &mut fresh {
            k.offset += shift;
        }
        self.absorb(fresh);
    }

    /// The sample in stream order.
    pub fn into_sorted(mut self) -> Vec<Kept<T>> {
        self.items.sort_by_key(|k| k.offset);
        self.items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(s: &mut BottomK<u64>, keyed: bool, texts: std::ops::Range<u64>, per_text: u64) {
        for t in texts {
            let base = s.seen;
            let c: Vec<_> = (0..per_text)
                .map(|p| {
                    let key = if keyed { point_hash(7, t, p) } else { 0 };
                    (key, t, p, base + p)
                })
                .collect();
            s.extend(c.into_iter(), |p| p);
            s.count(per_text);
        }
    }

    #[test]
    fn constant_key_keeps_the_head() {
        let mut s = BottomK::new(3);
        offer(&mut s, false, 0..4, 2);
        let got: Vec<u64> = s.into_sorted().iter().map(|k| k.offset).collect();
        assert_eq!(got, vec![0, 1, 2]);
    }

    #[test]
    fn hashed_sample_is_split_invariant_and_roughly_uniform() {
        let whole = {
            let mut s = BottomK::new(100);
            offer(&mut s, true, 0..100, 100);
            s
        };
        for cut in [1, 37, 99] {
            let mut a = BottomK::new(100);
            offer(&mut a, true, 0..cut, 100);
            let mut b = BottomK::new(100);
            offer(&mut b, true, cut..100, 100);
            a.merge(b);
            assert_eq!(
                a.clone().into_sorted(),
                whole.clone().into_sorted(),
                "cut {cut}"
            );
            assert_eq!(a.seen, 10_000);
        }
        let kept = whole.into_sorted();
        assert_eq!(kept.len(), 100);
        // Each kept value is its position; about half come from each half of the stream.
        assert!(kept
            .iter()
            .all(|k| k.value == k.position && k.offset == k.text * 100 + k.position));
        let low = kept.iter().filter(|k| k.offset < 5_000).count();
        assert!((30..=70).contains(&low), "{low}");
    }
}
