//! Which region and which control-plane endpoint to use, the way AWS users expect: explicit
//! settings first, then the environment, then the shared config file's profile. GStreamer-free.

use std::borrow::Cow;

use aws_config::profile::ProfileSet;
use aws_runtime::env_config::file::EnvConfigFiles;
use aws_types::os_shim_internal::{Env, Fs};

/// The region when nothing says otherwise (as in AWS's C++ kvssink).
pub const DEFAULT_REGION: &str = "us-west-2";

/// What the user configured; resolved by [`resolve`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    /// `aws-region`.
    pub region: Option<String>,
    /// `profile`; else `AWS_PROFILE`, else `default`.
    pub profile: Option<String>,
    /// `use-fips`; else `AWS_USE_FIPS_ENDPOINT`, else the profile's `use_fips_endpoint`.
    pub use_fips: bool,
    /// `use-dual-stack`; else `AWS_USE_DUALSTACK_ENDPOINT`, else `use_dualstack_endpoint`.
    pub use_dual_stack: bool,
    /// `control-plane-uri`.
    pub control_plane_uri: Option<String>,
}

/// The region and control plane to use, and where each came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub region: String,
    pub region_from: String,
    pub control_plane_url: String,
    pub control_plane_from: String,
    /// Things the user should know (a profile file that cannot be read...).
    pub notes: Vec<String>,
}

/// Resolves the region: `aws-region`, `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's
/// `region`, then us-west-2; and the control plane: `control-plane-uri`, `CONTROL_PLANE_URI`,
/// `AWS_ENDPOINT_URL_KINESIS_VIDEO`, `AWS_ENDPOINT_URL`, then the region's endpoint in its
/// partition, FIPS and/or dual-stack when asked for.
pub async fn resolve(location: &Location) -> Resolved {
    let mut notes = Vec::new();
    let profile = load_profile(location.profile.as_deref(), &mut notes).await;
    let profile_name = profile
        .as_ref()
        .map(|p| p.selected_profile().to_owned())
        .unwrap_or_else(|| profile_name(location.profile.as_deref()));
    let from_profile = |key: &str| {
        profile
            .as_ref()
            .and_then(|p| p.get(key))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };

    let (region, region_from) = if let Some(r) = &location.region {
        // AWS's kvssink lets AWS_DEFAULT_REGION override its property: someone switching from
        // it with both set would otherwise stream into another region without a word.
        if let Some(env_region) = env("AWS_DEFAULT_REGION").filter(|e| e != r) {
            notes.push(format!(
                "aws-region={r} is used; AWS_DEFAULT_REGION={env_region} in the environment is                  not (AWS's kvssink would use {env_region}): unset one of them"
            ));
        }
        (r.clone(), "the aws-region property".to_owned())
    } else if let Some(r) = env("AWS_REGION") {
        (r, "AWS_REGION".to_owned())
    } else if let Some(r) = env("AWS_DEFAULT_REGION") {
        (r, "AWS_DEFAULT_REGION".to_owned())
    } else if let Some(r) = from_profile("region") {
        (r, format!("profile {profile_name}"))
    } else {
        (DEFAULT_REGION.to_owned(), "the default".to_owned())
    };

    let flag = |property: bool, var: &str, key: &str| {
        property
            || env(var).is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || from_profile(key).is_some_and(|v| v.eq_ignore_ascii_case("true"))
    };
    let fips = flag(
        location.use_fips,
        "AWS_USE_FIPS_ENDPOINT",
        "use_fips_endpoint",
    );
    let dual_stack = flag(
        location.use_dual_stack,
        "AWS_USE_DUALSTACK_ENDPOINT",
        "use_dualstack_endpoint",
    );

    // A user name or password in it is refused (`parse_url`), and never printed: the URL
    // goes on to messages as it is here.
    let explicit = explicit_control_plane(location)
        .map(|(url, from)| (without_userinfo(&url).into_owned(), from));
    let (control_plane_url, control_plane_from) = explicit.unwrap_or_else(|| {
        let mut from = format!("the {} partition", partition(&region).name);
        if fips {
            from.push_str(", FIPS");
        }
        if dual_stack {
            from.push_str(", dual-stack");
        }
        (control_plane_url(&region, fips, dual_stack), from)
    });
    Resolved {
        region,
        region_from,
        control_plane_url,
        control_plane_from,
        notes,
    }
}

