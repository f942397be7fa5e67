//! A reduction over texts whose shape is fixed by the texts' global indices, so a
//! floating-point merge (Chan/Pébay moments) gives the same bits however the texts were
//! split into batches, shards or processes.
//!
//! Text `i` is leaf `i` of an infinite perfect binary tree. The node covering the aligned
//! block `[k * 2^j, (k + 1) * 2^j)` is always `merge(left child, right child)`, so its value
//! depends only on the texts under it. A run over a contiguous range keeps the maximal
//! aligned blocks it has completed (at most two per level: O(log n) states); joining the
//! blocks of the range that follows completes every node the two ranges share. At the end
//! the blocks of `[0, n)` are folded left to right. The same tree, the same bits, for any
//! split; and pairwise summation is, if anything, more accurate than a sequential fold.

use serde::{Deserialize, Serialize};

use super::error::StatsError;

/// A state that can absorb the state of the texts that follow it.
pub trait Merge {
    /// Folds in `right`, which covers the texts right after `self`'s.
    fn merge(&mut self, right: &Self);
}

/// One completed aligned block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Block<S> {
    /// First text index of the block (a multiple of `2^level`).
    pub start: u64,
    /// The block covers `2^level` texts.
    pub level: u32,
    /// The merged state of those texts.
    pub state: S,
}

impl<S> Block<S> {
    fn end(&self) -> u64 {
        self.start + (1u64 << self.level)
    }
}

/// The completed blocks of a contiguous range of texts, in text order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tree<S> {
    /// Maximal aligned blocks, ascending and contiguous.
    pub blocks: Vec<Block<S>>,
}

impl<S> Default for Tree<S> {
    fn default() -> Self {
        Self { blocks: Vec::new() }
    }
}

impl<S: Merge> Tree<S> {
    /// Adds text `index`'s state; `index` must follow the texts already added.
    pub fn push(&mut self, index: u64, leaf: S) {
        self.push_block(Block {
            start: index,
            level: 0,
            state: leaf,
        });
    }

    fn push_block(&mut self, block: Block<S>) {
        self.blocks.push(block);
        // Join siblings: the two last blocks of one level, the left one aligned to the
        // level above.
        while let [.., a, b] = self.blocks.as_slice() {
            let sibling =
                a.level == b.level && a.end() == b.start && a.start % (1u64 << (a.level + 1)) == 0;
            if !sibling {
                break;
            }
            let right = self.blocks.pop().map(|b| b.state);
            if let (Some(left), Some(right)) = (self.blocks.last_mut(), right) {
                left.state.merge(&right);
                left.level += 1;
            }
        }
    }

    /// Texts after the last block (where the next text must start).
    pub fn end(&self) -> Option<u64> {
        self.blocks.last().map(Block::end)
    }

    /// First text of the range.
    pub fn start(&self) -> Option<u64> {
        self.blocks.first().map(|b| b.start)
    }

    /// Joins the tree of the range that follows this one. Fails when `right` does not
    /// start where this range ends, or is not made of aligned blocks.
    pub fn join(&mut self, right: Tree<S>) -> Result<(), StatsError> {
        if let (Some(end), Some(start)) = (self.end(), right.start()) {
            if end != start {
                return Err(StatsError::NotNext { end, start });
            }
        }
        let mut expect = right.start();
        for b in right.blocks {
            if b.level >= 63 || b.start % (1u64 << b.level) != 0 || Some(b.start) != expect {
                return Err(StatsError::Unaligned {
                    start: b.start,
                    level: b.level,
                });
            }
            expect = Some(b.end());
            self.push_block(b);
        }
        Ok(())
    }

    /// The state of the whole range: its blocks folded left to right (`None` when empty).
    pub fn fold(self) -> Option<S> {
        let mut blocks = self.blocks.into_iter();
        let mut acc = blocks.next()?.state;
        for b in blocks {
            acc.merge(&b.state);
        }
        Some(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A merge whose result shows the tree's shape.
    #[derive(Debug, Clone, PartialEq)]
    struct Shape(String);
    impl Merge for Shape {
        fn merge(&mut self, right: &Self) {
            self.0 = format!("({} {})", self.0, right.0);
        }
    }

    fn run(range: std::ops::Range<u64>) -> Tree<Shape> {
        let mut t = Tree::default();
        for i in range {
            t.push(i, Shape(i.to_string()));
        }
        t
    }

    #[test]
    fn one_range_folds_the_binary_decomposition() {
        assert_eq!(run(0..5).fold().unwrap().0, "(((0 1) (2 3)) 4)");
        assert_eq!(run(0..8).blocks.len(), 1);
        assert!(run(0..0).fold().is_none());
    }

    #[test]
    fn every_split_gives_the_same_tree() {
        let n = 23;
        let whole = run(0..n).fold().unwrap();
        for a in 0..=n {
            for b in a..=n {
                let mut t = run(0..a);
                t.join(run(a..b)).unwrap();
                t.join(run(b..n)).unwrap();
                assert_eq!(t.fold().unwrap(), whole, "split at {a}, {b}");
            }
        }
    }

    #[test]
    fn a_gap_or_a_misaligned_block_is_refused() {
        let mut t = run(0..3);
        assert!(t.join(run(4..6)).is_err());
        let bad = Tree {
            blocks: vec![Block {
                start: 3,
                level: 1,
                state: Shape("x".into()),
            }],
        };
        assert!(t.join(bad).is_err());
    }
}
