//! Loading settings: layers, precedence, warnings and one-line errors.

use std::time::Duration;

use db_core::{Settings, Source, settings::Section, url::SslMode};
use sea_orm::DbBackend;

fn load(source: &Source) -> Settings {
    Settings::load(source).unwrap_or_else(|e| panic!("unexpected error: {e}"))
}

fn error(source: &Source) -> String {
    match Settings::load(source) {
        Ok(s) => panic!("expected an error, got {s:?}"),
        Err(e) => {
            assert!(e.is_config(), "not a configuration error: {e:?}");
            e.to_string()
        }
    }
}

/// The database a binary names for when none is configured.
const DEFAULT_DATABASE: &str = "sqlite://data/app.db?mode=rwc";

/// A source whose configuration folder is an empty temporary one, so the
/// tests never read a `config/` folder of the working directory, with a
/// binary's default database.
fn isolated() -> (Source, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let source = Source::new().config_dir(dir.path());
    (source.default_value("url", DEFAULT_DATABASE), dir)
}

/// `DB_REPLICA_HOSTS`: the primary's database and credentials on other
/// hosts, also when the primary is reached through a socket directory
/// (whose `host` parameter must not follow to the replicas).
#[test]
fn replica_hosts_take_the_primarys_database_and_credentials() {
    let (source, _dir) = isolated();
    for primary in ["db", "/var/run/postgresql"] {
        let source = (source.clone())
            .var("DB_HOST", primary)
            .var("DB_NAME", "app")
            .var("DB_USER", "u")
            .var("DB_PASS", "secret")
            .var("DB_REPLICA_HOSTS", "r1, r2:5433");
        let s = load(&source);
        let replicas: Vec<_> = s.replicas.iter().map(|r| r.redacted()).collect();
        assert_eq!(
            replicas,
            [
                "postgres://u:***@r1:5432/app",
                "postgres://u:***@r2:5433/app"
            ],
            "primary {primary}"
        );
    }
}

#[test]
fn nothing_set_means_the_binarys_default_database_or_an_error_without_one() {
    let (source, dir) = isolated();
    let s = load(&source);
    assert_eq!(s.url.backend(), DbBackend::Sqlite);
    assert_eq!(s.url.target(), "sqlite data/app.db");
    assert!(s.warnings().is_empty());
    assert_eq!(
        error(&Source::new().config_dir(dir.path())),
        "no database is configured: set DATABASE_URL, or DB_HOST, DB_NAME, DB_USER and DB_PASS"
    );
}

#[test]
fn seed_variables_select_postgres_with_port_5432_by_default() {
    let (source, _dir) = isolated();
    let s = load(
        &source
            .var("DB_HOST", "db.internal")
            .var("DB_NAME", "tracker")
            .var("DB_USER", "app")
            .var("DB_PASS", "secret"),
    );
    assert_eq!(s.url.backend(), DbBackend::Postgres);
    assert_eq!(s.url.target(), "postgres db.internal:5432/tracker");
    assert_eq!(
        s.url.redacted(),
        "postgres://app:***@db.internal:5432/tracker"
    );
}

#[test]
fn database_url_wins_over_parts_with_one_warning_naming_them() {
    let (source, _dir) = isolated();
    let s = load(
        &source
            .var("DATABASE_URL", "mysql://root@127.0.0.1:3306/tracker")
            .var("DB_HOST", "ignored")
            .var("DB_PASS", "ignored-too"),
    );
    assert_eq!(s.url.backend(), DbBackend::MySql);
    assert_eq!(
        s.warnings(),
        ["DATABASE_URL is set, so DB_HOST, DB_PASS are ignored"]
    );
}

