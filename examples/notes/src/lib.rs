//! Notes: a service of its own on the foundation, the worked example of
//! `docs/your-service.md`. It has a table ([`migration`]), its entity
//! ([`entity::notes`], as `sea-orm-cli generate entity` writes it), a setting
//! ([`NotesSettings`], the `[notes]` table of `config/*.toml` and the
//! `NOTES_` variables), the operations ([`Notes`]) and two routes
//! ([`routes()`]: `POST /notes/` and `GET /notes/`). The `notes` binary
//! (`src/main.rs`) serves them beside the tracker's, in one application.
//!
//! In the project itself the migration and the entity live in the
//! `migration` and `entity` crates; they are here so that the example
//! leaves the project's schema alone.
#![warn(missing_docs)]

/// The entity where the project's `entity` crate has it: `entity::notes`.
pub mod entity {
    #[allow(missing_docs)]
    pub mod notes;
}
pub mod migration;

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use db_core::{Db, SessionOptions, settings::Section};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use sea_orm::{QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;
use web::error::{Invalid, Unavailable};
use web::input::{Fields, JsonObject, Query};
use web::{ApiError, FieldError, Routes};

/// The notes service's settings: the `[notes]` table of `config/*.toml`,
/// and the `NOTES_` variables in the environment and `.env`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
pub struct NotesSettings {
    /// The longest title a note may have, in characters.
    #[schemars(range(min = 1, max = 1000))]
    #[schemars(extend("default" = "50", "example" = "80", "expects" = "a whole number 1-1000"))]
    pub max_title_length: u32,
}

impl Section for NotesSettings {
    const NAME: &'static str = "notes";
    const PREFIX: &'static str = "NOTES_";
}

/// A note as stored.
pub type Note = entity::notes::Model;

/// The notes operations, on a db-core [`Db`].
#[derive(Debug, Clone)]
pub struct Notes {
    db: Db,
    settings: Arc<NotesSettings>,
}

impl Notes {
    /// Notes in `db`, under `settings`.
    pub fn new(db: Db, settings: NotesSettings) -> Self {
        Notes {
            db,
            settings: Arc::new(settings),
        }
    }

    /// Adds a note.
    pub async fn create(&self, title: String, body: String) -> db_core::Result<Note> {
        self.db
            .transaction(SessionOptions::read_write(), |tx| {
                let row = entity::notes::ActiveModel {
                    title: Set(title.clone()),
                    body: Set(body.clone()),
                    ..Default::default()
                };
                async move { Ok(row.insert(&tx).await?) }
            })
            .await
    }

    /// Up to `limit` notes by id, after the id `after` if given.
    pub async fn list(&self, after: Option<i32>, limit: u64) -> db_core::Result<Vec<Note>> {
        let read = self.db.read().await?;
        let mut notes = entity::notes::Entity::find()
            .order_by_asc(entity::notes::Column::Id)
            .limit(limit);
        if let Some(after) = after {
            notes = notes.filter(entity::notes::Column::Id.gt(after));
        }
        Ok(notes.all(&read).await?)
    }
}

/// The notes routes, for `web::App::service`. The document states the
/// configured title limit.
pub fn routes(notes: Notes) -> Routes {
    let max = notes.settings.max_title_length as usize;
    Routes::new()
        .tag("notes", "Short notes")
        .routes(routes!(list_notes, create_note))
        .document(|doc| {
            let schemas = doc.components.as_mut().map(|c| &mut c.schemas);
            if let Some(RefOr::T(Schema::Object(note))) =
                schemas.and_then(|s| s.get_mut("NoteCreate"))
                && let Some(RefOr::T(Schema::Object(title))) = note.properties.get_mut("title")
            {
                title.max_length = Some(max);
            }
        })
        .with_state(notes)
}

/// A new note's fields.
#[derive(ToSchema)]
#[schema(example = json!({"title": "Groceries", "body": "Milk, bread"}))]
#[expect(dead_code, reason = "only the OpenAPI document reads it")]
struct NoteCreate {
    /// Title, at most `max_title_length` characters (`[notes]`, 50 unless
    /// configured; `routes()` puts the configured one in the document).
    #[schema(max_length = 1000, pattern = "^[^\\x00]*$")]
    title: String,
    /// Text.
    #[schema(max_length = 10000, pattern = "^[^\\x00]*$")]
    body: String,
}

/// A note.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"id": 1, "title": "Groceries", "body": "Milk, bread"}))]
struct NoteOut {
    /// The note's id.
    id: i32,
    /// Title.
    title: String,
    /// Text.
    body: String,
}

impl From<Note> for NoteOut {
    fn from(n: Note) -> Self {
        NoteOut {
            id: n.id,
            title: n.title,
            body: n.body,
        }
    }
}

/// Add a note
#[utoipa::path(
    post,
    path = "/notes/",
    tag = "notes",
    request_body = NoteCreate,
    responses((status = 200, description = "The new note", body = NoteOut), Invalid, Unavailable)
)]
async fn create_note(
    State(notes): State<Notes>,
    JsonObject(body): JsonObject,
) -> Result<Json<NoteOut>, ApiError> {
    let mut f = Fields::new(&body);
    let (title, text) = (f.string("title", 1000), f.string("body", 10_000));
    let (title, text) = f.finish((title, text))?;
    let max = notes.settings.max_title_length;
    if title.chars().count() > max as usize {
        return Err(ApiError::Validation(vec![FieldError::new(
            "string_too_long",
            &["body", "title"],
            format!("String should have at most {max} characters"),
            None,
        )]));
    }
    Ok(Json(notes.create(title, text).await?.into()))
}

/// The page of `GET /notes/`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct NotesPage {
    /// Only notes with a larger id.
    #[param(minimum = 0, maximum = 2147483647)]
    after_id: Option<u32>,
    /// Notes to return at most.
    #[param(default = 100, minimum = 0, maximum = 1000)]
    limit: Option<u64>,
}

/// List notes by id, a page at a time
#[utoipa::path(
    get,
    path = "/notes/",
    tag = "notes",
    params(NotesPage),
    responses((status = 200, description = "A page of notes", body = Vec<NoteOut>), Invalid, Unavailable)
)]
async fn list_notes(
    State(notes): State<Notes>,
    Query(page): Query<NotesPage>,
) -> Result<Json<Vec<NoteOut>>, ApiError> {
    let after = page.after_id.map(i32::try_from).transpose();
    let limit = page.limit.unwrap_or(100);
    let mut errors = Vec::new();
    if after.is_err() {
        errors.push(too_large("after_id", i32::MAX as u64));
    }
    if limit > 1000 {
        errors.push(too_large("limit", 1000));
    }
    match after {
        Ok(after) if errors.is_empty() => {
            let rows = notes.list(after, limit).await?;
            Ok(Json(rows.into_iter().map(NoteOut::from).collect()))
        }
        _ => Err(ApiError::Validation(errors)),
    }
}

fn too_large(parameter: &str, max: u64) -> FieldError {
    FieldError::new(
        "less_than_equal",
        &["query", parameter],
        format!("Input should be less than or equal to {max}"),
        None,
    )
}
