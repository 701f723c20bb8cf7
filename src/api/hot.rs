//! The direct way in for the six calls a scraper makes for every page it fetches: acquire,
//! mark_good, mark_bad, retire, release and status_code.
//!
//! axum's router finds a route by walking its tree, then copies and percent-decodes every path
//! parameter into the request's extensions and records the matched route there too: four
//! allocations and about 4,000 instructions a request, an eighth of a mark_good (callgrind), where
//! these paths need a prefix and two splits. So [`App`] looks at each request first. A `POST` whose
//! raw path is exactly one of these routes, with a pool and a session id made only of the
//! characters such names may hold, goes straight to its handler through the same middleware as every
//! route ([`super::edge`]). Everything else, including these routes with a percent-encoded or
//! otherwise unusual name (the router decodes those, and the handler then refuses or serves them),
//! goes to the router as before. Both ways end in the same `*_in` functions of [`super::sessions`],
//! which check the names, so the two cannot disagree on which names are valid (the ids `.` and `..`
//! take the direct way and are refused there exactly as the router's handler refuses them), and the
//! router still holds every route, so `openapi.yaml` is checked against it as before.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::{FromRequest, Request};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower::{Layer, Service};

use super::edge::{Admit, AdmitLayer, Observe, ObserveLayer};
use super::sessions::{self, Mark};
use super::{AppJson, AppState};
use crate::error::ApiError;

/// One of the calls with a direct way in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HotCall {
    /// `POST /v1/pools/{pool}/acquire`
    Acquire,
    /// `POST /v1/pools/{pool}/sessions/{id}/mark_good`
    MarkGood,
    /// `POST /v1/pools/{pool}/sessions/{id}/mark_bad`
    MarkBad,
    /// `POST /v1/pools/{pool}/sessions/{id}/retire`
    Retire,
    /// `POST /v1/pools/{pool}/sessions/{id}/release`
    Release,
    /// `POST /v1/pools/{pool}/sessions/{id}/status_code`
    StatusCode,
}

impl HotCall {
    /// Every call, in the order of their discriminants (which index the stacks of [`App`]).
    pub const ALL: [HotCall; 6] =
        [HotCall::Acquire, HotCall::MarkGood, HotCall::MarkBad, HotCall::Retire, HotCall::Release, HotCall::StatusCode];

    /// Its route as the router declares it, which is also its `route` label in the metrics.
    pub fn template(self) -> &'static str {
        match self {
            HotCall::Acquire => sessions::ACQUIRE,
            HotCall::MarkGood => sessions::MARK_GOOD,
            HotCall::MarkBad => sessions::MARK_BAD,
            HotCall::Retire => sessions::RETIRE,
            HotCall::Release => sessions::RELEASE,
            HotCall::StatusCode => sessions::STATUS_CODE,
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn of_verb(verb: &str) -> Option<Self> {
        Some(match verb {
            "mark_good" => HotCall::MarkGood,
            "mark_bad" => HotCall::MarkBad,
            "retire" => HotCall::Retire,
            "release" => HotCall::Release,
            "status_code" => HotCall::StatusCode,
            _ => return None,
        })
    }
}

/// The call a request makes, with its pool and session id (empty for acquire), when it is one of
/// the hot calls by its method and raw path and both names hold only `A-Z a-z 0-9 . _ ~ -`; `None`
/// sends it to the router.
pub fn classify<'a>(method: &Method, path: &'a str) -> Option<(HotCall, &'a str, &'a str)> {
    if *method != Method::POST {
        return None;
    }
    let (pool, rest) = path.strip_prefix("/v1/pools/")?.split_once('/')?;
    if !plain(pool) {
        return None;
    }
    if rest == "acquire" {
        return Some((HotCall::Acquire, pool, ""));
    }
    let (id, verb) = rest.strip_prefix("sessions/")?.split_once('/')?;
    let call = HotCall::of_verb(verb)?;
    plain(id).then_some((call, pool, id))
}

/// Non-empty, and nothing a router would decode or a name could not hold.
fn plain(segment: &str) -> bool {
    !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
}

/// The handler of one hot call: reads the body as the router's handler would and calls the same
/// function. Always ready.
#[derive(Debug, Clone)]
pub struct HotHandler {
    state: AppState,
    call: HotCall,
}

impl Service<Request> for HotHandler {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let (state, call) = (self.state.clone(), self.call);
        Box::pin(async move { Ok(handle(state, call, request).await.unwrap_or_else(IntoResponse::into_response)) })
    }
}

