//! Where settings come from, as text: variables and configuration files,
//! and how a struct of settings is read from them: [`Source::section`] for
//! a service's own, [`crate::Settings::load`] for the database's.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use config::{ConfigError, File, FileFormat, Map, Source as _, Value, ValueKind};
use schemars::JsonSchema;
use sea_orm::DbBackend;
use serde::de::DeserializeOwned;
use serde_json::Value as Json;

use crate::error::{Error, Result, bail};

/// Settings of one part of an application, read by [`Source::section`]: the
/// table `[NAME]` of the configuration files, and the variables that start
/// with `PREFIX` (`NOTES_MAX_TITLE_LENGTH` for the key `max_title_length`).
/// Each field's doc comment documents it; `#[schemars(extend("default" =
/// "…", "example" = "…", "expects" = "…"))]` gives its default, an example,
/// and what the one-line error says it expects, and `#[schemars(range(min =
/// …, max = …))]` the range of a number.
pub trait Section: DeserializeOwned + JsonSchema {
    /// The table in the configuration files.
    const NAME: &'static str;
    /// What the variables start with, such as `NOTES_`.
    const PREFIX: &'static str;

    /// The first field whose value parses but is not valid, by key, beyond
    /// the declared ranges.
    fn invalid(&self) -> Option<&'static str> {
        None
    }
}

/// One setting as documented: what generates README.md's configuration
/// table and `.env.example`, read from the struct's declaration.
#[derive(Debug, Clone)]
pub struct SettingInfo {
    /// Key in `config/*.toml`.
    pub key: String,
    /// Environment variable.
    pub var: String,
    /// Default, as text; empty when there is none.
    pub default: String,
    /// An example value.
    pub example: String,
    /// What it means (Markdown).
    pub help: String,
    pub(crate) expects: String,
    /// `postgres`, `server` (not SQLite) or `sqlite`; empty: every backend.
    pub(crate) applies: String,
    /// What `describe` shows when it is not set.
    pub(crate) unset: String,
    /// The smallest and largest number it may be, for a number.
    range: Option<(f64, f64)>,
    /// A whole number.
    integer: bool,
}

impl SettingInfo {
    /// The fields of `T`, in declaration order, with variables named `PREFIX` + the key.
    pub fn of<T: JsonSchema>(prefix: &str) -> Vec<SettingInfo> {
        let schema = schemars::SchemaGenerator::default().into_root_schema_for::<T>();
        let Some(Json::Object(fields)) = schema.get("properties") else {
            return Vec::new();
        };
        (fields.iter())
            .map(|(key, field)| {
                let text = |name: &str| field[name].as_str().filter(|t| !t.is_empty());
                let (min, max) = (field["minimum"].as_f64(), field["maximum"].as_f64());
                SettingInfo {
                    var: text("var")
                        .map_or_else(|| prefix.to_owned() + &key.to_uppercase(), Into::into),
                    default: text("default").unwrap_or_default().to_owned(),
                    example: text("example").unwrap_or_default().to_owned(),
                    help: (text("description").unwrap_or_default().split_whitespace())
                        .collect::<Vec<_>>()
                        .join(" "),
                    // Given as empty: the value may be empty (a password).
                    expects: (field.get("expects"))
                        .map_or("a valid value", |e| e.as_str().unwrap_or_default())
                        .to_owned(),
                    applies: text("applies").unwrap_or_default().to_owned(),
                    unset: text("unset").unwrap_or("(none)").to_owned(),
                    range: (min.or(max))
                        .map(|_| (min.unwrap_or(f64::MIN), max.unwrap_or(f64::MAX))),
                    integer: match &field["type"] {
                        Json::Array(types) => types.iter().any(|t| t == "integer"),
                        kind => kind == "integer",
                    },
                    key: key.clone(),
                }
            })
            .collect()
    }

    pub(crate) fn applies_to(&self, backend: DbBackend) -> bool {
        match self.applies.as_str() {
            "postgres" => backend == DbBackend::Postgres,
            "server" => backend != DbBackend::Sqlite,
            "sqlite" => backend == DbBackend::Sqlite,
            _ => true,
        }
    }
}