#[test]
fn files_are_layered_under_the_environment() {
    let (source, dir) = isolated();
    std::fs::write(
        dir.path().join("default.toml"),
        "max_connections = 4\nacquire_timeout = \"2s\"\nssl_mode = \"require\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("production.toml"), "max_connections = 20\n").unwrap();

    let defaults_only = load(&source);
    assert_eq!(defaults_only.max_connections, 4);
    assert_eq!(defaults_only.acquire_timeout, Duration::from_secs(2));

    let production = load(&source.clone().var("APP_ENV", "production"));
    assert_eq!(production.max_connections, 20);
    assert_eq!(production.acquire_timeout, Duration::from_secs(2));
    assert_eq!(production.ssl_mode, Some(SslMode::Require));

    let env_wins = load(
        &source
            .var("APP_ENV", "production")
            .var("DB_MAX_CONNECTIONS", "7"),
    );
    assert_eq!(env_wins.max_connections, 7);
}

#[test]
fn a_missing_app_env_file_is_fine() {
    let (source, _dir) = isolated();
    assert_eq!(load(&source.var("APP_ENV", "staging")).max_connections, 10);
}

#[test]
fn knobs_parse_with_units_and_off() {
    let (source, _dir) = isolated();
    let s = load(
        &source
            .var("DATABASE_URL", "postgres://u@h/d")
            .var("DB_STATEMENT_TIMEOUT", "off")
            .var("DB_IDLE_TIMEOUT", "90s")
            .var("DB_MAX_LIFETIME", "1h")
            .var("DB_PING_AFTER_IDLE", "0s")
            .var("DB_SLOW_STATEMENT_THRESHOLD", "250ms")
            .var("DB_SCHEMA", "tracker,public")
            .var("DB_APPLICATION_NAME", "tracker-worker")
            .var("DB_MIN_CONNECTIONS", "0")
            .var("DB_STATEMENT_CACHE_CAPACITY", "0"),
    );
    assert_eq!(s.statement_timeout, None);
    assert_eq!(s.idle_timeout, Some(Duration::from_secs(90)));
    assert_eq!(s.max_lifetime, Some(Duration::from_secs(3600)));
    assert_eq!(s.ping_after_idle, None);
    assert_eq!(s.slow_statement_threshold, Some(Duration::from_millis(250)));
    assert_eq!(s.schema.as_deref(), Some("tracker,public"));
    assert_eq!(s.application_name.as_deref(), Some("tracker-worker"));
    assert_eq!(s.min_connections, 0);
    assert_eq!(s.statement_cache_capacity, 0);
    assert!(s.warnings().is_empty(), "{:?}", s.warnings());
}

#[test]
fn a_password_that_looks_like_a_number_is_kept_as_written() {
    let (source, _dir) = isolated();
    let source = source
        .var("DB_HOST", "h")
        .var("DB_NAME", "d")
        .var("DB_USER", "u");
    let s = load(&source.clone().var("DB_PASS", "007"));
    assert_eq!(s.url.expose(), "postgres://u:007@h:5432/d");
    // Text that reads as a number out of any range is still just text.
    for password in ["inf", "1e999", "NaN"] {
        let s = load(
            &source
                .clone()
                .var("DB_PASS", password)
                .var("DB_APPLICATION_NAME", password),
        );
        assert_eq!(s.application_name.as_deref(), Some(password));
        assert!(
            s.url.expose().contains(&format!(":{password}@")),
            "{password}"
        );
    }
}

#[test]
fn postgres_only_settings_on_sqlite_are_ignored_with_a_warning() {
    let (source, _dir) = isolated();
    let s = load(
        &source
            .var("DB_STATEMENT_TIMEOUT", "5s")
            .var("DB_SSL_MODE", "require"),
    );
    assert_eq!(
        s.warnings(),
        [
            "DB_STATEMENT_TIMEOUT applies to PostgreSQL only and is ignored for sqlite",
            "DB_SSL_MODE does not apply to SQLite and is ignored",
        ]
    );
}

/// Keyword settings read as written, in files and variables, are shown the
/// same way, and a word that is none of them names the setting and the
/// words it takes.
#[test]
fn keyword_settings_read_and_show_as_written() {
    let (source, dir) = isolated();
    std::fs::write(
        dir.path().join("default.toml"),
        "load_balance_hosts = \"random\"\n",
    )
    .unwrap();
    let source = source
        .var("DATABASE_URL", "postgres://u@h1,h2/d")
        .var("DB_SSL_MODE", "verify-full")
        .var("DB_TARGET_SESSION_ATTRS", "prefer-standby");
    let s = load(&source);
    assert_eq!(s.ssl_mode, Some(SslMode::VerifyFull));
    assert_eq!(
        s.url.redacted(),
        "postgres://u@h1:5432,h2:5432/d?target_session_attrs=prefer-standby&load_balance_hosts=random"
    );
    let described = s.describe();
    assert!(
        described.contains(&("ssl_mode".to_owned(), "verify-full".to_owned())),
        "{described:?}"
    );
    for (var, value, expects) in [
        (
            "DB_SSL_MODE",
            "verify_full",
            "disable, prefer, require or verify-full",
        ),
        (
            "DB_TARGET_SESSION_ATTRS",
            "writable",
            "any, read-write, read-only, primary, standby or prefer-standby",
        ),
        ("DB_LOAD_BALANCE_HOSTS", "Random", "disable or random"),
    ] {
        assert_eq!(
            error(&source.clone().var(var, value)),
            format!("{var}=\"{value}\": expected {expects}")
        );
    }
}

#[test]
fn unknown_db_variables_are_warned_about() {
    let (source, _dir) = isolated();
    let s = load(&source.var("DB_PROT", "5432"));
    assert_eq!(
        s.warnings(),
        [
            "DB_PROT is not a setting of ours and is ignored (see the configuration table in README.md)"
        ]
    );
}

#[test]
fn file_errors_name_the_file_and_key_and_never_quote_the_file() {
    let (source, dir) = isolated();
    let path = dir.path().join("default.toml");
    let shown = path.display().to_string();

    std::fs::write(&path, "pass = \"hunter2\nport = 1\n").unwrap();
    let message = error(&source);
    assert!(
        message.starts_with(&format!("{shown}: not valid TOML at line 1")),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");

    std::fs::write(&path, "prot = 5432\n").unwrap();
    assert_eq!(
        error(&source),
        format!("{shown}: unknown key `prot` (see the configuration table in README.md)")
    );

    std::fs::write(
        &path,
        "host = \"h\"\nname = \"d\"\nuser = \"u\"\nport = \"abc\"\n",
    )
    .unwrap();
    assert_eq!(
        error(&source),
        format!("{shown}: port=\"abc\": expected a port number 1-65535")
    );

    std::fs::write(&path, "port = [5432]\n").unwrap();
    assert_eq!(
        error(&source),
        format!("{shown}: `port` must be a single value, not a table or list")
    );
}

#[test]
fn debug_of_settings_and_source_never_shows_the_password() {
    let (source, _dir) = isolated();
    let password = "Sup3r-S3cret/pw";
    let source = source
        .var("DB_HOST", "h")
        .var("DB_NAME", "d")
        .var("DB_USER", "u")
        .var("DB_PASS", password);
    let s = load(&source);
    let encoded = "Sup3r%2DS3cret%2Fpw";
    for text in [
        format!("{s:?}"),
        format!("{:?}", s.url),
        format!("{}", s.url),
        format!("{source:?}"),
        format!("{:?}", s.describe()),
    ] {
        assert!(!text.contains(password), "{text}");
        assert!(!text.contains(encoded), "{text}");
    }
    assert!(s.url.expose().contains(encoded));
}

#[test]
fn the_documented_defaults_are_the_built_in_ones() {
    let defaults =
        Settings::new(db_core::url::DatabaseUrl::parse("postgres://u@h/d", "test").unwrap());
    let described = defaults.describe();
    for setting in db_core::settings::documented()
        .iter()
        .filter(|s| !s.default.is_empty())
    {
        if let Some((_, value)) = described.iter().find(|(key, _)| *key == setting.key) {
            assert_eq!(*value, setting.default, "{}", setting.var);
        }
    }
}

mod properties {
    use db_core::{Settings, Source, settings::documented};
    use proptest::prelude::*;

    fn cases() -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(256)
    }

    /// A value the way people write them: numbers, durations, words, URLs,
    /// garbage, empty.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            "[0-9]{0,6}",
            "-?[0-9]{1,3}(ms|s|m|h|x)?",
            "(off|on|disable|prefer|require|verify-full|debug|trace|0s)",
            "(postgres|mysql|sqlite|mongodb|postgresql)://[a-z]{0,5}(:[0-9a-z]{0,4})?@?[a-z.]{0,8}(:[0-9]{0,6})?/[a-z]{0,6}(\\?[a-z_-]{1,12}=[a-z0-9]{0,4})?",
            "sqlite:[a-z/]{0,10}(\\?mode=[a-z]{0,4})?",
            any::<String>(),
        ]
    }

    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(documented().into_iter().map(|s| s.var).collect::<Vec<_>>()),
            Just("APP_ENV".to_owned()),
            "DB_[A-Z_]{1,10}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases()))]

        /// Any environment either loads or fails with one line that names a
        /// setting, and the password never shows, loaded or not.
        #[test]
        fn any_environment_loads_or_names_the_setting_in_one_line(
            vars in prop::collection::vec((name(), value()), 0..6),
            password in "[a-zA-Z0-9@:/?#%&= ]{4,16}",
        ) {
            let dir = tempfile::tempdir().unwrap();
            let password = format!("PW§{password}");
            let mut source = Source::new().config_dir(dir.path());
            for (name, value) in &vars {
                source = source.var(name.clone(), value.clone());
            }
            source = source.var("DB_PASS", password.clone());
            let encoded: String = password.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect();
            match Settings::load(&source) {
                Ok(settings) => {
                    for text in [format!("{settings:?}"), format!("{:?}", settings.describe()), settings.warnings().join("\n")] {
                        prop_assert!(!text.contains(&password) && !text.contains(&encoded), "{}", text);
                    }
                }
                Err(e) => {
                    prop_assert!(e.is_config());
                    let message = e.to_string();
                    prop_assert!(!message.contains('\n'), "{}", message);
                    prop_assert!(!message.contains(&password) && !message.contains(&encoded), "{}", message);
                    let names_one = documented().iter().any(|s| message.starts_with(&s.var))
                        || message.starts_with("APP_ENV");
                    prop_assert!(names_one, "{}", message);
                }
            }
        }
    }
}

