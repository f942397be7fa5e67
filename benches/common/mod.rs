//! Shared by the benchmarks: the `--python` argument and the 124M-shaped bench model.
#![allow(dead_code)] // each benchmark uses its own part of this module

use std::path::{Path, PathBuf};

use strata::model::synth::SynthGpt2;

/// The Python given with `--python PATH` (empty: none).
pub fn python_arg() -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--python")
        .and_then(|i| args.get(i + 1))
        .filter(|p| !p.is_empty())
        .cloned()
}

/// A seeded 124M-shaped GPT-2 in the Hub layout with the real vocabulary, written once to
/// `target/bench-gpt2-124m/`.
pub fn bench_model() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target/bench-gpt2-124m");
    if !dir.join("model.safetensors").exists() {
        eprintln!("writing a seeded 124M-shaped GPT-2 to {}", dir.display());
        SynthGpt2::GPT2_124M
            .write(&dir, 124)
            .expect("write bench model");
    }
    for name in ["vocab.json", "merges.txt"] {
        std::fs::copy(
            root.join("tests/fixtures/tiny-gpt2").join(name),
            dir.join(name),
        )
        .expect("copy tokenizer");
    }
    dir
}