/// The control-plane URL given by the user and where it came from: `control-plane-uri`,
/// `CONTROL_PLANE_URI`, `AWS_ENDPOINT_URL_KINESIS_VIDEO`, `AWS_ENDPOINT_URL` (the last two
/// ignored with `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true`).
fn explicit_control_plane(location: &Location) -> Option<(String, String)> {
    let ignore_endpoint_urls =
        env("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    [
        (
            location.control_plane_uri.clone(),
            "the control-plane-uri property",
        ),
        (env("CONTROL_PLANE_URI"), "CONTROL_PLANE_URI"),
    ]
    .into_iter()
    .chain(
        [
            (
                env("AWS_ENDPOINT_URL_KINESIS_VIDEO"),
                "AWS_ENDPOINT_URL_KINESIS_VIDEO",
            ),
            (env("AWS_ENDPOINT_URL"), "AWS_ENDPOINT_URL"),
        ]
        .into_iter()
        .filter(|_| !ignore_endpoint_urls),
    )
    .find_map(|(url, from)| url.map(|u| (u, from.to_owned())))
}

/// Checks, without touching the network, that the control-plane URL the user gave (see
/// [`resolve`]) can be used: an `http` or `https` URL with a host. For the element's `start`,
/// so that `control-plane-uri=ftp://...` is an error at once, naming where the URL came from.
pub fn check(location: &Location) -> Result<(), String> {
    match explicit_control_plane(location) {
        Some((url, from)) => parse_url(&url)
            .map(|_| ())
            .map_err(|e| format!("{e} (from {from})")),
        None => Ok(()),
    }
}

/// Parses a control-plane URL: `http` or `https`, with a host, no user name or password. A
/// path is kept as the base the operations' names are joined to, with or without a trailing
/// slash (as the AWS SDKs do: `http://host/prefix` calls `http://host/prefix/describeStream`):
/// the URL returned ends in `/`. Messages never quote a user name or password in `text`.
pub fn parse_url(text: &str) -> Result<url::Url, String> {
    let hint = "give a URL such as https://kinesisvideo.us-west-2.amazonaws.com or \
                http://127.0.0.1:4566";
    let shown = without_userinfo(text);
    let mut url = url::Url::parse(text.trim())
        .map_err(|e| format!("the control-plane URL {shown:?} is not a URL ({e}): {hint}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "the control-plane URL {shown:?} is not http or https ({}:// cannot be used): {hint}",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!(
            "the control-plane URL {shown:?} has no host: {hint}"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "the control-plane URL {shown:?} holds a user name or password, which AWS does not \
             use: remove it"
        ));
    }
    with_trailing_slash(&mut url);
    Ok(url)
}

/// Makes `url`'s path end in `/`, so that names joined to it go below it.
pub(crate) fn with_trailing_slash(url: &mut url::Url) {
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
}

/// `text` (a URL, or what was meant as one) with whatever stands before an `@` in its
/// authority replaced by `<redacted>`: a user name and password are never repeated in a
/// message, even in a URL that does not parse.
pub fn without_userinfo(text: &str) -> Cow<'_, str> {
    let start = text.find("://").map_or(0, |i| i + 3);
    let rest = &text[start..];
    // Up to the query or fragment: a password may hold a `/`, which a user may not have
    // percent-encoded.
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => Cow::Owned(format!(
            "{}{}{}",
            &text[..start],
            crate::credentials::REDACTED,
            &rest[at..]
        )),
        None => Cow::Borrowed(text),
    }
}

