//! A local stand-in for the Hub, for tests (this crate's and the pipeline's) and offline demos:
//! - the `resolve` endpoint: `x-repo-commit`, `etag` / `x-linked-etag`, a redirect for LFS files to
//!   an absolute `/lfs/<sha256>` URL (as the Hub redirects to its CDN), `Range` requests;
//! - the repo-info endpoint `/api/{models,datasets}/<repo>/revision/<rev>` (`sha`, `siblings`), which
//!   lists a revision's files;
//! - branches: each file lives on one (`main`, or e.g. `refs/convert/parquet`, URL-encoded as the
//!   Hub's clients send it), each branch resolving to its own commit;
//! - 404 for unknown files, 401 for a gated repo without the token, and, on request, a connection cut
//!   halfway through a file's first download;
//! - a count of requests and of body bytes served.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

/// The commit `main` resolves to.
pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// The commit a branch resolves to: [`COMMIT`] for `main`, else a hash of the branch name.
pub fn commit_of(branch: &str) -> String {
    if branch == "main" {
        return COMMIT.to_string();
    }
    sha256_hex(branch.as_bytes())[..40].to_string()
}

/// One file the fake Hub serves.
#[derive(Debug, Clone)]
pub struct FakeFile {
    /// `org/name` for a model, `datasets/org/name` for a dataset.
    pub repo_path: String,
    /// Path inside the repo.
    pub name: String,
    /// Contents.
    pub bytes: Vec<u8>,
    /// Served as an LFS file (redirect, sha256 etag).
    pub lfs: bool,
    /// The branch holding it (`main` when empty).
    pub branch: String,
}

impl FakeFile {
    /// A file on `main`.
    pub fn new(repo_path: &str, name: &str, bytes: impl Into<Vec<u8>>, lfs: bool) -> Self {
        Self { repo_path: repo_path.into(), name: name.into(), bytes: bytes.into(), lfs, branch: String::new() }
    }

    /// The same file on another branch.
    pub fn on_branch(mut self, branch: &str) -> Self {
        self.branch = branch.into();
        self
    }

    fn branch(&self) -> &str {
        if self.branch.is_empty() {
            "main"
        } else {
            &self.branch
        }
    }

    /// Whether `revision` (a branch, URL-encoded or not, or its commit) names this file's branch.
    fn on(&self, revision: &str) -> bool {
        let revision = revision.replace("%2F", "/").replace("%2f", "/");
        revision == self.branch() || revision == commit_of(self.branch())
    }
}

