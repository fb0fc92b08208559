//! What traces cost: PING throughput of the service exporting a span per request to a real
//! collector (rotel's agent), every request sampled and one in ten, beside the same service with
//! traces off, at depth 1 and 16 (the same client, rounds alternating). Without `rotel-agent`
//! the figures are skipped with one line.
//!
//! At 100% the export queue overflows under this load (far more spans a second than one batch
//! thread sends): spans are dropped and counted, and the figure shows what the request path pays
//! for making them, not what the collector takes.

use std::path::Path;

use crate::{Figure, Goal, SERVICE_FLAGS, paired, peers, rounds};

pub(crate) async fn figures(binary: &Path) -> Vec<Figure> {
    let Some((collector, endpoint)) = peers::collector().await else {
        return Vec::new();
    };
    let off = peers::service(binary, SERVICE_FLAGS).await;
    let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str());
    let all = peers::service_with_env(binary, SERVICE_FLAGS, &[endpoint]).await;
    let ratio = [("OTEL_TRACES_SAMPLER", "traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "0.1")];
    let sampled = peers::service_with_env(binary, SERVICE_FLAGS, &[&[endpoint], &ratio[..]].concat()).await;
    let mut figures = Vec::new();
    // One row: all and 1 in 10 at depth 1, then the same at depth 16.
    let row = "PING traced / not, all, 1 in 10; depth 1, 16";
    let rows =
        [("trace_all_depth1", "trace_sampled_depth1", 1), ("trace_all_depth16", "trace_sampled_depth16", 16)];
    for (all_name, sampled_name, depth) in rows {
        // Each round: [all, sampled, off], so each figure is beside the service with traces off.
        let rounds = rounds(&[all.addr, sampled.addr, off.addr], None, depth).await;
        figures.push(Figure::rounds(all_name, row, paired(&rounds, 2), "req/s", Goal::Watch));
        let sampled_rounds: Vec<Vec<f64>> = rounds.iter().map(|round| vec![round[1], round[2]]).collect();
        figures.push(Figure::rounds(sampled_name, row, paired(&sampled_rounds, 1), "req/s", Goal::Watch));
    }
    for server in [all, sampled, off, collector] {
        server.stop().await;
    }
    figures
}
