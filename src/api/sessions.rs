//! `/v1/pools/{pool}/acquire` and `/v1/pools/{pool}/sessions...`: hand out, create, read, edit and
//! report on sessions.
//!
//! Each handler validates its input first, then makes one call of the store with a closure that
//! renders the answer; the store calls it on the session as its own call left it (the memory store,
//! before the pool is unlocked).

use std::fmt;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::cookies::{cookie_header_for, log_ignored, parse_url, SetCookies};
use super::{check_pool_name, check_session_id, json_response, AppJson, AppPath, AppQuery, AppState};
use crate::clock::{now, Rfc3339};
use crate::error::{ApiError, Result};
use crate::json::int as json_int;
use crate::json::strict::{Fields, Obj, Split};
use crate::metric_names as names;
use crate::pool::{validate_proxy_url, StateFilter};
use crate::session::jar::{Ignored, JarOp, SetCookieOps};
use crate::session::secs_to_delta;
use crate::session::settings::{is_status_code, SettingsPatch};
use crate::session::{Cookie, Session, StatusReport, Timestamp};
use crate::store::{CreateSession, Mark};

/// The longest lease, in seconds.
pub const MAX_LEASE_SECS: f64 = 3600.0;
/// The largest page of a listing.
pub const MAX_PAGE: u32 = 1000;
/// The page size when none is asked for.
pub const DEFAULT_PAGE: u32 = 100;

/// The route of acquire.
pub const ACQUIRE: &str = "/v1/pools/{pool}/acquire";
/// The route of mark_good.
pub const MARK_GOOD: &str = "/v1/pools/{pool}/sessions/{id}/mark_good";
/// The route of mark_bad.
pub const MARK_BAD: &str = "/v1/pools/{pool}/sessions/{id}/mark_bad";
/// The route of retire.
pub const RETIRE: &str = "/v1/pools/{pool}/sessions/{id}/retire";
/// The route of release.
pub const RELEASE: &str = "/v1/pools/{pool}/sessions/{id}/release";
/// The route of status_code.
pub const STATUS_CODE: &str = "/v1/pools/{pool}/sessions/{id}/status_code";

/// Routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(ACQUIRE, post(acquire))
        .route("/v1/pools/{pool}/sessions", post(create_session).get(list_sessions))
        .route("/v1/pools/{pool}/sessions/{id}", get(get_session).patch(patch_session).delete(delete_session))
        .route(MARK_GOOD, post(mark_good))
        .route(MARK_BAD, post(mark_bad))
        .route(RETIRE, post(retire))
        .route(RELEASE, post(release))
        .route(STATUS_CODE, post(status_code))
}

// ---------------------------------------------------------------------------------------------
// Views

#[derive(Serialize)]
struct LeaseView {
    id: uuid::fmt::Simple,
    expires_at: Rfc3339,
}

/// The Session object of openapi.yaml, borrowed from the locked pool.
#[derive(Serialize)]
pub struct SessionView<'a> {
    id: &'a str,
    pool: &'a str,
    created_at: Rfc3339,
    expires_at: Rfc3339,
    max_age_secs: f64,
    usage_count: u32,
    max_usage_count: u32,
    error_score: f64,
    max_error_score: f64,
    error_score_decrement: f64,
    blocked_status_codes: &'a [u16],
    user_data: &'a Map<String, Value>,
    cookies: &'a [Cookie],
    proxy_url: Option<&'a str>,
    is_blocked: bool,
    is_expired: bool,
    is_max_usage_count_reached: bool,
    is_usable: bool,
    retired: bool,
    retired_reason: Option<&'static str>,
    retired_at: Option<Rfc3339>,
    leased_until: Option<Rfc3339>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lease: Option<LeaseView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cookie_header: Option<String>,
}

