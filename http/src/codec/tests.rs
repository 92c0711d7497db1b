use super::*;
use http::Request;

fn parts(method: Method, uri: &str, headers: &[(&str, &str)]) -> request::Parts {
    let mut b = Request::builder().method(method).uri(uri);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(()).unwrap().into_parts().0
}

fn head(bytes: &[u8]) -> Head {
    let mut buf = BytesMut::from(bytes);
    parse_head(&mut buf, &mut Fields::default())
        .unwrap()
        .unwrap()
}

#[test]
fn request_head_puts_host_first_and_frames_the_body_itself() {
    let p = parts(
        Method::POST,
        "http://10.0.0.1:8080/a?b=1",
        &[
            ("x-one", "1"),
            ("content-length", "999"),
            ("transfer-encoding", "chunked"),
            ("x-two", "2"),
        ],
    );
    let mut out = Vec::new();
    encode_head(&mut out, &p, "10.0.0.1:8080", RequestFraming::Length(12));
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "POST /a?b=1 HTTP/1.1\r\nhost: 10.0.0.1:8080\r\nx-one: 1\r\nx-two: 2\r\n\
         content-length: 12\r\n\r\n"
    );

    let p = parts(Method::GET, "/", &[("host", "shop.example.com")]);
    let mut out = Vec::new();
    encode_head(&mut out, &p, "10.0.0.1:8080", RequestFraming::Chunked);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "GET / HTTP/1.1\r\nhost: shop.example.com\r\ntransfer-encoding: chunked\r\n\r\n"
    );
}

#[test]
fn request_framing_follows_the_method_and_the_body() {
    assert_eq!(
        RequestFraming::of(&Method::GET, true, Some(0)),
        RequestFraming::None
    );
    assert_eq!(
        RequestFraming::of(&Method::POST, true, Some(0)),
        RequestFraming::Length(0)
    );
    assert_eq!(
        RequestFraming::of(&Method::PUT, false, Some(70_000)),
        RequestFraming::Length(70_000)
    );
    assert_eq!(
        RequestFraming::of(&Method::POST, false, None),
        RequestFraming::Chunked
    );
}

#[test]
fn chunk_sizes_and_the_last_chunk() {
    let mut out = Vec::new();
    encode_chunk_size(&mut out, 0x1a2f);
    encode_chunk_size(&mut out, 1);
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", HeaderValue::from_static("abc"));
    encode_last_chunk(&mut out, Some(&trailers));
    assert_eq!(out, b"1a2f\r\n1\r\n0\r\nx-checksum: abc\r\n\r\n");
}

#[test]
fn a_head_arriving_in_pieces_parses_once_whole_and_leaves_the_body() {
    let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2\r\n\r\nhello";
    let mut names = Fields::default();
    let mut buf = BytesMut::new();
    for (i, b) in wire.iter().enumerate() {
        buf.extend_from_slice(&[*b]);
        let parsed = parse_head(&mut buf, &mut names).unwrap();
        if i + 1 < wire.len() - 5 {
            assert!(parsed.is_none(), "complete too early at byte {i}");
            continue;
        }
        let head = parsed.unwrap();
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.version, Version::HTTP_11);
        let a: Vec<_> = head.headers.get_all("x-a").iter().collect();
        assert_eq!(a, ["1", "2"]);
        assert_eq!(body_length(&Method::GET, &head), Ok(BodyLength::Length(5)));
        break;
    }
    // What is left is the start of the body (here, none of it yet).
    assert!(buf.is_empty());
}

