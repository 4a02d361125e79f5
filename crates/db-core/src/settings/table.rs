//! The machinery of the settings table: the `settings!` macro, which turns one
//! row per setting into its `Settings` field, default, parser, `describe` row
//! and documentation, and the value kinds that rows name.

use std::path::PathBuf;
use std::time::Duration;

use sea_orm::DbBackend;

use crate::error::{Error, Result};
use crate::url::{DatabaseUrl, backend_name};

/// One setting: its key in configuration files, its variable, its default and
/// what it means. README.md and `.env.example` list the same, generated.
#[derive(Debug)]
pub struct SettingInfo {
    /// Key in `config/*.toml`.
    pub key: &'static str,
    /// Environment variable.
    pub var: &'static str,
    /// Default, as text; empty when there is none.
    pub default: &'static str,
    /// An example value.
    pub example: &'static str,
    /// What it means (Markdown).
    pub help: &'static str,
}

/// A value as written, and where it was written: a variable, or a file and key.
pub(crate) struct Input {
    pub(crate) raw: String,
    pub(crate) origin: String,
}

impl Input {
    /// The value, refusing an empty one.
    pub(crate) fn text(&self) -> Result<&str> {
        if self.raw.trim().is_empty() {
            return Err(Error::Config(format!(
                "{} is empty: unset it or give a value",
                self.origin
            )));
        }
        Ok(&self.raw)
    }

    /// The error for a value that is not what `expected` says.
    pub(crate) fn expected<T>(&self, expected: &str) -> Result<T> {
        Err(Error::Config(format!(
            "{}=\"{}\": {expected}",
            self.origin, self.raw
        )))
    }
}

/// Where an unset setting would have come from: its variable.
pub(crate) fn origin<'a>(input: &'a Option<Input>, info: &'a SettingInfo) -> &'a str {
    input.as_ref().map_or(info.var, |i| &i.origin)
}

/// The built-in default of a setting, parsed like any value (tests build
/// `Settings::new`, so a default that does not parse fails them).
pub(crate) fn default<T: Default>(info: &SettingInfo, parse: impl Fn(&Input) -> Result<T>) -> T {
    if info.default.is_empty() {
        return T::default();
    }
    let input = Input {
        raw: info.default.to_owned(),
        origin: info.var.to_owned(),
    };
    parse(&input).unwrap_or_else(|e| panic!("the built-in default of {}: {e}", info.var))
}

/// A whole number in `min..=max`.
pub(crate) fn number<T: TryFrom<u64>>(min: u64, max: u64) -> impl Fn(&Input) -> Result<T> {
    move |input| {
        let n = input.text()?.trim().parse::<u64>().ok();
        match n.filter(|n| (min..=max).contains(n)).map(T::try_from) {
            Some(Ok(n)) => Ok(n),
            _ => input.expected(&format!("expected a whole number {min}-{max}")),
        }
    }
}

/// A port number, where an empty value is just a bad port.
pub(crate) fn port(input: &Input) -> Result<u16> {
    match input.raw.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => input.expected("expected a port number 1-65535"),
    }
}

/// `None` for `off` or zero (where allowed), else a duration with a unit.
fn duration(input: &Input, may_be_off: bool) -> Result<Option<Duration>> {
    let value = input.text()?.trim();
    if may_be_off && value == "off" {
        return Ok(None);
    }
    // A bare number is ambiguous (seconds? milliseconds?): ask for a unit.
    let parsed = (!value.chars().all(|c| c.is_ascii_digit()))
        .then(|| humantime::parse_duration(value).ok())
        .flatten();
    match parsed {
        Some(d) if may_be_off => Ok((!d.is_zero()).then_some(d)),
        Some(d) if !d.is_zero() => Ok(Some(d)),
        _ if may_be_off => {
            input.expected("expected a duration with a unit, like 5s, 500ms or 2m or off")
        }
        _ => input
            .expected("expected a duration greater than zero with a unit, like 5s, 500ms or 2m"),
    }
}

/// A duration greater than zero.
pub(crate) fn nonzero(input: &Input) -> Result<Duration> {
    duration(input, false).map(Option::unwrap_or_default)
}

/// A duration; `off` is zero.
pub(crate) fn zero_ok(input: &Input) -> Result<Duration> {
    duration(input, true).map(Option::unwrap_or_default)
}

/// A duration, or `None` for `off` and zero.
pub(crate) fn or_off(input: &Input) -> Result<Option<Duration>> {
    duration(input, true)
}

