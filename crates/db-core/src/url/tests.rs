//! URL building: percent-encoding, IPv6, sockets, and the round trip through
//! sqlx's own parser.

use std::str::FromStr;

use super::{DatabaseUrl, LoadBalanceHosts, Parts, TargetSessionAttrs};
use proptest::prelude::*;
use sea_orm::sqlx::postgres::PgConnectOptions;
use secrecy::SecretString;
use strum::VariantNames;

struct Parsed {
    user: String,
    password: Option<String>,
    host: String,
    port: u16,
    database: Option<String>,
}

/// Parses with sqlx's own options parser. sqlx has no password getter (and
/// its URL writer rejects some user names), so the password is read back the
/// way sqlx's parser reads it: the URL's password, percent-decoded. That the
/// server accepts it is shown by `connect::hostile_passwords_reach_a_password_checking_server`.
fn parse_with_sqlx(url: &DatabaseUrl) -> Parsed {
    let options = PgConnectOptions::from_str(url.expose()).expect("sqlx parses the URL");
    let password = url::Url::parse(url.expose()).unwrap().password().map(|p| {
        percent_encoding::percent_decode_str(p)
            .decode_utf8()
            .unwrap()
            .into_owned()
    });
    Parsed {
        user: options.get_username().to_owned(),
        password,
        host: options.get_host().to_owned(),
        port: options.get_port(),
        database: options.get_database().map(str::to_owned),
    }
}

fn build(host: &str, port: u16, database: &str, user: &str, password: &str) -> DatabaseUrl {
    DatabaseUrl::from_parts(&Parts {
        hosts: &[(host, port)],
        database,
        user,
        password: &SecretString::from(password),
    })
}

