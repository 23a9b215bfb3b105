//! A recording HTTP receiver on loopback, the stand-in for webhook endpoints, Slack and
//! Stripe: it answers each request with the next queued status (then 200; a 429 says
//! `Retry-After: 0`) and records the status, the lower-cased headers and the body, before
//! answering, so a client that got its answer finds its request recorded.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// A request: lower-cased headers (the request line first, as `:request`) and the body.
pub type Request = (Vec<(String, String)>, String);

/// A header of a request.
pub fn header(r: &Request, name: &str) -> Option<String> {
    r.0.iter().find(|h| h.0 == name).map(|h| h.1.clone())
}

/// Hex HMAC-SHA256 of `msg` keyed with `secret` (what signed webhooks carry).
pub fn hmac_hex(secret: &[u8], msg: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(msg.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The receiver; it listens until the test process ends.
pub struct Receiver {
    /// `http://127.0.0.1:PORT/PATH`.
    pub url: String,
    got: Arc<Mutex<Vec<(u16, Request)>>>,
}

impl Receiver {
    /// Starts one answering `statuses` in turn, then 200.
    pub fn start(path: &str, statuses: Vec<u16>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}{path}", listener.local_addr().unwrap());
        let got: Arc<Mutex<Vec<(u16, Request)>>> = Arc::default();
        let queue = Mutex::new(VecDeque::from(statuses));
        let g = got.clone();
        std::thread::spawn(move || {
            for sock in listener.incoming() {
                let mut sock = sock.unwrap();
                let mut r = BufReader::new(sock.try_clone().unwrap());
                let (mut headers, mut line) = (Vec::new(), String::new());
                r.read_line(&mut line).unwrap();
                // The request line, as a pseudo-header: `POST /path HTTP/1.1`.
                headers.push((":request".to_string(), line.trim_end().to_string()));
                loop {
                    line.clear();
                    r.read_line(&mut line).unwrap();
                    let l = line.trim_end();
                    if l.is_empty() {
                        break;
                    }
                    let (k, v) = l.split_once(':').unwrap();
                    headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
                }
                let len: usize = headers
                    .iter()
                    .find(|h| h.0 == "content-length")
                    .map_or(0, |h| h.1.parse().unwrap());
                let mut body = vec![0; len];
                r.read_exact(&mut body).unwrap();
                let status = queue.lock().unwrap().pop_front().unwrap_or(200);
                g.lock()
                    .unwrap()
                    .push((status, (headers, String::from_utf8(body).unwrap())));
                let extra = if status == 429 {
                    "Retry-After: 0\r\n"
                } else {
                    ""
                };
                write!(
                    sock,
                    "HTTP/1.1 {status} X\r\n{extra}Content-Length: 2\r\nConnection: close\r\n\r\nok"
                )
                .unwrap();
            }
        });
        Receiver { url, got }
    }

    /// Every request so far, with the status it got.
    pub fn requests(&self) -> Vec<(u16, Request)> {
        self.got.lock().unwrap().clone()
    }

    /// The requests answered 2xx.
    pub fn accepted(&self) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| (200..300).contains(&r.0))
            .map(|r| r.1)
            .collect()
    }
}
