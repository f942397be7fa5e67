//! `make bench`, part two: a corpus experiment, whole-process. 24 texts of ~480 tokens on a
//! 124M-shaped GPT-2, covariance + histogram over all 13 hidden states, as `strata report`
//! and as a Python peer (bench/report_peer.py: transformers + streaming numpy). Prints
//! wall-clock seconds (median of 3) and the ratio, and checks the two agree on the numbers;
//! then what the geometry analyses add to the run, which is nearly all forward pass; then
//! start-up: `strata report experiments/correlation.yaml` against the seed notebook run
//! headless (bench/notebook.py), both whole processes on the same model, with the peak
//! resident memory of the strata run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const RUNS: usize = 3;

mod common;

fn main() {
    common::serve_measured_run();
    let python = common::python_arg();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = common::bench_model();
    if std::env::args().any(|a| a == "--startup-only") {
        return startup(&model, python.as_deref(), &median_time);
    }

    // 24 deterministic English-like texts of ~480 tokens (common words, mostly one token each).
    let words = "the of and to in is that for it as was with be by on not he this are or his from at which but have an they you were her she there been one all we their has would when if so what no out up said into than its time only could new them man some these then two first may any like now my such make over our even most me state after also made many did must before back see through way where get much go well your know should down work year because come people just say each those take day good how long own too little use ".split_whitespace().collect::<Vec<_>>();
    let dir = root.join("target/bench-corpus");
    std::fs::create_dir_all(&dir).unwrap();
    let mut state = 2024u64;
    let mut lines = Vec::new();
    for _ in 0..24 {
        let text: Vec<&str> = (0..470)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                words[((state >> 33) as usize) % words.len()]
            })
            .collect();
        let mut t = text.join(" ");
        t.push('.');
        lines.push(t);
    }
    std::fs::write(dir.join("corpus.txt"), lines.join("\n") + "\n").unwrap();
    std::fs::write(
        dir.join("bench.yaml"),
        corpus_spec("bench-corpus", &model, "", BASE),
    )
    .unwrap();

    let time = median_time;
    if std::env::args().any(|a| a == "--divergence-only") {
        return divergence_cost(&dir, &model, &time);
    }
    if std::env::args().any(|a| a == "--sae-only") {
        return sae_cost(&dir, &model, &time);
    }
    if std::env::args().any(|a| a == "--quantized-only") {
        return quantized_goals(&dir);
    }
    if std::env::args().any(|a| a == "--goals-only") {
        return cost_goals(&dir, &model, &time);
    }
    let out = dir.join("out");
    let ours = time(&mut || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_strata"));
        c.args(["report", "--quiet"])
            .arg(dir.join("bench.yaml"))
            .arg("--out")
            .arg(&out);
        c
    });
    // The same run with analyses added: what they cost. The base run is nearly all
    // forward pass, so the differences are the analyses' cost relative to it.
    let with = |name: &str, extra: &str| {
        timed_report(
            &dir,
            name,
            &corpus_spec(name, &model, "", &format!("{BASE}{extra}")),
            &time,
        )
    };
    let with_geometry = with(
        "bench-geometry",
        "  - {kind: norms}\n  - {kind: anisotropy}\n  - {kind: outlier_dims}\n",
    );
    let with_dimensionality = with("bench-dimensionality", "  - {kind: dimensionality}\n");
    let with_cka = with("bench-cka", "  - {kind: cka}\n");
    let with_similarity = with("bench-similarity", "  - {kind: similarity}\n");
    let with_lens = with("bench-lens", "  - {kind: logit_lens, layers: [0, 6, 12]}\n");
    let with_attention = with("bench-attention", "  - {kind: attention}\n");
    let with_neurons = with("bench-neurons", "  - {kind: neurons}\n");
    let with_surprisal = with("bench-surprisal", "  - {kind: surprisal}\n");
    let with_site = with("bench-site", "  - {kind: norms, site: mlp_out}\n");
    let with_norms = with("bench-norms", "  - {kind: norms}\n");
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    let n_tokens = common::n_tokens(&results);

    println!("\ncorpus report: 24 texts, {n_tokens} tokens, 124M-shaped GPT-2, covariance + histogram over 13 hidden states");
    println!("whole-process wall time, median of {RUNS}");
    let peer_json = dir.join("peer.json");
    let theirs = python.as_ref().map(|py| {
        time(&mut || {
            let mut c = Command::new(py);
            c.arg(root.join("bench/report_peer.py"))
                .arg(&model)
                .arg(dir.join("corpus.txt"))
                .arg(&peer_json);
            c
        })
    });
    match theirs {
        Some(t) => {
            println!("{:<28} {:>8.2} s", "strata report", ours);
            println!("{:<28} {:>8.2} s", "transformers + numpy", t);
            println!("{:<28} {:>8.2}x faster", "ratio (peer / strata)", t / ours);
            // Same experiment, same numbers.
            let peer: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&peer_json).unwrap()).unwrap();
            let cov = &results["analyses"][0]["covariance"];
            let mut worst = 0f64;
            for i in 0..13 {
                for j in 0..13 {
                    let (a, b) = (
                        cov[i][j].as_f64().unwrap(),
                        peer["covariance"][i][j].as_f64().unwrap(),
                    );
                    worst = worst.max((a - b).abs() / b.abs().max(1e-12));
                }
            }
            println!("covariance agreement: worst relative difference {worst:.2e}");
        }
        None => {
            println!("{:<28} {:>8.2} s", "strata report", ours);
            println!("(no Python peer: pass a Python with torch + transformers, e.g. make bench REF_PYTHON=...)");
        }
    }
    println!(
        "{:<28} {:>8.2} s ({:+.1}% of the run for norms + anisotropy + outlier_dims over 13 hidden states)",
        "+ geometry analyses",
        with_geometry,
        100.0 * (with_geometry - ours) / ours
    );
    println!(
        "{:<28} {:>8.2} s ({:+.1}% for the 768 x 768 covariance spectra of 13 hidden states)",
        "+ dimensionality",
        with_dimensionality,
        100.0 * (with_dimensionality - ours) / ours
    );
    println!(
        "{:<28} {:>8.2} s ({:+.1}% for linear CKA between all 13 hidden states: 91 gemm products per text)",
        "+ cka",
        with_cka,
        100.0 * (with_cka - ours) / ours
    );
    println!(
        "{:<28} {:>8.2} s ({:+.1}% over cka alone for cka, cca, svcca, pwcca and procrustes between all 13 hidden states)",
        "+ similarity",
        with_similarity,
        100.0 * (with_similarity - with_cka) / with_cka
    );
    println!(
        "{:<28} {:>8.2} s ({:+.1}% for the logit lens at 3 hidden states: 50257 x 768 unembedding, softmax in f64)",
        "+ logit_lens",
        with_lens,
        100.0 * (with_lens - ours) / ours
    );
    println!(
        "{:<28} {:>8.2} s ({:+.1}% for surprisal: the 50257 x 768 head once per token, log-sum-exp in f64)",
        "+ surprisal",
        with_surprisal,
        100.0 * (with_surprisal - ours) / ours
    );
    sites_and_attention(ours, with_attention, with_neurons, (with_norms, with_site));
    cost_goals(&dir, &model, &time);
    divergence_cost(&dir, &model, &time);
    sae_cost(&dir, &model, &time);
    short_texts(&dir, &model, &time);
    startup(&model, python.as_deref(), &time);
}

