//! A private PostgreSQL server for tests that need what the shared server
//! cannot give: password authentication, or a server they may stop, kill and
//! restart. Built from Debian's PostgreSQL binaries on a free port in a
//! temporary folder, which is removed with the server.

use std::ffi::OsStr;
use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

/// A PostgreSQL server of one test's own. Stopped (immediately) and deleted on drop.
#[derive(Debug)]
pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    password: String,
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

/// A TCP port that was free a moment ago.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
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
        let _ = self.stop(StopMode::Immediate);
    }
}
