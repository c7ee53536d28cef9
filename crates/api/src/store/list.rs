//! Lists: one read transaction scanning a key prefix in (namespace, name) order, filtered by
//! selectors and cut into pages with `limit` and `continue`
//! (<https://kubernetes.io/docs/reference/using-api/api-concepts/#retrieving-large-results-sets-in-chunks>).
//!
//! Unlike etcd, the store keeps no old versions of objects, so a continued page reads the
//! current state after the last key returned, not the state at the first page's revision. To
//! keep "list, then watch from the list's resourceVersion" safe, every page reports the first
//! page's revision: a watch from it may repeat a change a later page already showed, but never
//! misses one. A continue token whose revision has been compacted is `Gone`, as in Kubernetes.

use std::ops::Bound;

use serde_json::Value;

use super::error::{db, StoreError};
use super::watch::Filter;
use super::{key, parse_object, read_meta, Store, OBJECTS};

/// The query parameters of a list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOptions {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    /// At most this many items; `None` or 0 means no limit.
    pub limit: Option<usize>,
    /// The `continue` of the previous page.
    pub continue_token: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListResult {
    /// Ordered by namespace, then name.
    pub items: Vec<Value>,
    /// The list's `metadata.resourceVersion`: a watch from it sees every later change.
    pub resource_version: u64,
    /// Set when more items match: pass it back to get the next page.
    pub continue_token: Option<String>,
    /// How many matching items follow this page (`remainingItemCount`), when there are some.
    pub remaining: Option<i64>,
}

/// One page cut from a key-ordered scan.
#[derive(Debug, PartialEq)]
struct Page {
    items: Vec<Value>,
    /// The key of the last item on the page.
    last_key: Option<Vec<u8>>,
    /// Matching items after the page.
    remaining: usize,
}

/// Cuts a page of at most `limit` matching objects from `entries` (encoded key, object JSON, in
/// key order) and counts the matching ones after it.
fn paginate<I>(entries: I, filter: &Filter, limit: Option<usize>) -> Result<Page, StoreError>
where
    I: Iterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>>,
{
    let limit = limit.filter(|&n| n > 0);
    let mut page = Page {
        items: Vec::new(),
        last_key: None,
        remaining: 0,
    };
    for entry in entries {
        let (key, bytes) = entry?;
        let full = limit.is_some_and(|n| page.items.len() >= n);
        if full && filter.is_everything() {
            page.remaining += 1;
            continue;
        }
        let object = parse_object(&key, &bytes)?;
        if !filter.matches(&object) {
            continue;
        }
        if full {
            page.remaining += 1;
        } else {
            page.items.push(object);
            page.last_key = Some(key);
        }
    }
    Ok(page)
}

impl Store {
    /// Lists `resource` in `namespace` (`None`: all namespaces and cluster scope). Short
    /// blocking call; for very large lists prefer `spawn_blocking` in async code.
    pub fn list(
        &self,
        resource: &str,
        namespace: Option<&str>,
        opts: &ListOptions,
    ) -> Result<ListResult, StoreError> {
        let filter = Filter::parse(
            opts.label_selector.as_deref(),
            opts.field_selector.as_deref(),
        )?;
        let prefix = key::prefix(resource, namespace)?;
        let start = match &opts.continue_token {
            Some(token) => Some(key::decode_continue(token, &prefix)?),
            None => None,
        };
        let txn = self.inner.begin_read()?;
        let meta = read_meta(&txn)?;
        let list_revision = match &start {
            Some((revision, _)) if *revision < meta.compacted => {
                return Err(StoreError::Gone {
                    requested: *revision,
                    oldest: meta.compacted,
                })
            }
            Some((revision, _)) => *revision,
            None => meta.revision,
        };
        let objects = txn.open_table(OBJECTS).map_err(db("open objects table"))?;
        let end = key::prefix_end(&prefix);
        let lower = match &start {
            Some((_, last)) => Bound::Excluded(last.as_slice()),
            None => Bound::Included(prefix.as_slice()),
        };
        let range = objects
            .range::<&[u8]>((lower, Bound::Excluded(end.as_slice())))
            .map_err(db("scan objects"))?;
        let entries = range.map(|entry| {
            let (k, v) = entry.map_err(db("scan objects"))?;
            Ok((k.value().to_vec(), v.value().to_vec()))
        });
        let page = paginate(entries, &filter, opts.limit)?;
        let continue_token = page
            .last_key
            .filter(|_| page.remaining > 0)
            .map(|last| key::encode_continue(list_revision, &last));
        let remaining = continue_token
            .as_ref()
            .map(|_| i64::try_from(page.remaining).unwrap_or(i64::MAX));
        Ok(ListResult {
            items: page.items,
            resource_version: list_revision,
            continue_token,
            remaining,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entries(n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        (0..n)
            .map(|i| {
                let app = if i % 2 == 0 { "web" } else { "db" };
                let obj = json!({"metadata": {"name": format!("o{i}"), "labels": {"app": app}}});
                (
                    format!("pods\0ns\0o{i}").into_bytes(),
                    obj.to_string().into_bytes(),
                )
            })
            .collect()
    }

    fn names(page: &Page) -> Vec<&str> {
        page.items
            .iter()
            .filter_map(|o| o.pointer("/metadata/name").and_then(Value::as_str))
            .collect()
    }

    #[test]
    fn pages() {
        let web = Filter::parse(Some("app=web"), None).expect("parses");
        let all = Filter::default();
        // (filter, limit, names on the page, last key, remaining)
        type Case<'a> = (
            &'a Filter,
            Option<usize>,
            Vec<&'a str>,
            Option<&'a str>,
            usize,
        );
        let cases: Vec<Case> = vec![
            (
                &all,
                None,
                vec!["o0", "o1", "o2", "o3", "o4"],
                Some("o4"),
                0,
            ),
            (
                &all,
                Some(0),
                vec!["o0", "o1", "o2", "o3", "o4"],
                Some("o4"),
                0,
            ),
            (&all, Some(2), vec!["o0", "o1"], Some("o1"), 3),
            (
                &all,
                Some(5),
                vec!["o0", "o1", "o2", "o3", "o4"],
                Some("o4"),
                0,
            ),
            (
                &all,
                Some(9),
                vec!["o0", "o1", "o2", "o3", "o4"],
                Some("o4"),
                0,
            ),
            (&web, None, vec!["o0", "o2", "o4"], Some("o4"), 0),
            (&web, Some(1), vec!["o0"], Some("o0"), 2),
            (&web, Some(3), vec!["o0", "o2", "o4"], Some("o4"), 0),
        ];
        for (filter, limit, want, last, remaining) in cases {
            let iter = entries(5).into_iter().map(Ok);
            let page = paginate(iter, filter, limit).expect("pages");
            let label = format!("{filter:?} {limit:?}");
            assert_eq!(names(&page), want, "{label}");
            let last = last.map(|n| format!("pods\0ns\0{n}").into_bytes());
            assert_eq!(page.last_key, last, "{label}");
            assert_eq!(page.remaining, remaining, "{label}");
        }
    }

    #[test]
    fn corrupt_object_is_an_error() {
        let iter = vec![Ok((b"pods\0ns\0x".to_vec(), b"{".to_vec()))].into_iter();
        assert!(matches!(
            paginate(iter, &Filter::default(), None),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