async fn handle(state: AppState, call: HotCall, request: Request) -> crate::error::Result<Response> {
    // The path's bytes are shared, not copied; the names are borrowed from them after the body is
    // read (which consumes the request).
    let uri = request.uri().clone();
    let Some((_, pool, id)) = classify(&Method::POST, uri.path()) else {
        return Err(ApiError::NotFound); // App sends only classified requests here
    };
    match call {
        HotCall::Acquire => {
            let AppJson(body) = AppJson::from_request(request, &state).await?;
            sessions::acquire_in(&state, pool, body).await
        }
        HotCall::MarkGood | HotCall::MarkBad | HotCall::Retire => {
            let AppJson(body) = AppJson::<sessions::ReportRequest>::from_request(request, &state).await?;
            let mark = match call {
                HotCall::MarkGood => Mark::Good,
                HotCall::MarkBad => Mark::Bad,
                _ => Mark::Retire,
            };
            sessions::apply_mark(&state, pool, id, body, mark).await
        }
        HotCall::Release => {
            let AppJson(body) = AppJson::from_request(request, &state).await?;
            sessions::release_in(&state, pool, id, body).await
        }
        HotCall::StatusCode => {
            let AppJson(body) = AppJson::from_request(request, &state).await?;
            sessions::status_code_in(&state, pool, id, body).await
        }
    }
}

/// A hot call's handler inside the middleware every route has ([`super::edge`]), its route
/// label fixed.
type HotStack = Observe<tower_http::catch_panic::CatchPanic<Admit<HotHandler>, super::PanicResponse>>;

/// The whole application as a service: the hot calls by their direct way, everything else by the
/// router. hyper-util clones the service for every request, so the hot stacks sit behind one
/// reference count and a request clones only the stack it takes.
#[derive(Clone)]
pub struct App {
    router: Router,
    hot: std::sync::Arc<[HotStack; 6]>,
}

impl App {
    /// `router` (with its middleware) and the direct way in for the hot calls, over `state`.
    pub fn new(router: Router, state: &AppState) -> Self {
        let hot = HotCall::ALL.map(|call| {
            let handler = HotHandler { state: state.clone(), call };
            let admitted = AdmitLayer::new(state.clone()).layer(handler);
            let guarded = super::catch_panic_layer().layer(admitted);
            ObserveLayer::fixed(call.template()).layer(guarded)
        });
        Self { router, hot: std::sync::Arc::new(hot) }
    }
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").finish_non_exhaustive()
    }
}

impl Service<Request> for App {
    type Response = Response;
    type Error = Infallible;
    type Future = AppFuture;

    /// Both ways are always ready, so neither is polled here: the router (axum's `Router` is), and
    /// every hot stack (no layer in it waits: `Observe`, `CatchPanic` and `Admit` pass readiness on,
    /// and `HotHandler` is always ready). A layer that can refuse readiness (a concurrency limit)
    /// must not be added to a hot stack without polling it here.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> AppFuture {
        match classify(request.method(), request.uri().path()) {
            Some((call, ..)) => AppFuture::Hot { inner: self.hot[call.index()].clone().call(request) },
            None => AppFuture::Routed { inner: self.router.call(request) },
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`App`].
    #[project = AppProj]
    pub enum AppFuture {
        /// A hot call.
        Hot { #[pin] inner: <HotStack as Service<Request>>::Future },
        /// Anything else, through the router.
        Routed { #[pin] inner: <Router as Service<Request>>::Future },
    }
}

impl Future for AppFuture {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            // `CatchPanic` boxes the body into its own type; the router does the same mapping.
            AppProj::Hot { inner } => inner.poll(cx).map_ok(|response| response.map(axum::body::Body::new)),
            AppProj::Routed { inner } => inner.poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use axum::extract::{MatchedPath, Path};
    use axum::routing::post;
    use proptest::prelude::*;
    use tower::ServiceExt;

    use super::*;

