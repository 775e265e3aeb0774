//! `evloop serve --metrics ADDR`: what a scrape says after real traffic,
//! the readiness probe through a drain, the endpoint's refusals and its
//! time limits, and the real Prometheus tools: `promtool check metrics`
//! accepts a scrape, and a Prometheus server scrapes the endpoint.
//!
//! The Prometheus tools (Debian package `prometheus`) may be missing on a
//! developer's machine: those tests say so and pass, unless
//! `EVLOOP_REQUIRE_PROMETHEUS` is set (CI sets it): then they fail.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Io, LIMIT, ServerProcess, TempDir, connect, installed, per_driver};

/// How long the endpoint gives a client to send its request (the
/// program's own limit).
const ENDPOINT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the test gives a Prometheus server to start and to scrape.
const PROMETHEUS_LIMIT: Duration = Duration::from_secs(60);

// ---- talking to the endpoint ---------------------------------------------------

/// `evloop serve ARGS --metrics 127.0.0.1:0` on `io`; returns the server
/// and the metrics address its log names, once `/ready` says it serves
/// (its listeners are logged just before its loops start).
#[track_caller]
fn start(io: Io, args: &[&str]) -> (ServerProcess, SocketAddr) {
    let mut args = args.to_vec();
    args.extend(["--metrics", "127.0.0.1:0"]);
    let mut server = ServerProcess::start(io, &args);
    let line = server.wait_for_line("metrics: listening on ");
    let metrics = metrics_address(&line);
    let deadline = Instant::now() + LIMIT;
    loop {
        let ready = get(metrics, "/ready");
        match ready.status {
            200 => return (server, metrics),
            503 => assert_eq!(ready.body, "not ready: bound\n"),
            _ => panic!("/ready: {ready:?}"),
        }
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The address in a `metrics: listening on ADDR` line.
#[track_caller]
fn metrics_address(line: &str) -> SocketAddr {
    let after = line.split("metrics: listening on ").nth(1).unwrap();
    let addr = after.split_whitespace().next().unwrap();
    addr.parse()
        .unwrap_or_else(|e| panic!("{addr} in {line:?}: {e}"))
}

/// An HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

/// Sends `request` as it is, and reads the answer until the server closes.
#[track_caller]
fn exchange(addr: SocketAddr, request: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(addr).expect("connect to the endpoint");
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    stream.set_write_timeout(Some(LIMIT)).unwrap();
    stream.write_all(request).expect("send the request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the answer");
    let raw = String::from_utf8(raw).expect("a UTF-8 answer");
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {raw:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    Answer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// `GET path` (HTTP/1.0: the answer's body runs to the close).
#[track_caller]
fn get(addr: SocketAddr, path: &str) -> Answer {
    exchange(
        addr,
        format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes(),
    )
}

/// A scrape: each series (`name{labels}`) with its value.
#[derive(Debug)]
struct Scrape {
    text: String,
    series: BTreeMap<String, f64>,
}

impl Scrape {
    /// The value of `series`, which must be there.
    #[track_caller]
    fn get(&self, series: &str) -> f64 {
        *self
            .series
            .get(series)
            .unwrap_or_else(|| panic!("no {series} in:\n{}", self.text))
    }
}

/// Scrapes `/metrics`.
#[track_caller]
fn scrape(addr: SocketAddr) -> Scrape {
    let answer = get(addr, "/metrics");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(
        answer
            .head
            .contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
        "{}",
        answer.head
    );
    let series = answer
        .body
        .lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect();
    Scrape {
        text: answer.body,
        series,
    }
}

/// Scrapes until `done` holds of a scrape; returns that scrape.
#[track_caller]
fn scrape_until(addr: SocketAddr, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + LIMIT;
    loop {
        let scrape = scrape(addr);
        if done(&scrape) {
            return scrape;
        }
        assert!(
            Instant::now() < deadline,
            "never {what}; last scrape:\n{}",
            scrape.text
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every per-loop series (`evloop_loop_NAME{loop="N",…}`) summed over the
/// loops equals its total (`evloop_NAME{…}`); returns how many totals
/// were checked.
#[track_caller]
fn assert_loops_sum_to_totals(scrape: &Scrape) -> usize {
    let mut sums: BTreeMap<String, f64> = BTreeMap::new();
    for (series, value) in &scrape.series {
        let Some(rest) = series.strip_prefix("evloop_loop_") else {
            continue;
        };
        // Drop the loop label: `loop="N"` comes first.
        let (name, labels) = rest.split_once('{').unwrap();
        let labels = labels.trim_end_matches('}');
        let others: Vec<&str> = labels
            .split(',')
            .filter(|label| !label.starts_with("loop="))
            .collect();
        let total = if others.is_empty() {
            format!("evloop_{name}")
        } else {
            format!("evloop_{name}{{{}}}", others.join(","))
        };
        *sums.entry(total).or_default() += value;
    }
    for (total, sum) in &sums {
        assert_eq!(scrape.get(total), *sum, "{total}:\n{}", scrape.text);
    }
    sums.len()
}

// ---- the scrape after traffic --------------------------------------------------

per_driver!(a_scrape_counts_what_the_clients_did);
fn a_scrape_counts_what_the_clients_did(io: Io) {
    let (server, metrics) = start(io, &["echo", "--threads", "2"]);
    let before = scrape(metrics);
    assert_eq!(before.get("evloop_connections_accepted_total"), 0.0);
    assert_eq!(before.get("evloop_loops"), 2.0);
    assert_eq!(before.get("evloop_state{state=\"serving\"}"), 1.0);
    assert_eq!(before.get("evloop_state{state=\"draining\"}"), 0.0);
    let version = format!("version=\"{}\"", env!("CARGO_PKG_VERSION"));
    assert!(
        before
            .text
            .contains(&format!("evloop_build_info{{{version}")),
        "{}",
        before.text
    );
    let driver = match io {
        Io::Epoll => format!("evloop_driver_info{{driver=\"{}", evloop::poll::BACKEND),
        Io::Uring => "evloop_driver_info{driver=\"io_uring".to_owned(),
    };
    assert!(before.text.contains(&driver), "{}", before.text);

    // Two clients echo 1000 and 500 bytes; the first stays open.
    let mut held = connect(server.addr);
    let mut gone = connect(server.addr);
    for (client, size) in [(&mut held, 1000), (&mut gone, 500)] {
        let data = vec![b'e'; size];
        client.write_all(&data).unwrap();
        let mut back = vec![0; size];
        client.read_exact(&mut back).expect("the echo");
        assert_eq!(back, data);
    }
    // The second half-closes: it gets EOF, and the server closes it.
    gone.shutdown(Shutdown::Write).unwrap();
    assert_eq!(gone.read(&mut [0; 16]).unwrap(), 0);
    drop(gone);
    // A loop counts what it sent once the send returns, which can be
    // after the client has read it: wait for the counts, not the clients.
    let during = scrape_until(metrics, "1500 bytes sent and a client closed", |s| {
        s.get("evloop_bytes_sent_total") == 1500.0
            && s.get("evloop_connections_closed_total{reason=\"peer\"}") == 1.0
    });
    assert_eq!(during.get("evloop_connections_accepted_total"), 2.0);
    assert_eq!(during.get("evloop_connections_open"), 1.0);
    assert_eq!(during.get("evloop_bytes_received_total"), 1500.0);
    assert_eq!(during.get("evloop_connections_paused"), 0.0);
    assert_eq!(during.get("evloop_accept_errors_total"), 0.0);
    for reason in ["reset", "idle", "limit", "shutdown", "error", "service"] {
        let series = format!("evloop_connections_closed_total{{reason=\"{reason}\"}}");
        assert_eq!(during.get(&series), 0.0, "{series}");
    }
    // Totals and loops agree, for every family kept per loop.
    assert!(assert_loops_sum_to_totals(&during) >= 12);
    assert!(
        during
            .series
            .contains_key("evloop_loop_connections_open{loop=\"1\"}")
    );

    held.shutdown(Shutdown::Write).unwrap();
    assert_eq!(held.read(&mut [0; 16]).unwrap(), 0);
    drop(held);
    let after = scrape_until(metrics, "both clients closed", |s| {
        s.get("evloop_connections_open") == 0.0
    });
    assert_eq!(
        after.get("evloop_connections_closed_total{reason=\"peer\"}"),
        2.0
    );
    assert_loops_sum_to_totals(&after);
    assert_eq!(after.get("evloop_log_lines_dropped_total"), 0.0);
    assert!(after.get("process_open_fds") > 0.0);
    assert!(after.get("process_resident_memory_bytes") > 0.0);
    assert!(after.get("process_max_fds") >= after.get("process_open_fds"));
}

// ---- readiness -----------------------------------------------------------------

per_driver!(ready_while_serving_and_not_while_draining);
fn ready_while_serving_and_not_while_draining(io: Io) {
    let (mut server, metrics) = start(io, &["echo", "--threads", "1"]);
    let ready = get(metrics, "/ready");
    assert_eq!(ready.status, 200, "{ready:?}");
    let mut held = connect(server.addr);
    held.write_all(b"hold").unwrap();
    held.read_exact(&mut [0; 4]).unwrap();
    // The drain waits for the held client: the server is draining until it
    // closes.
    server.signal("TERM");
    let deadline = Instant::now() + LIMIT;
    loop {
        match TcpStream::connect(metrics) {
            // The endpoint may be gone once the server stops: as good as 503.
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => break,
            Err(e) => panic!("connect to the endpoint: {e}"),
            Ok(_) => {
                let ready = get(metrics, "/ready");
                if ready.status == 503 {
                    assert_eq!(ready.body, "not ready: draining\n");
                    let scrape = scrape(metrics);
                    assert_eq!(scrape.get("evloop_state{state=\"draining\"}"), 1.0);
                    assert_eq!(scrape.get("evloop_state{state=\"serving\"}"), 0.0);
                    assert_eq!(scrape.get("evloop_connections_open"), 1.0);
                    break;
                }
                assert_eq!(ready.status, 200, "{ready:?}");
            }
        }
        assert!(
            Instant::now() < deadline,
            "/ready stays 200 during the drain"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Still served while draining; closing it ends the drain.
    held.write_all(b"more").unwrap();
    held.read_exact(&mut [0; 4]).unwrap();
    drop(held);
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(0), "{status}");
}

// ---- the endpoint's refusals and limits ----------------------------------------

#[test]
fn the_endpoint_refuses_what_it_does_not_serve() {
    let (_server, metrics) = start(Io::Epoll, &["echo", "--threads", "1"]);
    let missing = get(metrics, "/");
    assert_eq!(missing.status, 404, "{missing:?}");
    let post = exchange(
        metrics,
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(post.status, 405, "{post:?}");
    assert!(post.head.contains("\r\nAllow: GET, HEAD"), "{}", post.head);
    let garbage = exchange(metrics, b"\x16\x03\x01 hello there\r\n\r\n");
    assert_eq!(garbage.status, 400, "{garbage:?}");
    assert!(
        garbage.head.contains("\r\nConnection: close"),
        "{garbage:?}"
    );
    // More than 8 KiB of headers, sent at once; then more than 32 headers.
    let mut huge = b"GET /metrics HTTP/1.1\r\n".to_vec();
    for i in 0..10 {
        huge.extend_from_slice(format!("X-Padding-{i}: {}\r\n", "p".repeat(1000)).as_bytes());
    }
    huge.extend_from_slice(b"\r\n");
    let too_long = exchange(metrics, &huge);
    assert_eq!(too_long.status, 431, "{too_long:?}");
    let mut many = b"GET /metrics HTTP/1.1\r\n".to_vec();
    for i in 0..40 {
        many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let too_many = exchange(metrics, &many);
    assert_eq!(too_many.status, 431, "{too_many:?}");
    // HEAD: the headers of a GET, no body.
    let head = exchange(metrics, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(head.status, 200, "{head:?}");
    assert!(head.body.is_empty(), "{head:?}");
    assert!(head.head.contains("\r\nContent-Length: "), "{head:?}");
    // After all that, still answering.
    assert_eq!(scrape(metrics).get("evloop_loops"), 1.0);
}

#[test]
fn a_silent_client_holds_up_the_next_scrape_for_the_timeout_at_most() {
    let (_server, metrics) = start(Io::Epoll, &["echo", "--threads", "1"]);
    // Connects and sends nothing. The endpoint answers one connection at
    // a time, in the order the kernel queued them: this one first.
    let mut silent = TcpStream::connect(metrics).unwrap();
    silent.set_read_timeout(Some(LIMIT)).unwrap();
    let started = Instant::now();
    let scrape = scrape(metrics);
    let waited = started.elapsed();
    assert_eq!(scrape.get("evloop_loops"), 1.0);
    // Held up by the silent client until its time ran out, and no longer
    // (with room for a loaded machine, and far below LIMIT).
    assert!(
        waited > ENDPOINT_TIMEOUT / 2,
        "the scrape came first? it waited {waited:?}"
    );
    assert!(
        waited < ENDPOINT_TIMEOUT + Duration::from_secs(3),
        "the scrape waited {waited:?}"
    );
    // The silent client was closed without an answer.
    let mut rest = Vec::new();
    match silent.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "{rest:?}"),
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
    }
}

#[test]
fn a_metrics_address_in_use_stops_the_start_up_naming_it() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (status, stderr, _) = common::run_to_exit(&[
        "serve",
        "echo",
        "--listen",
        "127.0.0.1:0",
        "--io",
        "epoll",
        "--metrics",
        &addr,
    ]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("evloop: --metrics {addr}: address in use")),
        "{stderr}"
    );
    assert!(!stderr.contains("listening on"), "{stderr}");
    let (status, stderr, _) = common::run_to_exit(&["serve", "--metrics", "unix:/tmp/m.sock"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("listens on TCP"), "{stderr}");
}

// ---- counters kept outside the loops -------------------------------------------

/// Kills the child on drop, if it still runs.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn log_lines_dropped_on_a_closed_log_are_counted() {
    let child = common::evloop()
        .args(["serve", "log", "--io", "epoll", "--threads", "1"])
        .args(["--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn evloop");
    let mut child = KillOnDrop(child);
    // Read up to the metrics line, then close the log pipe: every line
    // after fails (EPIPE) and is dropped.
    let mut lines = BufReader::new(child.0.stderr.take().unwrap()).lines();
    let (mut service, mut metrics) = (None, None);
    while metrics.is_none() {
        let line = lines.next().expect("a log line").unwrap();
        if let Some(addr) = line.split("log: listening on ").nth(1) {
            service = Some(addr.split_whitespace().next().unwrap().to_owned());
        }
        if line.contains("metrics: listening on ") {
            metrics = Some(metrics_address(&line));
        }
    }
    drop(lines);
    let (service, metrics) = (service.unwrap(), metrics.unwrap());
    assert_eq!(scrape(metrics).get("evloop_log_lines_dropped_total"), 0.0);
    // Each connection logs its connect, read and disconnect.
    for _ in 0..3 {
        let mut client = connect(service.parse().unwrap());
        client.write_all(b"x").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let _ = client.read_to_end(&mut Vec::new());
    }
    scrape_until(metrics, "log lines counted as dropped", |s| {
        s.get("evloop_log_lines_dropped_total") >= 3.0
    });
}

#[test]
fn the_http_service_serves_its_access_log_drops() {
    let (_server, metrics) = start(Io::Epoll, &["http", "--threads", "1", "--access-log", "-"]);
    let logged = scrape(metrics);
    assert_eq!(
        logged.get("evloop_http_access_log_lines_dropped_total"),
        0.0
    );
    let (_server, metrics) = start(Io::Epoll, &["http", "--threads", "1"]);
    let unlogged = scrape(metrics);
    assert!(
        !unlogged.text.contains("access_log"),
        "no access log, no family:\n{}",
        unlogged.text
    );
}

// ---- the real Prometheus tools -------------------------------------------------

/// Whether `promtool` and `prometheus` are here; where they are not, says
/// the test is skipped, or fails if `EVLOOP_REQUIRE_PROMETHEUS` is set.
fn prometheus_available() -> bool {
    let missing: Vec<&str> = ["promtool", "prometheus"]
        .into_iter()
        .filter(|tool| !installed(tool))
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("EVLOOP_REQUIRE_PROMETHEUS").is_none(),
        "{} not installed (Debian: apt-get install prometheus; .ci/run does)",
        missing.join(" and ")
    );
    eprintln!(
        "skipped: {} not installed (set EVLOOP_REQUIRE_PROMETHEUS to fail instead)",
        missing.join(" and ")
    );
    false
}

per_driver!(promtool_accepts_a_scrape);
fn promtool_accepts_a_scrape(io: Io) {
    if !prometheus_available() {
        return;
    }
    // The http service with an access log: every family there is.
    let (server, metrics) = start(io, &["http", "--threads", "2", "--access-log", "-"]);
    let page = get(server.addr, "/");
    assert_eq!(page.status, 200, "{page:?}");
    let text = scrape_until(metrics, "the request counted", |s| {
        s.get("evloop_bytes_sent_total") > 0.0
    })
    .text;
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = promtool.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && said.trim().is_empty(),
        "promtool check metrics: {}: {said}\nthe scrape:\n{text}",
        output.status
    );
}

/// A Prometheus server of the test's own, scraping one target every
/// second; killed on drop.
struct Prometheus {
    process: KillOnDrop,
    addr: SocketAddr,
    log: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus on a free loopback port, scraping `target`, with
    /// its data and log under `dir`; waits until it is ready. A port taken
    /// between choosing and binding it is tried again with another.
    #[track_caller]
    fn start(dir: &Path, target: SocketAddr) -> Prometheus {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: evloop\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let deadline = Instant::now() + PROMETHEUS_LIMIT;
        for attempt in 0.. {
            let addr = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .unwrap();
            let log = dir.join(format!("prometheus-{attempt}.log"));
            let child = Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join(format!("data-{attempt}")).display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .expect("start prometheus");
            let mut prometheus = Prometheus {
                process: KillOnDrop(child),
                addr,
                log,
            };
            loop {
                if let Some(status) = prometheus.process.0.try_wait().unwrap() {
                    let log = prometheus.log_text();
                    assert!(
                        log.contains("address already in use") && attempt < 5,
                        "prometheus exited ({status}):\n{log}"
                    );
                    break; // its port was taken: another
                }
                if TcpStream::connect(addr).is_ok() && get(addr, "/-/ready").status == 200 {
                    return prometheus;
                }
                assert!(
                    Instant::now() < deadline,
                    "prometheus not ready in {PROMETHEUS_LIMIT:?}:\n{}",
                    prometheus.log_text()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        unreachable!("the loop returns or fails")
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The value of the instant query `query`'s single series, if it has
    /// one now.
    #[track_caller]
    fn query(&self, query: &str) -> Option<f64> {
        let encoded: String = query
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b == b'_' {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let answer = get(self.addr, &format!("/api/v1/query?query={encoded}"));
        assert_eq!(answer.status, 200, "{query}: {answer:?}");
        let json: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(json["status"], "success", "{query}: {json}");
        let result = json["data"]["result"].as_array().unwrap();
        assert!(result.len() <= 1, "{query}: {json}");
        result.first().map(|series| {
            series["value"][1]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{query}: {json}"))
        })
    }

    /// Queries `query` until `done` holds of its value; returns it.
    #[track_caller]
    fn wait_for(&self, query: &str, done: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + PROMETHEUS_LIMIT;
        loop {
            let value = self.query(query);
            if let Some(value) = value.filter(|&v| done(v)) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "{query} is {value:?} after {PROMETHEUS_LIMIT:?}; prometheus log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[test]
fn a_prometheus_server_scrapes_the_endpoint() {
    if !prometheus_available() {
        return;
    }
    let dir = TempDir::new("prometheus");
    let (server, metrics) = start(Io::Epoll, &["echo", "--threads", "2"]);
    let prometheus = Prometheus::start(&dir.0, metrics);
    prometheus.wait_for("up{job=\"evloop\"}", |up| up == 1.0);
    // Scraped at least once, before any traffic.
    assert_eq!(prometheus.query("evloop_bytes_received_total"), Some(0.0));
    let mut client = connect(server.addr);
    client.write_all(&[b'p'; 2048]).unwrap();
    client.read_exact(&mut [0; 2048]).unwrap();
    prometheus.wait_for("evloop_bytes_received_total", |v| v == 2048.0);
    prometheus.wait_for(
        "sum(evloop_loop_connections_accepted_total{job=\"evloop\"})",
        |v| v == 1.0,
    );
    drop(prometheus);
}
