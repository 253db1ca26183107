//! The `streamgauge-server` binary as docs/cli.md specifies it: the readiness
//! line, environment variables, exit codes, graceful stop on a signal.
//!
//! Test with `cargo test -p streamgauge-server --test cli`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// The longest any wait on the child process may take.
const WAIT: Duration = Duration::from_secs(20);

/// The server binary, run in a working directory of its own (where its
/// default SQLite database is created), emptied first.
fn server() -> Command {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "cli-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a working directory");
    let mut command = Command::new(env!("CARGO_BIN_EXE_streamgauge-server"));
    command
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("STREAMGAUGE_DATABASE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// A running server and the address from its readiness line.
struct Running {
    child: Child,
    addr: String,
    /// `http` or `https`, as the readiness line said.
    scheme: String,
    /// Read to the end while it runs (a server logging much would block on
    /// a full pipe otherwise): stdout after the readiness line, and stderr.
    stdout: Option<thread::JoinHandle<String>>,
    stderr: Option<thread::JoinHandle<String>>,
}

impl Running {
    fn start(command: &mut Command) -> Self {
        let mut child = command.spawn().expect("spawning streamgauge-server");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let stdout = thread::spawn(move || {
            let mut line = String::new();
            let _ = stdout.read_line(&mut line);
            let _ = tx.send(line);
            let mut rest = String::new();
            let _ = stdout.read_to_string(&mut rest);
            rest
        });
        let stderr = thread::spawn(move || {
            let mut all = String::new();
            let _ = stderr.read_to_string(&mut all);
            all
        });
        let line = rx.recv_timeout(WAIT).expect("the readiness line");
        let addr = line
            .strip_prefix("listening on http://")
            .or_else(|| line.strip_prefix("listening on https://"))
            .and_then(|rest| rest.strip_suffix('\n'))
            .unwrap_or_else(|| panic!("first stdout line was {line:?}"))
            .to_owned();
        let scheme = line
            .trim_start_matches("listening on ")
            .split("://")
            .next()
            .unwrap_or_default()
            .to_owned();
        Self {
            child,
            addr,
            scheme,
            stdout: Some(stdout),
            stderr: Some(stderr),
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success());
    }

    /// Waits for the exit: its status and stderr.
    fn wait(self) -> (ExitStatus, String) {
        let (status, stderr, _) = self.wait_with_stdout();
        (status, stderr)
    }

    /// Waits for the exit: its status, stderr, and stdout after the
    /// readiness line.
    fn wait_with_stdout(mut self) -> (ExitStatus, String, String) {
        let status = wait_timeout(&mut self.child);
        // The pipes close with the process: both readers end.
        let joined = |reader: Option<thread::JoinHandle<String>>| {
            reader.expect("waited once").join().expect("a pipe reader")
        };
        let (stderr, stdout) = (joined(self.stderr.take()), joined(self.stdout.take()));
        (status, stderr, stdout)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_timeout(child: &mut Child) -> ExitStatus {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().expect("waiting for the child") {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server did not exit within {WAIT:?}"
        );
        thread::park_timeout(Duration::from_millis(20));
    }
}

/// A raw HTTP/1.1 GET; returns the status line and the body.
fn get(addr: &str, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).expect("connecting to the server");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

/// Runs `command` to its exit: the exit code and stderr.
fn run_to_exit(command: &mut Command) -> (i32, String) {
    let (code, stderr, _) = run_to_exit_with_stdout(command);
    (code, stderr)
}

/// Runs `command` to its exit: the exit code, stderr and stdout.
fn run_to_exit_with_stdout(command: &mut Command) -> (i32, String, String) {
    let mut child = command.spawn().expect("spawning streamgauge-server");
    let status = wait_timeout(&mut child);
    let (mut stderr, mut stdout) = (String::new(), String::new());
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    (status.code().expect("an exit code"), stderr, stdout)
}

#[test]
fn prints_the_readiness_line_serves_and_exits_0_on_sigterm() {
    let running = Running::start(server().args(["--listen", "127.0.0.1:0"]));
    assert!(running.addr.starts_with("127.0.0.1:"));
    assert!(!running.addr.ends_with(":0"), "the real port is printed");
    let (status, body) = get(&running.addr, "/healthz");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains("ok"));
    running.signal("TERM");
    let (status, stderr) = running.wait();
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
    assert!(stderr.contains("shut down"), "logs go to stderr:\n{stderr}");
}

#[test]
fn ctrl_c_also_stops_it_cleanly_and_streams_end() {
    let running = Running::start(server().args(["--listen", "127.0.0.1:0"]));
    let mut stream = TcpStream::connect(&running.addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        stream,
        "GET /sse/ticker?rate=100 HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    let mut first = [0u8; 64];
    let n = stream.read(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    running.signal("INT");
    // The SSE body ends with the last chunk of the chunked encoding.
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    assert!(rest.ends_with(b"0\r\n\r\n"), "the body did not end cleanly");
    let (status, stderr) = running.wait();
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
}

#[test]
fn flags_also_read_streamgauge_environment_variables() {
    let running = Running::start(
        server()
            .env("STREAMGAUGE_LISTEN", "127.0.0.1:0")
            .env("STREAMGAUGE_MAX_SIZE", "8"),
    );
    let (status, body) = get(&running.addr, "/sse/ticker?size=9");
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
    assert!(body.contains("`size`"), "{body}");
    running.signal("TERM");
    assert_eq!(running.wait().0.code(), Some(0));
}

#[test]
fn a_flag_overrides_its_environment_variable() {
    let running = Running::start(
        server()
            .env("STREAMGAUGE_LISTEN", "127.0.0.2:1")
            .args(["--listen", "127.0.0.1:0"]),
    );
    assert!(running.addr.starts_with("127.0.0.1:"));
}

#[test]
fn bad_flags_and_settings_exit_2_with_a_message_naming_them() {
    let (code, stderr) = run_to_exit(server().args(["--max-batch", "many"]));
    assert_eq!(code, 2);
    assert!(stderr.contains("--max-batch"), "{stderr}");

    let (code, stderr) = run_to_exit(server().env("STREAMGAUGE_MAX_CONNECTIONS", "0"));
    assert_eq!(code, 2);
    assert!(stderr.contains("invalid `max-connections`"), "{stderr}");

    let (code, stderr) = run_to_exit(server().args(["--no-such-flag"]));
    assert_eq!(code, 2);
    assert!(stderr.contains("--no-such-flag"), "{stderr}");
}

#[test]
fn admin_calls_are_logged_by_their_tokens_label_never_the_token() {
    const TOKEN: &str = "adm1n-s3cret";
    let running = Running::start(server().args([
        "--listen",
        "127.0.0.1:0",
        "--admin-token",
        &format!("ops-alice={TOKEN}"),
    ]));
    for (token, status) in [(TOKEN, "200"), ("wrong-one", "403")] {
        let mut stream = TcpStream::connect(&running.addr).expect("connecting to the server");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        write!(
            stream,
            "GET /admin/topics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(
            response.starts_with(&format!("HTTP/1.1 {status}")),
            "{response}"
        );
    }
    running.signal("TERM");
    let (status, stderr) = running.wait();
    assert_eq!(status.code(), Some(0), "{stderr}");
    let logged = |needle: &str| {
        stderr
            .lines()
            .any(|l| l.contains("streamgauge::admin") && l.contains(needle))
    };
    assert!(
        logged("admin=ops-alice") && logged("status=200"),
        "{stderr}"
    );
    assert!(
        logged("admin call refused") && logged("status=403"),
        "{stderr}"
    );
    assert!(!stderr.contains(TOKEN), "the token leaked:\n{stderr}");
}

#[test]
fn a_bad_config_file_exits_2_naming_the_file_and_line() {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-bad-config.toml");
    std::fs::write(&path, "max-batch = 16\nwrite-timeout = 30\n").unwrap();
    let (code, stderr) = run_to_exit(server().arg("--config").arg(&path));
    assert_eq!(code, 2);
    let at = format!("{}:2:17: ", path.display());
    assert!(stderr.contains(&at), "{stderr}");
}

#[test]
fn a_bad_config_file_holding_a_token_exits_2_without_echoing_it() {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-token-config.toml");
    std::fs::write(
        &path,
        "max-batch = 16\npublish-token = [\"TOPSECRET77\", 5]\n",
    )
    .unwrap();
    let (code, stderr, stdout) = run_to_exit_with_stdout(server().arg("--config").arg(&path));
    assert_eq!(code, 2, "{stderr}");
    let at = format!("{}:2:33: ", path.display());
    assert!(stderr.contains(&at), "{stderr}");
    assert!(
        !stderr.contains("TOPSECRET77") && !stdout.contains("TOPSECRET77"),
        "a token leaked:\n{stderr}{stdout}"
    );
}

#[test]
fn a_busy_port_is_a_runtime_error_with_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, stderr) = run_to_exit(server().args(["--listen", &addr]));
    assert_eq!(code, 1);
    assert!(stderr.contains(&addr), "{stderr}");
}

#[test]
fn the_default_database_is_an_sqlite_file_created_in_the_working_directory() {
    let mut command = server();
    command.args(["--listen", "127.0.0.1:0"]);
    let dir = command.get_current_dir().unwrap().to_owned();
    let running = Running::start(&mut command);
    assert!(
        dir.join("streamgauge.db").exists(),
        "no streamgauge.db in {}",
        dir.display()
    );
    running.signal("TERM");
    assert_eq!(running.wait().0.code(), Some(0));
}

#[test]
fn an_unreachable_database_is_a_runtime_error_that_hides_the_password() {
    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://user:hunter2@127.0.0.1:{unused}/db");
    let (code, stderr) =
        run_to_exit(server().args(["--listen", "127.0.0.1:0", "--database", &url]));
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("opening --database"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "the password leaked: {stderr}");
}

#[test]
fn tokens_never_reach_the_logs_or_help() {
    const RIGHT: &str = "s3cret-one";
    const WRONG: &str = "s3cret-wrong";
    const READ: &str = "s3cret-read";
    let running = Running::start(
        server()
            .args(["--listen", "127.0.0.1:0", "--log", "trace"])
            .args(["--read-token", &format!("private.*={READ}")])
            .env("STREAMGAUGE_PUBLISH_TOKEN", format!("{RIGHT},s3cret-two")),
    );
    let addr = running.addr.as_str();
    let publish = "/topics/t/events";
    assert_eq!(post(addr, publish, None, "1"), "HTTP/1.1 401 Unauthorized");
    assert_eq!(
        post(addr, publish, Some(WRONG), "1"),
        "HTTP/1.1 403 Forbidden"
    );
    assert_eq!(
        post(addr, publish, Some(RIGHT), "1"),
        "HTTP/1.1 201 Created"
    );
    // WebSocket publishers with the token in the upgrade's query.
    let mut right = upgrade(addr, &format!("/ws/topics/t?token={RIGHT}"));
    send_text(&mut right, br#"{"publish":2}"#);
    assert_eq!(read_frame(&mut right).0, 0x1, "an ack or the event");
    let mut wrong = upgrade(addr, &format!("/ws/topics/t?token={WRONG}"));
    send_text(&mut wrong, br#"{"publish":3}"#);
    let (opcode, payload) = read_frame(&mut wrong);
    assert_eq!((opcode, &payload[..2]), (0x8, &1008u16.to_be_bytes()[..]));
    // A topic guarded by a read token, by header and by query.
    let bearer = format!("Authorization: Bearer {READ}\r\n");
    for (path, headers, status) in [
        (
            "/sse/topics/private.x".to_owned(),
            bearer.as_str(),
            "200 OK",
        ),
        (format!("/sse/topics/private.x?token={READ}"), "", "200 OK"),
        (
            format!("/sse/topics/private.x?token={WRONG}"),
            "",
            "403 Forbidden",
        ),
        ("/sse/topics/private.x".to_owned(), "", "401 Unauthorized"),
    ] {
        let (head, _stream) = request(addr, &format!("GET {path} HTTP/1.1\r\n{headers}"), "");
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status}")),
            "{path}: {head}"
        );
    }
    drop((right, wrong));
    running.signal("TERM");
    let (status, stderr, stdout) = running.wait_with_stdout();
    assert_eq!(status.code(), Some(0));
    // Nothing the server links logs at trace level through `tracing`, but
    // the debug logs show that the filter let everything through.
    assert!(stderr.contains(" DEBUG "), "no debug logs:\n{stderr}");
    assert!(
        !stderr.contains("s3cret") && !stdout.contains("s3cret"),
        "a token leaked into the logs:\n{stderr}{stdout}"
    );
    // The access log is off by default, whatever the filter lets through.
    assert!(
        !stderr.contains("streamgauge::access"),
        "access lines without --access-log:\n{stderr}"
    );
    let help = server()
        .arg("--help")
        .env("STREAMGAUGE_PUBLISH_TOKEN", RIGHT)
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&help.stdout).contains("s3cret"));
}

