//! The `breakers` actor: applies time-driven breaker transitions every second so the gauge and logs are
//! current, and turns each outage (a breaker opening from closed, however briefly) into one
//! `breaker.opened` outbox event (the spec's notify_admin).

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::core::Core;
use crate::core::events::{Event, Scope};
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
    /// Each breaker's outage count seen at the last tick.
    type State = Vec<u64>;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<BreakersMsg>,
        _: (),
    ) -> Result<Vec<u64>, ActorProcessingErr> {
        myself.send_interval(Duration::from_secs(1), || BreakersMsg::Tick);
        Ok(self
            .core
            .breakers()
            .statuses()
            .iter()
            .map(|s| s.outages)
            .collect())
    }

    async fn handle(
        &self,
        _: ActorRef<BreakersMsg>,
        msg: BreakersMsg,
        last: &mut Vec<u64>,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            BreakersMsg::Tick => {
                self.core.breakers().refresh();
                let now = self.core.breakers().statuses();
                for (i, s) in now.iter().enumerate() {
                    if s.outages > last.get(i).copied().unwrap_or(0) {
                        self.core
                            .events()
                            .emit(
                                Scope::daemon(),
                                Event::BreakerOpened {
                                    breaker: s.name.as_str().into(),
                                },
                            )
                            .await;
                    }
                }
                *last = now.iter().map(|s| s.outages).collect();
            }
            BreakersMsg::Panic => panic!("injected panic in breakers actor"),
        }
        Ok(())
    }
}