/// The cost goals, each a ratio of two runs measured here, alone in their specs: every
/// similarity metric against linear CKA (the decompositions' share), and the logit lens with
/// surprisal against the lens alone (what a second consumer of the head's logits adds).
fn cost_goals(dir: &Path, model: &Path, time: &dyn Fn(&mut dyn FnMut() -> Command) -> f64) {
    let run = |name: &str, analyses: &str| {
        timed_report(dir, name, &corpus_spec(name, model, "", analyses), time)
    };
    let base = run("goal-base", "  - {kind: norms}\n");
    let cka = run("goal-cka", "  - {kind: cka}\n");
    let similarity = run("goal-similarity", "  - {kind: similarity}\n");
    let dimensionality = run("goal-dimensionality", "  - {kind: dimensionality}\n");
    let lens = run("goal-lens", "  - {kind: logit_lens, layers: [0, 6, 12]}\n");
    let both = run(
        "goal-lens-surprisal",
        "  - {kind: logit_lens, layers: [0, 6, 12]}\n  - {kind: surprisal}\n",
    );
    println!("\ncost goals, each analysis alone in its spec (median of {RUNS})");
    println!(
        "{:<28} {:>8.2} s (norms: the forward and little else)",
        "forward", base
    );
    println!("{:<28} {:>8.2} s", "cka", cka);
    println!(
        "{:<28} {:>8.2} s ({:.2}x cka; goal <= 1.35; decompositions {:.1} s, {:.0}% of the run)",
        "similarity",
        similarity,
        similarity / cka,
        similarity - cka,
        100.0 * (similarity - cka) / similarity
    );
    println!(
        "{:<28} {:>8.2} s ({:+.1}% over the forward for 13 spectra of 768 x 768)",
        "dimensionality",
        dimensionality,
        100.0 * (dimensionality - base) / base
    );
    println!("{:<28} {:>8.2} s", "logit_lens", lens);
    println!(
        "{:<28} {:>8.2} s ({:.2}x logit_lens; goal <= 1.1)",
        "logit_lens + surprisal",
        both,
        both / lens
    );
    every_kind_timings(dir, model);
    quantized_goals(dir);
}

