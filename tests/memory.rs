//! The statistics' memory stays bounded as the corpus grows: the live heap held by every
//! analysis accumulator after 100 texts equals what it holds after 1100. And a GGUF
//! file's tokenizer of Gemma 3's 262,144 pieces is built within a bounded heap, and a
//! report on a Gemma-3-270M-shaped GGUF file stays within its file's size and a budget.
//!
//! A counting global allocator measures the real heap, so any per-text state an
//! accumulator keeps (a list of values, a map per text) makes this fail. The tests take a
//! lock, so one's allocations never count in the other's figures.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::QTensor;
use strata::analyses::attention::AttentionState;
use strata::analyses::neurons::{BlockNeurons, NeuronsState};
use strata::analyses::pairplot::SampleMode;
use strata::analyses::{
    covariance::CovarianceState, histogram::HistogramState, outliers::OutliersState,
    pairplot::PairplotState, scatter::ScatterState, summary::SummaryState, AnalysisResult, State,
    TextActivations,
};
use strata::model::capture::{HeadCapture, HeadStats};
use strata::stats::gram::Fixed;

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);
/// The most `LIVE` has been since it was last reset.
static PEAK: AtomicIsize = AtomicIsize::new(0);
/// One test at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(l.size() as isize, Ordering::SeqCst) + l.size() as isize;
        PEAK.fetch_max(now, Ordering::SeqCst);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::SeqCst);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let grow = new as isize - l.size() as isize;
        let now = LIVE.fetch_add(grow, Ordering::SeqCst) + grow;
        PEAK.fetch_max(now, Ordering::SeqCst);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn feed(accs: &mut [State], texts: std::ops::Range<usize>) {
    const DIM: usize = 64;
    for j in texts {
        // Varying lengths and values, with a new max every so often.
        let rows = 5 + j % 40;
        let tokens: Vec<String> = (0..rows + 1).map(|k| format!("tok{j}-{k}")).collect();
        let states: Vec<Option<Vec<f32>>> = (0..4)
            .map(|l| {
                Some(
                    (0..rows * DIM)
                        .map(|k| ((j * 31 + k * 7 + l) % 97) as f32 * 0.1 + (j as f32) * 0.01)
                        .collect(),
                )
            })
            .collect();
        let id = format!("text{j}");
        // Two blocks of two heads, each query's mass spread over the keys.
        let attention: Vec<Vec<HeadCapture>> = (0..2)
            .map(|l| {
                (0..2)
                    .map(|h| {
                        let mut stats = HeadStats::new(rows + 1);
                        for q in 0..rows + 1 {
                            let p = vec![1.0 / (q + 1) as f32; q + 1];
                            let z = vec![(j + l + h) as f32 * 0.01; q + 1];
                            stats.add_row(q, 0, &p, &z);
                        }
                        HeadCapture {
                            stats,
                            probabilities: Vec::new(),
                        }
                    })
                    .collect()
            })
            .collect();
        let acts = TextActivations {
            index: j,
            id: &id,
            label: None,
            window_of: None,
            tokens: &tokens,
            first_token: 1,
            dim: DIM,
            states: &states,
            token_ids: &[],
            lens: None,
            previous: None,
            companions: &[],
            companion_readouts: &[],
            attention: &attention,
            routing: &[],
            splice: None,
            sites: &[],
        };
        for a in accs.iter_mut() {
            a.observe(&acts);
        }
    }
}

