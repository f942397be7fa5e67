//! `make bench`, part three: a sharded run. 200 texts on the 124M-shaped GPT-2 with the
//! correlation experiment's analyses (scatter, covariance, pairplot, histogram, summary),
//! as one process, then as two shards run at once and merged. Prints wall times (median of
//! 3), the merge's time and the partial files' sizes, and checks the merged results.json
//! and index.html equal the one process's byte for byte.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

mod common;

const RUNS: usize = 3;
const TEXTS: usize = 200;

fn strata() -> Command {
    Command::new(env!("CARGO_BIN_EXE_strata"))
}

fn check(o: std::process::Output) {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = common::bench_model();
    let dir = root.join("target/bench-shards");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Deterministic English-like texts of 20 to 100 words.
    let words = "the of and to in is that for it as was with be by on not he this are or his from at which but have an they you were her she there been one all we their has would when if so what no out up said into than its time only could new them man some these then two first may any like now my such make over our even most me state after also made many did must before back see through way where get much go well".split_whitespace().collect::<Vec<_>>();
    let mut state = 7u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    let lines: Vec<String> = (0..TEXTS)
        .map(|_| {
            let n = 20 + next() % 81;
            let t: Vec<&str> = (0..n).map(|_| words[next() % words.len()]).collect();
            t.join(" ") + "."
        })
        .collect();
    std::fs::write(dir.join("corpus.txt"), lines.join("\n") + "\n").unwrap();
    let spec = dir.join("shards.yaml");
    std::fs::write(
        &spec,
        format!(
            "name: bench-shards\nmodel: {{id: {}}}\nexclude_first_token: true\ncorpus: corpus.txt\nanalyses:\n  - {{kind: scatter, layer: 3}}\n  - {{kind: covariance}}\n  - {{kind: pairplot, layers: [0, 1, 2, 3], points: 1000}}\n  - {{kind: histogram, range: [-15, 15], bins: 300}}\n  - {{kind: summary}}\n",
            model.display()
        ),
    )
    .unwrap();

    let whole = dir.join("whole");
    let one: Vec<f64> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            check(
                strata()
                    .args(["report", "--quiet"])
                    .arg(&spec)
                    .arg("--out")
                    .arg(&whole)
                    .output()
                    .unwrap(),
            );
            t.elapsed().as_secs_f64()
        })
        .collect();

    let parts = dir.join("partials");
    let merged = dir.join("merged");
    let mut shards = Vec::new();
    let mut merges = Vec::new();
    for _ in 0..RUNS {
        let _ = std::fs::remove_dir_all(&parts);
        let t = Instant::now();
        let children: Vec<_> = (0..2)
            .map(|i| {
                strata()
                    .args(["report", "--quiet", "--shard", &format!("{i}/2")])
                    .arg(&spec)
                    .arg("--out")
                    .arg(&parts)
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in children {
            check(c.wait_with_output().unwrap());
        }
        shards.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        check(
            strata()
                .args(["merge", "--quiet"])
                .arg(&parts)
                .arg("--out")
                .arg(&merged)
                .output()
                .unwrap(),
        );
        merges.push(t.elapsed().as_secs_f64());
    }
    let sizes: Vec<(PathBuf, u64)> = {
        let mut v: Vec<(PathBuf, u64)> = std::fs::read_dir(&parts)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path(), e.metadata().unwrap().len())
            })
            .collect();
        v.sort();
        v
    };
    let same = ["results.json", "index.html"]
        .iter()
        .all(|f| std::fs::read(whole.join(f)).unwrap() == std::fs::read(merged.join(f)).unwrap());
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(whole.join("results.json")).unwrap()).unwrap();
    let tokens = common::n_tokens(&results);

    println!("\nsharded run: {TEXTS} texts, {tokens} tokens, 124M-shaped GPT-2, the correlation analyses");
    println!(
        "wall time, median of {RUNS}, on this machine's {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let (a, b, m) = (median(one), median(shards), median(merges));
    println!("{:<36} {:>8.2} s", "one process", a);
    println!("{:<36} {:>8.2} s", "2 shards at once (wall)", b);
    println!("{:<36} {:>8.3} s", "strata merge", m);
    println!(
        "{:<36} {:>8.2} s ({:.2}x one process)",
        "2 shards + merge",
        b + m,
        a / (b + m)
    );
    for (p, size) in &sizes {
        println!(
            "{:<36} {:>8.1} KB",
            p.file_name().unwrap().to_string_lossy(),
            *size as f64 / 1000.0
        );
    }
    println!(
        "merged results.json and index.html equal one process's byte for byte: {}",
        if same { "yes" } else { "NO" }
    );
    assert!(same, "the merged result differs from one process");
}