/// Sends `head` (a request line and headers, each ending in CRLF) with a
/// `Host`, the blank line and `body`; returns the response head and the
/// stream, positioned at the start of the response body.
fn request(addr: &str, head: &str, body: &str) -> (String, TcpStream) {
    let mut stream = TcpStream::connect(addr).expect("connecting to the server");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(stream, "{head}Host: {addr}\r\n\r\n{body}").unwrap();
    let mut response = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte: nothing past the head is consumed.
    while !response.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("a response head");
        response.push(byte[0]);
    }
    (String::from_utf8_lossy(&response).into_owned(), stream)
}

/// A WebSocket opened on `path`.
fn upgrade(addr: &str, path: &str) -> TcpStream {
    let (head, stream) = request(
        addr,
        &format!(
            "GET {path} HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        ),
        "",
    );
    assert!(head.starts_with("HTTP/1.1 101"), "{path}: {head}");
    stream
}

/// Sends a short text frame, masked with a zero key (RFC 6455, 5.3): the
/// payload goes as it is.
fn send_text(stream: &mut TcpStream, payload: &[u8]) {
    let len = u8::try_from(payload.len())
        .ok()
        .filter(|&len| len < 126)
        .expect("a short frame");
    stream.write_all(&[0x81, 0x80 | len, 0, 0, 0, 0]).unwrap();
    stream.write_all(payload).unwrap();
}

/// A raw HTTP/1.1 POST of `body` with a bearer `token` if any; the status
/// line.
fn post(addr: &str, path: &str, token: Option<&str>, body: &str) -> String {
    let authorization = token.map_or_else(String::new, |token| {
        format!("Authorization: Bearer {token}\r\n")
    });
    let (head, _) = request(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\n{authorization}Content-Length: {}\r\n",
            body.len()
        ),
        body,
    );
    head.lines().next().unwrap_or_default().to_owned()
}

