//! The API's documentation as a user meets it, on a real `tracker serve`:
//! `/openapi.json` checked by an OpenAPI 3.1 validator, the API tested
//! against it by schemathesis, and `/docs` and `/redoc` used in headless
//! Chromium with every outside request blocked.
//!
//! Both need tools from outside Cargo, so a plain `cargo test` reports them
//! as ignored unless `TEST_BROWSER` is set; `just browser-test` (and CI)
//! installs the pinned tools and sets it, and then a missing tool is a failure.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use test_support::free_port;

use crate::serve::{Running, start};

/// ReDoc's footer logo, which ReDoc loads from its makers' site and hides
/// when it does not load; the only outside request either page makes.
const REDOC_LOGO: &str = "https://cdn.redoc.ly/redoc/logo-mini.svg";

/// `tracker serve` on a fresh SQLite database in `dir`, on a free port.
async fn serve(dir: &Path) -> Running {
    let addr = format!("127.0.0.1:{}", free_port().unwrap());
    start(dir, &["serve", "--addr", &addr], &[]).await
}

async fn stop(mut server: Running) {
    server.terminate();
    assert_eq!(server.wait(Duration::from_secs(10)).await.0, Some(0));
}

/// Runs `program args`, failing with its output (and `hint`) unless it succeeds.
fn run(program: &str, args: &[&str], hint: &str) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}; {hint}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{program} {args:?} failed ({}); {hint}\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test_support::needs(browser)]
#[tokio::test]
async fn openapi_json_validates_as_openapi_3_1() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path()).await;
    let document = reqwest::get(format!("{}/openapi.json", server.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, document).unwrap();
    let report = run(
        "python3",
        &[
            "-m",
            "openapi_spec_validator",
            "--schema",
            "3.1",
            file.to_str().unwrap(),
        ],
        "install it with `pip install openapi-spec-validator==0.9.0`",
    );
    assert!(report.contains("OK"), "{report}");
    stop(server).await;
}

/// schemathesis, with all its checks, generates requests from the
/// document (valid and invalid ones, and sequences that follow the links
/// between operations) and compares the answers with it. The one thing it
/// may find is a valid-looking id of a row that does not exist (an
/// `assignee_id` or `parent_id`), which the API refuses with a 422 that
/// the document cannot foresee.
#[test_support::needs(browser)]
#[tokio::test]
async fn schemathesis_finds_nothing_but_references_to_missing_rows() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path()).await;
    let program = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../target/tools/schemathesis/bin/schemathesis"
    );
    let output = Command::new(program)
        .current_dir(dir.path())
        .args(["run", &format!("{}/openapi.json", server.base)])
        .args(["--checks", "all", "--no-color"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}; `just browser-tools` installs it"));
    let report = String::from_utf8_lossy(&output.stdout);
    let generated = report
        .lines()
        .find_map(|l| l.trim().split_once(" generated"))
        .and_then(|(n, _)| n.parse::<u32>().ok())
        .unwrap_or_else(|| panic!("no test cases reported:\n{report}"));
    assert!(generated >= 500, "{generated} test cases:\n{report}");
    let failures: Vec<&str> = report
        .split("Failures:")
        .nth(1)
        .map(|rest| rest.split("\n\n").next().unwrap_or_default())
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    for failure in &failures {
        assert!(
            failure.contains("Schema-valid request rejected"),
            "{failure}:\n{report}"
        );
    }
    for answer in report.lines().filter(|l| l.trim_start().starts_with("`{")) {
        assert!(answer.contains(" does not exist\""), "{answer}:\n{report}");
    }
    assert_eq!(
        output.status.success(),
        failures.is_empty(),
        "exit {}:\n{report}",
        output.status
    );
    stop(server).await;
}

#[test_support::needs(browser)]
#[tokio::test]
async fn docs_and_redoc_work_offline_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path()).await;
    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("docs-screenshots");
    std::fs::create_dir_all(&screenshots).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/docs.mjs");
    let name = "Brenda Browser";
    let stdout = run(
        "node",
        &[script, &server.base, name, screenshots.to_str().unwrap()],
        "`just browser-test` installs playwright-core; `apt-get install chromium` the browser",
    );
    let seen: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("the browser script printed {stdout:?}: {e}"));

    assert_eq!(seen["pageErrors"], serde_json::json!([]), "{seen:#}");
    // Swagger UI needs nothing from outside; "Try it out" created the row.
    let swagger = &seen["swagger"];
    assert_eq!(swagger["blocked"], serde_json::json!([]), "{seen:#}");
    assert!(
        swagger["title"]
            .as_str()
            .unwrap()
            .starts_with("Task Tracker"),
        "{seen:#}"
    );
    assert_eq!(swagger["status"], "200", "{seen:#}");
    let created: Value = serde_json::from_str(swagger["response"].as_str().unwrap()).unwrap();
    assert_eq!(created["full_name"], name);
    let employees: Value = reqwest::get(format!("{}/employees/", server.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let row = employees
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["full_name"] == name)
        .unwrap_or_else(|| panic!("{name} is not in {employees}"));
    assert_eq!(row["id"], created["id"]);

    // ReDoc renders the title and the operations without its logo.
    let redoc = &seen["redoc"];
    for url in redoc["blocked"].as_array().unwrap() {
        assert_eq!(url, REDOC_LOGO, "{seen:#}");
    }
    assert!(
        redoc["title"].as_str().unwrap().starts_with("Task Tracker"),
        "{seen:#}"
    );
    assert_eq!(redoc["operation"], "Create an employee", "{seen:#}");
    stop(server).await;
}
