//! Reading what roomsync exports for Prometheus in tests: a free port to listen on, the
//! daemon's `/metrics`, and a scrape parsed with a Prometheus text parser.

use std::collections::HashMap;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn metrics_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}/metrics")
}

/// The text the daemon serves on `/metrics` at `port` (the listener must be up: status 200).
pub async fn metrics_text(port: u16) -> String {
    let response = super::http_get(&metrics_url(port)).await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    text
}

/// The daemon's metrics at `port`, as Prometheus would scrape them.
pub async fn scrape(port: u16) -> Scrape {
    Scrape::parse(&metrics_text(port).await)
}

/// The metrics at `port`, or None while nothing listens there yet.
pub async fn try_scrape(port: u16) -> Option<Scrape> {
    let response = super::http_get(&metrics_url(port)).await.ok()?;
    Some(Scrape::parse(&response.text().await.ok()?))
}

/// A scrape, parsed with a Prometheus text parser.
pub struct Scrape(prometheus_parse::Scrape);

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        let lines = text.lines().map(|l| Ok(l.to_string()));
        Scrape(prometheus_parse::Scrape::parse(lines).expect("valid exposition format"))
    }

    /// The sum of `name` over all its label sets.
    pub fn sum(&self, name: &str) -> f64 {
        self.0
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .sum()
    }

    /// The value of `name` with exactly these labels (a counter not yet counted is 0).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let wanted: HashMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.0
            .samples
            .iter()
            .find(|s| s.metric == name && *s.labels == wanted)
            .map_or(0.0, |s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
    }
}
