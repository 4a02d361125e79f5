//! The OpenAPI document at `/openapi.json` against the server that serves it:
//! its shape is the original's, every route is in it and every operation in
//! it is routed, its examples are real answers, and its request schemas and
//! parameters are what the parsers enforce. The pages that render it are
//! served too.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use test_support::Backend;
use tracker::Tracker;
use web::Exposure;

use crate::support::Server;

/// The routes that serve the document itself, which (as in FastAPI's
/// document) are not in it.
const DOCUMENTATION_ROUTES: [&str; 5] = [
    "/openapi.json",
    "/docs",
    "/docs/{file}",
    "/redoc",
    "/redoc/redoc.standalone.js",
];

const METHODS: [&str; 4] = ["get", "post", "put", "delete"];

async fn document(s: &Server) -> Value {
    let (status, doc) = s.get("/openapi.json").await;
    assert_eq!(status, 200);
    doc
}

/// `(METHOD, path)` of every operation in the document.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if item.get(method).is_some() {
                found.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    found
}

/// Follows a `$ref` inside the document.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(reference) => doc
            .pointer(reference.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("dangling {reference}")),
        None => schema,
    }
}

/// A documented path with every `{parameter}` replaced by `id`.
fn concrete(path: &str, id: &str) -> String {
    path.split('/')
        .map(|part| if part.starts_with('{') { id } else { part })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn the_document_has_the_originals_paths_parameters_and_schemas() {
    let s = Server::start(Backend::Sqlite).await;
    let doc = document(&s).await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "Task Tracker");

    let expected: BTreeSet<(String, String)> = [
        ("GET", "/employees/"),
        ("POST", "/employees/"),
        ("GET", "/employees/{employee_id}/"),
        ("PUT", "/employees/{employee_id}/"),
        ("DELETE", "/employees/{employee_id}/"),
        ("GET", "/employees/{employee_id}/tasks/"),
        ("GET", "/tasks/"),
        ("POST", "/tasks/"),
        ("GET", "/tasks/{task_id}/"),
        ("PUT", "/tasks/{task_id}/"),
        ("DELETE", "/tasks/{task_id}/"),
        ("GET", "/tasks/{task_id}/subtree/"),
        ("GET", "/health"),
        ("GET", "/ready"),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_owned(), p.to_owned()))
    .collect();
    assert_eq!(operations(&doc), expected);

    for list in ["/employees/", "/tasks/"] {
        let params = &doc["paths"][list]["get"]["parameters"];
        let page: Vec<_> = params
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].clone(),
                    p["in"].clone(),
                    p["schema"]["default"].clone(),
                )
            })
            .collect();
        assert_eq!(
            page,
            [
                (json!("skip"), json!("query"), json!(0)),
                (json!("limit"), json!("query"), json!(100)),
                (json!("after_id"), json!("query"), Value::Null)
            ]
        );
    }

    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let names: BTreeSet<&str> = schemas.keys().map(String::as_str).collect();
    for name in [
        "EmployeeCreate",
        "EmployeeUpdate",
        "EmployeeSchema",
        "Employee",
        "TaskCreate",
        "TaskUpdate",
        "TaskSchema",
        "HTTPValidationError",
        "ValidationError",
    ] {
        assert!(names.contains(name), "{name} missing from {names:?}");
    }
    // (Sorted: the test's JSON parser does not keep the document's order.)
    let fields = |name: &str| -> Vec<String> {
        let mut names: Vec<String> = schemas[name]["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    };
    let sorted = |names: &[&str]| -> Vec<String> {
        let mut names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        names.sort();
        names
    };
    assert_eq!(fields("EmployeeCreate"), sorted(&["full_name", "position"]));
    assert_eq!(fields("EmployeeUpdate"), sorted(&["full_name", "position"]));
    assert_eq!(
        fields("EmployeeSchema"),
        sorted(&["full_name", "position", "id"])
    );
    let task = [
        "title",
        "parent_id",
        "assignee_id",
        "deadline",
        "status",
        "id",
    ];
    assert_eq!(fields("TaskSchema"), sorted(&task));
    assert_eq!(
        fields("TaskCreate"),
        sorted(&["title", "status", "parent_id", "assignee_id", "deadline"])
    );
    assert_eq!(fields("HTTPValidationError"), sorted(&["detail"]));
    assert_eq!(
        fields("ValidationError"),
        sorted(&["type", "loc", "msg", "input"])
    );
    // Employee is EmployeeSchema plus its tasks.
    let employee = &schemas["Employee"]["allOf"];
    assert_eq!(employee[0]["$ref"], "#/components/schemas/EmployeeSchema");
    assert_eq!(
        employee[1]["properties"]["tasks"]["items"]["$ref"],
        "#/components/schemas/TaskSchema"
    );

    // Every operation that reads or writes the database documents the 503,
    // and every one that takes input the 422.
    for (method, path) in operations(&doc) {
        let responses = &doc["paths"][&path][method.to_lowercase()]["responses"];
        assert!(responses.get("200").is_some(), "{method} {path}");
        if path != "/health" {
            assert!(responses.get("503").is_some(), "{method} {path} has no 503");
        }
        if path != "/health" && path != "/ready" {
            assert_eq!(
                responses["422"]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/HTTPValidationError",
                "{method} {path}"
            );
        }
        if path.contains('{') {
            assert!(responses.get("404").is_some(), "{method} {path} has no 404");
        }
    }
    s.stop().await;
}

/// The paths the router matches, read from its `Debug` output: axum has no
/// other way to list them. A format change fails the test rather than
/// passing it with an empty list.
fn routed_paths(tracker: Tracker) -> BTreeSet<String> {
    let debug = format!(
        "{:?}",
        crate::support::app(tracker.db()).router(&Exposure::Off)
    );
    // The fallback's own catch-all routes come after the routes proper.
    let routes = debug.split("fallback_router").next().unwrap();
    let mut paths = BTreeSet::new();
    for piece in routes.split("RouteId(").skip(1) {
        // `3): "/tasks/{task_id}"` in the route table.
        if let Some(rest) = piece.split_once("): \"").map(|(_, rest)| rest) {
            paths.insert(rest.split('"').next().unwrap().to_owned());
        }
    }
    assert!(
        paths.contains("/tasks/{task_id}"),
        "cannot read the routes from the router's Debug output: {debug}"
    );
    paths
}

#[tokio::test]
async fn every_route_is_documented_and_every_documented_operation_is_routed() {
    let s = Server::start(Backend::Sqlite).await;
    let doc = document(&s).await;

    // The router's paths, and for each the methods it answers (the `Allow`
    // header of a 405).
    let mut routed = BTreeSet::new();
    for path in routed_paths(Tracker::new(s.t.db.clone())) {
        if DOCUMENTATION_ROUTES.contains(&path.as_str()) {
            continue;
        }
        let response = s
            .client
            .request(
                reqwest::Method::TRACE,
                format!("{}{}", s.base, concrete(&path, "1")),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "TRACE {path}");
        let allow = response.headers()["allow"].to_str().unwrap().to_owned();
        for method in allow.split(',').map(str::trim).filter(|m| *m != "HEAD") {
            routed.insert((method.to_owned(), path.clone()));
        }
    }

    // The document's operations, with its paths as the router spells them.
    let documented: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .map(|(method, path)| {
            let trimmed = path.strip_suffix('/').unwrap_or(&path).to_owned();
            (method, trimmed)
        })
        .collect();
    assert_eq!(routed, documented);

    // And each documented operation reaches its handler, not the fallback.
    for (method, path) in operations(&doc) {
        let (status, body) = s.call(&method, &concrete(&path, "1"), Some(b"{}")).await;
        assert_ne!(body, json!({"detail": "Not Found"}), "{method} {path}");
        assert_ne!(status, 405, "{method} {path}");
    }
    s.stop().await;
}

/// Every example in the document, with its JSON pointer.
fn examples(doc: &Value) -> Vec<(String, Value)> {
    fn walk(value: &Value, pointer: String, found: &mut Vec<(String, Value)>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    let escaped = key.replace('~', "~0").replace('/', "~1");
                    let here = format!("{pointer}/{escaped}");
                    if key == "example" {
                        found.push((here, child.clone()));
                    } else {
                        walk(child, here, found);
                    }
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(child, format!("{pointer}/{i}"), found);
                }
            }
            _ => {}
        }
    }
    let mut found = Vec::new();
    walk(doc, String::new(), &mut found);
    found
}

