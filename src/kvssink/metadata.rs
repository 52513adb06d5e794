//! The `kvs-add-metadata` event of AWS's kvssink: a custom downstream event whose structure
//! carries one fragment metadata item, read here into what the producer takes
//! ([`crate::producer::Producer::add_metadata`]).

/// Name of the event's structure.
pub const EVENT_NAME: &str = "kvs-add-metadata";

/// One item, as the event carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddMetadata {
    pub name: String,
    pub value: String,
    pub persistent: bool,
}

/// Whether `event` is a `kvs-add-metadata` event.
pub fn is_add_metadata(event: &gst::EventRef) -> bool {
    // AWS's element reads only CUSTOM_DOWNSTREAM; the out-of-band and sticky kinds are taken
    // too, rather than acknowledged (true) and never applied.
    matches!(
        event.type_(),
        gst::EventType::CustomDownstream
            | gst::EventType::CustomDownstreamOob
            | gst::EventType::CustomDownstreamSticky
    ) && event.structure().is_some_and(|s| s.name() == EVENT_NAME)
}

/// The item of a `kvs-add-metadata` structure: `name` and `value` strings and the boolean
/// `persist`, as AWS's element reads them (`persistent` is taken too). What is wrong, if not.
pub fn parse(s: &gst::StructureRef) -> Result<AddMetadata, String> {
    let string = |field: &str| match s.get::<&str>(field) {
        Ok(v) => Ok(v.to_owned()),
        Err(gst::structure::GetError::FieldNotFound { .. }) => {
            Err(format!("it has no field \"{field}\""))
        }
        Err(_) => Err(format!("its field \"{field}\" is not a string")),
    };
    let name = string("name");
    let value = string("value");
    let field = ["persist", "persistent"]
        .into_iter()
        .find(|f| s.has_field(*f))
        .unwrap_or("persist");
    let persistent = s.get::<bool>(field).map_err(|e| match e {
        gst::structure::GetError::FieldNotFound { .. } => "it has no field \"persist\"".to_owned(),
        _ => format!("its field \"{field}\" is not a boolean"),
    });
    let problems: Vec<String> = [&name, &value]
        .into_iter()
        .filter_map(|r| r.as_ref().err().cloned())
        .chain(persistent.as_ref().err().cloned())
        .collect();
    if !problems.is_empty() {
        return Err(format!(
            "{} (it needs name=(string)..., value=(string)... and persist=(boolean)...): {s}",
            problems.join(", ")
        ));
    }
    Ok(AddMetadata {
        name: name.unwrap(),
        value: value.unwrap(),
        persistent: persistent.unwrap(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn parsed(s: &str) -> Result<AddMetadata, String> {
        gst::init().unwrap();
        parse(&gst::Structure::from_str(s).unwrap())
    }

    #[test]
    fn the_event_is_taken_in_each_custom_downstream_kind() {
        gst::init().unwrap();
        let item = || gst::Structure::from_str("kvs-add-metadata, name=a, value=b").unwrap();
        assert!(is_add_metadata(&gst::event::CustomDownstream::new(item())));
        assert!(is_add_metadata(&gst::event::CustomDownstreamOob::new(
            item()
        )));
        assert!(is_add_metadata(&gst::event::CustomDownstreamSticky::new(
            item()
        )));
        assert!(!is_add_metadata(&gst::event::CustomUpstream::new(item())));
        let other = gst::Structure::from_str("other, name=a").unwrap();
        assert!(!is_add_metadata(&gst::event::CustomDownstream::new(other)));
        assert!(!is_add_metadata(&gst::event::Eos::new()));
    }

    #[test]
    fn reads_the_fields_of_aws_element() {
        assert_eq!(
            parsed(
                "kvs-add-metadata, name=(string)motion, value=(string)true, persist=(boolean)false"
            ),
            Ok(AddMetadata {
                name: "motion".into(),
                value: "true".into(),
                persistent: false
            })
        );
        let item = parsed(
            "kvs-add-metadata, name=(string)lat, value=(string)\"\", persistent=(boolean)true",
        )
        .unwrap();
        assert!(item.persistent && item.value.is_empty());
    }

    #[test]
    fn says_what_is_missing_or_of_the_wrong_type() {
        let e = parsed("kvs-add-metadata, name=(string)a, value=(string)b").unwrap_err();
        assert!(e.starts_with("it has no field \"persist\""), "{e}");
        let e = parsed("kvs-add-metadata, value=(int)3, persist=(string)yes").unwrap_err();
        assert!(e.contains("no field \"name\""), "{e}");
        assert!(e.contains("\"value\" is not a string"), "{e}");
        assert!(e.contains("\"persist\" is not a boolean"), "{e}");
        assert!(e.contains("value=(int)3"), "the structure is quoted: {e}");
    }
}
