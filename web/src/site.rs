//! The website objects people define in the dashboard — goals, funnels, short links, pixels
//! and shares — as the API
//! takes and shows them, with their validation. They travel through the log as
//! `SiteObjectUpserted` with these fields as JSON; the read side turns them into the
//! analytics store's [`StepMatch`]es.

use crate::{ApiError, ApiResult};
use projections::{MatchKind, StepMatch};
use serde::{Deserialize, Serialize};

/// Kinds of website objects, as stored.
pub const GOAL: &str = "goal";
pub const FUNNEL: &str = "funnel";
pub const LINK: &str = "link";
pub const PIXEL: &str = "pixel";
pub const SHARE: &str = "share";
pub const REPORT: &str = "report";

/// The fewest and most steps a funnel has.
pub const MIN_STEPS: usize = 2;
pub const MAX_STEPS: usize = 8;
const MAX_NAME: usize = 100;
const MAX_MATCH: usize = 500;

/// What a goal or step matches: a page view of a path, or an event by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetType {
    PageView,
    Event,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MatchOperator {
    #[default]
    Equals,
    Contains,
}

/// How a conversion is valued: not at all, a fixed amount, or a number in the event's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ValueMode {
    #[default]
    None,
    Fixed,
    EventProperty,
}

fn to_match(kind: TargetType, value: &str, op: MatchOperator) -> StepMatch {
    StepMatch {
        kind: match kind {
            TargetType::PageView => MatchKind::PageView,
            TargetType::Event => MatchKind::Event,
        },
        value: value.to_string(),
        contains: op == MatchOperator::Contains,
    }
}

fn text(field: &str, value: &str, max: usize) -> ApiResult<String> {
    let v = value.trim();
    if v.is_empty() || v.chars().count() > max {
        return Err(ApiError::bad_request_on(
            field,
            format!("{field} must be 1 to {max} characters"),
        ));
    }
    Ok(v.to_string())
}

fn required<'a, T>(field: &str, v: &'a Option<T>) -> ApiResult<&'a T> {
    v.as_ref()
        .ok_or_else(|| ApiError::bad_request_on(field, format!("{field} is required")))
}

/// A goal's fields as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Goal {
    pub name: String,
    pub goal_type: TargetType,
    pub match_value: String,
    pub match_operator: MatchOperator,
    pub value_mode: ValueMode,
    pub fixed_value: Option<f64>,
    pub value_property_key: Option<String>,
    pub currency: String,
}

/// A goal as clients send it, for create (name, goal_type, match_value required) and update.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoalBody {
    pub name: Option<String>,
    pub goal_type: Option<TargetType>,
    pub match_value: Option<String>,
    pub match_operator: Option<MatchOperator>,
    pub value_mode: Option<ValueMode>,
    pub fixed_value: Option<f64>,
    pub value_property_key: Option<String>,
    pub currency: Option<String>,
}

impl Goal {
    pub fn create(b: GoalBody) -> ApiResult<Goal> {
        let goal = Goal {
            name: text("name", required("name", &b.name)?, MAX_NAME)?,
            goal_type: *required("goal_type", &b.goal_type)?,
            match_value: text(
                "match_value",
                required("match_value", &b.match_value)?,
                MAX_MATCH,
            )?,
            match_operator: b.match_operator.unwrap_or_default(),
            value_mode: b.value_mode.unwrap_or_default(),
            fixed_value: b.fixed_value,
            value_property_key: b.value_property_key,
            currency: b.currency.unwrap_or_else(|| "USD".into()),
        };
        goal.checked()
    }

