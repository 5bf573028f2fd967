//! The `breakers` actor: applies time-driven breaker transitions every second so the gauge and logs are current.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::core::Core;
use crate::supervisor::ChildMessage;

pub struct BreakersActor {
    pub core: Arc<Core>,
}

pub enum BreakersMsg {
    Tick,
    Panic,
}

impl ChildMessage for BreakersMsg {
    fn injected_panic() -> Self {
        BreakersMsg::Panic
    }
}

impl Actor for BreakersActor {
    type Msg = BreakersMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<BreakersMsg>,
        _: (),
    ) -> Result<(), ActorProcessingErr> {
        myself.send_interval(Duration::from_secs(1), || BreakersMsg::Tick);
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<BreakersMsg>,
        msg: BreakersMsg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            BreakersMsg::Tick => self.core.breakers.refresh(),
            BreakersMsg::Panic => panic!("injected panic in breakers actor"),
        }
        Ok(())
    }
}