/// Where settings come from: a set of environment variables and a folder of
/// configuration files. Tests build one by hand; binaries call
/// [`Source::from_process`]. The library never reads the process environment
/// on its own.
#[derive(Clone, Default)]
pub struct Source {
    vars: BTreeMap<String, String>,
    /// Variables whose value is not valid UTF-8.
    not_unicode: BTreeSet<String>,
    config_dir: Option<PathBuf>,
    /// The binary's own defaults, by key.
    defaults: BTreeMap<String, String>,
    /// The sections the binary reads, besides the database's top level.
    sections: BTreeSet<&'static str>,
    /// Every table is a section that another binary reads.
    sections_elsewhere: bool,
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values may be secrets; names are enough to debug with.
        let vars: Vec<_> = self.vars.keys().collect();
        let dir = &self.config_dir;
        let mut s = f.debug_struct("Source");
        s.field("vars", &vars).field("config_dir", dir).finish()
    }
}

impl Source {
    /// An empty source: no variables, configuration files from `config/`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) one variable.
    pub fn var(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let name = name.into();
        self.not_unicode.remove(&name);
        self.vars.insert(name, value.into());
        self
    }

    /// Reads configuration files from `dir` instead of `config/`.
    pub fn config_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config_dir = Some(dir.into());
        self
    }

    /// The binary's own default for the database setting `key`, over the
    /// built-in one: `url` names the database used when none is configured
    /// (such as a SQLite file), `application_name` the binary.
    pub fn default_value(mut self, key: &str, value: impl Into<String>) -> Self {
        self.defaults.insert(key.to_owned(), value.into());
        self
    }

    /// Declares that the binary reads section `T` ([`Source::section`]): its
    /// table in the configuration files is not an unknown key.
    pub fn declare<T: Section>(mut self) -> Self {
        self.sections.insert(T::NAME);
        self
    }

    /// Declares that the binary reads no section (a migrator, a benchmark):
    /// a table of the configuration files belongs to a binary that reads
    /// and checks it, and is not an unknown key here. Keys outside a table
    /// are still checked.
    pub fn sections_elsewhere(mut self) -> Self {
        self.sections_elsewhere = true;
        self
    }

    /// The process environment, with `./.env` (if present) filling in variables
    /// that are not set. For binaries: this is the only place the process
    /// environment and `.env` are read. A value that is not valid UTF-8 is an
    /// error if it is a setting of ours.
    pub fn from_process() -> Result<Self> {
        let mut source = Source::new();
        for (name, value) in std::env::vars_os() {
            match (name.into_string(), value.into_string()) {
                (Ok(name), Ok(value)) => drop(source.vars.insert(name, value)),
                (Ok(name), Err(_)) => drop(source.not_unicode.insert(name)),
                (Err(_), _) => {}
            }
        }
        let dotenv = Path::new(".env");
        if dotenv.exists() {
            for entry in dotenvy::from_path_iter(dotenv).map_err(dotenv_error)? {
                let (name, value) = entry.map_err(dotenv_error)?;
                if !source.not_unicode.contains(&name) {
                    source.vars.entry(name).or_insert(value);
                }
            }
        }
        Ok(source)
    }

    /// Reads section `T` from the layers: its defaults, the table `[T::NAME]`
    /// of each configuration file, then the variables. Every problem is one
    /// line that names the key or variable and says where the value came
    /// from; a key the section does not have is an error, a variable with
    /// its prefix that it does not have a warning.
    pub fn section<T: Section>(&self) -> Result<T> {
        let all = SettingInfo::of::<T>(T::PREFIX);
        let (value, given) = self.read::<T>(T::NAME, &all)?;
        if let Some(key) = value.invalid() {
            return Err(given.invalid(&all, key));
        }
        for name in self
            .names()
            .filter(|n| n.starts_with(T::PREFIX) && !all.iter().any(|s| s.var == **n))
        {
            tracing::warn!("{name} is not a setting of [{}] and is ignored", T::NAME);
        }
        Ok(value)
    }

    /// The names of the variables.
    pub(crate) fn names(&self) -> impl Iterator<Item = &String> {
        self.vars.keys().chain(&self.not_unicode)
    }

    /// `T` read from the layers of section `name` (the top level when it is
    /// empty), whose settings are `all`; with where each given value came
    /// from.
    pub(crate) fn read<T: DeserializeOwned>(
        &self,
        name: &str,
        all: &[SettingInfo],
    ) -> Result<(T, Given)> {
        // The layers, each key's value from the top one that has it.
        let mut layers = Map::new();
        let builtin = (all.iter())
            .filter(|s| !s.default.is_empty())
            .map(|s| (&s.key, &s.default));
        for (key, value) in builtin.chain(self.defaults.iter().filter(|_| name.is_empty())) {
            layers.insert(key.clone(), Value::from(value.as_str()));
        }
        let mut given = Given(
            BTreeMap::new(),
            all.iter().map(|s| (s.key.clone(), s.var.clone())).collect(),
        );
        for (shown, mut values) in self.files()? {
            if !name.is_empty() {
                values = match values.shift_remove(name).map(|v| v.kind) {
                    Some(ValueKind::Table(table)) => table,
                    Some(_) => bail!("{shown}: `{}` must be a table", name),
                    None => Map::new(),
                };
            }
            for (key, value) in values {
                let section = matches!(value.kind, ValueKind::Table(_)) && name.is_empty();
                if section && (self.sections_elsewhere || self.sections.contains(key.as_str())) {
                    continue;
                }
                if !all.iter().any(|s| s.key == key) {
                    let place = if name.is_empty() {
                        String::new()
                    } else {
                        format!(" of [{name}]")
                    };
                    bail!(
                        "{shown}: unknown key `{key}`{place} (see the configuration table in README.md)"
                    );
                }
                if matches!(value.kind, ValueKind::Table(_) | ValueKind::Array(_)) {
                    bail!("{shown}: `{key}` must be a single value, not a table or list");
                }
                given
                    .0
                    .insert(key.clone(), (format!("{shown}: {key}"), value.to_string()));
                layers.insert(key, value);
            }
        }
        // The variables are the top layer: `DB_PORT` overrides the key `port`.
        for s in all {
            if self.not_unicode.contains(&s.var) {
                bail!("{}: not valid UTF-8", s.var);
            }
            if let Some(value) = self.vars.get(&s.var) {
                layers.insert(s.key.clone(), Value::from(value.as_str()));
                given
                    .0
                    .insert(s.key.clone(), (s.var.clone(), value.clone()));
            }
        }
        let raw = |s: &SettingInfo| given.0.get(&s.key).map(|(_, v)| v.trim());
        if let Some(s) = all
            .iter()
            .find(|s| !s.expects.is_empty() && raw(s) == Some(""))
        {
            bail!(
                "{} is empty: unset it or give {}",
                given.origin(&s.key),
                s.expects
            );
        }
        // `config` would read `yes` as 1, `off` as 0 and `2.6` as 3.
        let not_whole = |v: &str| v.parse::<i64>().is_err();
        if let Some(s) = all
            .iter()
            .find(|s| s.integer && raw(s).is_some_and(not_whole))
        {
            return Err(given.invalid(all, &s.key));
        }
        let invalid = |e| match e {
            ConfigError::Type { key: Some(key), .. } | ConfigError::At { key: Some(key), .. } => {
                given.invalid(all, &key)
            }
            e => Error::Config(format!("settings: {e}")),
        };
        // Only numbers have a range: text such as a password may read as one (`inf`).
        let number = |s: &SettingInfo| layers.get(&s.key).cloned().map(Value::into_float);
        if let Some(s) = all.iter().find(|s| {
            s.range.is_some_and(|(min, max)| {
                number(s).is_some_and(|n| n.is_ok_and(|n| !(min..=max).contains(&n)))
            })
        }) {
            return Err(given.invalid(all, &s.key));
        }
        let value = Value::from(layers)
            .try_deserialize::<T>()
            .map_err(invalid)?;
        Ok((value, given))
    }

    /// `default.toml` and `{APP_ENV}.toml` of the configuration folder, those
    /// that exist, parsed: each as its path and its values.
    fn files(&self) -> Result<Vec<(String, Map<String, Value>)>> {
        let mut names = vec!["default"];
        if let Some(app_env) = self.vars.get("APP_ENV") {
            let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
            if app_env.is_empty() || !app_env.chars().all(valid) {
                bail!(
                    "APP_ENV=\"{app_env}\": expected a name like production (letters, digits, - and _)"
                );
            }
            names.push(app_env);
        }
        let dir = self.config_dir.as_deref().unwrap_or(Path::new("config"));
        let mut files = Vec::new();
        for path in names
            .into_iter()
            .map(|name| dir.join(format!("{name}.toml")))
            .filter(|p| p.exists())
        {
            let shown = path.display().to_string();
            // Read the file here: an unreadable one is an error, not a missing one.
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) => bail!("{shown}: cannot read: {e}"),
            };
            let values = File::from_str(&text, FileFormat::Toml)
                .collect()
                .map_err(|e| toml_error(&shown, &text, &e))?;
            files.push((shown, values));
        }
        Ok(files)
    }
}