impl<'a> SessionView<'a> {
    /// The session as a client sees it at `now`.
    pub fn of(session: &'a Session, pool: &'a str, now: Timestamp) -> Self {
        let retirement = session.retirement_at(now);
        let lease = session.live_lease(now).filter(|_| retirement.is_none());
        Self {
            id: &session.id,
            pool,
            created_at: Rfc3339(session.created_at),
            expires_at: Rfc3339(session.expires_at),
            max_age_secs: session.settings.max_age_secs,
            usage_count: session.usage_count,
            max_usage_count: session.settings.max_usage_count,
            error_score: session.error_score,
            max_error_score: session.settings.max_error_score,
            error_score_decrement: session.settings.error_score_decrement,
            blocked_status_codes: &session.settings.blocked_status_codes,
            user_data: &session.user_data,
            cookies: &session.cookies,
            proxy_url: session.proxy_url.as_deref(),
            is_blocked: session.is_blocked(),
            is_expired: session.is_expired(now),
            is_max_usage_count_reached: session.is_max_usage_count_reached(),
            is_usable: retirement.is_none(),
            retired: retirement.is_some(),
            retired_reason: retirement.map(|r| r.reason.as_str()),
            retired_at: retirement.map(|r| Rfc3339(r.at)),
            leased_until: lease.map(|l| Rfc3339(l.until)),
            lease: None,
            cookie_header: None,
        }
    }

    /// Adds the top-level `lease` object an acquire with a lease answers.
    fn with_lease(mut self, session: &Session, now: Timestamp) -> Self {
        self.lease = session.live_lease(now).map(|l| LeaseView { id: l.id.simple(), expires_at: Rfc3339(l.until) });
        self
    }

    /// Adds the top-level `cookie_header` an acquire with a `url` answers.
    fn with_cookie_header(mut self, cookie_header: Option<String>) -> Self {
        self.cookie_header = cookie_header;
        self
    }
}

// ---------------------------------------------------------------------------------------------
// Inputs

/// `cookies` on input: a list of Cookie objects, or the seed's `{"name": "value"}` form.
#[derive(Debug, Default)]
struct CookiesInput(Vec<Cookie>);

impl CookiesInput {
    /// Every cookie, validated.
    fn validated(self) -> Result<Vec<Cookie>> {
        for cookie in &self.0 {
            cookie.validate().map_err(|e| ApiError::invalid(format!("cookies: {e}")))?;
        }
        Ok(self.0)
    }
}

impl<'de> Deserialize<'de> for CookiesInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct CookiesVisitor;
        impl<'de> Visitor<'de> for CookiesVisitor {
            type Value = CookiesInput;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of cookie objects or an object of name: value strings")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<CookiesInput, A::Error> {
                let mut cookies = Vec::new();
                while let Some(Obj(cookie)) = seq.next_element::<Obj<Cookie>>()? {
                    cookies.push(cookie);
                }
                Ok(CookiesInput(cookies))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<CookiesInput, A::Error> {
                let mut cookies = Vec::new();
                while let Some((name, value)) = map.next_entry::<String, String>()? {
                    cookies.push(Cookie::simple(name, value));
                }
                Ok(CookiesInput(cookies))
            }
        }
        d.deserialize_any(CookiesVisitor)
    }
}

/// A create request: the session's own fields, and its settings at the same level.
type CreateBody = Split<CreateSessionRequest, SettingsPatch>;

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
fn explicit_null<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> std::result::Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A field that may be left out but not be `null` (use with `#[serde(default, deserialize_with = ...)]`).
fn non_null<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> std::result::Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AcquireRequest {
    lease_secs: Option<f64>,
    #[serde(default, deserialize_with = "non_null")]
    url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSessionRequest {
    id: Option<String>,
    user_data: Option<Map<String, Value>>,
    cookies: Option<CookiesInput>,
    #[serde(default, deserialize_with = "explicit_null")]
    proxy_url: Option<Option<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchSessionRequest {
    user_data: Option<Map<String, Value>>,
    cookies: Option<CookiesInput>,
}

/// The body of mark_good, mark_bad and retire, and the part of status_code's it shares with them:
/// the lease the call is made under, and what the page brings for the session's cookie jar.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportRequest {
    lease_id: Option<String>,
    #[serde(default, deserialize_with = "non_null")]
    url: Option<String>,
    #[serde(default, deserialize_with = "non_null")]
    set_cookie: Option<Vec<String>>,
    cookies: Option<CookiesInput>,
}

impl Fields for ReportRequest {
    const FIELDS: &'static [&'static str] = &["lease_id", "url", "set_cookie", "cookies"];
}