#[test]
fn accumulator_heap_does_not_grow_with_the_corpus() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let layers = vec![0, 1, 2, 3];
    let labels: Vec<String> = (0..4).map(|i| format!("l{i}")).collect();
    let mut accs = vec![
        State::Scatter(ScatterState::new(2, "l2".into(), None)),
        State::Covariance(CovarianceState::new(layers.clone(), labels.clone())),
        State::Histogram(HistogramState::new(
            layers.clone(),
            labels.clone(),
            -15.0,
            15.0,
            300,
        )),
        State::Summary(SummaryState::new(layers.clone(), labels.clone())),
        State::Outliers(OutliersState::new(layers.clone(), labels.clone(), 50)),
        State::Pairplot(PairplotState::new(
            layers.clone(),
            labels.clone(),
            SampleMode::Random,
            1000,
            7,
        )),
        State::Pairplot(PairplotState::new(
            layers,
            labels,
            SampleMode::First,
            1000,
            0,
        )),
        State::Neurons(NeuronsState {
            threshold: 0.5,
            dense: 0.5,
            k: 10,
            examples: 3,
            layers: vec![0, 1, 2, 3],
            labels: (0..4).map(|i| format!("mlp_act.{i}")).collect(),
            blocks: (0..4)
                .map(|_| BlockNeurons {
                    tokens: 0,
                    fired: vec![0; 64],
                    sums: Fixed::zeros(64),
                    examples: vec![Vec::new(); 64],
                })
                .collect(),
        }),
        State::Attention(AttentionState {
            threshold: 0.3,
            prev_threshold: 0.5,
            k: 5,
            exclude_first_query: false,
            layers: vec![0, 1],
            n_heads: 2,
            queries: vec![[0, 0]; 4],
            sums: Fixed::zeros(4 * 5),
            top: vec![Vec::new(); 4],
        }),
    ];
    feed(&mut accs, 0..100);
    let after_100 = LIVE.load(Ordering::SeqCst);
    feed(&mut accs, 100..1100);
    let after_1100 = LIVE.load(Ordering::SeqCst);
    // Slack for the summary's record of where each maximum sits (its strings vary in
    // length) and for the moment trees, which hold at most two blocks per level of the
    // text count (O(log n): their lists' capacity grows from 8 to 16 blocks of ~100 bytes
    // here); keeping anything per text (its 5-45 tokens) would add well over 100 KB.
    assert!(
        after_1100 - after_100 < 16_384,
        "accumulators grew by {} bytes over 1000 more texts",
        after_1100 - after_100
    );
    // And they did see everything.
    let results: Vec<_> = accs.into_iter().map(|a| a.finish().unwrap()).collect();
    if let AnalysisResult::Covariance(c) = &results[1] {
        let expected: u64 = (0..1100).map(|j| (5 + j % 40) as u64 * 64).sum();
        assert_eq!(c.n_points, expected);
    } else {
        panic!("covariance expected");
    }
}

/// Gemma 3's tokenizer as llama.cpp's converter writes its metadata: 262,144
/// SentencePiece pieces (special tokens, the 256 byte pieces, single characters, then
/// seeded made-up words). Also the made-up words that are pieces with a word boundary, for
/// corpora in the vocabulary's letters: with no merges leading to them, they tokenize into
/// shorter pieces, about five tokens a word.
fn gemma3_tokenizer_meta() -> (Vec<(&'static str, Value)>, Vec<String>) {
    let mut pieces: Vec<String> = ["<pad>", "<eos>", "<bos>", "<unk>"]
        .map(String::from)
        .to_vec();
    let mut types = vec![3i32, 3, 3, 2];
    pieces.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
    types.extend([6; 256]);
    let mut seen: std::collections::HashSet<String> = pieces.iter().cloned().collect();
    let letters: Vec<char> = ('a'..='z').collect();
    for c in letters.iter().chain(&['A', 'E', '.', ',', '\'']) {
        for p in [c.to_string(), format!("\u{2581}{c}")] {
            seen.insert(p.clone());
            pieces.push(p);
            types.push(1);
        }
    }
    let mut state = 270u64;
    let mut next = |n: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % n
    };
    let mut words = Vec::new();
    while pieces.len() < 262_144 {
        let len = 2 + next(7) as usize;
        let word: String = (0..len).map(|_| letters[next(26) as usize]).collect();
        let piece = if next(10) < 6 {
            format!("\u{2581}{word}")
        } else {
            word
        };
        if seen.insert(piece.clone()) {
            if let Some(w) = piece.strip_prefix('\u{2581}') {
                words.push(w.to_string());
            }
            pieces.push(piece);
            types.push(1);
        }
    }
    let scores = Value::Array((0..pieces.len()).map(|i| Value::F32(-(i as f32))).collect());
    let tokens = Value::Array(pieces.into_iter().map(Value::String).collect());
    let types = Value::Array(types.into_iter().map(Value::I32).collect());
    let meta = vec![
        ("general.architecture", Value::String("gemma3".into())),
        ("tokenizer.ggml.model", Value::String("llama".into())),
        ("tokenizer.ggml.pre", Value::String("default".into())),
        ("tokenizer.ggml.tokens", tokens),
        ("tokenizer.ggml.scores", scores),
        ("tokenizer.ggml.token_type", types),
        ("tokenizer.ggml.bos_token_id", Value::U32(2)),
        ("tokenizer.ggml.eos_token_id", Value::U32(1)),
        ("tokenizer.ggml.padding_token_id", Value::U32(0)),
        ("tokenizer.ggml.add_bos_token", Value::Bool(true)),
        ("tokenizer.ggml.add_eos_token", Value::Bool(false)),
        ("tokenizer.ggml.add_space_prefix", Value::Bool(false)),
    ];
    (meta, words)
}