/// The SmolLM2 files `make quant-ladder` quantizes with llama.cpp, and its `llama-bench`.
fn llama_cpp_paths() -> (PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bench = std::env::var_os("LLAMA_BENCH")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/llama-cpp/llama.cpp/build/bin/llama-bench"));
    (root.join("target/quant-ladder"), bench)
}

/// `--quantized` against llama.cpp's prompt processing on the same file and cores
/// (`llama-bench -p 512 -n 0 -t 2`, its mean tok/s of 5 runs), Q8_0 and Q4_K_M: strata's
/// forward tok/s (the `forward` stage of `--timings`, median of RUNS) over the first 8
/// texts of the corpus (about 470 tokens each), the dequantized path's, and each mode's
/// peak RSS against the file's size.
fn quantized_goals(dir: &Path) {
    let (files, bench) = llama_cpp_paths();
    let corpus = std::fs::read_to_string(dir.join("corpus.txt")).unwrap();
    let eight: Vec<&str> = corpus.lines().take(8).collect();
    std::fs::write(dir.join("quant-corpus.txt"), eight.join("\n") + "\n").unwrap();
    println!(
        "\n--quantized against llama.cpp on the same files (SmolLM2-135M, CPU: {})",
        common::cpu_name()
    );
    for q in ["Q8_0", "Q4_K_M"] {
        let file = files.join(format!("SmolLM2-135M-{q}.gguf"));
        if !file.exists() || !bench.exists() {
            println!("{q}: skipped: `make quant-ladder` builds llama.cpp and quantizes the files (or set LLAMA_BENCH)");
            continue;
        }
        let theirs = llama_bench_tps(&bench, &file);
        let size = std::fs::metadata(&file).unwrap().len() as f64 / 1e6;
        let (ours, rss) = forward_tps(dir, &file, true);
        let (deq, rss_deq) = forward_tps(dir, &file, false);
        println!(
            "{q}: --quantized {ours:.0} tok/s, llama-bench {theirs:.0} tok/s: {:.2}x (goal >= 0.5); dequantized {deq:.0} tok/s",
            ours / theirs
        );
        println!(
            "{q}: peak RSS, file {size:.0} MB: --quantized {rss:.0} MB ({:.2}x the file), dequantized {rss_deq:.0} MB ({:.2}x)",
            rss / size,
            rss_deq / size
        );
    }
    gemma3_memory(dir);
}

