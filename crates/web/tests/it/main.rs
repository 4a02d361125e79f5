//! What `web` gives an application's own routes, on an application with
//! one small service and nothing of the tracker in it: the shared layers,
//! the `{"detail": …}` answers, one document titled for the application,
//! the metrics of every route, and a handler's panic answered as a 500 that
//! is logged and counted like any other.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use db_core::url::DatabaseUrl;
use db_core::{Db, Settings};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower::ServiceExt as _;
use utoipa_axum::routes;
use web::input::{Fields, JsonObject};
use web::{ApiError, App, Exposure, Metrics, Routes};

/// Whom to greet, as the document describes the body.
#[derive(utoipa::ToSchema)]
#[expect(dead_code, reason = "only the OpenAPI document reads it")]
struct Greeting {
    /// Their name.
    name: String,
}

/// Greet someone
#[utoipa::path(
    post,
    path = "/hello/",
    tag = "hello",
    request_body = Greeting,
    responses((status = 200, body = String), web::error::Invalid)
)]
async fn hello(JsonObject(body): JsonObject) -> Result<Json<String>, ApiError> {
    let mut f = Fields::new(&body);
    let name = f.string("name", 20);
    f.finish(Json(format!("hello {name}")))
}

/// Fail the way a bug does
#[utoipa::path(get, path = "/boom/", tag = "hello", responses((status = 500)))]
async fn boom() -> Json<String> {
    panic!("a bug in the handler");
}

fn greetings() -> Routes {
    Routes::new()
        .tag("hello", "Greetings")
        .routes(routes!(hello))
        .routes(routes!(boom))
        .with_state(())
}

async fn db() -> Db {
    let url = DatabaseUrl::parse("sqlite::memory:", "DATABASE_URL").unwrap();
    Db::connect(&Settings::new(url)).await.unwrap()
}

/// The process's one metrics recorder.
fn metrics() -> Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    *METRICS.get_or_init(|| Metrics::install().unwrap())
}

/// Serves the application "Greeter" with `/metrics`; returns its base URL
/// and the sender that stops it.
async fn serve() -> (String, oneshot::Sender<()>) {
    test_support::capture_logs();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let app = App::new("Greeter", "0.1.0", db().await)
        .description("Greets.")
        .service(greetings());
    tokio::spawn(app.serve(listener, Exposure::Api(metrics()), async {
        stopped.await.ok();
    }));
    (base, stop)
}

/// Sends `method` to `url` with `body` (JSON text); returns the status and the
/// answer, parsed as JSON when it is.
async fn call(method: Method, url: String, body: Option<&str>) -> (StatusCode, Value) {
    let mut request = Client::new().request(method, url);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// An unknown path at `base` is the JSON 404, another method on
/// `/metrics` the JSON 405.
async fn assert_json_fallbacks(base: &str) {
    assert_eq!(
        call(Method::GET, format!("{base}/nowhere"), None).await,
        (StatusCode::NOT_FOUND, json!({"detail": "Not Found"}))
    );
    assert_eq!(
        call(Method::POST, format!("{base}/metrics"), None).await,
        (
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"detail": "Method Not Allowed"})
        )
    );
}

