//! A private PostgreSQL server for tests that need what the shared server
//! cannot give: password authentication, or a server they may stop, kill,
//! restart or pause. Built from Debian's PostgreSQL binaries on a free port
//! in a temporary folder, which is removed with the server.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

/// A PostgreSQL server of one test's own. Resumed if paused, stopped
/// (immediately) and deleted on drop.
#[derive(Debug)]
pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    password: String,
    paused: AtomicBool,
}

/// How to stop the server, as `pg_ctl stop -m` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Disconnect clients, then shut down cleanly.
    Fast,
    /// Quit at once, as a crash would; recovery runs at the next start.
    Immediate,
}

/// The newest PostgreSQL binaries' folder under `/usr/lib/postgresql`.
pub(crate) fn find_bin() -> io::Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| io::Error::other("no PostgreSQL binaries under /usr/lib/postgresql/*/bin"))
}

/// `postgres://postgres:PASSWORD@127.0.0.1:PORT/DATABASE`, encoded.
pub(crate) fn superuser_url(password: &str, port: u16, database: &str) -> String {
    format!(
        "postgres://postgres:{}@127.0.0.1:{port}/{}",
        utf8_percent_encode(password, NON_ALPHANUMERIC),
        utf8_percent_encode(database, NON_ALPHANUMERIC)
    )
}

