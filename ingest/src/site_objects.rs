//! A website's goals, funnels, short links, pixels and reports (`/api/websites/{id}/goals…`,
//! `/funnels…`, `/links…`, `/pixels…`, `/reports…`) and its public share: entities through the log like
//! websites, as `SiteObjectUpserted` carrying the fields `web::site` validates. One generic
//! set of handlers serves every kind through [`Kind`]. Reading needs the dashboard right,
//! changing them the website right; another company's website or object is "not found".

use crate::commands::{existing, now_ms, rfc3339};
use crate::market::endpoints::base_url;
use crate::market::new_id;
use crate::IngestState;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use projections::{SiteObjectScope, Website};
use rand::RngCore;
use schemas::{EntityEvent, SiteObjectState, SiteObjectUpserted};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use std::sync::Arc;
use web::roles::Action;
use web::site::{
    Funnel, FunnelBody, Goal, GoalBody, Link, LinkBody, Pixel, PixelBody, Report, ReportBody,
    Share, FUNNEL, GOAL, LINK, PIXEL, REPORT, SHARE,
};
use web::{data, parse_json, ApiError, ApiResult, Caller};

/// One kind of website object: how it is made, changed and shown.
pub trait Kind: Serialize + DeserializeOwned + Send + Sync + 'static {
    const KIND: &'static str;
    type Body: DeserializeOwned + Send;
    /// The new object's fields and public key (a link's slug, a pixel's key), if it has one.
    fn create(body: Self::Body) -> ApiResult<(Self, Option<String>)>;
    fn update(&self, body: Self::Body) -> ApiResult<Self>;
    /// The object as answers show it; `base` is this server's URL as the client reached it.
    fn show(o: &SiteObjectState, fields: &Self, base: &str) -> Value;
    /// The object in a list (by default as shown alone).
    fn summary(o: &SiteObjectState, fields: &Self, base: &str) -> Value {
        Self::show(o, fields, base)
    }
}

/// `n` random bytes as lowercase hex: generated slugs and keys.
pub(crate) fn random_hex(n: usize) -> String {
    let mut raw = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut raw);
    hex::encode(raw)
}

fn stamps(o: &SiteObjectState, mut v: Value) -> Value {
    v["id"] = json!(o.id);
    v["website_id"] = json!(o.website_id);
    v["created_at"] = json!(rfc3339(o.created_at_ms));
    v["updated_at"] = json!(rfc3339(o.updated_at_ms));
    v
}

impl Kind for Goal {
    const KIND: &'static str = GOAL;
    type Body = GoalBody;
    fn create(body: GoalBody) -> ApiResult<(Self, Option<String>)> {
        Ok((Goal::create(body)?, None))
    }
    fn update(&self, body: GoalBody) -> ApiResult<Self> {
        Goal::update(self, body)
    }
    fn show(o: &SiteObjectState, g: &Goal, _: &str) -> Value {
        stamps(o, serde_json::to_value(g).unwrap_or_default())
    }
}

impl Kind for Funnel {
    const KIND: &'static str = FUNNEL;
    type Body = FunnelBody;
    fn create(body: FunnelBody) -> ApiResult<(Self, Option<String>)> {
        Ok((Funnel::create(body)?, None))
    }
    fn update(&self, body: FunnelBody) -> ApiResult<Self> {
        Funnel::update(self, body)
    }
    fn show(o: &SiteObjectState, f: &Funnel, _: &str) -> Value {
        let steps: Vec<Value> = f
            .steps
            .iter()
            .enumerate()
            .map(|(i, st)| {
                json!({
                    "id": format!("{}-{}", o.id, i + 1),
                    "funnel_id": o.id,
                    "step_order": i + 1,
                    "step_type": st.step_type,
                    "match_value": st.match_value,
                    "match_operator": st.match_operator,
                    "label": st.label,
                    "created_at": rfc3339(o.updated_at_ms),
                })
            })
            .collect();
        stamps(o, json!({ "name": f.name, "steps": steps }))
    }
    fn summary(o: &SiteObjectState, f: &Funnel, _: &str) -> Value {
        stamps(o, json!({ "name": f.name, "step_count": f.steps.len() }))
    }
}

