//! Database servers for tests: a PostgreSQL instance from the system's packages, made in a
//! temporary folder, on a free loopback port, as an unprivileged user, and stopped when
//! dropped; the same for MariaDB; and SQLite files written by Python's `sqlite3` module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The user the tests' PostgreSQL trusts from loopback.
pub const PG_USER: &str = "strata";
/// A user that must give [`PG_PASSWORD`].
pub const PG_GUARDED: &str = "guarded";
/// [`PG_GUARDED`]'s password.
pub const PG_PASSWORD: &str = "s3cret-pw";

/// A running PostgreSQL server, stopped (fast shutdown) when dropped.
pub struct Postgres {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    bin: PathBuf,
    _dir: tempfile::TempDir,
}

/// The folder of the newest installed PostgreSQL's programs.
fn pg_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// The uid and gid of `name` in /etc/passwd.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.first() == Some(&name))
            .then(|| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))?
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Wait (up to 60 s) until `child` writes a line containing `marker` to its standard error;
/// its log so far if it ends first. The log keeps being read, so the server never blocks on a
/// full pipe.
fn wait_for_line(child: &mut Child, marker: &'static str) -> Result<(), String> {
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().expect("piped");
    std::thread::spawn(move || {
        let mut told = false;
        let mut log = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !told {
                log.push_str(&line);
                log.push('\n');
                if line.contains(marker) {
                    let _ = tx.send(Ok(()));
                    told = true;
                }
            }
        }
        if !told {
            let _ = tx.send(Err(log));
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| Err("no answer in 60 s".into()))
}

impl Postgres {
    /// Start a server, or say why it cannot be.
    pub fn start() -> Result<Postgres, String> {
        let bin = pg_bin().ok_or("PostgreSQL is not installed (Debian's postgresql)")?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        // PostgreSQL refuses to run as root: run it as the packages' `postgres` user (or
        // `nobody`), owner of its folder.
        let ids = if unsafe { libc::geteuid() } == 0 {
            let ids = user_ids("postgres")
                .or_else(|| user_ids("nobody"))
                .ok_or("no unprivileged user to run PostgreSQL as")?;
            std::os::unix::fs::chown(dir.path(), Some(ids.0), Some(ids.1))
                .map_err(|e| e.to_string())?;
            Some(ids)
        } else {
            None
        };
        let as_server = |program: &str| {
            let mut cmd = Command::new(bin.join(program));
            if let Some((uid, gid)) = ids {
                cmd.uid(uid).gid(gid);
            }
            cmd.env_remove("PGPASSWORD").env_remove("PGUSER");
            cmd
        };
        let data = dir.path().join("data");
        let out = as_server("initdb")
            .args(["-D", data.to_str().unwrap(), "-U", PG_USER, "-A", "trust"])
            .args(["-E", "UTF8", "--locale=C.UTF-8"])
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!("initdb: {}", String::from_utf8_lossy(&out.stderr)));
        }
        // Loopback: the test user is trusted, every other user gives a password.
        std::fs::write(
            data.join("pg_hba.conf"),
            format!(
                "local all all trust\nhost all {PG_USER} 127.0.0.1/32 trust\n\
                 host all all 127.0.0.1/32 scram-sha-256\n"
            ),
        )
        .map_err(|e| e.to_string())?;
        let port = free_port();
        let mut child = as_server("postgres")
            .args(["-D", data.to_str().unwrap(), "-h", "127.0.0.1"])
            .args(["-p", &port.to_string(), "-k", dir.path().to_str().unwrap()])
            .args(["-c", "fsync=off", "-c", "logging_collector=off"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("postgres: {e}"))?;
        let ready = wait_for_line(&mut child, "ready to accept connections");
        let mut server = Postgres {
            child,
            port,
            bin,
            _dir: dir,
        };
        if let Err(log) = ready {
            let _ = server.child.kill();
            return Err(format!("postgres did not start: {log}"));
        }
        server.psql(&format!(
            "CREATE ROLE {PG_GUARDED} LOGIN PASSWORD '{PG_PASSWORD}';"
        ))?;
        Ok(server)
    }

    /// Run `sql` with `psql` as the trusted user in database `postgres`; its output, or its
    /// error.
    pub fn psql(&self, sql: &str) -> Result<String, String> {
        self.psql_in("postgres", sql)
    }

    /// Run `sql` with `psql` as the trusted user in database `database`.
    pub fn psql_in(&self, database: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                PG_USER,
            ])
            .args([
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-X",
                "-q",
                "-A",
                "-t",
            ])
            .args(["-c", sql])
            .env_remove("PGPASSWORD")
            .output()
            .map_err(|e| format!("psql: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The URL of database `postgres` as `user`.
    pub fn url(&self, user: &str) -> String {
        self.url_of(user, "postgres")
    }

    /// The URL of database `database` as `user`.
    pub fn url_of(&self, user: &str, database: &str) -> String {
        format!(
            "postgres://{user}@127.0.0.1:{}/{database}?sslmode=disable",
            self.port
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT: a fast shutdown that ends every backend.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        let _ = self.child.wait();
    }
}

/// Write an SQLite file at `path` by running `sql` with Python's `sqlite3` module.
pub fn sqlite_file(path: &Path, sql: &str) {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); \
             c.executescript(sys.argv[2]); c.commit(); c.close()",
        ])
        .arg(path)
        .arg(sql)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "sqlite3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running MariaDB server, stopped when dropped.
