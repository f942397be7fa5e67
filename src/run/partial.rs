//! The shard partial file: what `strata report --shard I/N` writes and `strata merge`
//! reads. Self-describing, versioned and checksummed:
//!
//! ```text
//! {"format":"strata-partial","version":1,"shard":{...},"run":{...},"texts":[...],"states":[...]}
//! sha256 <hex of every byte of the line above, its newline included>
//! ```
//!
//! The first line is one JSON object ([`Partial`], every field documented there); the
//! second is its checksum, so a truncated or corrupted file is caught before it is
//! parsed. Floats are written with the shortest decimals that read back to the same bits.
//! Nothing in it depends on time or on the machine's state: re-running a shard writes the
//! same bytes.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::PartialError;
use super::shard::Shard;
use super::{Accumulated, RunInfo, TextLog};
use crate::analyses::AnalysisState;

/// The `format` of every partial file.
pub const FORMAT: &str = "strata-partial";
/// The version of the format this strata writes and reads.
pub const VERSION: u32 = 2;
/// The file name ending that `strata merge` looks for in a folder.
pub const EXTENSION: &str = "partial";

/// A shard's part of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partial {
    /// Always `strata-partial`.
    pub format: String,
    /// Version of this format (2).
    pub version: u32,
    /// Which shard this is and which texts it ran.
    pub shard: ShardInfo,
    /// What every shard of the run shares: spec and model provenance, strata version,
    /// settings, the model's shape.
    pub run: RunInfo,
    /// The texts of the shard's range, in order.
    pub texts: TextLog,
    /// Each analysis's state, in spec order (tagged by `kind`).
    pub states: Vec<AnalysisState>,
}

/// Which shard, and its texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardInfo {
    /// The shard's index `I`, `0 <= I < count`.
    pub index: usize,
    /// `N`, the number of shards of the run.
    pub count: usize,
    /// The global text range `[start, end)` the shard ran.
    pub texts: [usize; 2],
    /// Texts in the whole corpus.
    pub total_texts: usize,
}

impl Partial {
    /// The partial of shard `shard` of a run over `total_texts` texts.
    pub fn new(shard: Shard, total_texts: usize, acc: Accumulated) -> Self {
        let r = shard.range(total_texts);
        Self {
            format: FORMAT.into(),
            version: VERSION,
            shard: ShardInfo {
                index: shard.index,
                count: shard.count,
                texts: [r.start, r.end],
                total_texts,
            },
            run: acc.info,
            texts: acc.texts,
            states: acc.states,
        }
    }

    /// The file name: the run's name and the shard, zero-padded so a folder of all `N`
    /// sorts in shard order.
    pub fn file_name(&self) -> String {
        let w = (self.shard.count - 1).max(1).to_string().len();
        format!(
            "{}-shard-{:0w$}-of-{:0w$}.{EXTENSION}",
            self.run.name, self.shard.index, self.shard.count,
        )
    }

