//! GitHub's REST API: `POST {api_url}/repos/{owner}/{repo}/pulls`. Answers are read up to a bound, the
//! call has a timeout, and the token goes in the `Authorization` header only.
//!
//! With the default `github.api_url` (`https://api.github.com`) an origin must be on `github.com`; with any
//! other address (GitHub Enterprise Server, `https://ghe.example.com/api/v3`) an origin on any host is
//! taken as that server's, since its web host and API host may differ.

use std::time::Duration;

use serde_json::Value;

use super::{
    Forge, ForgeError, ForgeFuture, PullRequest, PullRequestAsk, RemoteRepo, parse_remote,
};

/// The public API's address.
pub const PUBLIC_API: &str = "https://api.github.com";
/// The API version the requests speak.
const API_VERSION: &str = "2022-11-28";
/// The most of an answer that is read; GitHub's answers to these calls are a few KiB.
const MAX_ANSWER: usize = 256 * 1024;
/// How long one call may take, answer included.
const TIMEOUT: Duration = Duration::from_secs(30);

/// GitHub (or a GitHub Enterprise Server) through its REST API.
pub struct GitHub {
    api_url: String,
    token: String,
    /// The reqwest the Telegram client carries (same version and features: no crate of its own).
    client: Result<reqwest::Client, String>,
}

impl GitHub {
    /// A client of the API at `api_url` (no trailing slash) with `token`.
    pub fn new(api_url: &str, token: &str) -> GitHub {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            // An answer that sends us elsewhere is not followed (the token would go with it).
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("televibe/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"));
        GitHub {
            api_url: api_url.trim_end_matches('/').to_string(),
            token: token.to_string(),
            client,
        }
    }

    fn is_public(&self) -> bool {
        self.api_url.eq_ignore_ascii_case(PUBLIC_API)
    }

    async fn open(&self, ask: &PullRequestAsk<'_>) -> Result<PullRequest, ForgeError> {
        let client = self
            .client
            .as_ref()
            .map_err(|e| ForgeError::Unavailable(e.clone()))?;
        let url = format!(
            "{}/repos/{}/{}/pulls",
            self.api_url, ask.repo.owner, ask.repo.name
        );
        let body = serde_json::json!({
            "title": ask.title,
            "head": ask.head,
            "base": ask.base,
            "body": ask.body,
        });
        let resp = client
            .post(&url)
            .header("Accept", "application/vnd.github+json")
            .header("Authorization", format!("Bearer {}", self.token))
            .header("X-GitHub-Api-Version", API_VERSION)
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| ForgeError::Unavailable(unreachable(&e)))?;
        let status = resp.status().as_u16();
        let answer = read_bounded(resp).await?;
        let json: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
        answer_of(status, &json, ask)
    }
}

impl Forge for GitHub {
    fn name(&self) -> &'static str {
        "GitHub"
    }

    fn repo_of(&self, origin_url: &str) -> Result<RemoteRepo, ForgeError> {
        let not_github = || {
            ForgeError::NotItsRepository(format!(
                "origin is not a GitHub repository: {:?} (expected git@github.com:owner/repo.git, \
                 https://github.com/owner/repo or ssh://git@github.com/owner/repo.git)",
                // An origin may hold a password: never shown.
                crate::git::redact(origin_url)
            ))
        };
        let repo = parse_remote(origin_url).ok_or_else(not_github)?;
        if self.is_public() && repo.host != "github.com" {
            return Err(not_github());
        }
        Ok(repo)
    }

    fn open_pull_request<'a>(
        &'a self,
        ask: &'a PullRequestAsk<'a>,
    ) -> ForgeFuture<'a, PullRequest> {
        Box::pin(self.open(ask))
    }
}

/// Why a request did not get an answer, without the request itself (its headers hold the token).
fn unreachable(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        format!("no answer within {} s", TIMEOUT.as_secs())
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        "the request failed".to_string()
    };
    let host = e
        .url()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    format!("GitHub API at {host} unreachable: {what}")
}

/// The answer's body, at most [`MAX_ANSWER`] bytes (the rest is not read).
async fn read_bounded(mut resp: reqwest::Response) -> Result<Vec<u8>, ForgeError> {
    let mut out = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| ForgeError::Unavailable(unreachable(&e)))?
    {
        let room = MAX_ANSWER - out.len();
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= MAX_ANSWER {
            break;
        }
    }
    Ok(out)
}