fn bare(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

fn assert_round_trip(host: &str, port: u16, database: &str, user: &str, password: &str) {
    let url = build(host, port, database, user, password);
    let parsed = parse_with_sqlx(&url);
    assert_eq!(parsed.user, user);
    assert_eq!(
        parsed.password.as_deref(),
        (!password.is_empty()).then_some(password)
    );
    assert_eq!(parsed.port, port);
    assert_eq!(parsed.database.as_deref(), Some(database));
    assert_eq!(bare(&parsed.host), bare(host));
    // Built URLs also pass our own checks.
    DatabaseUrl::parse(url.expose(), "test").unwrap();
}

#[test]
fn hostile_passwords_survive_the_round_trip() {
    for password in [
        "p@ss:w/rd?#%&=",
        "with space",
        "ümlaut-пароль-密码",
        "%41%",
        "+plus+",
        "quote'\"back\\slash",
        "[brackets]{braces}",
        "",
    ] {
        assert_round_trip("127.0.0.1", 5432, "app", "app", password);
    }
}

#[test]
fn user_and_database_names_are_encoded_too() {
    assert_round_trip("localhost", 6543, "my db/ü", "user@corp", "pw");
    // URL parsers normalise these path segments away, even percent-encoded.
    assert_round_trip("localhost", 5432, ".", "u", "pw");
    assert_round_trip("localhost", 5432, "..", "u", "pw");
}

#[test]
fn unknown_url_parameters_are_refused_without_their_value() {
    let message = DatabaseUrl::parse("postgres://u@h/d?passwrd=hunter2", "DATABASE_URL")
        .unwrap_err()
        .to_string();
    assert!(
        message
            .starts_with("DATABASE_URL: unknown postgres URL parameter `passwrd` (known: sslmode,"),
        "{message}"
    );
    assert!(!message.contains("hunter2"));
    DatabaseUrl::parse(
        "postgres://u@h/d?sslmode=require&options[statement_timeout]=5s",
        "DATABASE_URL",
    )
    .unwrap();
    DatabaseUrl::parse(
        "mysql://u@h/d?ssl-mode=required&charset=utf8mb4",
        "DATABASE_URL",
    )
    .unwrap();
}

#[test]
fn ipv6_hosts_are_bracketed() {
    let url = build("::1", 5432, "d", "u", "p");
    assert_eq!(url.expose(), "postgres://u:p@[::1]:5432/d");
    assert_round_trip("::1", 5432, "d", "u", "p");
    assert_round_trip("[fe80::1]", 5432, "d", "u", "p");
}

#[test]
fn socket_directories_become_the_host_parameter() {
    let url = build("/var/run/postgresql", 5433, "d", "u", "");
    let options = PgConnectOptions::from_str(url.expose()).unwrap();
    assert_eq!(
        options.get_socket().map(|p| p.display().to_string()),
        Some("/var/run/postgresql".to_owned())
    );
    assert_eq!(options.get_port(), 5433);
    assert_eq!(url.target(), "postgres /var/run/postgresql/d");
}

#[test]
fn redaction_hides_raw_and_encoded_passwords() {
    let url = build("h", 5432, "d", "u", "p@ss:w/rd?#%&=");
    assert_eq!(url.redacted(), "postgres://u:***@h:5432/d");
    assert_eq!(
        format!("{url:?}"),
        "DatabaseUrl(\"postgres://u:***@h:5432/d\")"
    );
    let given =
        DatabaseUrl::parse("postgres://u:top%40secret@h/d?password=x", "DATABASE_URL").unwrap();
    assert!(!given.redacted().contains("secret"));
    assert!(!given.redacted().contains("password=x"));
}

#[test]
fn bad_urls_are_configuration_errors_that_do_not_quote_the_url() {
    for (url, expected) in [
        (
            "mongodb://u:pw@h/d",
            "DATABASE_URL: unknown scheme \"mongodb\": expected postgres://, mysql:// or sqlite:",
        ),
        (
            "hunter2:secret@h",
            "DATABASE_URL: unknown scheme: expected postgres://, mysql:// or sqlite:",
        ),
        (
            "postgres://u:hunter2@h:notaport/d",
            "DATABASE_URL: not a valid postgres URL: invalid port number",
        ),
        (
            "mysql://u:hunter2@h:99999/d",
            "DATABASE_URL: not a valid mysql URL: invalid port number",
        ),
        (
            "sqlite:x.db?mode=bogus",
            "DATABASE_URL: not a valid sqlite URL: unknown value \"bogus\" for `mode`",
        ),
        (
            "postgres://u:hunter2@h1,,h2/d",
            "DATABASE_URL: host 2 of the host list is empty",
        ),
        (
            "postgres://u:hunter2@h1,/d",
            "DATABASE_URL: host 2 of the host list is empty",
        ),
        (
            "postgres://u:hunter2@h1:5432,h2:0/d",
            "DATABASE_URL: host 2 of the host list: expected host, host:port or [ipv6]:port with a port 1-65535",
        ),
        (
            "postgres://u:hunter2@h1,h2/d?target_session_attrs=writable",
            "DATABASE_URL: target_session_attrs=\"writable\": expected any, read-write, read-only, primary, standby, prefer-standby",
        ),
        (
            "postgres://u:hunter2@h1,h2/d?load_balance_hosts=yes",
            "DATABASE_URL: load_balance_hosts=\"yes\": expected disable, random",
        ),
        (
            "mysql://u:hunter2@h1:3306,h2:3306/d",
            "DATABASE_URL: a host list, target_session_attrs and load_balance_hosts are for PostgreSQL, not mysql",
        ),
        (
            "mysql://u:hunter2@h/d?target_session_attrs=read-write",
            "DATABASE_URL: a host list, target_session_attrs and load_balance_hosts are for PostgreSQL, not mysql",
        ),
        (
            "postgres://u:2024/hunter2@h/d",
            "DATABASE_URL: an @ after the host, as a password with a raw /, ? or # gives: percent-encode them (%2F, %3F, %23; @ is %40)",
        ),
        (
            "sqlite://h1,h2/x.db",
            "DATABASE_URL: a host list, target_session_attrs and load_balance_hosts are for PostgreSQL, not sqlite",
        ),
    ] {
        let message = DatabaseUrl::parse(url, "DATABASE_URL")
            .unwrap_err()
            .to_string();
        assert_eq!(message, expected);
        assert!(!message.contains("hunter2"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256)
    ))]

    #[test]
    fn any_parts_round_trip(
        user in "[^\u{0}]{1,24}",
        password in "[^\u{0}]{0,32}",
        database in "[^\u{0}]{1,24}",
        port in 1u16..,
        host in prop_oneof![
            "[a-z][a-z0-9-]{0,20}(\\.[a-z][a-z0-9-]{0,10}){0,2}",
            (0u8.., 0u8.., 0u8.., 0u8..).prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
            any::<std::net::Ipv6Addr>().prop_map(|ip| ip.to_string()),
        ],
    ) {
        let url = build(&host, port, &database, &user, &password);
        let parsed = parse_with_sqlx(&url);
        prop_assert_eq!(parsed.user, user);
        prop_assert_eq!(parsed.password.unwrap_or_default(), password.clone());
        prop_assert_eq!(parsed.port, port);
        prop_assert_eq!(parsed.database, Some(database));
        match host.parse::<std::net::Ipv6Addr>() {
            Ok(ip) => prop_assert_eq!(bare(&parsed.host).parse::<std::net::Ipv6Addr>().ok(), Some(ip)),
            Err(_) => prop_assert_eq!(parsed.host, host),
        }
        let shown = url::Url::parse(&url.redacted()).unwrap();
        let expected = (!password.is_empty()).then_some("***");
        prop_assert_eq!(shown.password(), expected);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256)
    ))]

    /// A password written into a URL without percent-encoding is either
    /// read as the password or refused, and neither the error nor the
    /// redacted URL shows any of it (its letters appear in no message).
    #[test]
    fn a_raw_password_never_shows(
        scheme in prop_oneof![Just("postgres"), Just("mysql")],
        password in "[QXZJ0-9/?#@:%&=.]{1,16}",
    ) {
        let leaked = |text: &str| text.contains(['Q', 'X', 'Z', 'J']);
        let url = format!("{scheme}://app:{password}@db:5432/app");
        match DatabaseUrl::parse(&url, "DATABASE_URL") {
            Err(e) => prop_assert!(!leaked(&e.to_string()), "{}", e),
            Ok(url) => {
                for shown in [url.redacted(), url.target(), format!("{url:?}")] {
                    prop_assert!(!leaked(&shown), "{}", shown);
                }
            }
        }
    }
}

