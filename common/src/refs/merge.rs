//! Merging a row's references with the global ones (DESIGN.md "Reference fetch"): row refs first,
//! then global; the same URL is fetched once; the same bytes are sent once; at most `cap` distinct
//! images are sent. The report tells the user what happened to every reference they gave.

use crate::api::{RefOutcome, RefReport, RefSource};
use crate::domain::RefUrl;
use crate::model::RefImage;
use crate::refs::fetch::{FetchError, FetchedRef, RefFetcher};
use std::collections::HashMap;

/// The images to send, in order, and one report entry per given reference, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedRefs {
    pub images: Vec<RefImage>,
    pub report: Vec<RefReport>,
}

/// Row refs first, then global; identical URL strings are fetched once; dedup by SHA-256 of the
/// content (a later ref with the same bytes gets outcome `Duplicate` with `duplicate_of` = the first
/// URL that had them); at most `cap` distinct images are used (later distinct ones get
/// `DroppedOverCap`); the report lists every ref in order, with sha256 and bytes.
///
/// Deduplication comes before the cap: a ref repeating the bytes of one dropped over the cap is a
/// `Duplicate` of it, since the cap counts distinct images.
///
/// Every fetch goes through one [`RefFetcher::fetch_all`], so the fetcher's concurrency bound holds
/// for the row. If any ref fails, the first failure in ref order is returned: the caller fails or
/// retries the row (see [`FetchError::is_retryable`]).
pub async fn merge_refs(
    fetcher: &RefFetcher,
    row_refs: &[RefUrl],
    global_refs: &[RefUrl],
    cap: usize,
) -> Result<MergedRefs, FetchError> {
    let refs: Vec<(&RefUrl, RefSource)> = row_refs
        .iter()
        .map(|u| (u, RefSource::Row))
        .chain(global_refs.iter().map(|u| (u, RefSource::Global)))
        .collect();

    // Distinct URL strings in order of first appearance: their first failure is the first in ref order.
    let mut unique: Vec<RefUrl> = Vec::new();
    let mut slot_of: HashMap<&str, usize> = HashMap::new();
    for (url, _) in &refs {
        slot_of.entry(url.as_str()).or_insert_with(|| {
            unique.push((*url).clone());
            unique.len() - 1
        });
    }
    let fetched: Vec<FetchedRef> = fetcher.fetch_all(&unique).await.into_iter().collect::<Result<_, _>>()?;

    let mut images = Vec::new();
    let mut report = Vec::with_capacity(refs.len());
    // SHA-256 → the first URL that had these bytes.
    let mut first_with: HashMap<&str, &str> = HashMap::new();
    let mut distinct = 0usize;
    for (url, source) in refs {
        let image = &fetched[slot_of[url.as_str()]].image;
        let (outcome, duplicate_of) = if let Some(first) = first_with.get(image.sha256.as_str()) {
            (RefOutcome::Duplicate, Some((*first).to_owned()))
        } else {
            first_with.insert(&image.sha256, url.as_str());
            distinct += 1;
            if distinct <= cap {
                images.push(image.clone());
                (RefOutcome::Used, None)
            } else {
                (RefOutcome::DroppedOverCap, None)
            }
        };
        report.push(RefReport {
            url: url.to_string(),
            source,
            sha256: Some(image.sha256.clone()),
            bytes: Some(image.bytes.len() as u64),
            outcome,
            duplicate_of,
        });
    }
    for entry in &report {
        let outcome = match entry.outcome {
            RefOutcome::Used => "used",
            RefOutcome::Duplicate => "duplicate",
            RefOutcome::DroppedOverCap => "dropped_over_cap",
        };
        metrics::counter!(crate::observe::names::REFS, "outcome" => outcome).increment(1);
    }
    Ok(MergedRefs { images, report })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refs::fetch::FetchPolicy;
    use crate::refs::fetch::tests::{fetcher, png, png_response, ref_url, serve, sha_hex, test_policy};
    use axum::Router;
    use axum::http::StatusCode;
    use axum::routing::get;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// `/a` `/b` `/c` `/d` serve distinct PNGs, `/a-copy` the bytes of `/a`; `/gone` is 404 and
    /// `/slow-gone` a 404 that takes 150 ms. Every image response takes 30 ms and counts how many
    /// are in flight.
    async fn server() -> (String, crate::refs::fetch::tests::Hits, Arc<AtomicUsize>) {
        let in_flight = Arc::new(AtomicUsize::new(0));
        let max_in_flight = Arc::new(AtomicUsize::new(0));
        let mut router = Router::new();
        for (path, seed) in [("/a", 1u8), ("/a-copy", 1), ("/b", 2), ("/c", 3), ("/d", 4)] {
            let (in_flight, max_in_flight) = (in_flight.clone(), max_in_flight.clone());
            router = router.route(
                path,
                get(move || async move {
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    max_in_flight.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    png_response(png(seed))
                }),
            );
        }
        router = router.route("/gone", get(|| async { StatusCode::NOT_FOUND })).route(
            "/slow-gone",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(150)).await;
                StatusCode::NOT_FOUND
            }),
        );
        let (base, hits) = serve(router).await;
        (base, hits, max_in_flight)
    }

    fn urls(base: &str, paths: &[&str]) -> Vec<RefUrl> {
        paths.iter().map(|p| ref_url(&format!("{base}{p}"))).collect()
    }

    fn outcomes(merged: &MergedRefs) -> Vec<(String, RefSource, RefOutcome, Option<String>)> {
        merged.report.iter().map(|r| (r.url.clone(), r.source, r.outcome, r.duplicate_of.clone())).collect()
    }

    #[tokio::test]
    async fn row_refs_come_before_global_refs() {
        let (base, _, _) = server().await;
        let (fetcher, _) = fetcher(test_policy());
        let merged = merge_refs(&fetcher, &urls(&base, &["/b"]), &urls(&base, &["/a"]), 6).await.expect("merged");
        assert_eq!(merged.images.iter().map(|i| i.bytes.to_vec()).collect::<Vec<_>>(), [png(2), png(1)]);
        assert_eq!(
            outcomes(&merged),
            [
                (format!("{base}/b"), RefSource::Row, RefOutcome::Used, None),
                (format!("{base}/a"), RefSource::Global, RefOutcome::Used, None),
            ]
        );
        assert_eq!(merged.report[0].sha256.as_deref(), Some(sha_hex(&png(2)).as_str()));
        assert_eq!(merged.report[0].bytes, Some(png(2).len() as u64));
    }

    #[tokio::test]
    async fn the_same_url_is_fetched_once() {
        let (base, hits, _) = server().await;
        let (fetcher, _) = fetcher(test_policy());
        let merged = merge_refs(&fetcher, &urls(&base, &["/a", "/a"]), &urls(&base, &["/a"]), 6).await.expect("merged");
        assert_eq!(hits.get("/a"), 1);
        assert_eq!(merged.images.len(), 1);
        let a = format!("{base}/a");
        assert_eq!(
            outcomes(&merged),
            [
                (a.clone(), RefSource::Row, RefOutcome::Used, None),
                (a.clone(), RefSource::Row, RefOutcome::Duplicate, Some(a.clone())),
                (a.clone(), RefSource::Global, RefOutcome::Duplicate, Some(a.clone())),
            ]
        );
    }

    #[tokio::test]
    async fn the_same_bytes_under_another_url_are_a_duplicate() {
        let (base, hits, _) = server().await;
        let (fetcher, _) = fetcher(test_policy());
        let merged =
            merge_refs(&fetcher, &urls(&base, &["/a", "/b"]), &urls(&base, &["/a-copy"]), 6).await.expect("merged");
        assert_eq!(hits.get("/a-copy"), 1, "a different URL is fetched");
        assert_eq!(merged.images.iter().map(|i| i.bytes.to_vec()).collect::<Vec<_>>(), [png(1), png(2)]);
        let dup = &merged.report[2];
        assert_eq!(dup.url, format!("{base}/a-copy"));
        assert_eq!(dup.source, RefSource::Global);
        assert_eq!(dup.outcome, RefOutcome::Duplicate);
        assert_eq!(dup.duplicate_of.as_deref(), Some(format!("{base}/a").as_str()));
        assert_eq!(dup.sha256, merged.report[0].sha256);
        assert_eq!(dup.bytes, Some(png(1).len() as u64));
    }

    #[tokio::test]
    async fn refs_beyond_the_cap_are_dropped() {
        let (base, _, _) = server().await;
        let (fetcher, _) = fetcher(test_policy());
        let merged = merge_refs(&fetcher, &urls(&base, &["/a", "/b", "/a-copy", "/c"]), &urls(&base, &["/d"]), 2)
            .await
            .expect("merged");
        assert_eq!(merged.images.iter().map(|i| i.bytes.to_vec()).collect::<Vec<_>>(), [png(1), png(2)]);
        let got: Vec<RefOutcome> = merged.report.iter().map(|r| r.outcome).collect();
        assert_eq!(
            got,
            [
                RefOutcome::Used,
                RefOutcome::Used,
                RefOutcome::Duplicate, // not distinct: does not count against the cap
                RefOutcome::DroppedOverCap,
                RefOutcome::DroppedOverCap,
            ]
        );
        assert_eq!(merged.report[4].source, RefSource::Global);
        assert!(
            merged.report.iter().all(|r| r.sha256.is_some() && r.bytes.is_some()),
            "fetched refs carry sha and size"
        );
    }

    #[tokio::test]
    async fn no_refs_is_no_images() {
        let (fetcher, _) = fetcher(test_policy());
        let merged = merge_refs(&fetcher, &[], &[], 6).await.expect("merged");
        assert!(merged.images.is_empty() && merged.report.is_empty());
    }

    #[tokio::test]
    async fn the_first_failure_in_ref_order_is_returned() {
        let (base, _, _) = server().await;
        let (fetcher, _) = fetcher(test_policy());
        // `/slow-gone` fails last in time but comes first in ref order.
        let err = merge_refs(&fetcher, &urls(&base, &["/a", "/slow-gone"]), &urls(&base, &["/gone"]), 6)
            .await
            .expect_err("a ref is missing");
        assert_eq!(err.url(), format!("{base}/slow-gone"));
        assert!(!err.is_retryable());
    }

    #[tokio::test]
    async fn the_row_shares_one_bounded_pool() {
        let (base, hits, max_in_flight) = server().await;
        let (fetcher, _) = fetcher(FetchPolicy { concurrency: 2, ..test_policy() });
        let merged =
            merge_refs(&fetcher, &urls(&base, &["/a", "/b"]), &urls(&base, &["/c", "/d"]), 6).await.expect("merged");
        assert_eq!(merged.images.len(), 4);
        assert_eq!(hits.total(), 4);
        assert_eq!(max_in_flight.load(Ordering::SeqCst), 2, "row and global refs share one pool of 2");
    }
}
