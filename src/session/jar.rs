//! A session's cookies as a browser jar: storing `Set-Cookie` headers received from a URL and
//! choosing the cookies a browser would send to a URL, by RFC 6265 section 5.
//!
//! The session keeps its cookies as a plain list ([`Cookie`], the API's shape); the RFC's rules are
//! cookie_store's: parsing, domain and path matching, default paths, `Max-Age` over `Expires`, secure
//! and http-only matching. This module only adds what cookie_store leaves to its caller: the public
//! suffix list (compiled in, from the `psl` crate, since nothing may be downloaded at run time),
//! refusing `Secure` cookies from insecure origins (RFC 6265bis, as browsers do), deletion by an
//! expired cookie in our list, and the RFC's sending order.
//!
//! Storing comes in two steps, so that a store can do the second wherever it keeps the jar:
//! [`set_cookie_ops`] turns the headers into [`JarOp`]s without looking at any jar, and [`apply`]
//! makes those changes to one.

use std::collections::HashMap;

use cookie_store::{CookieDomain, CookieExpiration, CookieStore, RawCookie};
use url::Url;

use super::cookie::upsert;
use super::{Cookie, SameSite, Timestamp};

/// Why a `Set-Cookie` header was not stored (a browser ignores such headers silently).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    /// The header's position in the request.
    pub index: usize,
    /// What was wrong with it.
    pub reason: String,
}

/// One change to a session's jar, decided before the session is at hand: by a `Set-Cookie` header
/// ([`set_cookie_ops`]) or by a cookie given as it is (PATCH and the reports' `cookies`). Applied by
/// [`apply`], in order, to whichever jar the store holds.
#[derive(Debug, Clone, PartialEq)]
pub enum JarOp {
    /// Sets the cookie, replacing the one with the same `(domain, path, name)` in place.
    Put(Cookie),
    /// Removes the cookie with this `(domain, path, name)`, if the jar holds one.
    Delete {
        /// The cookie's name.
        name: String,
        /// Its domain, as the jar keeps it.
        domain: String,
        /// Its path.
        path: String,
    },
}

/// What a batch of `Set-Cookie` headers comes to: the changes a browser would make to its jar, and
/// the headers it would ignore.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SetCookieOps {
    /// The changes, in the headers' order.
    pub ops: Vec<JarOp>,
    /// Headers a browser would ignore.
    pub ignored: Vec<Ignored>,
}

/// Whether `url` is one a browser stores cookies for (absolute http or https with a host).
pub fn is_cookie_url(url: &Url) -> bool {
    matches!(url.scheme(), "http" | "https") && url.host().is_some()
}

/// The changes to a jar of each `Set-Cookie` header as a browser would make them for a response from
/// `url` at `now`: host-only or domain cookies, the default path, `Max-Age` over `Expires`, deletion
/// by an already expired cookie; headers with a `Domain` that does not cover the URL's host, a public
/// suffix as `Domain`, or `Secure` from an insecure URL are ignored. Needs no jar: [`apply`] makes
/// the changes.
pub fn set_cookie_ops(url: &Url, headers: &[String], now: Timestamp) -> SetCookieOps {
    let mut parsed = SetCookieOps::default();
    for (index, header) in headers.iter().enumerate() {
        match parse_set_cookie(header, url) {
            Ok(cookie) if cookie.expires.is_some_and(|at| at <= now.timestamp()) => {
                let Cookie { name, domain, path, .. } = cookie;
                parsed.ops.push(JarOp::Delete { name, domain, path });
            }
            Ok(cookie) => parsed.ops.push(JarOp::Put(cookie)),
            Err(reason) => parsed.ignored.push(Ignored { index, reason }),
        }
    }
    parsed
}

/// Makes the changes `ops` to `jar`, in order. A replaced cookie keeps its place: its creation
/// time (RFC 6265 5.3, 11.3), which decides the sending order.
pub fn apply(jar: &mut Vec<Cookie>, ops: Vec<JarOp>) {
    for op in ops {
        match op {
            JarOp::Put(cookie) => upsert(jar, cookie),
            JarOp::Delete { name, domain, path } => {
                if let Some(position) = jar.iter().position(|c| c.name == name && c.domain == domain && c.path == path)
                {
                    jar.remove(position);
                }
            }
        }
    }
}