#[test]
fn host_lists_come_from_db_host_and_db_port_and_replica_urls_may_hold_them() {
    let (source, _dir) = isolated();
    let source = source
        .var("DB_HOST", "h1,::1,h3")
        .var("DB_PORT", "5432,5433,5434")
        .var("DB_NAME", "tracker")
        .var("DB_USER", "app")
        .var("DB_PASS", "p@ss,w/rd")
        .var("DB_TARGET_SESSION_ATTRS", "read-write")
        .var(
            "DB_REPLICA_URLS",
            "postgres://app@h1,h2:5433/tracker?target_session_attrs=standby,postgres://app@r3/tracker",
        );
    let s = load(&source);
    assert_eq!(
        s.url.target(),
        "postgres h1:5432,[::1]:5433,h3:5434/tracker"
    );
    assert_eq!(
        s.url.redacted(),
        "postgres://app:***@h1:5432,[::1]:5433,h3:5434/tracker?target_session_attrs=read-write"
    );
    let replicas: Vec<String> = s.replicas.iter().map(|r| r.target()).collect();
    assert_eq!(
        replicas,
        [
            "postgres h1:5432,h2:5433/tracker",
            "postgres r3:5432/tracker"
        ]
    );

    // One port serves every host; the same attribute in both places is fine.
    let (source, _dir) = isolated();
    let source = source
        .var(
            "DATABASE_URL",
            "postgres://app@h1,h2/tracker?target_session_attrs=primary",
        )
        .var("DB_TARGET_SESSION_ATTRS", "primary");
    assert_eq!(
        load(&source).url.target(),
        "postgres h1:5432,h2:5432/tracker"
    );
    let (source, _dir) = isolated();
    let source = source
        .var("DB_HOST", "h1,h2")
        .var("DB_PORT", "6432")
        .var("DB_NAME", "t")
        .var("DB_USER", "u")
        .var("DB_REPLICA_URLS", "postgres://u@r1/t,,postgres://u@r2/t");
    assert_eq!(
        error(&source),
        "DB_REPLICA_URLS: an empty entry in the list"
    );
}

