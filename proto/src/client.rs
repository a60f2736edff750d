//! Connecting to a coordinator: the channel (plain or TLS), the bearer token on every call, and
//! reading the token from a file or the environment. Used by workers, `coordinator status` and
//! the tests alike.

use std::path::Path;

use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

use crate::CoordinatorClient;

/// Environment variable holding the bearer token when no token file is given.
pub const TOKEN_ENV: &str = "DRLLM_TOKEN";

/// Adds `authorization: Bearer <token>` to every request (nothing without a token).
#[derive(Clone)]
pub struct BearerToken(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Interceptor for BearerToken {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert(crate::AUTH_HEADER, v.clone());
        }
        Ok(req)
    }
}

/// A coordinator client whose every call carries the bearer token ([`client`] makes one).
pub type Client = CoordinatorClient<InterceptedService<Channel, BearerToken>>;

/// The token from `file` (trimmed) or else from `$DRLLM_TOKEN`; `None` when neither is set.
pub fn read_token(file: Option<&Path>) -> Result<Option<String>, String> {
    if let Some(f) = file {
        let t = std::fs::read_to_string(f)
            .map_err(|e| format!("reading the token file {}: {e}", f.display()))?;
        let t = t.trim().to_string();
        if t.is_empty() {
            return Err(format!("the token file {} is empty", f.display()));
        }
        return Ok(Some(t));
    }
    Ok(std::env::var(TOKEN_ENV)
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty()))
}

/// How to reach a coordinator.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Bearer token sent with every call; `None` sends none.
    pub token: Option<String>,
    /// PEM of the CA that signed the coordinator's certificate (https:// URLs).
    pub tls_ca_pem: Option<Vec<u8>>,
    /// Name the certificate must carry (default: the URL's host).
    pub tls_domain: Option<String>,
}

impl ConnectOptions {
    /// Options from a command line: the token from `token_file` (or `$DRLLM_TOKEN`), the CA
    /// certificate from `tls_ca`.
    pub fn from_files(
        token_file: Option<&Path>,
        tls_ca: Option<&Path>,
        tls_domain: Option<String>,
    ) -> Result<Self, String> {
        let tls_ca_pem = tls_ca
            .map(|p| std::fs::read(p).map_err(|e| format!("reading {}: {e}", p.display())))
            .transpose()?;
        Ok(Self {
            token: read_token(token_file)?,
            tls_ca_pem,
            tls_domain,
        })
    }
}

/// An endpoint for `url` (`http://host:port` or `https://host:port`), not yet connected.
pub fn endpoint(url: &str, opts: &ConnectOptions) -> Result<Endpoint, String> {
    let mut ep = Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("bad coordinator URL `{url}`: {e}"))?
        .connect_timeout(std::time::Duration::from_secs(5))
        // A coordinator that went silent (a dead host, a partition) is noticed within half a
        // minute instead of a call hanging forever: the call fails and is retried.
        .http2_keep_alive_interval(std::time::Duration::from_secs(10))
        .keep_alive_timeout(std::time::Duration::from_secs(20))
        .keep_alive_while_idle(true)
        .tcp_nodelay(true);
    if url.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &opts.tls_ca_pem {
            tls = tls.ca_certificate(Certificate::from_pem(ca));
        }
        if let Some(d) = &opts.tls_domain {
            tls = tls.domain_name(d.clone());
        }
        ep = ep
            .tls_config(tls)
            .map_err(|e| format!("TLS setup for {url}: {e}"))?;
    }
    Ok(ep)
}

/// The largest reply a client takes before it learns its job's limit.
const CLIENT_MAX_REPLY: usize = 64 << 20;

/// A client whose every call carries the token. Connects lazily: errors surface on the first call.
pub fn client(url: &str, opts: &ConnectOptions) -> Result<Client, String> {
    let channel = endpoint(url, opts)?.connect_lazy();
    let token = match &opts.token {
        Some(t) => Some(
            format!("Bearer {t}")
                .parse()
                .map_err(|_| "the token must be printable ASCII".to_string())?,
        ),
        None => None,
    };
    // Replies up to 64 MiB (a long status); a worker applies its job's limit once registered.
    Ok(
        CoordinatorClient::with_interceptor(channel, BearerToken(token))
            .max_decoding_message_size(CLIENT_MAX_REPLY),
    )
}

#[cfg(test)]
mod tests {
    use super::{read_token, TOKEN_ENV};

    /// One test, so that no other test in this crate sees the variable change under it.
    #[test]
    fn tokens_are_trimmed_from_the_file_and_the_environment() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let file = dir.join("token");
        std::fs::write(&file, "s3cret\n").unwrap();
        assert_eq!(read_token(Some(&file)).unwrap().as_deref(), Some("s3cret"));
        std::fs::write(&file, " \n").unwrap();
        let err = read_token(Some(&file)).unwrap_err();
        assert!(err.contains("is empty") && err.contains("token"), "{err}");
        let err = read_token(Some(&dir.join("missing"))).unwrap_err();
        assert!(err.contains("missing"), "{err}");

        std::env::set_var(TOKEN_ENV, "s3cret\n");
        assert_eq!(read_token(None).unwrap().as_deref(), Some("s3cret"));
        std::env::set_var(TOKEN_ENV, "  ");
        assert_eq!(read_token(None).unwrap(), None);
        std::env::remove_var(TOKEN_ENV);
        assert_eq!(read_token(None).unwrap(), None);
    }
}
