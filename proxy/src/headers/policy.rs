//! How much of the request fields [`super::stamp`] sets, as an operator chooses it with
//! weir-ingress's `--request-id`, `--trace-context` and `--forwarded`.

/// Which request fields the gateway sets. The default is all of them, each as [`super::stamp`]
/// describes it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FieldPolicy {
    /// `x-request-id`.
    pub request_id: RequestIdMode,
    /// `traceparent`.
    pub trace_context: TraceContext,
    /// Which new traces are sampled (the `traceparent`'s sampled flag).
    pub sampling: Sampling,
    /// `X-Forwarded-For`, `-Proto` and `-Host`.
    pub forwarded: ForwardedMode,
}

/// How a request gets its `x-request-id`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RequestIdMode {
    /// The client's id when it is usable (1-128 visible ASCII characters), a new one otherwise.
    #[default]
    PreserveOrGenerate,
    /// Always a new id: a client cannot choose what lands in the backends' logs.
    Generate,
    /// The client's id when it sent one; none is made (the header passes as the client sent
    /// it, and the response and the access log carry it only when it is usable).
    Preserve,
}

/// What happens to W3C trace context.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TraceContext {
    /// The client's trace continues with a new span id; a request without a valid
    /// `traceparent` starts a trace.
    #[default]
    Continue,
    /// `traceparent` passes as the client sent it, or not at all.
    Off,
}

/// Which traces a proxy starts as sampled (`--trace-sampling`): a trace it continues keeps its
/// caller's sampled flag (parent-based). The decision reads the trace id's random low 64 bits,
/// as OpenTelemetry's TraceIdRatioBased sampler does, so every proxy decides a trace alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sampling {
    /// Sampled when the trace id's low 64 bits are below this (`u64::MAX`: all).
    below: u64,
}

impl Sampling {
    /// One trace in a hundred, the default.
    pub const DEFAULT_RATIO: f64 = 0.01;

    /// Samples `ratio` of new traces (0 to 1).
    pub fn ratio(ratio: f64) -> Result<Self, String> {
        if !(0.0..=1.0).contains(&ratio) {
            return Err(format!(
                "{ratio} is not a ratio from 0 to 1: 0.01 samples one new trace in a hundred"
            ));
        }
        // 2^64 × ratio, saturating at every trace for 1.
        let below = if ratio >= 1.0 {
            u64::MAX
        } else {
            (ratio * 18_446_744_073_709_551_616.0) as u64
        };
        Ok(Self { below })
    }

    /// Whether a new trace of id `trace` is sampled.
    pub fn samples(self, trace: u128) -> bool {
        let low = trace as u64;
        self.below == u64::MAX || low < self.below
    }
}

impl Default for Sampling {
    fn default() -> Self {
        Self::ratio(Self::DEFAULT_RATIO).unwrap_or(Self { below: 0 })
    }
}

impl std::str::FromStr for Sampling {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ratio: f64 = s
            .parse()
            .map_err(|_| format!("{s:?} is not a number from 0 to 1"))?;
        Self::ratio(ratio)
    }
}

/// What the gateway says to backends about where a request came from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ForwardedMode {
    /// The client's address appended to the `X-Forwarded-For` it sent; `X-Forwarded-Proto`
    /// and `-Host` set. For a gateway behind a load balancer that sets `X-Forwarded-For`.
    #[default]
    Append,
    /// `X-Forwarded-For` is the client's address alone, `-Proto` and `-Host` set, and the
    /// client's `Forwarded` and `X-Real-IP` dropped: for a gateway that clients reach directly,
    /// so none can claim another address to the backends.
    Replace,
    /// None set, none removed: these headers pass as the client sent them.
    Off,
}

/// The value `s` names among `choices`, or an error that lists them (for the command line).
pub(crate) fn choose<T: Copy>(s: &str, choices: &[(&str, T)]) -> Result<T, String> {
    match choices.iter().find(|(name, _)| *name == s) {
        Some((_, value)) => Ok(*value),
        None => {
            let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
            Err(format!("{s:?} is not one of: {}", names.join(", ")))
        }
    }
}

/// `FromStr` for a mode by its command-line names.
macro_rules! named {
    ($mode:ty: $($name:literal => $variant:ident),+) => {
        impl ::std::str::FromStr for $mode {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                $crate::headers::choose(s, &[$(($name, Self::$variant)),+])
            }
        }
    };
}
pub(crate) use named;

named!(RequestIdMode: "preserve-or-generate" => PreserveOrGenerate, "generate" => Generate,
    "preserve" => Preserve);
named!(TraceContext: "continue" => Continue, "off" => Off);
named!(ForwardedMode: "append" => Append, "replace" => Replace, "off" => Off);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_named_on_the_command_line() {
        assert_eq!("generate".parse(), Ok(RequestIdMode::Generate));
        assert_eq!("preserve".parse(), Ok(RequestIdMode::Preserve));
        let default: RequestIdMode = "preserve-or-generate".parse().unwrap();
        assert_eq!(default, RequestIdMode::default());
        assert_eq!("off".parse(), Ok(TraceContext::Off));
        assert_eq!("continue".parse(), Ok(TraceContext::Continue));
        assert_eq!("replace".parse(), Ok(ForwardedMode::Replace));
        assert_eq!("append".parse(), Ok(ForwardedMode::default()));
        assert_eq!(
            "Off".parse::<ForwardedMode>(),
            Err("\"Off\" is not one of: append, replace, off".to_string())
        );
    }
}
