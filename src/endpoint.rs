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
