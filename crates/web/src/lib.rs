//! The HTTP side of the foundation: an application is an [`App`] made of its
//! services' [`Routes`], served with the same layers, errors and document
//! for every route.
//!
//! - Each service builds its [`Routes`] from handlers annotated with
//!   `#[utoipa::path]`; the application adds them with [`App::service`].
//! - Every route answers errors as JSON `{"detail": …}` ([`ApiError`]; the
//!   extractors in [`input`] reject bad input the same way), and passes one
//!   layer that answers a handler's panic with a 500, logs the cause of a
//!   5xx answer (and of a 422 for a value the database refused) and, with
//!   metrics on, counts and times the request under its
//!   route template ([`metrics`]).
//! - Around the whole router, [`App::serve`] adds trailing-slash
//!   normalisation (`/tasks` and `/tasks/` are one route), CORS open to any
//!   origin (a preflight answered, any other `OPTIONS` routed, a 405 or
//!   404), and one log line per request; and it bounds how long a client
//!   may take to send a request ([`App::read_timeout`]) and how long a
//!   stop waits for the requests in flight ([`App::shutdown_grace`]).
//! - The application's routes are described by one OpenAPI 3.1 document
//!   titled for it, at `/openapi.json`, rendered at `/docs` (Swagger UI) and
//!   `/redoc`; `/health` and `/ready` (the database answers a ping) are
//!   always there, and `/metrics` with [`Exposure::Api`].
//!
//! ```no_run
//! # async fn example(db: db_core::Db, listener: tokio::net::TcpListener) -> std::io::Result<()> {
//! # let hello = web::Routes::new();
//! web::App::new("Notes", "1.0.0", db)
//!     .description("Short notes.")
//!     .service(hello)
//!     .serve(listener, web::Exposure::Off, std::future::pending())
//!     .await
//! # }
//! ```
#![warn(missing_docs)]

mod docs;
pub mod error;
pub mod input;
mod layer;
pub mod metrics;

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{Method, Request};
use axum::response::Response;
use axum::{Json, Router};
use db_core::Db;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::cors::{Any, CorsLayer};
use tower_http::normalize_path::NormalizePathLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;
use utoipa::openapi::InfoBuilder;
use utoipa::{OpenApi as _, ToSchema};
use utoipa_axum::routes;

pub use docs::Routes;
pub use error::{ApiError, Cause, FieldError};
pub use metrics::{InstallError, Metrics};

/// What every document says of every route.
const CONVENTIONS: &str =
    "Paths answer with and without the trailing slash. Every error is JSON with a `detail`.";

/// How long a client may take to send a request's head, or a part of its
/// body, and how long an idle connection is kept, unless
/// [`App::read_timeout`] says otherwise: above the 60 s for which load
/// balancers and proxies commonly keep an idle connection to the
/// application (AWS ALB, ingress-nginx), so that they never send a request
/// on one that the application is closing.
pub const READ_TIMEOUT: Duration = Duration::from_secs(75);

/// How long [`App::serve`] lets the requests in flight finish after its
/// `shutdown` completed, by default ([`App::shutdown_grace`]).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);

/// An application: its services' routes, the probes, and one document.
#[derive(Debug)]
pub struct App {
    services: Vec<Routes>,
    title: String,
    version: String,
    description: String,
    db: Db,
    read_timeout: Duration,
    shutdown_grace: Duration,
}

impl App {
    /// An application titled `title` at `version` (in its document), whose
    /// `/ready` pings `db`.
    pub fn new(title: &str, version: &str, db: Db) -> App {
        App {
            services: Vec::new(),
            title: title.to_owned(),
            version: version.to_owned(),
            description: String::new(),
            db,
            read_timeout: READ_TIMEOUT,
            shutdown_grace: SHUTDOWN_GRACE,
        }
    }

    /// How long [`App::serve`] lets the requests in flight finish, once
    /// told to stop, before it returns anyway ([`SHUTDOWN_GRACE`] by
    /// default). The database bounds each request's waits on it; this bounds
    /// the rest, such as an answer that a client stopped reading.
    pub fn shutdown_grace(mut self, grace: Duration) -> App {
        self.shutdown_grace = grace;
        self
    }