/// Peak RSS against the file's size on a Gemma-3-270M-shaped Q4_K_M file (262,144-piece
/// vocabulary; `bench/gemma3_gguf.py` writes it with llama-quantize), `summary` over the
/// first 3 texts of the corpus, dequantized and `--quantized`.
fn gemma3_memory(dir: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let file = root.join("target/bench-gemma3/gemma3-270m-Q4_K_M.gguf");
    if !file.exists() {
        println!("Gemma 3 shape: skipped: PYTHONPATH=target/llama-cpp/llama.cpp/gguf-py target/py-tools/bin/python bench/gemma3_gguf.py target/bench-gemma3 target/llama-cpp/llama.cpp/build/bin/llama-quantize writes it");
        return;
    }
    let corpus = std::fs::read_to_string(dir.join("corpus.txt")).unwrap();
    let three: Vec<&str> = corpus.lines().take(3).collect();
    std::fs::write(dir.join("gemma3-corpus.txt"), three.join("\n") + "\n").unwrap();
    let size = std::fs::metadata(&file).unwrap().len() as f64 / 1e6;
    for quantized in [false, true] {
        let spec = format!(
            "name: gemma3-memory\nmodel: {{id: {}, quantized: {quantized}}}\nexclude_first_token: true\ncorpus: gemma3-corpus.txt\nanalyses:\n  - {{kind: summary}}\n",
            file.display()
        );
        std::fs::write(dir.join("gemma3-memory.yaml"), spec).unwrap();
        let rss = peak_mb(dir, "gemma3-memory");
        println!(
            "Gemma 3 shape, Q4_K_M, file {size:.0} MB, quantized: {quantized}: peak RSS {rss:.0} MB ({:.2}x the file)",
            rss / size
        );
    }
}

/// llama-bench's mean prompt-processing tok/s on `file`, 512 tokens, 2 threads.
fn llama_bench_tps(bench: &Path, file: &Path) -> f64 {
    let o = Command::new(bench)
        .args(["-p", "512", "-n", "0", "-t", "2", "-o", "json", "-m"])
        .arg(file)
        .output()
        .expect("spawn llama-bench");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("llama-bench's JSON");
    v[0]["avg_ts"].as_f64().expect("avg_ts")
}

/// strata's forward tok/s on `file` over quant-corpus.txt (median of RUNS, from
/// `--timings`), and the peak RSS of the last run in MB.
fn forward_tps(dir: &Path, file: &Path, quantized: bool) -> (f64, f64) {
    let name = format!("quant-{}", if quantized { "q" } else { "deq" });
    let spec = format!(
        "name: {name}\nmodel: {{id: {}, quantized: {quantized}}}\nexclude_first_token: true\ncorpus: quant-corpus.txt\nanalyses:\n  - {{kind: norms}}\n",
        file.display()
    );
    std::fs::write(dir.join(format!("{name}.yaml")), spec).unwrap();
    let out = dir.join(format!("out-{name}"));
    let report = |timings: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_strata"));
        c.args(["report", "--quiet"])
            .args(timings.then_some("--timings"))
            .arg(dir.join(format!("{name}.yaml")))
            .arg("--out")
            .arg(&out);
        c
    };
    let mut rates = Vec::new();
    for _ in 0..RUNS {
        let o = report(true).output().expect("spawn");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let json = |f: &str| -> serde_json::Value {
            serde_json::from_slice(&std::fs::read(out.join(f)).unwrap()).unwrap()
        };
        let (timings, results) = (json("timings.json"), json("results.json"));
        let forward = timings["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stage"] == "forward")
            .and_then(|s| s["wall_s"].as_f64())
            .unwrap();
        let tokens = common::n_tokens(&results);
        rates.push(tokens as f64 / forward);
    }
    // The peak from a run of its own: the helper that measures it cannot capture stderr.
    let (status, rss) = common::run_measured(&report(false), true);
    assert!(status.success(), "{name} failed");
    rates.sort_by(f64::total_cmp);
    (rates[RUNS / 2], rss as f64 / 1e6)
}

