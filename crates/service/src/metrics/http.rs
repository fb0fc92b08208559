//! The HTTP front's metrics: a latency histogram per route and a count per route and status.
//!
//! Label values are bounded: a route is its template (`/v1/commands/{name}`), never the path a
//! client sent, and a status one of the few the front answers ([`STATUSES`]) or `other`. Each
//! figure is an atomic counter, as the line protocol's are (`super`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::StatusCode;

use super::Histogram;

/// The front's routes, and `other` for a request that matched none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Command,
    Publish,
    Events,
    Other,
}

impl Route {
    pub(crate) const ALL: [Self; 4] = [Self::Command, Self::Publish, Self::Events, Self::Other];

    /// The route's template, which is also its label.
    pub(crate) fn path(self) -> &'static str {
        match self {
            Self::Command => "/v1/commands/{name}",
            Self::Publish => "/v1/topics/{topic}",
            Self::Events => "/v1/topics/{topic}/events",
            Self::Other => "other",
        }
    }

    /// The route whose template `path` has the shape of (it may still be refused there: an
    /// unknown command, a bad topic).
    pub(crate) fn of(path: &str) -> Self {
        let mut segments = path.strip_prefix("/v1/").unwrap_or_default().split('/');
        match (segments.next(), segments.next(), segments.next(), segments.next()) {
            (Some("commands"), Some(_), None, _) => Self::Command,
            (Some("topics"), Some(_), None, _) => Self::Publish,
            (Some("topics"), Some(_), Some("events"), None) => Self::Events,
            _ => Self::Other,
        }
    }
}

/// The statuses the front's routes and bounds answer, each counted under its own label. (What
/// hyper answers by itself, such as 431 for a head too large, never reaches the routes.)
pub(crate) const STATUSES: [u16; 8] = [200, 400, 404, 405, 413, 500, 503, 504];

/// The front's histograms and counts; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// Per route, in [`Route::ALL`]'s order: from the request's head to its answer's.
    durations: [Histogram; Route::ALL.len()],
    /// Per route and status, in [`STATUSES`]' order, the last of each row for any other.
    responses: [[AtomicU64; STATUSES.len() + 1]; Route::ALL.len()],
}

impl Metrics {
    /// Records one answer.
    pub(crate) fn observe(&self, route: Route, status: StatusCode, elapsed: Duration) {
        let row = route as usize;
        self.durations[row].observe(elapsed);
        let column = STATUSES.iter().position(|&known| known == status.as_u16()).unwrap_or(STATUSES.len());
        self.responses[row][column].fetch_add(1, Ordering::Relaxed);
    }

    /// Each route with its histogram.
    pub(crate) fn durations(&self) -> impl Iterator<Item = (Route, &Histogram)> {
        Route::ALL.into_iter().zip(&self.durations)
    }

    /// Each route, status label and count, for every count above zero.
    pub(crate) fn responses(&self) -> impl Iterator<Item = (Route, String, u64)> + '_ {
        Route::ALL.into_iter().zip(&self.responses).flat_map(|(route, row)| {
            let labels = STATUSES.iter().map(u16::to_string).chain(["other".to_owned()]);
            labels.zip(row).filter_map(move |(status, count)| {
                let count = count.load(Ordering::Relaxed);
                (count > 0).then_some((route, status, count))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_statuses_are_counted_under_bounded_labels() {
        let metrics = Metrics::default();
        metrics.observe(Route::Command, StatusCode::OK, Duration::from_millis(1));
        metrics.observe(Route::Command, StatusCode::OK, Duration::from_millis(1));
        metrics.observe(Route::of("/v1/anything/else"), StatusCode::IM_A_TEAPOT, Duration::ZERO);
        for (path, route) in [
            ("/v1/commands/PING", Route::Command),
            ("/v1/topics/news", Route::Publish),
            ("/v1/topics/news/events", Route::Events),
            ("/v1/topics/news/other", Route::Other),
            ("/v1/commands/PING/x", Route::Other),
            ("/v2/commands/PING", Route::Other),
        ] {
            assert_eq!(Route::of(path), route, "{path}");
        }
        let counted: Vec<_> =
            metrics.responses().map(|(route, status, count)| (route.path(), status, count)).collect();
        assert_eq!(counted, [("/v1/commands/{name}", "200".to_owned(), 2), ("other", "other".to_owned(), 1)]);
        assert_eq!(metrics.durations().map(|(_, histogram)| histogram.count()).sum::<u64>(), 3);
    }
}