#[test]
fn bad_heads_are_errors_that_say_what_was_wrong() {
    let mut names = Fields::default();
    let mut buf = BytesMut::from(&b"HTTP/1.1 2x0 OK\r\n\r\n"[..]);
    assert!(matches!(
        parse_head(&mut buf, &mut names),
        Err(ProtocolError::Malformed(_))
    ));
    let mut big = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
    big.resize(MAX_HEAD + 10, b'a');
    let mut buf = BytesMut::from(&big[..]);
    assert_eq!(
        parse_head(&mut buf, &mut names).unwrap_err(),
        ProtocolError::HeadTooLarge
    );
    let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..200 {
        many.extend_from_slice(format!("x-{i}: 1\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let mut buf = BytesMut::from(&many[..]);
    assert_eq!(
        parse_head(&mut buf, &mut names).unwrap_err(),
        ProtocolError::HeadTooLarge
    );
}

#[test]
fn body_length_follows_rfc_9112() {
    let get = Method::GET;
    let ok = |extra: &str| head(format!("HTTP/1.1 200 OK\r\n{extra}\r\n").as_bytes());
    assert_eq!(
        body_length(&Method::HEAD, &ok("content-length: 10\r\n")),
        Ok(BodyLength::Empty)
    );
    assert_eq!(
        body_length(&get, &head(b"HTTP/1.1 204 No Content\r\n\r\n")),
        Ok(BodyLength::Empty)
    );
    assert_eq!(
        body_length(
            &get,
            &head(b"HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n")
        ),
        Ok(BodyLength::Empty)
    );
    assert_eq!(
        body_length(
            &get,
            &ok("transfer-encoding: Chunked\r\ncontent-length: 3\r\n")
        ),
        Ok(BodyLength::Chunked)
    );
    // Codings Weir does not decode, which the client would get still coded.
    for coded in [
        "transfer-encoding: gzip, chunked\r\n",
        "transfer-encoding: gzip\r\ntransfer-encoding: chunked\r\n",
        "transfer-encoding: gzip\r\n",
        "transfer-encoding: chunked, chunked\r\n",
    ] {
        assert_eq!(
            body_length(&get, &ok(coded)),
            Err(ProtocolError::UnsupportedCoding),
            "{coded}"
        );
    }
    assert_eq!(
        body_length(&get, &ok("content-length: 7, 7\r\ncontent-length: 7\r\n")),
        Ok(BodyLength::Length(7))
    );
    assert_eq!(
        body_length(&get, &ok("content-length: 0\r\n")),
        Ok(BodyLength::Empty)
    );
    assert_eq!(body_length(&get, &ok("")), Ok(BodyLength::UntilClose));
    assert_eq!(
        body_length(&get, &ok("content-length: 18446744073709551615\r\n")),
        Ok(BodyLength::Length(u64::MAX))
    );
    for bad in [
        "7, 8",
        "-1",
        "+5",
        "",
        "7,",
        "0x10",
        "18446744073709551616",
        "99999999999999999999999",
    ] {
        assert_eq!(
            body_length(&get, &ok(&format!("content-length: {bad}\r\n"))),
            Err(ProtocolError::ContentLength),
            "{bad}"
        );
    }
}

#[test]
fn keep_alive_by_version_and_connection_tokens() {
    assert!(head(b"HTTP/1.1 200 OK\r\n\r\n").keep_alive);
    assert!(!head(b"HTTP/1.1 200 OK\r\nConnection: x, Close\r\n\r\n").keep_alive);
    assert!(!head(b"HTTP/1.0 200 OK\r\n\r\n").keep_alive);
    assert!(head(b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\n\r\n").keep_alive);
    assert!(
        !head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n")
            .keep_alive
    );
}

#[test]
fn connection_fields_that_only_steer_this_connection_stay_out_of_the_map() {
    let names = |bytes: &[u8]| {
        let h = head(bytes);
        let names: Vec<_> = h.headers.keys().map(|n| n.as_str().to_string()).collect();
        (names, h.keep_alive)
    };
    let (kept, keep_alive) = names(
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nServer: a\r\n\r\n",
    );
    assert_eq!((kept, keep_alive), (vec!["server".to_string()], true));
    let (kept, keep_alive) = names(b"HTTP/1.1 200 OK\r\nConnection: close\r\nServer: a\r\n\r\n");
    assert_eq!((kept, keep_alive), (vec!["server".to_string()], false));
    // Tokens that name fields, or an upgrade, are left for the proxy to act on.
    let (kept, _) = names(b"HTTP/1.1 200 OK\r\nConnection: close, x-hop\r\nX-Hop: 1\r\n\r\n");
    assert_eq!(kept, ["connection", "x-hop"]);
    let (kept, _) = names(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    );
    assert_eq!(kept, ["connection", "upgrade"]);

    let request = |bytes: &[u8]| {
        let mut buf = BytesMut::from(bytes);
        parse_request(&mut buf, &mut Fields::default(), MAX_HEAD)
            .unwrap()
            .unwrap()
    };
    let plain = request(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n");
    assert!(plain.keep_alive && !plain.upgrade);
    assert_eq!(plain.parts.headers.len(), 1);
    let upgrade = request(
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
    );
    assert!(upgrade.upgrade);
    assert_eq!(upgrade.parts.headers["connection"], "keep-alive, Upgrade");
}

/// Feeds `wire` to a decoder `step` bytes at a time; returns the data and the trailers.
fn decode_in_steps(
    wire: &[u8],
    step: usize,
) -> Result<(Vec<u8>, Option<HeaderMap>), ProtocolError> {
    let mut decoder = Chunked::default();
    let mut buf = BytesMut::new();
    let mut data = Vec::new();
    let mut fed = 0;
    loop {
        match decoder.decode(&mut buf)? {
            Decoded::Data(d) => data.extend_from_slice(&d),
            Decoded::Trailers(t) => return Ok((data, Some(t))),
            Decoded::Done => return Ok((data, None)),
            Decoded::More => {
                assert!(fed < wire.len(), "decoder wants more than the whole body");
                let end = (fed + step).min(wire.len());
                buf.extend_from_slice(&wire[fed..end]);
                fed = end;
            }
        }
    }
}

#[test]
fn chunked_bodies_decode_however_the_bytes_are_split() {
    let wire = b"5;name=v\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-sum: 9\r\n\r\n";
    for step in [1, 2, 3, 7, wire.len()] {
        let (data, trailers) = decode_in_steps(wire, step).unwrap();
        assert_eq!(data, b"helloabcdefghijklmnopqrstuvwxyz", "step {step}");
        assert_eq!(trailers.unwrap()["x-sum"], "9");
    }
    let (data, trailers) = decode_in_steps(b"3\r\nabc\r\n0\r\n\r\n", 2).unwrap();
    assert_eq!((data.as_slice(), trailers), (&b"abc"[..], None));
}

#[test]
fn broken_chunked_bodies_are_errors() {
    for wire in [
        &b"zz\r\nhello\r\n0\r\n\r\n"[..],
        b"5\r\nhelloXX0\r\n\r\n",
        b"\r\n",
        b"fffffffffffffffff\r\n",
        b"123456789012345678\r\n",
        // Bare LFs are refused wherever a line ends, never read as a line end.
        b"5\nhello\r\n0\r\n\r\n",
        b"5\r\nhello\n0\r\n\r\n",
        b"5\r\nhello\r\n0\n\r\n",
        b"0\r\n\n",
        b"0\r\nx-sum: 9\n\r\n",
        // Whitespace only before an extension; no control characters in one.
        b"5 \r\nhello\r\n0\r\n\r\n",
        b" 5\r\nhello\r\n0\r\n\r\n",
        b"5\r;a\r\nhello\r\n0\r\n\r\n",
        b"5;a\x00b\r\nhello\r\n0\r\n\r\n",
    ] {
        assert_eq!(
            decode_in_steps(wire, 1).unwrap_err(),
            ProtocolError::Chunk,
            "{}",
            String::from_utf8_lossy(wire)
        );
    }
}

#[test]
fn names_of_the_previous_head_are_reused_only_when_written_the_same() {
    // The same connection's heads, one after the other, on one scratch list.
    let mut names = Fields::default();
    let mut parse = |bytes: &[u8]| {
        let mut buf = BytesMut::from(bytes);
        parse_head(&mut buf, &mut names).unwrap().unwrap().headers
    };
    let long = "X-A-Custom-Header-Name-Longer-Than-32";
    let first = parse(b"HTTP/1.1 200 OK\r\nServer: a\r\nX-Trace: 1\r\nContent-Length: 0\r\n\r\n");
    let second = parse(b"HTTP/1.1 200 OK\r\nserver: b\r\nX-Other: 2\r\n\r\n");
    let third = parse(
        format!("HTTP/1.1 200 OK\r\nSERVER: c\r\nX-Other: 3\r\nX-Trace: 4\r\n{long}: 5\r\n\r\n")
            .as_bytes(),
    );
    let fourth = parse(
        format!("HTTP/1.1 200 OK\r\nSERVER: d\r\nX-Other: 6\r\nX-Trace: 7\r\n{long}: 8\r\n\r\n")
            .as_bytes(),
    );
    let fifth =
        parse(b"HTTP/1.1 200 OK\r\nSERVER: e\r\nX-Other: 9\r\nX-Trace: 10\r\nX-Short: 11\r\n\r\n");
    let fields = |h: &HeaderMap| {
        h.iter()
            .map(|(n, v)| format!("{n}={}", v.to_str().unwrap()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        fields(&first),
        ["server=a", "x-trace=1", "content-length=0"]
    );
    assert_eq!(fields(&second), ["server=b", "x-other=2"]);
    let long = long.to_ascii_lowercase();
    assert_eq!(
        fields(&third),
        ["server=c", "x-other=3", "x-trace=4", &format!("{long}=5")]
    );
    assert_eq!(
        fields(&fourth),
        ["server=d", "x-other=6", "x-trace=7", &format!("{long}=8")]
    );
    assert_eq!(
        fields(&fifth),
        ["server=e", "x-other=9", "x-trace=10", "x-short=11"]
    );
}

#[test]
fn a_last_chunk_ending_in_a_bare_lf_is_an_error_at_once_not_a_wait() {
    // Read leniently, `0\n` would end the body and `\r\n` start a trailer section that never
    // ends: the decoder would ask for more forever.
    let mut buf = BytesMut::from(&b"5\r\nhello\r\n0\n\r\n"[..]);
    let mut decoder = Chunked::default();
    assert!(matches!(decoder.decode(&mut buf), Ok(Decoded::Data(_))));
    assert_eq!(decoder.decode(&mut buf), Err(ProtocolError::Chunk));
}

#[test]
fn chunk_extensions_may_follow_spaces_and_a_trailer_section_may_follow_the_last_chunk() {
    let (data, trailers) =
        decode_in_steps(b"5 \t;ext=\"a b\"\r\nhello\r\n0;last\r\n\r\n", 1).unwrap();
    assert_eq!((data.as_slice(), trailers), (&b"hello"[..], None));
    // What follows the body (a pipelined request, even one with bare LFs) is not the body's.
    let mut buf = BytesMut::from(&b"0\r\n\r\nGET / HTTP/1.1\nhost: a\n\n"[..]);
    assert_eq!(Chunked::default().decode(&mut buf), Ok(Decoded::Done));
    assert_eq!(&buf[..], b"GET / HTTP/1.1\nhost: a\n\n");
    let mut buf = BytesMut::from(&b"0\r\nx: 1\r\n\r\nGET / HTTP/1.1\nhost: a\n\n"[..]);
    assert!(matches!(
        Chunked::default().decode(&mut buf),
        Ok(Decoded::Trailers(_))
    ));
}

#[test]
fn a_request_with_more_than_one_host_field_is_refused() {
    for head in [
        &b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a\r\nx: 1\r\nhost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: a\r\nHOST:\r\n\r\n",
    ] {
        let mut buf = BytesMut::from(head);
        assert_eq!(
            parse_request(&mut buf, &mut Fields::default(), MAX_HEAD).unwrap_err(),
            ProtocolError::DuplicateHost,
            "{}",
            String::from_utf8_lossy(head)
        );
    }
    let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..]);
    assert!(parse_request(&mut buf, &mut Fields::default(), MAX_HEAD)
        .unwrap()
        .is_some());
}

#[test]
fn a_long_chunk_line_or_trailer_section_is_refused_however_it_was_split() {
    let mut line = b"5;".to_vec();
    line.extend(std::iter::repeat_n(b'a', 5000));
    line.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
    let mut trailers = b"0\r\nx: ".to_vec();
    trailers.extend(std::iter::repeat_n(b'a', 20_000));
    trailers.extend_from_slice(b"\r\n\r\n");
    for (wire, error) in [
        (line, ProtocolError::Chunk),
        (trailers, ProtocolError::HeadTooLarge),
    ] {
        for step in [97, 4096, wire.len()] {
            assert_eq!(
                decode_in_steps(&wire, step).unwrap_err(),
                error,
                "step {step}"
            );
        }
    }
}
