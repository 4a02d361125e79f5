//! The API describes itself: an OpenAPI 3.1 document at `/openapi.json`,
//! built from the handlers' `#[utoipa::path]` attributes and the types they
//! answer with, and two pages that render it, Swagger UI at `/docs` and ReDoc
//! at `/redoc`. Both pages work without a network: their files are served
//! from the binary (Swagger UI's vendored in `utoipa-swagger-ui`, ReDoc's in
//! `assets/redoc`). The one outside request either makes is ReDoc's footer
//! logo, which hides itself when it cannot load.

use std::sync::Arc;

use axum::http::header::CONTENT_TYPE;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;
use utoipa::openapi::{self, Components};
use utoipa_axum::router::UtoipaMethodRouter;
use utoipa_swagger_ui::Config;

use super::error::{ApiError, Cause, FieldError, Message, ValidationErrors};
use super::input::PathParam;
use crate::service::Tracker;

/// Where the document is served.
const DOCUMENT_URL: &str = "/openapi.json";

/// The document's fixed parts; [`Api::routes`] adds the paths.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Task Tracker",
        version = "0.1.0",
        description = "Employees and a tree of tasks. Paths answer with and without \
                       the trailing slash. Every error is JSON with a `detail`.",
    ),
    components(schemas(Message, ValidationErrors, FieldError)),
    tags(
        (name = "employees", description = "People who can be assigned tasks"),
        (name = "tasks", description = "Tasks, each with an optional parent task and assignee"),
        (name = "health", description = "Liveness and readiness probes"),
    )
)]
struct ApiDoc;

/// The API's routes and its document, built together: each call to
/// [`Api::routes`] routes one path's handlers and documents them, so a
/// handler is routed only with its documentation.
pub(super) struct Api {
    router: Router<Tracker>,
    doc: openapi::OpenApi,
}

impl Api {
    pub(super) fn new() -> Self {
        Api {
            router: Router::new(),
            doc: ApiDoc::openapi(),
        }
    }

    /// Routes and documents the handlers of one path (from
    /// `utoipa_axum::routes!`). The document spells the path as the original
    /// does, `/employees/`; the router matches it without the trailing slash,
    /// which [`super::serve`] trims from every request.
    pub(super) fn routes(
        mut self,
        (schemas, paths, handlers): UtoipaMethodRouter<Tracker>,
    ) -> Self {
        for (path, item) in paths.paths {
            let route = path.strip_suffix('/').filter(|p| !p.is_empty());
            self.router = self.router.route(route.unwrap_or(&path), handlers.clone());
            match self.doc.paths.paths.get_mut(&path) {
                Some(documented) => documented.merge_operations(item),
                None => {
                    self.doc.paths.paths.insert(path, item);
                }
            }
        }
        self.doc
            .components
            .get_or_insert_with(Components::new)
            .schemas
            .extend(schemas);
        self
    }

    /// The routes, plus the document and the pages that render it.
    pub(super) fn finish(self) -> Router<Tracker> {
        let doc = Arc::new(self.doc);
        let swagger_config = Arc::new(Config::from(DOCUMENT_URL).validator_url("none"));
        let docs = Router::new()
            .route(
                DOCUMENT_URL,
                get(move || {
                    let doc = doc.clone();
                    async move { Json(doc.as_ref().clone()) }
                }),
            )
            .route("/docs", get(|| async { Html(SWAGGER_UI_PAGE) }))
            .route(
                "/docs/{file}",
                get(move |PathParam(file): PathParam| {
                    let config = swagger_config.clone();
                    async move { swagger_ui_file(&file, config) }
                }),
            )
            .route("/redoc", get(|| async { Html(REDOC_PAGE) }))
            .route(
                "/redoc/redoc.standalone.js",
                get(|| async { ([(CONTENT_TYPE, "text/javascript")], REDOC_JS) }),
            );
        self.router.merge(docs)
    }
}

/// One of Swagger UI's files; its initializer carries `swagger_config`.
fn swagger_ui_file(name: &str, config: Arc<Config<'static>>) -> Result<Response, ApiError> {
    match utoipa_swagger_ui::serve(name, config) {
        Ok(Some(file)) => Ok(([(CONTENT_TYPE, file.content_type)], file.bytes).into_response()),
        Ok(None) => Err(ApiError::NotFound("Not Found".to_owned())),
        Err(e) => Err(ApiError::Internal(Some(Cause::text(format!(
            "cannot serve Swagger UI's {name}: {e}"
        ))))),
    }
}

/// Swagger UI's page. Its files are linked by absolute paths, so the page
/// works at `/docs` and at `/docs/` alike.
const SWAGGER_UI_PAGE: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Task Tracker - Swagger UI</title>
  <link rel="stylesheet" href="/docs/swagger-ui.css">
  <link rel="stylesheet" href="/docs/index.css">
  <link rel="icon" type="image/png" href="/docs/favicon-32x32.png" sizes="32x32">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script src="/docs/swagger-ui-standalone-preset.js"></script>
  <script src="/docs/swagger-initializer.js"></script>
</body>
</html>
"#;

/// ReDoc's page, without the web fonts its default page loads from outside.
const REDOC_PAGE: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Task Tracker - ReDoc</title>
  <style>body { margin: 0; padding: 0; }</style>
</head>
<body>
  <div id="redoc"></div>
  <script src="/redoc/redoc.standalone.js"></script>
  <script>Redoc.init("/openapi.json", {}, document.getElementById("redoc"));</script>
</body>
</html>
"#;

/// ReDoc's browser bundle (see `assets/redoc/README.md`).
const REDOC_JS: &[u8] = include_bytes!("../../assets/redoc/redoc.standalone.js");
