//! Running the `tracker` binary in a clean environment.

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Output};

/// The password every test uses, so a leak is easy to find.
pub const PASSWORD: &str = "Tr4ck-S3cr3t/pw";

/// Its percent-encoded form, as it appears inside URLs.
pub const PASSWORD_ENCODED: &str = "Tr4ck%2DS3cr3t%2Fpw";

/// A variable's value, as [`tracker`] takes it.
pub fn os(s: impl Into<String>) -> OsString {
    OsString::from(s.into())
}

/// `tracker ARGS` in `dir`, with only `vars` (and PATH) in its environment.
pub fn tracker(dir: &Path, args: &[&str], vars: &[(&str, OsString)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tracker"));
    command
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for (name, value) in vars {
        command.env(name, value);
    }
    command.output().expect("running tracker")
}

/// Standard output and error, as text.
pub fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Fails if the test password shows up anywhere in the output.
pub fn assert_no_secret(output: &Output) {
    let (stdout, stderr) = text(output);
    for stream in [&stdout, &stderr] {
        assert!(
            !stream.contains(PASSWORD) && !stream.contains(PASSWORD_ENCODED),
            "the password leaked:\n{stream}"
        );
    }
}
