//! Running an axum router on a socket, with a shutdown signal that also releases hung requests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::EmulatorError;

/// How long an explicit shutdown waits for in-flight requests before aborting the server.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The shutdown signal: `true` once the emulator is stopping. Handlers that hang on purpose
/// (timeout faults) wait on it so that a stopping server never waits for them.
#[derive(Clone, Debug)]
pub(crate) struct ShutdownSignal {
    sender: Arc<watch::Sender<bool>>,
}

impl ShutdownSignal {
    pub(crate) fn new() -> Self {
        Self { sender: Arc::new(watch::Sender::new(false)) }
    }

    pub(crate) fn trigger(&self) {
        self.sender.send_replace(true);
    }

    /// Resolves once [`ShutdownSignal::trigger`] has been called.
    pub(crate) async fn triggered(&self) {
        let mut receiver = self.sender.subscribe();
        // An error means the sender is gone, which also means shutdown.
        let _ = receiver.wait_for(|stopping| *stopping).await;
    }
}

/// A bound socket not yet serving.
#[derive(Debug)]
pub(crate) struct BoundListener {
    listener: tokio::net::TcpListener,
    local_addr: SocketAddr,
}

impl BoundListener {
    pub(crate) fn base_url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// Serves `router` until `shutdown` is triggered.
    pub(crate) fn serve(self, router: Router, shutdown: ShutdownSignal) -> RunningServer {
        let signal = shutdown.clone();
        let listener = self.listener;
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move { signal.triggered().await })
                .await;
            if let Err(error) = served {
                tracing::warn!(%error, "emulator server stopped with an error");
            }
        });
        RunningServer { local_addr: self.local_addr, shutdown, task: Some(task) }
    }
}

#[derive(Debug)]
pub(crate) struct RunningServer {
    local_addr: SocketAddr,
    shutdown: ShutdownSignal,
    task: Option<JoinHandle<()>>,
}

impl RunningServer {
    /// Binds the listen address (so the URL is known before the router is built).
    pub(crate) async fn bind(listen: SocketAddr) -> Result<BoundListener, EmulatorError> {
        let bind_error = |source| EmulatorError::Bind { addr: listen, source };
        let listener = tokio::net::TcpListener::bind(listen).await.map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        Ok(BoundListener { listener, local_addr })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub(crate) fn base_url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// Stops accepting connections, lets in-flight requests finish (hung ones are released) and
    /// waits a bounded time for the server task.
    pub(crate) async fn shutdown(mut self) {
        self.shutdown.trigger();
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(SHUTDOWN_GRACE, task).await.is_err() {
                abort.abort();
            }
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}
