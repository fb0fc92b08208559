//! The routes: one for every command of the registry, two for the topics, and how a protocol
//! answer becomes an HTTP one (the status table is [`status`], once).
//!
//! | route                            | what it does                                           |
//! |----------------------------------|--------------------------------------------------------|
//! | `POST /v1/commands/{name}`       | the command `name` (any case), the body its argument   |
//! | `POST /v1/topics/{topic}`        | `PUBLISH topic body`                                   |
//! | `GET /v1/topics/{topic}/events`  | `SUBSCRIBE topic`, as Server-Sent Events (`events.rs`) |
//!
//! An answer is JSON: `{"answer": "..."}` with 200, or `{"error": {"code": ..., "detail": ...}}`
//! with the code's status. The body is plain text, the argument exactly as it would follow the
//! name's space on a line: UTF-8, one line (a single trailing line ending is dropped, as `curl
//! --data-binary @file` sends one), at most `--max-line` bytes; an empty body is no argument.
//! A command that pushes lines or ends its connection (`SUBSCRIBE`, `QUIT`) means nothing on a
//! request and is not served here.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{Path, Request, State};
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{BoxError, Extension, Router};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use hyper::body::Body as _;
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::load_shed::error::Overloaded;
use tower::timeout::TimeoutLayer;
use tower::timeout::error::Elapsed;
use tower::util::BoxCloneSyncService;

use super::{Connection, answered, events};
use crate::commands::{Commands, arguments};
use crate::metrics::http::Route;
use crate::protocol::{ErrorCode, Response};
use crate::shared::Shared;

/// What every handler reads: the service and the commands it answers.
#[derive(Clone)]
pub(super) struct Service {
    pub(super) shared: Arc<Shared>,
    pub(super) commands: Commands,
}

/// The routes behind the bounds: what a request goes to (hyper calls a service through `&self`,
/// so it is cloned for each request, as `TowerToHyperService` does).
/// Boxed: its future holds the bounds' `BoxError`, which an unboxed future carries into the
/// connection's task, where rustc's check that the task is `Send` then fails ("implementation of
/// `FnOnce` is not general enough", rust-lang/rust#102211).
pub(super) type Routes = BoxCloneSyncService<Request, axum::response::Response, Infallible>;

/// Every route, behind the bounds (see the module docs of `http`). Applied once, around the
/// router, not to each route (`Router::layer`): a route's layers are boxed and cloned for every
/// request, which cost the HTTP PING about a tenth of its throughput.
pub(super) fn routes(shared: Arc<Shared>, commands: Commands) -> Routes {
    let config = &shared.config;
    let service = Service { shared: Arc::clone(&shared), commands };
    let router = Router::new()
        .route(Route::Command.path(), post(command))
        .route(Route::Publish.path(), post(publish))
        .route(Route::Events.path(), get(events::subscribe))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(service);
    let routes = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(|error: BoxError| std::future::ready(refused(&error))))
        .layer(LoadShedLayer::new())
        .layer(GlobalConcurrencyLimitLayer::new(config.http_max_requests.get()))
        .layer(TimeoutLayer::new(config.http_request_timeout))
        .service(router);
    BoxCloneSyncService::new(routes)
}

/// `POST /v1/commands/{name}`. (A refusal is an `Err`, so that `?` returns it: both sides are
/// answers.)
async fn command(
    State(service): State<Service>,
    Extension(connection): Extension<Arc<Connection>>,
    Path(name): Path<String>,
    body: Body,
) -> Result<Answer, Answer> {
    let argument = argument(body, service.shared.config.max_line.get()).await.map_err(Answer)?;
    if let Some((_, spec)) = service.commands.find(&name)
        && (spec.pushes || spec.ends_connection)
    {
        let detail = format!("{} is for the line protocol only", spec.name);
        return Err(Answer(Response::err_with(ErrorCode::UnknownCommand, detail)));
    }
    Ok(run(&service, &connection, &name, argument.as_deref()).await)
}

/// `POST /v1/topics/{topic}`: the body is the message.
async fn publish(
    State(service): State<Service>,
    Extension(connection): Extension<Arc<Connection>>,
    Path(topic): Path<String>,
    body: Body,
) -> Result<Answer, Answer> {
    let text = argument(body, service.shared.config.max_line.get()).await.map_err(Answer)?;
    // Checked here: a topic with a space in it would split differently on the line.
    let topic = arguments::topic("PUBLISH", &topic).map_err(Answer)?;
    let argument = format!("{topic} {}", text.unwrap_or_default());
    Ok(run(&service, &connection, "PUBLISH", Some(&argument)).await)
}