/// One run with every single-model kind at once under `--timings`: each kind's update and
/// finish as a measured line, against the forward they share.
fn every_kind_timings(dir: &Path, model: &Path) {
    let kinds = [
        "{kind: scatter, layer: 3}",
        "{kind: covariance}",
        "{kind: pairplot, layers: [0, 1, 2, 3], points: 1000, sample: first}",
        "{kind: histogram, range: [-15, 15], bins: 300}",
        "{kind: summary}",
        "{kind: outliers, k: 3}",
        "{kind: norms}",
        "{kind: anisotropy}",
        "{kind: outlier_dims}",
        "{kind: dimensionality}",
        "{kind: cka}",
        "{kind: similarity}",
        "{kind: logit_lens, layers: [0, 6, 12]}",
        "{kind: surprisal}",
        "{kind: attention}",
        "{kind: neurons}",
        "{kind: norms, site: mlp_out}",
    ];
    let analyses: String = kinds.iter().map(|k| format!("  - {k}\n")).collect();
    let spec = dir.join("goal-every-kind.yaml");
    std::fs::write(&spec, corpus_spec("goal-every-kind", model, "", &analyses)).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["report", "--quiet", "--timings"])
        .arg(&spec)
        .arg("--out")
        .arg(dir.join("out-goal-every-kind"))
        .output()
        .expect("spawn");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    println!("\nevery kind in one run, strata report --timings (one run)");
    print!("{}", String::from_utf8_lossy(&o.stderr));
}

/// `divergence` (a second copy of the model: two forwards, two heads, KL over the
/// vocabulary per position) against a one-model run with `surprisal`, alone in each spec.
fn divergence_cost(dir: &Path, model: &Path, time: &dyn Fn(&mut dyn FnMut() -> Command) -> f64) {
    let spec =
        |name: &str, analysis: &str| corpus_spec(name, model, "", &format!("  - {analysis}\n"));
    let surprisal = timed_report(
        dir,
        "bench-surprisal-alone",
        &spec("bench-surprisal-alone", "{kind: surprisal}"),
        time,
    );
    let divergence = timed_report(
        dir,
        "bench-divergence",
        &spec(
            "bench-divergence",
            &format!("{{kind: divergence, model: {{id: {}}}}}", model.display()),
        ),
        time,
    );
    let lens = timed_report(
        dir,
        "bench-divergence-lens",
        &spec(
            "bench-divergence-lens",
            &format!(
                "{{kind: divergence, model: {{id: {}}}, layers: [0, 6, 12]}}",
                model.display()
            ),
        ),
        time,
    );
    println!("{:<28} {:>8.2} s", "surprisal alone", surprisal);
    println!(
        "{:<28} {:>8.2} s ({:.2}x surprisal alone; budget 2.2x: two forwards, two heads)",
        "divergence",
        divergence,
        divergence / surprisal
    );
    println!(
        "{:<28} {:>8.2} s ({:.2}x; lens_kl at 3 hidden states, the last sharing the output's logits)",
        "divergence + lens_kl", lens, lens / surprisal
    );
}

/// Writes a seeded TopK SAE of `d_sae` features over width `d` in SAELens' format.
fn write_sae(folder: &Path, d: usize, d_sae: usize, hook: &str) {
    std::fs::create_dir_all(folder).unwrap();
    let mut state = 7u64;
    let mut draw = |n: usize, scale: f32| -> Vec<u8> {
        (0..n)
            .flat_map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5;
                (u * scale).to_le_bytes()
            })
            .collect()
    };
    let s = 1.0 / (d as f32).sqrt();
    let tensors = [
        ("W_enc", vec![d, d_sae], draw(d * d_sae, s)),
        ("W_dec", vec![d_sae, d], draw(d_sae * d, s)),
        ("b_enc", vec![d_sae], draw(d_sae, 0.1)),
        ("b_dec", vec![d], draw(d, 0.1)),
    ];
    let views: Vec<(&str, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, shape, b)| {
            let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b);
            (*n, v.unwrap())
        })
        .collect();
    safetensors::serialize_to_file(views, None, &folder.join("sae_weights.safetensors")).unwrap();
    let cfg = format!(
        r#"{{"architecture": "topk", "d_in": {d}, "d_sae": {d_sae}, "k": 64, "apply_b_dec_to_input": true, "normalize_activations": "none", "metadata": {{"sae_lens_version": "6.0.0", "hook_name": "{hook}"}}}}"#
    );
    std::fs::write(folder.join("cfg.json"), cfg).unwrap();
}