#[test]
fn the_token_variable_is_a_comma_separated_list_and_a_flag_one_token() {
    let running = Running::start(
        server()
            .args(["--listen", "127.0.0.1:0"])
            .env("STREAMGAUGE_PUBLISH_TOKEN", "alpha,beta"),
    );
    for (token, status) in [
        ("alpha", "201 Created"),
        ("beta", "201 Created"),
        ("alpha,beta", "403 Forbidden"),
    ] {
        assert_eq!(
            post(&running.addr, "/topics/t/events", Some(token), "1"),
            format!("HTTP/1.1 {status}"),
            "{token}"
        );
    }
    running.signal("TERM");
    assert_eq!(running.wait().0.code(), Some(0));

    let running =
        Running::start(server().args(["--listen", "127.0.0.1:0", "--publish-token", "a,b"]));
    assert_eq!(
        post(&running.addr, "/topics/t/events", Some("a,b"), "1"),
        "HTTP/1.1 201 Created"
    );
    assert_eq!(
        post(&running.addr, "/topics/t/events", Some("a"), "1"),
        "HTTP/1.1 403 Forbidden"
    );
}

#[test]
fn a_malformed_read_rule_is_refused_without_echoing_it() {
    let (code, stderr) =
        run_to_exit(server().env("STREAMGAUGE_READ_TOKEN", "s3cret-without-pattern"));
    assert_eq!(code, 2);
    assert!(stderr.contains("invalid `read-token`"), "{stderr}");
    assert!(!stderr.contains("s3cret"), "a token leaked: {stderr}");
}

