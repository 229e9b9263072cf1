//! ALB-style access logs: takes one [`Entry`] per finished request and writes it as one
//! JSON object per line to stdout or a file.
//!
//! The request path only does a non-blocking `try_send` into a bounded queue
//! ([`AccessLog::log`]); a writer task started by [`AccessLog::spawn`] formats, batches
//! and flushes. When the writer falls behind, entries are dropped and counted rather than
//! slowing requests down.

use std::fmt;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, oneshot};

/// Entries the queue holds before [`AccessLog::log`] starts dropping.
const QUEUE_CAPACITY: usize = 64 * 1024;
/// Entries the writer takes off the queue per wake-up.
const BATCH: usize = 256;
/// Size of the writer's buffer; it is flushed when full or when the queue runs empty.
const BUFFER_BYTES: usize = 64 * 1024;

/// Where access logs go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Output {
    /// No access log; [`AccessLog::spawn`] returns `None`.
    #[default]
    Off,
    /// Standard output.
    Stdout,
    /// A file, created if missing and appended to.
    File(PathBuf),
}

/// One request's log record (ALB access-log fields).
#[derive(Debug, Clone)]
pub struct Entry {
    /// ALB's `type`: `http`, `https`, `h2`, `grpcs`, `ws`, `wss`; `h2c` and `grpc` for
    /// HTTP/2 in the clear, which ALB does not take.
    pub kind: &'static str,
    /// When the response finished or the request ended.
    pub time: SystemTime,
    /// The listener's name (ALB's `elb` field).
    pub listener: String,
    /// The client's address, as seen by the listener.
    pub client: SocketAddr,
    /// The target the request was forwarded to; `None` when it never reached one.
    pub target: Option<SocketAddr>,
    /// Seconds from receiving the request to sending it to a target; `-1` when not
    /// applicable (ALB convention).
    pub request_processing_time: f64,
    /// Seconds from sending the request to the target to its response headers; `-1` when
    /// not applicable.
    pub target_processing_time: f64,
    /// Seconds from the target's response headers to the last byte sent to the client; `-1`
    /// when not applicable.
    pub response_processing_time: f64,
    /// The status code the proxy sent to the client.
    pub elb_status_code: u16,
    /// The status code the target answered with; `None` when there was no answer.
    pub target_status_code: Option<u16>,
    /// Bytes received from the client (headers and body).
    pub received_bytes: u64,
    /// Bytes sent to the client (headers and body).
    pub sent_bytes: u64,
    /// The request line as ALB writes it: `"GET http://host:port/path?query HTTP/1.1"`.
    pub request: String,
    /// The client's `User-Agent`, empty when absent.
    pub user_agent: String,
    /// The TLS cipher suite (OpenSSL's name), `-` when not over TLS.
    pub ssl_cipher: &'static str,
    /// `TLSv1.2` or `TLSv1.3`, `-` when not over TLS.
    pub ssl_protocol: &'static str,
    /// The server name the client sent in its TLS handshake (SNI), if any.
    pub domain_name: Option<Arc<str>>,
    /// The `X-Amzn-Trace-Id` sent to the target.
    pub trace_id: String,
    /// The priority of the rule that matched; `None` for the listener's default action.
    pub matched_rule_priority: Option<u32>,
    /// The target group the request was routed to, if any.
    pub target_group: Option<String>,
    /// Why the proxy answered on its own (for example a metric `reason` label), if it did.
    pub error_reason: Option<&'static str>,
}

/// Failure to start the access log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The log file could not be created or opened for appending.
    #[error("cannot open access log file {}", path.display())]
    Open {
        /// The file that was asked for.
        path: PathBuf,
        /// Why opening it failed.
        #[source]
        source: std::io::Error,
    },
    /// Standard output could not be duplicated for the writer (out of file descriptors).
    #[error("cannot open standard output for the access log")]
    Stdout(#[source] std::io::Error),
}

/// A handle to the log writer task. Cheap to clone.
///
/// The writer task stops, after writing and flushing what is queued, once every handle
/// is dropped.
#[derive(Debug, Clone)]
pub struct AccessLog {
    /// Bounded queue to the writer task; [`AccessLog::log`] only ever `try_send`s.
    tx: mpsc::Sender<Msg>,
    /// Entries refused because the queue was full; read by metrics via [`AccessLog::dropped`].
    dropped: Arc<AtomicU64>,
}

