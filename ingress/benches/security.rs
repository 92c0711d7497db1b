//! What authentication and rate limiting add to a request, measured on the functions the
//! stack calls (stages 4a and 4b), next to a request that has neither:
//!
//! - `jwt/cached`: a token seen before (hash + lookup + claim headers)
//! - `jwt/uncached`: a first sight of a token (ES256 signature check)
//! - `limit/local`: one local GCRA bucket
//! - `cached-jwt+local-limit`: both, as a protected route pays them
//! - global limit in Redis on loopback: latency percentiles printed (needs `redis-server`)
//!
//! `cargo bench -p weir-ingress --bench security`

use std::{hint::black_box, sync::Arc, time::Duration};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD as B64, Engine};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::HeaderMap;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
use weir_api::model::{Auth, Jwks, JwtProvider, LimitKey, RateLimit, SecretBytes};
use weir_ingress::metrics::GuardMetrics;
use weir_ingress::{
    auth::{jwks::KeySource, Authenticator, Identity},
    ratelimit::{local::DEFAULT_KEYS, redis::GlobalStore, Limiter, Outcome, Rule},
};

fn setup() -> (Arc<Auth>, Arc<KeySource>, String) {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = key.public_key_raw();
    let jwks = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "x": B64.encode(&raw[1..33]), "y": B64.encode(&raw[33..65]), "kid": "k1", "alg": "ES256"}]});
    let (source, error) = KeySource::fixed(
        "idp",
        jwks.to_string().as_bytes(),
        GuardMetrics::register(&prometheus::Registry::new()),
    );
    assert!(error.is_none());
    let provider = Arc::new(JwtProvider {
        id: "bench".into(),
        name: "idp".into(),
        issuer: "https://idp".into(),
        audiences: vec!["shop".into()],
        jwks: Jwks::Static(SecretBytes::default()),
        forward_claims: vec![("sub".into(), "x-user-id".into())],
        required_scopes: vec![],
        clock_skew: Duration::from_secs(30),
    });
    let auth = Arc::new(Auth {
        policy: "bench".into(),
        jwt: vec![provider],
        api_keys: None,
        required: true,
        strip_headers: vec!["x-user-id".into()],
    });
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("k1".into());
    let exp = jsonwebtoken::get_current_timestamp() + 3600;
    let claims =
        serde_json::json!({"iss": "https://idp", "aud": "shop", "sub": "alice", "exp": exp});
    let token = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_ec_der(&key.serialize_der()),
    )
    .unwrap();
    (auth, source, format!("Bearer {token}"))
}

fn limit(global: bool) -> Arc<RateLimit> {
    Arc::new(RateLimit {
        id: "default/bench/users".into(),
        name: "users".into(),
        key: LimitKey::Claim("sub".into()),
        requests: 1_000_000_000,
        per: Duration::from_secs(1),
        algorithm: weir_api::model::Algorithm::SlidingWindow,
        global,
        fail_open: true,
        sync_interval: None,
    })
}

fn headers(bearer: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("authorization", bearer.parse().unwrap());
    h.insert("x-user-id", "spoofed".parse().unwrap());
    h
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (auth, source, bearer) = setup();
    let metrics = GuardMetrics::register(&prometheus::Registry::new());
    let cached = Authenticator::new(auth.clone(), vec![source.clone()]);
    rt.block_on(cached.check(&mut headers(&bearer))).unwrap();
    let local = Limiter::new(
        limit(false),
        Rule::of(&limit(false)).local(DEFAULT_KEYS),
        None,
        &metrics,
    );
    let ip = "10.0.0.1".parse().unwrap();

    let mut g = c.benchmark_group("security");
    g.bench_function("baseline/header-map", |b| {
        b.iter(|| black_box(headers(&bearer)))
    });
    g.bench_function("jwt/cached", |b| {
        on_runtime(&rt, b, || async {
            cached.check(&mut headers(&bearer)).await.unwrap();
        })
    });
    g.bench_function("jwt/uncached", |b| {
        b.iter_batched(
            || Authenticator::new(auth.clone(), vec![source.clone()]),
            |fresh| rt.block_on(fresh.check(&mut headers(&bearer))).unwrap(),
            BatchSize::SmallInput,
        )
    });
    let identity = Identity::Client("alice".into());
    g.bench_function("limit/local", |b| {
        on_runtime(&rt, b, || async {
            let key = local.key(&identity, &HeaderMap::new(), ip);
            assert!(matches!(local.check(&key).await, Outcome::Allowed(_)));
        })
    });
    g.bench_function("cached-jwt+local-limit", |b| {
        on_runtime(&rt, b, || async {
            let mut h = headers(&bearer);
            let identity = cached.check(&mut h).await.unwrap();
            let key = local.key(&identity, &h, ip);
            assert!(matches!(local.check(&key).await, Outcome::Allowed(_)));
        })
    });
    g.finish();
    global_latency(&rt, &metrics);
}

/// Times `iters` awaits of `f` inside one `block_on`, as the stack awaits them inside a
/// request task (a `block_on` per call would add the runtime's own cost to every sample).
fn on_runtime<F, Fut>(rt: &tokio::runtime::Runtime, b: &mut criterion::Bencher<'_>, f: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    b.iter_custom(|iters| {
        rt.block_on(async {
            let start = std::time::Instant::now();
            for _ in 0..iters {
                f().await;
            }
            start.elapsed()
        })
    });
}

/// Sequential global-limit decisions against a redis-server on loopback: p50/p99/p999.
fn global_latency(rt: &tokio::runtime::Runtime, metrics: &GuardMetrics) {
    let port = 16390;
    let Ok(mut redis) = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
    else {
        println!("security/limit/global: skipped (no redis-server)");
        return;
    };
    rt.block_on(async {
        let store = GlobalStore::connect(vec![format!("redis://127.0.0.1:{port}")], false, Duration::from_millis(100));
        let limiter = Limiter::new(
            limit(true),
            Rule::of(&limit(true)).local(DEFAULT_KEYS),
            Some(store),
            metrics,
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut samples = Vec::with_capacity(20_000);
        let mut fallbacks = 0;
        for i in 0..22_000u32 {
            let start = std::time::Instant::now();
            let outcome = limiter.check(&format!("user{}", i % 100)).await;
            let took = start.elapsed();
            if i >= 2_000 {
                samples.push(took);
            }
            if !matches!(outcome, Outcome::Allowed(_)) {
                fallbacks += 1;
            }
        }
        samples.sort();
        let p = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
        println!(
            "security/limit/global (redis loopback, {} sequential calls): p50 {:?}  p99 {:?}  p99.9 {:?}  max {:?}  not-allowed {fallbacks}",
            samples.len(), p(0.50), p(0.99), p(0.999), samples[samples.len() - 1]
        );
    });
    let _ = redis.kill();
    let _ = redis.wait();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
