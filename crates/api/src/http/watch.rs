//! Watch streams: `?watch=true` answers with a chunked stream of `{"type", "object"}` lines,
//! replayed from the store's revision log after the requested resourceVersion; each object is
//! a one-row Table when the client asked for tables (shared/kubectl-wire.md §5).

use super::error::ApiError;
use super::objects::{now_secs, Target};
use super::table::{table, IncludeObject};
use super::ApiState;
use crate::store::{EventKind, Filter};
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, StatusCode};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

/// When a watch that allows bookmarks gets one, as the API server's watch cache sends them: about
/// once a minute, and once shortly before the watch's `timeoutSeconds` runs out, so a client
/// resuming after the timeout starts from a recent resourceVersion
/// (<https://kubernetes.io/docs/reference/using-api/api-concepts/#watch-bookmarks>).
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);
const BOOKMARK_BEFORE_TIMEOUT: Duration = Duration::from_secs(2);

/// The next bookmark's time, `now` being when the last one (or the watch) began.
fn next_bookmark(
    now: tokio::time::Instant,
    deadline: Option<tokio::time::Instant>,
) -> tokio::time::Instant {
    let periodic = now + BOOKMARK_EVERY;
    match deadline.and_then(|d| d.checked_sub(BOOKMARK_BEFORE_TIMEOUT)) {
        Some(before_end) if before_end > now && before_end < periodic => before_end,
        _ => periodic,
    }
}

pub async fn watch(
    state: &ApiState,
    target: &Target,
    params: &HashMap<String, String>,
    as_table: bool,
) -> Result<Response, ApiError> {
    let since: u64 = match params.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => 0,
        Some(rv) => rv
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resource version {rv:?}")))?,
    };
    let filter = Filter::parse(
        params
            .get("labelSelector")
            .map(String::as_str)
            .filter(|s| !s.is_empty()),
        params
            .get("fieldSelector")
            .map(String::as_str)
            .filter(|s| !s.is_empty()),
    )?;
    let mut stream = state.store.watch(
        &target.resource.store_name(),
        target.namespace.as_deref(),
        since,
        filter,
    )?;
    let bookmarks = params
        .get("allowWatchBookmarks")
        .is_some_and(|b| b == "true");
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs);
    let resource = target.resource;
    let kind = resource.kind;
    let api_version = resource.api_version();
    let include = IncludeObject::from_query(params.get("includeObject").map(String::as_str));
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut bookmark_at = next_bookmark(tokio::time::Instant::now(), deadline);
        loop {
            let next = async {
                match deadline {
                    Some(d) => tokio::time::timeout_at(d, stream.next())
                        .await
                        .unwrap_or(None),
                    None => stream.next().await,
                }
            };
            let event = tokio::select! {
                e = next => e,
                _ = tokio::time::sleep_until(bookmark_at), if bookmarks => {
                    bookmark_at = next_bookmark(bookmark_at, deadline);
                    // Every matching change up to this revision has been sent: resuming from it
                    // neither repeats nor misses one.
                    let rv = stream.revision().to_string();
                    let line = json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": rv}}});
                    if tx.send(Ok(line_bytes(&line))).await.is_err() {
                        return;
                    }
                    continue;
                }
                _ = tx.closed() => return,
            };
            let Some(event) = event else { return };
            let type_ = match event.kind {
                EventKind::Added => "ADDED",
                EventKind::Modified => "MODIFIED",
                EventKind::Deleted => "DELETED",
            };
            let object: Value = if as_table {
                let rv = event.revision.to_string();
                table(resource.plural, &[event.object], &rv, include, now_secs())
            } else {
                event.object
            };
            if tx
                .send(Ok(line_bytes(&json!({"type": type_, "object": object}))))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let body = Body::from_stream(tokio_stream_from(rx));
    let content_type = if as_table {
        "application/json;as=Table;v=v1;g=meta.k8s.io"
    } else {
        "application/json"
    };
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache, private"),
        ],
        body,
    )
        .into_response())
}

fn line_bytes(v: &Value) -> Bytes {
    let mut b = serde_json::to_vec(v).unwrap_or_default();
    b.push(b'\n');
    Bytes::from(b)
}

/// A receiver as a stream of body chunks.
pub fn tokio_stream_from<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}
