//! Which part of a corpus one process runs: `--shard I/N`, or `--shard auto` from a job
//! engine's environment (a Slurm job array, a Kubernetes Indexed Job). Shard `I` of `N`
//! runs the contiguous global text range `[I*n/N, (I+1)*n/N)`; the merged result does not
//! depend on where the ranges fall.

use std::ops::Range;

/// Shard `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 0-based index, below `count`.
    pub index: usize,
    /// How many shards the corpus is split into.
    pub count: usize,
}

/// The `--shard` argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardArg {
    /// `I/N`.
    Fixed(Shard),
    /// `auto`: from the environment.
    Auto,
}

/// The most shards a run may be split into.
pub const MAX_SHARDS: usize = 1_000_000;

/// The variable that gives the shard count where the engine does not (Kubernetes), or
/// where a Slurm array is not the whole set (a resubmission of a few indices).
pub const COUNT_VAR: &str = "STRATA_SHARD_COUNT";

impl Shard {
    /// A checked shard.
    pub fn new(index: usize, count: usize) -> Result<Self, ShardError> {
        if count == 0 || count > MAX_SHARDS {
            return Err(ShardError::Count(count));
        }
        if index >= count {
            return Err(ShardError::Index { index, count });
        }
        Ok(Self { index, count })
    }

    /// The global text range of this shard when the corpus holds `n` texts (empty when
    /// there are more shards than texts).
    pub fn range(&self, n: usize) -> Range<usize> {
        let at = |i: usize| ((i as u128 * n as u128) / self.count as u128) as usize;
        at(self.index)..at(self.index + 1)
    }

    /// The shard a job engine assigned, from its environment (`get` reads a variable).
    pub fn from_env(get: &dyn Fn(&str) -> Option<String>) -> Result<Self, ShardError> {
        let num =
            |name: &str| -> Result<Option<usize>, ShardError> {
                match get(name) {
                    None => Ok(None),
                    Some(v) => v.trim().parse::<usize>().map(Some).map_err(|_| {
                        ShardError::Env(format!("{name}={v:?} is not a whole number"))
                    }),
                }
            };
        let within = |what: String| move |e: ShardError| ShardError::Env(format!("{what}: {e}"));
        let count = num(COUNT_VAR)?;
        if let Some(id) = num("SLURM_ARRAY_TASK_ID")? {
            if let Some(n) = count {
                return Self::new(id, n).map_err(within(format!(
                    "SLURM_ARRAY_TASK_ID={id} with {COUNT_VAR}={n}"
                )));
            }
            let (min, total, max) = (
                num("SLURM_ARRAY_TASK_MIN")?,
                num("SLURM_ARRAY_TASK_COUNT")?,
                num("SLURM_ARRAY_TASK_MAX")?,
            );
            let (Some(min), Some(total)) = (min, total) else {
                return Err(ShardError::Env("SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_MIN or SLURM_ARRAY_TASK_COUNT is not: set STRATA_SHARD_COUNT to the number of shards".into()));
            };
            if max.is_some_and(|max| max + 1 != min + total) {
                return Err(ShardError::Env(format!(
                    "the Slurm array is not one contiguous range ({total} tasks from {min} to {}): a partial resubmission must set {COUNT_VAR} to the full number of shards, with task ids 0..N-1",
                    max.unwrap_or(0)
                )));
            }
            return Self::new(id.saturating_sub(min), total).map_err(within(format!(
                "Slurm array task {id} (min {min}, count {total})"
            )));
        }
        if let Some(index) = num("JOB_COMPLETION_INDEX")? {
            let Some(n) = count else {
                return Err(ShardError::Env(format!("JOB_COMPLETION_INDEX={index} is set but {COUNT_VAR} is not: set it to the Job's `completions` in the pod's env")));
            };
            return Self::new(index, n).map_err(within(format!(
                "JOB_COMPLETION_INDEX={index} with {COUNT_VAR}={n}"
            )));
        }
        Err(ShardError::Env("no job engine's shard index in the environment (neither SLURM_ARRAY_TASK_ID from a Slurm job array nor JOB_COMPLETION_INDEX from a Kubernetes Indexed Job): run inside one, or give --shard I/N".into()))
    }
}

