//! A tracker served over a real socket on a random port, on a fresh,
//! migrated database; a small JSON client for it.

use serde_json::Value;
use test_support::{Backend, TestDb};
use tokio::sync::oneshot;
use tracker::Tracker;

/// Applies the migrations to `t` the way `tracker migrate up` does (under the lock).
pub async fn migrate(t: &TestDb) {
    migration::up(&t.settings, std::time::Duration::from_secs(60))
        .await
        .unwrap();
}

/// The tracker's routes in an application, as the binary composes them.
pub fn app(db: &db_core::Db) -> web::App {
    web::App::new("Task Tracker", "0.1.0", db.clone())
        .service(tracker::http::routes(Tracker::new(db.clone())))
}

/// A running server and its database.
pub struct Server {
    pub t: TestDb,
    pub base: String,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    /// Serves a tracker on a fresh, migrated database of `backend`.
    pub async fn start(backend: Backend) -> Server {
        let t = TestDb::new(backend).await;
        migrate(&t).await;
        Self::on(t).await
    }

    /// Serves a tracker on `t` (already migrated).
    pub async fn on(t: TestDb) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app(&t.db).serve(listener, web::Exposure::Off, async {
            let _ = stopped.await;
        }));
        Server {
            t,
            base,
            client: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Sends a request with an optional raw body; returns status and JSON.
    pub async fn call(&self, method: &str, path: &str, body: Option<&[u8]>) -> (u16, Value) {
        let (status, text) = self.call_text(method, path, body).await;
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{method} {path}: not JSON: {text:?}"));
        (status, json)
    }

    /// Sends a request; returns status and the raw body.
    pub async fn call_text(&self, method: &str, path: &str, body: Option<&[u8]>) -> (u16, String) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_vec());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None).await
    }

    /// Sends `body` as JSON with `method`; returns status and JSON.
    pub async fn send(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        self.call(method, path, Some(body.to_string().as_bytes()))
            .await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send("POST", path, body).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.send("PUT", path, body).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.call("DELETE", path, None).await
    }

    /// Stops the server, waiting for it to finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}