/// Each example is either a request body that the server takes, or an
/// answer the server gives (with the documented status, for a response's
/// example), on a fresh database.
#[tokio::test]
async fn every_example_is_a_real_request_or_answer() {
    let s = Server::start(Backend::Sqlite).await;
    let doc = document(&s).await;
    let example = |schema: &str| doc["components"]["schemas"][schema]["example"].clone();

    let mut answers: Vec<(u16, Value)> = Vec::new();
    let mut sent = BTreeSet::new();
    let mut send = async |method: &str, path: &str, body: Option<&str>| {
        let bytes = body.map(|schema| {
            sent.insert(format!("/components/schemas/{schema}/example"));
            example(schema).to_string().into_bytes()
        });
        let answer = s.call(method, path, bytes.as_deref()).await;
        answers.push(answer.clone());
        answer
    };
    assert_eq!(
        send("POST", "/employees/", Some("EmployeeCreate")).await.0,
        200
    );
    assert_eq!(
        send("PUT", "/employees/1/", Some("EmployeeUpdate")).await.0,
        200
    );
    send("GET", "/employees/1/", None).await;
    assert_eq!(send("POST", "/tasks/", Some("TaskCreate")).await.0, 200);
    assert_eq!(send("PUT", "/tasks/1/", Some("TaskUpdate")).await.0, 200);
    send("GET", "/employees/99/", None).await;
    send("GET", "/tasks/99/", None).await;
    answers.push(s.call("POST", "/employees/", Some(b"{}")).await);
    let over_the_limit = vec![b' '; web::input::BODY_LIMIT + 1];
    answers.push(s.call("POST", "/tasks/", Some(&over_the_limit)).await);
    answers.push(s.get("/health").await);
    answers.push(s.get("/ready").await);
    s.t.db.close().await;
    answers.push(s.get("/tasks/").await);

    let all = examples(&doc);
    assert!(all.len() > 10, "{all:?}");
    for (pointer, value) in all {
        if sent.contains(&pointer) {
            continue;
        }
        // `/paths/.../responses/404/content/...` must be a 404.
        let status: Option<u16> = pointer
            .split_once("/responses/")
            .and_then(|(_, rest)| rest.split('/').next())
            .and_then(|code| code.parse().ok());
        assert!(
            answers
                .iter()
                .any(|(got, body)| *body == value && status.is_none_or(|s| s == *got)),
            "{pointer}: {value} is not an answer the server gave: {answers:#?}"
        );
    }
    s.stop().await;
}

