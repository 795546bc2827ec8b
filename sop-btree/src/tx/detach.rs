//! [`RunToEnd`]: a future that finishes even when dropped.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The boxed protocol a [`RunToEnd`] drives.
type Protocol<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Runs a future in the caller's task while the caller polls it (no hop
/// to another task and back: a lone commit's latency), and hands what is
/// left of it to a task of its own when dropped before it finished, so
/// that a protocol with steps on storage (a commit) always completes.
///
/// Outside a Tokio runtime a dropped, unfinished future is dropped with it
/// (there is nowhere to run it); the commit protocol is safe even then
/// (recovery finishes or undoes what a commit left), as after a crash.
pub(crate) struct RunToEnd<T: Send + 'static> {
    protocol: Option<Protocol<T>>,
    runtime: Option<tokio::runtime::Handle>,
}

impl<T: Send + 'static> RunToEnd<T> {
    /// Wraps `protocol`, noting the runtime to finish it on if dropped.
    pub(crate) fn new(protocol: impl Future<Output = T> + Send + 'static) -> Self {
        Self { protocol: Some(Box::pin(protocol)), runtime: tokio::runtime::Handle::try_current().ok() }
    }
}

impl<T: Send + 'static> Future for RunToEnd<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        // Out while polled: a protocol that panics is not handed to a task
        // when the unwinding drops this (it cannot be resumed).
        let Some(mut protocol) = self.protocol.take() else {
            panic!("RunToEnd polled after it finished");
        };
        let out = protocol.as_mut().poll(cx);
        if out.is_pending() {
            self.protocol = Some(protocol);
        }
        out
    }
}

impl<T: Send + 'static> Drop for RunToEnd<T> {
    fn drop(&mut self) {
        if let (Some(protocol), Some(runtime)) = (self.protocol.take(), self.runtime.as_ref()) {
            // The output has no one to go to; the protocol's effects do.
            drop(runtime.spawn(protocol));
        }
    }
}

impl<T: Send + 'static> std::fmt::Debug for RunToEnd<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunToEnd").field("finished", &self.protocol.is_none()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::RunToEnd;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A protocol of two steps with a wait between them: dropped after the
    /// first, the second still runs.
    #[tokio::test]
    async fn a_dropped_protocol_still_runs_to_its_end() {
        let steps = Arc::new(AtomicU32::new(0));
        let (go, gate) = tokio::sync::oneshot::channel::<()>();
        let (done, finished) = tokio::sync::oneshot::channel::<()>();
        let s = steps.clone();
        let mut run = RunToEnd::new(async move {
            s.fetch_add(1, Ordering::SeqCst);
            let _ = gate.await;
            s.fetch_add(1, Ordering::SeqCst);
            let _ = done.send(());
        });
        // Polled once (the first step runs), then dropped.
        tokio::select! {
            biased;
            () = &mut run => panic!("the protocol finished before its gate opened"),
            () = std::future::ready(()) => {}
        }
        assert_eq!(steps.load(Ordering::SeqCst), 1, "the first step ran in the caller's task");
        drop(run);
        go.send(()).unwrap();
        finished.await.expect("the dropped protocol was abandoned");
        assert_eq!(steps.load(Ordering::SeqCst), 2);
    }

    /// On a multi-threaded runtime a spawned task has an id of its own;
    /// the protocol runs in the caller's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_polled_protocol_runs_in_the_callers_task_and_returns_its_output() {
        let caller = tokio::spawn(async {
            let here = tokio::task::id();
            let ran_in = RunToEnd::new(async {
                tokio::task::yield_now().await;
                tokio::task::id()
            })
            .await;
            (here, ran_in)
        });
        let (here, ran_in) = caller.await.unwrap();
        assert_eq!(ran_in, here);
    }

    /// A protocol that panics is not run again by a task (it would panic
    /// once more: "resumed after panicking").
    #[tokio::test]
    async fn a_panicking_protocol_is_not_handed_to_a_task() {
        /// Counts its polls, and panics in each.
        struct Panics(Arc<AtomicU32>);
        impl std::future::Future for Panics {
            type Output = ();
            fn poll(self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<()> {
                self.0.fetch_add(1, Ordering::SeqCst);
                panic!("injected");
            }
        }
        let polls = Arc::new(AtomicU32::new(0));
        let run = RunToEnd::new(Panics(polls.clone()));
        let caller = tokio::spawn(run);
        assert!(caller.await.unwrap_err().is_panic());
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(polls.load(Ordering::SeqCst), 1);
    }
}
