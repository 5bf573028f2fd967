//! The live tree a supervisor answers (`get_supervision_tree`, `televibe admin tree`): its children with
//! status, restarts and uptime, descending into child supervisors and into what other children own.

use ractor::ActorRef;
use serde::Serialize;

use super::{SupervisorMsg, SupervisorState};

/// Status of a node in the live tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    Running,
    Restarting,
    Stopped,
}

/// One node of `get_supervision_tree` / `televibe admin tree`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct TreeNode {
    pub name: String,
    pub status: String,
    pub restarts: u64,
    pub uptime_secs: u64,
    pub children: Vec<TreeNode>,
}

impl SupervisorState {
    pub(super) async fn tree(&self) -> TreeNode {
        let mut node = self.flat_tree();
        for (child, rec) in node.children.iter_mut().zip(&self.children) {
            if rec.spec.supervises
                && let Some(cell) = &rec.cell
            {
                let r: ActorRef<SupervisorMsg> = cell.clone().into();
                if let Ok(sub) = ractor::call_t!(r, SupervisorMsg::Tree, 1000) {
                    child.children = sub.children;
                }
            } else if let (Some(below), Some(cell)) = (&rec.spec.below, &rec.cell) {
                child.children = below(cell.clone()).await;
            }
        }
        node
    }

    fn flat_tree(&self) -> TreeNode {
        TreeNode {
            name: self.name.clone(),
            status: if self.shutting_down {
                "stopping".into()
            } else {
                "running".into()
            },
            restarts: 0,
            uptime_secs: self.started.elapsed().as_secs(),
            children: self
                .children
                .iter()
                .map(|c| TreeNode {
                    name: c.spec.name.clone(),
                    status: match c.status {
                        NodeStatus::Running => "running",
                        NodeStatus::Restarting => "restarting",
                        NodeStatus::Stopped => "stopped",
                    }
                    .into(),
                    restarts: c.restarts,
                    uptime_secs: match c.status {
                        NodeStatus::Running => c.started.elapsed().as_secs(),
                        _ => 0,
                    },
                    children: Vec::new(),
                })
                .collect(),
        }
    }
}
