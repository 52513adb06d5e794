//! Input validation as the service does it: every constraint of the API model
//! (botocore's `kinesisvideo` service-2.json, the API reference) that a request
//! breaks is listed in one 400 `InvalidArgumentException`, in the service's
//! words: `2 validation errors detected: Value 'x' at 'mediaType' failed to
//! satisfy constraint: Member must satisfy regular expression pattern: ...;
//! Value ...`.

use super::http::ApiError;
use super::operation::StreamRef;
use serde_json::Number;
use std::collections::BTreeMap;

/// A string constraint of the model: length (in UTF-16 units, as the
/// service's Java counts) and pattern.
pub(crate) struct StrRule {
    min: usize,
    max: usize,
    pattern: &'static str,
    matches: fn(&str) -> bool,
}

fn name_chars(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// `[\w\-\.\+]+/[\w\-\.\+]+(,[\w\-\.\+]+/[\w\-\.\+]+)*` (`\w` is ASCII in Java).
fn media_type(s: &str) -> bool {
    let token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b'+'))
    };
    s.split(',').all(|part| {
        let mut it = part.split('/');
        matches!((it.next(), it.next(), it.next()), (Some(a), Some(b), None) if token(a) && token(b))
    })
}

/// `.+` (Java's `.`: anything but a line terminator).
fn any_line(s: &str) -> bool {
    !s.is_empty()
        && !s
            .chars()
            .any(|c| matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}'))
}

fn alphanumeric(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_alphanumeric())
}

/// `\p{Z}`: the space, line and paragraph separators.
fn separator(c: char) -> bool {
    matches!(
        c,
        ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}' | '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}'
    )
}

/// `[\p{L}\p{Z}\p{N}_.:/=+\-@]*` (`\p{L}` as Rust's `is_alphabetic`, which also
/// takes the few combining marks Unicode calls alphabetic).
fn tag_text(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_alphabetic() || c.is_numeric() || separator(c) || "_.:/=+-@".contains(c))
}

/// `StreamName`.
pub(crate) const STREAM_NAME: StrRule = StrRule {
    min: 1,
    max: 256,
    pattern: "[a-zA-Z0-9_.-]+",
    matches: name_chars,
};
/// `DeviceName`.
pub(crate) const DEVICE_NAME: StrRule = StrRule {
    min: 1,
    max: 128,
    pattern: "[a-zA-Z0-9_.-]+",
    matches: name_chars,
};
/// `MediaType`.
pub(crate) const MEDIA_TYPE: StrRule = StrRule {
    min: 1,
    max: 128,
    pattern: r"[\w\-\.\+]+/[\w\-\.\+]+(,[\w\-\.\+]+/[\w\-\.\+]+)*",
    matches: media_type,
};
/// `KmsKeyId`.
pub(crate) const KMS_KEY_ID: StrRule = StrRule {
    min: 1,
    max: 2048,
    pattern: ".+",
    matches: any_line,
};
/// `Version` (`CurrentVersion`).
pub(crate) const VERSION: StrRule = StrRule {
    min: 1,
    max: 64,
    pattern: "[a-zA-Z0-9]+",
    matches: alphanumeric,
};
/// `TagKey`.
pub(crate) const TAG_KEY: StrRule = StrRule {
    min: 1,
    max: 128,
    pattern: r"^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$",
    matches: tag_text,
};
/// `TagValue`.
pub(crate) const TAG_VALUE: StrRule = StrRule {
    min: 0,
    max: 256,
    pattern: r"[\p{L}\p{Z}\p{N}_.:/=+\-@]*",
    matches: tag_text,
};
/// `ResourceARN` (`StreamARN`).
pub(crate) const RESOURCE_ARN: StrRule = StrRule {
    min: 1,
    max: 1024,
    pattern: r"arn:[a-z\d-]+:kinesisvideo:[a-z0-9-]+:[0-9]+:[a-z]+/[a-zA-Z0-9_.-]+/[0-9]+",
    matches: resource_arn,
};

