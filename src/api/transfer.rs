//! `/v1/pools/{pool}/export` and `/v1/pools/{pool}/import`: moving pools in and out, in this
//! service's own lossless form and in Crawlee's persisted forms.

use axum::Router;

use super::AppState;

/// Routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
}
