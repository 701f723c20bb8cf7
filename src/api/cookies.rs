//! `/v1/pools/{pool}/sessions/{id}/cookies`: the session's cookie jar as a browser sees it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use serde::{Deserialize, Serialize};
use url::Url;

use super::sessions::SessionView;
use super::{check_pool_name, check_session_id, json_response, AppJson, AppPath, AppQuery, AppState};
use crate::clock::now;
use crate::error::{ApiError, Result};
use crate::session::jar::{cookie_header, cookies_for, is_cookie_url, set_cookie_ops, Ignored, SetCookieOps};
use crate::session::{Cookie, Session, Timestamp};
use crate::store::Mark;

/// The most `Set-Cookie` headers one call may carry.
pub const MAX_SET_COOKIE_HEADERS: usize = 1000;

/// Routes of this module.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/pools/{pool}/sessions/{id}/cookies", post(store_cookies).get(cookies_for_url))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreCookiesRequest {
    url: String,
    set_cookie: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CookiesQuery {
    url: String,
}

#[derive(Serialize)]
struct CookiesForUrl<'a> {
    cookie_header: String,
    cookies: Vec<&'a Cookie>,
}

/// A request URL as a browser would have it: absolute http or https with a host.
///
/// # Errors
/// `invalid_request` naming the `url` field and the value.
pub(super) fn parse_url(raw: &str) -> Result<Url> {
    let url = Url::parse(raw).map_err(|e| ApiError::invalid(format!("url: {raw:?} is not an absolute URL ({e})")))?;
    if is_cookie_url(&url) {
        Ok(url)
    } else {
        Err(ApiError::invalid(format!("url: {raw:?} must be an http or https URL with a host")))
    }
}

/// A response's `Set-Cookie` headers and the URL it came from, checked: the body of
/// `POST .../cookies`, and the optional part of the per-page reports ([`super::sessions`]).
#[derive(Debug)]
pub(super) struct SetCookies {
    url: Url,
    headers: Vec<String>,
}

impl SetCookies {
    /// Checks the URL and the number of headers.
    ///
    /// # Errors
    /// `invalid_request` for a URL a browser would not request, or over
    /// [`MAX_SET_COOKIE_HEADERS`] headers.
    pub(super) fn new(url: &str, headers: Vec<String>) -> Result<Self> {
        let url = parse_url(url)?;
        if headers.len() > MAX_SET_COOKIE_HEADERS {
            return Err(ApiError::invalid(format!("set_cookie: at most {MAX_SET_COOKIE_HEADERS} headers per call")));
        }
        Ok(Self { url, headers })
    }

    /// The changes each header makes to a jar as a browser would take it for a response from the URL
    /// at `now`, and the headers a browser would ignore (a foreign or public-suffix Domain, Secure
    /// from http, unparseable): [`log_ignored`] them once the changes are stored.
    pub(super) fn parse(&self, now: Timestamp) -> SetCookieOps {
        set_cookie_ops(&self.url, &self.headers, now)
    }
}

/// Logs the `Set-Cookie` headers a browser would have ignored, as the call that stored the others
/// succeeded.
pub(super) fn log_ignored(ignored: &[Ignored]) {
    for ignored in ignored {
        tracing::debug!(index = ignored.index, reason = %ignored.reason, "Set-Cookie ignored");
    }
}

/// The `Cookie` header a browser would send to `url` from `jar` at `now` (`""` when none).
pub(super) fn cookie_header_for(jar: &[Cookie], url: &Url, now: Timestamp) -> String {
    cookie_header(&cookies_for(jar, url, now))
}

/// Stores each header as a browser would for a response from `url` ([`SetCookies::parse`]).
async fn store_cookies(
    State(state): State<AppState>,
    AppPath((pool, id)): AppPath<(String, String)>,
    AppJson(request): AppJson<StoreCookiesRequest>,
) -> Result<Response> {
    let (pool, id) = (check_pool_name(&pool)?, check_session_id(&id)?);
    let SetCookieOps { ops, ignored } = SetCookies::new(&request.url, request.set_cookie)?.parse(now());
    let answer = |session: &Session, _, now| json_response(StatusCode::OK, &SessionView::of(session, pool, now));
    let response = state.store.mark(pool, id, Mark::Nothing, None, ops, answer).await??;
    log_ignored(&ignored);
    Ok(response)
}

/// The `Cookie` header and the cookies a browser would send to `url`.
async fn cookies_for_url(
    State(state): State<AppState>,
    AppPath((pool, id)): AppPath<(String, String)>,
    AppQuery(query): AppQuery<CookiesQuery>,
) -> Result<Response> {
    let (pool, id) = (check_pool_name(&pool)?, check_session_id(&id)?);
    let url = parse_url(&query.url)?;
    let answer = |session: &Session, now| {
        let cookies = cookies_for(&session.cookies, &url, now);
        json_response(StatusCode::OK, &CookiesForUrl { cookie_header: cookie_header(&cookies), cookies })
    };
    state.store.get(pool, id, answer).await?
}
