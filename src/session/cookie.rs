//! The cookies a session carries, in the shape the API gives them (openapi.yaml's Cookie, after
//! Playwright's conventions).
//!
//! A session's cookies are keyed by `(domain, path, name)`, as a browser keys them: setting a cookie
//! with the same key replaces it, a different domain or path keeps both.

use serde::{Deserialize, Serialize};

use super::Error;
use crate::json::strict::Fields;

/// The `SameSite` attribute of a cookie; written `Lax`, `Strict` or `None` as Playwright does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SameSite {
    /// Sent on top-level navigations from other sites, not on their sub-requests.
    Lax,
    /// Never sent on requests from other sites.
    Strict,
    /// Sent everywhere (a browser then requires `Secure`).
    None,
}

/// One cookie of a session, in the API's shape, the same on input, output and disk: on input only
/// `name` and `value` are required; absent `expires` and `same_site` are left out on output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cookie {
    /// Cookie name; non-empty.
    pub name: String,
    /// Cookie value.
    pub value: String,
    /// `""` matches every host, `"example.com"` that host alone, `".example.com"` its subdomains too.
    #[serde(default)]
    pub domain: String,
    /// Path prefix the cookie is sent to.
    #[serde(default = "root_path")]
    pub path: String,
    /// Sent over HTTPS only.
    #[serde(default)]
    pub secure: bool,
    /// Hidden from page scripts.
    #[serde(default)]
    pub http_only: bool,
    /// Expiry in Unix seconds; `None` is a session cookie, kept for the life of the session.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::json::int::opt")]
    pub expires: Option<i64>,
    /// The `SameSite` attribute, when the cookie has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_site: Option<SameSite>,
}

impl Fields for Cookie {
    const FIELDS: &'static [&'static str] =
        &["name", "value", "domain", "path", "secure", "http_only", "expires", "same_site"];
}

/// The path of a cookie that gives none.
pub(crate) fn root_path() -> String {
    "/".into()
}

impl Cookie {
    /// A host-less cookie with the API's defaults: any host, path `/`, neither secure nor http-only.
    pub fn simple(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
            domain: String::new(),
            path: root_path(),
            secure: false,
            http_only: false,
            expires: None,
            same_site: None,
        }
    }

    /// Rejects what no `Set-Cookie` header could carry: an empty or non-token name, control
    /// characters or `;` in the value, a path that does not start with `/`.
    ///
    /// # Errors
    /// [`Error::InvalidCookie`] saying which part is wrong.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |reason: String| Err(Error::InvalidCookie { name: self.name.clone(), reason });
        if self.name.is_empty() {
            return bad("the name is empty".into());
        }
        if let Some(c) = self.name.chars().find(|c| !is_token_char(*c)) {
            return bad(format!("the name contains {c:?}"));
        }
        if let Some(c) = self.value.chars().find(|c| c.is_control() || *c == ';') {
            return bad(format!("the value contains {c:?}"));
        }
        if let Some(c) = self.domain.chars().find(|c| c.is_control() || c.is_whitespace() || *c == ';') {
            return bad(format!("the domain contains {c:?}"));
        }
        if !self.path.starts_with('/') || self.path.chars().any(|c| c.is_control() || c == ';') {
            return bad("the path must start with '/' and hold no ';' or control characters".into());
        }
        Ok(())
    }

    fn same_key(&self, other: &Cookie) -> bool {
        self.name == other.name && self.domain == other.domain && self.path == other.path
    }
}

/// RFC 7230 token characters, which a cookie name is made of.
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// Inserts `cookie`, replacing the one with the same `(domain, path, name)` in place.
pub fn upsert(jar: &mut Vec<Cookie>, cookie: Cookie) {
    match jar.iter_mut().find(|c| c.same_key(&cookie)) {
        Some(existing) => *existing = cookie,
        None => jar.push(cookie),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_field_list_is_the_structs() {
        assert_eq!(crate::json::strict::serde_fields::<Cookie>(), Cookie::FIELDS);
    }

    #[test]
    fn upsert_replaces_by_domain_path_and_name_only() {
        let mut jar = vec![Cookie::simple("a", "1")];
        upsert(&mut jar, Cookie::simple("a", "2"));
        assert_eq!(jar.len(), 1);
        assert_eq!(jar[0].value, "2");
        upsert(&mut jar, Cookie { domain: "example.com".into(), ..Cookie::simple("a", "3") });
        upsert(&mut jar, Cookie { path: "/x".into(), ..Cookie::simple("a", "4") });
        assert_eq!(jar.len(), 3);
        assert_eq!(jar.iter().map(|c| c.value.as_str()).collect::<Vec<_>>(), ["2", "3", "4"]);
    }

    #[test]
    fn validation_rejects_what_a_header_cannot_carry() {
        assert!(Cookie::simple("sid", "abc").validate().is_ok());
        assert!(Cookie::simple("", "abc").validate().is_err());
        assert!(Cookie::simple("a b", "abc").validate().is_err());
        assert!(Cookie::simple("a", "x;y").validate().is_err());
        assert!(Cookie { path: "nope".into(), ..Cookie::simple("a", "b") }.validate().is_err());
    }
}
