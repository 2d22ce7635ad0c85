//! The Local API client: HTTP(S) with rustls, the User-Agent
//! `fail2xdp/<version>`, a bouncer key for decisions, a machine login
//! (a JWT, renewed before it expires or when refused) for alerts, and a
//! size cap on every answer, checked before and while it is read: an
//! answer over the cap is refused without being read whole.
use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;

use super::{
    Credentials, Secret,
    api::{Alert, DecisionStream, ErrorAnswer, Login, LoginAnswer},
};
use crate::config::{CrowdSecConfig, CrowdSecFilters, CrowdSecTls};

/// Largest decision stream read: about 400,000 decisions. A blocklist
/// of 100,000 is some 15 MB.
pub const MAX_STREAM_BODY: usize = 64 << 20;
/// Largest answer to anything else (a login, the ids of pushed alerts).
pub const MAX_SMALL_BODY: usize = 1 << 20;
/// A whole request, answer included.
const TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A token is renewed this long before LAPI says it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(120);

pub fn user_agent() -> String {
    format!("fail2xdp/{}", env!("CARGO_PKG_VERSION"))
}

#[derive(Debug, thiserror::Error)]
pub enum LapiError {
    #[error("building the HTTP client")]
    Build(#[source] reqwest::Error),
    #[error("reading {}", .path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a PEM certificate (and key)", .path.display())]
    Pem {
        path: PathBuf,
        #[source]
        source: reqwest::Error,
    },
    #[error("{0} is not a URL this client can join paths to")]
    Url(String),
    #[error("{url}: no answer")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url}: HTTP {status}{}", if .message.is_empty() { String::new() } else { format!(": {message}") })]
    Status {
        url: String,
        status: u16,
        message: String,
    },
    #[error("{url}: the answer is larger than {limit} bytes; refused")]
    TooLarge { url: String, limit: usize },
    #[error("{url}: the answer is not what the Local API sends")]
    Garbage {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("no bouncer key (api_key or api_key_file) nor client certificate is configured")]
    NoKey,
    #[error("no machine login (credentials_file) is configured")]
    NoLogin,
}

impl LapiError {
    /// The LAPI refused the key or login: retrying will not help until
    /// the configuration changes.
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            LapiError::Status {
                status: 401 | 403,
                ..
            }
        )
    }
}

struct Token {
    bearer: Secret,
    renew_at: SystemTime,
}

pub struct Lapi {
    /// The bouncer's requests: with the client certificate, if any.
    http: reqwest::Client,
    /// The machine's: a password login, which LAPI refuses from a client
    /// presenting a certificate of another OU, so without one.
    http_machine: reqwest::Client,
    base: Url,
    api_key: Option<Secret>,
    /// A client certificate authenticates the bouncer when there is no key.
    pulls: bool,
    login: Option<Credentials>,
    filters: CrowdSecFilters,
    token: Mutex<Option<Token>>,
}

fn read(path: &Path) -> Result<Vec<u8>, LapiError> {
    std::fs::read(path).map_err(|source| LapiError::File {
        path: path.to_owned(),
        source,
    })
}

fn tls(
    mut b: reqwest::ClientBuilder,
    tls: &CrowdSecTls,
    identity: bool,
) -> Result<reqwest::ClientBuilder, LapiError> {
    if let Some(ca) = &tls.ca_file {
        let pem = read(ca)?;
        let certs =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| LapiError::Pem {
                path: ca.clone(),
                source,
            })?;
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    if let (true, Some(cert), Some(key)) = (identity, &tls.cert_file, &tls.key_file) {
        let mut pem = read(cert)?;
        pem.push(b'\n');
        pem.extend_from_slice(&read(key)?);
        let id = reqwest::Identity::from_pem(&pem).map_err(|source| LapiError::Pem {
            path: cert.clone(),
            source,
        })?;
        b = b.identity(id);
    }
    Ok(b)
}