/// `text` (a message) with the user name and password of every URL in it replaced by
/// `<redacted>`: a URL ends at white space, a quote, a bracket or a comma.
pub fn without_userinfo_in(text: &str) -> Cow<'_, str> {
    if !text.contains("://") || !text.contains('@') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let start = at + 3;
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        let url_end = after
            .find(|c: char| c.is_whitespace() || "\"'`<>()[]{},".contains(c))
            .unwrap_or(after.len());
        // The authority ends at the path, query or fragment; a password may hold a `/`.
        let authority = &after[..url_end];
        let query = authority.find(['?', '#']).unwrap_or(authority.len());
        match authority[..query].rfind('@') {
            Some(userinfo_end) => {
                out.push_str(crate::credentials::REDACTED);
                rest = &after[userinfo_end..];
            }
            None => rest = after,
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// The HTTP proxy that requests to a URL go through, as the environment names it, and the
/// variable that does.
///
/// Every request decides here: the control plane's, GetMedia's (reqwest's client asks through
/// `reqwest::Proxy::custom`) and PutMedia's own connection (`uploader::transport`), so that
/// they all take the same way, and the errors can say which proxy was in it.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    /// The proxy's URL as given (`http://` when it names none), with its user name and
    /// password: never printed. `None` when the variable's value is not a URL.
    url: Option<url::Url>,
    /// The variable that named it, e.g. `https_proxy`.
    pub from: &'static str,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Proxy({self})")
    }
}

/// `the proxy 127.0.0.1:3128 (from https_proxy)`: its host and port, never its user name or
/// password.
impl std::fmt::Display for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.url {
            Some(_) => write!(f, "the proxy {} (from {})", self.host_port(), self.from),
            None => write!(f, "the proxy in {}", self.from),
        }
    }
}

impl Proxy {
    fn parse(value: &str, from: &'static str) -> Proxy {
        // A value without a scheme is an http:// proxy, as curl and reqwest read it.
        let with_scheme = if value.contains("://") {
            Cow::Borrowed(value)
        } else {
            Cow::Owned(format!("http://{value}"))
        };
        let url = url::Url::parse(&with_scheme)
            .ok()
            .filter(|u| u.host_str().is_some_and(|h| !h.is_empty()));
        Proxy { url, from }
    }

    /// `http`, `https`, `socks5`...; empty when the value is not a URL.
    pub fn scheme(&self) -> &str {
        self.url.as_ref().map_or("", url::Url::scheme)
    }

    /// Its host, without the brackets of an IPv6 address.
    pub fn host(&self) -> &str {
        self.url
            .as_ref()
            .and_then(url::Url::host_str)
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
    }

    /// Its port, or its scheme's (80 for `http://`).
    pub fn port(&self) -> u16 {
        self.url
            .as_ref()
            .and_then(url::Url::port_or_known_default)
            .unwrap_or(80)
    }

    /// `host:port` (`[::1]:3128` for IPv6).
    pub fn host_port(&self) -> String {
        match self.url.as_ref().and_then(url::Url::host_str) {
            Some(host) => format!("{host}:{}", self.port()),
            None => "?".to_owned(),
        }
    }

    /// Whether a user name or password is given for it.
    pub fn has_credentials(&self) -> bool {
        self.url
            .as_ref()
            .is_some_and(|u| !u.username().is_empty() || u.password().is_some())
    }

    /// The `Proxy-Authorization` value for its user name and password (percent-decoded), if
    /// any are given.
    pub fn basic_auth(&self) -> Option<String> {
        let url = self.url.as_ref().filter(|_| self.has_credentials())?;
        let pair = format!(
            "{}:{}",
            percent_decoded(url.username()),
            percent_decoded(url.password().unwrap_or_default())
        );
        Some(format!("Basic {}", aws_smithy_types::base64::encode(pair)))
    }