#[test]
fn host_lists_keep_every_host_and_the_driver_sees_the_first() {
    let url = DatabaseUrl::parse(
        "postgres://u:hunter2@h1:5432,h2,[::1]:5434/db?sslmode=disable&target_session_attrs=read-write&load_balance_hosts=random",
        "DATABASE_URL",
    )
    .unwrap();
    let hosts = url.hosts().unwrap();
    let list: Vec<(&str, u16)> = hosts.list.iter().map(|(h, p)| (h.as_str(), *p)).collect();
    assert_eq!(list, [("h1", 5432), ("h2", 5432), ("::1", 5434)]);
    assert_eq!(hosts.attrs, Some(TargetSessionAttrs::ReadWrite));
    assert_eq!(hosts.balance, Some(LoadBalanceHosts::Random));
    assert_eq!(
        url.driver_url(),
        "postgres://u:hunter2@h1:5432/db?sslmode=disable"
    );
    assert_eq!(url.target(), "postgres h1:5432,h2:5432,[::1]:5434/db");
    assert_eq!(
        url.redacted(),
        "postgres://u:***@h1:5432,h2:5432,[::1]:5434/db?sslmode=disable&target_session_attrs=read-write&load_balance_hosts=random"
    );
    let other = url.with_database("other");
    assert_eq!(other.target(), "postgres h1:5432,h2:5432,[::1]:5434/other");
    assert_eq!(other.hosts(), url.hosts());
    // A single host keeps its URL untouched, and only the parameters are taken out.
    let single = DatabaseUrl::parse("postgres://u@h/db", "DATABASE_URL").unwrap();
    assert!(single.hosts().is_none());
    let attrs = DatabaseUrl::parse("postgres://u@h/db?target_session_attrs=standby", "X").unwrap();
    assert_eq!(attrs.driver_url(), "postgres://u@h:5432/db");
    assert_eq!(
        attrs.hosts().unwrap().attrs,
        Some(TargetSessionAttrs::Standby)
    );
}

