//! Every metric of design/contract.md, registered once.  Labels come only from
//! small fixed sets (enums' `as_str`), never from paths, pids, keys or fingerprints.

use prometheus::{
    Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub credential_leaks: IntCounterVec,
    pub masked_echoes: IntCounterVec,
    pub http_pairs: IntCounterVec,
    pub http_parse_errors: IntCounterVec,
    pub http_resyncs: IntCounterVec,
    pub http_interim_heads_not_kept: IntCounter,
    pub capture_events: IntCounterVec,
    pub capture_lost_events: IntCounter,
    pub capture_truncated_bytes: IntCounter,
    pub capture_bad_events: IntCounterVec,
    pub capture_muted_calls: IntCounter,
    pub connections_active: IntGauge,
    pub connections_evicted: IntCounterVec,
    pub body_bytes_over_cap: IntCounter,
    pub request_body_bytes_not_kept: IntCounter,
    pub decompress_cap_hits: IntCounterVec,
    pub credentials_dropped: IntCounter,
    pub matcher_cache_lookups: IntCounterVec,
    pub matcher_cache_dropped: IntCounterVec,
    pub matcher_cache_entries: IntGauge,
    pub tls_attachments: IntGaugeVec,
    pub tls_released: IntCounter,
    pub attach_errors: IntCounterVec,
    pub blind_processes: IntGaugeVec,
    pub blind_processes_seen: IntCounterVec,
    pub build_info: IntGaugeVec,
    pub findings_dropped: IntCounter,
    /// JSON lines not written to `--findings` / `--pairs`, by `output`.
    pub output_dropped: IntCounterVec,
    pub output_reopen_failures: IntCounterVec,
    /// Handles of the series touched on every event or pair, resolved once:
    /// a `with_label_values` lookup (hash + lock) per event showed in the profile.
    pub hot: HotCounters,
}

#[derive(Clone)]
pub struct HotCounters {
    pub events_read: IntCounter,
    pub events_write: IntCounter,
    pub events_close: IntCounter,
    pub pairs_server: IntCounter,
    pub pairs_client: IntCounter,
}

impl HotCounters {
    fn new(capture_events: &IntCounterVec, http_pairs: &IntCounterVec) -> HotCounters {
        HotCounters {
            events_read: capture_events.with_label_values(&["read"]),
            events_write: capture_events.with_label_values(&["write"]),
            events_close: capture_events.with_label_values(&["close"]),
            pairs_server: http_pairs.with_label_values(&["server"]),
            pairs_client: http_pairs.with_label_values(&["client"]),
        }
    }
}

