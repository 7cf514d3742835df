//! Headless Chromium driven over the DevTools protocol: a page is loaded and its text read
//! back, as a person would see it. The protocol runs over a WebSocket; the few frames it needs
//! (text, unfragmented from us, masked) are written here rather than taking a WebSocket crate
//! for one test.

use super::common::{Guarded, SpawnGuarded, PATIENCE};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Set to skip the tests that need Chromium (a machine without it).
pub const SKIP_ENV: &str = "UCWA_SKIP_BROWSER_TESTS";

/// The Chromium binary: `CHROMIUM` if set, else `chromium` on the PATH.
fn binary() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into())
}

/// Whether to run: true with Chromium there; false (said on stderr) when `SKIP_ENV` is set;
/// otherwise the test fails, saying how to install it.
pub fn available() -> bool {
    if std::env::var(SKIP_ENV).is_ok_and(|v| !v.is_empty() && v != "0") {
        eprintln!("{SKIP_ENV} is set: the browser test does not run");
        return false;
    }
    let found = std::process::Command::new(binary()).arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(
        found,
        "this test drives headless Chromium, and `{}` cannot be run: install it (Debian/Ubuntu: `apt-get install -y chromium`), \
         point CHROMIUM at it, or set {SKIP_ENV}=1 to skip the browser tests",
        binary()
    );
    true
}

/// A headless Chromium and the DevTools connection to its page.
pub struct Browser {
    _process: Guarded,
    _profile: tempfile::TempDir,
    ws: Ws,
    next_id: u64,
}

impl Browser {
    /// Starts Chromium (a profile of its own, a window of `width`×`height`) and connects to its
    /// blank page.
    pub async fn start(width: u32, height: u32) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let process = std::process::Command::new(binary())
            .args(["--headless=new", "--disable-gpu", "--no-sandbox", "--no-first-run", "--hide-scrollbars", "--remote-debugging-port=0"])
            .arg(format!("--window-size={width},{height}"))
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn_guarded();
        // Chromium writes the port it took into the profile once it listens.
        let port_file = profile.path().join("DevToolsActivePort");
        let port: u16 = poll("Chromium's DevTools port", || std::fs::read_to_string(&port_file).ok()?.lines().next()?.trim().parse().ok()).await;
        let list_url = format!("http://127.0.0.1:{port}/json/list");
        let ws_url = poll_async("Chromium's page target", || async {
            let list: Value = reqwest::get(&list_url).await.ok()?.json().await.ok()?;
            list.as_array()?.iter().find(|t| t["type"] == "page")?["webSocketDebuggerUrl"].as_str().map(String::from)
        })
        .await;
        let ws = Ws::connect(&ws_url).await;
        Browser { _process: process, _profile: profile, ws, next_id: 0 }
    }

    /// Calls a DevTools method; its result (events that come meanwhile are let go).
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.ws.send(&json!({"id": id, "method": method, "params": params}).to_string()).await;
        let answer = tokio::time::timeout(PATIENCE, async {
            loop {
                let m: Value = serde_json::from_str(&self.ws.recv().await).expect("DevTools sends JSON");
                if m["id"] == id {
                    return m;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no answer from Chromium to {method} within {PATIENCE:?}"));
        assert!(answer.get("error").is_none(), "{method}: {answer}");
        answer["result"].clone()
    }

    pub async fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
    }

    /// A JavaScript expression's value (awaited when it is a promise).
    pub async fn eval(&mut self, expression: &str) -> Value {
        let r = self.call("Runtime.evaluate", json!({"expression": expression, "returnByValue": true, "awaitPromise": true})).await;
        assert!(r.get("exceptionDetails").is_none(), "{expression}: {r}");
        r["result"]["value"].clone()
    }

    /// The page's text as shown (`innerText` of `selector`).
    pub async fn text(&mut self, selector: &str) -> String {
        let sel = serde_json::to_string(selector).unwrap();
        self.eval(&format!("(document.querySelector({sel}) || {{innerText: ''}}).innerText")).await.as_str().unwrap_or_default().to_string()
    }

    /// Waits (bounded) until `selector`'s text satisfies `pred`; that text.
    pub async fn wait_text(&mut self, what: &str, selector: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let t = self.text(selector).await;
            if pred(&t) {
                return t;
            }
            assert!(tokio::time::Instant::now() < deadline, "{what}: not seen within {PATIENCE:?}; {selector} shows:\n{t}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A PNG of the page as shown.
    pub async fn screenshot(&mut self) -> Vec<u8> {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"})).await;
        base64_decode(r["data"].as_str().expect("PNG data"))
    }
}

async fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    poll_async(what, || std::future::ready(f())).await
}

async fn poll_async<T, F: std::future::Future<Output = Option<T>>>(what: &str, mut f: impl FnMut() -> F) -> T {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: not there within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A WebSocket client of the smallest kind: text frames, over plain TCP to loopback.
struct Ws(TcpStream);

impl Ws {
    async fn connect(url: &str) -> Ws {
        let rest = url.strip_prefix("ws://").expect("a ws:// URL");
        let (host, path) = rest.split_once('/').expect("a path");
        let mut tcp = TcpStream::connect(host).await.expect("Chromium's DevTools port answers");
        let request = format!(
            "GET /{path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        // The answer's head, byte by byte up to the blank line (the frames follow it).
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(tcp.read_u8().await.expect("the handshake's answer"));
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "WebSocket handshake refused: {head}");
        Ws(tcp)
    }

    async fn send(&mut self, text: &str) {
        let payload = text.as_bytes();
        let mut frame = vec![0x81u8];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n < 65536 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        // A client's frames are masked (RFC 6455 5.3).
        let mask = [0x5a, 0x13, 0xc7, 0x2e];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.0.write_all(&frame).await.unwrap();
    }

    /// The next text message (fragments joined; pings answered).
    async fn recv(&mut self) -> String {
        let mut message = Vec::new();
        loop {
            let b0 = self.0.read_u8().await.expect("a frame from Chromium");
            let b1 = self.0.read_u8().await.unwrap();
            let len = match b1 & 0x7f {
                126 => self.0.read_u16().await.unwrap() as u64,
                127 => self.0.read_u64().await.unwrap(),
                n => n as u64,
            };
            let mask = if b1 & 0x80 != 0 { Some(self.0.read_u32().await.unwrap().to_be_bytes()) } else { None };
            let mut payload = vec![0u8; len as usize];
            self.0.read_exact(&mut payload).await.unwrap();
            if let Some(m) = mask {
                payload.iter_mut().enumerate().for_each(|(i, b)| *b ^= m[i % 4]);
            }
            match b0 & 0x0f {
                0x9 => {
                    let mut pong = vec![0x8a, 0x80 | payload.len() as u8, 0, 0, 0, 0];
                    pong.extend_from_slice(&payload);
                    self.0.write_all(&pong).await.unwrap();
                    continue;
                }
                0x8 => panic!("Chromium closed the DevTools connection"),
                0xa => continue,
                _ => message.extend_from_slice(&payload),
            }
            if b0 & 0x80 != 0 {
                return String::from_utf8(message).expect("text frames");
            }
        }
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.trim_end_matches('=').bytes() {
        acc = (acc << 6) | val(c) as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