/// `true` or `false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
pub(crate) fn flag(input: &Input) -> Result<bool> {
    match input.text()?.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => input.expected("expected true or false"),
    }
}

/// Text that passes `check`.
pub(crate) fn text(
    check: fn(&str) -> bool,
    expected: &'static str,
) -> impl Fn(&Input) -> Result<String> {
    move |input| match input.text()? {
        value if check(value) => Ok(value.to_owned()),
        _ => input.expected(expected),
    }
}

/// An existing file.
pub(crate) fn file(input: &Input) -> Result<PathBuf> {
    let path = PathBuf::from(input.text()?);
    if !path.is_file() {
        return input.expected("no such file");
    }
    Ok(path)
}

/// A database URL.
pub(crate) fn url(input: &Input) -> Result<DatabaseUrl> {
    DatabaseUrl::parse(input.text()?.trim(), &input.origin)
}

/// `parse` for a setting that may be unset.
pub(crate) fn some<T>(parse: impl Fn(&Input) -> Result<T>) -> impl Fn(&Input) -> Result<Option<T>> {
    move |input| parse(input).map(Some)
}

/// One of the names of `T`.
pub(crate) fn choice<T: Choice>(input: &Input) -> Result<T> {
    let value = input.text()?;
    match T::NAMES.iter().find(|(name, _)| *name == value) {
        Some((_, choice)) => Ok(*choice),
        None => {
            let names: Vec<&str> = T::NAMES.iter().map(|(name, _)| *name).collect();
            let (last, rest) = names.split_last().unwrap_or((&"", &[]));
            input.expected(&format!("expected {} or {last}", rest.join(", ")))
        }
    }
}

/// A setting whose value is one of a few names.
pub(crate) trait Choice: Copy + 'static {
    /// Every name and its value.
    const NAMES: &'static [(&'static str, Self)];
}

macro_rules! choice {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name { $($(#[$vm])* $variant,)* }

        impl $name {
            /// The name used in settings.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)* }
            }
        }

        impl Choice for $name {
            const NAMES: &'static [(&'static str, Self)] = &[$(($text, $name::$variant)),*];
        }

        impl Show for $name {
            fn show(&self, _: &str) -> String {
                self.as_str().to_owned()
            }
        }
    };
}

choice! {
    /// TLS for server connections.
    SslMode {
        /// Never use TLS.
        Disable = "disable",
        /// Use TLS when the server offers it (the drivers' default).
        Prefer = "prefer",
        /// Require TLS, without checking the certificate.
        Require = "require",
        /// Require TLS with a certificate that is valid for the host name.
        VerifyFull = "verify-full",
    }
}

choice! {
    /// Level at which a statement is logged.
    #[derive(Default)]
    LogLevel {
        /// Not logged.
        Off = "off",
        /// `error`.
        Error = "error",
        /// `warn`.
        Warn = "warn",
        /// `info`.
        Info = "info",
        /// `debug`.
        #[default]
        Debug = "debug",
        /// `trace`.
        Trace = "trace",
    }
}

/// Which servers a setting applies to; where it does not, it is ignored with a warning.
#[derive(Clone, Copy)]
pub(crate) enum Applies {
    All,
    Postgres,
    Server,
    Sqlite,
}

impl Applies {
    pub(crate) fn to(self, backend: DbBackend) -> bool {
        match self {
            Applies::All => true,
            Applies::Postgres => backend == DbBackend::Postgres,
            Applies::Server => backend != DbBackend::Sqlite,
            Applies::Sqlite => backend == DbBackend::Sqlite,
        }
    }

    pub(crate) fn ignored(self, origin: &str, backend: DbBackend) -> String {
        let name = backend_name(backend);
        match self {
            Applies::Postgres => {
                format!("{origin} applies to PostgreSQL only and is ignored for {name}")
            }
            Applies::Sqlite => format!("{origin} applies to SQLite only and is ignored for {name}"),
            _ => format!("{origin} does not apply to SQLite and is ignored"),
        }
    }
}

/// A value as `describe` shows it; `unset` is shown for `None`.
pub(crate) trait Show {
    fn show(&self, unset: &str) -> String;
}

impl<T: Show> Show for Option<T> {
    fn show(&self, unset: &str) -> String {
        self.as_ref()
            .map_or_else(|| unset.to_owned(), |v| v.show(unset))
    }
}