// Boxing `Entry` would shrink the queue's slots but cost one allocation per request on
// the hot path; a slot is `Entry`-sized either way once the queue is busy.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Msg {
    Entry(Entry),
    /// Flush everything before this message, then answer.
    Flush(oneshot::Sender<()>),
    /// Flush, then open the log file again by its path (after logrotate moved it).
    Reopen,
}

/// What the writer task writes to.
type Sink = Box<dyn AsyncWrite + Send + Unpin>;

impl AccessLog {
    /// Starts the writer task; `Output::Off` returns `Ok(None)`.
    ///
    /// A file is opened (created if missing, appended to) before this returns, so a bad
    /// path is reported at start-up as [`Error::Open`].
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    pub fn spawn(output: &Output) -> Result<Option<AccessLog>, Error> {
        Self::spawn_with_capacity(output, QUEUE_CAPACITY)
    }

    /// [`AccessLog::spawn`] with a queue of `capacity` entries (tests use a tiny one).
    pub(crate) fn spawn_with_capacity(
        output: &Output,
        capacity: usize,
    ) -> Result<Option<AccessLog>, Error> {
        let sink: Sink = match output {
            Output::Off => return Ok(None),
            Output::Stdout => {
                // A duplicate of fd 1 as a file: the crate's tokio has no `io-std` feature,
                // and tokio writes a `File` from its blocking pool just as it would stdout.
                let fd = std::io::stdout()
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(Error::Stdout)?;
                Box::new(tokio::fs::File::from_std(std::fs::File::from(fd)))
            }
            // Opened synchronously so `spawn` can fail; this runs once at start-up.
            Output::File(path) => open(path).map_err(|source| Error::Open {
                path: path.clone(),
                source,
            })?,
        };
        let path = match output {
            Output::File(path) => Some(path.clone()),
            Output::Off | Output::Stdout => None,
        };
        let (tx, rx) = mpsc::channel(capacity);
        tokio::spawn(run(rx, BufWriter::with_capacity(BUFFER_BYTES, sink), path));
        Ok(Some(AccessLog {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        }))
    }

    /// Queues one entry; never blocks or awaits.
    ///
    /// When the queue is full (the writer fell behind) the entry is dropped and counted
    /// in [`AccessLog::dropped`].
    pub fn log(&self, entry: Entry) {
        if self.tx.try_send(Msg::Entry(entry)).is_err() {
            // `Full` is the writer falling behind; `Closed` means it is gone (it panicked),
            // and losing the entry is all that can happen then too.
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Entries dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Has the writer open its file again by its path, after what was queued before
    /// this call is written to the old one: for log rotation that renames the file
    /// (logrotate's default) and then signals the process. If the file cannot be
    /// opened, the writer logs why and keeps the one it has. Nothing for stdout.
    pub async fn reopen(&self) {
        // An error means the writer is gone: there is no file to reopen.
        let _ = self.tx.send(Msg::Reopen).await;
    }

    /// Waits until every entry queued before this call is written and flushed.
    ///
    /// Used by tests and on shutdown. Waits for queue space like any sender, so it can take
    /// as long as the backlog; returns at once if the writer task is gone.
    pub async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).await.is_ok() {
            // An error means the writer ended without answering: nothing left to wait for.
            let _ = flushed.await;
        }
    }
}

/// Opens (creating it if missing) the log file for appending.
fn open(path: &std::path::Path) -> std::io::Result<Sink> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    Ok(Box::new(tokio::fs::File::from_std(file)))
}

/// The writer task: drains the queue in batches, flushes when it runs empty, and stops
/// once every [`AccessLog`] handle is dropped. `path` is the file it writes, if any
/// (for [`Msg::Reopen`]).
async fn run(mut rx: mpsc::Receiver<Msg>, mut out: BufWriter<Sink>, path: Option<PathBuf>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut line = Vec::with_capacity(512);
    let mut health = WriteHealth::default();
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        for msg in batch.drain(..) {
            match msg {
                Msg::Entry(entry) => {
                    line.clear();
                    if let Err(error) = serde_json::to_writer(&mut line, &Record::from(&entry)) {
                        tracing::error!(%error, "access log entry cannot be encoded");
                        continue;
                    }
                    line.push(b'\n');
                    health.record(out.write_all(&line).await);
                }
                Msg::Flush(done) => {
                    health.record(out.flush().await);
                    // The caller may have given up waiting; nothing to do then.
                    let _ = done.send(());
                }
                Msg::Reopen => {
                    let Some(path) = &path else { continue };
                    health.record(out.flush().await);
                    // A blocking open, as at start: one `open(2)` per rotation.
                    match open(path) {
                        Ok(sink) => {
                            out = BufWriter::with_capacity(BUFFER_BYTES, sink);
                            tracing::info!(path = %path.display(), "access log file reopened");
                        }
                        Err(error) => tracing::error!(
                            path = %path.display(), %error,
                            "cannot reopen the access log file; still writing the old one"
                        ),
                    }
                }
            }
        }
        if rx.is_empty() {
            health.record(out.flush().await);
        }
    }
    health.record(out.flush().await);
}