/// A service's own settings, declared as a team would: a serde struct whose
/// doc comments and `schemars` attributes document it.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct Notes {
    /// The longest title a note may have.
    #[schemars(range(min = 1, max = 1000))]
    #[schemars(extend("default" = "50", "example" = "80", "expects" = "a whole number 1-1000"))]
    max_title_length: u32,
    /// Where new notes are announced.
    #[schemars(extend("example" = "https://hooks.example/notes", "expects" = "an https:// URL"))]
    webhook: Option<String>,
}

impl Section for Notes {
    const NAME: &'static str = "notes";
    const PREFIX: &'static str = "NOTES_";

    fn invalid(&self) -> Option<&'static str> {
        let https = |w: &str| w.starts_with("https://");
        self.webhook
            .as_deref()
            .is_some_and(|w| !https(w))
            .then_some("webhook")
    }
}

#[test]
fn a_section_of_a_services_own_is_layered_like_the_database_settings() {
    let (source, dir) = isolated();
    let notes = source.section::<Notes>().unwrap();
    assert_eq!(notes.max_title_length, 50);
    assert_eq!(notes.webhook, None);

    let path = dir.path().join("default.toml");
    std::fs::write(
        &path,
        "max_connections = 4\n[notes]\nmax_title_length = 80\nwebhook = \"https://h/n\"\n",
    )
    .unwrap();
    let notes = source.section::<Notes>().unwrap();
    assert_eq!(
        (notes.max_title_length, notes.webhook.as_deref()),
        (80, Some("https://h/n"))
    );
    let source = source.var("NOTES_MAX_TITLE_LENGTH", "90");
    assert_eq!(source.section::<Notes>().unwrap().max_title_length, 90);

    // The database settings accept the table once the binary declares it,
    // and the section does not see the database's keys.
    let shown = path.display().to_string();
    assert_eq!(
        error(&source),
        format!("{shown}: unknown key `notes` (see the configuration table in README.md)")
    );
    let declared = source.clone().declare::<Notes>();
    assert_eq!(load(&declared).max_connections, 4);
    // A binary that reads no section (a migrator) leaves every table to the
    // binary that reads it; a key outside a table is still its to check.
    let elsewhere = source.clone().sections_elsewhere();
    assert_eq!(load(&elsewhere).max_connections, 4);
    std::fs::write(&path, "prot = 5432\n[notes]\nmax_title_length = 80\n").unwrap();
    assert_eq!(
        error(&elsewhere),
        format!("{shown}: unknown key `prot` (see the configuration table in README.md)")
    );
}

