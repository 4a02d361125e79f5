//! Bad configuration, one row per mistake: `tracker db check` exits 2 with
//! one line that names the setting and what was expected, and never shows
//! the password.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use crate::cli::{PASSWORD, assert_no_secret, text, tracker};

/// Replaced by the test password in variable values.
const PW: &str = "{pw}";
/// Replaced by bytes that are not UTF-8.
const NOT_UTF8: &str = "{not-utf8}";
/// A file entry with this content is created as a folder.
const FOLDER: &str = "{folder}";

struct Case {
    vars: &'static [(&'static str, &'static str)],
    files: &'static [(&'static str, &'static str)],
    expected: &'static str,
}

const PARTS: [(&str, &str); 4] = [
    ("DB_HOST", "127.0.0.1"),
    ("DB_NAME", "tracker"),
    ("DB_USER", "app"),
    ("DB_PASS", PW),
];

macro_rules! parts_and {
    ($($extra:expr),* $(,)?) => {
        &[PARTS[0], PARTS[1], PARTS[2], PARTS[3], $($extra),*]
    };
}

const CASES: &[Case] = &[
    Case {
        vars: parts_and![("DB_PORT", "abc")],
        files: &[],
        expected: "DB_PORT=\"abc\": expected a port number 1-65535",
    },
    Case {
        vars: parts_and![("DB_PORT", "0")],
        files: &[],
        expected: "DB_PORT=\"0\": expected a port number 1-65535",
    },
    Case {
        vars: parts_and![("DB_PORT", "65536")],
        files: &[],
        expected: "DB_PORT=\"65536\": expected a port number 1-65535",
    },
    Case {
        vars: parts_and![("DB_PORT", "")],
        files: &[],
        expected: "DB_PORT is empty: unset it or give a port number 1-65535",
    },
    Case {
        vars: &[("DB_HOST", "db"), ("DB_USER", "app"), ("DB_PASS", PW)],
        files: &[],
        expected: "DB_NAME is not set: it is required with DB_HOST, DB_USER, DB_PASS (or set DATABASE_URL)",
    },
    Case {
        vars: &[("DB_PASS", PW)],
        files: &[],
        expected: "DB_HOST is not set: it is required with DB_PASS (or set DATABASE_URL)",
    },
    Case {
        vars: &[("DB_HOST", ""), ("DB_NAME", "t"), ("DB_USER", "u")],
        files: &[],
        expected: "DB_HOST is empty: unset it or give a host name, an IP address or a socket directory (a port goes in DB_PORT)",
    },
    Case {
        vars: &[("DB_HOST", "db host"), ("DB_NAME", "t"), ("DB_USER", "u")],
        files: &[],
        expected: "DB_HOST=\"db host\": expected a host name, an IP address or a socket directory (a port goes in DB_PORT)",
    },
    Case {
        vars: &[("DB_HOST", "db:6432"), ("DB_NAME", "t"), ("DB_USER", "u")],
        files: &[],
        expected: "DB_HOST=\"db:6432\": expected a host name, an IP address or a socket directory (a port goes in DB_PORT)",
    },
    Case {
        vars: &[("DB_HOST", "db|1"), ("DB_NAME", "t"), ("DB_USER", "u")],
        files: &[],
        expected: "DB_HOST=\"db|1\": expected a host name, an IP address or a socket directory (a port goes in DB_PORT)",
    },
    Case {
        vars: &[
            ("DB_HOST", "h1,h2:6432"),
            ("DB_NAME", "t"),
            ("DB_USER", "u"),
        ],
        files: &[],
        expected: "DB_HOST=\"h1,h2:6432\": expected a host name, an IP address or a socket directory (a port goes in DB_PORT)",
    },
    Case {
        vars: &[
            ("DB_HOST", "app:{pw}@db"),
            ("DB_NAME", "t"),
            ("DB_USER", "u"),
        ],
        files: &[],
        expected: "DB_HOST (not shown: it has an @, as credentials do): expected a host name, an IP address or a socket directory (a port goes in DB_PORT)",
    },
    Case {
        vars: &[("DATABASE_URL", "")],
        files: &[],
        expected: "DATABASE_URL is empty: unset it or give a postgres://, mysql:// or sqlite: URL",
    },
    Case {
        vars: &[("DATABASE_URL", "mongodb://app:{pw}@db/tracker")],
        files: &[],
        expected: "DATABASE_URL: unknown scheme \"mongodb\": expected postgres://, mysql:// or sqlite:",
    },
    Case {
        vars: &[("DATABASE_URL", "app:{pw}@db/tracker")],
        files: &[],
        expected: "DATABASE_URL: unknown scheme: expected postgres://, mysql:// or sqlite:",
    },
    Case {
        vars: &[("DATABASE_URL", "postgres://app:{pw}@db:port/tracker")],
        files: &[],
        expected: "DATABASE_URL: an @ after the host, as a password with a raw /, ? or # gives: percent-encode them (%2F, %3F, %23; @ is %40)",
    },
    Case {
        vars: &[("DATABASE_URL", "postgres://app@db/tracker?passwrd={pw}")],
        files: &[],
        expected: "DATABASE_URL: unknown postgres URL parameter `passwrd` (known: sslmode, ssl-mode, sslrootcert, ssl-root-cert, ssl-ca, sslcert, ssl-cert, sslkey, ssl-key, statement-cache-capacity, host, hostaddr, port, dbname, user, password, application_name, options)",
    },
    Case {
        vars: &[("DATABASE_URL", "sqlite:data/x.db?mode=bogus")],
        files: &[],
        expected: "DATABASE_URL: not a valid sqlite URL: unknown value \"bogus\" for `mode`",
    },
    Case {
        vars: &[
            ("DB_HOST", "h1,,h2"),
            ("DB_NAME", "t"),
            ("DB_USER", "u"),
            ("DB_PASS", PW),
        ],
        files: &[],
        expected: "DB_HOST: host 2 of the host list is empty",
    },
    Case {
        vars: &[
            ("DB_HOST", "h1,h2,h3"),
            ("DB_PORT", "5432,5433"),
            ("DB_NAME", "t"),
            ("DB_USER", "u"),
        ],
        files: &[],
        expected: "DB_PORT: 2 ports for 3 hosts in DB_HOST: give one port, or one per host",
    },
    Case {
        vars: parts_and![("DB_TARGET_SESSION_ATTRS", "writable")],
        files: &[],
        expected: "DB_TARGET_SESSION_ATTRS=\"writable\": expected any, read-write, read-only, primary, standby or prefer-standby",
    },
    Case {
        vars: parts_and![("DB_LOAD_BALANCE_HOSTS", "yes")],
        files: &[],
        expected: "DB_LOAD_BALANCE_HOSTS=\"yes\": expected disable or random",
    },
    Case {
        vars: &[("DATABASE_URL", "postgres://app:hunter2@h1,,h2/tracker")],
        files: &[],
        expected: "DATABASE_URL: host 2 of the host list is empty",
    },
    Case {
        vars: &[("DATABASE_URL", "postgres://app:hunter2@h1,h2:0/tracker")],
        files: &[],
        expected: "DATABASE_URL: host 2 of the host list: expected host, host:port or [ipv6]:port with a port 1-65535",
    },
    Case {
        vars: &[(
            "DATABASE_URL",
            "postgres://app:hunter2@h1,h2/tracker?target_session_attrs=writable",
        )],
        files: &[],
        expected: "DATABASE_URL: target_session_attrs=\"writable\": expected any, read-write, read-only, primary, standby, prefer-standby",
    },
    Case {
        vars: &[
            (
                "DATABASE_URL",
                "postgres://app:hunter2@h1,h2/tracker?target_session_attrs=read-write",
            ),
            ("DB_TARGET_SESSION_ATTRS", "read-only"),
        ],
        files: &[],
        expected: "DB_TARGET_SESSION_ATTRS=\"read-only\" and target_session_attrs=read-write in DATABASE_URL differ: give one",
    },
    Case {
        vars: &[(
            "DATABASE_URL",
            "mysql://app:hunter2@h1:3306,h2:3306/tracker",
        )],
        files: &[],
        expected: "DATABASE_URL: a host list, target_session_attrs and load_balance_hosts are for PostgreSQL, not mysql",
    },
    Case {
        vars: &[("DATABASE_URL", "sqlite://h1,h2/tracker.db")],
        files: &[],
        expected: "DATABASE_URL: a host list, target_session_attrs and load_balance_hosts are for PostgreSQL, not sqlite",
    },
    Case {
        vars: &[
            ("DATABASE_URL", "sqlite:data/x.db"),
            ("DB_TARGET_SESSION_ATTRS", "read-write"),
        ],
        files: &[],
        expected: "DB_TARGET_SESSION_ATTRS: applies to a PostgreSQL host list, not sqlite",
    },
    Case {
        vars: parts_and![("DB_REPLICA_URLS", "postgres://app:hunter2@r1,,r2/tracker")],
        files: &[],
        expected: "DB_REPLICA_URLS: host 2 of the host list is empty",
    },
    Case {
        vars: parts_and![("DB_MAX_CONNECTIONS", "0")],
        files: &[],
        expected: "DB_MAX_CONNECTIONS=\"0\": expected a whole number 1-10000",
    },
    Case {
        vars: parts_and![("DB_MAX_CONNECTIONS", "10001")],
        files: &[],
        expected: "DB_MAX_CONNECTIONS=\"10001\": expected a whole number 1-10000",
    },
    Case {
        vars: parts_and![("DB_STATEMENT_CACHE_CAPACITY", "-1")],
        files: &[],
        expected: "DB_STATEMENT_CACHE_CAPACITY=\"-1\": expected a whole number 0-100000",
    },
    Case {
        vars: parts_and![("DB_CONNECT_DEADLINE", "9999999999999999999s")],
        files: &[],
        expected: "DB_CONNECT_DEADLINE=\"9999999999999999999s\": expected a duration with a unit, like 5s, 500ms or 2m, up to 24 days, or off",
    },
    Case {
        vars: parts_and![("DB_STATEMENT_TIMEOUT", "30d")],
        files: &[],
        expected: "DB_STATEMENT_TIMEOUT=\"30d\": expected a duration with a unit, like 5s, 500ms or 2m, up to 24 days, or off",
    },
    Case {
        vars: parts_and![("DB_MAX_CONNECTIONS", "yes")],
        files: &[],
        expected: "DB_MAX_CONNECTIONS=\"yes\": expected a whole number 1-10000",
    },
    Case {
        vars: parts_and![("DB_MIN_CONNECTIONS", "off")],
        files: &[],
        expected: "DB_MIN_CONNECTIONS=\"off\": expected a whole number 0-10000",
    },
    Case {
        vars: parts_and![],
        files: &[("config/default.toml", "max_connections = 2.6\n")],
        expected: "config/default.toml: max_connections=\"2.6\": expected a whole number 1-10000",
    },
    Case {
        vars: parts_and![("DB_MAX_CONNECTIONS", "ten")],
        files: &[],
        expected: "DB_MAX_CONNECTIONS=\"ten\": expected a whole number 1-10000",
    },
    Case {
        vars: parts_and![("DB_MIN_CONNECTIONS", "20")],
        files: &[],
        expected: "DB_MIN_CONNECTIONS=20: must not exceed the maximum pool size 10 (DB_MAX_CONNECTIONS)",
    },
    Case {
        vars: parts_and![("DB_CONNECT_TIMEOUT", "5")],
        files: &[],
        expected: "DB_CONNECT_TIMEOUT=\"5\": expected a duration greater than zero with a unit, like 5s, 500ms or 2m, up to 24 days",
    },
    Case {
        vars: parts_and![("DB_ACQUIRE_TIMEOUT", "0s")],
        files: &[],
        expected: "DB_ACQUIRE_TIMEOUT=\"0s\": expected a duration greater than zero with a unit, like 5s, 500ms or 2m, up to 24 days",
    },
    Case {
        vars: parts_and![("DB_IDLE_TIMEOUT", "soon")],
        files: &[],
        expected: "DB_IDLE_TIMEOUT=\"soon\": expected a duration with a unit, like 5s, 500ms or 2m, up to 24 days, or off",
    },
    Case {
        vars: parts_and![("DB_STATEMENT_TIMEOUT", "-5s")],
        files: &[],
        expected: "DB_STATEMENT_TIMEOUT=\"-5s\": expected a duration with a unit, like 5s, 500ms or 2m, up to 24 days, or off",
    },
    Case {
        vars: parts_and![("DB_LOCK_TIMEOUT", "10")],
        files: &[],
        expected: "DB_LOCK_TIMEOUT=\"10\": expected a duration with a unit, like 5s, 500ms or 2m, up to 24 days, or off",
    },
    Case {
        vars: parts_and![("DB_OPERATION_TIMEOUT", "2")],
        files: &[],
        expected: "DB_OPERATION_TIMEOUT=\"2\": expected a duration with a unit, like 5s, 500ms or 2m, up to 24 days, or off",
    },
    Case {
        vars: parts_and![("DB_SSL_MODE", "allow")],
        files: &[],
        expected: "DB_SSL_MODE=\"allow\": expected disable, prefer, require or verify-full",
    },
    Case {
        vars: parts_and![("DB_SSL_ROOT_CERT", "/nonexistent/ca.pem")],
        files: &[],
        expected: "DB_SSL_ROOT_CERT=\"/nonexistent/ca.pem\": expected an existing file",
    },
    Case {
        vars: parts_and![("DB_LOG_STATEMENTS", "loud")],
        files: &[],
        expected: "DB_LOG_STATEMENTS=\"loud\": expected off, error, warn, info, debug or trace",
    },
    Case {
        vars: parts_and![("DB_APPLICATION_NAME", "trackér")],
        files: &[],
        expected: "DB_APPLICATION_NAME=\"trackér\": expected at most 63 printable ASCII characters",
    },
    Case {
        vars: parts_and![("DB_SCHEMA", "tracker,,public")],
        files: &[],
        expected: "DB_SCHEMA=\"tracker,,public\": expected schema names separated by commas",
    },
    Case {
        vars: parts_and![("DB_STATEMENT_CACHE_CAPACITY", "-1")],
        files: &[],
        expected: "DB_STATEMENT_CACHE_CAPACITY=\"-1\": expected a whole number 0-100000",
    },
    Case {
        vars: parts_and![("DB_PASS", NOT_UTF8)],
        files: &[],
        expected: "DB_PASS: not valid UTF-8",
    },
    Case {
        vars: parts_and![("DB_TRANSACTION_POOLER", "maybe")],
        files: &[],
        expected: "DB_TRANSACTION_POOLER=\"maybe\": expected true or false",
    },
    Case {
        vars: parts_and![("DB_REPLICA_HOSTS", "replica:port")],
        files: &[],
        expected: "DB_REPLICA_HOSTS=\"replica:port\": expected host or host:port, comma-separated",
    },
    Case {
        vars: parts_and![("DB_REPLICA_HOSTS", "postgres://app:{pw}@replica/tracker")],
        files: &[],
        expected: "DB_REPLICA_HOSTS (not shown: it has an @, as credentials do): expected host or host:port, comma-separated",
    },
    Case {
        vars: parts_and![
            ("DB_REPLICA_HOSTS", "replica"),
            ("DB_REPLICA_URLS", "postgres://app:{pw}@replica/tracker")
        ],
        files: &[],
        expected: "DB_REPLICA_URLS and DB_REPLICA_HOSTS are both set: use one",
    },
    Case {
        vars: &[("DB_REPLICA_URLS", "postgres://app:{pw}@replica/tracker")],
        files: &[],
        expected: "DB_REPLICA_URLS: read replicas need a PostgreSQL or MySQL primary, not SQLite",
    },
    Case {
        vars: parts_and![("DB_MIGRATION_URL", "mysql://root@db/tracker")],
        files: &[],
        expected: "DB_MIGRATION_URL: a mysql URL, but the database is postgres",
    },
    Case {
        vars: &[("APP_ENV", "../etc")],
        files: &[],
        expected: "APP_ENV=\"../etc\": expected a name like production (letters, digits, - and _)",
    },
    Case {
        vars: &[],
        files: &[("config/default.toml", "pass = \"{pw}\nport = 1\n")],
        expected: "config/default.toml: not valid TOML at line 1: invalid basic string, expected `\"`",
    },
    Case {
        vars: &[],
        files: &[("config/default.toml", "prot = 5432\n")],
        expected: "config/default.toml: unknown key `prot` (see the configuration table in README.md)",
    },
    Case {
        vars: &[("APP_ENV", "production")],
        files: &[
            (
                "config/default.toml",
                "host = \"db\"\nname = \"t\"\nuser = \"u\"\n",
            ),
            ("config/production.toml", "port = \"five\"\n"),
        ],
        expected: "config/production.toml: port=\"five\": expected a port number 1-65535",
    },
    Case {
        vars: &[],
        files: &[("config/default.toml", FOLDER)],
        expected: "config/default.toml: cannot read: Is a directory (os error 21)",
    },
    Case {
        vars: &[],
        files: &[(".env", "DB_HOST=db\nDB_PASS=\"{pw}\n")],
        expected: ".env: cannot parse line 2: expected NAME=value",
    },
];