macro_rules! show_with {
    ($($ty:ty: $f:expr;)*) => {
        $(impl Show for $ty {
            fn show(&self, _: &str) -> String {
                $f(self)
            }
        })*
    };
}

show_with! {
    u32: u32::to_string;
    usize: usize::to_string;
    bool: bool::to_string;
    String: String::clone;
    Duration: |d: &Duration| humantime::format_duration(*d).to_string();
    PathBuf: |p: &PathBuf| p.display().to_string();
    DatabaseUrl: DatabaseUrl::redacted;
}

/// What `describe` shows for an unset optional setting; `off` unless the row says.
macro_rules! unset {
    () => {
        "off"
    };
    ($text:literal) => {
        $text
    };
}
pub(crate) use unset;

/// The settings table. `inputs` are read and combined by hand (into the URL
/// and the replicas); each of `fields` becomes a `Settings` field with its
/// default, parser, `describe` row and warning where it does not apply.
macro_rules! settings {
    (
        inputs { $($(#[doc = $idoc:literal])+ $ikey:ident $ivar:literal = $idefault:literal, eg $iexample:literal;)* }
        fields { $(
            $(#[doc = $doc:literal])+
            $key:ident $var:literal: $ty:ty = $default:literal $(or $unset:literal)?,
                $applies:ident, $parse:expr, eg $example:literal;
        )* }
    ) => {
        /// One constant per setting, named by its key.
        #[allow(non_upper_case_globals)]
        mod info {
            use super::SettingInfo;
            $(pub(super) const $ikey: SettingInfo = SettingInfo {
                key: stringify!($ikey), var: $ivar, default: $idefault, example: $iexample, help: concat!($($idoc),+),
            };)*
            $(pub(super) const $key: SettingInfo = SettingInfo {
                key: stringify!($key), var: $var, default: $default, example: $example, help: concat!($($doc),+),
            };)*
        }

        /// Every setting db-core reads, in the order of the README's table.
        pub const SETTINGS: &[SettingInfo] = &[$(info::$ikey,)* $(info::$key,)*];

        /// The value given for each setting, before it is checked.
        #[derive(Default)]
        struct Inputs { $($ikey: Option<Input>,)* $($key: Option<Input>,)* }

        impl Inputs {
            fn slot(&mut self, key: &str) -> Option<&mut Option<Input>> {
                match key {
                    $(stringify!($ikey) => Some(&mut self.$ikey),)*
                    $(stringify!($key) => Some(&mut self.$key),)*
                    _ => None,
                }
            }
        }

        /// Everything db-core needs to connect. Build it with [`Settings::load`], or
        /// with [`Settings::new`] and field updates.
        ///
        /// `Debug` never shows the password: the URL is a [`DatabaseUrl`].
        #[derive(Clone, Debug)]
        #[non_exhaustive]
        pub struct Settings {
            /// The database to connect to (`DATABASE_URL`, or the `DB_*` parts).
            pub url: DatabaseUrl,
            /// Read replicas (`DB_REPLICA_URLS`, or `DB_REPLICA_HOSTS` with the
            /// primary's credentials); read-only sessions go to them.
            pub replicas: Vec<DatabaseUrl>,
            $($(#[doc = $doc])+ #[doc = concat!("\n\nSet with `", $var, "`.")] pub $key: $ty,)*
            warnings: Vec<String>,
        }

        impl Settings {
            /// Settings for `url` with every other field at its default.
            pub fn new(url: DatabaseUrl) -> Self {
                Settings { url, replicas: Vec::new(), $($key: default(&info::$key, $parse),)* warnings: Vec::new() }
            }

            /// Parses every field that is set; warns about those that do not apply.
            fn apply(&mut self, inputs: &Inputs) -> Result<()> {
                let backend = self.url.backend();
                $(if let Some(input) = &inputs.$key {
                    self.$key = ($parse)(input)?;
                    if !Applies::$applies.to(backend) {
                        self.warnings.push(Applies::$applies.ignored(&input.origin, backend));
                    }
                })*
                Ok(())
            }

            /// The `describe` rows of the fields that apply to this backend.
            fn rows(&self) -> Vec<(&'static str, String)> {
                let backend = self.url.backend();
                let mut rows = Vec::new();
                $(if Applies::$applies.to(backend) {
                    rows.push((stringify!($key), Show::show(&self.$key, unset!($($unset)?))));
                })*
                rows
            }
        }
    };
}
pub(crate) use settings;