#[test]
fn a_sections_errors_are_one_line_naming_the_key_and_where_it_came_from() {
    let (source, dir) = isolated();
    let message = |source: &Source| match source.section::<Notes>() {
        Ok(notes) => panic!("expected an error, got {notes:?}"),
        Err(e) => {
            assert!(e.is_config(), "not a configuration error: {e:?}");
            e.to_string()
        }
    };
    assert_eq!(
        message(&source.clone().var("NOTES_MAX_TITLE_LENGTH", "long")),
        "NOTES_MAX_TITLE_LENGTH=\"long\": expected a whole number 1-1000"
    );
    assert_eq!(
        message(&source.clone().var("NOTES_MAX_TITLE_LENGTH", "0")),
        "NOTES_MAX_TITLE_LENGTH=\"0\": expected a whole number 1-1000"
    );
    assert_eq!(
        message(&source.clone().var("NOTES_MAX_TITLE_LENGTH", "-3")),
        "NOTES_MAX_TITLE_LENGTH=\"-3\": expected a whole number 1-1000"
    );
    assert_eq!(
        message(&source.clone().var("NOTES_WEBHOOK", "http://h/n")),
        "NOTES_WEBHOOK=\"http://h/n\": expected an https:// URL"
    );
    let path = dir.path().join("default.toml");
    let shown = path.display().to_string();
    std::fs::write(&path, "[notes]\nmax_title_length = 2000\n").unwrap();
    assert_eq!(
        message(&source),
        format!("{shown}: max_title_length=\"2000\": expected a whole number 1-1000")
    );
    std::fs::write(&path, "[notes]\ncolour = \"red\"\n").unwrap();
    assert_eq!(
        message(&source),
        format!(
            "{shown}: unknown key `colour` of [notes] (see the configuration table in README.md)"
        )
    );
    std::fs::write(&path, "notes = 3\n").unwrap();
    assert_eq!(
        message(&source),
        format!("{shown}: `notes` must be a table")
    );
}
