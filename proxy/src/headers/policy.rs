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