fn resource_arn(s: &str) -> bool {
    let lower_digits_dash = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    };
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit());
    let parts: Vec<&str> = s.splitn(6, ':').collect();
    let ["arn", partition, "kinesisvideo", region, account, resource] = parts.as_slice() else {
        return false;
    };
    let resource: Vec<&str> = resource.split('/').collect();
    let [kind, name, id] = resource.as_slice() else {
        return false;
    };
    lower_digits_dash(partition)
        && lower_digits_dash(region)
        && digits(account)
        && !kind.is_empty()
        && kind.bytes().all(|c| c.is_ascii_lowercase())
        && !name.is_empty()
        && name_chars(name)
        && digits(id)
}

/// `NextToken` of the control plane.
pub(crate) const NEXT_TOKEN: StrRule = StrRule {
    min: 0,
    max: 512,
    pattern: "[a-zA-Z0-9+/=]*",
    matches: |s| {
        s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'='))
    },
};

impl StrRule {
    /// The constraints `v` breaks, in the service's words.
    fn broken(&self, v: &str) -> Vec<String> {
        let len = v.encode_utf16().count();
        let mut out = Vec::new();
        if len > self.max {
            out.push(format!(
                "Member must have length less than or equal to {}",
                self.max
            ));
        }
        if len < self.min {
            out.push(format!(
                "Member must have length greater than or equal to {}",
                self.min
            ));
        }
        // an empty value the length allows is not held against the pattern
        let allowed_empty = v.is_empty() && self.min == 0;
        if !allowed_empty && !(self.matches)(v) {
            out.push(format!(
                "Member must satisfy regular expression pattern: {}",
                self.pattern
            ));
        }
        out
    }
}

/// The validation errors of one request.
#[derive(Default)]
pub(crate) struct Checks(Vec<String>);

impl Checks {
    pub(crate) fn new() -> Checks {
        Checks::default()
    }

    fn fail(&mut self, value: &str, field: &str, constraint: &str) {
        self.0.push(format!(
            "Value {value} at '{field}' failed to satisfy constraint: {constraint}"
        ));
    }

    /// A required member.
    pub(crate) fn required<T>(&mut self, field: &str, v: Option<&T>) -> &mut Self {
        if v.is_none() {
            self.fail("null", field, "Member must not be null");
        }
        self
    }

    /// A string member, when present.
    pub(crate) fn string(&mut self, field: &str, v: Option<&str>, rule: &StrRule) -> &mut Self {
        if let Some(v) = v {
            for c in rule.broken(v) {
                self.fail(&format!("'{v}'"), field, &c);
            }
        }
        self
    }

    /// `StreamName` of a request, when present.
    pub(crate) fn stream(&mut self, r: &StreamRef) -> &mut Self {
        self.string("streamName", r.stream_name.as_deref(), &STREAM_NAME)
            .string("streamARN", r.stream_arn.as_deref(), &RESOURCE_ARN)
    }

    /// An integer member in `min..=max`, when present. A number with a
    /// fraction is not an integer (the service's model types say integer).
    pub(crate) fn integer(
        &mut self,
        field: &str,
        v: Option<&Number>,
        min: i64,
        max: i64,
    ) -> &mut Self {
        let Some(n) = v else { return self };
        let value = format!("'{n}'");
        match n.as_i64() {
            Some(i) if i < min => self.fail(
                &value,
                field,
                &format!("Member must have value greater than or equal to {min}"),
            ),
            Some(i) if i > max => self.fail(
                &value,
                field,
                &format!("Member must have value less than or equal to {max}"),
            ),
            Some(_) => {}
            None if n.is_u64() => self.fail(
                &value,
                field,
                &format!("Member must have value less than or equal to {max}"),
            ),
            None => self.fail(&value, field, "Member must be an integer"),
        }
        self
    }