    /// This goal with the fields `b` sends changed (its type stays).
    pub fn update(&self, b: GoalBody) -> ApiResult<Goal> {
        if b.goal_type.is_some_and(|t| t != self.goal_type) {
            return Err(ApiError::bad_request_on(
                "goal_type",
                "a goal's type cannot change; create another goal",
            ));
        }
        let mut g = self.clone();
        if let Some(n) = &b.name {
            g.name = text("name", n, MAX_NAME)?;
        }
        if let Some(m) = &b.match_value {
            g.match_value = text("match_value", m, MAX_MATCH)?;
        }
        g.match_operator = b.match_operator.unwrap_or(g.match_operator);
        if let Some(mode) = b.value_mode {
            g.value_mode = mode;
        }
        if b.fixed_value.is_some() {
            g.fixed_value = b.fixed_value;
        }
        if b.value_property_key.is_some() {
            g.value_property_key = b.value_property_key;
        }
        if let Some(c) = b.currency {
            g.currency = c;
        }
        g.checked()
    }

    fn checked(mut self) -> ApiResult<Goal> {
        self.currency = self.currency.trim().to_ascii_uppercase();
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(ApiError::bad_request_on(
                "currency",
                "currency must be a three-letter code such as USD",
            ));
        }
        match self.value_mode {
            ValueMode::None => {
                self.fixed_value = None;
                self.value_property_key = None;
            }
            ValueMode::Fixed => {
                let v = self.fixed_value.ok_or_else(|| {
                    ApiError::bad_request_on("fixed_value", "value_mode fixed needs fixed_value")
                })?;
                if !v.is_finite() || v < 0.0 {
                    return Err(ApiError::bad_request_on(
                        "fixed_value",
                        "fixed_value must be a number of at least 0",
                    ));
                }
                self.value_property_key = None;
            }
            ValueMode::EventProperty => {
                if self.goal_type != TargetType::Event {
                    return Err(ApiError::bad_request_on(
                        "value_mode",
                        "only event goals can take their value from an event property",
                    ));
                }
                let key = self.value_property_key.as_deref().unwrap_or("");
                self.value_property_key = Some(text("value_property_key", key, MAX_NAME)?);
                self.fixed_value = None;
            }
        }
        Ok(self)
    }

    /// What the analytics store counts as a conversion.
    pub fn target(&self) -> StepMatch {
        to_match(self.goal_type, &self.match_value, self.match_operator)
    }
}

/// One funnel step as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunnelStep {
    pub step_type: TargetType,
    pub match_value: String,
    pub match_operator: MatchOperator,
    pub label: String,
}