/// A host of a generated list: a name, an IPv4 or an IPv6 address.
fn any_host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,20}(\\.[a-z][a-z0-9-]{0,10}){0,2}",
        (0u8.., 0u8.., 0u8.., 0u8..).prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
        any::<std::net::Ipv6Addr>().prop_map(|ip| ip.to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256)
    ))]

    /// A host list with its parameters, built from parts, parses back to the
    /// same hosts, ports, parameters and credentials.
    #[test]
    fn any_parts_multi_host_round_trip(
        user in "[^\u{0}]{1,16}",
        password in "[^\u{0}]{0,16}",
        database in "[^\u{0}]{1,16}",
        hosts in prop::collection::vec((any_host(), 1u16..), 2..5),
        attrs in prop::option::of(prop::sample::select(TargetSessionAttrs::VARIANTS)),
        balance in prop::option::of(prop::sample::select(LoadBalanceHosts::VARIANTS)),
    ) {
        let list: Vec<(&str, u16)> = hosts.iter().map(|(h, p)| (h.as_str(), *p)).collect();
        let built = DatabaseUrl::from_parts(&Parts {
            hosts: &list,
            database: &database,
            user: &user,
            password: &SecretString::from(password.as_str()),
        })
        .with_session(attrs.map(|a| a.parse().unwrap()), balance.map(|b| b.parse().unwrap()));
        let parsed = DatabaseUrl::parse(built.expose(), "DATABASE_URL").unwrap();
        let got = parsed.hosts().unwrap();
        let normal = |h: &str| match h.parse::<std::net::Ipv6Addr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => h.to_owned(),
        };
        let got_list: Vec<(String, u16)> = got.list.iter().map(|(h, p)| (normal(h), *p)).collect();
        let want: Vec<(String, u16)> = hosts.iter().map(|(h, p)| (normal(h), *p)).collect();
        prop_assert_eq!(got_list, want);
        prop_assert_eq!(got.attrs.map(<&str>::from), attrs);
        prop_assert_eq!(got.balance.map(<&str>::from), balance);
        let first = parse_with_sqlx(&DatabaseUrl::parse(parsed.driver_url(), "X").unwrap());
        prop_assert_eq!(first.user, user);
        prop_assert_eq!(first.password.unwrap_or_default(), password.clone());
        prop_assert_eq!(first.database, Some(database));
        prop_assert_eq!(first.port, hosts[0].1);
        let shown = parsed.redacted();
        prop_assert!(password.is_empty() || shown.contains(":***@"), "{}", shown);
        prop_assert_eq!(&shown, &built.redacted());
    }
}

#[test]
fn another_sqlite_database_is_a_file_beside_the_first() {
    let url = DatabaseUrl::sqlite_file("/srv/data/app.db");
    assert_eq!(
        url.with_database("bench_raw").redacted(),
        "sqlite:///srv/data/bench_raw.db?mode=rwc"
    );
    let relative = DatabaseUrl::parse("sqlite:app.db", "DATABASE_URL").unwrap();
    assert_eq!(relative.with_database("b").redacted(), "sqlite:b.db");
    let memory = DatabaseUrl::parse("sqlite::memory:", "DATABASE_URL").unwrap();
    assert_eq!(memory.with_database("b").redacted(), "sqlite::memory:");
}

#[test]
fn a_child_gets_the_whole_url_as_database_url() {
    let url = build("h", 5432, "d", "u", "p@ss:w/rd?#%&=");
    let (variable, value) = url.child_env();
    assert_eq!(variable, "DATABASE_URL");
    assert_eq!(value.to_str(), Some(url.expose()));
    let again = DatabaseUrl::parse(value.to_str().unwrap(), variable).unwrap();
    assert_eq!(again.expose(), url.expose());
}
