//! sea-orm entities of the tables the daemon reads and writes through models.

pub mod project {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "projects")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub name: String,
        pub repo_path: String,
        pub default_branch: String,
        pub remote_url: Option<String>,
        pub created_at: DateTimeUtc,
        pub trusted: bool,
        pub node: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod session {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "sessions")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub seq: i64,
        #[sea_orm(unique)]
        pub id: String,
        pub project_id: String,
        pub branch: String,
        pub base_branch: String,
        pub branch_created: bool,
        pub worktree_path: String,
        pub worktree_missing: bool,
        pub state: String,
        pub conversation_id: Option<String>,
        pub agent: String,
        pub conversations: String,
        pub created_at: DateTimeUtc,
        pub last_activity_at: DateTimeUtc,
        pub closed_at: Option<DateTimeUtc>,
        pub node: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod audit {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub event: String,
        pub actor: String,
        pub project_id: Option<String>,
        pub session_id: Option<String>,
        pub job_id: Option<String>,
        pub details: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod event {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "events")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub event_type: String,
        pub project_id: Option<String>,
        pub session_id: Option<String>,
        pub job_id: Option<String>,
        pub payload: String,
        pub created_at: DateTimeUtc,
        pub delivered_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod job {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "jobs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub seq: i64,
        pub session_id: String,
        pub instruction: String,
        pub agent: String,
        pub status: String,
        pub error_type: Option<String>,
        pub error: Option<String>,
        pub exit_code: Option<i32>,
        pub signal: Option<i32>,
        pub pid: Option<i32>,
        pub pgid: Option<i32>,
        pub boot_id: Option<String>,
        pub leader_start: Option<i64>,
        pub log_path: Option<String>,
        pub base_commit: Option<String>,
        pub is_error: Option<bool>,
        pub result_subtype: Option<String>,
        pub result_text: Option<String>,
        pub terminal_reason: Option<String>,
        pub num_turns: Option<i64>,
        #[sea_orm(column_type = "Double", nullable)]
        pub total_cost_usd: Option<f64>,
        pub input_tokens: Option<i64>,
        pub output_tokens: Option<i64>,
        pub api_error_status: Option<i64>,
        pub permission_denials: Option<i64>,
        pub files_changed: Option<String>,
        pub diff_stat: Option<String>,
        pub queued_at: DateTimeUtc,
        pub started_at: Option<DateTimeUtc>,
        pub finished_at: Option<DateTimeUtc>,
        pub heartbeat_at: Option<DateTimeUtc>,
        pub not_before: Option<DateTimeUtc>,
        pub limit_waits: i64,
        pub interruptions: i64,
        pub kind: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod approval {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "approvals")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub job_id: String,
        pub session_id: String,
        pub tool_name: String,
        pub tool_input: String,
        pub tool_use_id: Option<String>,
        pub scope: String,
        pub state: String,
        pub decision: Option<String>,
        pub decided_by: Option<String>,
        pub requested_at: DateTimeUtc,
        pub decided_at: Option<DateTimeUtc>,
        pub expires_at: DateTimeUtc,
        pub telegram_chat_id: Option<i64>,
        pub telegram_message_id: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod schedule {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "schedules")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub seq: i64,
        pub session_id: String,
        pub cron: String,
        pub instruction: String,
        pub agent: Option<String>,
        pub created_by: String,
        pub created_at: DateTimeUtc,
        pub last_run_at: Option<DateTimeUtc>,
        pub last_job_id: Option<String>,
        pub next_run_at: DateTimeUtc,
        pub runs: i64,
        pub removed_at: Option<DateTimeUtc>,
        pub removed_by: Option<String>,
        pub removed_reason: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
