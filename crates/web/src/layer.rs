//! The layers of this crate's own. [`AnswerLayer`] is the one layer around
//! each route: every answer passes it once. It answers a handler's panic
//! with a 500, logs the cause of a 5xx answer and, when metrics are on,
//! runs the request as its route's db-core operation, then counts and times
//! it under the route template. One layer, not one per concern: axum wraps
//! each route in each layer of `Router::layer` and clones that stack of
//! boxed services for every request. [`AccessLogLayer`] goes around the
//! whole router and writes the access line.

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::FutureExt as _;
use futures::future::Either;
use tower_http::cors::{Cors, CorsLayer};
use tracing::Instrument as _;
use tracing::instrument::Instrumented;

use crate::error::{ApiError, log_failure};
use crate::metrics::{Metrics, Route};

/// Puts [`Answer`] around each route.
#[derive(Clone, Copy)]
pub(crate) struct AnswerLayer(Option<Metrics>);

impl AnswerLayer {
    /// With `metrics`, requests are also counted and timed.
    pub(crate) fn new(metrics: Option<Metrics>) -> Self {
        AnswerLayer(metrics)
    }
}

impl<S> tower::Layer<S> for AnswerLayer {
    type Service = Answer<S>;

    fn layer(&self, inner: S) -> Answer<S> {
        // The route this service wraps, learnt from its first request: one
        // cell per route of a router, kept for the life of the process, so
        // that a request copies a reference instead of taking a lock.
        let metrics = (self.0).map(|m| (m, &*Box::leak(Box::new(OnceLock::new()))));
        Answer { metrics, inner }
    }
}

/// [`AnswerLayer`] around one route's service. axum clones it for every
/// request: it holds references only, so a clone writes to nothing shared.
#[derive(Clone)]
pub(crate) struct Answer<S> {
    metrics: Option<(Metrics, &'static OnceLock<&'static Route>)>,
    inner: S,
}

impl<S> tower::Service<Request> for Answer<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let route = self.metrics.map(|(metrics, seen)| {
            let method = request.method();
            let path = request.extensions().get::<MatchedPath>();
            let path = path.map(MatchedPath::as_str);
            let route = *seen.get_or_init(|| metrics.route(method, path));
            let route = match route.is(method, path) {
                true => route,
                // Another method on the same route (HEAD through GET), or
                // a fallback, which answers every path.
                false => metrics.route(method, path),
            };
            (route, Instant::now())
        });
        // For the line that names a 5xx answer's cause.
        let (method, uri) = (request.method().clone(), request.uri().clone());
        let response = AssertUnwindSafe(self.inner.call(request)).catch_unwind();
        Box::pin(async move {
            let Some((route, start)) = route else {
                let response = answer(response.await, &method, &uri);
                log_failure(&response, &method, &uri);
                return Ok(response);
            };
            let response = answer(route.operation.scope(response).await, &method, &uri);
            log_failure(&response, &method, &uri);
            route.duration.record(start.elapsed());
            route.count(response.status());
            Ok(response)
        })
    }
}

/// The handler's answer; a 500 if it panicked, with the panic logged. The
/// panic unwinds no further than the route: it is counted and timed as the
/// route's 500, and the connection serves on.
fn answer(
    outcome: std::thread::Result<Result<Response, Infallible>>,
    method: &Method,
    uri: &Uri,
) -> Response {
    match outcome {
        Ok(Ok(response)) => response,
        Err(panic) => {
            let message = (panic.downcast_ref::<&str>().copied())
                .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(no message)");
            tracing::error!(%method, %uri, panic = message, "a request handler panicked");
            ApiError::Internal(None).into_response()
        }
    }
}

/// Puts [`AccessLog`] around a service: the whole router, once.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AccessLogLayer;

impl<S> tower::Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;

    fn layer(&self, inner: S) -> AccessLog<S> {
        AccessLog(inner)
    }
}

/// Writes one line per answered request at `info`, target `access`: method,
/// URI, status and latency in microseconds. The request runs in a `request`
/// span (method and URI) at `debug`, so that with `RUST_LOG=debug` every line
/// logged inside a request names it. At `info` that span is never created:
/// creating, entering (on every poll) and closing it cost as many
/// instructions as the access line itself (docs/performance.md).
#[derive(Clone, Debug)]
pub(crate) struct AccessLog<S>(S);

impl<S, B, R> tower::Service<Request<B>> for AccessLog<S>
where
    S: tower::Service<Request<B>, Response = axum::http::Response<R>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Logged<Instrumented<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (method, uri) = (request.method().clone(), request.uri().clone());
        let span = tracing::debug_span!("request", %method, %uri);
        Logged {
            inner: self.0.call(request).instrument(span),
            line: Some((method, uri, Instant::now())),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's answer, logged when it is ready.
    pub(crate) struct Logged<F> {
        #[pin]
        inner: F,
        line: Option<(Method, Uri, Instant)>,
    }
}

impl<F, R, E> Future for Logged<F>
where
    F: Future<Output = Result<axum::http::Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let output = std::task::ready!(this.inner.poll(cx));
        if let (Ok(response), Some((method, uri, start))) = (&output, this.line.take()) {
            tracing::info!(
                target: "access",
                %method,
                %uri,
                status = response.status().as_u16(),
                latency_us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX),
                "finished processing request"
            );
        }
        Poll::Ready(output)
    }
}

/// Puts [`Preflights`] around a service, with `cors`'s rules.
#[derive(Clone, Debug)]
pub(crate) struct PreflightsLayer(pub(crate) CorsLayer);

impl<S: Clone> tower::Layer<S> for PreflightsLayer {
    type Service = Preflights<S>;

    fn layer(&self, inner: S) -> Preflights<S> {
        Preflights {
            cors: self.0.layer(inner.clone()),
            inner,
        }
    }
}

/// CORS, with only a preflight (an `OPTIONS` request from an `Origin` that
/// names the method it asks for in `Access-Control-Request-Method`)
/// answered as one: tower-http's CORS answers every `OPTIONS` request so,
/// where any other goes on to the router here (a 405 naming the methods the
/// path takes, or a 404), allowed to any origin like every other answer, as
/// FastAPI's CORS middleware does.
#[derive(Clone, Debug)]
pub(crate) struct Preflights<S> {
    cors: Cors<S>,
    inner: S,
}

impl<S, B, R> tower::Service<Request<B>> for Preflights<S>
where
    S: tower::Service<Request<B>, Response = axum::http::Response<R>> + Clone,
    R: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<<Cors<S> as tower::Service<Request<B>>>::Future, Routed<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        std::task::ready!(self.cors.poll_ready(cx))?;
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if request.method() != Method::OPTIONS {
            return Either::Left(self.cors.call(request));
        }
        let headers = request.headers();
        let origin = headers.contains_key(header::ORIGIN);
        match origin && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
            true => Either::Left(self.cors.call(request)),
            false => Either::Right(Routed {
                inner: self.inner.call(request),
                origin,
            }),
        }
    }
}

pin_project_lite::pin_project! {
    /// A routed `OPTIONS` request's answer; to a request from an `Origin`,
    /// allowed to any origin (the application's CORS rules).
    pub(crate) struct Routed<F> {
        #[pin]
        inner: F,
        origin: bool,
    }
}

impl<F, R, E> Future for Routed<F>
where
    F: Future<Output = Result<axum::http::Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let mut output = std::task::ready!(this.inner.poll(cx));
        if let (Ok(response), true) = (&mut output, *this.origin) {
            let any = HeaderValue::from_static("*");
            response
                .headers_mut()
                .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, any);
        }
        Poll::Ready(output)
    }
}