/// A TCP port that was free a moment ago, and that this process has not
/// handed out before: the servers of one test (a Patroni cluster's eight
/// ports) never get the same one, as two quick binds to port 0 can.
pub fn free_port() -> io::Result<u16> {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if GIVEN.lock().expect("never poisoned").insert(port) {
            return Ok(port);
        }
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A command that runs `program` as the `postgres` user when we are root
/// (the server refuses to run as root), and as ourselves otherwise.
pub(crate) fn as_postgres(program: impl AsRef<OsStr>) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Hands `path` (and everything under it) to the `postgres` user when we
/// are root, so that the servers [`as_postgres`] runs can write there.
pub(crate) fn give_to_postgres(path: &Path) -> io::Result<()> {
    if !is_root() {
        return Ok(());
    }
    let status = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .status()?;
    if !status.success() {
        return Err(io::Error::other(format!(
            "chown of {} failed",
            path.display()
        )));
    }
    Ok(())
}

/// Runs a PostgreSQL binary as [`as_postgres`] does.
fn run(bin: &Path, args: &[&str]) -> io::Result<Output> {
    let output = as_postgres(bin).args(args).output()?;
    if !output.status.success() {
        return Err(io::Error::other(format!(
            "{} {}: {}{}",
            bin.display(),
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Ok(output)
}

/// Runs SQL as the superuser `postgres` over the Unix socket in `socket_dir`
/// and returns psql's unaligned output.
pub(crate) fn psql(
    bin: &Path,
    socket_dir: &Path,
    port: u16,
    database: &str,
    sql: &str,
) -> io::Result<String> {
    let output = run(
        &bin.join("psql"),
        &[
            "-h",
            &socket_dir.to_string_lossy(),
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-d",
            database,
            "-v",
            "ON_ERROR_STOP=1",
            "-XAtqc",
            sql,
        ],
    )?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Sends `signal` (`STOP`, `CONT`, `KILL`, ...) to each process of `pids`;
/// one that has exited meanwhile is no error.
pub(crate) fn signal(signal: &str, pids: &[u32]) -> io::Result<()> {
    if pids.is_empty() {
        return Ok(());
    }
    // `kill` fails when any pid is gone (a backend that just ended); the
    // others got the signal all the same.
    Command::new("kill")
        .arg(format!("-{signal}"))
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status()
        .map(drop)
}

/// Field `n` after the name in `/proc/PID/stat` (`pid (comm) state ppid
/// pgrp ...`: 1 is the parent, 2 the process group), if the process exists.
pub(crate) fn stat_field(pid: u32, n: usize) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name may hold spaces and parentheses: the fields follow the last `)`.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(n)?
        .parse()
        .ok()
}

/// The processes whose parent is `parent`.
fn children(parent: u32) -> io::Result<Vec<u32>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let name = entry?.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if stat_field(pid, 1) == Some(parent) {
            found.push(pid);
        }
    }
    Ok(found)
}

/// The postmaster of the server in `data`, from its `postmaster.pid`, if
/// that process is still that server (the file outlives a killed server,
/// and its pid may have been reused).
pub(crate) fn postmaster(data: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(data.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()?;
    let command_line = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    String::from_utf8_lossy(&command_line)
        .contains(&*data.to_string_lossy())
        .then_some(pid)
}

/// Pauses the server in `data` as a paused machine would: `SIGSTOP` of its
/// postmaster (first, so that it starts no process meanwhile) and of every
/// process it started (backends, WAL writer, checkpointer, WAL sender or
/// receiver). Its sockets stay open; the kernel still accepts connections
/// into the listen queue, but nothing answers.
pub(crate) fn pause_server(data: &Path) -> io::Result<()> {
    let postmaster = postmaster(data)
        .ok_or_else(|| io::Error::other(format!("no server runs in {}", data.display())))?;
    signal("STOP", &[postmaster])?;
    signal("STOP", &children(postmaster)?)
}

/// Resumes what [`pause_server`] paused (`SIGCONT`).
pub(crate) fn resume_server(data: &Path) -> io::Result<()> {
    let Some(postmaster) = postmaster(data) else {
        return Ok(());
    };
    signal("CONT", &children(postmaster)?)?;
    signal("CONT", &[postmaster])
}

impl PrivatePostgres {
    /// Initialises and starts a server whose superuser `postgres` has
    /// `password` (scram-sha-256 over TCP; trust on its own Unix socket).
    pub fn start(password: &str) -> io::Result<Self> {
        let server = Self::init(password)?;
        server.start_again()?;
        Ok(server)
    }

    /// Initialises a server and picks its port, without starting it: tests
    /// of "the server comes up later" start it with [`Self::start_again`].
    pub fn init(password: &str) -> io::Result<Self> {
        let bin = find_bin()?;
        let dir = tempfile::Builder::new().prefix("tracker-pg-").tempdir()?;
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, password)?;
        give_to_postgres(dir.path())?;
        let data = dir.path().join("data");
        run(
            &bin.join("initdb"),
            &[
                "-D",
                &data.to_string_lossy(),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                &format!("--pwfile={}", pwfile.display()),
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        std::fs::remove_file(&pwfile)?;
        Ok(PrivatePostgres {
            dir,
            bin,
            port: free_port()?,
            password: password.to_owned(),
            paused: AtomicBool::new(false),
        })
    }

    /// A streaming replica of this server (`pg_basebackup -R`), started on a
    /// port of its own.
    pub fn start_replica(&self) -> io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("tracker-pg-replica-")
            .tempdir()?;
        give_to_postgres(dir.path())?;
        let data = dir.path().join("data");
        let output = as_postgres(self.bin.join("pg_basebackup"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-D",
            ])
            .arg(&data)
            .args(["-R", "-X", "stream", "--no-sync", "--checkpoint=fast"])
            .env("PGPASSWORD", &self.password)
            .output()?;
        if !output.status.success() {
            return Err(io::Error::other(format!(
                "pg_basebackup: {}",
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        let replica = PrivatePostgres {
            dir,
            bin: self.bin.clone(),
            port: free_port()?,
            password: self.password.clone(),
            paused: AtomicBool::new(false),
        };
        replica.start_again()?;
        Ok(replica)
    }

    /// Starts the (stopped) server again on the same port, waiting until it
    /// accepts connections.
    pub fn start_again(&self) -> io::Result<()> {
        let options = format!(
            "-c port={} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        run(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                &self.data_dir().to_string_lossy(),
                "-l",
                &self.dir.path().join("server.log").to_string_lossy(),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
        .map(drop)
    }

    /// Stops the server.
    pub fn stop(&self, mode: StopMode) -> io::Result<()> {
        let mode = match mode {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        };
        run(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                &self.data_dir().to_string_lossy(),
                "-m",
                mode,
                "-w",
                "stop",
            ],
        )
        .map(drop)
    }

    /// Pauses the server: `SIGSTOP` of the postmaster and of every process it
    /// started. Connections stay open and new ones are accepted by the
    /// kernel, but nothing answers until [`Self::resume`], as with a paused
    /// virtual machine or a network path that silently drops traffic.
    pub fn pause(&self) -> io::Result<()> {
        self.paused.store(true, Ordering::SeqCst);
        pause_server(&self.data_dir())
    }

    /// Resumes a paused server (`SIGCONT`).
    pub fn resume(&self) -> io::Result<()> {
        resume_server(&self.data_dir())?;
        self.paused.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// Runs SQL as the superuser over the server's own socket and returns psql's
    /// unaligned output.
    pub fn psql(&self, database: &str, sql: &str) -> io::Result<String> {
        psql(&self.bin, self.dir.path(), self.port, database, sql)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser's password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// A URL for `database` as the superuser, over TCP with the password.
    pub fn url(&self, database: &str) -> String {
        superuser_url(&self.password, self.port, database)
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The folder the binaries are in (for `pg_basebackup` and friends).
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        // A stopped postmaster never reads `pg_ctl stop`'s signal, and
        // `pg_ctl stop -w` would wait for it forever.
        if self.paused.load(Ordering::SeqCst) {
            let _ = self.resume();
        }
        let _ = self.stop(StopMode::Immediate);
    }
}
