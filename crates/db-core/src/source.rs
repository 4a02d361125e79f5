//! Where settings come from, as text: variables and configuration files.
//! [`crate::Settings::load`] turns that text into typed values.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use config::{ConfigError, File, FileFormat, FileSourceString, Map, Source as _, Value, ValueKind};

use crate::error::{Error, Result, bail};

/// Where settings come from: a set of environment variables and a folder of
/// configuration files. Tests build one by hand; binaries call
/// [`Source::from_process`]. The library never reads the process environment
/// on its own.
#[derive(Clone, Default)]
pub struct Source {
    pub(crate) vars: BTreeMap<String, String>,
    /// Variables whose value is not valid UTF-8.
    pub(crate) not_unicode: BTreeSet<String>,
    config_dir: Option<PathBuf>,
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

    /// `default.toml` and `{APP_ENV}.toml` of the configuration folder, those
    /// that exist, parsed.
    pub(crate) fn files(&self) -> Result<Vec<ConfigFile>> {
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
        let paths = names
            .into_iter()
            .map(|name| dir.join(format!("{name}.toml")));
        let mut files = Vec::new();
        for path in paths.filter(|path| path.exists()) {
            let shown = path.display().to_string();
            // Read the file here: an unreadable one is an error, not a missing one.
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) => bail!("{shown}: cannot read: {e}"),
            };
            let file = File::from_str(&text, FileFormat::Toml);
            let values = file.collect().map_err(|e| toml_error(&shown, &text, &e))?;
            if let Some((key, _)) = (values.iter())
                .find(|(_, v)| matches!(v.kind, ValueKind::Table(_) | ValueKind::Array(_)))
            {
                bail!("{shown}: `{key}` must be a single value, not a table or list");
            }
            files.push(ConfigFile {
                shown,
                file,
                values,
            });
        }
        Ok(files)
    }
}

/// A configuration file, parsed.
pub(crate) struct ConfigFile {
    /// Its path, as messages show it.
    pub(crate) shown: String,
    /// The file as a layer of `config`.
    pub(crate) file: File<FileSourceString, FileFormat>,
    /// Its keys and values.
    pub(crate) values: Map<String, Value>,
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
