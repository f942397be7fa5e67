//! Shared by the benchmarks: the `--python` argument and the 124M-shaped bench model.
#![allow(dead_code)] // each benchmark uses its own part of this module

use std::path::{Path, PathBuf};

// The seeded checkpoint writer lives with the tests' helpers, not in the library.
#[path = "../../tests/common/synth.rs"]
mod synth;

use synth::{write_gpt2_tokenizer_cut, SynthGpt2, SynthLlama};

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

/// A seeded 1.1B-parameter Llama in TinyLlama's shape, stored in bf16 in two safetensors
/// shards, with GPT-2's tokenizer cut to its 32,000 ids; written once to
/// `target/bench-llama-1b-bf16/` (2.2 GB).
pub fn bench_llama() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target/bench-llama-1b-bf16");
    if !dir.join("model.safetensors.index.json").exists() {
        eprintln!("writing a seeded 1.1B bf16 Llama to {}", dir.display());
        let shape = SynthLlama::TINYLLAMA_1B;
        shape.write(&dir, 11).expect("write bench Llama");
        write_gpt2_tokenizer_cut(
            &root.join("tests/fixtures/tiny-gpt2"),
            shape.vocab_size,
            &dir,
        )
        .expect("write tokenizer");
    }
    dir
}

/// Bytes of every file in `dir` whose name ends with `ext`.
pub fn bytes_of(dir: &Path, ext: &str) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(ext))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Runs `cmd` to completion and returns its exit status and its own peak resident memory
/// in bytes (`wait4`'s rusage: this child alone, not every child the bench has had).
pub fn run_measured(cmd: &mut std::process::Command) -> (std::process::ExitStatus, u64) {
    use std::os::unix::process::ExitStatusExt;
    // wait4 below reaps it; Child::wait would discard the rusage.
    #[allow(clippy::zombie_processes)]
    let child = cmd.spawn().expect("spawn");
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child, which has not been
    // waited for yet (the Child handle is dropped without wait).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4 failed");
    (
        std::process::ExitStatus::from_raw(status),
        usage.ru_maxrss as u64 * 1024,
    )
}
