//! A minimal HTTP file server with HEAD and byte ranges, on a port the OS picks, that can
//! misbehave the way real stores and proxies do.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How the server misbehaves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(dead_code)]
pub enum Fault {
    /// Every request is answered properly.
    #[default]
    None,
    /// Every other request is answered `503 Service Unavailable`.
    Unavailable,
    /// Every other request's connection is closed before any answer.
    Reset,
    /// Every other answer with a body is cut short (its length says more), then closed.
    Truncate,
    /// Every answer with a body is cut short.
    TruncateAlways,
    /// No request is ever answered.
    Stall,
}

/// A running server: its port, and how many requests it has seen.
pub struct FileServer {
    pub port: u16,
    #[allow(dead_code)]
    pub requests: Arc<AtomicUsize>,
}

pub async fn serve_files(dir: PathBuf, fault: Fault) -> FileServer {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let dir = dir.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut reader = tokio::io::BufReader::new(read);
                loop {
                    let mut request = String::new();
                    if reader.read_line(&mut request).await.unwrap_or(0) == 0 {
                        return;
                    }
                    // (start, end) or, for `bytes=-N`, the last N bytes.
                    let mut range: Option<(Option<u64>, Option<u64>)> = None;
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).await.unwrap_or(0) == 0 || h == "\r\n" {
                            break;
                        }
                        let lower = h.to_ascii_lowercase();
                        if let Some(r) = lower.strip_prefix("range: bytes=") {
                            let (a, b) = r.trim().split_once('-').unwrap_or((r.trim(), ""));
                            range = Some((a.parse().ok(), b.parse().ok()));
                        }
                    }
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    let odd = n.is_multiple_of(2);
                    match fault {
                        Fault::Stall => {
                            std::future::pending::<()>().await;
                        }
                        Fault::Reset if odd => return,
                        Fault::Unavailable if odd => {
                            let _ = write
                                .write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
                                .await;
                            continue;
                        }
                        _ => {}
                    }
                    let mut parts = request.split_whitespace();
                    let method = parts.next().unwrap_or("").to_string();
                    let path = parts
                        .next()
                        .unwrap_or("/")
                        .trim_start_matches('/')
                        .to_string();
                    let file = dir.join(&path);
                    let (response, cut) = match std::fs::read(&file) {
                        Ok(body) if !path.contains("..") => {
                            let len = body.len() as u64;
                            let (status, slice, extra) = match range {
                                Some((start, end)) => {
                                    let (start, end) = match (start, end) {
                                        (Some(a), b) => (a, b.unwrap_or(len - 1).min(len - 1)),
                                        (None, Some(n)) => (len.saturating_sub(n), len - 1),
                                        (None, None) => (0, len - 1),
                                    };
                                    (
                                        "206 Partial Content",
                                        body[start as usize..=end as usize].to_vec(),
                                        format!("Content-Range: bytes {start}-{end}/{len}\r\n"),
                                    )
                                }
                                None => ("200 OK", body, String::new()),
                            };
                            let mut head = format!(
                                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nLast-Modified: Sun, 01 Nov 2026 00:00:00 GMT\r\nETag: \"{len}\"\r\nAccept-Ranges: bytes\r\n{extra}\r\n",
                                slice.len()
                            )
                            .into_bytes();
                            let head_len = head.len();
                            let mut cut = None;
                            if method != "HEAD" {
                                let short = matches!(fault, Fault::TruncateAlways)
                                    || (fault == Fault::Truncate && odd);
                                if short && slice.len() > 1 {
                                    cut = Some(head_len + slice.len() / 2);
                                }
                                head.extend_from_slice(&slice);
                            }
                            (head, cut)
                        }
                        _ => (
                            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
                            None,
                        ),
                    };
                    let sent = match cut {
                        Some(at) => {
                            let _ = write.write_all(&response[..at]).await;
                            return;
                        }
                        None => write.write_all(&response).await,
                    };
                    if sent.is_err() {
                        return;
                    }
                }
            });
        }
    });
    FileServer { port, requests }
}