    /// Why it cannot be used, if it cannot: only `http://` proxies for PutMedia's connection
    /// (`tunnel_only`), `http://` and `https://` ones for the other requests.
    pub fn unusable(&self, tunnel_only: bool) -> Option<String> {
        match self.scheme() {
            "" => Some("is not a URL such as http://proxy.example.com:3128".to_owned()),
            "http" => None,
            "https" if !tunnel_only => None,
            "https" => Some(
                "is an https:// proxy, which PutMedia's connection does not go through (only \
                 http:// ones)"
                    .to_owned(),
            ),
            other => Some(format!(
                "is a {other}:// proxy, which is not supported (http:// ones are)"
            )),
        }
    }

    /// Its URL with its user name and password, for reqwest's client.
    pub(crate) fn url(&self) -> Option<&url::Url> {
        self.url.as_ref()
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    /// A proxy named by `http_proxy=value`.
    pub fn proxy(value: &str) -> super::Proxy {
        super::Proxy::parse(value, "http_proxy")
    }
}

/// `%XX` sequences decoded (a user name or password in a proxy URL).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The proxy requests to `target` go through: `https_proxy` for `https://` URLs, `http_proxy`
/// for `http://` ones, else `all_proxy` (each `UPPER_CASE` first, then `lower_case`; an
/// empty value is no value), unless `no_proxy` names `target`'s host. In a CGI program
/// (`REQUEST_METHOD` set) `HTTP_PROXY` is ignored: there it may come from a request header.
/// The environment is read at each call.
pub fn proxy_for(target: &url::Url) -> Option<Proxy> {
    proxy_in(target, &|name| std::env::var(name).ok())
}

fn proxy_in(target: &url::Url, env: &dyn Fn(&str) -> Option<String>) -> Option<Proxy> {
    let first = |names: &[&'static str]| {
        names.iter().find_map(|name| {
            env(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .map(|v| (*name, v))
        })
    };
    let for_scheme: &[&'static str] = match target.scheme() {
        "https" => &["HTTPS_PROXY", "https_proxy"],
        "http" if env("REQUEST_METHOD").is_some() => &["http_proxy"],
        "http" => &["HTTP_PROXY", "http_proxy"],
        _ => return None,
    };
    let (from, value) = first(for_scheme).or_else(|| first(&["ALL_PROXY", "all_proxy"]))?;
    let host = target.host()?;
    let port = target.port_or_known_default();
    if let Some((_, no_proxy)) = first(&["NO_PROXY", "no_proxy"])
        && bypasses(&no_proxy, &host, port)
    {
        return None;
    }
    Some(Proxy::parse(&value, from))
}

/// Whether a `no_proxy` list names `host` (and `port`): comma-separated entries, each `*`
/// (every host, IP addresses too, as curl has it), an IP address or network
/// (`10.0.0.0/8`, `::1`, `[fd00::]/8`), or a domain name (`example.com` and `.example.com`
/// both name it and every name under it), any of them with `:port` to name that port only.
fn bypasses(no_proxy: &str, host: &url::Host<&str>, port: Option<u16>) -> bool {
    use std::net::IpAddr;
    let ip = match host {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(*ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(*ip)),
        url::Host::Domain(_) => None,
    };
    no_proxy
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            // `host:port`, `[v6]:port`, `[v6]`; a bare IPv6 address has colons of its own.
            let (name, entry_port) = match entry.strip_prefix('[') {
                Some(rest) => match rest.split_once(']') {
                    Some((addr, tail)) => (addr, tail.strip_prefix(':')),
                    None => (rest, None),
                },
                None if entry.matches(':').count() == 1 => match entry.split_once(':') {
                    Some((name, p)) => (name, Some(p)),
                    None => (entry, None),
                },
                None => (entry, None),
            };
            if let Some(p) = entry_port
                && p.parse::<u16>().ok() != port
            {
                return false;
            }
            match ip {
                Some(ip) => ip_in(ip, name),
                None => {
                    let domain = name.trim_start_matches("*.").trim_start_matches('.');
                    let host = host.to_string();
                    !domain.is_empty()
                        && (host.eq_ignore_ascii_case(domain)
                            || host.len() > domain.len()
                                && host[host.len() - domain.len()..].eq_ignore_ascii_case(domain)
                                && host.as_bytes()[host.len() - domain.len() - 1] == b'.')
                }
            }
        })
}