/// Runs a command on the connection's context and waits for its answer.
async fn run(service: &Service, connection: &Connection, name: &str, argument: Option<&str>) -> Answer {
    Answer(answered(connection.start(name, argument).await, &service.shared).await)
}

/// The body as a command's argument; see the module docs.
async fn argument(body: Body, max: usize) -> Result<Option<String>, Response> {
    let too_large = || Response::err_with(ErrorCode::LineTooLong, format!("max {max} bytes"));
    // No body (PING's): nothing to collect, or to allocate for.
    if body.is_end_stream() {
        return Ok(None);
    }
    if body.size_hint().lower() > max as u64 {
        return Err(too_large());
    }
    let bytes = match Limited::new(body, max).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<LengthLimitError>() => return Err(too_large()),
        Err(error) => return Err(Response::err_with(ErrorCode::BadRequest, format!("body: {error}"))),
    };
    if bytes.is_empty() {
        return Ok(None);
    }
    let text = String::from_utf8(bytes.into())
        .map_err(|_| Response::err_with(ErrorCode::BadRequest, "not UTF-8"))?;
    let line = text.strip_suffix('\n').map_or(text.as_str(), |line| line.strip_suffix('\r').unwrap_or(line));
    if line.contains(['\n', '\r']) {
        return Err(Response::err_with(ErrorCode::BadRequest, "the body is one line"));
    }
    Ok(Some(line.to_owned()))
}

/// What the bounds' errors are answered: past the concurrency limit, past the timeout.
fn refused(error: &BoxError) -> Answer {
    Answer(if error.is::<Overloaded>() {
        Response::err_with(ErrorCode::Busy, "too many requests at once")
    } else if error.is::<Elapsed>() {
        Response::err_with(ErrorCode::Timeout, "no answer within --http-request-timeout")
    } else {
        Response::err_with(ErrorCode::Internal, error.to_string())
    })
}

async fn not_found() -> Answer {
    Answer(Response::err_with(
        ErrorCode::UnknownCommand,
        "no such route: POST /v1/commands/{name}, POST /v1/topics/{topic}, GET /v1/topics/{topic}/events",
    ))
}

async fn method_not_allowed() -> axum::response::Response {
    let answer = Answer(Response::err_with(ErrorCode::BadRequest, "method not allowed")).into_response();
    (StatusCode::METHOD_NOT_ALLOWED, answer).into_response()
}

/// The HTTP status of each error code: the README's table (section "HTTP") is this one.
pub(crate) fn status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BadArgument | ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
        ErrorCode::UnknownCommand => StatusCode::NOT_FOUND,
        ErrorCode::LineTooLong => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::Busy | ErrorCode::ShuttingDown | ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Seconds a client told `busy` or `unavailable` waits before it tries again.
const RETRY_AFTER_SECONDS: HeaderValue = HeaderValue::from_static("1");

/// A protocol answer, as an HTTP response.
pub(super) struct Answer(pub(super) Response);

impl IntoResponse for Answer {
    fn into_response(self) -> axum::response::Response {
        // Written out into one buffer, not built as a `serde_json::Value` (a map and its keys,
        // allocated per answer); serde_json escapes the text, and writes a missing detail as
        // `null`. (A `Vec` takes every write.)
        let mut body = Vec::with_capacity(64);
        let (status, retry) = match &self.0 {
            Response::Ok(text) => {
                body.extend_from_slice(b"{\"answer\":");
                let _ = serde_json::to_writer(&mut body, text);
                body.extend_from_slice(b"}\n");
                (StatusCode::OK, false)
            }
            Response::Err(code, detail) => {
                body.extend_from_slice(b"{\"error\":{\"code\":\"");
                body.extend_from_slice(code.as_str().as_bytes());
                body.extend_from_slice(b"\",\"detail\":");
                let _ = serde_json::to_writer(&mut body, detail);
                body.extend_from_slice(b"}}\n");
                (status(*code), matches!(code, ErrorCode::Busy | ErrorCode::Unavailable))
            }
        };
        let mut response = axum::response::Response::new(Body::from(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if retry {
            headers.insert(RETRY_AFTER, RETRY_AFTER_SECONDS);
        }
        response
    }
}
