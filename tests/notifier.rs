//! The notifier in process: a block's touched script hashes become one broadcast of statuses,
//! each session is told each change exactly once, reports queued together are coalesced into
//! one computation, and a session that fell behind the broadcast is brought up to date by
//! recomputing its own subscriptions.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bitcoin::consensus::encode::serialize;
use ferrum::coins::{lookup, Coin, Net};
use ferrum::electrum::subscriptions::{status_notification, Event, SessionSubs, Subscriptions, EVENT_QUEUE};
use ferrum::index::{Chain, Index, IndexEvent, IndexWriter};
use ferrum::metrics::Metrics;
use ferrum::node::block::parse_block;
use ferrum::store::Db;
use ferrum::sync::processor::BlockProcessor;
use ferrum::types::ScriptHash;
use ferrum_testkit::chain::{ChainBuilder, ChainOptions};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

fn coin() -> &'static Coin {
    lookup("Bitcoin", Net::Regtest).unwrap()
}

struct Setup {
    _dir: tempfile::TempDir,
    chain: ChainBuilder,
    index: Arc<Index>,
    writer: IndexWriter,
    processor: BlockProcessor,
    subs: Arc<Subscriptions>,
}

fn setup() -> Setup {
    let mut chain = ChainBuilder::with_options(31, ChainOptions { min_txs: 5, max_txs: 20, ..ChainOptions::default() });
    chain.add_blocks(20);
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(dir.path(), coin()).unwrap());
    let (index, writer) = Index::new(db.clone(), Chain::default(), coin());
    let mut processor = BlockProcessor::new(writer.clone(), db, 1 << 30, 1000, Arc::new(Metrics::new()));
    for (h, b) in chain.blocks().iter().enumerate() {
        processor.apply(&parse_block(&serialize(b), h as u32, coin()).unwrap(), chain.height()).unwrap();
    }
    processor.flush().unwrap();
    let subs = Subscriptions::new(index.clone(), 100_000);
    Setup { _dir: dir, chain, index, writer, processor, subs }
}

impl Setup {
    /// A session subscribed to the hot scripts, with their statuses as it was told them.
    fn session(&self) -> (SessionSubs, Vec<ScriptHash>) {
        let mut s = SessionSubs::default();
        let scripts: Vec<ScriptHash> =
            self.chain.hot_scripts().iter().map(|sc| ScriptHash::of_script(sc.as_bytes())).collect();
        let snap = self.index.snapshot();
        for sh in &scripts {
            self.subs.register(sh);
            s.scripts.insert(*sh, snap.status(&sh.hashx(), 100_000).unwrap().0);
        }
        s.headers = true;
        (s, scripts)
    }

    /// A session subscribed as `blockchain.scripthash.subscribe` does it: the confirmed part of
    /// each status kept for the next block to extend.
    fn session_keeping_confirmed(&self) -> (SessionSubs, Vec<ScriptHash>) {
        let (s, scripts) = self.session();
        let snap = self.index.snapshot();
        self.subs.keep_confirmed(
            scripts.iter().map(|sh| (sh.hashx(), snap.confirmed_status(&sh.hashx(), 100_000).unwrap())),
        );
        (s, scripts)
    }

    /// Mines a block on the builder and applies it (the processor flushes: at the tip).
    fn mine(&mut self) {
        self.chain.add_block();
        let h = self.chain.height();
        let block = parse_block(&serialize(&self.chain.blocks()[h as usize]), h, coin()).unwrap();
        self.processor.apply(&block, h).unwrap();
    }

    fn status_now(&self, sh: &ScriptHash) -> String {
        status_notification(sh, self.index.snapshot().status(&sh.hashx(), 100_000).unwrap().0, false)
    }
}

async fn next_statuses(rx: &mut tokio::sync::broadcast::Receiver<Arc<Event>>) -> Arc<Event> {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("an event").expect("received");
        if matches!(*ev, Event::Statuses { .. }) {
            return ev;
        }
    }
}

