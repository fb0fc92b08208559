//! The routes in process, through `tower::ServiceExt::oneshot`: routing, the status of each
//! error code, an answer's JSON, the body limit, the request timeout at its exact instant
//! (paused time), load shedding, and the event stream. A command of the tests' own (`WAIT`, on
//! a tokio timer) stands for a slow one, so removing the examples keeps these green.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::response::IntoResponse as _;
use http_body_util::BodyExt as _;
use tokio::time::Instant;
use tower::ServiceExt as _;

use super::Connection;
use super::routes::{self, Answer};
use crate::commands::tests::shared_with;
use crate::commands::{Commands, Context, Reply, Spec, arguments};
use crate::protocol::{ErrorCode, Response};
use crate::shared::Shared;

/// `WAIT <ms>`: answers `OK <ms>` after that long on a tokio timer.
static WAIT: Spec = Spec {
    name: "WAIT",
    usage: "<ms>",
    help: "OK <ms>, after that long",
    ends_connection: false,
    pushes: false,
    examples: &[],
    start: wait,
};

fn wait(argument: Option<&str>, context: &mut Context) -> Result<Reply, Response> {
    let ms = arguments::number("WAIT", argument, 60_000)?;
    Ok(context.wait(async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Response::ok(ms.to_string())
    }))
}

/// The routes on a service of `config`, and one connection's state to send requests on.
struct Front {
    shared: Arc<Shared>,
    routes: routes::Routes,
    connection: Arc<Connection>,
}

impl Front {
    /// Call inside a runtime.
    fn new(config: crate::Config) -> Self {
        let shared = shared_with(crate::Config { cpu_threads: 1, ..config });
        let commands = Commands::with(&[&WAIT]);
        let connection = Arc::new(Connection {
            context: Mutex::new(Context::new(&shared, &commands, None)),
            peer: SocketAddr::from(([127, 0, 0, 1], 1)),
            asked: AtomicBool::new(true),
        });
        let routes = routes::routes(Arc::clone(&shared), commands);
        Self { shared, routes, connection }
    }

    /// The response to `method uri` with `body`, on the connection.
    async fn send(&self, method: Method, uri: &str, body: impl Into<Body>) -> axum::response::Response {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .extension(Arc::clone(&self.connection))
            .body(body.into())
            .expect("a request");
        self.routes.clone().oneshot(request).await.expect("infallible")
    }

    /// The status, headers and body of `POST uri` with `body`.
    async fn post(&self, uri: &str, body: impl Into<Body>) -> (StatusCode, HeaderMap, String) {
        let response = self.send(Method::POST, uri, body).await;
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.expect("the body").to_bytes();
        (parts.status, parts.headers, String::from_utf8(bytes.into()).expect("UTF-8"))
    }

    /// The status and body of `POST uri` with `body`.
    async fn answer(&self, uri: &str, body: impl Into<Body>) -> (u16, String) {
        let (status, _, body) = self.post(uri, body).await;
        (status.as_u16(), body)
    }
}

fn count(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).expect("a count")
}

