//! The application describes itself: one OpenAPI 3.1 document at
//! `/openapi.json`, built from the handlers' `#[utoipa::path]` attributes
//! and the types they answer with, and two pages that render it, Swagger UI
//! at `/docs` and ReDoc at `/redoc`. Both pages work without a network:
//! their files are served from the binary (Swagger UI's vendored in
//! `utoipa-swagger-ui`, ReDoc's in `assets/redoc`). The one outside request
//! either makes is ReDoc's footer logo, which hides itself when it cannot
//! load.

use std::sync::Arc;

use axum::http::header::CONTENT_TYPE;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use utoipa::openapi::tag::Tag;
use utoipa::openapi::{self, Components, ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa_axum::router::UtoipaMethodRouter;
use utoipa_swagger_ui::Config;

use crate::error::{ApiError, Cause, too_large_detail};
use crate::input::{BODY_LIMIT, PathParam};

/// Where the document is served.
const DOCUMENT_URL: &str = "/openapi.json";

/// A service's routes and their part of the document, built together: each
/// call to [`Routes::routes`] routes one path's handlers and documents them,
/// so a handler is routed only with its documentation. `S` is the state the
/// handlers take (`State<S>`); [`Routes::with_state`] gives it, and the
/// result goes to [`crate::App::service`].
///
/// ```
/// use axum::Json;
/// use utoipa_axum::routes;
///
/// /// Say hello
/// #[utoipa::path(get, path = "/hello/", tag = "hello", responses((status = 200, body = String)))]
/// async fn hello() -> Json<&'static str> {
///     Json("hello")
/// }
///
/// let routes: web::Routes = web::Routes::new()
///     .tag("hello", "Greetings")
///     .routes(routes!(hello))
///     .with_state(());
/// ```
pub struct Routes<S = ()> {
    pub(crate) router: Router<S>,
    pub(crate) doc: openapi::OpenApi,
}

impl<S> std::fmt::Debug for Routes<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let paths: Vec<_> = self.doc.paths.paths.keys().collect();
        f.debug_struct("Routes").field("paths", &paths).finish()
    }
}

impl<S: Clone + Send + Sync + 'static> Default for Routes<S> {
    fn default() -> Self {
        Routes {
            router: Router::new(),
            doc: openapi::OpenApi::default(),
        }
    }
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    /// No routes yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Describes the tag `name` that the service's operations use.
    pub fn tag(mut self, name: &str, description: &str) -> Self {
        let mut tag = Tag::new(name);
        tag.description = Some(description.to_owned());
        self.doc.tags.get_or_insert_with(Vec::new).push(tag);
        self
    }

    /// Routes and documents the handlers of one path (from
    /// `utoipa_axum::routes!`). The document spells the path as declared,
    /// such as `/tasks/`; the router matches it without the trailing slash,
    /// which [`crate::App`] trims from every request, so both spellings work.
    pub fn routes(mut self, (schemas, paths, handlers): UtoipaMethodRouter<S>) -> Self {
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

    /// Edits the service's part of the document, for what is known only at
    /// run time, such as a limit that a setting gives: the document states
    /// every limit the handlers enforce.
    pub fn document(mut self, edit: impl FnOnce(&mut openapi::OpenApi)) -> Self {
        edit(&mut self.doc);
        self
    }

    /// The routes with their state given.
    pub fn with_state(self, state: S) -> Routes {
        Routes {
            router: self.router.with_state(state),
            doc: self.doc,
        }
    }
}

/// States what reading a body answers in `doc`, for every operation that
/// takes one (unless it describes its own): 413 over the limit, 408 for a
/// body that stopped coming, 400 for one that could not be read.
pub(crate) fn state_body_answers(doc: &mut openapi::OpenApi) {
    let answer = |description: String, example: Option<serde_json::Value>| {
        let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("HTTPError")));
        let response = ResponseBuilder::new()
            .description(description)
            .content("application/json", content.example(example).build());
        RefOr::<openapi::Response>::from(response.build())
    };
    let too_large = answer(
        format!("The body is over {BODY_LIMIT} bytes"),
        Some(json!({"detail": too_large_detail(BODY_LIMIT)})),
    );
    let unreadable = answer(
        "The body could not be read: it ended before its announced length".to_owned(),
        None,
    );
    let timed_out = answer(
        "The client stopped sending the body for longer than the server waits".to_owned(),
        None,
    );
    for item in doc.paths.paths.values_mut() {
        let methods = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
            &mut item.query,
        ];
        let operations = methods.into_iter().flatten();
        for operation in operations.chain(item.additional_operations.values_mut()) {
            if operation.request_body.is_some() {
                let responses = &mut operation.responses.responses;
                for (status, answer) in [
                    ("400", &unreadable),
                    ("408", &timed_out),
                    ("413", &too_large),
                ] {
                    responses
                        .entry(status.to_owned())
                        .or_insert_with(|| answer.clone());
                }
            }
        }
    }
}

/// The document at [`DOCUMENT_URL`] and the pages that render it, titled
/// with the document's title.
pub(crate) fn pages(doc: openapi::OpenApi) -> Router {
    let title = escape(&doc.info.title);
    let (swagger_page, redoc_page) = (
        SWAGGER_UI_PAGE.replace("TITLE", &title),
        REDOC_PAGE.replace("TITLE", &title),
    );
    let doc = Arc::new(doc);
    let swagger_config = Arc::new(Config::from(DOCUMENT_URL).validator_url("none"));
    Router::new()
        .route(
            DOCUMENT_URL,
            get(move || {
                let doc = doc.clone();
                async move { Json(doc.as_ref().clone()) }
            }),
        )
        .route(
            "/docs",
            get(move || std::future::ready(Html(swagger_page.clone()))),
        )
        .route(
            "/docs/{file}",
            get(move |PathParam(file): PathParam| {
                let config = swagger_config.clone();
                async move { swagger_ui_file(&file, config) }
            }),
        )
        .route(
            "/redoc",
            get(move || std::future::ready(Html(redoc_page.clone()))),
        )
        .route(
            "/redoc/redoc.standalone.js",
            get(|| async { ([(CONTENT_TYPE, "text/javascript")], REDOC_JS) }),
        )
}

/// `text` as HTML text.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
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
  <title>TITLE - Swagger UI</title>
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
  <title>TITLE - ReDoc</title>
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
const REDOC_JS: &[u8] = include_bytes!("../assets/redoc/redoc.standalone.js");