impl Kind for Link {
    const KIND: &'static str = LINK;
    type Body = LinkBody;
    fn create(body: LinkBody) -> ApiResult<(Self, Option<String>)> {
        let slug = match &body.slug {
            Some(s) => web::site::slug(s)?,
            None => random_hex(4),
        };
        Ok((Link::create(&body)?, Some(slug)))
    }
    fn update(&self, body: LinkBody) -> ApiResult<Self> {
        if body.slug.is_some() {
            return Err(ApiError::bad_request_on(
                "slug",
                "a link's slug cannot change (its tracking URL is out there); create another link",
            ));
        }
        self.with(&body, false)
    }
    fn show(o: &SiteObjectState, l: &Link, base: &str) -> Value {
        let slug = o.public_key.clone().unwrap_or_default();
        let mut v = serde_json::to_value(l).unwrap_or_default();
        v["slug"] = json!(slug);
        v["tracking_url"] = json!(format!("{base}/l/{slug}"));
        stamps(o, v)
    }
}

impl Kind for Pixel {
    const KIND: &'static str = PIXEL;
    type Body = PixelBody;
    fn create(body: PixelBody) -> ApiResult<(Self, Option<String>)> {
        let blank = Pixel {
            name: String::new(),
            default_url: None,
        };
        Ok((blank.with(&body, true)?, Some(random_hex(12))))
    }
    fn update(&self, body: PixelBody) -> ApiResult<Self> {
        self.with(&body, false)
    }
    fn show(o: &SiteObjectState, p: &Pixel, base: &str) -> Value {
        let key = o.public_key.clone().unwrap_or_default();
        let url = format!("{base}/p/{key}");
        let mut v = serde_json::to_value(p).unwrap_or_default();
        v["pixel_key"] = json!(key);
        v["pixel_url"] = json!(url);
        v["snippet"] = json!(format!(
            "<img src=\"{url}\" width=\"1\" height=\"1\" alt=\"\" style=\"display:none\">"
        ));
        stamps(o, v)
    }
}

impl Kind for Report {
    const KIND: &'static str = REPORT;
    type Body = ReportBody;
    fn create(body: ReportBody) -> ApiResult<(Self, Option<String>)> {
        Ok((Report::create(body)?, None))
    }
    fn update(&self, body: ReportBody) -> ApiResult<Self> {
        self.with(body, false)
    }
    fn show(o: &SiteObjectState, r: &Report, _: &str) -> Value {
        stamps(o, serde_json::to_value(r).unwrap_or_default())
    }
}

/// The caller's website, checked for `action`.
async fn site(s: &IngestState, caller: &Caller, id: &str, action: Action) -> ApiResult<Website> {
    caller.require(action)?;
    existing(s, caller, id).await
}

fn fields<T: DeserializeOwned>(o: &SiteObjectState) -> ApiResult<T> {
    serde_json::from_str(&o.body_json).map_err(ApiError::internal)
}

/// One live object of kind `K` on `site`, with its fields.
async fn object<K: Kind>(
    s: &IngestState,
    site: &Website,
    id: &str,
) -> ApiResult<(SiteObjectState, K)> {
    let o = s
        .metadata
        .site_objects_where(SiteObjectScope::One, K::KIND, id)
        .await?
        .into_iter()
        .find(|o| o.website_id == site.id)
        .ok_or_else(|| ApiError::not_found(format!("no {} with id {id:?}", K::KIND)))?;
    let f = fields(&o)?;
    Ok((o, f))
}

/// Appends the object's new state and waits until it is projected (or refused).
async fn save(s: &IngestState, o: SiteObjectState) -> ApiResult<()> {
    s.command_checked(vec![EntityEvent::SiteObjectUpserted(SiteObjectUpserted {
        event_id: new_id(),
        object: o,
    })])
    .await
}

fn state<T: Serialize>(
    site: &Website,
    kind: &str,
    public_key: Option<String>,
    fields: &T,
) -> ApiResult<SiteObjectState> {
    let now = now_ms();
    Ok(SiteObjectState {
        id: new_id(),
        kind: kind.to_string(),
        website_id: site.id.clone(),
        company_id: site.company_id.clone().unwrap_or_default(),
        public_key,
        body_json: serde_json::to_string(fields).map_err(ApiError::internal)?,
        deleted: false,
        created_at_ms: now,
        updated_at_ms: now,
    })
}

/// `GET /api/websites/{id}/<kind>s`: oldest first.
pub async fn list<K: Kind>(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let site = site(&s, &caller, &id, Action::ReadDashboards).await?;
    let base = base_url(&headers);
    let mut out = Vec::new();
    for o in s
        .metadata
        .site_objects_where(SiteObjectScope::Website, K::KIND, &site.id)
        .await?
    {
        out.push(K::summary(&o, &fields::<K>(&o)?, &base));
    }
    Ok(data(json!(out)).into_response())
}