impl ReportRequest {
    /// The lease id, and the update of the jar checked: `url` and `set_cookie` come both or
    /// neither, with the rules of `POST .../cookies`; `cookies` with the rules of PATCH.
    fn checked(self) -> Result<(Option<String>, JarUpdate)> {
        let set_cookies = match (self.url, self.set_cookie) {
            (Some(url), Some(headers)) => Some(SetCookies::new(&url, headers)?),
            (None, None) => None,
            (Some(_), None) => return Err(ApiError::invalid("set_cookie: missing; url and set_cookie come together")),
            (None, Some(_)) => return Err(ApiError::invalid("url: missing; url and set_cookie come together")),
        };
        let cookies = self.cookies.map(CookiesInput::validated).transpose()?.unwrap_or_default();
        Ok((self.lease_id, JarUpdate { set_cookies, cookies }))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseRequest {
    lease_id: String,
}

/// A status_code request: the status and how to read it, and at the same level the fields of
/// every report ([`ReportRequest`]).
type StatusCodeBody = Split<StatusCodeRequest, ReportRequest>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusCodeRequest {
    #[serde(deserialize_with = "json_int::one")]
    status_code: u16,
    #[serde(default, deserialize_with = "json_int::list")]
    additional_blocked_status_codes: Vec<u16>,
    #[serde(default, deserialize_with = "json_int::list")]
    ignore_http_error_status_codes: Vec<u16>,
    #[serde(default)]
    mark: bool,
}

/// What a report brings for the session's cookie jar besides the mark: a response's `Set-Cookie`
/// headers with its URL, and cookies already parsed. Checked before the store is called, which
/// applies them in the same step as the mark and before it, on a retired session too.
#[derive(Debug, Default)]
struct JarUpdate {
    set_cookies: Option<SetCookies>,
    cookies: Vec<Cookie>,
}

impl JarUpdate {
    /// The changes to the jar: the headers' first, then an upsert of each cookie; with the headers a
    /// browser would ignore, to log once the changes are stored. Reads the clock only for headers.
    fn into_ops(self) -> (Vec<JarOp>, Vec<Ignored>) {
        let SetCookieOps { mut ops, ignored } = self.set_cookies.map(|s| s.parse(now())).unwrap_or_default();
        ops.extend(self.cookies.into_iter().map(JarOp::Put));
        (ops, ignored)
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum StateParam {
    Usable,
    Retired,
    Leased,
    All,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<StateParam>,
    limit: Option<u32>,
    cursor: Option<String>,
}

#[derive(Serialize)]
struct SessionList<'a> {
    sessions: Vec<SessionView<'a>>,
    next_cursor: Option<&'a str>,
}

#[derive(Serialize)]
struct StatusCodeAnswer<'a> {
    blocked: bool,
    session: SessionView<'a>,
}

fn check_status_codes(field: &str, codes: &[u16]) -> Result<()> {
    match codes.iter().find(|c| !is_status_code(**c)) {
        Some(code) => Err(ApiError::invalid(format!("{field}: {code} is not a status code in 100..=599"))),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// The answer of most calls: the session as a client sees it, 200.
fn session_answer(pool: &str) -> impl FnOnce(&Session, Timestamp) -> Result<Response> + '_ {
    move |session, now| json_response(StatusCode::OK, &SessionView::of(session, pool, now))
}

async fn acquire(
    State(state): State<AppState>,
    AppPath(pool): AppPath<String>,
    AppJson(request): AppJson<AcquireRequest>,
) -> Result<Response> {
    let pool = check_pool_name(&pool)?;
    let lease = match request.lease_secs {
        Some(secs) if !(secs > 0.0 && secs <= MAX_LEASE_SECS) => {
            return Err(ApiError::invalid(format!("lease_secs: {secs} is not in (0, {MAX_LEASE_SECS}]")));
        }
        Some(secs) => Some(secs_to_delta(secs)),
        None => None,
    };
    let url = request.url.as_deref().map(parse_url).transpose()?;
    // The answer, with the `Cookie` header for `url` when one was given.
    let answer = |session: &Session, now| {
        let cookie_header = url.as_ref().map(|url| cookie_header_for(&session.cookies, url, now));
        let view = SessionView::of(session, pool, now).with_lease(session, now).with_cookie_header(cookie_header);
        json_response(StatusCode::OK, &view)
    };
    state.store.acquire(pool, lease, answer).await?
}

async fn create_session(
    State(state): State<AppState>,
    AppPath(pool): AppPath<String>,
    AppJson(Split(request, settings)): AppJson<CreateBody>,
) -> Result<Response> {
    let pool = check_pool_name(&pool)?;
    if let Some(id) = &request.id {
        check_session_id(id)?;
    }
    if let Some(Some(url)) = &request.proxy_url {
        validate_proxy_url(url).map_err(|reason| ApiError::invalid(format!("proxy_url: {reason}")))?;
    }
    let cookies = request.cookies.unwrap_or_default().validated()?;
    // Before the pool is touched (or implicitly created).
    settings.validate()?;
    let new = CreateSession {
        id: request.id,
        settings,
        user_data: request.user_data.unwrap_or_default(),
        cookies,
        proxy_url: request.proxy_url,
    };
    let answer = |session: &Session, now| {
        let location = format!("/v1/pools/{pool}/sessions/{}", session.id);
        let mut response = json_response(StatusCode::CREATED, &SessionView::of(session, pool, now))?;
        if let Ok(value) = location.parse() {
            response.headers_mut().insert(header::LOCATION, value);
        }
        Ok(response)
    };
    state.store.create(pool, new, answer).await?
}

async fn list_sessions(
    State(state): State<AppState>,
    AppPath(pool): AppPath<String>,
    AppQuery(query): AppQuery<ListQuery>,
) -> Result<Response> {
    let pool = check_pool_name(&pool)?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid(format!("limit: {limit} is not in 1..={MAX_PAGE}")));
    }
    if let Some(cursor) = &query.cursor {
        check_session_id(cursor).map_err(|_| ApiError::invalid(format!("cursor: {cursor:?} is not a cursor")))?;
    }
    let filter = match query.state {
        Some(StateParam::Usable) => StateFilter::Usable,
        Some(StateParam::Retired) => StateFilter::Retired,
        Some(StateParam::Leased) => StateFilter::Leased,
        Some(StateParam::All) | None => StateFilter::All,
    };
    let answer = |page: &[&Session], next_cursor: Option<&str>, now| {
        let list = SessionList { sessions: page.iter().map(|s| SessionView::of(s, pool, now)).collect(), next_cursor };
        json_response(StatusCode::OK, &list)
    };
    state.store.list(pool, filter, query.cursor.as_deref(), limit as usize, answer).await?
}

async fn get_session(
    State(state): State<AppState>,
    AppPath((pool, id)): AppPath<(String, String)>,
) -> Result<Response> {
    let (pool, id) = (check_pool_name(&pool)?, check_session_id(&id)?);
    state.store.get(pool, id, session_answer(pool)).await?
}

async fn patch_session(
    State(state): State<AppState>,
    AppPath((pool, id)): AppPath<(String, String)>,
    AppJson(request): AppJson<PatchSessionRequest>,
) -> Result<Response> {
    let (pool, id) = (check_pool_name(&pool)?, check_session_id(&id)?);
    let cookies = request.cookies.map(CookiesInput::validated).transpose()?;
    let ops = cookies.into_iter().flatten().map(JarOp::Put).collect();
    state.store.edit(pool, id, request.user_data, ops, session_answer(pool)).await?
}

async fn delete_session(
    State(state): State<AppState>,
    AppPath((pool, id)): AppPath<(String, String)>,
) -> Result<StatusCode> {
    let (pool, id) = (check_pool_name(&pool)?, check_session_id(&id)?);
    state.store.delete_session(pool, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn mark_good(
    State(state): State<AppState>,
    AppPath((pool, id)): AppPath<(String, String)>,
    AppJson(report): AppJson<ReportRequest>,
) -> Result<Response> {
    mark(&state, &pool, &id, report, Mark::Good).await
}

async fn mark_bad(
    State(state): State<AppState>,
    AppPath((pool, id)): AppPath<(String, String)>,
    AppJson(report): AppJson<ReportRequest>,
) -> Result<Response> {
    mark(&state, &pool, &id, report, Mark::Bad).await
}

async fn retire(
    State(state): State<AppState>,
    AppPath((pool, id)): AppPath<(String, String)>,
    AppJson(report): AppJson<ReportRequest>,
) -> Result<Response> {
    mark(&state, &pool, &id, report, Mark::Retire).await
}

/// mark_good, mark_bad or retire of `id` in `pool` (as the path gave them), with the cookies the
/// report carries stored first, in the same step.
async fn mark(state: &AppState, pool: &str, id: &str, report: ReportRequest, mark: Mark<'_>) -> Result<Response> {
    let (pool, id) = (check_pool_name(pool)?, check_session_id(id)?);
    let (lease_id, jar) = report.checked()?;
    let (ops, ignored) = jar.into_ops();
    let answer = session_answer(pool);
    let response = state.store.mark(pool, id, mark, lease_id.as_deref(), ops, |s, _, now| answer(s, now)).await??;
    log_ignored(&ignored);
    Ok(response)
}

async fn release(
    State(state): State<AppState>,
    AppPath((pool, id)): AppPath<(String, String)>,
    AppJson(request): AppJson<ReleaseRequest>,
) -> Result<Response> {
    let (pool, id) = (check_pool_name(&pool)?, check_session_id(&id)?);
    state.store.release(pool, id, &request.lease_id, session_answer(pool)).await?
}

async fn status_code(
    State(state): State<AppState>,
    AppPath((pool, id)): AppPath<(String, String)>,
    AppJson(Split(request, report)): AppJson<StatusCodeBody>,
) -> Result<Response> {
    let (pool, id) = (check_pool_name(&pool)?, check_session_id(&id)?);
    if !is_status_code(request.status_code) {
        return Err(ApiError::invalid(format!("status_code: {} is not in 100..=599", request.status_code)));
    }
    check_status_codes("additional_blocked_status_codes", &request.additional_blocked_status_codes)?;
    check_status_codes("ignore_http_error_status_codes", &request.ignore_http_error_status_codes)?;
    let (lease_id, jar) = report.checked()?;
    let status = StatusReport {
        status_code: request.status_code,
        additional_blocked: &request.additional_blocked_status_codes,
        ignored: &request.ignore_http_error_status_codes,
        mark: request.mark,
    };
    let (ops, ignored) = jar.into_ops();
    let answer = |session: &Session, blocked, now| {
        json_response(StatusCode::OK, &StatusCodeAnswer { blocked, session: SessionView::of(session, pool, now) })
    };
    let response = state.store.mark(pool, id, Mark::Status(status), lease_id.as_deref(), ops, answer).await??;
    log_ignored(&ignored);
    metrics::counter!(names::STATUS_CODES, "pool" => pool.to_owned(), "code" => request.status_code.to_string())
        .increment(1);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cookies_come_in_two_forms() {
        let list: CookiesInput =
            serde_json::from_value(json!([{"name": "a", "value": "1", "secure": true, "same_site": "Lax"}])).unwrap();
        assert_eq!(list.0[0].same_site, Some(crate::session::SameSite::Lax));
        assert!(list.0[0].secure);
        let map: CookiesInput = serde_json::from_value(json!({"a": "1", "b": "2"})).unwrap();
        assert_eq!(map.0, vec![Cookie::simple("a", "1"), Cookie::simple("b", "2")]);
        assert!(serde_json::from_value::<CookiesInput>(json!([{"name": "a"}])).is_err());
        assert!(serde_json::from_value::<CookiesInput>(json!("a=1")).is_err());
    }

    #[test]
    fn the_report_field_list_is_the_structs() {
        assert_eq!(crate::json::strict::serde_fields::<ReportRequest>(), ReportRequest::FIELDS);
    }
}