/// The running server; stops when dropped.
pub struct FakeHub {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Requests served so far.
    pub requests: Arc<AtomicUsize>,
    /// Body bytes of file contents served so far.
    pub bytes_served: Arc<AtomicUsize>,
    server: Arc<tiny_http::Server>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Settings of a fake Hub.
#[derive(Debug, Clone, Default)]
pub struct FakeHubConfig {
    /// The files.
    pub files: Vec<FakeFile>,
    /// Repos (`repo_path`) that answer 401 without `Authorization: Bearer <token>`.
    pub gated: Vec<String>,
    /// The token that opens them.
    pub token: String,
    /// Files (`name`) whose first full download is cut halfway.
    pub cut_once: Vec<String>,
    /// Files (`name`) whose LFS etag is announced wrong (a corrupted transfer).
    pub wrong_sha: Vec<String>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn header(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("valid header")
}

/// `bytes=a-b` / `bytes=a-` → (a, b inclusive) within `len`.
fn range(request: &tiny_http::Request, len: usize) -> Option<(usize, usize)> {
    let h = request.headers().iter().find(|h| h.field.equiv("Range"))?;
    let spec = h.value.as_str().strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let start: usize = a.parse().ok()?;
    let end = if b.is_empty() { len.saturating_sub(1) } else { b.parse::<usize>().ok()?.min(len.saturating_sub(1)) };
    Some((start, end))
}

impl FakeHub {
    /// Starts serving on a free port.
    pub fn start(cfg: FakeHubConfig) -> FakeHub {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind a local port"));
        let port = server.server_addr().to_ip().expect("an IP address").port();
        let url = format!("http://127.0.0.1:{port}");
        let requests = Arc::new(AtomicUsize::new(0));
        let bytes_served = Arc::new(AtomicUsize::new(0));
        let (s, r, base, served) = (server.clone(), requests.clone(), url.clone(), bytes_served.clone());
        let cut_done: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
        let by_sha: BTreeMap<String, FakeFile> = cfg.files.iter().filter(|f| f.lfs).map(|f| (sha256_hex(&f.bytes), f.clone())).collect();
        let thread = std::thread::spawn(move || {
            for request in s.incoming_requests() {
                r.fetch_add(1, Ordering::SeqCst);
                let path = request.url().to_string();
                // `/lfs/<sha>`: the bytes of an LFS file.
                if let Some(sha) = path.strip_prefix("/lfs/") {
                    let Some(file) = by_sha.get(sha) else {
                        let _ = request.respond(tiny_http::Response::empty(404));
                        continue;
                    };
                    let len = file.bytes.len();
                    let (start, end) = range(&request, len).unwrap_or((0, len - 1));
                    let body = &file.bytes[start..=end];
                    let content_range = format!("bytes {start}-{end}/{len}");
                    let mut cut = cut_done.lock().unwrap();
                    if end > start && cfg.cut_once.contains(&file.name) && !cut.contains(&file.name) {
                        cut.push(file.name.clone());
                        // The transfer ends halfway (as when a connection drops and the client sees
                        // the end of the stream): half the bytes, under the whole file's range.
                        let response = tiny_http::Response::from_data(body[..body.len() / 2].to_vec())
                            .with_status_code(206)
                            .with_header(header("Content-Range", &content_range));
                        let _ = request.respond(response);
                        continue;
                    }
                    drop(cut);
                    served.fetch_add(body.len(), Ordering::SeqCst);
                    let response = tiny_http::Response::from_data(body.to_vec())
                        .with_status_code(if range(&request, len).is_some() { 206 } else { 200 })
                        .with_header(header("Content-Range", &content_range));
                    let _ = request.respond(response);
                    continue;
                }
                // `/api/<models|datasets>/<repo>/revision/<rev>`: the revision's files.
                if let Some(rest) = path.strip_prefix("/api/") {
                    let rest = rest.split('?').next().unwrap_or(rest);
                    let Some((kind_repo, revision)) = rest.split_once("/revision/") else {
                        let _ = request.respond(tiny_http::Response::empty(404));
                        continue;
                    };
                    let repo_path = match kind_repo.split_once('/') {
                        Some(("models", repo)) => repo.to_string(),
                        Some(("datasets", repo)) => format!("datasets/{repo}"),
                        _ => {
                            let _ = request.respond(tiny_http::Response::empty(404));
                            continue;
                        }
                    };
                    let on: Vec<&FakeFile> = cfg.files.iter().filter(|f| f.repo_path == repo_path && f.on(revision)).collect();
                    let Some(first) = on.first() else {
                        let _ = request.respond(tiny_http::Response::empty(404).with_header(header("x-error-code", "RevisionNotFound")));
                        continue;
                    };
                    let siblings: Vec<String> = on.iter().map(|f| format!("{{\"rfilename\":\"{}\"}}", f.name)).collect();
                    let body = format!("{{\"sha\":\"{}\",\"siblings\":[{}]}}", commit_of(first.branch()), siblings.join(","));
                    let response = tiny_http::Response::from_data(body).with_header(header("Content-Type", "application/json"));
                    let _ = request.respond(response);
                    continue;
                }
                // `/<repo_path>/resolve/<revision>/<file>`.
                let Some((repo_path, rest)) = path.split_once("/resolve/") else {
                    let _ = request.respond(tiny_http::Response::empty(404));
                    continue;
                };
                let repo_path = repo_path.trim_start_matches('/').to_string();
                let (revision, name) = rest.split_once('/').unwrap_or((rest, ""));
                let name = name.replace("%2F", "/");
                if cfg.gated.contains(&repo_path) {
                    let authorised = request
                        .headers()
                        .iter()
                        .any(|h| h.field.equiv("Authorization") && h.value.as_str() == format!("Bearer {}", cfg.token));
                    if !authorised {
                        let _ = request.respond(tiny_http::Response::empty(401));
                        continue;
                    }
                }
                let file = cfg.files.iter().find(|f| f.repo_path == repo_path && f.name == name && f.on(revision));
                let Some(file) = file else {
                    let _ = request.respond(tiny_http::Response::empty(404).with_header(header("x-error-code", "EntryNotFound")));
                    continue;
                };
                let len = file.bytes.len();
                if file.lfs {
                    let sha = sha256_hex(&file.bytes);
                    let announced = if cfg.wrong_sha.contains(&file.name) { sha256_hex(b"something else") } else { sha.clone() };
                    let response = tiny_http::Response::empty(302)
                        .with_header(header("Location", &format!("{base}/lfs/{sha}")))
                        .with_header(header("x-repo-commit", &commit_of(file.branch())))
                        .with_header(header("x-linked-etag", &format!("\"{announced}\"")))
                        .with_header(header("x-linked-size", &len.to_string()));
                    let _ = request.respond(response);
                } else {
                    let (start, end) = range(&request, len).unwrap_or((0, len.saturating_sub(1)));
                    let body = if len == 0 { Vec::new() } else { file.bytes[start..=end].to_vec() };
                    served.fetch_add(body.len(), Ordering::SeqCst);
                    let response = tiny_http::Response::from_data(body)
                        .with_status_code(if range(&request, len).is_some() { 206 } else { 200 })
                        .with_header(header("x-repo-commit", &commit_of(file.branch())))
                        .with_header(header("etag", &format!("\"{}\"", &sha256_hex(&file.bytes)[..40])))
                        .with_header(header("Content-Range", &format!("bytes {start}-{end}/{len}")));
                    let _ = request.respond(response);
                }
            }
        });
        FakeHub { url, requests, bytes_served, server, thread: Some(thread) }
    }

    /// Requests served so far.
    pub fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// File bytes served so far (bodies of `resolve` and LFS responses).
    pub fn bytes(&self) -> usize {
        self.bytes_served.load(Ordering::SeqCst)
    }

    /// Serves every file under `dir` (recursively) as `repo_path` on `main`; `*.safetensors` and
    /// `*.parquet` as LFS files, the rest as git files.
    pub fn folder_files(dir: &std::path::Path, repo_path: &str) -> std::io::Result<Vec<FakeFile>> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d)? {
                let path = entry?.path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let name = path.strip_prefix(dir).expect("under dir").to_string_lossy().replace('\\', "/");
                let lfs = name.ends_with(".safetensors") || name.ends_with(".parquet");
                out.push(FakeFile::new(repo_path, &name, std::fs::read(&path)?, lfs));
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}