    /// How long a client may take to send a request's head, which is also
    /// how long an idle connection waits for its next request (then the
    /// connection is closed), and to send each part of a body (then the
    /// answer is a 408); [`READ_TIMEOUT`] by default, zero for no bound.
    /// So a client that stops sending does not hold its connection for
    /// good. Behind a proxy that keeps idle connections open, keep it above
    /// the proxy's idle timeout.
    pub fn read_timeout(mut self, timeout: Duration) -> App {
        self.read_timeout = timeout;
        self
    }

    /// What the application does, for its document (Markdown).
    pub fn description(mut self, text: &str) -> App {
        self.description = text.to_owned();
        self
    }

    /// Adds a service's routes. Two services may not route the same path
    /// and method: building the router panics, naming the path.
    pub fn service(mut self, routes: Routes) -> App {
        self.services.push(routes);
        self
    }

    /// The routes, the probes, the document and its pages (and `/metrics`
    /// with [`Exposure::Api`]), each behind the one layer that every answer
    /// passes. Without what [`App::serve`] adds around the whole router:
    /// trailing-slash normalisation, CORS and the request log.
    pub fn router(self, exposure: &Exposure) -> Router {
        let description = match self.description.is_empty() {
            true => CONVENTIONS.to_owned(),
            false => format!("{} {CONVENTIONS}", self.description),
        };
        let mut doc = Shared::openapi();
        doc.info = InfoBuilder::new()
            .title(self.title)
            .version(self.version)
            .description(Some(description))
            .build();
        let mut router = Router::new();
        for routes in self.services.into_iter().chain([probes(self.db.clone())]) {
            router = router.merge(routes.router);
            doc.merge(routes.doc);
        }
        docs::state_body_answers(&mut doc);
        let metrics = match exposure {
            Exposure::Off => None,
            Exposure::Api(m) => {
                router = router.merge(metrics_route(*m, self.db));
                Some(m)
            }
            Exposure::Separate(m) => Some(m),
        };
        with_fallbacks(router.merge(docs::pages(doc)))
            .layer(layer::AnswerLayer::new(metrics.copied()))
            // Builds each route's services now, once: a handler routed
            // without state (the pages, the probes, the fallbacks) is
            // otherwise built, with its layers, for every request.
            .with_state(())
    }

    /// Serves the application on `listener` until `shutdown` completes, then
    /// stops accepting, lets in-flight requests finish for up to
    /// [`App::shutdown_grace`], closes the connections still open, and
    /// returns.
    pub async fn serve(
        self,
        listener: TcpListener,
        exposure: Exposure,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        if let Exposure::Api(m) | Exposure::Separate(m) = &exposure {
            m.spawn_upkeep();
        }
        let cors = CorsLayer::new()
            .allow_origin(Any)
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers(Any)
            .max_age(Duration::from_secs(600))
            // No answer depends on the request's origin or preflight
            // headers (any is allowed), so no `Vary` header: building it
            // cost an allocation on every request.
            .vary([]);
        let (read_timeout, grace) = (self.read_timeout, self.shutdown_grace);
        // Around the whole router, once: `Router::layer` would wrap each route
        // in each of these, a boxed service more to clone on every request.
        let app = ServiceBuilder::new()
            // Normalising the path must happen before routing.
            .layer(NormalizePathLayer::trim_trailing_slash())
            // Around CORS, which answers preflights itself: they are logged too.
            .layer(layer::AccessLogLayer)
            .layer(layer::PreflightsLayer(cors))
            .map_response(|r: Response<_>| r.map(Body::new))
            .option_layer(
                (!read_timeout.is_zero()).then(|| RequestBodyTimeoutLayer::new(read_timeout)),
            )
            .service(self.router(&exposure));
        run(listener, app, read_timeout, grace, shutdown).await
    }
}