/// GitHub's answer as a pull request or an error in its own words.
fn answer_of(
    status: u16,
    json: &Value,
    ask: &PullRequestAsk<'_>,
) -> Result<PullRequest, ForgeError> {
    let message = json
        .get("message")
        .and_then(Value::as_str)
        .map(|m| crate::text::cut(m, 300))
        .unwrap_or_default();
    let repo = ask.repo;
    match status {
        201 => {
            let number = json.get("number").and_then(Value::as_u64);
            let url = json.get("html_url").and_then(Value::as_str);
            match (number, url) {
                (Some(number), Some(url)) => Ok(PullRequest {
                    number,
                    url: url.to_string(),
                }),
                _ => Err(ForgeError::Unexpected(
                    "GitHub answered 201 without the pull request's number and address".into(),
                )),
            }
        }
        401 => Err(ForgeError::BadToken(format!(
            "GitHub refused the token (401 {message})"
        ))),
        403 => Err(ForgeError::NoAccess(format!(
            "the token may not open pull requests on {repo} (403 {message})"
        ))),
        404 => Err(ForgeError::RepositoryNotFound(format!(
            "repository {repo} not found on GitHub, or the token cannot see it (404)"
        ))),
        422 => Err(ForgeError::Refused(validation(json, &message))),
        s if s >= 500 => Err(ForgeError::Unavailable(format!(
            "GitHub answered {s} {message}"
        ))),
        s => Err(ForgeError::Unexpected(format!(
            "GitHub answered {s} {message}"
        ))),
    }
}

/// A 422's words: each error's own message (`A pull request already exists for acme:branch.`, `No
/// commits between main and branch`), or its field and code where it has no message (`head invalid`).
fn validation(json: &Value, message: &str) -> String {
    let details: Vec<String> = json
        .get("errors")
        .and_then(Value::as_array)
        .map(|errors| {
            errors
                .iter()
                .take(5)
                .filter_map(|e| match e.get("message").and_then(Value::as_str) {
                    Some(m) => Some(m.to_string()),
                    None => {
                        let field = e.get("field").and_then(Value::as_str)?;
                        let code = e.get("code").and_then(Value::as_str).unwrap_or("invalid");
                        Some(format!("{field} {code}"))
                    }
                })
                .map(|m| crate::text::cut(&m, 300))
                .collect()
        })
        .unwrap_or_default();
    match (message.is_empty(), details.is_empty()) {
        (_, false) => format!("GitHub refused the pull request: {}", details.join("; ")),
        (false, true) => format!("GitHub refused the pull request: {message}"),
        (true, true) => "GitHub refused the pull request (422)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ask(repo: &RemoteRepo) -> PullRequestAsk<'_> {
        PullRequestAsk {
            repo,
            head: "televibe/S1",
            base: "main",
            title: "t",
            body: "b",
        }
    }

    #[test]
    fn the_public_api_takes_github_com_only_and_an_enterprise_server_any_host() {
        let public = GitHub::new("https://api.github.com", "t");
        assert!(public.repo_of("git@github.com:acme/widget.git").is_ok());
        let e = public
            .repo_of("https://gitlab.com/acme/widget.git")
            .unwrap_err();
        assert!(
            e.to_string().contains("origin is not a GitHub repository"),
            "{e}"
        );
        let e = public.repo_of("/srv/git/widget.git").unwrap_err();
        assert!(matches!(e, ForgeError::NotItsRepository(_)), "{e}");
        let ghe = GitHub::new("https://ghe.example.com/api/v3/", "t");
        assert_eq!(
            ghe.repo_of("git@ghe.example.com:team/app.git")
                .unwrap()
                .to_string(),
            "team/app"
        );
        assert_eq!(ghe.api_url, "https://ghe.example.com/api/v3");
    }

    #[test]
    fn each_answer_is_told_in_githubs_words() {
        let repo = parse_remote("https://github.com/acme/widget").unwrap();
        let a = ask(&repo);
        let pr = answer_of(
            201,
            &json!({"number": 7, "html_url": "https://github.com/acme/widget/pull/7"}),
            &a,
        );
        assert_eq!(pr.unwrap().number, 7);
        let exists = json!({"message": "Validation Failed", "errors": [{"resource": "PullRequest", "code": "custom",
            "message": "A pull request already exists for acme:televibe/S1."}]});
        assert_eq!(
            answer_of(422, &exists, &a).unwrap_err().to_string(),
            "GitHub refused the pull request: A pull request already exists for acme:televibe/S1."
        );
        let head = json!({"message": "Validation Failed", "errors": [{"resource": "PullRequest", "field": "head", "code": "invalid"}]});
        assert!(
            answer_of(422, &head, &a)
                .unwrap_err()
                .to_string()
                .ends_with("head invalid")
        );
        let bad = answer_of(401, &json!({"message": "Bad credentials"}), &a).unwrap_err();
        assert!(
            matches!(bad, ForgeError::BadToken(_)) && bad.to_string().contains("Bad credentials")
        );
        assert!(matches!(
            answer_of(403, &Value::Null, &a),
            Err(ForgeError::NoAccess(_))
        ));
        let gone = answer_of(404, &json!({"message": "Not Found"}), &a).unwrap_err();
        assert!(gone.to_string().contains("acme/widget not found"), "{gone}");
        assert!(matches!(
            answer_of(502, &Value::Null, &a),
            Err(ForgeError::Unavailable(_))
        ));
        assert!(matches!(
            answer_of(201, &json!({}), &a),
            Err(ForgeError::Unexpected(_))
        ));
    }
}
