//! Group commit: concurrent writes share one transaction and one fsync.
//!
//! A write applies itself to the *open batch* (one write transaction that collects writes) under
//! a mutex, then waits until the batch is durable. Whoever finds no commit in progress commits
//! the open batch: while its fsync runs (outside the mutex), the writes that arrive go into the
//! next batch, which one of them commits as soon as the fsync returns. Under load every fsync
//! carries all the writes that queued during the previous one; alone, a write commits at once.
//! (The same scheme as a database's group commit, e.g. PostgreSQL's `commit_delay`-less path or
//! etcd's batched backend transactions, <https://etcd.io/docs/v3.5/learning/api_guarantees/>.)
//!
//! What does not change: each write still sees every write applied before it (the batch is one
//! transaction, applied in order), so preconditions are checked exactly as before, and each
//! write still gets its own revision. A caller is answered only after the commit that holds
//! what it wrote — or what it read, if the batch had writes before it — is durable; a failed
//! commit fails every write in it; changes reach watchers after their commit, in revision order.
//!
//! The protocol is generic over the [`Backend`] (redb in the store, a fake in the tests).

use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};

use super::error::StoreError;

/// What the group commit needs from the storage under it.
pub(crate) trait Backend {
    type Txn;
    /// What a committed write hands to [`Backend::publish`].
    type Change;

    fn begin(&self) -> Result<Self::Txn, StoreError>;
    fn commit(&self, txn: Self::Txn) -> Result<(), StoreError>;
    /// Called once per committed batch with its changes in order, before the next batch can
    /// commit.
    fn publish(&self, changes: Vec<Self::Change>);
    /// Whether `error` left the storage handle unusable: every transaction begun on it is
    /// void, and [`Backend::recover`] is called once they are gone.
    fn handle_lost(&self, error: &StoreError) -> bool;
    /// Replaces a lost handle (called with no transaction open).
    fn recover(&self);
}

/// What one write did to the open transaction.
pub(crate) enum Applied<R, C> {
    /// Nothing written (a no-op update, a read-only decision).
    Read(R),
    /// Written; the changes are published once durable.
    Wrote(R, Vec<C>),
}

/// How a batch ended, shared by every write in it.
type Outcome = OnceLock<Result<(), Arc<StoreError>>>;

struct Batch<T, C> {
    txn: T,
    changes: Vec<C>,
    writes: usize,
    /// A write failed part way through the transaction: the batch is abandoned, not committed.
    failed: Option<Arc<StoreError>>,
    outcome: Arc<Outcome>,
}

struct State<T, C> {
    open: Option<Batch<T, C>>,
    /// A batch is being committed (outside the mutex).
    committing: bool,
}

pub(crate) struct GroupCommit<B: Backend> {
    state: Mutex<State<B::Txn, B::Change>>,
    finished: Condvar,
}

impl<B: Backend> Default for GroupCommit<B> {
    fn default() -> Self {
        GroupCommit {
            state: Mutex::new(State {
                open: None,
                committing: false,
            }),
            finished: Condvar::new(),
        }
    }
}

