//! `make bench`: forward tokens/s on a 124M-shaped GPT-2 (seeded random weights, Hub layout),
//! for one 512-token text and a batch of 8 x 128 tokens, all hidden states returned; and,
//! when a Python with torch + transformers is given (`--python PATH`), the same for
//! `transformers` on the same files and token ids in the same run, with the ratio.
//!
//! Figures, not assertions: nothing here fails on time.

use std::path::{Path, PathBuf};
use std::time::Instant;

use strata::model::{LoadedModel, ModelRef};

const REPS: usize = 5;

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

    let time = |batch: &[&[u32]]| -> f64 {
        model.model.forward(batch).expect("forward"); // warm-up
        let mut secs: Vec<f64> = (0..REPS)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(model.model.forward(batch).expect("forward"));
                t.elapsed().as_secs_f64()
            })
            .collect();
        secs.sort_by(f64::total_cmp);
        let tokens: usize = batch.iter().map(|b| b.len()).sum();
        tokens as f64 / secs[REPS / 2]
    };
    let ours_long = time(&[&long]);
    let refs: Vec<&[u32]> = batch.iter().map(|b| b.as_slice()).collect();
    let ours_batch = time(&refs);

    println!("forward, 124M-shaped GPT-2, all 13 hidden states, median of {REPS} after a warm-up");
    println!(
        "{:<14} {:>14} {:>16} {:>8}",
        "case", "strata tok/s", "transformers", "ratio"
    );
    let peer = python
        .as_deref()
        .and_then(|py| run_peer(py, &dir, &ids_file));
    for (case, ours, key) in [
        ("1 x 512", ours_long, "long"),
        ("8 x 128", ours_batch, "batch"),
    ] {
        match peer
            .as_ref()
            .and_then(|p| p.get(key))
            .and_then(|v| v.as_f64())
        {
            Some(theirs) => println!(
                "{case:<14} {ours:>14.1} {theirs:>16.1} {:>7.2}x",
                ours / theirs
            ),
            None => println!("{case:<14} {ours:>14.1} {:>16} {:>8}", "-", "-"),
        }
    }
    if peer.is_none() {
        println!("(no transformers peer: pass a Python with torch + transformers, e.g. make bench REF_PYTHON=...)");
    }
}

fn run_peer(python: &str, dir: &Path, ids: &Path) -> Option<serde_json::Value> {
    let script: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/hf_forward.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(dir)
        .arg(ids)
        .arg(REPS.to_string())
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "transformers peer failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}
