//! The machinery of the settings table: the `settings!` macro, which turns one
//! row per setting into its documentation, serde field, check, `Settings`
//! field and `describe` row; and the kinds of values the rows use.

use std::path::PathBuf;
use std::time::Duration;

use log::LevelFilter;
use sea_orm::DbBackend;
use serde::{Deserialize, Deserializer, de::Error as _};
use serde_with::{As, DisplayFromStr};

use crate::url::{DatabaseUrl, SslMode, backend_name};

/// One setting as documented. README.md's configuration table and
/// `.env.example` are generated from [`SETTINGS`](super::SETTINGS).
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
    pub(super) expects: &'static str,
    pub(super) applies: Applies,
}

/// A value read with `FromStr` from text or a TOML number (strictly: `on` is no number).
pub(super) type Number = As<DisplayFromStr>;

/// A duration with a unit (`500ms`, `2m`); `off` or zero is `None`.
pub(super) fn or_off<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    match String::deserialize(d)?.as_str() {
        "off" => Ok(None),
        text => humantime::parse_duration(text)
            .map(|d| Some(d).filter(|d| !d.is_zero()))
            .map_err(D::Error::custom),
    }
}

/// A duration with a unit, where `off` is zero.
pub(super) fn off_is_zero<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    or_off(d).map(Option::unwrap_or_default)
}

/// Which servers a setting applies to; where it does not, it is ignored with a warning.
#[derive(Clone, Copy, Debug)]
pub(super) enum Applies {
    All,
    Postgres,
    Server,
    Sqlite,
}

impl Applies {
    pub(super) fn to(self, backend: DbBackend) -> bool {
        match self {
            Applies::All => true,
            Applies::Postgres => backend == DbBackend::Postgres,
            Applies::Server => backend != DbBackend::Sqlite,
            Applies::Sqlite => backend == DbBackend::Sqlite,
        }
    }

    /// The warning for a setting given at `origin` that does not apply to `backend`.
    pub(super) fn ignored(self, origin: &str, backend: DbBackend) -> String {
        let only = match self {
            Applies::Postgres => "PostgreSQL",
            Applies::Sqlite => "SQLite",
            _ => return format!("{origin} does not apply to SQLite and is ignored"),
        };
        let name = backend_name(backend);
        format!("{origin} applies to {only} only and is ignored for {name}")
    }
}

/// A value as `describe` shows it; `unset` is shown for `None`.
pub(super) trait Show {
    fn show(&self, unset: &str) -> String;
}

impl<T: Show> Show for Option<T> {
    fn show(&self, unset: &str) -> String {
        self.as_ref().map_or(unset.to_owned(), |v| v.show(unset))
    }
}

macro_rules! show_with {
    ($($ty:ty: $f:expr;)*) => {$(
        impl Show for $ty {
            fn show(&self, _: &str) -> String {
                $f(self)
            }
        }
    )*};
}

show_with! {
    u32: u32::to_string;
    usize: usize::to_string;
    bool: bool::to_string;
    String: String::clone;
    Duration: |d: &Duration| humantime::format_duration(*d).to_string();
    PathBuf: |p: &PathBuf| p.display().to_string();
    LevelFilter: |l: &LevelFilter| l.as_str().to_lowercase();
    SslMode: |m: &SslMode| m.as_str().to_owned();
    DatabaseUrl: DatabaseUrl::redacted;
}