impl<B: Backend> GroupCommit<B> {
    fn lock(&self) -> MutexGuard<'_, State<B::Txn, B::Change>> {
        // Every transition below leaves the state whole before anything that can panic runs.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies one write to the open batch and returns its answer once the batch is durable.
    ///
    /// `apply` must leave the transaction unchanged when it returns an error, except for
    /// [`StoreError::Db`] and [`StoreError::NoSpace`], which fail the whole batch (the
    /// transaction may be half-changed).
    pub fn run<R>(
        &self,
        backend: &B,
        apply: impl FnOnce(&mut B::Txn) -> Result<Applied<R, B::Change>, StoreError>,
    ) -> Result<R, StoreError> {
        let mut state = self.lock();
        let batch = loop {
            if let Some(batch) = &mut state.open {
                break batch;
            }
            match backend.begin() {
                Ok(txn) => {
                    break state.open.insert(Batch {
                        txn,
                        changes: Vec::new(),
                        writes: 0,
                        failed: None,
                        outcome: Arc::default(),
                    })
                }
                // The commit in flight lost the handle (redb's begin waited for it): wait until
                // it is replaced, then begin on the new one.
                Err(e) if state.committing && backend.handle_lost(&e) => {
                    state = self
                        .finished
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                Err(e) => return Err(e),
            }
        };
        let answer = match apply(&mut batch.txn) {
            Ok(Applied::Read(answer)) => Ok(answer),
            Ok(Applied::Wrote(answer, change)) => {
                batch.writes += 1;
                batch.changes.extend(change);
                Ok(answer)
            }
            Err(e @ (StoreError::Db { .. } | StoreError::NoSpace { .. })) => {
                // The batch fails; `wait` answers with its failure.
                batch.writes += 1;
                let failed = batch.failed.get_or_insert(Arc::new(e));
                Err(StoreError::Commit(failed.clone()))
            }
            Err(e) => Err(e),
        };
        if batch.writes == 0 {
            // Nothing of anyone's to make durable: drop the empty transaction.
            state.open = None;
            return answer;
        }
        let outcome = batch.outcome.clone();
        blocking(|| self.wait(state, backend, &outcome))?;
        answer
    }

    /// Waits until `outcome` is decided, committing the open batch when no one else is.
    fn wait<'a>(
        &'a self,
        mut state: MutexGuard<'a, State<B::Txn, B::Change>>,
        backend: &B,
        outcome: &Outcome,
    ) -> Result<(), StoreError> {
        loop {
            if let Some(result) = outcome.get() {
                return result.clone().map_err(StoreError::Commit);
            }
            // Undecided and no commit running: ours is the open batch.
            if !state.committing {
                if let Some(batch) = state.open.take() {
                    state = self.commit(state, backend, batch);
                    continue;
                }
            }
            state = self
                .finished
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn commit<'a>(
        &'a self,
        mut state: MutexGuard<'a, State<B::Txn, B::Change>>,
        backend: &B,
        batch: Batch<B::Txn, B::Change>,
    ) -> MutexGuard<'a, State<B::Txn, B::Change>> {
        state.committing = true;
        drop(state);
        let Batch {
            txn,
            changes,
            failed,
            outcome,
            ..
        } = batch;
        let result = match failed {
            Some(e) => {
                // Aborted here, before a recovery that needs no transaction open.
                drop(txn);
                Err(e)
            }
            None => backend.commit(txn).map_err(Arc::new),
        };
        let mut state = self.lock();
        match &result {
            Ok(()) => backend.publish(changes),
            Err(e) if backend.handle_lost(e) => {
                if let Some(void) = state.open.take() {
                    let _ = void.outcome.set(Err(e.clone()));
                }
                backend.recover();
            }
            Err(_) => {}
        }
        let _ = outcome.set(result);
        state.committing = false;
        self.finished.notify_all();
        state
    }
}

