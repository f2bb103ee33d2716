//! Test servers started as child processes on free loopback ports (S3: moto, Azure Blob:
//! Azurite), and a minimal HTTP client for setting them up.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A child process killed when dropped.
pub struct Server {
    /// The process.
    pub child: Child,
    /// The port it reported.
    pub port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `cmd` and wait (up to 60 s) for a line containing `marker` followed by the port.
pub fn start(mut cmd: Command, marker: &str, from_stderr: bool) -> Result<Server, String> {
    cmd.stdin(Stdio::null());
    if from_stderr {
        cmd.stderr(Stdio::piped()).stdout(Stdio::null());
    } else {
        cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    }
    let mut child = cmd.spawn().map_err(|e| format!("cannot start: {e}"))?;
    let out: Box<dyn Read + Send> = if from_stderr {
        Box::new(child.stderr.take().expect("piped"))
    } else {
        Box::new(child.stdout.take().expect("piped"))
    };
    let (tx, rx) = mpsc::channel();
    let marker = marker.to_string();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if !sent && let Some(rest) = line.split(&marker).nth(1) {
                let port: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
                let _ = tx.send(port.parse::<u16>().ok());
                sent = true;
            }
            // Keep draining so the child never blocks on a full pipe.
        }
        if !sent {
            let _ = tx.send(None);
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Some(port)) => Ok(Server { child, port }),
        _ => {
            let _ = child.kill();
            Err("server did not report its port".into())
        }
    }
}

/// The S3 test server (moto) on a free loopback port.
pub fn start_moto() -> Result<Server, String> {
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "moto.server", "-H", "127.0.0.1", "-p", "0"]);
    start(cmd, "Running on http://127.0.0.1:", true)
}

/// The Azure Blob test server (Azurite) on a free loopback port, keeping its data in `dir`.
pub fn start_azurite(dir: &std::path::Path) -> Result<Server, String> {
    let mut cmd = Command::new("azurite-blob");
    // In memory: recent Azurite refuses --inMemoryPersistence next to --location, so the
    // folder is only its working directory.
    cmd.args([
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        "0",
        "--inMemoryPersistence",
        "--skipApiVersionCheck",
        "--loose",
        "--disableTelemetry",
    ])
    .current_dir(dir);
    start(cmd, "successfully listens on http://127.0.0.1:", false)
}

/// One HTTP/1.1 request over a fresh connection; returns the status code.
pub fn http(port: u16, method: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut resp = String::new();
    let _ = BufReader::new(s).read_line(&mut resp);
    resp.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}
