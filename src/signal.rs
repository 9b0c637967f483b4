//! Shutdown signals: SIGTERM and SIGINT, handled the same way by the one-shot modes and the
//! daemon.

use std::io;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// SIGTERM and SIGINT handlers, registered up front so that a signal arriving before anyone
/// waits is not lost (and a failure to register shows before the work starts).
pub struct ShutdownSignals {
    term: Signal,
    int: Signal,
}

impl ShutdownSignals {
    pub fn register() -> io::Result<ShutdownSignals> {
        Ok(ShutdownSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for SIGTERM or SIGINT and names it.
    pub async fn wait(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }

    /// Cancels `token` on the first signal.
    pub async fn cancel_on_signal(mut self, token: CancellationToken) {
        let name = self.wait().await;
        tracing::warn!(signal = name, "shutdown requested");
        token.cancel();
    }
}
