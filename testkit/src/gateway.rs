//! The `pantheon` binary as a child process.
//!
//! Integration tests of the gateway crate pass the binary's path
//! (`env!("CARGO_BIN_EXE_pantheon")`, which only they can name). The
//! gateway listens on ports it picks itself (`PORT=0`, `WT_PORT=0`) and
//! the wrapper reads them from its start-up log line, so two tests never
//! race for a port.

use crate::process::{Proc, tail};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What [`GatewayBuilder::spawn`] waits for before returning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// `/ready` answers 200 (Redis reachable, when configured).
    Ready,
    /// `/health` answers 200 (whatever Redis does).
    Health,
    /// The listeners are bound (read from the log).
    Listening,
}

/// The gateway exited before it was up.
#[derive(Debug)]
pub struct Exited {
    /// Its exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Everything it logged.
    pub log: String,
}

/// Configures a gateway process.
#[derive(Debug, Clone)]
pub struct GatewayBuilder {
    bin: PathBuf,
    name: String,
    env: Vec<(String, String)>,
    wait: Wait,
    limit: Duration,
}

impl GatewayBuilder {
    /// Sets one variable (later settings win).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Sets several variables.
    pub fn envs<K: Into<String>, V: Into<String>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.env
            .extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// The name used in logs and failure messages; also the default
    /// `SERVER_ID`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// What to wait for (default [`Wait::Ready`]).
    pub fn wait(mut self, wait: Wait) -> Self {
        self.wait = wait;
        self
    }

    /// How long to wait for it (default 20 s).
    pub fn limit(mut self, limit: Duration) -> Self {
        self.limit = limit;
        self
    }

    /// Starts it; panics (with its log) when it does not come up.
    pub async fn spawn(self) -> Gateway {
        let name = self.name.clone();
        match self.try_spawn().await {
            Ok(gw) => gw,
            Err(e) => panic!(
                "gateway {name} exited with {:?} while starting; its log:\n{}",
                e.code, e.log
            ),
        }
    }

