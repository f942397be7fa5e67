//! A mock Hugging Face Hub on loopback, speaking what `huggingface_hub` and `hf-hub` both
//! speak: the repo-info call (`/api/{models,datasets,spaces}/REPO/revision/REV`), which
//! resolves a branch, tag or commit to its commit, and ranged downloads pinned to that
//! commit (`/[datasets/|spaces/]REPO/resolve/COMMIT/FILE`). Repos hold several revisions, each with its
//! own commit and files; a gated repo answers only to [`TOKEN`].

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The commit of a single-revision repo made by [`MockRepo::model`].
pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
/// The token a gated repo accepts.
pub const TOKEN: &str = "hf_test_token_123";

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub authorization: Option<String>,
    pub range: Option<String>,
}

/// One commit of a repo, and the names (branches, tags) that point at it.
#[derive(Debug, Clone)]
pub struct MockRevision {
    pub names: Vec<String>,
    pub commit: String,
    pub files: BTreeMap<String, Vec<u8>>,
}

/// A repo on the mock Hub.
#[derive(Debug, Clone)]
pub struct MockRepo {
    pub id: String,
    pub dataset: bool,
    /// A Space (where the tuned-lens package publishes its lenses).
    pub space: bool,
    pub gated: bool,
    pub revisions: Vec<MockRevision>,
}

impl MockRepo {
    /// A public model repo whose `main` is [`COMMIT`] holding `files`.
    pub fn model(id: &str, files: BTreeMap<String, Vec<u8>>) -> Self {
        Self {
            id: id.into(),
            dataset: false,
            space: false,
            gated: false,
            revisions: vec![MockRevision {
                names: vec!["main".into()],
                commit: COMMIT.into(),
                files,
            }],
        }
    }

    fn at(&self, revision: &str) -> Option<&MockRevision> {
        self.revisions
            .iter()
            .find(|r| r.commit == revision || r.names.iter().any(|n| n == revision))
    }
}

#[allow(unused_imports)]
pub use super::common::commit_of;

/// The mock Hub: serves its repos until the test ends; every other repo is a 404, like
/// the Hub's answer for an unknown or private repo.
pub struct MockHub {
    pub port: u16,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl MockHub {
    pub fn start(repos: Vec<MockRepo>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let repos = Arc::new(repos);
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (repos, log) = (repos.clone(), log.clone());
                std::thread::spawn(move || serve(stream, &repos, &log));
            }
        });
        Self { port, seen }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// `strata` pointed at the mock Hub, online, with a fresh HF_HOME and no proxy.
pub fn online(hub: &MockHub, home: &Path) -> std::process::Command {
    let mut c = super::common::strata();
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

fn serve(stream: TcpStream, repos: &[MockRepo], log: &Mutex<Vec<Seen>>) {
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
        let (status, extra, body) = respond(&seen, repos);
        let head = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\n{extra}\r\n",
            body.len()
        );
        if out.write_all(head.as_bytes()).is_err() || out.write_all(&body).is_err() {
            return;
        }
    }
}

type Response = (String, String, Vec<u8>);

fn not_found(code: &str, message: &str) -> Response {
    (
        "404 Not Found".to_string(),
        format!("x-error-code: {code}\r\n"),
        format!("{{\"error\":\"{message}\"}}").into_bytes(),
    )
}

/// The repo `id` of the right type, if the request may see it.
fn find<'a>(
    repos: &'a [MockRepo],
    id: &str,
    (dataset, space): (bool, bool),
    req: &Seen,
) -> Result<&'a MockRepo, Response> {
    let repo = repos
        .iter()
        .find(|r| r.id == id && r.dataset == dataset && r.space == space)
        .ok_or_else(|| not_found("RepoNotFound", "Repository not found"))?;
    let authorized = req.authorization.as_deref() == Some(&format!("Bearer {TOKEN}"));
    if repo.gated && !authorized {
        return Err((
            "401 Unauthorized".into(),
            String::new(),
            format!("{{\"error\":\"Access to model {id} is restricted\"}}").into_bytes(),
        ));
    }
    Ok(repo)
}

fn respond(req: &Seen, repos: &[MockRepo]) -> Response {
    let api = [
        ("/api/models/", (false, false)),
        ("/api/datasets/", (true, false)),
        ("/api/spaces/", (false, true)),
    ]
    .into_iter()
    .find_map(|(p, kind)| req.path.strip_prefix(p).map(|rest| (rest, kind)));
    if let Some((rest, kind)) = api {
        return info(req, repos, rest, kind).unwrap_or_else(|e| e);
    }
    download(req, repos).unwrap_or_else(|e| e)
}

/// `/api/{models,datasets}/REPO/revision/REV`: the commit and the file list.
fn info(
    req: &Seen,
    repos: &[MockRepo],
    rest: &str,
    kind: (bool, bool),
) -> Result<Response, Response> {
    let (id, revision) = rest
        .split_once("/revision/")
        .ok_or_else(|| not_found("RepoNotFound", "Repository not found"))?;
    let revision = revision.replace("%2F", "/");
    let repo = find(repos, id, kind, req)?;
    let rev = repo
        .at(&revision)
        .ok_or_else(|| not_found("RevisionNotFound", &format!("Invalid rev id: {revision}")))?;
    let siblings: Vec<String> = rev
        .files
        .keys()
        .map(|f| format!("{{\"rfilename\":\"{f}\"}}"))
        .collect();
    let body = format!(
        "{{\"id\":\"{id}\",\"sha\":\"{}\",\"siblings\":[{}]}}",
        rev.commit,
        siblings.join(",")
    );
    Ok((
        "200 OK".into(),
        "content-type: application/json\r\n".into(),
        body.into_bytes(),
    ))
}

/// `/[datasets/]REPO/resolve/COMMIT/FILE`, honouring a byte range.
fn download(req: &Seen, repos: &[MockRepo]) -> Result<Response, Response> {
    let path = req.path.trim_start_matches('/');
    let (path, kind) = if let Some(p) = path.strip_prefix("datasets/") {
        (p, (true, false))
    } else if let Some(p) = path.strip_prefix("spaces/") {
        (p, (false, true))
    } else {
        (path, (false, false))
    };
    let missing = || not_found("EntryNotFound", "Entry not found");
    let (id, rest) = path.split_once("/resolve/").ok_or_else(missing)?;
    let (revision, file) = rest.split_once('/').ok_or_else(missing)?;
    let repo = find(repos, id, kind, req)?;
    let rev = repo.at(revision).ok_or_else(missing)?;
    let data = rev.files.get(file).ok_or_else(missing)?;
    assert_eq!(
        revision, rev.commit,
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
    let etag = format!(
        "\"etag-{}-{}\"",
        &rev.commit[..8],
        file.replace(['.', '/'], "-")
    );
    let extra = format!(
        "x-repo-commit: {}\r\netag: {etag}\r\ncontent-range: bytes {start}-{}/{}\r\n",
        rev.commit,
        end.saturating_sub(1),
        data.len()
    );
    Ok((
        "206 Partial Content".into(),
        extra,
        data[start..end].to_vec(),
    ))
}