/// Writes a GGUF file of `meta` and `tensors`.
fn write_gguf(path: &std::path::Path, meta: &[(&str, Value)], tensors: &[(String, QTensor)]) {
    let refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (*k, v)).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    gguf_file::write(&mut file, &refs, &tensors).unwrap();
}

/// A GGUF file holding only a Gemma 3 tokenizer.
fn gemma3_tokenizer_file(path: &std::path::Path) {
    write_gguf(path, &gemma3_tokenizer_meta().0, &[]);
}

/// A Gemma-3-270M-shaped GGUF file with seeded random weights, as llama-quantize's Q4_K_M
/// writes that model (bench/gemma3_gguf.py makes the same with llama.cpp): 18 blocks 640
/// wide, 4 query heads and 1 key/value head of 256, a 2,048-wide MLP, Gemma 3's
/// vocabulary. 640-wide rows fit no K-quant, so the embedding is Q8_0, the projections
/// that read them Q5_0 (half the value projections Q8_0), and those reading 1,024 or
/// 2,048 values Q4_K (half the down projections Q6_K). Returns the made-up words.
fn gemma3_model_file(path: &std::path::Path) -> Vec<String> {
    use candle_core::quantized::GgmlDType::{F32, Q4K, Q5_0, Q6K, Q8_0};
    let (width, ffn, q, kv) = (640, 2048, 4 * 256, 256);
    let (mut meta, words) = gemma3_tokenizer_meta();
    let u32s = [
        ("gemma3.block_count", 18),
        ("gemma3.context_length", 32768),
        ("gemma3.embedding_length", width as u32),
        ("gemma3.feed_forward_length", ffn as u32),
        ("gemma3.attention.head_count", 4),
        ("gemma3.attention.head_count_kv", 1),
        ("gemma3.attention.key_length", 256),
        ("gemma3.attention.value_length", 256),
        ("gemma3.attention.sliding_window", 512),
        ("general.file_type", 15),
    ];
    meta.extend(u32s.map(|(k, v)| (k, Value::U32(v))));
    let f32s = [
        ("gemma3.rope.freq_base", 1e6),
        ("gemma3.rope.freq_base_swa", 1e4),
        ("gemma3.attention.layer_norm_rms_epsilon", 1e-6),
    ];
    meta.extend(f32s.map(|(k, v)| (k, Value::F32(v))));
    let mut state = 2026u64;
    let mut tensor = |name: String, (rows, cols): (usize, usize), dtype, norm: bool| {
        let values: Vec<f32> = (0..rows * cols)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                if norm {
                    1.0 + 0.2 * u
                } else {
                    0.04 * u
                }
            })
            .collect();
        let shape = if rows == 1 {
            vec![cols]
        } else {
            vec![rows, cols]
        };
        let t = candle_core::Tensor::from_vec(values, shape, &candle_core::Device::Cpu).unwrap();
        (name, QTensor::quantize(&t, dtype).unwrap())
    };
    let mut tensors = vec![tensor(
        "token_embd.weight".into(),
        (262_144, width),
        Q8_0,
        false,
    )];
    for i in 0..18 {
        let b = |n: &str| format!("blk.{i}.{n}.weight");
        let half = |a, b| if i % 2 == 0 { a } else { b };
        for (n, shape, dtype, norm) in [
            ("attn_norm", (1, width), F32, true),
            ("attn_q", (q, width), Q5_0, false),
            ("attn_k", (kv, width), Q5_0, false),
            ("attn_v", (kv, width), half(Q8_0, Q5_0), false),
            ("attn_q_norm", (1, 256), F32, true),
            ("attn_k_norm", (1, 256), F32, true),
            ("attn_output", (width, q), Q4K, false),
            ("post_attention_norm", (1, width), F32, true),
            ("ffn_norm", (1, width), F32, true),
            ("ffn_gate", (ffn, width), Q5_0, false),
            ("ffn_up", (ffn, width), Q5_0, false),
            ("ffn_down", (width, ffn), half(Q6K, Q4K), false),
            ("post_ffw_norm", (1, width), F32, true),
        ] {
            tensors.push(tensor(b(n), shape, dtype, norm));
        }
    }
    tensors.push(tensor("output_norm.weight".into(), (1, width), F32, true));
    write_gguf(path, &meta, &tensors);
    words
}

