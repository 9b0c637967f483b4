//! What every outbound HTTP client shares (the DingTalk client, the webhook): TLS by rustls
//! with ring for its cryptography, and the system's trust store (`/etc/ssl/certs` on Debian).
//!
//! reqwest 0.13 is built with `rustls-no-provider`: its default provider would be aws-lc-rs, a
//! second, much larger C library to build. It then takes the process's default rustls
//! provider, which [`client_builder`] installs before anything is built.

/// A client builder, with ring installed as the process's rustls provider first. Build every
/// HTTP client from it: a reqwest client built while no provider is installed would panic.
pub fn client_builder() -> reqwest::ClientBuilder {
    // Installs once per process; a later call finds it installed (Err) and changes nothing.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}