#[test]
fn help_lists_the_flags_and_exits_0() {
    let output = server().arg("--help").output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--listen",
        "--config",
        "--max-batch",
        "--max-connections",
        "--write-timeout",
        "STREAMGAUGE_LISTEN",
    ] {
        assert!(help.contains(flag), "--help does not mention {flag}");
    }
}

/// The value of the sample `key` (name and labels, as exposed) in the
/// running server's `/metrics`, 0 when absent.
fn sample(addr: &str, key: &str) -> f64 {
    let (status, body) = get(addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    body.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(' '))
        .map_or(0.0, |value| value.trim().parse().expect("a sample value"))
}

/// Polls `/metrics` until `ready` holds, failing after [`WAIT`].
fn wait_for_metrics(addr: &str, what: &str, ready: impl Fn(&str) -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !ready(addr) {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}"
        );
        thread::park_timeout(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_with_a_stalled_sse_reader_exits_0_within_the_shutdown_deadline() {
    // Only the shutdown deadline can end the stalled stream: the write
    // timeout is a minute, beyond this test's waits.
    let deadline = Duration::from_secs(1);
    let running = Running::start(server().args([
        "--listen",
        "127.0.0.1:0",
        "--shutdown-timeout",
        "1s",
        "--write-timeout",
        "60s",
    ]));
    // A reader that never reads an endless, unpaced stream of 60 KB events.
    let mut stalled = TcpStream::connect(&running.addr).unwrap();
    write!(
        stalled,
        "GET /sse/ticker?rate=0&size=60000 HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    // Its queue (1 MiB: 17 such events) full: the socket takes no more.
    wait_for_metrics(
        &running.addr,
        "the stalled reader's queue to fill",
        |addr| sample(addr, "streamgauge_queue_depth_events{transport=\"sse\"}") >= 17.0,
    );
    let signalled = std::time::Instant::now();
    running.signal("TERM");
    let (status, stderr) = running.wait();
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
    // The deadline, the store's half-second close grace, and a margin for
    // a loaded machine: far below the write timeout.
    assert!(
        took < deadline + Duration::from_secs(5),
        "exited {took:?} after SIGTERM, deadline {deadline:?}"
    );
    assert!(
        stderr.contains("shutdown deadline passed"),
        "the stalled stream was not abandoned at the deadline:\n{stderr}"
    );
    drop(stalled);
}

/// One unmasked frame from the server (RFC 6455, 5.2): opcode and payload.
fn read_frame(stream: &mut impl Read) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).expect("a frame header");
    let len = match head[1] & 0x7f {
        126 => {
            let mut len = [0u8; 2];
            stream.read_exact(&mut len).unwrap();
            u64::from(u16::from_be_bytes(len))
        }
        127 => {
            let mut len = [0u8; 8];
            stream.read_exact(&mut len).unwrap();
            u64::from_be_bytes(len)
        }
        n => u64::from(n),
    };
    let mut payload = vec![0u8; usize::try_from(len).unwrap()];
    stream.read_exact(&mut payload).expect("a frame payload");
    (head[0] & 0x0f, payload)
}