    /// The file's bytes: the JSON line, then its checksum line.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec(self).unwrap_or_default();
        out.push(b'\n');
        let sum = crate::digest::sha256_hex(&out);
        out.extend_from_slice(format!("sha256 {sum}\n").as_bytes());
        out
    }

    /// Reads a partial's bytes: checksum first, then format and version, then the fields.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, PartialError> {
        const NOT: &str =
            "not a strata partial file (one is written by `strata report SPEC --shard I/N`)";
        let body_end = bytes
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| i + 1)
            .ok_or_else(|| {
                PartialError::Damaged(
                    if bytes.starts_with(b"{\"format\":\"strata-partial\"") {
                        "truncated: it ends before its checksum line; run the shard again"
                    } else {
                        NOT
                    }
                    .to_string(),
                )
            })?;
        let (body, tail) = bytes.split_at(body_end);
        if !body.starts_with(b"{\"format\":\"strata-partial\"") {
            return Err(PartialError::Damaged(NOT.into()));
        }
        let sum = std::str::from_utf8(tail)
            .ok()
            .and_then(|t| t.strip_prefix("sha256 "))
            .and_then(|t| t.strip_suffix('\n'))
            .ok_or_else(|| {
                PartialError::Damaged(
                    "truncated or damaged: its last line is not `sha256 <hex>`; run the shard again"
                        .into(),
                )
            })?;
        if sum != crate::digest::sha256_hex(body) {
            return Err(PartialError::Damaged(
                "corrupted: its checksum does not match its contents; run the shard again".into(),
            ));
        }
        let v: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| PartialError::Damaged(format!("not valid JSON ({e})")))?;
        match v.get("version").and_then(|x| x.as_u64()) {
            Some(n) if n == VERSION as u64 => {}
            Some(n) => {
                return Err(PartialError::Damaged(format!(
                    "partial format version {n}; this strata reads version {VERSION}: run the shard again with this strata"
                )))
            }
            None => return Err(PartialError::Damaged(NOT.into())),
        }
        let p: Partial = serde_json::from_value(v)
            .map_err(|e| PartialError::Damaged(format!("not a valid partial ({e})")))?;
        let expected = Shard::new(p.shard.index, p.shard.count)
            .map_err(|e| PartialError::Inconsistent(e.to_string()))?
            .range(p.shard.total_texts);
        if p.shard.texts != [expected.start, expected.end] || p.texts.len() != expected.len() {
            return Err(PartialError::Inconsistent(format!(
                "shard {}/{} of {} texts should hold texts {}..{}, it says {}..{} with {} text(s)",
                p.shard.index,
                p.shard.count,
                p.shard.total_texts,
                expected.start,
                expected.end,
                p.shard.texts[0],
                p.shard.texts[1],
                p.texts.len()
            )));
        }
        p.texts
            .check()
            .map_err(|e| PartialError::Inconsistent(format!("its texts do not add up: {e}")))?;
        Ok(p)
    }

    /// Reads a partial file.
    pub fn read(path: &Path) -> Result<Self, PartialError> {
        let bytes = std::fs::read(path).map_err(|e| PartialError::Path {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        Self::from_bytes(&bytes).map_err(|e| PartialError::File {
            path: path.to_path_buf(),
            error: Box::new(e),
        })
    }
}

/// The partial files named on the command line: files as given, folders as the
/// `*.partial` files they hold, sorted.
pub fn collect(args: &[PathBuf]) -> Result<Vec<PathBuf>, PartialError> {
    let mut out = Vec::new();
    for a in args {
        if a.is_dir() {
            let entries = std::fs::read_dir(a).map_err(|e| PartialError::Path {
                path: a.clone(),
                detail: e.to_string(),
            })?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == EXTENSION))
                .collect();
            if found.is_empty() {
                return Err(PartialError::Path {
                    path: a.clone(),
                    detail: format!("no *.{EXTENSION} files in this folder (shards write theirs to reports/NAME/partials/ by default)"),
                });
            }
            found.sort();
            out.extend(found);
        } else if a.is_file() {
            out.push(a.clone());
        } else {
            return Err(PartialError::Path {
                path: a.clone(),
                detail: "no such file or folder".into(),
            });
        }
    }
    Ok(out)
}

/// Where two runs differ, in the words a user fixes it by.
fn run_difference(a: &RunInfo, b: &RunInfo) -> Option<String> {
    let (pa, pb) = (&a.provenance, &b.provenance);
    if pa.spec_sha256 != pb.spec_sha256 || a.name != b.name {
        return Some(format!(
            "made from another spec (spec sha256 {} vs {}): run every shard from the same spec file",
            short(&pa.spec_sha256),
            short(&pb.spec_sha256)
        ));
    }
    if pa.model != pb.model {
        return Some(format!(
            "made with another model ({} @ {} vs {} @ {}, or other file hashes): run every shard on the same model files",
            pa.model.id,
            pa.model.commit.as_deref().unwrap_or("local"),
            pb.model.id,
            pb.model.commit.as_deref().unwrap_or("local")
        ));
    }
    if (&pa.strata_version, &pa.strata_commit, &pa.candle_version)
        != (&pb.strata_version, &pb.strata_commit, &pb.candle_version)
    {
        return Some(format!(
            "made by another strata ({} ({}) vs {} ({})): run every shard with the same strata build",
            pa.strata_version,
            short(&pa.strata_commit),
            pb.strata_version,
            short(&pb.strata_commit)
        ));
    }
    (a != b).then(|| {
        "made with other settings or corpus (the runs differ): run every shard from the same spec, corpus and model".into()
    })
}