/// Whether `ip` is the address `entry`, or in the network `entry` (`addr/bits`).
fn ip_in(ip: std::net::IpAddr, entry: &str) -> bool {
    use std::net::IpAddr;
    let (addr, bits) = match entry.split_once('/') {
        Some((addr, bits)) => match bits.parse::<u32>() {
            Ok(bits) => (addr, Some(bits)),
            Err(_) => return false,
        },
        None => (entry, None),
    };
    let Ok(net) = addr
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    else {
        return false;
    };
    let (ip, net, width) = match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) as u128, u32::from(b) as u128, 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return false,
    };
    let bits = bits.unwrap_or(width).min(width);
    let mask = if bits == 0 {
        0
    } else {
        (u128::MAX << (128 - bits)) >> (128 - width)
    };
    ip & mask == net & mask
}

/// The region alone (for the credential providers that call STS): as in [`resolve`].
pub async fn region(location: &Location) -> String {
    if let Some(r) = location
        .region
        .clone()
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"))
    {
        return r;
    }
    resolve(location).await.region
}

/// The profile in use: the property, `AWS_PROFILE`, else `default`.
pub fn profile_name(property: Option<&str>) -> String {
    property
        .map(str::to_owned)
        .or_else(|| env("AWS_PROFILE"))
        .unwrap_or_else(|| "default".to_owned())
}