/// Runs `strata report --timings` on `spec` and returns the peak resident memory its
/// timings.json records (the process's own `VmHWM`: `wait4`'s figure would include the
/// pages of this test process, which spawned it) and its texts' tokens.
fn report_peak(spec: &std::path::Path, out: &std::path::Path) -> (u64, u64) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["report", "--quiet", "--timings"])
        .arg(spec)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(out.join(name)).unwrap()).unwrap()
    };
    let tokens = read("results.json")["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["n_tokens"].as_u64().unwrap())
        .sum();
    (
        read("timings.json")["peak_rss_bytes"].as_u64().unwrap(),
        tokens,
    )
}

/// Building Gemma 3's tokenizer from GGUF metadata stays near the tokenizer's own size.
/// Through a tokenizer.json of `serde_json` values and `tokenizers`' parse of it, a report's
/// resident memory rose by 196 MB while this vocabulary's tokenizer was built (52 MB
/// before, 248 MB after); built from the data, the heap peaks at 86 MB, of which the
/// tokenizer keeps 45 MB.
#[test]
fn a_gemma3_tokenizer_builds_within_a_bounded_heap() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gemma3-tokenizer.gguf");
    gemma3_tokenizer_file(&path);
    let base = LIVE.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let tok = strata::model::gguf::tokenizer::tokenizer(&path).unwrap();
    let peak = PEAK.load(Ordering::SeqCst) - base;
    let held = LIVE.load(Ordering::SeqCst) - base;
    eprintln!(
        "Gemma 3 tokenizer: heap peak {} MB, held {} MB",
        peak >> 20,
        held >> 20
    );
    // It works: BOS, then pieces of the vocabulary.
    let ids = tok.encode("the abc", true).unwrap().get_ids().to_vec();
    assert_eq!(ids.first(), Some(&2), "{ids:?}");
    assert!(ids.len() > 2, "{ids:?}");
    assert!(
        peak < 96 << 20,
        "building the tokenizer peaked at {} MB of heap",
        peak >> 20
    );
}

/// A report on a Gemma-3-270M-shaped Q4_K_M file (252 MB; three texts, 1,242 tokens in
/// one forward; `summary` of every layer) holds the file's pages and at most `BUDGET` more,
/// quantized or not.
///
/// The weights are memory-mapped, so how many of the file's pages are resident depends on
/// the page cache (a file just written is mapped whole, one read cold only where the texts
/// look up the embedding): 100 to 236 MB here. The rest, 193 MB measured, is what a run
/// holds besides: the forward's 19 hidden states (60 MB at this length), one block's
/// scratch (~30 MB), the tokenizer's tables (45 MB) and the runtime. A dequantized
/// embedding (+671 MB), logits over the whole vocabulary (+1.3 GB) or the tokenizer built
/// through a JSON document (+196 MB) each break the bound.
#[test]
#[cfg(target_os = "linux")]
fn a_gemma3_gguf_report_peaks_near_its_file_size() {
    const WORDS: usize = 75;
    const BUDGET: u64 = 256_000_000;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gemma3-270m-Q4_K_M.gguf");
    let words = gemma3_model_file(&file);
    let size = std::fs::metadata(&file).unwrap().len();
    let texts: Vec<String> = (0..3)
        .map(|t| {
            let w: Vec<&str> = (0..WORDS)
                .map(|i| words[(i * 7919 + t * 104_729) % words.len()].as_str())
                .collect();
            w.join(" ")
        })
        .collect();
    std::fs::write(dir.path().join("corpus.txt"), texts.join("\n") + "\n").unwrap();
    for quantized in [true, false] {
        let spec = dir.path().join(format!("gemma3-{quantized}.yaml"));
        std::fs::write(
            &spec,
            format!(
                "name: gemma3-memory\nmodel: {{id: {}, quantized: {quantized}}}\ncorpus: corpus.txt\nanalyses:\n  - {{kind: summary}}\n",
                file.display()
            ),
        )
        .unwrap();
        let (peak, tokens) = report_peak(&spec, &dir.path().join(format!("out-{quantized}")));
        // The run measured is the one described: the three texts in one forward (the
        // default `batch_tokens` is 2,048), long enough for their states to count.
        assert!((1_000..=2_048).contains(&tokens), "{tokens} tokens");
        let mb = |b: u64| b / 1_000_000;
        eprintln!(
            "Gemma 3 Q4_K_M, quantized: {quantized}: {tokens} tokens, peak RSS {} MB for a {} MB file ({:.2}x)",
            mb(peak),
            mb(size),
            peak as f64 / size as f64
        );
        assert!(
            peak <= size + BUDGET,
            "quantized: {quantized}: peak RSS {} MB, over the {} MB file plus {} MB",
            mb(peak),
            mb(size),
            mb(BUDGET)
        );
    }
}