/// One 24,576-feature TopK SAE at hidden state 6 against the same run without it (both
/// reading that hidden state with `norms`): the SAE's encoder is `2 · 768 · 24,576`
/// FLOPs a token, about 22% of the 124M GPT-2's forward.
fn sae_cost(dir: &Path, model: &Path, time: &dyn Fn(&mut dyn FnMut() -> Command) -> f64) {
    let sae = dir.join("sae-24576");
    if !sae.join("cfg.json").exists() {
        write_sae(&sae, 768, 24576, "blocks.6.hook_resid_pre");
    }
    let spec = |name: &str, extra: &str| {
        corpus_spec(
            name,
            model,
            "layers: [6]\n",
            &format!("  - {{kind: norms}}\n{extra}"),
        )
    };
    let base = timed_report(dir, "bench-sae-base", &spec("bench-sae-base", ""), time);
    let with = timed_report(
        dir,
        "bench-sae",
        &spec("bench-sae", "  - {kind: sae, sae: sae-24576}\n"),
        time,
    );
    println!("{:<28} {:>8.2} s", "norms at h.5", base);
    println!(
        "{:<28} {:>8.2} s (+{:.0}%; budget +29%: 1.3x the encoder's 22% of the FLOPs)",
        "norms + sae (24,576)",
        with,
        (with / base - 1.0) * 100.0
    );
    println!(
        "{:<28} {:>8.0} MB",
        "peak, with the sae",
        peak_mb(dir, "bench-sae")
    );
    println!(
        "{:<28} {:>8.0} MB",
        "peak, without",
        peak_mb(dir, "bench-sae-base")
    );
}

/// What the attention statistics, the neurons and reading a capture site add to the run.
fn sites_and_attention(base: f64, attention: f64, neurons: f64, (norms, site): (f64, f64)) {
    println!(
        "{:<28} {:>8.2} s ({:+.1}% for attention statistics of all 144 heads, in the kernel)",
        "+ attention",
        attention,
        100.0 * (attention - base) / base
    );
    println!(
        "{:<28} {:>8.2} s ({:+.1}% for neurons over 12 blocks x 3072 at mlp_act)",
        "+ neurons",
        neurons,
        100.0 * (neurons - base) / base
    );
    println!(
        "{:<28} {:>8.2} s against {:.2} s for norms at hidden ({:+.1}%: capturing mlp_out of 12 blocks)",
        "+ norms at mlp_out",
        site,
        norms,
        100.0 * (site - norms) / norms
    );
}