#[tokio::test(flavor = "current_thread")]
async fn commands_are_routed_by_name_in_any_case_and_refusals_get_their_status() {
    let front = Front::new(crate::Config::default());
    let ok = |answer: &str| (200, format!("{{\"answer\":\"{answer}\"}}\n"));
    let err = |status, code: &str, detail: &str| {
        (status, format!("{{\"error\":{{\"code\":\"{code}\",\"detail\":\"{detail}\"}}}}\n"))
    };
    assert_eq!(front.answer("/v1/commands/PING", "").await, ok("PONG"));
    assert_eq!(front.answer("/v1/commands/ping", "").await, ok("PONG"), "any case");
    assert_eq!(front.answer("/v1/commands/WAIT", "5\r\n").await, ok("5"), "one line ending is dropped");
    assert_eq!(front.answer("/v1/commands/FLY", "").await, err(404, "unknown-command", "FLY"));
    assert_eq!(
        front.answer("/v1/commands/subscribe", "news").await,
        err(404, "unknown-command", "SUBSCRIBE is for the line protocol only")
    );
    assert_eq!(
        front.answer("/v1/commands/QUIT", "").await,
        err(404, "unknown-command", "QUIT is for the line protocol only")
    );
    assert_eq!(
        front.answer("/v1/commands/PING", "x").await,
        err(400, "bad-argument", "PING takes no argument")
    );
    assert_eq!(
        front.answer("/v1/commands/WAIT", "1\n2").await,
        err(400, "bad-request", "the body is one line")
    );
    assert_eq!(
        front.answer("/v1/commands/WAIT", vec![0xff, 0xfe]).await,
        err(400, "bad-request", "not UTF-8")
    );
    assert_eq!(front.answer("/v1/topics/news", "hello").await, ok("0"));
    assert_eq!(
        front.answer("/v1/topics/a%20b", "hello").await,
        err(400, "bad-argument", "PUBLISH: a topic is 1 to 64 printable ASCII characters")
    );
    assert_eq!(front.answer("/v2/anything", "").await.0, 404);
    assert_eq!(
        front.send(Method::GET, "/v1/commands/PING", "").await.status(),
        StatusCode::METHOD_NOT_ALLOWED
    );
}