async fn load_profile(name: Option<&str>, notes: &mut Vec<String>) -> Option<ProfileSet> {
    let name = name.map(|n| Cow::Owned(n.to_owned()));
    match aws_config::profile::load(&Fs::real(), &Env::real(), &EnvConfigFiles::default(), name)
        .await
    {
        Ok(set) => Some(set),
        Err(e) => {
            notes.push(format!("the shared config files cannot be read: {e}"));
            None
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// An AWS partition's DNS suffixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    pub name: &'static str,
    pub dns_suffix: &'static str,
    pub dual_stack_dns_suffix: &'static str,
}

/// The partition a region belongs to (the AWS SDKs' partitions table, by region prefix).
pub fn partition(region: &str) -> Partition {
    const PARTITIONS: &[(&str, Partition)] = &[
        (
            "cn-",
            Partition {
                name: "aws-cn",
                dns_suffix: "amazonaws.com.cn",
                dual_stack_dns_suffix: "api.amazonwebservices.com.cn",
            },
        ),
        (
            "us-gov-",
            Partition {
                name: "aws-us-gov",
                dns_suffix: "amazonaws.com",
                dual_stack_dns_suffix: "api.aws",
            },
        ),
        (
            "us-iso-",
            Partition {
                name: "aws-iso",
                dns_suffix: "c2s.ic.gov",
                dual_stack_dns_suffix: "api.aws.ic.gov",
            },
        ),
        (
            "us-isob-",
            Partition {
                name: "aws-iso-b",
                dns_suffix: "sc2s.sgov.gov",
                dual_stack_dns_suffix: "api.aws.scloud",
            },
        ),
        (
            "eu-isoe-",
            Partition {
                name: "aws-iso-e",
                dns_suffix: "cloud.adc-e.uk",
                dual_stack_dns_suffix: "api.cloud-aws.adc-e.uk",
            },
        ),
        (
            "us-isof-",
            Partition {
                name: "aws-iso-f",
                dns_suffix: "csp.hci.ic.gov",
                dual_stack_dns_suffix: "api.aws.hci.ic.gov",
            },
        ),
        (
            "eusc-",
            Partition {
                name: "aws-eusc",
                dns_suffix: "amazonaws.eu",
                dual_stack_dns_suffix: "api.amazonwebservices.eu",
            },
        ),
    ];
    PARTITIONS
        .iter()
        .find(|(prefix, _)| region.starts_with(prefix))
        .map(|(_, p)| *p)
        .unwrap_or(Partition {
            name: "aws",
            dns_suffix: "amazonaws.com",
            dual_stack_dns_suffix: "api.aws",
        })
}

/// The Kinesis Video Streams control-plane endpoint of `region`, as the SDKs' standard
/// endpoint rules build it.
pub fn control_plane_url(region: &str, fips: bool, dual_stack: bool) -> String {
    let p = partition(region);
    let service = if fips {
        "kinesisvideo-fips"
    } else {
        "kinesisvideo"
    };
    let suffix = if dual_stack {
        p.dual_stack_dns_suffix
    } else {
        p.dns_suffix
    };
    format!("https://{service}.{region}.{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_in_every_partition() {
        let cases = [
            (
                "eu-west-1",
                false,
                false,
                "https://kinesisvideo.eu-west-1.amazonaws.com",
            ),
            (
                "us-east-1",
                true,
                false,
                "https://kinesisvideo-fips.us-east-1.amazonaws.com",
            ),
            (
                "us-east-1",
                false,
                true,
                "https://kinesisvideo.us-east-1.api.aws",
            ),
            (
                "us-east-1",
                true,
                true,
                "https://kinesisvideo-fips.us-east-1.api.aws",
            ),
            (
                "cn-north-1",
                false,
                false,
                "https://kinesisvideo.cn-north-1.amazonaws.com.cn",
            ),
            (
                "cn-northwest-1",
                false,
                true,
                "https://kinesisvideo.cn-northwest-1.api.amazonwebservices.com.cn",
            ),
            (
                "us-gov-west-1",
                true,
                false,
                "https://kinesisvideo-fips.us-gov-west-1.amazonaws.com",
            ),
            (
                "us-gov-east-1",
                false,
                true,
                "https://kinesisvideo.us-gov-east-1.api.aws",
            ),
            (
                "us-iso-east-1",
                false,
                false,
                "https://kinesisvideo.us-iso-east-1.c2s.ic.gov",
            ),
            (
                "us-isob-east-1",
                false,
                false,
                "https://kinesisvideo.us-isob-east-1.sc2s.sgov.gov",
            ),
            (
                "eusc-de-east-1",
                false,
                false,
                "https://kinesisvideo.eusc-de-east-1.amazonaws.eu",
            ),
        ];
        for (region, fips, dual, url) in cases {
            assert_eq!(
                control_plane_url(region, fips, dual),
                url,
                "{region} {fips} {dual}"
            );
        }
        assert_eq!(partition("us-gov-west-1").name, "aws-us-gov");
        assert_eq!(partition("ap-southeast-7").name, "aws");
    }

    #[test]
    fn unusable_control_plane_urls_are_refused() {
        for good in [
            "https://kinesisvideo.eu-west-1.amazonaws.com",
            "http://127.0.0.1:4566",
            "http://localhost:4566/",
        ] {
            assert!(parse_url(good).is_ok(), "{good}");
        }
        for (bad, says) in [
            ("ftp://example.com", "not http or https (ftp://"),
            ("kinesisvideo.us-east-1.amazonaws.com", "not a URL"),
            ("file:///tmp/x", "not http or https"),
            ("http://", "not a URL"),
            ("unix:/run/kvs.sock", "not http or https"),
        ] {
            let e = parse_url(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(e.contains(bad), "{bad}: {e}");
        }
        let e = check(&Location {
            control_plane_uri: Some("ftp://example.com".into()),
            ..Location::default()
        })
        .unwrap_err();
        assert!(e.ends_with("(from the control-plane-uri property)"), "{e}");
    }

    #[test]
    fn a_password_in_the_url_is_never_repeated() {
        for (bad, shown, says) in [
            (
                "http://user:Hunter2pw@127.0.0.1:4711",
                "http://<redacted>@127.0.0.1:4711",
                "user name or password",
            ),
            (
                "https://Hunter2pw@example.com/path",
                "https://<redacted>@example.com/path",
                "user name or password",
            ),
            // Not URLs at all: the part before the `@` is still not repeated.
            (
                "http://user:Hunter2pw/x@127.0.0.1:4711",
                "http://<redacted>@127.0.0.1:4711",
                "not a URL",
            ),
            (
                "user:Hunter2pw@127.0.0.1:4711",
                "<redacted>@127.0.0.1:4711",
                "not http or https (user://",
            ),
        ] {
            let e = parse_url(bad).unwrap_err();
            assert!(!e.contains("Hunter2pw"), "{bad}: {e}");
            assert!(e.contains(&format!("{shown:?}")), "{bad}: {e}");
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert_eq!(
            without_userinfo("https://kinesisvideo.us-west-2.amazonaws.com/a@b?x=@"),
            "https://<redacted>@b?x=@"
        );
        assert_eq!(
            without_userinfo("http://127.0.0.1:4711/"),
            "http://127.0.0.1:4711/"
        );
    }

    fn proxy(target: &str, env: &[(&str, &str)]) -> Option<Proxy> {
        let env: std::collections::HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        proxy_in(&url::Url::parse(target).unwrap(), &|name| {
            env.get(name).cloned()
        })
    }

    #[test]
    fn the_proxy_comes_from_the_variable_of_the_scheme_then_all_proxy() {
        let env = [
            ("http_proxy", "http://plain:3128"),
            ("HTTPS_PROXY", "http://secure:3129"),
            ("all_proxy", "http://any:3130"),
        ];
        let p = proxy("http://127.0.0.1:4711/", &env).unwrap();
        assert_eq!(
            (p.host_port().as_str(), p.from),
            ("plain:3128", "http_proxy")
        );
        let p = proxy("https://kinesisvideo.us-west-2.amazonaws.com/", &env).unwrap();
        assert_eq!(
            (p.host_port().as_str(), p.from),
            ("secure:3129", "HTTPS_PROXY")
        );
        let p = proxy("https://x/", &[("ALL_PROXY", "proxy.lan")]).unwrap();
        assert_eq!(p.to_string(), "the proxy proxy.lan:80 (from ALL_PROXY)");
        assert_eq!(p.scheme(), "http");
        assert!(proxy("http://x/", &[("https_proxy", "http://p:1")]).is_none());
        assert!(proxy("http://x/", &[("http_proxy", " ")]).is_none());
        // Upper case first, as reqwest reads them.
        let p = proxy(
            "http://x/",
            &[
                ("HTTP_PROXY", "http://upper:1"),
                ("http_proxy", "http://lower:1"),
            ],
        )
        .unwrap();
        assert_eq!(p.from, "HTTP_PROXY");
        // CGI: HTTP_PROXY may be a request's `Proxy:` header (httpoxy).
        let p = proxy(
            "http://x/",
            &[("REQUEST_METHOD", "GET"), ("HTTP_PROXY", "http://evil:1")],
        );
        assert!(p.is_none());
    }

    #[test]
    fn the_proxys_credentials_are_sent_never_shown() {
        let p = proxy(
            "http://x/",
            &[("http_proxy", "http://us%20er:p%40ss:w%25rd@127.0.0.1:3128/")],
        )
        .unwrap();
        assert!(p.has_credentials());
        // base64("us er:p@ss:w%rd")
        assert_eq!(p.basic_auth().unwrap(), "Basic dXMgZXI6cEBzczp3JXJk");
        assert_eq!(p.to_string(), "the proxy 127.0.0.1:3128 (from http_proxy)");
        assert_eq!(
            format!("{p:?}"),
            "Proxy(the proxy 127.0.0.1:3128 (from http_proxy))"
        );
        let p = proxy("http://x/", &[("http_proxy", "http://[::1]:3128")]).unwrap();
        assert_eq!(
            (p.host(), p.port(), p.host_port()),
            ("::1", 3128, "[::1]:3128".into())
        );
        assert!(p.basic_auth().is_none());
    }

    #[test]
    fn only_http_proxies_for_put_media_http_and_https_for_the_rest() {
        let unusable = |value: &str, tunnel_only| {
            proxy("http://x/", &[("http_proxy", value)])
                .unwrap()
                .unusable(tunnel_only)
        };
        assert_eq!(unusable("http://p:1", true), None);
        assert_eq!(unusable("p:1", true), None);
        assert_eq!(unusable("https://p:1", false), None);
        assert!(
            unusable("https://p:1", true)
                .unwrap()
                .contains("https:// proxy")
        );
        assert!(
            unusable("socks5://p:1080", false)
                .unwrap()
                .contains("socks5://")
        );
        assert!(unusable("http://", false).unwrap().contains("not a URL"));
    }

    #[test]
    fn no_proxy_names_hosts_networks_and_ports() {
        let goes_direct = |target: &str, no_proxy: &str| {
            proxy(
                target,
                &[("http_proxy", "http://p:3128"), ("no_proxy", no_proxy)],
            )
            .is_none()
        };
        for (target, no_proxy) in [
            // `*` is every host, IP addresses too (as curl has it).
            ("http://127.0.0.1:4711/", "*"),
            ("http://kvs.example.com/", "*"),
            ("http://127.0.0.1:4711/", "127.0.0.1"),
            ("http://127.0.0.1:4711/", "10.0.0.1, 127.0.0.0/8"),
            ("http://127.0.0.1:4711/", "127.0.0.1:4711"),
            ("http://[::1]:4711/", "::1"),
            ("http://[::1]:4711/", "[::1]:4711"),
            ("http://[fd00::5]/", "fd00::/8"),
            ("http://localhost:4711/", "localhost"),
            ("http://kvs.example.com/", "example.com"),
            ("http://kvs.example.com/", ".example.com"),
            ("http://example.com/", ".example.com"),
            ("http://KVS.Example.COM/", "example.com"),
        ] {
            assert!(goes_direct(target, no_proxy), "{target} {no_proxy}");
        }
        for (target, no_proxy) in [
            ("http://127.0.0.1:4711/", "127.0.0.2"),
            ("http://127.0.0.1:4711/", "127.0.0.1:4712"),
            ("http://127.0.0.1:4711/", "10.0.0.0/8"),
            ("http://[::1]:4711/", "127.0.0.1"),
            ("http://notexample.com/", "example.com"),
            ("http://kvs.example.com/", "kvs.example.com.evil"),
            ("http://localhost/", ""),
        ] {
            assert!(!goes_direct(target, no_proxy), "{target} {no_proxy}");
        }
    }

    #[test]
    fn a_path_in_the_url_is_the_operations_base_with_or_without_a_slash() {
        for base in [
            "http://127.0.0.1:4711/prefix",
            "http://127.0.0.1:4711/prefix/",
        ] {
            let url = parse_url(base).unwrap();
            assert_eq!(
                url.join("describeStream").unwrap().as_str(),
                "http://127.0.0.1:4711/prefix/describeStream",
                "{base}"
            );
        }
        for base in ["http://127.0.0.1:4711", "http://127.0.0.1:4711/"] {
            let url = parse_url(base).unwrap();
            assert_eq!(
                url.join("describeStream").unwrap().as_str(),
                "http://127.0.0.1:4711/describeStream",
                "{base}"
            );
        }
    }
}