impl Lapi {
    pub fn new(cfg: &CrowdSecConfig) -> Result<Self, LapiError> {
        let builder = || {
            reqwest::Client::builder()
                .use_rustls_tls()
                .user_agent(user_agent())
                .timeout(TIMEOUT)
                .connect_timeout(CONNECT_TIMEOUT)
                // The LAPI is a known host: no proxy from the environment.
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
        };
        let http = tls(builder(), &cfg.tls, true)?
            .build()
            .map_err(LapiError::Build)?;
        let http_machine = tls(builder(), &cfg.tls, false)?
            .build()
            .map_err(LapiError::Build)?;
        let base = Url::parse(&cfg.url).map_err(|_| LapiError::Url(cfg.url.clone()))?;
        if base.cannot_be_a_base() {
            return Err(LapiError::Url(cfg.url.clone()));
        }
        Ok(Lapi {
            http,
            http_machine,
            base,
            api_key: cfg.api_key.clone(),
            pulls: cfg.pulls(),
            login: cfg.credentials.clone(),
            filters: cfg.filters.clone(),
            token: Mutex::new(None),
        })
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    pub fn has_key(&self) -> bool {
        self.pulls
    }

    /// A request as the bouncer: with its key, if it has one.
    fn as_bouncer(&self, url: &Url) -> Result<reqwest::RequestBuilder, LapiError> {
        if !self.pulls {
            return Err(LapiError::NoKey);
        }
        let req = self.http.request(Method::GET, url.clone());
        Ok(match &self.api_key {
            Some(k) => req.header("X-Api-Key", k.expose()),
            None => req,
        })
    }

    pub fn has_login(&self) -> bool {
        self.login.is_some()
    }

    fn url(&self, path: &str) -> Result<Url, LapiError> {
        self.base
            .join(path)
            .map_err(|_| LapiError::Url(format!("{}{path}", self.base)))
    }

    /// Sends a request and reads its answer, at most `limit` bytes, as `T`.
    async fn call<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        url: &Url,
        limit: usize,
    ) -> Result<T, LapiError> {
        let shown = || {
            url.as_str()
                .split('?')
                .next()
                .unwrap_or_default()
                .to_owned()
        };
        let mut resp = req.send().await.map_err(|source| LapiError::Unreachable {
            url: shown(),
            source,
        })?;
        let status = resp.status();
        let limit = if status.is_success() {
            limit
        } else {
            MAX_SMALL_BODY
        };
        if resp.content_length().is_some_and(|n| n > limit as u64) {
            return Err(LapiError::TooLarge {
                url: shown(),
                limit,
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|source| LapiError::Unreachable {
                url: shown(),
                source,
            })?
        {
            if body.len() + chunk.len() > limit {
                return Err(LapiError::TooLarge {
                    url: shown(),
                    limit,
                });
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorAnswer>(&body)
                .map(|e| e.message)
                .unwrap_or_default();
            return Err(LapiError::Status {
                url: shown(),
                status: status.as_u16(),
                message: crate::state::printable(&message.chars().take(300).collect::<String>())
                    .into_owned(),
            });
        }
        serde_json::from_slice(&body).map_err(|source| LapiError::Garbage {
            url: shown(),
            source,
        })
    }

    /// `GET /v1/decisions/stream`: every active decision with `startup`,
    /// else what changed since this key's last pull. `dedup=false`: every
    /// decision of an address, so deleting one of them is seen.
    pub async fn stream(&self, startup: bool) -> Result<DecisionStream, LapiError> {
        let mut url = self.url("v1/decisions/stream")?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("startup", if startup { "true" } else { "false" });
            q.append_pair("dedup", "false");
            let f = &self.filters;
            q.append_pair("scopes", &f.scopes.join(","));
            for (k, v) in [
                ("origins", &f.origins),
                ("scenarios_containing", &f.scenarios_containing),
                ("scenarios_not_containing", &f.scenarios_not_containing),
            ] {
                if !v.is_empty() {
                    q.append_pair(k, &v.join(","));
                }
            }
        }
        let req = self.as_bouncer(&url)?;
        self.call(req, &url, MAX_STREAM_BODY).await
    }

    /// Checks the bouncer key with a query that does not move this key's
    /// stream (`GET /v1/decisions` for one documentation address; LAPI
    /// only notes the pull if the key's last one is a minute old).
    pub async fn check_key(&self) -> Result<usize, LapiError> {
        let mut url = self.url("v1/decisions")?;
        url.query_pairs_mut().append_pair("ip", "192.0.2.255");
        let req = self.as_bouncer(&url)?;
        let v: Option<Vec<serde_json::Value>> = self.call(req, &url, MAX_SMALL_BODY).await?;
        Ok(v.map_or(0, |v| v.len()))
    }

    /// `POST /v1/watchers/login`: a fresh token.
    pub async fn login(&self) -> Result<(), LapiError> {
        let creds = self.login.as_ref().ok_or(LapiError::NoLogin)?;
        let url = self.url("v1/watchers/login")?;
        let body = serde_json::to_vec(&Login {
            machine_id: &creds.login,
            password: creds.password.expose(),
            scenarios: Vec::new(),
        })
        .map_err(|source| LapiError::Garbage {
            url: url.to_string(),
            source,
        })?;
        let req = self
            .http_machine
            .request(Method::POST, url.clone())
            .header("Content-Type", "application/json")
            .body(body);
        let ans: LoginAnswer = self.call(req, &url, MAX_SMALL_BODY).await?;
        let now = SystemTime::now();
        let expires = ans
            .expire
            .as_deref()
            .and_then(|e| e.parse::<jiff::Timestamp>().ok())
            .map(SystemTime::from)
            .unwrap_or(now + Duration::from_secs(3600));
        *self.token.lock().await = Some(Token {
            bearer: Secret::new(ans.token),
            renew_at: expires
                .checked_sub(TOKEN_MARGIN)
                .filter(|t| *t > now)
                .unwrap_or(now + Duration::from_secs(60)),
        });
        Ok(())
    }

    async fn bearer(&self) -> Result<Secret, LapiError> {
        {
            let t = self.token.lock().await;
            if let Some(t) = t.as_ref()
                && SystemTime::now() < t.renew_at
            {
                return Ok(t.bearer.clone());
            }
        }
        self.login().await?;
        let t = self.token.lock().await;
        t.as_ref()
            .map(|t| t.bearer.clone())
            .ok_or(LapiError::NoLogin)
    }

    /// `POST /v1/alerts`: the ids LAPI gave them. A refused token is
    /// renewed once.
    pub async fn push(&self, alerts: &[Alert]) -> Result<usize, LapiError> {
        let url = self.url("v1/alerts")?;
        let body = serde_json::to_vec(alerts).map_err(|source| LapiError::Garbage {
            url: url.to_string(),
            source,
        })?;
        for attempt in 0..2 {
            let bearer = self.bearer().await?;
            let req = self
                .http_machine
                .request(Method::POST, url.clone())
                .header("Content-Type", "application/json")
                .bearer_auth(bearer.expose())
                .body(body.clone());
            match self.call::<Vec<String>>(req, &url, MAX_SMALL_BODY).await {
                Err(LapiError::Status { status, .. })
                    if status == StatusCode::UNAUTHORIZED.as_u16() && attempt == 0 =>
                {
                    *self.token.lock().await = None;
                }
                r => return r.map(|ids| ids.len()),
            }
        }
        Err(LapiError::NoLogin)
    }
}