/// The values given in files and variables, by key: where each came from and
/// its text; and each key's variable. Never shown whole: it holds the password.
pub(crate) struct Given(BTreeMap<String, (String, String)>, BTreeMap<String, String>);

impl Given {
    /// Where `key` was given, if it was.
    pub(crate) fn given(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|(origin, _)| origin.as_str())
    }

    /// Where `key` came from; its variable if it was not given.
    pub(crate) fn origin<'a>(&'a self, key: &'a str) -> &'a str {
        self.given(key)
            .or(self.1.get(key).map(String::as_str))
            .unwrap_or(key)
    }

    /// The error for an invalid value of `key`, one of `all`.
    pub(crate) fn invalid(&self, all: &[SettingInfo], key: &str) -> Error {
        let Some(s) = all.iter().find(|s| s.key == key) else {
            return Error::Config(format!("settings: cannot read `{key}`"));
        };
        Error::Config(match self.0.get(key) {
            Some((origin, raw)) => format!("{}: expected {}", quoted(origin, raw), s.expects),
            None => format!("{}: the built-in default {:?} is invalid", s.var, s.default),
        })
    }
}

/// `origin="raw"` for an error, unless `raw` has an `@`, as credentials in
/// a URL do (`user:password@host` given where a host was expected): then
/// the origin alone, saying why.
pub(crate) fn quoted(origin: &str, raw: &str) -> String {
    match raw.contains('@') {
        true => format!("{origin} (not shown: it has an @, as credentials do)"),
        false => format!("{origin}=\"{raw}\""),
    }
}