fn parse_set_cookie(header: &str, url: &Url) -> Result<Cookie, String> {
    let mut parsed = cookie_store::Cookie::parse(header, url).map_err(|e| e.to_string())?;
    if parsed.secure().unwrap_or(false) && url.scheme() != "https" {
        return Err("a Secure cookie from an insecure URL".into());
    }
    if let CookieDomain::Suffix(domain) = &parsed.domain {
        if psl::suffix_str(domain) == Some(domain.as_str()) {
            // RFC 6265 5.3 step 5: a public suffix as Domain is host-only when it is the host itself.
            if url.host_str() == Some(domain.as_str()) {
                parsed.domain = CookieDomain::HostOnly(domain.clone());
            } else {
                return Err(format!("Domain={domain} is a public suffix"));
            }
        }
    }
    let domain = match &parsed.domain {
        CookieDomain::HostOnly(host) => host.clone(),
        CookieDomain::Suffix(domain) => format!(".{domain}"),
        CookieDomain::NotPresent | CookieDomain::Empty => return Err("no domain".into()),
    };
    let cookie = Cookie {
        name: parsed.name().to_owned(),
        value: parsed.value().to_owned(),
        domain,
        path: String::from(&parsed.path),
        secure: parsed.secure().unwrap_or(false),
        http_only: parsed.http_only().unwrap_or(false),
        expires: match parsed.expires {
            CookieExpiration::AtUtc(at) => Some(at.unix_timestamp()),
            CookieExpiration::SessionEnd => None,
        },
        same_site: parsed.same_site().map(|s| match s {
            cookie::SameSite::Lax => SameSite::Lax,
            cookie::SameSite::Strict => SameSite::Strict,
            cookie::SameSite::None => SameSite::None,
        }),
    };
    cookie.validate().map_err(|e| e.to_string())?;
    Ok(cookie)
}

/// The cookies a browser would send to `url`, in RFC 6265 order (longer paths first, then earlier
/// created), skipping those expired at `now`. A cookie with domain `""` matches every host.
pub fn cookies_for<'a>(jar: &'a [Cookie], url: &Url, now: Timestamp) -> Vec<&'a Cookie> {
    let mut store = CookieStore::new();
    let mut by_key: HashMap<(String, String, String), usize> = HashMap::new();
    for (index, cookie) in jar.iter().enumerate() {
        if cookie.expires.is_some_and(|at| at <= now.timestamp()) {
            continue;
        }
        let Some((origin, raw)) = as_set_cookie(cookie, url) else { continue };
        if let Ok(stored) = cookie_store::Cookie::try_from_raw_cookie(&raw, &origin) {
            let key = (String::from(&stored.domain), String::from(&stored.path), cookie.name.clone());
            if store.insert(stored.into_owned(), &origin).is_ok() {
                by_key.insert(key, index);
            }
        }
    }
    let mut indices: Vec<usize> = store
        .matches(url)
        .into_iter()
        .filter_map(|c| by_key.get(&(String::from(&c.domain), String::from(&c.path), c.name().to_owned())).copied())
        .collect();
    indices.sort_by(|a, b| jar[*b].path.len().cmp(&jar[*a].path.len()).then(a.cmp(b)));
    indices.into_iter().map(|i| &jar[i]).collect()
}

/// The `Cookie` request header for those cookies: `name=value; name2=value2`.
pub fn cookie_header(cookies: &[&Cookie]) -> String {
    cookies.iter().map(|c| format!("{}={}", c.name, c.value)).collect::<Vec<_>>().join("; ")
}

