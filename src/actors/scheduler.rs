//! The `scheduler` actor: queues scheduled instructions (`/every`, `schedule_instruction`) when their time
//! has come. The schedules and their bookkeeping are the schedules service's (`core/schedules.rs`); this
//! actor only gives it a tick.
//!
//! As the backup actor does, it compares the clock with the next due time every second instead of
//! sleeping until it, so a suspended machine or a changed clock cannot push a run far past its time.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::core::Core;
use crate::supervisor::ChildMessage;

pub struct SchedulerActor {
    pub core: Arc<Core>,
}

pub enum SchedulerMsg {
    /// Runs the schedules whose time has come.
    Tick,
    Panic,
}

impl ChildMessage for SchedulerMsg {
    fn injected_panic() -> Self {
        SchedulerMsg::Panic
    }
}

impl Actor for SchedulerActor {
    type Msg = SchedulerMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<SchedulerMsg>,
        _: (),
    ) -> Result<(), ActorProcessingErr> {
        // Read the schedules afresh: a run missed while the daemon (or this actor) was down is due now.
        self.core.schedules().changed();
        self.core.schedules().tick().await;
        myself.send_interval(Duration::from_secs(1), || SchedulerMsg::Tick);
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<SchedulerMsg>,
        msg: SchedulerMsg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SchedulerMsg::Tick => self.core.schedules().tick().await,
            SchedulerMsg::Panic => panic!("injected panic in scheduler actor"),
        }
        Ok(())
    }
}
