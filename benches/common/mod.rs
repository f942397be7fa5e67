//! Shared by the benchmarks: the `--python` argument and the 124M-shaped bench model.
#![allow(dead_code)] // each benchmark uses its own part of this module

use std::path::{Path, PathBuf};

// The seeded checkpoint writer lives with the tests' helpers, not in the library.
#[path = "../../tests/common/synth.rs"]
mod synth;

use synth::{write_gpt2_tokenizer_cut, SynthGpt2, SynthLlama};

/// The value after `flag` on the command line, if given.
pub fn arg_value(flag: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

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

/// GPT-2's tokenizer cut to `vocab` ids, written into `dir` (a seeded model's).
pub fn write_tokenizer_cut(dir: &Path, vocab: usize) -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    write_gpt2_tokenizer_cut(&root.join("tests/fixtures/tiny-gpt2"), vocab, dir)
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
/// in bytes. The command runs under a small helper (this benchmark's own executable,
/// started with `--measured-run`, see [`serve_measured_run`]): Linux carries the
/// resident high-water mark of the memory a process replaces at `exec` into its peak, and
/// a child spawned straight from this process replaces this process's memory (the models
/// it holds), so its peak read hundreds of MB too high. The helper's memory is a few MB.
/// `cmd`'s program, arguments, environment and directory are used; its stdout is
/// discarded when `quiet`.
pub fn run_measured(cmd: &std::process::Command, quiet: bool) -> (std::process::ExitStatus, u64) {
    use std::os::unix::process::ExitStatusExt;
    let result = std::env::temp_dir().join(format!("strata-bench-measured-{}", std::process::id()));
    let mut helper = std::process::Command::new(std::env::current_exe().expect("own path"));
    helper
        .arg("--measured-run")
        .arg(&result)
        .arg(if quiet { "quiet" } else { "loud" })
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(v) => helper.env(key, v),
            None => helper.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        helper.current_dir(dir);
    }
    assert!(
        helper.status().expect("spawn the helper").success(),
        "measured run helper failed"
    );
    let text = std::fs::read_to_string(&result).expect("the helper's result");
    let _ = std::fs::remove_file(&result);
    let (status, rss) = text.split_once(' ').expect("status and peak");
    (
        std::process::ExitStatus::from_raw(status.parse().unwrap()),
        rss.parse().unwrap(),
    )
}

/// When this process was started by [`run_measured`] as its helper, runs the command,
/// writes its status and peak to the file named, and exits; otherwise returns at once.
/// Every benchmark that measures memory calls this first thing in `main`.
pub fn serve_measured_run() {
    use std::os::unix::process::ExitStatusExt;
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_none_or(|a| a != "--measured-run") {
        return;
    }
    let mut cmd = std::process::Command::new(&args[4]);
    cmd.args(&args[5..]);
    if args[3] == "quiet" {
        cmd.stdout(std::process::Stdio::null());
    }
    let (status, rss) = wait_measured(&mut cmd);
    std::fs::write(&args[2], format!("{} {rss}", status.into_raw())).unwrap();
    std::process::exit(0);
}

/// Spawns `cmd`, waits for it, and returns its status and `wait4`'s peak for it alone.
fn wait_measured(cmd: &mut std::process::Command) -> (std::process::ExitStatus, u64) {
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

/// Tokens over every text a results.json lists (`texts[].n_tokens`).
pub fn n_tokens(results: &serde_json::Value) -> u64 {
    results["texts"]
        .as_array()
        .expect("results.json's texts")
        .iter()
        .map(|t| t["n_tokens"].as_u64().expect("a text's n_tokens"))
        .sum()
}

/// The CPU's model name (`/proc/cpuinfo`).
pub fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}
