//! Drills on the Telegram side: the network lost for longer than the breaker takes to open, and a 429
//! burst.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;
use crate::fake_telegram::{FakeTelegram, Fault};
use crate::harness::*;
use crate::record::{Measured, record};

#[tokio::test(flavor = "multi_thread")]
async fn telegram_network_loss_then_back() {
    let tg = FakeTelegram::start().await;
    // The spec's telegram_api breaker: 3 failures, 60 s open.
    let env = Env::new(&tg_config(&tg, &fake_agent("max_concurrent = 3\n")));
    let d = start(&env);
    phone_sessions(&env, &tg, 3).await;
    let mcp = Mcp::connect(&env).await;
    let t0 = Instant::now();
    tg.set_down(true);
    eventually(Duration::from_secs(60), "telegram_api open", || {
        d.metric("televibe_circuit_breaker_state{name=\"telegram_api\"}") == Some(0.0)
    });
    let detected = t0.elapsed();
    // Degraded mode telegram_unavailable: everything works over MCP, results wait for the phone.
    let mut ids = Vec::new();
    for s in 1..=3 {
        ids.push(run(&mcp, &format!("S{s}"), "finished while Telegram is down").await);
    }
    for id in &ids {
        assert_eq!(
            wait_final(&mcp, id, Duration::from_secs(60)).await["status"],
            "done"
        );
    }
    let listed = mcp.call("list_jobs", json!({})).await.unwrap();
    assert!(listed["jobs"].as_array().unwrap().len() >= 3, "{listed}");
    assert_eq!(
        deliveries(&tg, &ids).0,
        3,
        "nothing reaches the phone while down"
    );
    let t1 = Instant::now();
    tg.set_down(false);
    // The breaker's own timeout is 60 s; delivery must not wait for it (it took 52 s when it did).
    all_delivered(&tg, &ids, Duration::from_secs(15)).await;
    let recovered = t1.elapsed();
    say(&tg, "/help", "TeleVibeCode").await;
    settled(&env, &d).await;
    let (lost, duplicated) = deliveries(&tg, &ids);
    // The outage opened the breaker once: probing while down does not make it flap.
    let opened = tg
        .messages(USER)
        .iter()
        .filter(|m| m.visible.contains("Circuit breaker telegram_api opened"))
        .count();
    assert_eq!(opened, 1, "one notice for one outage");
    for key in ["telegram_network_loss", "degraded_telegram_unavailable"] {
        record(Measured {
            key,
            detected_after: detected,
            recovered_after: recovered,
            detection: "getUpdates connection refused ×3 → telegram_api breaker open",
            user_saw: "nothing while down (MCP kept working); then every result once",
            lost,
            duplicated,
            settings: "spec breaker (3 failures, 60 s); reachability getMe every ≤ 4 s while open",
        });
    }
    assert_eq!((lost, duplicated), (0, 0));
    drop(d);
}

#[tokio::test(flavor = "multi_thread")]
async fn telegram_rate_limited_then_self_healing() {
    let tg = FakeTelegram::start().await;
    let env = Env::new(&tg_config(&tg, &fake_agent("")));
    let d = start(&env);
    phone_sessions(&env, &tg, 1).await;
    let mcp = Mcp::connect(&env).await;
    tg.fail_next("sendMessage", 3, Fault::RetryAfter(2));
    tg.fail_next("editMessageText", 3, Fault::RetryAfter(2));
    let t0 = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(run(&mcp, "S1", "finished while rate limited").await);
    }
    until(Duration::from_secs(20), "a 429", || {
        tg.calls().iter().any(|c| c.error == Some(429))
    })
    .await;
    let detected = t0.elapsed();
    let t1 = Instant::now();
    all_delivered(&tg, &ids, Duration::from_secs(60)).await;
    let recovered = t1.elapsed();
    settled(&env, &d).await;
    let (lost, duplicated) = deliveries(&tg, &ids);
    tg.assert_never_flood_limited();
    record(Measured {
        key: "telegram_rate_limited",
        detected_after: detected,
        recovered_after: recovered,
        detection: "429 with retry_after = 2 on sendMessage and editMessageText",
        user_saw: "messages delayed by retry_after, then each result once",
        lost,
        duplicated,
        settings: "three 429s on each method",
    });
    assert_eq!((lost, duplicated), (0, 0));
    drop(d);
}
