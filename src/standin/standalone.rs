//! `roomsync stand-in`: the stand-in DingTalk API as a process of its own, for trying the
//! service (or testing it under systemd) without DingTalk credentials.

use std::net::SocketAddr;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use super::{StandIn, StandInConfig};

/// Serves until `shutdown`; tells systemd READY=1 (when run by it) once the port is bound, so
/// that units ordered after it find it listening.
pub async fn serve(
    listen: SocketAddr,
    config: StandInConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let org = config.org;
    let latency = config.page_latency;
    let (app_key, union_id) = (config.app_key.clone(), config.union_id.clone());
    let standin = StandIn::start_at(listen, config)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {listen}: {e}")))?;
    let url = standin.base_url();
    // The app secret it accepts is in `--help`; it stays out of logs like any secret.
    println!(
        "stand-in DingTalk API at {url}: {} rooms (seed {}, revision {}), {} page latency; \
         app_key {app_key:?}, union_id {union_id:?}",
        org.rooms,
        org.seed,
        org.revision,
        humantime::format_duration(latency),
    );
    tracing::info!(%url, rooms = org.rooms, "stand-in listening");
    let _ = sd_notify::notify(&[
        NotifyState::Ready,
        NotifyState::Status(&format!("serving {} rooms at {url}", org.rooms)),
    ]);
    shutdown.cancelled().await;
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
    standin.stop().await;
    Ok(())
}