pub struct MariaDb {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl MariaDb {
    /// Start a server with an empty database `shop` and user [`PG_USER`] (no password) that
    /// may do anything in it, or say why it cannot be.
    pub fn start() -> Result<MariaDb, String> {
        let which = |p: &str| {
            ["/usr/sbin", "/usr/bin"]
                .iter()
                .map(|d| Path::new(d).join(p))
                .find(|p| p.exists())
        };
        let server =
            which("mariadbd").ok_or("MariaDB is not installed (Debian's mariadb-server)")?;
        let install = which("mariadb-install-db").ok_or("mariadb-install-db is missing")?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let ids = if unsafe { libc::geteuid() } == 0 {
            let ids = user_ids("mysql")
                .or_else(|| user_ids("nobody"))
                .ok_or("no unprivileged user to run MariaDB as")?;
            std::os::unix::fs::chown(dir.path(), Some(ids.0), Some(ids.1))
                .map_err(|e| e.to_string())?;
            Some(ids)
        } else {
            None
        };
        let as_server = |program: &Path| {
            let mut cmd = Command::new(program);
            if let Some((uid, gid)) = ids {
                cmd.uid(uid).gid(gid);
            }
            cmd
        };
        let data = dir.path().join("data");
        // Its own temporary directory: servers started side by side in `/tmp` have been
        // seen deleting each other's temporary tables during bootstrap.
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).map_err(|e| e.to_string())?;
        if let Some((uid, gid)) = ids {
            std::os::unix::fs::chown(&tmp, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
        }
        let out = as_server(&install)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .output()
            .map_err(|e| format!("mariadb-install-db: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mariadb-install-db: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let port = free_port();
        let socket = dir.path().join("mariadb.sock");
        let mut child = as_server(&server)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg(format!(
                "--pid-file={}",
                dir.path().join("mariadb.pid").display()
            ))
            .args(["--bind-address=127.0.0.1", &format!("--port={port}")])
            .args([
                "--skip-name-resolve",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=16M",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("mariadbd: {e}"))?;
        let ready = wait_for_line(&mut child, "ready for connections");
        let mut db = MariaDb {
            child,
            port,
            socket,
            _dir: dir,
        };
        if let Err(log) = ready {
            let _ = db.child.kill();
            return Err(format!("mariadbd did not start: {log}"));
        }
        db.sql(&format!(
            "CREATE DATABASE shop; CREATE USER '{PG_USER}'@'%'; \
             GRANT ALL ON shop.* TO '{PG_USER}'@'%';"
        ))?;
        Ok(db)
    }

    /// Run `sql` as root in database `shop` (once made) with the `mariadb` client.
    pub fn sql(&self, sql: &str) -> Result<String, String> {
        let mut cmd = Command::new("mariadb");
        cmd.arg("--no-defaults")
            .arg(format!("--socket={}", self.socket.display()))
            .args(["-u", "root", "-N", "-B", "-e", sql]);
        let out = cmd.output().map_err(|e| format!("mariadb: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The URL of database `shop` as [`PG_USER`].
    pub fn url(&self) -> String {
        format!("mysql://{PG_USER}@127.0.0.1:{}/shop", self.port)
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}