/// Runs `f`, which waits for a commit, telling a multi-threaded tokio runtime first so that it
/// moves this worker's other tasks to another thread meanwhile: async handlers call the store
/// directly, and with every worker waiting for an fsync nothing else would run.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Barrier;

    /// A key-value "database": a transaction is a copy of the map, a commit replaces it.
    #[derive(Default)]
    struct Fake {
        committed: Mutex<BTreeMap<u32, u64>>,
        /// What the next transaction starts from: the last one handed to `commit` (redb's
        /// `begin_write` waits for that commit; a failed one voids the transactions after it).
        latest: Mutex<BTreeMap<u32, u64>>,
        commits: AtomicUsize,
        published: Mutex<Vec<u64>>,
        fail_next: AtomicBool,
        /// Held by a commit while it runs, so that the test can pile writes up behind it.
        gate: Mutex<()>,
        recovered: AtomicUsize,
    }

    impl Backend for Fake {
        type Txn = BTreeMap<u32, u64>;
        type Change = u64;

        fn begin(&self) -> Result<Self::Txn, StoreError> {
            Ok(self.latest.lock().expect("lock").clone())
        }

        fn commit(&self, txn: Self::Txn) -> Result<(), StoreError> {
            *self.latest.lock().expect("lock") = txn.clone();
            let _gate = self.gate.lock().expect("gate");
            self.commits.fetch_add(1, Ordering::SeqCst);
            if self.fail_next.swap(false, Ordering::SeqCst) {
                return Err(StoreError::NoSpace { op: "commit" });
            }
            *self.committed.lock().expect("lock") = txn;
            Ok(())
        }

        fn publish(&self, changes: Vec<u64>) {
            self.published.lock().expect("lock").extend(changes);
        }

        fn handle_lost(&self, e: &StoreError) -> bool {
            matches!(e, StoreError::NoSpace { .. })
        }

        fn recover(&self) {
            *self.latest.lock().expect("lock") = self.committed.lock().expect("lock").clone();
            self.recovered.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Increments counter `key` (revision = sum of all counters + 1), like a store write.
    fn bump(txn: &mut BTreeMap<u32, u64>, key: u32) -> Result<Applied<u64, u64>, StoreError> {
        let revision = txn.values().sum::<u64>() + 1;
        *txn.entry(key).or_default() += 1;
        Ok(Applied::Wrote(revision, vec![revision]))
    }

    #[test]
    fn a_lone_write_commits_at_once() {
        let (fake, gc) = (Fake::default(), GroupCommit::default());
        assert_eq!(gc.run(&fake, |t| bump(t, 1)).expect("write"), 1);
        assert_eq!(gc.run(&fake, |t| bump(t, 1)).expect("write"), 2);
        assert_eq!(fake.commits.load(Ordering::SeqCst), 2);
        assert_eq!(*fake.published.lock().expect("lock"), [1, 2]);
        // A read-only decision on an idle store commits nothing.
        let read = gc.run(&fake, |t| Ok(Applied::<_, u64>::Read(t[&1])));
        assert_eq!(read.expect("read"), 2);
        assert_eq!(fake.commits.load(Ordering::SeqCst), 2);
    }

    /// Writes arriving during a commit share the next one, and each still sees the ones
    /// before it.
    #[test]
    fn writes_queued_behind_a_commit_share_the_next() {
        let fake = Arc::new(Fake::default());
        let gc = Arc::new(GroupCommit::default());
        let gate = fake.gate.lock().expect("gate");
        let first = {
            let (fake, gc) = (fake.clone(), gc.clone());
            std::thread::spawn(move || gc.run(&*fake, |t| bump(t, 0)))
        };
        // Wait until the first write is committing (blocked on the gate).
        while !gc.lock().committing {
            std::thread::yield_now();
        }
        let n = 20;
        let barrier = Arc::new(Barrier::new(n + 1));
        let queued: Vec<_> = (0..n)
            .map(|i| {
                let (fake, gc, barrier) = (fake.clone(), gc.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    gc.run(&*fake, |t| bump(t, i as u32 % 3))
                })
            })
            .collect();
        barrier.wait();
        while gc.lock().open.as_ref().map_or(0, |b| b.writes) < n {
            std::thread::yield_now();
        }
        drop(gate);
        assert_eq!(first.join().expect("join").expect("first"), 1);
        let mut revisions: Vec<u64> = queued
            .into_iter()
            .map(|h| h.join().expect("join").expect("queued"))
            .collect();
        revisions.sort_unstable();
        assert_eq!(revisions, (2..=n as u64 + 1).collect::<Vec<_>>());
        assert_eq!(
            fake.commits.load(Ordering::SeqCst),
            2,
            "one commit for the queue"
        );
        let published = fake.published.lock().expect("lock").clone();
        assert_eq!(published, (1..=n as u64 + 1).collect::<Vec<_>>());
        assert_eq!(
            fake.committed.lock().expect("lock").values().sum::<u64>(),
            n as u64 + 1
        );
    }

    /// A failed commit fails every write in it, publishes nothing and leaves the store as it
    /// was; the next write succeeds.
    #[test]
    fn a_failed_commit_fails_every_write_in_it() {
        let fake = Arc::new(Fake::default());
        let gc = Arc::new(GroupCommit::default());
        gc.run(&*fake, |t| bump(t, 9)).expect("first");
        let gate = fake.gate.lock().expect("gate");
        fake.fail_next.store(true, Ordering::SeqCst);
        let writers: Vec<_> = (0..8)
            .map(|i| {
                let (fake, gc) = (fake.clone(), gc.clone());
                std::thread::spawn(move || gc.run(&*fake, |t| bump(t, i)))
            })
            .collect();
        let pending = || {
            let state = gc.lock();
            state.open.as_ref().map_or(0, |b| b.writes) + usize::from(state.committing)
        };
        while pending() < 8 {
            std::thread::yield_now();
        }
        drop(gate);
        let results: Vec<_> = writers
            .into_iter()
            .map(|h| h.join().expect("join"))
            .collect();
        let failed = results.iter().filter(|r| r.is_err()).count();
        assert!(failed >= 1, "{results:?}");
        for r in &results {
            if let Err(e) = r {
                assert!(
                    matches!(e, StoreError::Commit(inner) if matches!(**inner, StoreError::NoSpace { .. })),
                    "{e:?}"
                );
            }
        }
        let committed = fake.committed.lock().expect("lock").clone();
        let ok = results.iter().filter(|r| r.is_ok()).count() as u64;
        assert_eq!(
            committed.values().sum::<u64>(),
            1 + ok,
            "only acknowledged writes stored"
        );
        assert_eq!(fake.published.lock().expect("lock").len() as u64, 1 + ok);
        assert!(fake.recovered.load(Ordering::SeqCst) >= 1);
        gc.run(&*fake, |t| bump(t, 9)).expect("after the failure");
    }

    /// A write that fails part way through fails its batch; one that is refused (a conflict)
    /// fails alone.
    #[test]
    fn storage_errors_fail_the_batch_refusals_do_not() {
        let fake = Fake::default();
        let gc = GroupCommit::default();
        let refused = gc.run(&fake, |_| -> Result<Applied<(), u64>, _> {
            Err(StoreError::InvalidContinue)
        });
        assert!(matches!(refused, Err(StoreError::InvalidContinue)));
        let broken = gc.run(&fake, |t| -> Result<Applied<(), u64>, _> {
            t.insert(5, 5);
            Err(StoreError::Db {
                op: "write object",
                source: redb::Error::PreviousIo,
            })
        });
        assert!(
            matches!(&broken, Err(StoreError::Commit(e)) if matches!(**e, StoreError::Db { .. })),
            "{broken:?}"
        );
        assert!(fake.committed.lock().expect("lock").is_empty());
        assert_eq!(fake.commits.load(Ordering::SeqCst), 0);
        assert_eq!(gc.run(&fake, |t| bump(t, 1)).expect("next"), 1);
    }
}