/// The stored cookie as the `Set-Cookie` that would have created it, and the origin it came from.
fn as_set_cookie(cookie: &Cookie, request: &Url) -> Option<(Url, RawCookie<'static>)> {
    let mut raw = RawCookie::build((cookie.name.clone(), cookie.value.clone()))
        .path(cookie.path.clone())
        .secure(cookie.secure)
        .http_only(cookie.http_only)
        .build();
    let origin = match cookie.domain.strip_prefix('.') {
        _ if cookie.domain.is_empty() => request.clone(),
        Some(domain) => {
            raw.set_domain(domain.to_owned());
            Url::parse(&format!("https://{domain}/")).ok()?
        }
        None => Url::parse(&format!("https://{}/", cookie.domain)).ok()?,
    };
    Some((origin, raw))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;

    fn now() -> Timestamp {
        DateTime::parse_from_rfc3339("2026-11-25T19:00:00Z").unwrap().with_timezone(&chrono::Utc)
    }

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    /// Parses the headers into ops and applies them, as a store does; returns what was parsed.
    fn store(jar: &mut Vec<Cookie>, at: &str, headers: &[&str]) -> SetCookieOps {
        let headers: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
        let parsed = set_cookie_ops(&url(at), &headers, now());
        apply(jar, parsed.ops.clone());
        parsed
    }

    fn sent(jar: &[Cookie], to: &str) -> String {
        cookie_header(&cookies_for(jar, &url(to), now()))
    }

    #[test]
    fn host_only_and_domain_cookies() {
        let mut jar = Vec::new();
        store(&mut jar, "https://www.example.com/", &["a=1", "b=2; Domain=example.com"]);
        assert_eq!(jar[0].domain, "www.example.com");
        assert_eq!(jar[1].domain, ".example.com");
        assert_eq!(sent(&jar, "https://www.example.com/"), "a=1; b=2");
        assert_eq!(sent(&jar, "https://shop.example.com/"), "b=2");
        assert_eq!(sent(&jar, "https://example.com/"), "b=2");
        assert_eq!(sent(&jar, "https://other.com/"), "");
    }

    #[test]
    fn the_default_path_is_the_directory_of_the_url() {
        let mut jar = Vec::new();
        store(&mut jar, "https://example.com/account/login", &["sid=1"]);
        assert_eq!(jar[0].path, "/account");
        assert_eq!(sent(&jar, "https://example.com/account/orders"), "sid=1");
        assert_eq!(sent(&jar, "https://example.com/"), "");
        assert_eq!(sent(&jar, "https://example.com/accounts"), "", "a path prefix must end at a /");
    }

    #[test]
    fn max_age_wins_over_expires_and_an_expired_cookie_deletes() {
        let mut jar = Vec::new();
        store(&mut jar, "https://example.com/", &["a=1; Max-Age=3600; Expires=Thu, 01 Jan 2015 00:00:00 GMT"]);
        let expires = jar[0].expires.expect("persistent");
        assert!(expires > chrono::Utc::now().timestamp(), "Max-Age must win over a past Expires");
        let parsed = store(&mut jar, "https://example.com/", &["a=gone; Max-Age=0"]);
        let delete = JarOp::Delete { name: "a".into(), domain: "example.com".into(), path: "/".into() };
        assert_eq!((parsed.ops, jar.len()), (vec![delete], 0));
        store(&mut jar, "https://example.com/", &["b=1", "b=2; Expires=Thu, 01 Jan 2015 00:00:00 GMT"]);
        assert!(jar.is_empty(), "an expired Set-Cookie deletes the cookie it names");
    }

    #[test]
    fn a_delete_removes_only_the_cookie_of_its_exact_key() {
        let mut jar = vec![
            Cookie::simple("a", "1"),
            Cookie { path: "/x".into(), ..Cookie::simple("a", "2") },
            Cookie { domain: "example.com".into(), ..Cookie::simple("a", "3") },
        ];
        let delete = |path: &str| JarOp::Delete { name: "a".into(), domain: String::new(), path: path.into() };
        apply(&mut jar, vec![delete("/x"), delete("/nothing")]);
        assert_eq!(jar.iter().map(|c| c.value.as_str()).collect::<Vec<_>>(), ["1", "3"]);
        apply(&mut jar, vec![JarOp::Put(Cookie::simple("b", "4")), JarOp::Put(Cookie::simple("a", "5")), delete("/")]);
        assert_eq!(jar.iter().map(|c| c.value.as_str()).collect::<Vec<_>>(), ["3", "4"], "ops apply in order");
    }

    #[test]
    fn foreign_domains_and_public_suffixes_are_refused() {
        let mut jar = Vec::new();
        let parsed = store(
            &mut jar,
            "https://www.example.com/",
            &["a=1; Domain=other.com", "b=1; Domain=com", "c=1; Domain=co.uk", "d=1; Domain=www.example.com"],
        );
        assert_eq!(parsed.ignored.iter().map(|i| i.index).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(jar.len(), 1);
        assert_eq!(jar[0].domain, ".www.example.com");
    }

    #[test]
    fn secure_cookies_need_a_secure_origin_and_go_to_https_only() {
        let mut jar = Vec::new();
        let parsed = store(&mut jar, "http://example.com/", &["a=1; Secure"]);
        assert_eq!(parsed.ignored.len(), 1);
        store(&mut jar, "https://example.com/", &["a=1; Secure; HttpOnly; SameSite=Strict"]);
        assert!(jar[0].secure && jar[0].http_only && jar[0].same_site == Some(SameSite::Strict));
        assert_eq!(sent(&jar, "https://example.com/"), "a=1");
        assert_eq!(sent(&jar, "http://example.com/"), "");
    }

    #[test]
    fn longer_paths_go_first_then_older_cookies() {
        let mut jar = Vec::new();
        store(&mut jar, "https://example.com/", &["z=1; Path=/", "y=2; Path=/a/b", "x=3; Path=/a"]);
        assert_eq!(sent(&jar, "https://example.com/a/b/c"), "y=2; x=3; z=1");
        store(&mut jar, "https://example.com/", &["z=new; Path=/"]);
        assert_eq!(sent(&jar, "https://example.com/a/b/c"), "y=2; x=3; z=new", "a replaced cookie keeps its place");
    }

    #[test]
    fn hostless_cookies_go_everywhere_and_expired_ones_nowhere() {
        let jar = vec![
            Cookie::simple("any", "1"),
            Cookie { expires: Some(now().timestamp() - 1), ..Cookie::simple("old", "2") },
            Cookie { domain: "example.com".into(), path: "/test".into(), ..Cookie::simple("t", "3") },
        ];
        assert_eq!(sent(&jar, "https://anything.org/"), "any=1");
        assert_eq!(sent(&jar, "https://example.com/test/x"), "t=3; any=1");
    }
}
