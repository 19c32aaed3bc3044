//! Asset parameters, as pure functions: the declared list (`asset_schema.params`: name, type
//! string|int|float|bool|date|timestamp, required, default, allowed values) checked at write
//! time, and a caller's values checked and converted at execution time. A bad or missing value
//! is a `400` naming the parameter. Values become typed driver binds, never SQL text.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sources::model::Param;
use std::collections::HashMap;
use web::{ApiError, ApiResult};

const KINDS: &[&str] = &["string", "int", "float", "bool", "date", "timestamp"];
const MAX_PARAMS: usize = 32;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub default: Option<Value>,
    #[serde(default)]
    pub allowed: Option<Vec<Value>>,
}

/// Checks a declared parameter list.
pub fn parse_specs(value: &Value) -> ApiResult<Vec<ParamSpec>> {
    let specs: Vec<ParamSpec> = serde_json::from_value(value.clone()).map_err(|e| {
        ApiError::bad_request(format!(
            "asset_schema.params must be a list of {{name, type, required?, default?, allowed?}}: {e}"
        ))
    })?;
    if specs.len() > MAX_PARAMS {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_PARAMS} parameters"
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for s in &specs {
        let valid_name = !s.name.is_empty()
            && s.name.len() <= 64
            && s.name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && s.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            return Err(ApiError::bad_request(format!(
                "parameter name {:?} must be letters, digits and _, starting with a letter",
                s.name
            )));
        }
        if !seen.insert(s.name.as_str()) {
            return Err(ApiError::bad_request(format!(
                "parameter {} is declared twice",
                s.name
            )));
        }
        if !KINDS.contains(&s.kind.as_str()) {
            return Err(ApiError::bad_request(format!(
                "parameter {}: type {:?} is not one of {}",
                s.name,
                s.kind,
                KINDS.join(", ")
            )));
        }
        if let Some(d) = &s.default {
            convert(s, d)?;
        }
        for a in s.allowed.iter().flatten() {
            convert(s, a)?;
        }
    }
    Ok(specs)
}

fn bad(spec: &ParamSpec, why: &str) -> ApiError {
    ApiError::bad_request(format!("parameter {}: {why}", spec.name)).with_details(
        serde_json::json!({
            "parameter": spec.name,
        }),
    )
}

/// One value (JSON, or a string from a query string) as the declared type.
fn convert(spec: &ParamSpec, v: &Value) -> ApiResult<Param> {
    let text = v.as_str();
    let p = match spec.kind.as_str() {
        "string" => match v {
            Value::String(s) if s.chars().count() <= 1_000 => Param::Str(s.clone()),
            Value::String(_) => return Err(bad(spec, "at most 1000 characters")),
            Value::Number(n) => Param::Str(n.to_string()),
            _ => return Err(bad(spec, "expected a string")),
        },
        "int" => v
            .as_i64()
            .or_else(|| text.and_then(|t| t.trim().parse().ok()))
            .map(Param::Int)
            .ok_or_else(|| bad(spec, "expected an integer"))?,
        "float" => v
            .as_f64()
            .or_else(|| text.and_then(|t| t.trim().parse().ok()))
            .filter(|f: &f64| f.is_finite())
            .map(Param::Float)
            .ok_or_else(|| bad(spec, "expected a number"))?,
        "bool" => match (v, text) {
            (Value::Bool(b), _) => Param::Bool(*b),
            (_, Some("true")) => Param::Bool(true),
            (_, Some("false")) => Param::Bool(false),
            _ => return Err(bad(spec, "expected true or false")),
        },
        "date" => text
            .and_then(|t| chrono::NaiveDate::parse_from_str(t.trim(), "%Y-%m-%d").ok())
            .map(Param::Date)
            .ok_or_else(|| bad(spec, "expected a date YYYY-MM-DD"))?,
        _ => text
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t.trim()).ok())
            .map(|t| Param::Timestamp(t.with_timezone(&chrono::Utc)))
            .ok_or_else(|| bad(spec, "expected an RFC 3339 timestamp"))?,
    };
    Ok(p)
}

/// The value of every declared parameter for one execution: given, else the default, else
/// null if optional. Unknown names, missing required ones and values outside `allowed` are 400.
pub fn bind_values(
    specs: &[ParamSpec],
    given: &Map<String, Value>,
) -> ApiResult<HashMap<String, Param>> {
    if let Some(unknown) = given.keys().find(|k| !specs.iter().any(|s| &s.name == *k)) {
        return Err(
            ApiError::bad_request(format!("unknown parameter {unknown}"))
                .with_details(serde_json::json!({ "parameter": unknown })),
        );
    }
    let mut out = HashMap::with_capacity(specs.len());
    for s in specs {
        let value = match given
            .get(&s.name)
            .filter(|v| !v.is_null())
            .or(s.default.as_ref())
        {
            Some(v) => {
                let p = convert(s, v)?;
                if let Some(allowed) = &s.allowed {
                    let ok = allowed.iter().any(|a| convert(s, a).is_ok_and(|x| x == p));
                    if !ok {
                        return Err(bad(s, "value is not one of the allowed values"));
                    }
                }
                p
            }
            None if s.required => return Err(bad(s, "is required")),
            None => Param::Null,
        };
        out.insert(s.name.clone(), value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn specs() -> Vec<ParamSpec> {
        parse_specs(&json!([
            {"name": "region", "type": "string", "required": true, "allowed": ["north", "south"]},
            {"name": "min", "type": "int", "default": 0},
            {"name": "day", "type": "date"},
            {"name": "on", "type": "bool"}
        ]))
        .expect("specs")
    }

    fn given(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("object")
    }

    #[test]
    fn declared_lists_are_checked() {
        for bad in [
            json!([{"name": "1x", "type": "int"}]),
            json!([{"name": "a", "type": "money"}]),
            json!([{"name": "a", "type": "int"}, {"name": "a", "type": "int"}]),
            json!([{"name": "a", "type": "int", "default": "many"}]),
            json!([{"name": "a", "type": "int", "extra": 1}]),
            json!({"name": "a"}),
        ] {
            assert!(parse_specs(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_are_converted_defaulted_and_checked() {
        let s = specs();
        let v = bind_values(
            &s,
            &given(json!({"region": "north", "min": "5", "day": "2026-03-01"})),
        )
        .expect("ok");
        assert_eq!(v["region"], Param::Str("north".into()));
        assert_eq!(v["min"], Param::Int(5));
        assert_eq!(v["on"], Param::Null);
        assert!(matches!(v["day"], Param::Date(_)));
        let d = bind_values(&s, &given(json!({"region": "south"}))).expect("default");
        assert_eq!(d["min"], Param::Int(0));
        for (body, named) in [
            (json!({}), "region"),
            (json!({"region": "east"}), "region"),
            (json!({"region": "north", "min": "x"}), "min"),
            (json!({"region": "north", "day": "01/03/2026"}), "day"),
            (json!({"region": "north", "nope": 1}), "nope"),
        ] {
            let e = bind_values(&s, &given(body.clone())).expect_err("bad");
            assert_eq!(
                e.details.as_ref().map(|d| d["parameter"].clone()),
                Some(json!(named)),
                "{body}"
            );
        }
    }

    #[test]
    fn an_injection_attempt_is_just_a_string_value() {
        let s = parse_specs(&json!([{"name": "name", "type": "string"}])).expect("specs");
        let v = bind_values(&s, &given(json!({"name": "x'; DROP TABLE t; --"}))).expect("ok");
        assert_eq!(v["name"], Param::Str("x'; DROP TABLE t; --".into()));
    }
}
