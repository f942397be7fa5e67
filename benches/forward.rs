//! `make bench`: forward tokens/s on a 124M-shaped GPT-2 (seeded random weights, Hub layout),
//! for one 512-token text and a batch of 8 x 128 tokens, all hidden states returned; and,
//! when a Python with torch + transformers is given (`--python PATH`), the same for
//! `transformers` on the same files and token ids in the same run, interleaved round by
//! round, with the ratio.
//!
//! Figures, not assertions: nothing here fails on time.

use std::path::{Path, PathBuf};
use std::time::Instant;

use strata::model::{LoadedModel, ModelRef};

const REPS: usize = 3;
const ROUNDS: usize = 3;

mod common;

fn main() {
    let python = common::python_arg();
    let dir = common::bench_model();
    let model = LoadedModel::load(&ModelRef::new(dir.to_str().unwrap())).expect("load");

    // Deterministic token ids, shared with the Python peer through a file.
    let mut state = 12345u64;
    let mut next_id = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) % 50257) as u32
    };
    let long: Vec<u32> = (0..512).map(|_| next_id()).collect();
    let batch: Vec<Vec<u32>> = (0..8)
        .map(|_| (0..128).map(|_| next_id()).collect())
        .collect();
    let ids_file = dir.join("bench-ids.json");
    std::fs::write(
        &ids_file,
        serde_json::json!({"long": long, "batch": batch}).to_string(),
    )
    .unwrap();

    let refs: Vec<&[u32]> = batch.iter().map(|b| b.as_slice()).collect();
    let cases: [(&str, Vec<&[u32]>); 2] = [("long", vec![&long]), ("batch", refs)];
    let mut peer = python
        .as_deref()
        .and_then(|py| Peer::start(py, &dir, &ids_file));

    // Interleaved rounds, strata then transformers for each case: on a shared machine a
    // slow spell then hits both sides instead of whichever happened to run during it.
    let mut ours: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut theirs: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for _ in 0..ROUNDS {
        for (c, (key, batch)) in cases.iter().enumerate() {
            model.model.forward(batch).expect("forward"); // warm-up
            for _ in 0..REPS {
                let t = Instant::now();
                std::hint::black_box(model.model.forward(batch).expect("forward"));
                ours[c].push(t.elapsed().as_secs_f64());
            }
            if let Some(p) = peer.as_mut() {
                match p.time(key, REPS) {
                    Some(secs) => theirs[c].extend(secs),
                    None => peer = None,
                }
            }
        }
    }

    println!(
        "forward, 124M-shaped GPT-2, all 13 hidden states; {ROUNDS} interleaved rounds of {REPS} after a warm-up"
    );
    println!(
        "{:<10} {:>16} {:>16} {:>10} {:>14}",
        "case", "strata tok/s", "transformers", "ratio", "median ratio"
    );
    for (c, (key, batch)) in cases.iter().enumerate() {
        let tokens: usize = batch.iter().map(|b| b.len()).sum();
        let case = if *key == "long" { "1 x 512" } else { "8 x 128" };
        let (best, med) = (
            tokens as f64 / min(&ours[c]),
            tokens as f64 / median(&ours[c]),
        );
        if theirs[c].is_empty() {
            println!(
                "{case:<10} {best:>16.1} {:>16} {:>10} {:>14}",
                "-", "-", "-"
            );
        } else {
            let (tbest, tmed) = (
                tokens as f64 / min(&theirs[c]),
                tokens as f64 / median(&theirs[c]),
            );
            println!(
                "{case:<10} {best:>16.1} {tbest:>16.1} {:>9.2}x {:>13.2}x",
                best / tbest,
                med / tmed
            );
        }
    }
    println!(
        "(tok/s from the fastest run of each side; the median ratio is the same over medians)"
    );
    if python.is_none() || theirs.iter().all(|t| t.is_empty()) {
        println!("(no transformers peer: pass a Python with torch + transformers, e.g. make bench REF_PYTHON=...)");
    }
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `bench/hf_forward.py`, started once and asked for timings over a pipe.
struct Peer {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Peer {
    fn start(python: &str, dir: &Path, ids: &Path) -> Option<Self> {
        use std::process::{Command, Stdio};
        let script: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/hf_forward.py");
        let mut child = Command::new(python)
            .arg(script)
            .arg(dir)
            .arg(ids)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| eprintln!("transformers peer failed to start: {e}"))
            .ok()?;
        let stdin = child.stdin.take()?;
        let stdout = std::io::BufReader::new(child.stdout.take()?);
        let mut peer = Self {
            child,
            stdin,
            stdout,
        };
        let ready = peer.read_json()?;
        eprintln!(
            "transformers peer: torch {}, {} threads",
            ready["torch"], ready["threads"]
        );
        Some(peer)
    }

    fn read_json(&mut self) -> Option<serde_json::Value> {
        use std::io::BufRead;
        let mut line = String::new();
        self.stdout.read_line(&mut line).ok()?;
        serde_json::from_str(&line)
            .map_err(|_| eprintln!("transformers peer failed (see its stderr above)"))
            .ok()
    }

    fn time(&mut self, case: &str, reps: usize) -> Option<Vec<f64>> {
        use std::io::Write;
        writeln!(self.stdin, "{case} {reps}").ok()?;
        self.stdin.flush().ok()?;
        let v = self.read_json()?;
        v["secs"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