#[test]
fn sigterm_closes_a_websocket_with_1001_and_exits_0() {
    let running = Running::start(server().args(["--listen", "127.0.0.1:0"]));
    let stream = TcpStream::connect(&running.addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    write!(
        writer,
        "GET /ws/ticker?rate=20 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 101 "), "{status}");
    let mut line = String::new();
    while line != "\r\n" {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "the head ended early"
        );
    }
    // The stream runs: its first event.
    let (opcode, event) = read_frame(&mut reader);
    assert_eq!(opcode, 0x1, "{}", String::from_utf8_lossy(&event));

    running.signal("TERM");
    // Events until the close frame (a stream at 20/s sends a few more).
    let close = (0..1000)
        .map(|_| read_frame(&mut reader))
        .find(|(opcode, _)| *opcode == 0x8)
        .expect("a close frame");
    assert_eq!(u16::from_be_bytes([close.1[0], close.1[1]]), 1001);
    // Answer it, masked, as a client must.
    let mask = [1u8, 2, 3, 4];
    let mut answer = vec![0x88, 0x82];
    answer.extend(mask);
    answer.extend([0x03 ^ mask[0], 0xE9 ^ mask[1]]);
    writer.write_all(&answer).unwrap();

    let (status, stderr) = running.wait();
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
}