/// Logs write errors once per outage instead of once per entry, so a full disk does not
/// flood the process log.
#[derive(Debug, Default)]
struct WriteHealth {
    failing: bool,
}

impl WriteHealth {
    fn record(&mut self, result: std::io::Result<()>) {
        match result {
            Ok(()) if self.failing => {
                self.failing = false;
                tracing::info!("access log writes recovered");
            }
            Ok(()) => {}
            Err(error) if !self.failing => {
                self.failing = true;
                tracing::error!(%error, "access log write failed; entries are being lost");
            }
            Err(_) => {}
        }
    }
}

/// The JSON shape of one line: ALB's field names, in ALB's order.
///
/// Optional fields are always strings (`"-"` when absent, as ALB writes them), so each
/// field keeps one JSON type and log stores do not hit mapping conflicts.
#[derive(Serialize)]
struct Record<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    time: Rfc3339,
    elb: &'a str,
    client: &'a SocketAddr,
    target: OrDash<&'a SocketAddr>,
    request_processing_time: f64,
    target_processing_time: f64,
    response_processing_time: f64,
    elb_status_code: u16,
    target_status_code: OrDash<u16>,
    received_bytes: u64,
    sent_bytes: u64,
    request: &'a str,
    user_agent: &'a str,
    ssl_cipher: &'static str,
    ssl_protocol: &'static str,
    trace_id: &'a str,
    domain_name: OrDash<&'a str>,
    /// ALB writes 0 for the default action; rule priorities start at 1.
    matched_rule_priority: u32,
    target_group: OrDash<&'a str>,
    error_reason: OrDash<&'static str>,
}

impl<'a> From<&'a Entry> for Record<'a> {
    fn from(entry: &'a Entry) -> Self {
        Record {
            kind: entry.kind,
            time: Rfc3339(entry.time),
            elb: &entry.listener,
            client: &entry.client,
            target: OrDash(entry.target.as_ref()),
            request_processing_time: micros(entry.request_processing_time),
            target_processing_time: micros(entry.target_processing_time),
            response_processing_time: micros(entry.response_processing_time),
            elb_status_code: entry.elb_status_code,
            target_status_code: OrDash(entry.target_status_code),
            received_bytes: entry.received_bytes,
            sent_bytes: entry.sent_bytes,
            request: &entry.request,
            user_agent: &entry.user_agent,
            ssl_cipher: entry.ssl_cipher,
            ssl_protocol: entry.ssl_protocol,
            trace_id: &entry.trace_id,
            domain_name: OrDash(entry.domain_name.as_deref()),
            matched_rule_priority: entry.matched_rule_priority.unwrap_or(0),
            target_group: OrDash(entry.target_group.as_deref()),
            error_reason: OrDash(entry.error_reason),
        }
    }
}

/// Rounds seconds to microseconds, so lines carry `0.001234` rather than 17 digits of noise.
fn micros(seconds: f64) -> f64 {
    (seconds * 1e6).round() / 1e6
}

/// An optional value written as its `Display` string, or `"-"` when absent.
struct OrDash<T>(Option<T>);

impl<T: fmt::Display> Serialize for OrDash<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Some(value) => serializer.collect_str(value),
            None => serializer.serialize_str("-"),
        }
    }
}

/// A time written as RFC 3339 in UTC with microseconds, as ALB does:
/// `2018-07-02T22:23:00.186641Z`. Times before 1970 are written as the epoch.
struct Rfc3339(SystemTime);

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A clock before 1970 is a broken clock; the epoch is as good a stand-in as any.
        let since = self.0.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        let (year, month, day) = civil_from_days(secs / 86_400);
        let of_day = secs % 86_400;
        let (hour, minute, second) = (of_day / 3600, of_day / 60 % 60, of_day % 60);
        let micros = since.subsec_micros();
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{micros:06}Z"
        )
    }
}