/// The settings table. `inputs` are combined by hand into the URLs; each of
/// `fields` is also a `Settings` field, applies to some backends, and has a
/// `describe` row (`or` names an unset value; `off` if not). A row's
/// `expects` says what a valid value is; its `if` check runs after serde. A
/// field that `sets` a PostgreSQL session parameter (an `Option<Duration>`)
/// is sent to the server on every connection.
macro_rules! settings {
    (
        inputs { $(
            $(#[doc = $idoc:literal])+ $(#[serde($($iserde:tt)*)])?
            $ikey:ident $ivar:literal: $ity:ty = $idefault:literal, eg $iexample:literal,
                expects $iexpects:expr $(, if $icheck:expr)?;
        )* }
        fields { $(
            $(#[doc = $doc:literal])+ $(#[serde($($serde:tt)*)])?
            $key:ident $var:literal: $ty:ty = $default:literal $(or $unset:literal)?, $applies:ident,
                eg $example:literal, expects $expects:expr $(, if $check:expr)? $(, sets $param:literal)?;
        )* }
    ) => {
        /// One constant per setting, named by its key.
        #[allow(non_upper_case_globals)]
        mod info {
            use super::{table::Applies::*, *};
            $(pub(super) const $ikey: SettingInfo = SettingInfo {
                key: stringify!($ikey), var: $ivar, default: $idefault, example: $iexample,
                help: concat!($($idoc),+), expects: $iexpects, applies: All,
            };)*
            $(pub(super) const $key: SettingInfo = SettingInfo {
                key: stringify!($key), var: $var, default: $default, example: $example,
                help: concat!($($doc),+), expects: $expects, applies: $applies,
            };)*
        }

        /// Every setting db-core reads, in the order of README.md's table. Public
        /// for documentation: db-core's tests generate README.md's configuration
        /// table and `.env.example` from it.
        pub const SETTINGS: &[SettingInfo] = &[$(info::$ikey,)* $(info::$key,)*];

        /// Every setting as serde reads it from the layers.
        #[derive(serde::Deserialize)]
        struct Values {
            $($(#[serde($($iserde)*)])? $ikey: $ity,)*
            $($(#[serde($($serde)*)])? $key: $ty,)*
        }

        impl Values {
            /// The first setting, in table order, whose value fails its check.
            fn failing(&self) -> Option<&'static SettingInfo> {
                $($(if !($icheck as fn(&$ity) -> bool)(&self.$ikey) { return Some(&info::$ikey); })?)*
                $($(if !($check as fn(&$ty) -> bool)(&self.$key) { return Some(&info::$key); })?)*
                None
            }
        }

        /// Everything db-core needs to connect. Build it with [`Settings::load`], or
        /// with [`Settings::new`] and field updates.
        ///
        /// `Debug` never shows the password: the URLs are [`DatabaseUrl`]s.
        #[derive(Clone, Debug)]
        #[non_exhaustive]
        pub struct Settings {
            /// The database to connect to (`DATABASE_URL`, or the `DB_*` parts).
            pub url: DatabaseUrl,
            /// Read replicas (`DB_REPLICA_URLS`, or `DB_REPLICA_HOSTS` with the
            /// primary's credentials); read-only sessions go to them.
            pub replicas: Vec<DatabaseUrl>,
            /// Where migrations connect instead of `url` (`DB_MIGRATION_URL`).
            pub migration_url: Option<DatabaseUrl>,
            $($(#[doc = $doc])+ #[doc = concat!("\n\nSet with `", $var, "`.")] pub $key: $ty,)*
            warnings: Vec<String>,
        }

        impl Settings {
            fn from_values(url: DatabaseUrl, v: Values) -> Self {
                let (replicas, migration_url, warnings) = (Vec::new(), None, Vec::new());
                Settings { url, replicas, migration_url, $($key: v.$key,)* warnings }
            }

            /// The PostgreSQL session parameters of the rows that set one
            /// (`sets`), by their server name: those that are on.
            pub(crate) fn session_parameters(&self) -> impl Iterator<Item = (&'static str, Duration)> {
                let all: Vec<(&'static str, Option<Duration>)> = vec![$($(($param, self.$key),)?)*];
                all.into_iter().filter_map(|(name, value)| Some((name, value?)))
            }

            /// Each field with its value as `describe` shows it.
            fn shown(&self) -> Vec<(&'static SettingInfo, String)> {
                vec![$((&info::$key, Show::show(&self.$key, [$($unset,)? "off"][0])),)*]
            }
        }
    };
}
pub(super) use settings;