/// The notebook's one-text correlation report, whole process: `strata report
/// experiments/correlation.yaml` on the bench model against the notebook's own code run
/// headless on the same folder (model load, one forward, the four figures as SVG).
fn startup(model: &Path, python: Option<&str>, time: &dyn Fn(&mut dyn FnMut() -> Command) -> f64) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::temp_dir().join("strata-bench-correlation");
    let report = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_strata"));
        c.args(["report", "--quiet"])
            .arg(root.join("experiments/correlation.yaml"))
            .arg("--model")
            .arg(model)
            .arg("--out")
            .arg(&out);
        c
    };
    let ours = time(&mut || report());
    let (status, rss) = common::run_measured(&report(), false);
    assert!(status.success());
    let weights = common::bytes_of(model, ".safetensors");
    println!("
start-up: experiments/correlation.yaml (1 text, 66 tokens, 13 hidden states) on the 124M-shaped GPT-2, whole process, median of {RUNS}");
    println!("{:<28} {:>8.2} s", "strata report", ours);
    println!(
        "{:<28} {:>8.0} MB ({:.2}x the {:.0} MB of f32 weights)",
        "strata peak RSS",
        rss as f64 / 1e6,
        rss as f64 / weights as f64,
        weights as f64 / 1e6
    );
    let notebook = root.join("bench/notebook.py");
    let theirs = python.map(|py| {
        time(&mut || {
            let mut c = Command::new(py);
            c.arg(&notebook).arg(model).env("MPLBACKEND", "Agg");
            c
        })
    });
    match theirs {
        Some(t) => {
            println!("{:<28} {:>8.2} s", "the notebook, headless", t);
            println!("{:<28} {:>8.1}x faster", "ratio (notebook / strata)", t / ours);
        }
        None => println!("(no notebook peer: it needs a Python with torch, transformers, matplotlib, seaborn and pandas)"),
    }
}

/// The corpus run's analyses every timed spec of `main` adds to.
const BASE: &str = "  - {kind: covariance}\n  - {kind: histogram, range: [-15, 15], bins: 300}\n";

/// A spec over the bench corpus (`corpus.txt` beside it, token 0 out, 8 texts a forward),
/// with `settings` (YAML lines) before its `analyses` (list items).
fn corpus_spec(name: &str, model: &Path, settings: &str, analyses: &str) -> String {
    format!(
        "name: {name}\nmodel: {{id: {}}}\nexclude_first_token: true\ncorpus: corpus.txt\nbatch_size: 8\n{settings}analyses:\n{analyses}",
        model.display()
    )
}

/// Median wall time of RUNS runs of the command `cmd` makes; a failed run is fatal.
fn median_time(cmd: &mut dyn FnMut() -> Command) -> f64 {
    let mut secs: Vec<f64> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            let o = cmd().output().expect("spawn");
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            t.elapsed().as_secs_f64()
        })
        .collect();
    secs.sort_by(f64::total_cmp);
    secs[RUNS / 2]
}

/// Writes `DIR/NAME.yaml` and times `strata report` on it (output `DIR/out-NAME`).
fn timed_report(
    dir: &Path,
    name: &str,
    spec: &str,
    time: &dyn Fn(&mut dyn FnMut() -> Command) -> f64,
) -> f64 {
    std::fs::write(dir.join(format!("{name}.yaml")), spec).unwrap();
    time(&mut || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_strata"));
        c.args(["report", "--quiet"])
            .arg(dir.join(format!("{name}.yaml")))
            .arg("--out")
            .arg(dir.join(format!("out-{name}")));
        c
    })
}

/// Words for the short-text corpora: three in four common English words (one token each),
/// one in four a made-up word of two or three syllables (two to four tokens), so texts of
/// 7 words run 7 to 17 tokens, about 9, as real sentence-level corpora vary.
struct Words {
    state: u64,
    common: Vec<&'static str>,
}

impl Words {
    fn new(seed: u64) -> Self {
        let common = "the of and to in is that for it as was with be by on not he this are or his from at which but have an they you were her she there been one all we their has would when if so what no out up said into than its time only could new them man some these then two first may any like now my such make over our even most me state after also made many did must before back see through way where get much go well your know should down work year because come people just say each those take day good how long own too little use".split(' ').collect();
        Self {
            state: seed,
            common,
        }
    }

    fn next(&mut self) -> u64 {
        self.state = self
            .state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.state >> 33
    }

    fn word(&mut self) -> String {
        const SYLLABLES: [&str; 16] = [
            "ka", "lo", "mi", "ren", "tor", "sa", "vel", "qui", "dor", "ban", "zu", "ost", "pim",
            "rak", "eth", "ul",
        ];
        if !self.next().is_multiple_of(4) {
            let i = self.next() as usize % self.common.len();
            return self.common[i].to_string();
        }
        let n = 2 + self.next() % 2;
        (0..n)
            .map(|_| SYLLABLES[self.next() as usize % SYLLABLES.len()])
            .collect()
    }