#[tokio::test]
async fn a_service_route_gets_the_shared_layers_errors_and_document() {
    let (base, _stop) = serve().await;
    let hello = || format!("{base}/hello/");

    let greeted = call(
        Method::POST,
        format!("{base}/hello"),
        Some(r#"{"name": "Ann"}"#),
    )
    .await;
    assert_eq!(greeted, (StatusCode::OK, json!("hello Ann")));
    let (status, bad_json) = call(Method::POST, hello(), Some("{")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad_json["detail"][0]["type"], "json_invalid");
    assert_eq!(bad_json["detail"][0]["loc"], json!(["body"]));
    // The body is JSON without a Content-Type or with a JSON one, as in
    // FastAPI; with another it is not an object.
    for (content_type, status) in [
        ("Application/JSON; charset=utf-8", StatusCode::OK),
        ("application/merge-patch+json", StatusCode::OK),
        ("text/plain", StatusCode::UNPROCESSABLE_ENTITY),
        (
            "application/x-www-form-urlencoded",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let answer = Client::new()
            .post(hello())
            .header("content-type", content_type)
            .body(r#"{"name": "Ann"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), status, "{content_type}");
        if status != StatusCode::OK {
            let answer: Value = answer.json().await.unwrap();
            assert_eq!(answer["detail"][0]["type"], "model_attributes_type");
            assert_eq!(answer["detail"][0]["loc"], json!(["body"]));
        }
    }
    let untyped = Client::new().post(hello()).body(r#"{"name": "Ann"}"#);
    assert_eq!(untyped.send().await.unwrap().status(), StatusCode::OK);
    let (status, nul) = call(Method::POST, hello(), Some(r#"{"name": "A\u0000"}"#)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(nul["detail"][0]["loc"], json!(["body", "name"]));
    assert_eq!(
        call(Method::GET, hello(), None).await,
        (
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"detail": "Method Not Allowed"})
        )
    );
    assert_json_fallbacks(&base).await;
    let preflight = Client::new()
        .request(Method::OPTIONS, hello())
        .header("origin", "https://elsewhere.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");

    let (status, doc) = call(Method::GET, format!("{base}/openapi.json"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["info"]["title"], "Greeter");
    let paths = doc["paths"].as_object().unwrap();
    for path in ["/hello/", "/boom/", "/health", "/ready"] {
        assert!(paths.contains_key(path), "{path} is not in {paths:?}");
    }
    // The body limit is stated where a body is taken.
    let limit = &doc["paths"]["/hello/"]["post"]["responses"]["413"];
    assert_eq!(limit["description"], "The body is over 65536 bytes");
    let answer = call(Method::POST, hello(), Some(&" ".repeat(65537))).await;
    assert_eq!(
        answer,
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            limit["content"]["application/json"]["example"].clone()
        )
    );
    assert_eq!(
        doc["paths"]["/boom/"]["get"]["responses"]["413"],
        Value::Null
    );
    let unreadable = &doc["paths"]["/hello/"]["post"]["responses"]["400"]["description"];
    assert_eq!(
        *unreadable,
        "The body could not be read: it ended before its announced length"
    );
    let (_, metrics) = call(Method::GET, format!("{base}/metrics"), None).await;
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains(r#"http_requests_total{method="POST",route="/hello",status="422"} 4"#),
        "{metrics}"
    );
}

/// A body cut off before its announced length is the client's broken
/// request (400), not one over the limit.
#[tokio::test]
async fn a_body_cut_short_is_a_bad_request() {
    let (base, _stop) = serve().await;
    let address = base.strip_prefix("http://").unwrap().to_owned();
    let answer = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let request = "POST /hello HTTP/1.1\r\nhost: greeter\r\n\
            content-type: application/json\r\ncontent-length: 100\r\n\r\n{\"name\"";
        stream.write_all(request.as_bytes()).unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(
        answer.ends_with(r#"{"detail":"There was an error parsing the body"}"#),
        "{answer}"
    );
}

/// `/metrics` on a listener of its own answers other paths and methods as
/// the application does.
#[tokio::test]
async fn the_metrics_listener_answers_json_errors() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (_stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(web::serve_metrics(
        listener,
        metrics(),
        db().await,
        web::READ_TIMEOUT,
        async {
            stopped.await.ok();
        },
    ));
    let (status, text) = call(Method::GET, format!("{base}/metrics"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.as_str().unwrap().contains("db_pool"), "{text}");
    assert_json_fallbacks(&base).await;
}

#[tokio::test]
async fn a_panicking_handler_answers_500_logged_and_counted_and_the_server_goes_on() {
    let (base, _stop) = serve().await;
    let answer = call(Method::GET, format!("{base}/boom"), None).await;
    assert_eq!(
        answer,
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"detail": "Internal Server Error"})
        )
    );
    let greeted = call(
        Method::POST,
        format!("{base}/hello"),
        Some(r#"{"name": "Bo"}"#),
    )
    .await;
    assert_eq!(greeted, (StatusCode::OK, json!("hello Bo")));

    let (_, metrics) = call(Method::GET, format!("{base}/metrics"), None).await;
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains(r#"http_requests_total{method="GET",route="/boom",status="500"} 1"#),
        "{metrics}"
    );
    let log = test_support::logged();
    let panicked: Vec<_> = log.lines().filter(|l| l.contains("panicked")).collect();
    assert_eq!(panicked.len(), 1, "{log}");
    for part in ["ERROR", "GET", "/boom", "a bug in the handler"] {
        assert!(
            panicked[0].contains(part),
            "{part} is not in {}",
            panicked[0]
        );
    }
}

/// A layer that counts the route services it wraps.
#[derive(Clone)]
struct CountWraps(Arc<AtomicUsize>);

impl<S> tower::Layer<S> for CountWraps {
    type Service = S;

    fn layer(&self, inner: S) -> S {
        self.0.fetch_add(1, Ordering::SeqCst);
        inner
    }
}

/// The router's routes are built when it is, each once: none is built
/// again, with its layers, for a request (a route's layer that kept
/// something per route would otherwise keep it per request).
#[tokio::test]
async fn each_route_is_built_once_not_for_every_request() {
    let wraps = Arc::new(AtomicUsize::new(0));
    let router = App::new("Greeter", "0.1.0", db().await)
        .service(greetings())
        .router(&Exposure::Api(metrics()))
        .layer(CountWraps(wraps.clone()));
    let built = wraps.load(Ordering::SeqCst);
    assert!(built > 0);
    // A page, the document, a probe, `/metrics`, a 404 and a 405.
    for path in [
        "/docs",
        "/openapi.json",
        "/health",
        "/metrics",
        "/nowhere",
        "/hello/",
    ] {
        for _ in 0..3 {
            let request = axum::http::Request::get(path).body(Body::empty()).unwrap();
            let response = router.clone().oneshot(request).await.unwrap();
            assert_ne!(
                response.status(),
                StatusCode::INTERNAL_SERVER_ERROR,
                "{path}"
            );
        }
    }
    assert_eq!(wraps.load(Ordering::SeqCst), built);
}

#[tokio::test]
async fn two_services_routing_one_path_and_method_are_refused_naming_the_path() {
    let hello_again = Routes::new().routes(routes!(hello)).with_state(());
    let app = App::new("Greeter", "0.1.0", db().await)
        .service(greetings())
        .service(hello_again);
    let refused = std::panic::catch_unwind(AssertUnwindSafe(|| app.router(&Exposure::Off)));
    let panic = refused.expect_err("two routes for POST /hello were accepted");
    let message = (panic.downcast_ref::<String>().map(String::as_str))
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or_default();
    assert_eq!(
        message,
        "Overlapping method route. Handler for `POST /hello` already exists"
    );
}

/// A transaction that kept conflicting with concurrent ones (PostgreSQL's
/// serialization failure, left after the retries) answers 503, to try
/// again, not 500: the request was valid and nothing broke.
#[test_support::needs(postgres)]
#[tokio::test]
async fn a_conflict_left_after_the_retries_is_a_503() {
    use axum::response::IntoResponse;
    use db_core::SessionOptions;
    use db_core::sea_orm::{ConnectionTrait, IsolationLevel};

    let t = test_support::TestDb::new(test_support::Backend::Postgres).await;
    let setup = t.db.begin().await.unwrap();
    setup
        .execute_unprepared("CREATE TABLE shifts (n int)")
        .await
        .unwrap();
    setup.commit().await.unwrap();
    // Write skew: each reads the table, then writes what the other read.
    let serializable = SessionOptions::read_write().isolation(IsolationLevel::Serializable);
    let (first, second) = (
        t.db.session(serializable).await.unwrap(),
        t.db.session(serializable).await.unwrap(),
    );
    for session in [&first, &second] {
        session
            .execute_unprepared("SELECT count(*) FROM shifts")
            .await
            .unwrap();
    }
    first
        .execute_unprepared("INSERT INTO shifts VALUES (1)")
        .await
        .unwrap();
    second
        .execute_unprepared("INSERT INTO shifts VALUES (2)")
        .await
        .unwrap();
    first.commit().await.unwrap();
    let conflict = second.commit().await.unwrap_err();
    let answer = ApiError::from(conflict).into_response();
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
}

/// A read timeout of zero is no bound, not one that every pause of a
/// client misses: a head and a body that come 200 ms apart are answered.
#[tokio::test]
async fn a_zero_read_timeout_is_no_bound() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = App::new("Greeter", "0.1.0", db().await)
        .service(greetings())
        .read_timeout(std::time::Duration::ZERO);
    let (_stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(app.serve(listener, Exposure::Off, async {
        stopped.await.ok();
    }));
    let body = r#"{"name": "Ann"}"#;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let pause = std::time::Duration::from_millis(200);
    let head = "POST /hello/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(pause).await;
    let length = format!("Content-Length: {}\r\n\r\n", body.len());
    stream.write_all(length.as_bytes()).await.unwrap();
    tokio::time::sleep(pause).await;
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(answer.ends_with("\"hello Ann\""), "{answer}");
}

/// A number given for an id is read as FastAPI's pydantic reads it: a float
/// without a fraction is that integer, so `1e16` is out of an id's range
/// (not "a number with a fractional part"); a fraction is refused as one,
/// and a float at or beyond 2^63 either way as too large. A whole number
/// beyond 2^63, as a number or as text, is out of range as any other.
#[test]
fn a_float_id_without_a_fraction_is_its_integer() {
    let read = |value: Value| {
        let body = json!({ "id": value });
        let mut f = Fields::new(body.as_object().unwrap());
        let id = f.id("id");
        match f.finish(id) {
            Ok(id) => Ok(id),
            Err(ApiError::Validation(errors)) => Err((errors[0].kind, errors[0].msg.clone())),
            Err(other) => panic!("not a validation error: {other:?}"),
        }
    };
    assert_eq!(read(json!(2.0)), Ok(Some(2)));
    assert_eq!(read(json!(1e9)), Ok(Some(1_000_000_000)));
    assert_eq!(read(json!(-3e2)), Ok(Some(-300)));
    let range = "Input should be an id between -2147483648 and 2147483647";
    assert_eq!(read(json!(1e16)), Err(("int_range", range.to_owned())));
    assert_eq!(read(json!(9.2e18)), Err(("int_range", range.to_owned())));
    assert_eq!(read(json!(1.5)).unwrap_err().0, "int_from_float");
    let size = "Unable to parse input string as an integer, exceeded maximum size";
    for too_large in [json!(9.3e18), json!(i64::MIN as f64), json!(1e300)] {
        assert_eq!(read(too_large), Err(("int_parsing_size", size.to_owned())));
    }
    // A whole number beyond 2^63, written without a fraction or exponent,
    // is out of an id's range as any other.
    let above_i64 = json!(9_223_372_036_854_775_808_u64);
    assert_eq!(read(above_i64), Err(("int_range", range.to_owned())));
    assert_eq!(read(json!(u64::MAX)), Err(("int_range", range.to_owned())));
    // So is one given as text, however long.
    for text in [
        "9223372036854775808",
        &"9".repeat(50),
        &format!("-{}", "9".repeat(50)),
    ] {
        assert_eq!(read(json!(text)), Err(("int_range", range.to_owned())));
    }
    assert_eq!(read(Value::Null), Ok(None));
}

/// More than the sockets of both ends take in: writing it waits for the client.
#[utoipa::path(get, path = "/big/", responses((status = 200)))]
async fn big() -> Vec<u8> {
    vec![b'x'; 64 << 20]
}

/// An answer that its client stopped reading does not hold the server up
/// once it is told to stop: after the shutdown grace, `serve` returns and
/// the connection is closed.
#[tokio::test]
async fn serve_returns_after_the_grace_though_a_client_stopped_reading() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let routes = Routes::new().routes(routes!(big)).with_state(());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = App::new("Greeter", "0.1.0", db().await)
        .service(routes)
        .shutdown_grace(Duration::from_millis(200));
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.serve(listener, Exposure::Off, async {
        stopped.await.ok();
    }));
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // The answer is being written, and the client reads none of it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send(()).unwrap();
    let returned = tokio::time::timeout(Duration::from_secs(20), server).await;
    assert!(
        matches!(returned, Ok(Ok(Ok(())))),
        "serve did not return: {returned:?}"
    );
    // And the connection was closed: the client gets what the sockets held,
    // not the whole answer.
    let mut received = Vec::new();
    // Closed or reset, either way the end.
    let _ = stream.read_to_end(&mut received).await;
    assert!(received.len() < 64 << 20, "{} bytes", received.len());
}

/// No body and a JSON `null` are a body missing, as FastAPI says it: with
/// `"input": null`.
#[tokio::test]
async fn no_body_and_null_are_a_missing_body() {
    let (base, _stop) = serve().await;
    let missing = json!({"detail": [
        {"type": "missing", "loc": ["body"], "msg": "Field required", "input": null}
    ]});
    for body in ["", "null"] {
        assert_eq!(
            call(Method::POST, format!("{base}/hello/"), Some(body)).await,
            (StatusCode::UNPROCESSABLE_ENTITY, missing.clone()),
            "{body:?}"
        );
    }
}

/// Cross-origin requests are allowed from anywhere. A preflight (`OPTIONS`
/// from an origin, naming the method it asks for) is answered with what is
/// allowed, and
/// logged like any request; any other `OPTIONS` is routed, as FastAPI's
/// CORS middleware lets it: a 405 on a path that takes other methods, a
/// 404 on an unknown one.
#[tokio::test]
async fn preflights_are_answered_and_logged_other_options_are_routed() {
    let (base, _stop) = serve().await;
    let client = Client::new();
    let preflight = client
        .request(Method::OPTIONS, format!("{base}/hello/"))
        .header("origin", "https://elsewhere.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), StatusCode::OK);
    let allowed = |name: &str| preflight.headers()[name].to_str().unwrap().to_owned();
    assert_eq!(allowed("access-control-allow-origin"), "*");
    assert!(allowed("access-control-allow-methods").contains("POST"));
    let posted = client
        .post(format!("{base}/hello/"))
        .header("origin", "https://elsewhere.example")
        .header("content-type", "application/json")
        .body(r#"{"name": "Ann"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(posted.headers()["access-control-allow-origin"], "*");
    assert_eq!(
        call(Method::OPTIONS, format!("{base}/hello/"), None).await,
        (
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"detail": "Method Not Allowed"})
        )
    );
    assert_eq!(
        call(Method::OPTIONS, format!("{base}/nowhere/"), None).await,
        (StatusCode::NOT_FOUND, json!({"detail": "Not Found"}))
    );
    // From an origin, such an answer is allowed to it, as every other is;
    // naming a method without an origin is no preflight.
    let routed = client
        .request(Method::OPTIONS, format!("{base}/hello/"))
        .header("origin", "https://elsewhere.example")
        .send()
        .await
        .unwrap();
    assert_eq!(routed.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(routed.headers()["access-control-allow-origin"], "*");
    let no_origin = client
        .request(Method::OPTIONS, format!("{base}/hello/"))
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(no_origin.status(), StatusCode::METHOD_NOT_ALLOWED);
    let log = test_support::logged();
    assert!(
        log.contains("finished processing request method=OPTIONS uri=/hello status=200"),
        "{log}"
    );
}
