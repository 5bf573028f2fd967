//! A loopback fake of the GitHub REST endpoint the daemon uses, `POST /repos/{owner}/{repo}/pulls`, as
//! strict as GitHub: a bearer token (401 `Bad credentials` otherwise), a `User-Agent` (403 otherwise), the
//! JSON body `{title, head, base, body}`, a repository it knows (404 otherwise), a head branch on the
//! remote and a single open pull request per head (422 `Validation Failed` with GitHub's `errors` shape
//! otherwise); 201 with the pull request's `number` and `html_url`. Every request is recorded.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{Value, json};

/// The token the fake accepts.
pub const GITHUB_TOKEN: &str = "ghp_fake_token_for_tests";
const DOCS: &str = "https://docs.github.com/rest/pulls/pulls#create-a-pull-request";

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub accept: Option<String>,
    pub api_version: Option<String>,
    pub user_agent: Option<String>,
    pub body: Value,
}

#[derive(Default)]
struct State {
    /// `owner/repo` of the repositories it serves.
    repos: BTreeSet<String>,
    /// Branches on the remote (pushed), by `owner/repo`.
    branches: BTreeSet<(String, String)>,
    /// Open pull requests: repository, head, base, title, body.
    pulls: Vec<(String, String, String, String, String)>,
    seen: Vec<Seen>,
}

pub struct FakeGitHub {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGitHub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeGitHub {
    /// Serves the repository `owner/repo` (no branch pushed yet).
    pub async fn start(repo: &str) -> FakeGitHub {
        let state = Arc::new(Mutex::new(State::default()));
        state.lock().unwrap().repos.insert(repo.to_string());
        let (addr, task) = crate::fake_http::serve(state.clone(), handle).await;
        FakeGitHub { addr, state, task }
    }

    /// The API's base address (`github.api_url`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `branch` is on the remote of `repo` from now on (as a push would leave it).
    pub fn push_branch(&self, repo: &str, branch: &str) {
        self.state
            .lock()
            .unwrap()
            .branches
            .insert((repo.to_string(), branch.to_string()));
    }

    /// Every request, oldest first.
    pub fn requests(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// The open pull requests: repository, head, base, title, body.
    pub fn pulls(&self) -> Vec<(String, String, String, String, String)> {
        self.state.lock().unwrap().pulls.clone()
    }
}

fn header(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn answer(status: u16, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=utf-8")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let seen = Seen {
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        authorization: header(&req, "authorization"),
        accept: header(&req, "accept"),
        api_version: header(&req, "x-github-api-version"),
        user_agent: header(&req, "user-agent"),
        body: Value::Null,
    };
    let bytes = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let mut st = state.lock().unwrap();
    st.seen.push(Seen {
        body: body.clone(),
        ..seen.clone()
    });
    Ok(route(&mut st, &seen, &body))
}

fn route(st: &mut State, req: &Seen, body: &Value) -> Response<Full<Bytes>> {
    if req.user_agent.as_deref().is_none_or(str::is_empty) {
        return answer(
            403,
            json!({"message": "Request forbidden by administrative rules. Please make sure your request has a User-Agent header (https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required). Check https://developer.github.com for other possible causes."}),
        );
    }
    if req.authorization.as_deref() != Some(&format!("Bearer {GITHUB_TOKEN}")) {
        return answer(
            401,
            json!({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest", "status": "401"}),
        );
    }
    let parts: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    let not_found = || {
        answer(
            404,
            json!({"message": "Not Found", "documentation_url": DOCS, "status": "404"}),
        )
    };
    let ["repos", owner, name, "pulls"] = parts[..] else {
        return not_found();
    };
    let repo = format!("{owner}/{name}");
    if req.method != "POST" || !st.repos.contains(&repo) {
        return not_found();
    }
    let field = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
    let (Some(title), Some(head), Some(base)) = (field("title"), field("head"), field("base"))
    else {
        return answer(
            422,
            json!({"message": "Invalid request.\n\n\"title\", \"head\" and \"base\" are required.", "documentation_url": DOCS, "status": "422"}),
        );
    };
    let failed = |errors: Value| {
        answer(
            422,
            json!({"message": "Validation Failed", "errors": errors, "documentation_url": DOCS, "status": "422"}),
        )
    };
    if !st.branches.contains(&(repo.clone(), head.clone())) {
        return failed(json!([{"resource": "PullRequest", "field": "head", "code": "invalid"}]));
    }
    if st.pulls.iter().any(|p| p.0 == repo && p.1 == head) {
        return failed(json!([{"resource": "PullRequest", "code": "custom",
            "message": format!("A pull request already exists for {owner}:{head}.")}]));
    }
    st.pulls.push((
        repo.clone(),
        head.clone(),
        base.clone(),
        title.clone(),
        field("body").unwrap_or_default(),
    ));
    let number = st.pulls.len() as u64 + 41;
    answer(
        201,
        json!({
            "url": format!("https://api.github.com/repos/{repo}/pulls/{number}"),
            "html_url": format!("https://github.com/{repo}/pull/{number}"),
            "number": number,
            "state": "open",
            "title": title,
            "head": {"ref": head},
            "base": {"ref": base},
        }),
    )
}