/// A self-signed certificate and its key for `127.0.0.1`, written to `dir`.
fn certificate(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

#[test]
fn with_a_certificate_it_listens_on_https_and_an_unusable_one_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path());
    let tls = |cert: &std::path::Path, key: &std::path::Path| {
        let mut command = server();
        command.args(["--listen", "127.0.0.1:0", "--tls-cert"]);
        command.arg(cert).arg("--tls-key").arg(key);
        command
    };
    let running = Running::start(&mut tls(&cert, &key));
    assert_eq!(running.scheme, "https");
    running.signal("TERM");
    let (status, _) = running.wait();
    assert_eq!(status.code(), Some(0));

    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let (code, stderr) = run_to_exit(&mut tls(&garbage, &key));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("garbage.pem") && stderr.contains("no PEM certificate"),
        "{stderr}"
    );
    let (code, stderr) = run_to_exit(server().args(["--tls-cert", "c.pem"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("invalid `tls-cert`: needs --tls-key"),
        "{stderr}"
    );
}

#[test]
fn json_logs_carry_the_access_log_with_the_forwarded_client() {
    let mut command = server();
    command.args([
        "--listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
        "--access-log",
        "--trusted-proxy",
        "127.0.0.1",
    ]);
    let running = Running::start(&mut command);
    assert_eq!(running.scheme, "http");
    let mut stream = TcpStream::connect(&running.addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        stream,
        "GET /healthz?token=secret HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.7\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    let (status, body) = get(&running.addr, "/sse/ticker?rate=0&count=2");
    assert!(status.contains("200"), "{status}");
    assert_eq!(body.matches("id: ").count(), 2, "{body}");
    running.signal("TERM");
    let (status, stderr) = running.wait();
    assert_eq!(status.code(), Some(0), "{stderr}");

    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["timestamp"].is_string())
    );
    let access: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["target"] == "streamgauge::access")
        .collect();
    let health = access
        .iter()
        .find(|l| l["path"] == "/healthz")
        .unwrap_or_else(|| panic!("no access line for /healthz in {stderr}"));
    assert_eq!(health["client"], "203.0.113.7:0", "{health}");
    assert_eq!(
        (health["status"].as_u64(), health["method"].as_str()),
        (Some(200), Some("GET"))
    );
    assert_eq!(health["reason"], "complete");
    assert!(
        health["duration_ms"].is_f64() && health["bytes"].as_u64() > Some(0),
        "{health}"
    );
    let stream = access
        .iter()
        .find(|l| l["path"] == "/sse/ticker")
        .unwrap_or_else(|| panic!("no access line for the stream in {stderr}"));
    assert_eq!(stream["reason"], "complete", "{stream}");
    assert!(
        !stderr.contains("secret"),
        "the query string is not logged: {stderr}"
    );
}

#[test]
fn sighup_rereads_the_denylist_and_ends_the_revoked_subjects_streams() {
    let mut command = server();
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli-denylist-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (secret, denylist) = (dir.join("secret"), dir.join("denylist"));
    std::fs::write(&secret, "a secret of thirty-two bytes, ok\n").unwrap();
    std::fs::write(&denylist, "nobody-00\n").unwrap();
    let running = Running::start(command.args([
        "--listen",
        "127.0.0.1:0",
        "--jwt-key",
        secret.to_str().unwrap(),
        "--jwt-denylist",
        denylist.to_str().unwrap(),
    ]));
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let claims = serde_json::json!({ "sub": "client-07", "exp": exp,
                                     "streamgauge": { "subscribe": ["t"] } });
    let key = jsonwebtoken::EncodingKey::from_secret(b"a secret of thirty-two bytes, ok").unwrap();
    let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap();
    let (head, mut stream) = request(
        &running.addr,
        &format!("GET /sse/topics/t?token={token} HTTP/1.1\r\n"),
        "",
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // The same length and modification time: only the signal can tell the
    // server that the file changed.
    let modified = std::fs::metadata(&denylist).unwrap().modified().unwrap();
    std::fs::write(&denylist, "client-07\n").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&denylist)
        .unwrap()
        .set_modified(modified)
        .unwrap();
    running.signal("HUP");
    let mut body = Vec::new();
    let _ = stream.read_to_end(&mut body);
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.contains("event: end") && body.contains(r#""reason":"revoked""#),
        "{body}"
    );
    running.signal("TERM");
    let (status, stderr) = running.wait();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("denylist reloaded"), "{stderr}");
}