    /// One of `set`, when present.
    pub(crate) fn one_of(&mut self, field: &str, v: Option<&str>, set: &[&str]) -> &mut Self {
        if let Some(v) = v
            && !set.contains(&v)
        {
            self.fail(
                &format!("'{v}'"),
                field,
                &format!("Member must satisfy enum value set: [{}]", set.join(", ")),
            );
        }
        self
    }

    /// A tag map (`ResourceTags`: 1 to 50 entries of `TagKey` / `TagValue`), when present.
    pub(crate) fn tags(&mut self, field: &str, v: Option<&BTreeMap<String, String>>) -> &mut Self {
        let Some(tags) = v else { return self };
        let shown = format!(
            "'{{{}}}'",
            tags.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        self.count(&shown, field, tags.len(), 1, 50);
        let mut keys: Vec<String> = Vec::new();
        let mut values: Vec<String> = Vec::new();
        for (k, v) in tags {
            for c in TAG_KEY.broken(k) {
                if !keys.contains(&c) {
                    keys.push(c);
                }
            }
            for c in TAG_VALUE.broken(v) {
                if !values.contains(&c) {
                    values.push(c);
                }
            }
        }
        if !keys.is_empty() {
            let c = format!("Map keys must satisfy constraint: [{}]", keys.join(", "));
            self.fail(&shown, field, &c);
        }
        if !values.is_empty() {
            let c = format!("Map value must satisfy constraint: [{}]", values.join(", "));
            self.fail(&shown, field, &c);
        }
        self
    }

    /// A list of tag keys (`TagKeyList`: 1 to 50 `TagKey`s), when present.
    pub(crate) fn tag_keys(&mut self, field: &str, v: Option<&Vec<String>>) -> &mut Self {
        let Some(keys) = v else { return self };
        let shown = format!("'[{}]'", keys.join(", "));
        self.count(&shown, field, keys.len(), 1, 50);
        for (i, k) in keys.iter().enumerate() {
            self.string(&format!("{field}.{}.member", i + 1), Some(k), &TAG_KEY);
        }
        self
    }

    fn count(&mut self, shown: &str, field: &str, n: usize, min: usize, max: usize) {
        if n < min {
            let c = format!("Member must have length greater than or equal to {min}");
            self.fail(shown, field, &c);
        }
        if n > max {
            let c = format!("Member must have length less than or equal to {max}");
            self.fail(shown, field, &c);
        }
    }

    /// `Ok` when nothing failed, else the one error listing every failure.
    pub(crate) fn finish(&mut self) -> Result<(), ApiError> {
        let n = self.0.len();
        if n == 0 {
            return Ok(());
        }
        Err(ApiError::invalid_argument(format!(
            "{n} validation error{} detected: {}",
            if n == 1 { "" } else { "s" },
            self.0.join("; ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(c: &mut Checks) -> String {
        c.finish().unwrap_err().message
    }

    #[test]
    fn patterns() {
        for ok in ["video/h264", "video/h264,audio/aac", "a.b+c_d-e/x", "V/1"] {
            assert!(media_type(ok), "{ok}");
        }
        for bad in [
            "h264",
            "video/",
            "/h264",
            "video/h264,",
            "a/b/c",
            "vid eo/x",
            "é/x",
            "",
        ] {
            assert!(!media_type(bad), "{bad}");
        }
        for ok in ["site", "a b", "ключ", "x:y/z=w+v-u@t", "٣", "", "\u{3000}"] {
            assert!(tag_text(ok), "{ok}");
        }
        for bad in ["k#", "a!", "tab\t", "<x>", "'"] {
            assert!(!tag_text(bad), "{bad}");
        }
        assert!(!any_line("a\nb") && any_line("arn:aws:kms:x") && !any_line(""));
        for ok in [
            "arn:aws:kinesisvideo:us-west-2:123456789012:stream/cam1/1700000000000",
            "arn:aws-cn:kinesisvideo:cn-north-1:1:stream/a.b_c-d/0",
        ] {
            assert!(resource_arn(ok), "{ok}");
        }
        for bad in [
            "notanarn",
            "arn:aws:kinesis:us-west-2:1:stream/cam1/1",
            "arn:aws:kinesisvideo:us-west-2:12a:stream/cam1/1",
            "arn:aws:kinesisvideo:us-west-2:1:stream/cam1",
            "arn:aws:kinesisvideo:us-west-2:1:stream/cam 1/1",
            "arn:aws:kinesisvideo:US-WEST-2:1:stream/cam1/1",
            "arn:aws:kinesisvideo:us-west-2:1:stream/cam1/1/2",
        ] {
            assert!(!resource_arn(bad), "{bad}");
        }
    }

    #[test]
    fn messages_in_the_service_words() {
        let mut c = Checks::new();
        c.string("mediaType", Some("h264"), &MEDIA_TYPE);
        assert_eq!(
            msg(&mut c),
            r"1 validation error detected: Value 'h264' at 'mediaType' failed to satisfy constraint: Member must satisfy regular expression pattern: [\w\-\.\+]+/[\w\-\.\+]+(,[\w\-\.\+]+/[\w\-\.\+]+)*"
        );
        let mut c = Checks::new();
        c.string("streamName", Some(""), &STREAM_NAME);
        c.integer(
            "dataRetentionInHours",
            Some(&Number::from(-1)),
            0,
            i32::MAX.into(),
        );
        let m = msg(&mut c);
        assert!(m.starts_with("3 validation errors detected: Value '' at 'streamName' failed to satisfy constraint: Member must have length greater than or equal to 1; "), "{m}");
        assert!(m.ends_with("Value '-1' at 'dataRetentionInHours' failed to satisfy constraint: Member must have value greater than or equal to 0"), "{m}");
        let mut c = Checks::new();
        c.integer("x", Number::from_f64(1.5).as_ref(), 0, 10);
        c.integer("y", Some(&Number::from(u64::MAX)), 0, 10);
        c.integer("z", Some(&Number::from(10)), 0, 10);
        let m = msg(&mut c);
        assert!(
            m.contains("'1.5' at 'x' failed to satisfy constraint: Member must be an integer"),
            "{m}"
        );
        assert!(m.contains("at 'y' failed to satisfy constraint: Member must have value less than or equal to 10"), "{m}");
        assert!(!m.contains("'z'"), "{m}");
    }

    #[test]
    fn tags_and_keys() {
        let tags: BTreeMap<String, String> = [
            ("k#".to_string(), "v".repeat(257)),
            ("ok".into(), "".into()),
        ]
        .into();
        let mut c = Checks::new();
        c.tags("tags", Some(&tags));
        let m = msg(&mut c);
        assert!(m.starts_with("2 validation errors detected: "), "{m}");
        assert!(m.contains("at 'tags' failed to satisfy constraint: Map keys must satisfy constraint: [Member must satisfy regular expression pattern: ^([\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*)$]"), "{m}");
        assert!(m.contains("Map value must satisfy constraint: [Member must have length less than or equal to 256]"), "{m}");
        let mut c = Checks::new();
        c.tags("tags", Some(&BTreeMap::new()));
        assert!(msg(&mut c).contains("Value '{}' at 'tags' failed to satisfy constraint: Member must have length greater than or equal to 1"));
        let mut c = Checks::new();
        c.tag_keys("tagKeyList", Some(&vec!["a".into(), "k".repeat(129)]));
        assert!(msg(&mut c).contains("at 'tagKeyList.2.member' failed to satisfy constraint: Member must have length less than or equal to 128"));
        let mut c = Checks::new();
        c.tag_keys("tagKeyList", Some(&vec![]))
            .required("tags", None::<&()>);
        assert!(msg(&mut c).starts_with("2 validation errors detected: Value '[]' at 'tagKeyList' failed to satisfy constraint: Member must have length greater than or equal to 1; Value null at 'tags' failed to satisfy constraint: Member must not be null"));
        assert!(Checks::new().finish().is_ok());
    }
}