/// A funnel's fields as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Funnel {
    pub name: String,
    pub steps: Vec<FunnelStep>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepBody {
    pub step_type: Option<TargetType>,
    pub match_value: Option<String>,
    pub match_operator: Option<MatchOperator>,
    pub label: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunnelBody {
    pub name: Option<String>,
    pub steps: Option<Vec<StepBody>>,
}

fn steps(body: Vec<StepBody>) -> ApiResult<Vec<FunnelStep>> {
    if !(MIN_STEPS..=MAX_STEPS).contains(&body.len()) {
        return Err(ApiError::bad_request_on(
            "steps",
            format!("a funnel has {MIN_STEPS} to {MAX_STEPS} steps"),
        ));
    }
    body.into_iter()
        .map(|s| {
            let match_value = text(
                "steps.match_value",
                required("steps.match_value", &s.match_value)?,
                MAX_MATCH,
            )?;
            let label = match &s.label {
                Some(l) => text("steps.label", l, MAX_NAME)?,
                None => match_value.chars().take(MAX_NAME).collect(),
            };
            Ok(FunnelStep {
                step_type: *required("steps.step_type", &s.step_type)?,
                match_value,
                match_operator: s.match_operator.unwrap_or_default(),
                label,
            })
        })
        .collect()
}

impl Funnel {
    pub fn create(b: FunnelBody) -> ApiResult<Funnel> {
        Ok(Funnel {
            name: text("name", required("name", &b.name)?, MAX_NAME)?,
            steps: steps(
                b.steps
                    .ok_or_else(|| ApiError::bad_request_on("steps", "steps is required"))?,
            )?,
        })
    }

    pub fn update(&self, b: FunnelBody) -> ApiResult<Funnel> {
        let mut f = self.clone();
        if let Some(n) = &b.name {
            f.name = text("name", n, MAX_NAME)?;
        }
        if let Some(s) = b.steps {
            f.steps = steps(s)?;
        }
        Ok(f)
    }

    pub fn targets(&self) -> Vec<StepMatch> {
        self.steps
            .iter()
            .map(|s| to_match(s.step_type, &s.match_value, s.match_operator))
            .collect()
    }
}

const MAX_URL: usize = 2048;
const MAX_UTM: usize = 200;

/// An absolute `http(s)` URL of at most 2,048 characters.
pub fn web_url(field: &str, value: &str) -> ApiResult<String> {
    let v = value.trim();
    let ok = v.len() <= MAX_URL
        && url::Url::parse(v)
            .ok()
            .is_some_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
    if !ok {
        return Err(ApiError::bad_request_on(
            field,
            format!(
                "{field} must be an absolute http or https URL of at most {MAX_URL} characters"
            ),
        ));
    }
    Ok(v.to_string())
}

fn optional(field: &str, v: Option<String>, max: usize) -> ApiResult<Option<String>> {
    v.filter(|s| !s.trim().is_empty())
        .map(|s| text(field, &s, max))
        .transpose()
}

/// A short link: where `/l/{slug}` sends visitors, with the campaign tags it adds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub name: String,
    pub destination_url: String,
    pub utm_source: Option<String>,
    pub utm_medium: Option<String>,
    pub utm_campaign: Option<String>,
    pub utm_term: Option<String>,
    pub utm_content: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkBody {
    pub name: Option<String>,
    pub destination_url: Option<String>,
    /// Chosen by the client (3 to 64 of `a-z 0-9 - _`), else generated.
    pub slug: Option<String>,
    pub utm_source: Option<String>,
    pub utm_medium: Option<String>,
    pub utm_campaign: Option<String>,
    pub utm_term: Option<String>,
    pub utm_content: Option<String>,
}

/// A client-chosen slug, checked.
pub fn slug(value: &str) -> ApiResult<String> {
    let v = value.trim().to_ascii_lowercase();
    let ok = (3..=64).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !ok {
        return Err(ApiError::bad_request_on(
            "slug",
            "slug must be 3 to 64 of a-z, 0-9, - and _",
        ));
    }
    Ok(v)
}

impl Link {
    pub fn create(b: &LinkBody) -> ApiResult<Link> {
        Link {
            name: String::new(),
            destination_url: String::new(),
            utm_source: None,
            utm_medium: None,
            utm_campaign: None,
            utm_term: None,
            utm_content: None,
        }
        .with(b, true)
    }

    /// This link with the fields of `b` changed; on create, name and destination are required.
    pub fn with(&self, b: &LinkBody, create: bool) -> ApiResult<Link> {
        let mut l = self.clone();
        match (&b.name, create) {
            (Some(n), _) => l.name = text("name", n, MAX_NAME)?,
            (None, true) => return Err(ApiError::bad_request_on("name", "name is required")),
            (None, false) => {}
        }
        match (&b.destination_url, create) {
            (Some(u), _) => l.destination_url = web_url("destination_url", u)?,
            (None, true) => {
                return Err(ApiError::bad_request_on(
                    "destination_url",
                    "destination_url is required",
                ))
            }
            (None, false) => {}
        }
        for (field, given, slot) in [
            ("utm_source", &b.utm_source, &mut l.utm_source),
            ("utm_medium", &b.utm_medium, &mut l.utm_medium),
            ("utm_campaign", &b.utm_campaign, &mut l.utm_campaign),
            ("utm_term", &b.utm_term, &mut l.utm_term),
            ("utm_content", &b.utm_content, &mut l.utm_content),
        ] {
            if given.is_some() {
                *slot = optional(field, given.clone(), MAX_UTM)?;
            }
        }
        Ok(l)
    }

    /// The destination with the link's campaign tags added (replacing any of the same name).
    pub fn target_url(&self) -> String {
        let Ok(mut url) = url::Url::parse(&self.destination_url) else {
            return self.destination_url.clone();
        };
        let tags = [
            ("utm_source", &self.utm_source),
            ("utm_medium", &self.utm_medium),
            ("utm_campaign", &self.utm_campaign),
            ("utm_term", &self.utm_term),
            ("utm_content", &self.utm_content),
        ];
        let kept: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(k, _)| !tags.iter().any(|(t, v)| v.is_some() && k == t))
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        {
            let mut q = url.query_pairs_mut();
            q.clear();
            for (k, v) in &kept {
                q.append_pair(k, v);
            }
            for (k, v) in tags {
                if let Some(v) = v {
                    q.append_pair(k, v);
                }
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        url.to_string()
    }
}

/// A tracking pixel: a 1×1 GIF at `/p/{pixel_key}` that counts a view of `default_url` (or of
/// the `url` its request names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pixel {
    pub name: String,
    pub default_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PixelBody {
    pub name: Option<String>,
    pub default_url: Option<String>,
}

impl Pixel {
    pub fn with(&self, b: &PixelBody, create: bool) -> ApiResult<Pixel> {
        let mut p = self.clone();
        match (&b.name, create) {
            (Some(n), _) => p.name = text("name", n, MAX_NAME)?,
            (None, true) => return Err(ApiError::bad_request_on("name", "name is required")),
            (None, false) => {}
        }
        if let Some(u) = &b.default_url {
            p.default_url = (!u.trim().is_empty())
                .then(|| web_url("default_url", u))
                .transpose()?;
        }
        Ok(p)
    }
}

/// The event name a short link's clicks are counted under.
pub fn link_event(slug: &str) -> String {
    format!("link:{slug}")
}

/// The event name a pixel's views are counted under.
pub fn pixel_event(key: &str) -> String {
    format!("pixel:{key}")
}

/// What a saved report runs: one of the dashboard reads, over a relative or a fixed range,
/// with the same parameters the route takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportConfig {
    #[serde(default)]
    pub version: u32,
    /// `stats`, `pageviews`, `metrics` or `events`.
    pub report_type: String,
    /// `relative` (the last `relative_days` days, today included) or `custom`.
    pub date_range_type: String,
    pub relative_days: Option<u32>,
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    pub timezone: Option<String>,
    /// `metrics`: the breakdown (`type` of the route).
    pub metric_type: Option<String>,
    pub granularity: Option<String>,
    pub limit: Option<u32>,
    pub include_bots: Option<bool>,
    pub compare_mode: Option<String>,
    /// Filters by dimension name (`country`, or `filter_country`), as the routes take them.
    #[serde(default)]
    pub filters: std::collections::BTreeMap<String, String>,
}

const REPORT_TYPES: &[&str] = &["stats", "pageviews", "metrics", "events"];

impl ReportConfig {
    /// Checks what can be checked without a website (dates and values the route checks again).
    pub fn checked(mut self) -> ApiResult<ReportConfig> {
        if self.version == 0 {
            self.version = 1;
        }
        if self.version != 1 {
            return Err(ApiError::bad_request_on(
                "config.version",
                "config.version must be 1",
            ));
        }
        if !REPORT_TYPES.contains(&self.report_type.as_str()) {
            return Err(ApiError::bad_request_on(
                "config.report_type",
                "config.report_type must be stats, pageviews, metrics or events",
            ));
        }
        match self.date_range_type.as_str() {
            "relative" => {
                let days = self.relative_days.unwrap_or(7);
                if !(1..=366).contains(&days) {
                    return Err(ApiError::bad_request_on(
                        "config.relative_days",
                        "config.relative_days must be 1 to 366",
                    ));
                }
                self.relative_days = Some(days);
            }
            "custom" => {
                for (field, v) in [
                    ("config.start_date", &self.start_date),
                    ("config.end_date", &self.end_date),
                ] {
                    let ok = v
                        .as_deref()
                        .is_some_and(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok());
                    if !ok {
                        return Err(ApiError::bad_request_on(
                            field,
                            format!("{field} must be YYYY-MM-DD for a custom range"),
                        ));
                    }
                }
            }
            _ => {
                return Err(ApiError::bad_request_on(
                    "config.date_range_type",
                    "config.date_range_type must be relative or custom",
                ))
            }
        }
        if self.report_type == "metrics" && self.metric_type.is_none() {
            return Err(ApiError::bad_request_on(
                "config.metric_type",
                "a metrics report needs config.metric_type",
            ));
        }
        Ok(self)
    }

    /// The query parameters the route runs with, `today` being the website's date now.
    pub fn params(&self, today: chrono::NaiveDate) -> std::collections::HashMap<String, String> {
        let mut p = std::collections::HashMap::new();
        if self.date_range_type == "relative" {
            let days = i64::from(self.relative_days.unwrap_or(7));
            p.insert("end_date".into(), today.to_string());
            p.insert(
                "start_date".into(),
                (today - chrono::Duration::days(days - 1)).to_string(),
            );
        } else {
            for (k, v) in [
                ("start_date", &self.start_date),
                ("end_date", &self.end_date),
            ] {
                if let Some(v) = v {
                    p.insert(k.into(), v.clone());
                }
            }
        }
        let optional = [
            ("timezone", self.timezone.clone()),
            ("type", self.metric_type.clone()),
            ("granularity", self.granularity.clone()),
            ("limit", self.limit.map(|l| l.to_string())),
            ("include_bots", self.include_bots.map(|b| b.to_string())),
            ("compare_mode", self.compare_mode.clone()),
        ];
        for (k, v) in optional {
            if let Some(v) = v {
                p.insert(k.into(), v);
            }
        }
        for (k, v) in &self.filters {
            let key = if k.starts_with("filter_") {
                k.clone()
            } else {
                format!("filter_{k}")
            };
            p.insert(key, v.clone());
        }
        p
    }
}

/// A saved report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub name: String,
    pub description: Option<String>,
    pub config: ReportConfig,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportBody {
    pub name: Option<String>,
    pub description: Option<String>,
    pub config: Option<ReportConfig>,
}

impl Report {
    pub fn create(b: ReportBody) -> ApiResult<Report> {
        let config = b
            .config
            .ok_or_else(|| ApiError::bad_request_on("config", "config is required"))?
            .checked()?;
        Ok(Report {
            name: text("name", required("name", &b.name)?, MAX_NAME)?,
            description: optional("description", b.description, 1000)?,
            config,
        })
    }

    pub fn with(&self, b: ReportBody, create: bool) -> ApiResult<Report> {
        let mut r = self.clone();
        match (&b.name, create) {
            (Some(n), _) => r.name = text("name", n, MAX_NAME)?,
            (None, true) => return Err(ApiError::bad_request_on("name", "name is required")),
            (None, false) => {}
        }
        if b.description.is_some() {
            r.description = optional("description", b.description, 1000)?;
        }
        match (b.config, create) {
            (Some(c), _) => r.config = c.checked()?,
            (None, true) => return Err(ApiError::bad_request_on("config", "config is required")),
            (None, false) => {}
        }
        Ok(r)
    }
}

/// A public, read-only view of a website's dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Share {}

#[cfg(test)]
mod tests {
    use super::*;

    fn goal(json: &str) -> ApiResult<Goal> {
        Goal::create(serde_json::from_str(json).expect("body"))
    }

    #[test]
    fn goals_check_their_fields() {
        let g =
            goal(r#"{"name":" Signup ","goal_type":"event","match_value":"signup"}"#).expect("ok");
        assert_eq!((g.name.as_str(), g.currency.as_str()), ("Signup", "USD"));
        assert_eq!(
            g.target(),
            StepMatch {
                kind: MatchKind::Event,
                value: "signup".into(),
                contains: false
            }
        );
        let fixed = goal(r#"{"name":"Buy","goal_type":"page_view","match_value":"/thanks","value_mode":"fixed","fixed_value":9.5,"currency":"eur"}"#)
            .expect("fixed");
        assert_eq!(
            (fixed.fixed_value, fixed.currency.as_str()),
            (Some(9.5), "EUR")
        );
        for (bad, field) in [
            (r#"{"goal_type":"event","match_value":"x"}"#, "name"),
            (r#"{"name":"x","match_value":"x"}"#, "goal_type"),
            (
                r#"{"name":"x","goal_type":"event","match_value":"  "}"#,
                "match_value",
            ),
            (
                r#"{"name":"x","goal_type":"event","match_value":"x","value_mode":"fixed"}"#,
                "fixed_value",
            ),
            (
                r#"{"name":"x","goal_type":"event","match_value":"x","value_mode":"fixed","fixed_value":-1}"#,
                "fixed_value",
            ),
            (
                r#"{"name":"x","goal_type":"page_view","match_value":"/","value_mode":"event_property","value_property_key":"v"}"#,
                "value_mode",
            ),
            (
                r#"{"name":"x","goal_type":"event","match_value":"x","currency":"dollars"}"#,
                "currency",
            ),
        ] {
            let e = goal(bad).expect_err(bad);
            assert_eq!(e.field().as_deref(), Some(field), "{bad}");
        }
        let changed = g
            .update(serde_json::from_str(r#"{"match_operator":"contains"}"#).expect("body"))
            .expect("update");
        assert!(changed.target().contains);
        assert!(g
            .update(serde_json::from_str(r#"{"goal_type":"page_view"}"#).expect("body"))
            .is_err());
    }

    #[test]
    fn funnels_have_two_to_eight_labelled_steps() {
        let body = |steps: &str| {
            serde_json::from_str::<FunnelBody>(&format!(r#"{{"name":"F","steps":{steps}}}"#))
                .expect("body")
        };
        let f = Funnel::create(body(
            r#"[{"step_type":"page_view","match_value":"/"},{"step_type":"event","match_value":"signup","label":"Signed up"}]"#,
        ))
        .expect("ok");
        assert_eq!(f.steps[0].label, "/");
        assert_eq!(f.targets()[1].kind, MatchKind::Event);
        let one = Funnel::create(body(r#"[{"step_type":"page_view","match_value":"/"}]"#));
        assert_eq!(one.expect_err("one step").field().as_deref(), Some("steps"));
        let nine = format!(
            "[{}]",
            [r#"{"step_type":"page_view","match_value":"/"}"#; 9].join(",")
        );
        assert!(Funnel::create(body(&nine)).is_err());
    }

    #[test]
    fn links_check_urls_and_add_their_campaign_tags() {
        let body = |json: &str| serde_json::from_str::<LinkBody>(json).expect("body");
        let l = Link::create(&body(
            r#"{"name":"Spring","destination_url":"https://shop.example/sale?ref=x&utm_source=old","utm_source":"mail","utm_campaign":"spring"}"#,
        ))
        .expect("ok");
        assert_eq!(
            l.target_url(),
            "https://shop.example/sale?ref=x&utm_source=mail&utm_campaign=spring"
        );
        let plain = Link::create(&body(
            r#"{"name":"P","destination_url":"https://a.example/"}"#,
        ))
        .expect("ok");
        assert_eq!(plain.target_url(), "https://a.example/");
        for (bad, field) in [
            (
                r#"{"name":"x","destination_url":"javascript:alert(1)"}"#,
                "destination_url",
            ),
            (
                r#"{"name":"x","destination_url":"/relative"}"#,
                "destination_url",
            ),
            (r#"{"destination_url":"https://a.example/"}"#, "name"),
        ] {
            assert_eq!(
                Link::create(&body(bad)).expect_err(bad).field().as_deref(),
                Some(field)
            );
        }
        assert_eq!(slug(" Spring-26 ").expect("ok"), "spring-26");
        assert!(slug("no").is_err() && slug("a/b/c").is_err());
    }
}