    /// `n` texts of `words` words each, one a line.
    fn corpus(&mut self, n: usize, words: usize) -> String {
        (0..n)
            .map(|_| {
                (0..words)
                    .map(|_| self.word())
                    .collect::<Vec<_>>()
                    .join(" ")
                    + "\n"
            })
            .collect()
    }
}

/// Many short texts against a few long ones, default settings, whole process: 3,000 texts
/// of 7 words (about 9 tokens) and 30,000 against 24 texts of 620 words (about 800
/// tokens), under covariance + histogram and under the six notebook kinds; tokens/s of
/// each, and the peak memory of the short runs.
fn short_texts(dir: &Path, model: &Path, time: &dyn Fn(&mut dyn FnMut() -> Command) -> f64) {
    let mut words = Words::new(29);
    std::fs::write(dir.join("long9.txt"), words.corpus(24, 620)).unwrap();
    std::fs::write(dir.join("short9.txt"), words.corpus(3_000, 7)).unwrap();
    std::fs::write(dir.join("short9-30k.txt"), words.corpus(30_000, 7)).unwrap();
    const STATS: &str =
        "  - {kind: covariance}\n  - {kind: histogram, range: [-15, 15], bins: 300}\n";
    const NOTEBOOK: &str = "  - {kind: scatter, layer: 3}\n  - {kind: covariance}\n  - {kind: pairplot, layers: [0, 1, 2, 3], points: 1000}\n  - {kind: histogram, range: [-15, 15], bins: 300}\n  - {kind: summary}\n  - {kind: outliers, k: 10}\n";
    let run = |name: &str, corpus: &str, analyses: &str| {
        let secs = timed_report(
            dir,
            name,
            &format!(
                "name: {name}\nmodel: {{id: {}}}\nexclude_first_token: true\ncorpus: {corpus}\nanalyses:\n{analyses}",
                model.display()
            ),
            time,
        );
        let results: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.join(format!("out-{name}/results.json"))).unwrap(),
        )
        .unwrap();
        // Every text's tokens: results.json lists only the first `keep_texts` texts.
        results["corpus"]["tokens"].as_u64().unwrap() as f64 / secs
    };
    println!("\nshort texts against long ones, default settings, whole process (tokens/s)");
    for (what, analyses) in [
        ("covariance + histogram", STATS),
        ("the six notebook kinds", NOTEBOOK),
    ] {
        let tag = if analyses == STATS {
            "stats"
        } else {
            "notebook"
        };
        let long = run(&format!("long9-{tag}"), "long9.txt", analyses);
        let short = run(&format!("short9-{tag}"), "short9.txt", analyses);
        println!("{what}:");
        println!("{:<32} {:>8.0} tok/s", "  24 texts of ~900 tokens", long);
        println!(
            "{:<32} {:>8.0} tok/s ({:.2}x the long texts)",
            "  3,000 texts of ~9 tokens",
            short,
            short / long
        );
        if analyses == STATS {
            let many = run("short9-30k", "short9-30k.txt", analyses);
            println!(
                "{:<32} {:>8.0} tok/s ({:.2}x the 3,000)",
                "  30,000 texts of ~9 tokens",
                many,
                many / short
            );
            for name in ["short9-stats", "short9-30k"] {
                println!(
                    "{:<32} {:>8.0} MB peak",
                    format!("  {name}"),
                    peak_mb(dir, name)
                );
            }
        }
    }
}

/// Peak resident memory of one more run of `name`'s spec, in MB.
fn peak_mb(dir: &Path, name: &str) -> f64 {
    let mut c = Command::new(env!("CARGO_BIN_EXE_strata"));
    c.args(["report", "--quiet"])
        .arg(dir.join(format!("{name}.yaml")))
        .arg("--out")
        .arg(dir.join(format!("out-{name}")));
    let (status, rss) = common::run_measured(&c, true);
    assert!(status.success(), "{name} failed");
    rss as f64 / 1e6
}
