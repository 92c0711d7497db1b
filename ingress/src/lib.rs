//! weir-ingress as a library: the request pipeline and the north-south guards (auth and rate
//! limiting), shared by the binary and the benchmarks.

pub mod auth;
pub mod ratelimit;
pub mod security;
pub mod stack;