/// Serves `service` on `listener` over HTTP/1.1 until `shutdown` completes,
/// then stops accepting and waits, for up to `grace`, for each connection
/// to finish the request it is answering; then closes those still open. A
/// client that takes longer than `read_timeout` (unless zero) to send a
/// request's head, or, idle, to start the next, has its connection closed:
/// `axum::serve` sets no such bound.
async fn run<S>(
    listener: TcpListener,
    service: S,
    read_timeout: Duration,
    grace: Duration,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()>
where
    S: tower::Service<Request<Incoming>, Response = Response, Error = Infallible>,
    S: Clone + Send + 'static,
    S::Future: Send + 'static,
{
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Some(read_timeout).filter(|t| !t.is_zero()));
    let connections = GracefulShutdown::new();
    // Cancelled when the grace is over: the connections still open close.
    let over = CancellationToken::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            // The client dropped it before it was accepted.
            Err(e)
                if matches!(
                    e.kind(),
                    ConnectionAborted | ConnectionRefused | ConnectionReset
                ) =>
            {
                continue;
            }
            Err(e) => {
                // Such as running out of file descriptors: logged, and tried
                // again a second later, so that a failure that lasts does
                // not spin.
                tracing::error!("accepting a connection: {e}");
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        let service = TowerToHyperService::new(service.clone());
        let connection = connections.watch(http.serve_connection(TokioIo::new(stream), service));
        let over = over.clone().cancelled_owned();
        tokio::spawn(async move {
            // A connection's end (reset, timed out, cut off) is the
            // client's business: each request was logged as it ended.
            tokio::select! {
                _ = connection => {}
                () = over => {}
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, connections.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "requests still running after {grace:?} (the shutdown grace); stopping anyway"
        );
        over.cancel();
    }
    Ok(())
}

/// Whether requests are measured, and where `/metrics` is served.
#[derive(Debug, Clone)]
pub enum Exposure {
    /// No metrics recorded.
    Off,
    /// Recorded, and served at `/metrics` on the application's listener.
    Api(Metrics),
    /// Recorded; served elsewhere (see [`serve_metrics`]).
    Separate(Metrics),
}

/// The document's parts that every application shares: the error answers.
#[derive(utoipa::OpenApi)]
#[openapi(components(schemas(error::Message, error::ValidationErrors, FieldError)))]
struct Shared;

fn metrics_route(m: Metrics, db: Db) -> Router {
    Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let db = db.clone();
            async move { metrics::answer(&m, &db).await }
        }),
    )
}

/// Serves only `/metrics` on `listener` (a listener apart from the
/// application's, which need not be public) until `shutdown` completes
/// (then for up to [`SHUTDOWN_GRACE`] more), with the bound of
/// [`App::read_timeout`] on reading a request's head (it reads no body).
pub async fn serve_metrics(
    listener: TcpListener,
    metrics: Metrics,
    db: Db,
    read_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let router = with_fallbacks(metrics_route(metrics, db)).with_state(());
    run(listener, router, read_timeout, SHUTDOWN_GRACE, shutdown).await
}

/// `router` answering an unknown path with 404 and a known one with another
/// method with 405, as JSON errors. Last: the 405 applies to the routes
/// merged before it.
fn with_fallbacks(router: Router) -> Router {
    router
        .fallback(|| async { ApiError::NotFound("Not Found".to_owned()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
}

/// `/health` and `/ready`.
fn probes(db: Db) -> Routes {
    Routes::new()
        .tag("health", "Liveness and readiness probes")
        .routes(routes!(health))
        .routes(routes!(ready))
        .with_state(db)
}

/// The process is up.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"status": "ok"}))]
struct Health {
    /// Always `ok`.
    status: &'static str,
}

/// The database answers.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"status": "ready", "database": "sqlite"}))]
struct Ready {
    /// Always `ready`.
    status: &'static str,
    /// The backend: `postgres`, `mysql` or `sqlite`.
    database: &'static str,
}

/// Liveness: the process answers (the database is not asked)
#[utoipa::path(get, path = "/health", tag = "health", responses((status = 200, description = "The process is up", body = Health)))]
async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: the database answers a ping
#[utoipa::path(
    get,
    path = "/ready",
    tag = "health",
    responses((status = 200, description = "The database answers", body = Ready), error::Unavailable)
)]
async fn ready(State(db): State<Db>) -> Result<Json<Ready>, ApiError> {
    match db.ping().await {
        Ok(_) => Ok(Json(Ready {
            status: "ready",
            database: db_core::url::backend_name(db.backend()),
        })),
        Err(e) => Err(ApiError::Unavailable(Cause::new(e))),
    }
}