// clap shows a value parser's error as it is, so `--shard`'s stays a message.
impl std::str::FromStr for ShardArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "auto" {
            return Ok(Self::Auto);
        }
        let bad = || {
            format!("{s:?} is not I/N or auto: write e.g. --shard 0/4 for the first of four shards")
        };
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let i: usize = i.trim().parse().map_err(|_| bad())?;
        let n: usize = n.trim().parse().map_err(|_| bad())?;
        Shard::new(i, n).map(Self::Fixed).map_err(|e| e.to_string())
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// A shard that cannot be: out of range, or not given by the job engine's environment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    /// A count of shards outside 1 to [`MAX_SHARDS`].
    #[error("{0} shards: use 1 to {MAX_SHARDS} shards")]
    Count(usize),
    /// An index past the count.
    #[error("shard index {index} is out of range for {count} shards: use 0 <= I < N, here 0/{count} to {}/{count}", count - 1)]
    Index {
        /// The index.
        index: usize,
        /// The count.
        count: usize,
    },
    /// The job engine's variables do not name a shard: which, and what to set.
    #[error("{0}")]
    Env(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn ranges_cover_the_corpus_contiguously() {
        for n in 0..40 {
            for count in 1..12 {
                let mut next = 0;
                for index in 0..count {
                    let r = Shard { index, count }.range(n);
                    assert_eq!(r.start, next);
                    next = r.end;
                }
                assert_eq!(next, n);
            }
        }
    }

    #[test]
    fn the_argument_is_i_of_n_or_auto() {
        assert_eq!("auto".parse(), Ok(ShardArg::Auto));
        assert_eq!(
            "2/5".parse(),
            Ok(ShardArg::Fixed(Shard { index: 2, count: 5 }))
        );
        for bad in ["5/5", "1/0", "x/2", "3", "-1/4", ""] {
            assert!(bad.parse::<ShardArg>().is_err(), "{bad}");
        }
    }

    #[test]
    fn slurm_and_kubernetes_environments() {
        let slurm = env(&[
            ("SLURM_ARRAY_TASK_ID", "7"),
            ("SLURM_ARRAY_TASK_MIN", "4"),
            ("SLURM_ARRAY_TASK_MAX", "9"),
            ("SLURM_ARRAY_TASK_COUNT", "6"),
        ]);
        assert_eq!(Shard::from_env(&slurm), Ok(Shard { index: 3, count: 6 }));
        // A resubmission of two tasks names the full count.
        let resume = env(&[
            ("SLURM_ARRAY_TASK_ID", "5"),
            ("SLURM_ARRAY_TASK_MIN", "3"),
            ("SLURM_ARRAY_TASK_MAX", "5"),
            ("SLURM_ARRAY_TASK_COUNT", "2"),
            ("STRATA_SHARD_COUNT", "8"),
        ]);
        assert_eq!(Shard::from_env(&resume), Ok(Shard { index: 5, count: 8 }));
        let gappy = env(&[
            ("SLURM_ARRAY_TASK_ID", "5"),
            ("SLURM_ARRAY_TASK_MIN", "3"),
            ("SLURM_ARRAY_TASK_MAX", "5"),
            ("SLURM_ARRAY_TASK_COUNT", "2"),
        ]);
        assert!(Shard::from_env(&gappy)
            .unwrap_err()
            .to_string()
            .contains("STRATA_SHARD_COUNT"));
        let k8s = env(&[("JOB_COMPLETION_INDEX", "2"), ("STRATA_SHARD_COUNT", "4")]);
        assert_eq!(Shard::from_env(&k8s), Ok(Shard { index: 2, count: 4 }));
        let k8s_no_count = env(&[("JOB_COMPLETION_INDEX", "2")]);
        assert!(Shard::from_env(&k8s_no_count)
            .unwrap_err()
            .to_string()
            .contains("completions"));
        assert!(Shard::from_env(&env(&[]))
            .unwrap_err()
            .to_string()
            .contains("--shard I/N"));
        let out = env(&[("JOB_COMPLETION_INDEX", "4"), ("STRATA_SHARD_COUNT", "4")]);
        assert!(Shard::from_env(&out)
            .unwrap_err()
            .to_string()
            .contains("out of range"));
    }
}
