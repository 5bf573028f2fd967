//! The `store` actor: the engine's periodic integrity check, and probe writes while the store is read-only.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::core::Core;
use crate::core::events::{Event, Scope};
use crate::supervisor::ChildMessage;

pub struct StoreActor {
    pub core: Arc<Core>,
}

pub enum StoreMsg {
    IntegrityCheck,
    ProbeReadOnly,
    Panic,
}

impl ChildMessage for StoreMsg {
    fn injected_panic() -> Self {
        StoreMsg::Panic
    }
}

/// When the first full integrity check runs after a start.
const FULL_CHECK_AFTER_BOOT: std::time::Duration = std::time::Duration::from_secs(60);

impl Actor for StoreActor {
    type Msg = StoreMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, myself: ActorRef<StoreMsg>, _: ()) -> Result<(), ActorProcessingErr> {
        let s = &self.core.config().store;
        // Boot ran the quick check; the full one (indexes against their tables too) follows soon after,
        // off the path to readiness.
        myself.send_after(FULL_CHECK_AFTER_BOOT, || StoreMsg::IntegrityCheck);
        myself.send_interval(s.integrity_check_interval, || StoreMsg::IntegrityCheck);
        myself.send_interval(s.read_only_probe, || StoreMsg::ProbeReadOnly);
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<StoreMsg>,
        msg: StoreMsg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            StoreMsg::IntegrityCheck => self.integrity_check().await,
            StoreMsg::ProbeReadOnly => self.probe().await,
            StoreMsg::Panic => panic!("injected panic in store actor"),
        }
        Ok(())
    }
}

impl StoreActor {
    async fn integrity_check(&self) {
        match self.core.store().integrity_check().await {
            Ok(()) => tracing::debug!(target: "televibe.store", "integrity check ok"),
            Err(e) if e.damage().is_some() => {
                // Told before the store turns read-only, while the outbox row can still be written.
                let detail = e.damage().unwrap_or_default().to_string();
                self.core
                    .events()
                    .emit(Scope::daemon(), Event::DatabaseCorrupted { detail })
                    .await;
                // Health gauge to 0, `televibe_database_read_only_reason{reason="integrity"}` to 1.
                self.core.store().enter_corrupt();
                tracing::error!(target: "televibe.store", critical = true, error = %e, "Database integrity check failed");
            }
            Err(e) => {
                tracing::warn!(target: "televibe.store", error = %e, "integrity check could not run")
            }
        }
    }

    async fn probe(&self) {
        if self.core.store().is_read_only()
            && let Err(e) = self.core.store().probe_write().await
        {
            tracing::warn!(target: "televibe.store", error = %e, "store still read-only");
        }
    }
}
