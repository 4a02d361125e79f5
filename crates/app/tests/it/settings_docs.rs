//! README.md's configuration table and `.env.example` are generated from the
//! settings' declarations (`db_core::settings::documented`), with the binaries' own
//! defaults; these tests fail when they drift.
//! `UPDATE_DOCS=1 cargo test -p app --test it settings_docs` rewrites them.

use std::path::PathBuf;

use db_core::settings::SettingInfo;
use migration::binary::APPLICATION_NAME;

const HOW: &str = "generated from the settings' declarations in crates/db-core/src/settings.rs; \
    edit them there, then run UPDATE_DOCS=1 cargo test -p app --test it settings_docs";

/// Every setting, with the defaults the binaries give. (The binaries'
/// default database, their SQLite file, is said in the README's text.)
fn settings() -> Vec<SettingInfo> {
    let mut all = db_core::settings::documented();
    for s in &mut all {
        if s.key == "application_name" {
            s.default = APPLICATION_NAME.to_owned();
        }
    }
    all
}

fn readme_table() -> String {
    let mut out =
        "| Variable | Default | Example | Meaning |\n| --- | --- | --- | --- |\n".to_owned();
    for s in settings() {
        let default = match s.default.as_str() {
            "" => "—".to_owned(),
            default => format!("`{default}`"),
        };
        let (var, example, help) = (&s.var, &s.example, s.help);
        out += &format!("| `{var}` | {default} | `{example}` | {help} |\n");
    }
    out
}

fn env_example() -> String {
    let mut out = String::new();
    for s in settings() {
        let value = if s.default.is_empty() {
            &s.example
        } else {
            &s.default
        };
        out += &format!("# {}\n# {}={value}\n", s.help, s.var);
    }
    out
}

/// Checks (or, with `UPDATE_DOCS`, rewrites) the part of `file` between the
/// `begin` and `end` marker lines.
fn check(file: &str, begin: &str, end: &str, generated: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text.find(begin).map(|i| i + begin.len() + 1);
    let stop = text.find(end);
    let (Some(start), Some(stop)) = (start, stop) else {
        panic!("{file}: the lines {begin:?} and {end:?} are missing");
    };
    if text[start..stop] == *generated {
        return;
    }
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(
            &path,
            format!("{}{generated}{}", &text[..start], &text[stop..]),
        )
        .unwrap();
    } else {
        panic!("{file} differs from the settings table: it is {HOW}");
    }
}

#[test]
fn the_readme_table_is_the_settings_table() {
    let begin = format!("<!-- The table is {HOW}. -->");
    check(
        "README.md",
        &begin,
        "<!-- End of the generated table. -->",
        &readme_table(),
    );
}

#[test]
fn the_env_example_is_the_settings_table() {
    let begin = format!("# --- Settings, {HOW}.");
    check(
        ".env.example",
        &begin,
        "# --- End of the generated settings.",
        &env_example(),
    );
}

#[test]
fn file_keys_are_the_variable_names_without_db_in_lower_case() {
    for s in settings() {
        let var = if s.key == "url" {
            "DATABASE_URL".to_owned()
        } else {
            format!("DB_{}", s.key.to_uppercase())
        };
        assert_eq!(s.var, var);
        assert!(
            !s.help.trim().is_empty() && !s.example.is_empty(),
            "{}",
            s.var
        );
    }
}