/// The request schemas' required fields, lengths and patterns, and the
/// list parameters' bounds, are the parsers': each documented limit is
/// tried at the limit and one past it.
#[tokio::test]
async fn request_schemas_and_parameters_are_what_the_parsers_enforce() {
    let s = Server::start(Backend::Sqlite).await;
    let doc = document(&s).await;
    s.post(
        "/employees/",
        json!({"full_name": "Ann", "position": "dev"}),
    )
    .await;
    s.post("/tasks/", json!({"title": "root", "status": "todo"}))
        .await;

    let mut bodies = 0;
    for (method, path) in operations(&doc) {
        let operation = &doc["paths"][&path][method.to_lowercase()];
        let url = concrete(&path, "1");
        if let Some(body) = operation.get("requestBody") {
            bodies += 1;
            let schema = resolve(&doc, &body["content"]["application/json"]["schema"]);
            let example = schema["example"].as_object().unwrap();
            let required: Vec<&str> = schema["required"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap())
                .collect();
            // Only the required fields: accepted.
            let minimal: serde_json::Map<_, _> = example
                .iter()
                .filter(|(k, _)| required.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let (status, answer) = s.send(&method, &url, Value::from(minimal)).await;
            assert_eq!(status, 200, "{method} {path}: {answer}");
            // Each required field left out: `missing`, naming it.
            for field in &required {
                let mut body = example.clone();
                body.remove(*field);
                let (status, answer) = s.send(&method, &url, Value::from(body)).await;
                assert_eq!(status, 422, "{method} {path} without {field}");
                assert_eq!(answer["detail"][0]["type"], "missing");
                assert_eq!(answer["detail"][0]["loc"], json!(["body", field]));
            }
            // Each documented length: taken at the limit, refused past it;
            // each string's pattern says that NUL is refused, and it is.
            for (field, property) in schema["properties"].as_object().unwrap() {
                let Some(max) = property["maxLength"].as_u64() else {
                    continue;
                };
                assert_eq!(property["pattern"], web::input::NO_NUL, "{path} {field}");
                let mut body = example.clone();
                body.insert(field.clone(), Value::from("a\0b"));
                let (status, answer) = s.send(&method, &url, Value::from(body)).await;
                assert_eq!(status, 422, "{method} {path} {field} with NUL");
                assert_eq!(answer["detail"][0]["type"], "string_nul");
                for (length, ok) in [(max, true), (max + 1, false)] {
                    let mut body = example.clone();
                    body.insert(field.clone(), Value::from("x".repeat(length as usize)));
                    let (status, answer) = s.send(&method, &url, Value::from(body)).await;
                    if ok {
                        assert_eq!(status, 200, "{method} {path} {field} of {length}: {answer}");
                    } else {
                        assert_eq!(status, 422, "{method} {path} {field} of {length}");
                        assert_eq!(answer["detail"][0]["type"], "string_too_long");
                    }
                }
            }
        }
        for parameter in operation["parameters"].as_array().into_iter().flatten() {
            if parameter["in"] != "query" {
                continue;
            }
            let name = parameter["name"].as_str().unwrap();
            let bounds = &parameter["schema"];
            let mut cases = Vec::new();
            if let Some(min) = bounds["minimum"].as_i64().map(i128::from) {
                cases.extend([(min, true), (min - 1, false)]);
            }
            if let Some(max) = bounds["maximum"].as_i64().map(i128::from) {
                cases.extend([(max, true), (max + 1, false)]);
            }
            for (value, ok) in cases {
                let (status, answer) = s.get(&format!("{url}?{name}={value}")).await;
                assert_eq!(
                    status == 200,
                    ok,
                    "{method} {path}?{name}={value}: {answer}"
                );
            }
        }
    }
    assert_eq!(bodies, 4);
    s.stop().await;
}

#[tokio::test]
async fn the_pages_and_their_files_are_served() {
    let s = Server::start(Backend::Sqlite).await;
    for (path, content_type, contains) in [
        ("/docs", "text/html", "/docs/swagger-ui-bundle.js"),
        ("/docs/", "text/html", "/docs/swagger-ui-bundle.js"),
        (
            "/docs/swagger-ui-bundle.js",
            "javascript",
            "SwaggerUIBundle",
        ),
        ("/docs/swagger-ui.css", "text/css", ".swagger-ui"),
        (
            "/docs/swagger-initializer.js",
            "javascript",
            "\"url\": \"/openapi.json\"",
        ),
        ("/redoc", "text/html", "/redoc/redoc.standalone.js"),
        ("/redoc/redoc.standalone.js", "javascript", "Redoc"),
    ] {
        let response = s
            .client
            .get(format!("{}{path}", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let got = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(got.contains(content_type), "{path}: {got}");
        assert!(response.text().await.unwrap().contains(contains), "{path}");
    }
    let (status, body) = s.get("/docs/no-such-file.js").await;
    assert_eq!((status, body), (404, json!({"detail": "Not Found"})));
    s.stop().await;
}