impl Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The civil (proleptic Gregorian) date `days` after 1970-01-01, as (year, month, day).
///
/// Howard Hinnant's `civil_from_days`, the inverse of `days_from_civil`
/// (<https://howardhinnant.github.io/date_algorithms.html#civil_from_days>), restricted to
/// days on or after the epoch so it works in unsigned arithmetic.
pub(crate) fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01 so leap days fall at the end of each year.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    fn at(secs: u64, micros: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros)
    }

    /// A file path unique to this process and call, removed when dropped.
    struct TempPath(PathBuf);

    impl TempPath {
        fn new() -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let name = format!("ecslb-access-log-{}-{n}.log", std::process::id());
            TempPath(std::env::temp_dir().join(name))
        }

        fn lines(&self) -> Vec<serde_json::Value> {
            std::fs::read_to_string(&self.0)
                .unwrap()
                .lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect()
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            // Best effort: a leftover file in the temp dir harms nothing.
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn forwarded() -> Entry {
        Entry {
            kind: "https",
            time: at(1_530_569_780, 186_641),
            listener: "public".to_owned(),
            client: "192.0.2.10:51234".parse().unwrap(),
            target: Some("10.0.1.5:8080".parse().unwrap()),
            request_processing_time: 0.000_123_4,
            target_processing_time: 0.012,
            response_processing_time: 0.0,
            elb_status_code: 200,
            target_status_code: Some(200),
            received_bytes: 142,
            sent_bytes: 3_021,
            request: "GET https://example.com:443/a?b=c HTTP/1.1".to_owned(),
            user_agent: "curl/8.5.0".to_owned(),
            ssl_cipher: "ECDHE-RSA-AES128-GCM-SHA256",
            ssl_protocol: "TLSv1.2",
            domain_name: Some(Arc::from("example.com")),
            trace_id: "Root=1-5b3aa1f4-0123456789abcdef01234567".to_owned(),
            matched_rule_priority: Some(10),
            target_group: Some("web".to_owned()),
            error_reason: None,
        }
    }

    fn refused() -> Entry {
        Entry {
            kind: "http",
            ssl_cipher: "-",
            ssl_protocol: "-",
            domain_name: None,
            target: None,
            request_processing_time: -1.0,
            target_processing_time: -1.0,
            response_processing_time: -1.0,
            elb_status_code: 503,
            target_status_code: None,
            user_agent: "say \"hi\"\n".to_owned(),
            matched_rule_priority: None,
            target_group: None,
            error_reason: Some("no_healthy_target"),
            ..forwarded()
        }
    }

    #[tokio::test]
    async fn entries_are_written_as_one_json_object_per_line() {
        let path = TempPath::new();
        let log = AccessLog::spawn(&Output::File(path.0.clone()))
            .unwrap()
            .unwrap();
        log.log(forwarded());
        log.log(refused());
        log.flush().await;

        let lines = path.lines();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0],
            serde_json::json!({
                "type": "https",
                "time": "2018-07-02T22:16:20.186641Z",
                "elb": "public",
                "client": "192.0.2.10:51234",
                "target": "10.0.1.5:8080",
                "request_processing_time": 0.000123,
                "target_processing_time": 0.012,
                "response_processing_time": 0.0,
                "elb_status_code": 200,
                "target_status_code": "200",
                "received_bytes": 142,
                "sent_bytes": 3021,
                "request": "GET https://example.com:443/a?b=c HTTP/1.1",
                "user_agent": "curl/8.5.0",
                "ssl_cipher": "ECDHE-RSA-AES128-GCM-SHA256",
                "ssl_protocol": "TLSv1.2",
                "trace_id": "Root=1-5b3aa1f4-0123456789abcdef01234567",
                "domain_name": "example.com",
                "matched_rule_priority": 10,
                "target_group": "web",
                "error_reason": "-",
            })
        );
        let second = &lines[1];
        assert_eq!(second["target"], "-");
        assert_eq!(second["target_status_code"], "-");
        assert_eq!(second["request_processing_time"], -1.0);
        assert_eq!(second["matched_rule_priority"], 0);
        assert_eq!(second["target_group"], "-");
        assert_eq!(second["error_reason"], "no_healthy_target");
        assert_eq!(second["type"], "http");
        assert_eq!(second["ssl_cipher"], "-");
        assert_eq!(second["domain_name"], "-");
        assert_eq!(second["user_agent"], "say \"hi\"\n");
        assert_eq!(log.dropped(), 0);
    }

    #[tokio::test]
    async fn existing_file_is_appended_to() {
        let path = TempPath::new();
        std::fs::write(&path.0, "{\"earlier\":true}\n").unwrap();
        let log = AccessLog::spawn(&Output::File(path.0.clone()))
            .unwrap()
            .unwrap();
        log.log(forwarded());
        log.flush().await;

        let lines = path.lines();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["earlier"], true);
        assert_eq!(lines[1]["elb"], "public");
    }

    // The test runtime is single-threaded, so the writer task cannot run until the test
    // awaits: the queue fills up exactly as it would behind a stalled writer.
    #[tokio::test]
    async fn full_queue_drops_and_counts_without_blocking() {
        let path = TempPath::new();
        let log = AccessLog::spawn_with_capacity(&Output::File(path.0.clone()), 2)
            .unwrap()
            .unwrap();
        for _ in 0..10 {
            log.log(forwarded());
        }
        assert_eq!(log.dropped(), 8);

        log.flush().await;
        assert_eq!(path.lines().len(), 2);
        log.log(refused());
        log.flush().await;
        assert_eq!(path.lines().len(), 3);
        assert_eq!(log.dropped(), 8);
    }

    #[tokio::test]
    async fn writer_flushes_queued_entries_when_last_handle_drops() {
        let path = TempPath::new();
        let log = AccessLog::spawn(&Output::File(path.0.clone()))
            .unwrap()
            .unwrap();
        let clone = log.clone();
        clone.log(forwarded());
        drop(clone);
        log.log(refused());
        drop(log);

        // The writer owns the file; poll until it has finished rather than guessing a delay.
        for _ in 0..200 {
            if std::fs::read_to_string(&path.0).unwrap().lines().count() == 2 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("writer did not write queued entries after the last handle dropped");
    }

    #[tokio::test]
    async fn unopenable_file_is_an_error_naming_the_path() {
        let path = std::env::temp_dir().join("ecslb-no-such-dir/access.log");
        let error = AccessLog::spawn(&Output::File(path.clone())).unwrap_err();
        assert!(matches!(&error, Error::Open { path: p, .. } if *p == path));
        assert!(error.to_string().contains("ecslb-no-such-dir/access.log"));
    }

    #[tokio::test]
    async fn off_starts_no_writer() {
        assert!(AccessLog::spawn(&Output::Off).unwrap().is_none());
    }

    #[tokio::test]
    async fn stdout_starts_a_writer() {
        let log = AccessLog::spawn(&Output::Stdout).unwrap().unwrap();
        log.flush().await;
        assert_eq!(log.dropped(), 0);
    }

    #[test]
    fn rfc3339_is_utc_with_microseconds() {
        let cases = [
            (at(0, 0), "1970-01-01T00:00:00.000000Z"),
            (at(951_782_400, 1), "2000-02-29T00:00:00.000001Z"),
            (at(1_234_567_890, 999_999), "2009-02-13T23:31:30.999999Z"),
            (at(1_530_569_780, 186_641), "2018-07-02T22:16:20.186641Z"),
            (at(1_709_251_199, 500_000), "2024-02-29T23:59:59.500000Z"),
            (at(4_107_542_400, 0), "2100-03-01T00:00:00.000000Z"),
            (at(253_402_300_799, 0), "9999-12-31T23:59:59.000000Z"),
        ];
        for (time, want) in cases {
            assert_eq!(Rfc3339(time).to_string(), want);
        }
    }

    #[test]
    fn rfc3339_truncates_nanoseconds_and_clamps_before_epoch() {
        let time = UNIX_EPOCH + Duration::from_nanos(1_999);
        assert_eq!(Rfc3339(time).to_string(), "1970-01-01T00:00:00.000001Z");
        let before = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(Rfc3339(before).to_string(), "1970-01-01T00:00:00.000000Z");
    }

    /// Hinnant's `days_from_civil`, kept here only to check its inverse.
    fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
        let year = year - u64::from(month <= 2);
        let era = year / 400;
        let year_of_era = year % 400;
        let month_from_march = (month + 9) % 12;
        let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
        let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
        era * 146_097 + day_of_era - 719_468
    }

    #[test]
    fn civil_from_days_inverts_days_from_civil() {
        let mut previous = (1969, 12, 31);
        for days in 0..200_000 {
            let (year, month, day) = civil_from_days(days);
            assert_eq!(days_from_civil(year, month, day), days);
            assert!(
                (year, month, day) > previous,
                "dates must strictly increase"
            );
            assert!((1..=12).contains(&month) && (1..=31).contains(&day));
            previous = (year, month, day);
        }
    }
}