#[tokio::test]
async fn a_block_tells_each_session_each_change_once() {
    let mut t = setup();
    let (mut session, scripts) = t.session();
    t.subs.start();
    let mut rx = t.subs.events();
    t.mine();
    let tip = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
    assert!(matches!(*tip, Event::Tip { .. }), "the tip comes first");
    let sent = t.subs.notifications_for(&mut session, &tip).texts;
    assert_eq!(sent.len(), 1, "the headers subscription is told the new tip");
    assert!(t.subs.notifications_for(&mut session, &tip).texts.is_empty(), "and only once");
    let ev = next_statuses(&mut rx).await;
    let sent: HashSet<String> = t.subs.notifications_for(&mut session, &ev).texts.into_iter().collect();
    // Hot scripts receive outputs in nearly every block; each changed one is told its new status.
    let want: HashSet<String> = scripts.iter().map(|sh| t.status_now(sh)).filter(|n| !n.ends_with("null]}")).collect();
    assert!(!sent.is_empty());
    assert!(sent.is_subset(&want), "only current statuses are sent");
    assert!(t.subs.notifications_for(&mut session, &ev).texts.is_empty(), "each change once");
}

#[tokio::test]
async fn reports_queued_together_are_computed_once() {
    let t = setup();
    let (_session, scripts) = t.session();
    t.subs.start();
    let mut rx = t.subs.events();
    // Three reports before the notifier runs (this runtime has one thread): one broadcast.
    for sh in &scripts[..3] {
        t.writer.publish(IndexEvent::Changed { touched: [sh.hashx()].into_iter().collect(), tip: None });
    }
    let ev = next_statuses(&mut rx).await;
    let Event::Statuses { statuses, .. } = &*ev else { unreachable!() };
    let got: HashSet<ScriptHash> = statuses.keys().copied().collect();
    assert_eq!(got, scripts[..3].iter().copied().collect(), "all three in one computation");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)), "and no second broadcast");
}

#[tokio::test]
async fn a_session_that_fell_behind_resyncs_its_subscriptions() {
    let mut t = setup();
    let (mut session, scripts) = t.session();
    t.subs.start();
    let mut rx = t.subs.events();
    // More broadcasts than a session may queue, without it reading; then a real change.
    for i in 0..EVENT_QUEUE + 8 {
        let sh = scripts[i % scripts.len()];
        t.writer.publish(IndexEvent::Changed { touched: [sh.hashx()].into_iter().collect(), tip: None });
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    t.mine();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(matches!(rx.recv().await, Err(RecvError::Lagged(_))), "the session lagged");
    let sent = t.subs.resync(&mut session).await.texts;
    let (tips, statuses): (Vec<String>, Vec<String>) = sent.into_iter().partition(|n| n.contains("headers"));
    let statuses: HashSet<String> = statuses.into_iter().collect();
    let current: HashSet<String> = scripts.iter().map(|sh| t.status_now(sh)).collect();
    assert!(!statuses.is_empty() && statuses.is_subset(&current), "resync tells the current statuses");
    assert_eq!(tips.len(), 1, "and the new tip");
    assert!(t.subs.resync(&mut session).await.texts.is_empty(), "nothing twice");
}

/// Statuses extended by each block's entries while it is written are exactly those read from
/// the index afterwards, no history is read for them, and after an unwind (parts of another
/// tip) they are read again, right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_extended_while_a_block_is_written_are_those_read_from_the_index() {
    let mut t = setup();
    let (_session, scripts) = t.session_keeping_confirmed();
    assert_eq!(t.subs.confirmed_kept(), (scripts.len(), 0));
    t.subs.start();
    let mut rx = t.subs.events();
    let check = |t: &Setup, ev: &Event| {
        let Event::Statuses { statuses, .. } = ev else { unreachable!() };
        assert!(!statuses.is_empty());
        for (sh, (status, _)) in statuses {
            assert_eq!(status_notification(sh, *status, false), t.status_now(sh), "the status of {sh}");
        }
        statuses.len()
    };
    let mut told = 0;
    for _ in 0..3 {
        t.mine();
        told += check(&t, &*next_statuses(&mut rx).await);
    }
    assert!(told >= 3);
    assert_eq!(t.subs.confirmed_kept(), (scripts.len(), 0), "every status came from its extended confirmed part");
    // Unwind the tip: the kept parts are of the unwound block, so the histories are read.
    let h = t.chain.height();
    t.processor.unwind_to(h - 1).unwrap();
    check(&t, &*next_statuses(&mut rx).await);
    let (_, read) = t.subs.confirmed_kept();
    assert!(read > 0, "parts of another tip are not used");
    // And from the parts read then, the next block extends again.
    t.chain = t.chain.fork(h - 1);
    t.mine();
    check(&t, &*next_statuses(&mut rx).await);
    assert_eq!(t.subs.confirmed_kept().1, read, "no history read for the block after the unwind");
}
