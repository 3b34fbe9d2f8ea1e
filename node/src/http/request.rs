//! Reading an HTTP/1.1 request head from bytes, and routing it: pure functions over `&[u8]`, so
//! that garbage from the network is tested without sockets and never panics.

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /`: the status page.
    Page,
    /// `GET /status.json`: what the page shows.
    StatusJson,
    /// `GET /metrics`: the Prometheus exposition.
    Metrics,
    /// A GET of any other path: 404.
    NotFound,
    /// Any method but GET: 405.
    MethodNotAllowed,
}

/// Why a request head cannot be answered normally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// The request line is not `METHOD SP TARGET SP HTTP/1.x`: 400.
    Malformed(&'static str),
    /// An HTTP version other than 1.0 or 1.1: 505.
    Version,
}

/// Where the head ends in `buf` (the index just past the blank line), if it is all there.
/// Accepts bare `\n` line ends as well as `\r\n`.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < buf.len() {
        if buf[i] == b'\n' {
            if buf.get(i + 1) == Some(&b'\n') {
                return Some(i + 2);
            }
            if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

/// Routes the request whose head is `head` (headers are not needed: every answer closes the
/// connection and no route reads a body).
pub fn route(head: &[u8]) -> Result<Route, HeadError> {
    let line_end = head.iter().position(|b| *b == b'\n').unwrap_or(head.len());
    let line = head[..line_end].strip_suffix(b"\r").unwrap_or(&head[..line_end]);
    let line = std::str::from_utf8(line).map_err(|_| HeadError::Malformed("request line is not UTF-8"))?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Malformed("request line is not METHOD TARGET VERSION"));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(HeadError::Malformed("bad method"));
    }
    if !target.starts_with('/') {
        return Err(HeadError::Malformed("target is not an absolute path"));
    }
    if !version.starts_with("HTTP/") {
        return Err(HeadError::Malformed("bad protocol"));
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(HeadError::Version);
    }
    if method != "GET" {
        return Ok(Route::MethodNotAllowed);
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    Ok(match path {
        "/" | "/index.html" => Route::Page,
        "/status.json" => Route::StatusJson,
        "/metrics" => Route::Metrics,
        _ => Route::NotFound,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each endpoint of docs/observability.md, queries ignored; other paths 404, other
    /// methods 405.
    #[test]
    fn routes_the_documented_endpoints() {
        assert_eq!(route(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), Ok(Route::Page));
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\n\r\n"), Ok(Route::Metrics));
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Ok(Route::Metrics));
        assert_eq!(route(b"GET /status.json HTTP/1.1\r\n\r\n"), Ok(Route::StatusJson));
        assert_eq!(route(b"GET /nope HTTP/1.1\r\n\r\n"), Ok(Route::NotFound));
        assert_eq!(route(b"POST /metrics HTTP/1.1\r\n\r\n"), Ok(Route::MethodNotAllowed));
        assert_eq!(route(b"HEAD / HTTP/1.1\r\n\r\n"), Ok(Route::MethodNotAllowed));
        assert_eq!(route(b"GET / HTTP/2.0\r\n\r\n"), Err(HeadError::Version));
    }

    /// Garbage from the network is refused, never a panic (STYLE.md rule 7).
    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for head in [
            &b""[..],
            b"\r\n\r\n",
            b"GET\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1 extra\r\n\r\n",
            b"get / HTTP/1.1\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"GET / FTP/1.1\r\n\r\n",
            b"\xff\xfe / HTTP/1.1\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        ] {
            assert!(matches!(route(head), Err(HeadError::Malformed(_))), "{head:?}");
        }
    }

    /// The head ends at the first blank line, with either line ending; a partial head is not
    /// taken for a whole one.
    #[test]
    fn head_ends_at_the_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
        assert_eq!(head_end(b""), None);
        assert_eq!(head_end(b"\n"), None);
    }
}
