//! Owns AWS's input validation: a body's JSON object and `ValidationException`'s messages.

use serde_json::{Map, Value};

/// A refused input: the error type and its message.
#[derive(Debug)]
pub(crate) struct Rejected(pub &'static str, pub String);

/// The body as the JSON object an awsJson1.1 request is; else the SerializationException.
pub(crate) fn json_object(
    parsed: Result<Value, serde_json::Error>,
) -> Result<Map<String, Value>, Rejected> {
    match parsed {
        Ok(Value::Object(obj)) => Ok(obj),
        Ok(_) => Err(Rejected(
            "SerializationException",
            "Request body must be a JSON object".to_string(),
        )),
        Err(e) => Err(Rejected(
            "SerializationException",
            format!("Request body is not valid JSON: {e}"),
        )),
    }
}

/// AWS's ValidationException message for `errors` (at least one): "N validation error(s)
/// detected: " and the errors, joined by "; ".
pub fn validation_message(errors: &[String]) -> String {
    let head = match errors.len() {
        1 => "1 validation error detected: ".to_string(),
        n => format!("{n} validation errors detected: "),
    };
    head + &errors.join("; ")
}

/// AWS's validation message for a required member that is missing or null, at path `at`.
pub fn must_not_be_null(at: &str) -> String {
    format!("Value null at '{at}' failed to satisfy constraint: Member must not be null")
}

/// String member `key` of `obj`, named `at` in AWS's validation messages (the member's path:
/// `Field`, or `List.1.member.Field` in a nested structure): missing or null is an error when
/// `required`, another type always is.
pub fn string_member(
    obj: &Map<String, Value>,
    key: &str,
    at: &str,
    required: bool,
    errors: &mut Vec<String>,
) -> Option<String> {
    match obj.get(key) {
        None | Some(Value::Null) => {
            if required {
                errors.push(must_not_be_null(at));
            }
            None
        }
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            errors.push(format!(
                "Value {} at '{at}' failed to satisfy constraint: Member must be a string",
                type_name(other)
            ));
            None
        }
    }
}

/// How AWS's validation messages name a JSON value's type.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "of type boolean",
        Value::Number(_) => "of type number",
        Value::String(_) => "of type string",
        Value::Array(_) => "of type array",
        Value::Object(_) => "of type object",
    }
}
