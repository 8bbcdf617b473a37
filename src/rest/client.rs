//! A minimal blocking HTTP/1.1 client for `iotconnect status`: `GET` over one TCP connection per
//! request (`Connection: close`), optional Basic credentials, `Content-Length` or chunked bodies.
//! Only `http://` (the worker's listeners are plain HTTP).

use anyhow::{bail, Context};
use base64::Engine;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Where the worker's REST API is.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// `host:port`
    pub authority: String,
    /// Path prefix without a trailing `/` (usually empty).
    pub base: String,
    /// `user:password` for Basic authentication.
    pub credentials: Option<crate::config::Secret>,
    pub timeout: Duration,
}

impl Endpoint {
    /// Parses `http://host:port[/prefix]` (port 80 when absent).
    pub fn parse(url: &str) -> anyhow::Result<Endpoint> {
        let rest = url
            .strip_prefix("http://")
            .with_context(|| format!("{url}: only http:// URLs are supported"))?;
        let (authority, base) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() {
            bail!("{url}: no host");
        }
        let authority = if authority.rsplit_once(':').is_some_and(|(_, p)| {
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !authority.ends_with(']')
        }) {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        Ok(Endpoint {
            authority,
            base: base.to_string(),
            credentials: None,
            timeout: Duration::from_secs(10),
        })
    }

    /// `GET path`: the status code and the body.
    pub fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let addr = self
            .authority
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve {}", self.authority))?
            .next()
            .with_context(|| format!("{} resolves to no address", self.authority))?;
        let mut stream = TcpStream::connect_timeout(&addr, self.timeout).with_context(|| {
            format!("cannot connect to the worker at http://{}", self.authority)
        })?;
        stream.set_read_timeout(Some(self.timeout))?;
        stream.set_write_timeout(Some(self.timeout))?;
        let mut req = format!(
            "GET {}{path} HTTP/1.1\r\nHost: {}\r\nAccept: application/json, text/plain\r\nConnection: close\r\n",
            self.base, self.authority
        );
        if let Some(c) = &self.credentials {
            let enc = base64::engine::general_purpose::STANDARD.encode(c.expose());
            req.push_str(&format!("Authorization: Basic {enc}\r\n"));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes())?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .with_context(|| format!("reading the answer to GET {path}"))?;
        parse_response(&raw).with_context(|| format!("GET {path}: malformed HTTP answer"))
    }
}

/// Status code and body of a complete HTTP/1.1 response.
pub fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, String)> {
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..head_end]);
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .context("no status line")?;
    let chunked = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.to_ascii_lowercase().contains("chunked")
        })
    });
    let body = &raw[head_end + 4..];
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("chunk size line")?;
        let size_text = String::from_utf8_lossy(&body[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .context("chunk size")?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&body[..size]);
        body = body.get(size + 2..).unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_responses() {
        let e = Endpoint::parse("http://127.0.0.1:8083/").unwrap();
        assert_eq!(
            (e.authority.as_str(), e.base.as_str()),
            ("127.0.0.1:8083", "")
        );
        let e = Endpoint::parse("http://localhost/connect").unwrap();
        assert_eq!(
            (e.authority.as_str(), e.base.as_str()),
            ("localhost:80", "/connect")
        );
        assert!(Endpoint::parse("https://x:1").is_err());
        let r = parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").unwrap();
        assert_eq!(r, (200, "ok".to_string()));
        let r = parse_response(
            b"HTTP/1.1 401 Unauthorized\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r, (401, "abcde".to_string()));
    }
}
