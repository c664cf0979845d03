//! Wiring: opens the index, makes each stage, connects them, runs the sync loop, starts serving
//! clients once the index has caught up, and shuts everything down cleanly.

use std::sync::Arc;

use anyhow::{bail, Result};
use tokio::sync::{watch, Notify};

use crate::admin::{self, AdminContext};
use crate::config::Config;
use crate::electrum;
use crate::index::{Chain, Index};
use crate::metrics::Metrics;
use crate::node::Daemon;
use crate::peers::PeerManager;
use crate::store::{Db, DbSettings};
use crate::sync::{Outcome, Syncer, Until};
use crate::types::hex_rev;

/// Runs ferrum until shutdown (Ok) or a fatal error (Err, with what the operator should do).
pub async fn run(config: Config, shutdown_tx: watch::Sender<bool>) -> Result<()> {
    let config = Arc::new(config);
    let coin = config.coin;
    tracing::info!(
        "ferrum {} starting: {} {}, database {}",
        crate::VERSION,
        coin.name,
        coin.net,
        config.db_dir.display()
    );
    let metrics = Arc::new(Metrics::new());
    let (min, max) = (electrum::version::PROTOCOL_MIN, electrum::version::PROTOCOL_MAX);
    metrics.set_build_info(coin.name, coin.net.name(), &min.to_string(), &max.to_string());
    let db_path = config.db_dir.clone();
    let settings = DbSettings { block_cache_bytes: config.db_cache_mb << 20, lookup_zstd: config.db_lookup_zstd };
    let db = Arc::new(tokio::task::spawn_blocking(move || Db::open_with(&db_path, coin, settings)).await??);
    let chain = {
        let db = db.clone();
        tokio::task::spawn_blocking(move || load_chain(&db)).await??
    };
    match (chain.height(), chain.tip_hash()) {
        (Some(h), Some(hash)) => {
            metrics.set_indexed(h, hash, chain.tx_count());
            tracing::info!("index at height {h} ({}), {} transactions", hex_rev(&hash), chain.tx_count());
        }
        _ => tracing::info!("index is empty; starting initial sync from genesis"),
    }
    let (index, writer) = Index::new(db.clone(), chain, coin);
    let db_for_settle = db.clone();
    let daemon = Arc::new(Daemon::new(&config, shutdown_tx.subscribe(), metrics.clone()));
    let mempool_wakeup = Arc::new(Notify::new());
    let server = electrum::Server::new(
        config.clone(),
        index.clone(),
        daemon.clone(),
        metrics.clone(),
        mempool_wakeup.clone(),
        shutdown_tx.subscribe(),
    )?;
    let (mut syncer, sync_handle) = Syncer::start(
        config.clone(),
        daemon.clone(),
        writer,
        db,
        metrics.clone(),
        mempool_wakeup,
        shutdown_tx.subscribe(),
    )?;
    let peers = PeerManager::new(config.clone(), index.clone());
    server.ctx().set_peers(peers.clone());
    let admin = Arc::new(AdminContext {
        config: config.clone(),
        peers: peers.clone(),
        metrics,
        index: index.clone(),
        electrum: server.ctx().clone(),
        daemon,
        sync: sync_handle,
        shutdown: shutdown_tx.clone(),
    });
    if let Some(svc) = config.rpc_service() {
        admin::start(svc, admin.clone()).await?;
    }
    if let Some(addr) = config.metrics_addr {
        admin::exporter::start(addr, admin).await?;
    }

    let mut shutdown = shutdown_tx.subscribe();
    let result = async {
        if syncer.check_daemon().await? == Outcome::Stopped {
            return Ok(());
        }
        if syncer.run(&mut shutdown, Until::CaughtUp).await? == Outcome::Stopped {
            return Ok(());
        }
        settle_in_background(db_for_settle.clone());
        // As ElectrumX does: clients only once the index has caught up with the daemon.
        server.start().await?;
        // Peers check us back at once: only now that we serve the tip.
        tokio::spawn(peers.run(shutdown_tx.subscribe()));
        syncer.run(&mut shutdown, Until::Shutdown).await.map(|_| ())
    }
    .await;
    // Flush what is pending and stop the writer, whatever ended the loop.
    syncer.stop().await;
    if result.is_ok() {
        tracing::info!("shut down cleanly at height {}", index.applied_tip().map_or(-1, |t| t.height as i64));
    }
    result
}

/// The initial sync's last batch may still sit in memtables (sealed ones not yet written, and
/// the skiplist tables') and the write-ahead log: writes it to compressed tables and compacts
/// them, in the background (minutes on mainnet) while serving.
fn settle_in_background(db: Arc<Db>) {
    tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        match db.flush_memtables().and_then(|()| db.compact()) {
            Ok(()) => tracing::info!(
                "database compacted after the sync in {:.1} s: {} MB",
                started.elapsed().as_secs_f64(),
                db.size_estimate() >> 20
            ),
            Err(e) => tracing::warn!(
                "settling the database after the sync failed: {e:#}; it is complete and consistent, \
                                      only larger and slower to read until ferrum is restarted"
            ),
        }
    });
}

fn load_chain(db: &Db) -> Result<Chain> {
    let state = db.state()?;
    let chain = Chain::from_rows(db.load_headers()?);
    match state {
        None if chain.is_empty() => {}
        None => bail!("the index is damaged: it has headers but no chain state; delete DB_DIRECTORY to rebuild it"),
        Some(s) => {
            if chain.height() != Some(s.height) || chain.tip_hash() != Some(s.tip) || chain.tx_count() != s.tx_count {
                bail!(
                    "the index is damaged: chain state says height {} but headers end at {:?}; delete DB_DIRECTORY to rebuild it",
                    s.height,
                    chain.height()
                );
            }
        }
    }
    Ok(chain)
}

/// Waits for SIGINT or SIGTERM, then asks everything to stop.
pub async fn signal_shutdown(tx: watch::Sender<bool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = int.recv() => tracing::info!("SIGINT received: flushing and shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM received: flushing and shutting down"),
    }
    let _ = tx.send(true);
}
