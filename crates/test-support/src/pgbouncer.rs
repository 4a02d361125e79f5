//! A PgBouncer in transaction-pooling mode in front of a private
//! PostgreSQL, for tests (Debian's `pgbouncer` package).

use std::io;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::postgres_server::{
    PrivatePostgres, as_postgres, free_port, give_to_postgres, superuser_url,
};

/// A running PgBouncer; stopped on drop.
#[derive(Debug)]
pub struct PgBouncer {
    _dir: tempfile::TempDir,
    child: Child,
    port: u16,
    password: String,
}

impl PgBouncer {
    /// Starts PgBouncer on a free port, pooling `database` of `server` per
    /// transaction, with the server's superuser and password.
    pub fn start(server: &PrivatePostgres, database: &str) -> io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("tracker-pgbouncer-")
            .tempdir()?;
        let port = free_port()?;
        let config = format!(
            "[databases]\n\
             {database} = host=127.0.0.1 port={upstream} dbname={database}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = plain\n\
             auth_file = {dir}/users.txt\n\
             pool_mode = transaction\n\
             default_pool_size = 20\n\
             max_client_conn = 500\n\
             ignore_startup_parameters = extra_float_digits\n\
             logfile = {dir}/pgbouncer.log\n\
             pidfile = {dir}/pgbouncer.pid\n",
            upstream = server.port(),
            dir = dir.path().display(),
        );
        std::fs::write(dir.path().join("pgbouncer.ini"), config)?;
        std::fs::write(
            dir.path().join("users.txt"),
            format!(
                "\"postgres\" \"{}\"\n",
                server.password().replace('"', "\"\"")
            ),
        )?;
        give_to_postgres(dir.path())?;
        let child = as_postgres("pgbouncer")
            .arg(dir.path().join("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let bouncer = PgBouncer {
            _dir: dir,
            child,
            port,
            password: server.password().to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(io::Error::other("pgbouncer did not start listening"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(bouncer)
    }

    /// A private PostgreSQL (superuser password `password`) with the
    /// database `database`, and a PgBouncer pooling it per transaction;
    /// started off the async runtime's threads. Panics when either cannot
    /// start.
    pub async fn with_private_server(password: &str, database: &str) -> (PrivatePostgres, Self) {
        let (password, database) = (password.to_owned(), database.to_owned());
        tokio::task::spawn_blocking(move || {
            let server = PrivatePostgres::start(&password).expect("starting a private PostgreSQL");
            let create = format!("CREATE DATABASE \"{database}\"");
            server
                .psql("postgres", &create)
                .expect("creating its database");
            let bouncer = PgBouncer::start(&server, &database).expect("starting PgBouncer");
            (server, bouncer)
        })
        .await
        .expect("starting a private PostgreSQL behind PgBouncer")
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for `database` through PgBouncer, as the superuser.
    pub fn url(&self, database: &str) -> String {
        superuser_url(&self.password, self.port, database)
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        // When started through runuser, the child is runuser, not PgBouncer.
        if let Ok(pid) = std::fs::read_to_string(self._dir.path().join("pgbouncer.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
