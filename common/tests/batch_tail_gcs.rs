//! The progress tail on fake-gcs-server with many concurrent writers: GCS generations are
//! timestamps, so the tail's cursor leans on the adapter's settled generation, not on writes
//! becoming visible in order. Live and resumed clients get every row's last state, none twice.

use assetgen_common::batch_view::Presenter;
use assetgen_common::domain::BatchId;
use assetgen_common::events::Cursor;
use assetgen_common::layout;
use assetgen_common::state::RowState;
use assetgen_common::store::{Generation, ObjectStore, Precondition, read_json, write_json};
use assetgen_common::tail::{BatchTail, Sequenced};
use assetgen_common::testkit::{FakeGcs, Rig, row};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const ROWS: u32 = 40;
const WRITERS: u64 = 8;
const WRITES_EACH: usize = 15;

async fn generations(store: &dyn ObjectStore, id: &BatchId) -> BTreeMap<u32, Generation> {
    let listed = store.list(&layout::rows_prefix(id)).await.expect("list");
    listed.iter().map(|m| (layout::row_of_state_name(&m.name).expect("a row"), m.generation)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_on_gcs_lose_nothing_and_repeat_nothing_live_or_on_resume() {
    let gcs = FakeGcs::start().await;
    let store: Arc<dyn ObjectStore> = Arc::new(gcs.store().await);
    let kit = Rig::on(store.clone(), |parts| parts.limits.max_rows = ROWS as usize);
    let id = kit.submit_rows((0..ROWS).map(|i| row(&format!("S{i}"), 1)).collect()).await;
    let presenter = Presenter::new("http://t", assetgen_common::auth::LinkSigner::random());
    let (mut tail, first) = BatchTail::open(store.clone(), &id, presenter.clone(), None).await.expect("open");
    let mut client = generations(store.as_ref(), &id).await;
    let mut views: Vec<(String, BTreeMap<u32, Generation>)> = vec![(first[0].id.to_string(), client.clone())];

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (store, id) = (store.clone(), id.clone());
            tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(w);
                for _ in 0..WRITES_EACH {
                    let name = layout::row_state(&id, rng.random_range(0..ROWS));
                    let mut state: RowState = read_json(store.as_ref(), &name).await.expect("read").value;
                    state.attempts += 1;
                    write_json(store.as_ref(), &name, &state, Precondition::None).await.expect("write");
                }
            })
        })
        .collect();
    let mut stream: Vec<Sequenced> = Vec::new();
    let mut take = |events: Vec<Sequenced>, client: &mut BTreeMap<u32, Generation>| {
        for event in events {
            if let Some((row, g)) = event.row {
                let had = client.insert(row, g);
                assert!(had.is_none_or(|h| h < g), "row {row} sent twice or out of order ({had:?} then {g})");
            }
            // What a browser keeps: the id as text.
            views.push((event.id.to_string(), client.clone()));
            stream.push(event);
        }
    };
    while !writers.iter().all(tokio::task::JoinHandle::is_finished) {
        take(tail.poll().await.expect("poll"), &mut client);
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    for w in writers {
        w.await.expect("writer");
    }
    take(tail.poll().await.expect("poll"), &mut client);
    let truth = generations(store.as_ref(), &id).await;
    assert_eq!(client, truth, "the live client ends with every row's last state");
    let named = views.iter().filter(|(id, _)| id.contains('~')).count();
    assert!(named > 0, "on GCS, ids name the rows written within the settling time");

    for (k, (id_k, had)) in views.iter().enumerate().step_by(3) {
        let cursor = Cursor::parse(id_k).expect("an id the relay wrote parses back");
        let lacking: Vec<(u32, Generation)> =
            truth.iter().filter(|(r, g)| had.get(r) != Some(g)).map(|(r, g)| (*r, *g)).collect();
        let (_, resumed) = BatchTail::open(store.clone(), &id, presenter.clone(), Some(cursor)).await.expect("resume");
        let mut got: Vec<(u32, Generation)> = resumed.iter().filter_map(|s| s.row).collect();
        got.sort_unstable();
        assert_eq!(got, lacking, "resume after event {k} ({id_k})");
    }
}