#[test]
fn every_error_code_has_its_status_and_busy_says_when_to_retry() {
    for code in ErrorCode::ALL {
        let response = Answer(Response::err(code)).into_response();
        let expected = match code {
            ErrorCode::BadArgument | ErrorCode::BadRequest => 400,
            ErrorCode::UnknownCommand => 404,
            ErrorCode::LineTooLong => 413,
            ErrorCode::Internal => 500,
            ErrorCode::Busy | ErrorCode::ShuttingDown | ErrorCode::Unavailable => 503,
            ErrorCode::Timeout => 504,
        };
        assert_eq!(response.status().as_u16(), expected, "{code:?}");
        let retry = response.headers().get("retry-after").map(|value| value.to_str().expect("ASCII"));
        let told = matches!(code, ErrorCode::Busy | ErrorCode::Unavailable).then_some("1");
        assert_eq!(retry, told, "{code:?}");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn an_answer_is_json_with_its_text_escaped_and_a_missing_detail_null() {
    let body = |response: Response| async move {
        let bytes =
            Answer(response).into_response().into_body().collect().await.expect("the body").to_bytes();
        String::from_utf8(bytes.to_vec()).expect("UTF-8")
    };
    assert_eq!(body(Response::ok("say \"hi\"\t\\")).await, "{\"answer\":\"say \\\"hi\\\"\\t\\\\\"}\n");
    assert_eq!(
        body(Response::err(ErrorCode::Busy)).await,
        "{\"error\":{\"code\":\"busy\",\"detail\":null}}\n"
    );
    assert_eq!(
        body(Response::err_with(ErrorCode::BadArgument, "a \"b\"")).await,
        "{\"error\":{\"code\":\"bad-argument\",\"detail\":\"a \\\"b\\\"\"}}\n"
    );
}

/// The README's table of statuses (section "HTTP") is the one the front answers with.
#[test]
fn the_readme_s_status_table_is_the_front_s() {
    let readme = include_str!("../../../../README.md");
    let section = readme.split("\n## HTTP\n").nth(1).expect("an HTTP section");
    let section = section.split("\n## ").next().unwrap_or_default();
    let mut listed = Vec::new();
    for row in section.lines().filter(|line| line.starts_with("| `")) {
        let (codes, status) = row.trim_matches('|').rsplit_once(" | ").expect("two cells");
        // The codes, not the header named beside two of them.
        let codes = codes
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|code| code.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'));
        for code in codes {
            listed.push((code.to_owned(), status.trim().to_owned()));
        }
    }
    let mut answered: Vec<_> = ErrorCode::ALL
        .iter()
        .map(|code| (code.as_str().to_owned(), routes::status(*code).as_u16().to_string()))
        .collect();
    listed.sort();
    answered.sort();
    assert_eq!(listed, answered);
}

#[tokio::test(flavor = "current_thread")]
async fn a_body_of_max_line_bytes_is_taken_and_one_more_is_refused_413() {
    let front = Front::new(crate::Config { max_line: count(8), ..crate::Config::default() });
    assert_eq!(front.answer("/v1/commands/WAIT", "00000001").await.0, 200);
    let (status, _, body) = front.post("/v1/commands/WAIT", "000000001").await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body, "{\"error\":{\"code\":\"line-too-long\",\"detail\":\"max 8 bytes\"}}\n");
    // A body whose length is not known ahead (a stream) is cut at the limit too.
    let chunks = futures_util::stream::iter(["0000", "0000", "1"].map(Ok::<_, std::io::Error>));
    assert_eq!(front.answer("/v1/commands/WAIT", Body::from_stream(chunks)).await.0, 413);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_request_timeout_answers_504_at_its_exact_instant() {
    let timeout = Duration::from_secs(1);
    let front = Front::new(crate::Config { http_request_timeout: timeout, ..crate::Config::default() });
    let started = Instant::now();
    assert_eq!(front.answer("/v1/commands/WAIT", "1000").await.0, 200, "answered at the instant itself");
    assert_eq!(started.elapsed(), timeout);
    let started = Instant::now();
    let (status, _, body) = front.post("/v1/commands/WAIT", "1001").await;
    assert_eq!(started.elapsed(), timeout);
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        body,
        "{\"error\":{\"code\":\"timeout\",\"detail\":\"no answer within --http-request-timeout\"}}\n"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn past_http_max_requests_a_request_is_shed_at_once_with_retry_after() {
    let front = Front::new(crate::Config { http_max_requests: count(1), ..crate::Config::default() });
    let slow = front.answer("/v1/commands/WAIT", "500");
    let shed = async {
        // The slow request holds the only permit by now.
        tokio::task::yield_now().await;
        let started = Instant::now();
        let shed = front.post("/v1/commands/PING", "").await;
        assert_eq!(started.elapsed(), Duration::ZERO, "refused at once, not queued");
        shed
    };
    let ((status, _), (shed, headers, body)) = tokio::join!(slow, shed);
    assert_eq!(status, 200);
    assert_eq!(shed, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers.get("retry-after").map(|value| value.as_bytes()), Some(&b"1"[..]));
    assert!(body.contains("\"busy\""), "{body}");
    assert_eq!(front.answer("/v1/commands/PING", "").await.0, 200, "the permit is back");
}

#[tokio::test(flavor = "current_thread")]
async fn an_event_stream_carries_messages_and_lag_and_ends_at_drain() {
    // The topics keep 4 messages (`shared`'s test settings do too).
    let front = Front::new(crate::Config { topic_capacity: count(4), ..crate::Config::default() });
    let response = front.send(Method::GET, "/v1/topics/news/events", Body::empty()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut events = response.into_body();
    let mut next = async || {
        let frame = events.frame().await?.expect("a frame");
        Some(String::from_utf8(frame.into_data().expect("data").into()).expect("UTF-8"))
    };
    assert_eq!(front.answer("/v1/topics/news", "hi there").await.1, "{\"answer\":\"1\"}\n");
    assert_eq!(next().await.as_deref(), Some("event: MSG\ndata: hi there\n\n"));
    // Ten messages while the reader does not read: it is told what it missed, then the last 4.
    for n in 0..10 {
        assert_eq!(front.answer("/v1/topics/news", n.to_string()).await.0, 200);
    }
    assert_eq!(next().await.as_deref(), Some("event: LAG\ndata: 6\n\n"));
    for n in 6..10 {
        assert_eq!(next().await, Some(format!("event: MSG\ndata: {n}\n\n")));
    }
    front.shared.shutdown.drain.cancel();
    assert_eq!(next().await, None, "the stream ends at drain");
}