/// `POST /api/websites/{id}/<kind>s` → `201`
pub async fn create<K: Kind>(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let site = site(&s, &caller, &id, Action::ManageWebsites).await?;
    let (fields, key) = K::create(parse_json::<K::Body>(&body)?)?;
    let o = state(&site, K::KIND, key, &fields)?;
    save(&s, o.clone()).await?;
    let shown = K::show(&o, &fields, &base_url(&headers));
    Ok((StatusCode::CREATED, data(shown)).into_response())
}

/// `GET /api/websites/{id}/<kind>s/{object_id}`
pub async fn get_one<K: Kind>(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((id, object_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let site = site(&s, &caller, &id, Action::ReadDashboards).await?;
    let (o, f) = object::<K>(&s, &site, &object_id).await?;
    Ok(data(K::show(&o, &f, &base_url(&headers))).into_response())
}

/// `PUT` or `PATCH /api/websites/{id}/<kind>s/{object_id}`: the fields sent change.
pub async fn update<K: Kind>(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((id, object_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let site = site(&s, &caller, &id, Action::ManageWebsites).await?;
    let (mut o, f) = object::<K>(&s, &site, &object_id).await?;
    let fields = f.update(parse_json::<K::Body>(&body)?)?;
    o.body_json = serde_json::to_string(&fields).map_err(ApiError::internal)?;
    o.updated_at_ms = now_ms().max(o.updated_at_ms);
    save(&s, o.clone()).await?;
    Ok(data(K::show(&o, &fields, &base_url(&headers))).into_response())
}

/// `DELETE /api/websites/{id}/<kind>s/{object_id}`
pub async fn delete<K: Kind>(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((id, object_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let site = site(&s, &caller, &id, Action::ManageWebsites).await?;
    let (mut o, _) = object::<K>(&s, &site, &object_id).await?;
    o.deleted = true;
    o.updated_at_ms = now_ms().max(o.updated_at_ms);
    save(&s, o).await?;
    Ok(data(json!({ "id": object_id, "deleted": true })).into_response())
}

/// The website's live share, if any.
async fn live_share(s: &IngestState, site: &Website) -> ApiResult<Option<SiteObjectState>> {
    Ok(s.metadata
        .site_objects_where(SiteObjectScope::Website, SHARE, &site.id)
        .await?
        .into_iter()
        .next())
}

fn share_json(o: &SiteObjectState, base: &str) -> Value {
    let id = o.public_key.clone().unwrap_or_default();
    json!({
        "share_id": id,
        "share_url": format!("{base}/api/share/{id}"),
        "created_at": rfc3339(o.created_at_ms),
    })
}

/// `POST /api/websites/{id}/share` → `201 {share_id, share_url}`: a new public, read-only view
/// of the website's dashboard; it replaces the one before (whose links stop working).
pub async fn create_share(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let site = site(&s, &caller, &id, Action::ManageWebsites).await?;
    let mut events = Vec::new();
    if let Some(mut old) = live_share(&s, &site).await? {
        old.deleted = true;
        old.updated_at_ms = now_ms().max(old.updated_at_ms);
        events.push(old);
    }
    let o = state(&site, SHARE, Some(random_hex(16)), &Share {})?;
    events.push(o.clone());
    s.command_checked(
        events
            .into_iter()
            .map(|object| {
                EntityEvent::SiteObjectUpserted(SiteObjectUpserted {
                    event_id: new_id(),
                    object,
                })
            })
            .collect(),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        data(share_json(&o, &base_url(&headers))),
    )
        .into_response())
}

/// `GET /api/websites/{id}/share`: the live share, or `404`.
pub async fn get_share(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let site = site(&s, &caller, &id, Action::ReadDashboards).await?;
    let o = live_share(&s, &site)
        .await?
        .ok_or_else(|| ApiError::not_found("this website is not shared"))?;
    Ok(data(share_json(&o, &base_url(&headers))).into_response())
}

/// `DELETE /api/websites/{id}/share`: the public view stops answering.
pub async fn delete_share(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let site = site(&s, &caller, &id, Action::ManageWebsites).await?;
    let mut o = live_share(&s, &site)
        .await?
        .ok_or_else(|| ApiError::not_found("this website is not shared"))?;
    o.deleted = true;
    o.updated_at_ms = now_ms().max(o.updated_at_ms);
    save(&s, o).await?;
    Ok(data(json!({ "shared": false })).into_response())
}
