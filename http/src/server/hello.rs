//! The ClientHello read ahead on a TLS listener with passthrough routes: its SNI name, peeked
//! (never consumed) so the handshake, or the backend a passthrough route carries the connection
//! to, reads it afresh.

use tokio::net::TcpStream;

use crate::detect::peek_until;

/// What a ClientHello read ahead said.
pub(super) enum Hello {
    /// Its SNI name, if it has one.
    Sni(Option<String>),
    /// Not a TLS ClientHello, or one larger than a record.
    Invalid,
    /// The client closed first.
    Closed,
}

/// The largest TLS record: a ClientHello read ahead for its SNI must fit in its first.
const MAX_RECORD: usize = 1 << 14;

/// Reads a connection's ClientHello without consuming it (the handshake, or the backend a
/// passthrough route carries it to, reads it afresh) and says which SNI name it asks for.
/// The record's header says how much to wait for; a usual ClientHello (under 2 KiB, post-quantum
/// key shares included) is read in one peek, a larger one (up to a whole record, nothing more is
/// held) in a second. rustls parses it. Callers bound the wait with a timeout.
pub(super) async fn hello_sni(stream: &TcpStream) -> std::io::Result<Hello> {
    let mut buf = vec![0u8; USUAL_HELLO];
    let seen = peek_until(stream, &mut buf, |seen| hello_in(seen, USUAL_HELLO)).await?;
    let length = match seen {
        None => return Ok(Hello::Closed),
        Some(Peeked::Hello(hello)) => return Ok(hello),
        Some(Peeked::Longer(length)) => length,
    };
    let mut buf = vec![0u8; 5 + length];
    let whole = buf.len();
    match peek_until(stream, &mut buf, |seen| hello_in(seen, whole)).await? {
        None => Ok(Hello::Closed),
        Some(Peeked::Hello(hello)) => Ok(hello),
        Some(Peeked::Longer(_)) => Ok(Hello::Invalid),
    }
}

/// The room a ClientHello usually fits in.
const USUAL_HELLO: usize = 2048;

/// What the first bytes of a connection say so far.
enum Peeked {
    Hello(Hello),
    /// A record of this length, longer than the room it was peeked into.
    Longer(usize),
}

/// Decides from the bytes `seen` so far, peeked into `room` bytes: `None` while more are
/// needed (and can fit).
fn hello_in(seen: &[u8], room: usize) -> Option<Peeked> {
    let invalid = Some(Peeked::Hello(Hello::Invalid));
    let length = match seen {
        [first, ..] if *first != 0x16 => return invalid,
        [_, _, _, high, low, ..] => usize::from(u16::from_be_bytes([*high, *low])),
        _ => return None,
    };
    if !(1..=MAX_RECORD).contains(&length) {
        return invalid;
    }
    if seen.len() < 5 + length {
        return (5 + length > room).then_some(Peeked::Longer(length));
    }
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rest = &seen[..5 + length];
    while !rest.is_empty() {
        match acceptor.read_tls(&mut rest) {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => return invalid,
        }
    }
    match acceptor.accept() {
        Ok(Some(accepted)) => {
            let sni = accepted
                .client_hello()
                .server_name()
                .map(str::to_ascii_lowercase);
            Some(Peeked::Hello(Hello::Sni(sni)))
        }
        // A ClientHello longer than its first record: more than Weir reads ahead.
        Ok(None) | Err(_) => invalid,
    }
}