    #[test]
    fn the_hot_calls_are_classified_by_method_and_exact_path() {
        let post = Method::POST;
        assert_eq!(classify(&post, "/v1/pools/shop/acquire"), Some((HotCall::Acquire, "shop", "")));
        assert_eq!(
            classify(&post, "/v1/pools/www.example.com/sessions/a-b_c.d~e/mark_good"),
            Some((HotCall::MarkGood, "www.example.com", "a-b_c.d~e"))
        );
        for (verb, call) in [
            ("mark_bad", HotCall::MarkBad),
            ("retire", HotCall::Retire),
            ("release", HotCall::Release),
            ("status_code", HotCall::StatusCode),
        ] {
            assert_eq!(classify(&post, &format!("/v1/pools/p/sessions/s/{verb}")), Some((call, "p", "s")));
        }
        for path in [
            "/v1/pools/p/acquire/",
            "/v1/pools//acquire",
            "/v1/pools/p%41/acquire",
            "/v1/pools/p/sessions/%41/mark_good",
            "/v1/pools/p/sessions//mark_good",
            "/v1/pools/p/sessions/s/mark_good/",
            "/v1/pools/p/sessions/s/mark_good/x",
            "/v1/pools/p/sessions/s",
            "/v1/pools/p/sessions",
            "/v1/pools/p",
            "/v1/pools/p/sessions/s/touch",
            "/v1/pools/p q/acquire",
            "/V1/pools/p/acquire",
            "//v1/pools/p/acquire",
        ] {
            assert_eq!(classify(&post, path), None, "{path}");
        }
        for method in [Method::GET, Method::PUT, Method::PATCH, Method::DELETE, Method::HEAD] {
            assert_eq!(classify(&method, "/v1/pools/p/acquire"), None);
            assert_eq!(classify(&method, "/v1/pools/p/sessions/s/mark_good"), None);
        }
    }

    /// A router with only the hot routes, each answering `template|pool|id` as it matched them.
    fn probe_router() -> Router {
        let mut router = Router::new();
        for call in HotCall::ALL {
            router = router.route(
                call.template(),
                post(|matched: MatchedPath, Path(params): Path<HashMap<String, String>>| async move {
                    let param = |name: &str| params.get(name).cloned().unwrap_or_default();
                    format!("{}|{}|{}", matched.as_str(), param("pool"), param("id"))
                }),
            );
        }
        router
    }

    /// Path segments: mostly names a hot call takes, sometimes percent escapes, slashes, dots, spaces
    /// or the fixed words of the routes.
    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "[A-Za-z0-9._~-]{1,6}",
            1 => Just(String::new()),
            1 => prop::sample::select(vec!["v1", "pools", "sessions", "acquire", "mark_good", "mark_bad", "retire",
                "release", "status_code", ".", "..", "%41", "%2F", "a%20b", "é", "a+b", "a:b", "{pool}"])
                .prop_map(str::to_owned),
        ]
    }

    fn path() -> impl Strategy<Value = String> {
        prop_oneof![
            (
                segment(),
                segment(),
                prop::sample::select(vec!["mark_good", "mark_bad", "retire", "release", "status_code", "touch"])
            )
                .prop_map(|(pool, id, verb)| format!("/v1/pools/{pool}/sessions/{id}/{verb}")),
            segment().prop_map(|pool| format!("/v1/pools/{pool}/acquire")),
            prop::collection::vec(segment(), 1..8).prop_map(|segments| format!("/{}", segments.join("/"))),
        ]
    }

    proptest! {
        /// Whatever the path, a request the direct way takes is one the router sends to the same
        /// route with the same names: the direct way never serves a request the router would have
        /// answered differently.
        #[test]
        fn the_direct_way_takes_only_what_the_router_routes_the_same(path in path()) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let Ok(request) = Request::post(&path).body(axum::body::Body::empty()) else {
                return Ok(()); // not a URI at all: hyper would not deliver it
            };
            let answer = runtime.block_on(async {
                let response = probe_router().oneshot(request).await.unwrap();
                let status = response.status();
                let body = axum::body::to_bytes(response.into_body(), 4096).await.unwrap();
                (status, String::from_utf8_lossy(&body).into_owned())
            });
            match classify(&Method::POST, &path) {
                Some((call, pool, id)) => {
                    let expected = format!("{}|{}|{}", call.template(), pool, id);
                    prop_assert_eq!(answer, (axum::http::StatusCode::OK, expected));
                }
                // And a hot route with plain names (not percent-encoded ones) always takes the
                // direct way.
                None if answer.0 == axum::http::StatusCode::OK && !path.contains('%') => {
                    let mut parts = answer.1.split('|').skip(1);
                    let names = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
                    let acquire = answer.1.starts_with(HotCall::Acquire.template());
                    prop_assert!(
                        !(plain(names.0) && (acquire || plain(names.1))),
                        "{} was routed to {} but not classified", path, answer.1
                    );
                }
                None => {}
            }
        }
    }
}