fn value(raw: &str) -> OsString {
    if raw == NOT_UTF8 {
        OsString::from_vec(b"pa\xffss".to_vec())
    } else {
        OsString::from(raw.replace(PW, PASSWORD))
    }
}

#[test]
fn every_bad_configuration_exits_2_with_one_line_naming_the_setting() {
    assert!(CASES.len() >= 20);
    let mut failures = Vec::new();
    for case in CASES {
        let dir = tempfile::tempdir().unwrap();
        for (path, contents) in case.files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            if *contents == FOLDER {
                std::fs::create_dir(&path).unwrap();
            } else {
                std::fs::write(&path, contents.replace(PW, PASSWORD)).unwrap();
            }
        }
        let vars: Vec<(&str, OsString)> = case.vars.iter().map(|(k, v)| (*k, value(v))).collect();
        let output = tracker(dir.path(), &["db", "check"], &vars);
        assert_no_secret(&output);
        let (stdout, stderr) = text(&output);
        let expected = format!("error: {}\n", case.expected);
        if output.status.code() != Some(2) || stderr != expected || !stdout.is_empty() {
            failures.push(format!(
                "case {:?}\n  expected exit 2 and {expected:?}\n  got exit {:?}, stderr {stderr:?}, stdout {stdout:?}",
                case.vars,
                output.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
