//! Weir's HTTP/1.1 server: idle keep-alive connections give their buffers back between
//! requests and are served again when the next request comes. What a client sees must not
//! change, whatever it sends (bodies split across packets, chunked bodies, pipelined requests,
//! upgrades).

mod parking;
mod protocol;
mod support;