fn short(s: &str) -> &str {
    &s[..s.len().min(12)]
}

/// Checks a set of partials is one whole run (same run, same `N`, every index once) and
/// merges them in shard order. The result's finish gives the one-process results.
pub fn merge(mut parts: Vec<(PathBuf, Partial)>) -> Result<Accumulated, PartialError> {
    check_one_split(&parts)?;
    parts.sort_by_key(|(_, p)| p.shard.index);
    check_each_shard_once(&parts)?;
    let mut it = parts.into_iter();
    let Some((_, head)) = it.next() else {
        return Err(PartialError::NoPartials);
    };
    let mut acc = Accumulated {
        info: head.run,
        texts: head.texts,
        states: head.states,
    };
    for (path, p) in it {
        acc.merge(Accumulated {
            info: p.run,
            texts: p.texts,
            states: p.states,
        })
        .map_err(|e| PartialError::Misfit {
            path: path.clone(),
            error: Box::new(e),
        })?;
    }
    Ok(acc)
}

/// Every partial is a shard of the first one's run, split the same way.
fn check_one_split(parts: &[(PathBuf, Partial)]) -> Result<(), PartialError> {
    let Some((first_path, first)) = parts.first() else {
        return Err(PartialError::NoPartials);
    };
    let s = first.shard;
    for (path, p) in &parts[1..] {
        if let Some(why) = run_difference(&first.run, &p.run) {
            return Err(PartialError::Split(format!(
                "{} and {} are not shards of one run: {} was {why}",
                first_path.display(),
                path.display(),
                path.display()
            )));
        }
        if (p.shard.count, p.shard.total_texts) != (s.count, s.total_texts) {
            return Err(PartialError::Split(format!(
                "{} is shard {}/{} of {} texts, {} is shard {}/{} of {} texts: merge the partials of one split, written with the same N",
                first_path.display(),
                s.index,
                s.count,
                s.total_texts,
                path.display(),
                p.shard.index,
                p.shard.count,
                p.shard.total_texts
            )));
        }
    }
    Ok(())
}

/// Partials sorted by shard index hold every shard of the split exactly once.
fn check_each_shard_once(parts: &[(PathBuf, Partial)]) -> Result<(), PartialError> {
    let Some((_, first)) = parts.first() else {
        return Err(PartialError::NoPartials);
    };
    let n = first.shard.count;
    for w in parts.windows(2) {
        if w[0].1.shard.index == w[1].1.shard.index {
            return Err(PartialError::Split(format!(
                "{} and {} are both shard {}/{}: give each shard once",
                w[0].0.display(),
                w[1].0.display(),
                w[0].1.shard.index,
                n
            )));
        }
    }
    let have: std::collections::BTreeSet<usize> =
        parts.iter().map(|(_, p)| p.shard.index).collect();
    let missing: Vec<usize> = (0..n).filter(|i| !have.contains(i)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing
        .iter()
        .take(50)
        .map(|i| i.to_string())
        .collect::<Vec<_>>();
    let more = if missing.len() > 50 {
        format!(" and {} more", missing.len() - 50)
    } else {
        String::new()
    };
    Err(PartialError::Split(format!(
        "{} of {n} shards are missing: {}{more}. Run just those again, e.g. `strata report SPEC --shard {}/{n}` (a Slurm array: `sbatch --array={} ...`), then merge again",
        missing.len(),
        list.join(", "),
        missing[0],
        list.join(",")
    )))
}