    /// Starts it; `Err` when it exits before it is up (a configuration
    /// error, say). Panics when it neither comes up nor exits in time.
    pub async fn try_spawn(self) -> Result<Gateway, Exited> {
        let dir = tempfile::Builder::new()
            .prefix("pantheon-gw-")
            .tempdir()
            .expect("temp dir");
        let log = dir.path().join(format!("{}.log", self.name));
        let mut cmd = Command::new(&self.bin);
        // Nothing from the developer's environment (a REDIS_URL, say) leaks
        // into the test.
        cmd.env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        let defaults = [
            ("HOST", "127.0.0.1"),
            ("PORT", "0"),
            ("WT_PORT", "0"),
            ("SERVER_ID", self.name.as_str()),
            ("RUST_LOG", "info"),
            ("NO_COLOR", "1"),
        ];
        for (k, v) in defaults {
            cmd.env(k, v);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let proc = Proc::spawn(&self.name, cmd, &log)
            .unwrap_or_else(|e| panic!("spawning {}: {e}", self.bin.display()));
        let mut gw = Gateway {
            proc,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            wt_port: 0,
            _dir: dir,
        };
        let deadline = Instant::now() + self.limit;
        let exited = |gw: &mut Gateway| {
            gw.proc.try_status().map(|s| Exited {
                code: s.code(),
                log: gw.proc.log_text(),
            })
        };
        loop {
            if let Some(e) = exited(&mut gw) {
                return Err(e);
            }
            if let Some((addr, wt)) = listening(&gw.proc.log_text()) {
                gw.addr = addr;
                gw.wt_port = wt;
                break;
            }
            gw.check_deadline(deadline, "to listen");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let path = match self.wait {
            Wait::Ready => "/ready",
            Wait::Health => "/health",
            Wait::Listening => return Ok(gw),
        };
        loop {
            if let Some(e) = exited(&mut gw) {
                return Err(e);
            }
            if let Ok(r) = gw.try_http("GET", path, &[]).await
                && r.status == 200
            {
                return Ok(gw);
            }
            gw.check_deadline(deadline, path);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A running `pantheon` process, SIGKILLed on drop. When the test is
/// failing, its log is printed then.
#[derive(Debug)]
pub struct Gateway {
    proc: Proc,
    addr: SocketAddr,
    wt_port: u16,
    _dir: TempDir,
}

/// Reads `http://ADDR` and the WebTransport port from the start-up line
/// (`pantheon listening on http://127.0.0.1:PORT (WebSocket: ...;
/// WebTransport: https://localhost:PORT/wt)`).
fn listening(log: &str) -> Option<(SocketAddr, u16)> {
    let at = log.find("listening on http://")? + "listening on http://".len();
    let addr: String = log[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':' || *c == '[' || *c == ']')
        .collect();
    let addr = addr.parse().ok()?;
    let wt = log[at..]
        .find("WebTransport: https://")
        .and_then(|i| {
            let rest = &log[at + i + "WebTransport: https://".len()..];
            let port: String = rest
                .split_once(':')?
                .1
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            port.parse().ok()
        })
        .unwrap_or(0);
    Some((addr, wt))
}

impl Gateway {
    /// A builder for the binary at `bin`.
    pub fn builder(bin: impl AsRef<Path>) -> GatewayBuilder {
        GatewayBuilder {
            bin: bin.as_ref().to_owned(),
            name: "pantheon".into(),
            env: Vec::new(),
            wait: Wait::Ready,
            limit: Duration::from_secs(20),
        }
    }

    /// Starts `bin` with `env` and waits for `/ready`.
    pub async fn spawn<K: Into<String>, V: Into<String>>(
        bin: impl AsRef<Path>,
        env: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self::builder(bin).envs(env).spawn().await
    }

    fn check_deadline(&mut self, deadline: Instant, what: &str) {
        if Instant::now() >= deadline {
            let log = self.proc.log_text();
            self.proc.kill();
            panic!(
                "gateway {} did not come up ({what}) in time; its log:\n{}",
                self.proc.name(),
                tail(&log, 60)
            );
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        self.proc.name()
    }

    /// The HTTP/WebSocket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The WebTransport (UDP) port.
    pub fn wt_port(&self) -> u16 {
        self.wt_port
    }

    /// `ws://ADDR/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.proc.try_status().is_none()
    }

    /// SIGKILL: no drain, no clean-up, as a crashed host.
    pub fn kill(&mut self) -> ExitStatus {
        self.proc.kill()
    }

    /// SIGTERM (a graceful drain); does not wait.
    pub fn terminate(&mut self) {
        self.proc.signal("TERM");
    }

    /// SIGSTOP / SIGCONT: a frozen process (its sockets stay open).
    pub fn freeze(&mut self, frozen: bool) {
        self.proc.signal(if frozen { "STOP" } else { "CONT" });
    }

    /// Waits for the exit; `None` if it is still running after `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        self.proc.wait(limit).await
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        self.proc.log_text()
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        self.proc.log_path()
    }

    /// `GET path`: the status and body. Panics if there is no answer.
    pub async fn http_get(&self, path: &str) -> (u16, String) {
        let r = self.http("GET", path, &[]).await;
        (r.status, r.body)
    }

    /// One HTTP/1.1 request on a fresh connection; panics if there is no
    /// answer within 5 s.
    pub async fn http(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        self.try_http(method, path, headers)
            .await
            .unwrap_or_else(|e| panic!("{method} {path} on {}: {e}", self.name()))
    }

    /// One HTTP/1.1 request; `Err` when it cannot connect or gets no whole
    /// answer within 5 s.
    pub async fn try_http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<HttpResponse, String> {
        match tokio::time::timeout(
            Duration::from_secs(5),
            http_request(self.addr, method, path, headers),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err("no answer within 5 s".into()),
        }
    }

    /// `/health` as JSON.
    pub async fn health(&self) -> serde_json::Value {
        let r = self.http("GET", "/health", &[]).await;
        assert_eq!(r.status, 200, "/health of {}: {}", self.name(), r.body);
        r.json()
    }

    /// The `/ready` status code.
    pub async fn ready_status(&self) -> u16 {
        self.http("GET", "/ready", &[]).await.status
    }

    /// `/metrics` text.
    pub async fn metrics(&self) -> String {
        let r = self.http("GET", "/metrics", &[]).await;
        assert_eq!(r.status, 200, "/metrics of {}", self.name());
        r.body
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- log of gateway {} (pid {}, {}) ----\n{}\n---- end of log of {} ----",
                self.proc.name(),
                self.proc.pid(),
                self.addr,
                tail(&self.proc.log_text(), 80),
                self.proc.name()
            );
        }
    }
}

/// The sum of every sample of metric `name` whose labels contain each of
/// `labels` (`key="value"` strings); `None` when there is no such sample.
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let (metric, label_text) = match series.split_once('{') {
            Some((m, l)) => (m, l),
            None => (series, ""),
        };
        if metric != name || !labels.iter().all(|l| label_text.contains(l)) {
            continue;
        }
        if let Ok(v) = value.parse::<f64>() {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// An HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: String,
}

impl HttpResponse {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// One HTTP/1.1 request to `addr` on a fresh connection (`Connection: close`).
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<HttpResponse, String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8(raw).map_err(|_| "response is not UTF-8".to_owned())?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {text:?}"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_up_line_gives_both_ports() {
        let line = "2026-01-01T00:00:00Z  INFO pantheon: pantheon listening on http://127.0.0.1:41234 \
                    (WebSocket: ws://localhost:41234/ws; WebTransport: https://localhost:40999/wt) server=a";
        assert_eq!(
            listening(line),
            Some(("127.0.0.1:41234".parse().unwrap(), 40999))
        );
        assert_eq!(listening("starting"), None);
    }

    #[test]
    fn metric_sum_adds_matching_series() {
        let text = "# HELP x_total a\n# TYPE x_total counter\n\
                    x_total{kind=\"a\",region=\"eu\"} 2\nx_total{kind=\"b\",region=\"eu\"} 3\n\
                    x_total_created 5\ny 1\n";
        assert_eq!(metric_sum(text, "x_total", &[]), Some(5.0));
        assert_eq!(metric_sum(text, "x_total", &["kind=\"b\""]), Some(3.0));
        assert_eq!(metric_sum(text, "y", &[]), Some(1.0));
        assert_eq!(metric_sum(text, "z", &[]), None);
    }
}