/// A file error without the file's text, which may contain a password.
fn toml_error(shown: &str, text: &str, e: &ConfigError) -> Error {
    if let ConfigError::FileParse { cause, .. } = e
        && let Some(toml) = cause.downcast_ref::<toml::de::Error>()
    {
        let at = toml.span().map_or(String::new(), |span| {
            let line = text[..span.start.min(text.len())].lines().count().max(1);
            format!(" at line {line}")
        });
        let message = toml.message().trim();
        return Error::Config(format!("{shown}: not valid TOML{at}: {message}"));
    }
    Error::Config(format!("{shown}: {e}"))
}

/// A `.env` error without the offending line, which may hold a password.
fn dotenv_error(e: dotenvy::Error) -> Error {
    Error::Config(match e {
        dotenvy::Error::LineParse(line, _) => {
            // Name the line by its number instead.
            let first = line.lines().next().unwrap_or_default();
            let text = std::fs::read_to_string(".env").unwrap_or_default();
            match text.lines().position(|l| l == first) {
                Some(i) => format!(".env: cannot parse line {}: expected NAME=value", i + 1),
                None => ".env: cannot parse a line: expected NAME=value".to_owned(),
            }
        }
        dotenvy::Error::Io(io) => format!(".env: cannot read: {io}"),
        dotenvy::Error::EnvVar(_) => ".env: a referenced variable is not set".to_owned(),
        _ => ".env: cannot be read".to_owned(),
    })
}