fn counter_vec(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    reg.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge_vec(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    reg.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn counter(reg: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    reg.register(Box::new(c.clone())).expect("unique metric");
    c
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let r = &registry;
        let http_pairs = counter_vec(
            r,
            "sensor_http_pairs_total",
            "HTTP request/response pairs reassembled.",
            &["role"],
        );
        let capture_events = counter_vec(
            r,
            "sensor_capture_events_total",
            "Capture events received from the kernel, by direction (read, write, close).",
            &["direction"],
        );
        let m = Metrics {
            hot: HotCounters::new(&capture_events, &http_pairs),
            http_pairs,
            capture_events,
            credential_leaks: counter_vec(
                r,
                "sensor_credential_leaks_total",
                "Responses that gave back a credential their request carried (one per pair, credential and sink).",
                &["role", "source", "type", "sink", "exposure"],
            ),
            masked_echoes: counter_vec(
                r,
                "sensor_masked_echoes_total",
                "Responses that echoed a request credential masked (not a leak).",
                &["role", "sink"],
            ),
            http_parse_errors: counter_vec(
                r,
                "sensor_http_parse_errors_total",
                "Messages or connections the HTTP stage could not follow, by reason: some reasons drop one message and parsing goes on, others give the connection up (README).",
                &["reason"],
            ),
            http_resyncs: counter_vec(
                r,
                "sensor_http_resyncs_total",
                "HTTP/1.x directions that found a message start again and are followed from it, by what they waited after: gap (a capture hole), joined_midway (a connection the sensor joined in the middle of a message, e.g. open mid-download when it started).",
                &["after"],
            ),
            http_interim_heads_not_kept: counter(
                r,
                "sensor_http_interim_heads_not_kept_total",
                "Interim (1xx) response heads whose headers were not kept to be searched: past 4 per response or 16 KiB.",
            ),
            capture_lost_events: counter(
                r,
                "sensor_capture_lost_events_total",
                "Events the kernel side could not deliver (ring buffer full).",
            ),
            capture_truncated_bytes: counter(
                r,
                "sensor_capture_truncated_bytes_total",
                "Plaintext bytes not captured: past the per-call cap or lost to a full ring buffer.",
            ),
            capture_bad_events: counter_vec(
                r,
                "sensor_capture_bad_events_total",
                "Malformed capture events (kernel or recording), by reason.",
                &["reason"],
            ),
            capture_muted_calls: counter(
                r,
                "sensor_capture_muted_calls_total",
                "TLS calls of connections the sensor has no use for (a side --role leaves out, traffic it stopped parsing: not HTTP, WebSocket, HTTP/2 joined midway): counted in the kernel, not copied.",
            ),
            connections_active: {
                let g = IntGauge::new("sensor_connections_active", "TLS connections being tracked.").expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            connections_evicted: counter_vec(
                r,
                "sensor_connections_evicted_total",
                "Connections dropped from the bounded connection table, by reason (lru, idle, process_exit).",
                &["reason"],
            ),
            body_bytes_over_cap: counter(
                r,
                "sensor_http_body_bytes_over_cap_total",
                "Body bytes seen but not kept because the body cap was reached.",
            ),
            request_body_bytes_not_kept: counter(
                r,
                "sensor_http_request_body_bytes_not_kept_total",
                "Request body bytes seen but not kept: requests keep their first 64 KiB (max_request_body_kept) for credential extraction.",
            ),
            decompress_cap_hits: counter_vec(
                r,
                "sensor_decompress_cap_hits_total",
                "Response bodies whose decompressed size hit the cap, by content encoding.",
                &["content_encoding"],
            ),
            credentials_dropped: counter(
                r,
                "sensor_credentials_dropped_total",
                "Credentials not searched for because their request carried more than 64 (the best 64 are kept: Authorization, credential headers, query and body fields, then cookies).",
            ),
            matcher_cache_lookups: counter_vec(
                r,
                "sensor_leak_matcher_cache_lookups_total",
                "Leak matchers looked up by credential set, by result: hit (reused), built_cached (built and kept: second sighting), built_once (first sighting: built for one pair, not kept).",
                &["result"],
            ),
            matcher_cache_dropped: counter_vec(
                r,
                "sensor_leak_matcher_cache_dropped_total",
                "Cached leak matchers dropped (zeroized), by reason: lru (the cache was full), idle (unused too long).",
                &["reason"],
            ),
            matcher_cache_entries: {
                let g = IntGauge::new(
                    "sensor_leak_matcher_cache_entries",
                    "Leak matchers cached now (credential sets seen at least twice recently).",
                )
                .expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            tls_attachments: gauge_vec(
                r,
                "sensor_tls_attachments",
                "TLS libraries the probes are attached to, by library and probe mode.",
                &["library", "mode"],
            ),
            tls_released: counter(
                r,
                "sensor_tls_released_total",
                "TLS libraries whose probes were released because no process had mapped them for 60 s (a file mapped again later is attached again).",
            ),
            attach_errors: counter_vec(r, "sensor_attach_errors_total", "Failed attach attempts, by reason.", &["reason"]),
            blind_processes: gauge_vec(
                r,
                "sensor_blind_processes",
                "Processes with TCP sockets whose TLS the sensor cannot see, by reason; expected=\"true\" for those on the expected-blind list (a node's own agents).",
                &["reason", "expected"],
            ),
            blind_processes_seen: counter_vec(
                r,
                "sensor_blind_processes_seen_total",
                "Processes found blind since the sensor started, each once per reason: by the periodic scan, or shortly after their exec (short-lived ones the scan misses); expected as in sensor_blind_processes.",
                &["reason", "expected"],
            ),
            build_info: gauge_vec(r, "sensor_build_info", "Always 1; the sensor's version.", &["version"]),
            findings_dropped: counter(
                r,
                "sensor_findings_dropped_total",
                "Findings not delivered to a slow live-API subscriber (those not written to --findings are in sensor_output_dropped_total).",
            ),
            output_dropped: counter_vec(
                r,
                "sensor_output_dropped_total",
                "JSON lines (findings, pairs) or recording records (record) not written, by output: its writer was behind (a reader that does not read, a slow disk: 64 MiB queued) or the write failed (disk full).",
                &["output"],
            ),
            output_reopen_failures: counter_vec(
                r,
                "sensor_output_reopen_failures_total",
                "Output files (findings, pairs) that could not be reopened on SIGHUP, by output: the file opened before is still written.",
                &["output"],
            ),
            registry,
        };
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        // Both series from the start, so an alert on their increase sees the first drop.
        for output in ["findings", "pairs", "record"] {
            m.output_dropped.with_label_values(&[output]);
        }
        for output in ["findings", "pairs"] {
            m.output_reopen_failures.with_label_values(&[output]);
        }
        m
    }

    /// Prometheus text exposition of every metric (plus process metrics when registered).
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let enc = TextEncoder::new();
        let mut families = self.registry.gather();
        exact_process_cpu_seconds(&mut families);
        let _ = enc.encode(&families, &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// The name of the process collector's CPU counter.
const PROCESS_CPU_SECONDS: &str = "process_cpu_seconds_total";

/// Sets `process_cpu_seconds_total`, when the process collector is
/// registered, to the exact CPU time: the prometheus crate's collector
/// exports whole seconds (an IntCounter of ticks / CLK_TCK rounded down: 163
/// ticks were 1), which makes `rate()` over a few minutes a staircase.  Name,
/// help and type stay the crate's; the other `process_*` metrics are its own.
fn exact_process_cpu_seconds(families: &mut [prometheus::proto::MetricFamily]) {
    let Some(family) = families
        .iter_mut()
        .find(|f| f.name() == PROCESS_CPU_SECONDS)
    else {
        return;
    };
    let Some(seconds) = self_cpu_ticks().map(|t| cpu_seconds(t, clock_ticks_per_second())) else {
        return;
    };
    for m in family.mut_metric() {
        let mut c = prometheus::proto::Counter::default();
        c.set_value(seconds);
        m.set_counter(c);
    }
}

/// CPU seconds of `ticks` clock ticks at `ticks_per_second` (CLK_TCK).
fn cpu_seconds(ticks: u64, ticks_per_second: u64) -> f64 {
    ticks as f64 / ticks_per_second.max(1) as f64
}

/// CLK_TCK, the unit of /proc's CPU times (100 on Linux).
fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf reads a constant of the system; no pointers.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as u64
    } else {
        100
    }
}

/// User plus system CPU time of this process, in clock ticks, from
/// /proc/self/stat (fields 14 and 15, counted after the `(comm)`, which may
/// hold spaces and parentheses).
fn self_cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_stat_cpu_ticks(&stat)
}

fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, after_comm) = stat.rsplit_once(')')?;
    // Field 3 (state) is the first after the comm: utime is field 14.
    let mut fields = after_comm.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Folds the leak matcher cache's own counts into the metrics (the cache
/// counts under its lock; the metrics get the increase since the last call).
#[derive(Default)]
pub struct MatcherCacheExport {
    last: crate::leak::CacheStats,
}

impl MatcherCacheExport {
    pub fn export(&mut self, m: &Metrics, now: crate::leak::CacheStats, entries: usize) {
        let c = now;
        let l = self.last;
        // A smaller count means a new cache (the detector was reloaded).
        let l = if c.hits < l.hits
            || c.misses < l.misses
            || c.first_seen < l.first_seen
            || c.evictions < l.evictions
            || c.expired < l.expired
        {
            crate::leak::CacheStats::default()
        } else {
            l
        };
        let built_once = c.first_seen - l.first_seen;
        let built_cached = (c.misses - l.misses).saturating_sub(built_once);
        for (label, n) in [
            ("hit", c.hits - l.hits),
            ("built_cached", built_cached),
            ("built_once", built_once),
        ] {
            m.matcher_cache_lookups
                .with_label_values(&[label])
                .inc_by(n);
        }
        for (label, n) in [
            ("lru", c.evictions - l.evictions),
            ("idle", c.expired - l.expired),
        ] {
            m.matcher_cache_dropped
                .with_label_values(&[label])
                .inc_by(n);
        }
        m.matcher_cache_entries.set(entries as i64);
        self.last = c;
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod matcher_cache_export_tests {
    use super::*;
    use crate::leak::CacheStats;

    fn get(m: &Metrics, label: &str) -> u64 {
        m.matcher_cache_lookups.with_label_values(&[label]).get()
    }

    #[test]
    fn increases_are_added_and_a_new_cache_starts_over() {
        let m = Metrics::new();
        let mut e = MatcherCacheExport::default();
        let s = |hits, misses, first_seen, evictions, expired| CacheStats {
            hits,
            misses,
            first_seen,
            evictions,
            expired,
        };
        e.export(&m, s(5, 4, 3, 1, 0), 2);
        e.export(&m, s(9, 6, 4, 1, 2), 3);
        assert_eq!(
            (
                get(&m, "hit"),
                get(&m, "built_cached"),
                get(&m, "built_once")
            ),
            (9, 2, 4)
        );
        assert_eq!(m.matcher_cache_dropped.with_label_values(&["lru"]).get(), 1);
        assert_eq!(
            m.matcher_cache_dropped.with_label_values(&["idle"]).get(),
            2
        );
        assert_eq!(m.matcher_cache_entries.get(), 3);
        // Reload: the new detector's cache counts from zero again.
        e.export(&m, s(1, 1, 1, 0, 0), 0);
        assert_eq!((get(&m, "hit"), get(&m, "built_once")), (10, 5));
        assert!(m
            .render()
            .contains("sensor_leak_matcher_cache_lookups_total{result=\"hit\"} 10"));
    }
}

#[cfg(test)]
mod process_cpu_tests {
    use super::*;

    #[test]
    fn cpu_seconds_are_exact() {
        assert_eq!(cpu_seconds(163, 100), 1.63);
        assert_eq!(cpu_seconds(0, 100), 0.0);
        assert_eq!(cpu_seconds(250, 250), 1.0);
        // A comm with spaces and a parenthesis; utime 120, stime 43.
        let stat = "4242 (my (odd) comm) S 1 4242 4242 0 -1 4194560 500 0 0 0 120 43 0 0 20 0 9 0 12345 1000000 200 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(163));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    fn exported_cpu_seconds(text: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix("process_cpu_seconds_total "))
            .expect("process_cpu_seconds_total exported")
            .trim()
            .parse()
            .unwrap()
    }

    #[test]
    fn process_cpu_seconds_are_not_whole_seconds() {
        let m = Metrics::new();
        m.register_process_collector();
        let hz = clock_ticks_per_second();
        // Burn ~150 ms of CPU, and on to a time that is no whole second.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        let before_ticks = loop {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            let ticks = self_cpu_ticks().unwrap();
            if start.elapsed() >= std::time::Duration::from_millis(150) && !ticks.is_multiple_of(hz)
            {
                break ticks;
            }
        };
        let before = cpu_seconds(before_ticks, hz);
        let text = m.render();
        let after = cpu_seconds(self_cpu_ticks().unwrap(), hz);
        let exported = exported_cpu_seconds(&text);
        assert!(
            before <= exported && exported <= after,
            "exported {exported}, CPU time between {before} and {after}"
        );
        assert!(exported >= 0.1, "{exported}");
        // The other process metrics are still the crate's.
        for name in [
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_threads",
        ] {
            assert!(text.contains(name), "{name} missing");
        }
        assert!(text.contains("# TYPE process_cpu_seconds_total counter"));
        assert!(text.contains(
            "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds."
        ));
    }
}
