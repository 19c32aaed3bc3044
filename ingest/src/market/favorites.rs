//! Favorites under `/companies/{company_id}/users/{user_id}/favorites`: a user's own list of
//! assets it may see, with notes, a category and a priority; integer `favorite_id`s; one live
//! favorite per asset. Only the user itself reads and changes its favorites.

use super::assets::visible;
use super::companies::scoped_to_self;
use super::*;
use crate::commands::now_ms;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use projections::Favorite;
use schemas::{FavoriteState, FavoriteUpserted};
use serde::Deserialize;
use std::sync::Arc;
use web::roles::Action;
use web::{market, market_all, parse_json, patch_field, Caller};

fn favorite_json(f: &Favorite) -> Value {
    let s = &f.state;
    json!({
        "favorite_id": f.favorite_id,
        "asset_id": s.asset_id,
        "company_id": s.company_id,
        "user_id": s.user_id,
        "notes": s.notes,
        "category": s.category,
        "priority": s.priority,
        "date_created": rfc3339(s.created_at_ms),
        "last_updated": rfc3339(s.updated_at_ms),
    })
}

/// The caller's favorites, after checking that the path names the caller.
async fn own(
    s: &IngestState,
    caller: &Caller,
    company_id: &str,
    user_id: &str,
) -> ApiResult<Vec<Favorite>> {
    let path = (company_id, user_id);
    scoped_to_self(s, caller, path, Action::ManageFavorites, "favorites").await?;
    Ok(s.metadata.favorites(user_id).await?)
}

fn list(message: &str, rows: Vec<&Favorite>) -> Response {
    let rows: Vec<Value> = rows.into_iter().map(favorite_json).collect();
    market_all(message, rows).into_response()
}

/// `GET …/favorites`
pub async fn all(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, user_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let favs = own(&s, &caller, &company_id, &user_id).await?;
    Ok(list("Favorites retrieved", favs.iter().collect()))
}

/// `GET …/favorites/category/{category}`
pub async fn by_category(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, user_id, category)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let favs = own(&s, &caller, &company_id, &user_id).await?;
    let rows = favs
        .iter()
        .filter(|f| f.state.category.as_deref() == Some(category.as_str()))
        .collect();
    Ok(list("Favorites retrieved", rows))
}

/// `GET …/favorites/uncategorized`
pub async fn uncategorized(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, user_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let favs = own(&s, &caller, &company_id, &user_id).await?;
    Ok(list(
        "Favorites retrieved",
        favs.iter().filter(|f| f.state.category.is_none()).collect(),
    ))
}

/// `GET …/favorites/check/{asset_id}`
pub async fn check(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, user_id, asset_id)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let favs = own(&s, &caller, &company_id, &user_id).await?;
    let found = favs.iter().find(|f| f.state.asset_id == asset_id);
    Ok(market(
        "Favorite checked",
        json!({
            "asset_id": asset_id,
            "is_favorite": found.is_some(),
            "favorite_id": found.map(|f| f.favorite_id),
        }),
    )
    .into_response())
}

fn category(v: Option<&str>) -> ApiResult<Option<String>> {
    opt_text("category", v, 100)
}

fn priority(v: Option<i64>) -> ApiResult<i32> {
    match v {
        None => Ok(0),
        Some(p) if (0..=1_000).contains(&p) => Ok(p as i32),
        Some(_) => Err(ApiError::bad_request(
            "priority must be an integer from 0 to 1000",
        )),
    }
}

#[derive(Deserialize)]
struct CreateBody {
    asset_id: Option<String>,
    notes: Option<String>,
    category: Option<String>,
    priority: Option<i64>,
}

async fn save(s: &IngestState, favorite: FavoriteState) -> ApiResult<()> {
    s.command_checked(vec![EntityEvent::FavoriteUpserted(FavoriteUpserted {
        event_id: new_id(),
        favorite,
    })])
    .await
}

/// `POST …/favorites`
pub async fn create(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, user_id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let favs = own(&s, &caller, &company_id, &user_id).await?;
    let b: CreateBody = parse_json(&body)?;
    let asset_id = required("asset_id", &b.asset_id)?;
    let asset = visible(&s, &caller, asset_id).await?;
    if favs.iter().any(|f| f.state.asset_id == asset.id) {
        return Err(ApiError::conflict_on(
            "asset_id",
            "this asset is already a favorite",
        ));
    }
    let now = now_ms();
    let id = new_id();
    save(
        &s,
        FavoriteState {
            id: id.clone(),
            company_id,
            user_id: user_id.clone(),
            asset_id: asset.id,
            notes: opt_text("notes", b.notes.as_deref(), 2_000)?,
            category: category(b.category.as_deref())?,
            priority: priority(b.priority)?,
            deleted: false,
            created_at_ms: now,
            updated_at_ms: now,
        },
    )
    .await?;
    let number = s
        .metadata
        .favorites(&user_id)
        .await?
        .into_iter()
        .find(|f| f.state.id == id)
        .map(|f| f.favorite_id);
    Ok(web::market_created(
        "Favorite added",
        json!({ "favorite_id": number }),
    ))
}

async fn one(
    s: &IngestState,
    caller: &Caller,
    company_id: &str,
    user_id: &str,
    favorite_id: &str,
) -> ApiResult<Favorite> {
    let n = int_id("favorite_id", favorite_id)?;
    own(s, caller, company_id, user_id)
        .await?
        .into_iter()
        .find(|f| f.favorite_id == n)
        .ok_or_else(|| ApiError::not_found(format!("no favorite {n}")))
}

/// `GET …/favorites/{favorite_id}`
pub async fn get(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, user_id, favorite_id)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let f = one(&s, &caller, &company_id, &user_id, &favorite_id).await?;
    Ok(market("Favorite retrieved", favorite_json(&f)).into_response())
}

#[derive(Deserialize)]
struct PatchBody {
    #[serde(default, deserialize_with = "patch_field")]
    notes: Option<Option<String>>,
    #[serde(default, deserialize_with = "patch_field")]
    category: Option<Option<String>>,
    priority: Option<i64>,
}

/// `PATCH …/favorites/{favorite_id}`: notes, category, priority.
pub async fn patch(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, user_id, favorite_id)): Path<(String, String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let f = one(&s, &caller, &company_id, &user_id, &favorite_id).await?;
    let b: PatchBody = parse_json(&body)?;
    let mut next = f.state.clone();
    if let Some(n) = &b.notes {
        next.notes = opt_text("notes", n.as_deref(), 2_000)?;
    }
    if let Some(c) = &b.category {
        next.category = category(c.as_deref())?;
    }
    if b.priority.is_some() {
        next.priority = priority(b.priority)?;
    }
    if next == f.state {
        return Err(ApiError::bad_request(
            "nothing to update: send notes, category or priority",
        ));
    }
    next.updated_at_ms = now_ms().max(f.state.updated_at_ms + 1);
    save(&s, next).await?;
    Ok(market("Favorite updated", json!({ "favorite_id": f.favorite_id })).into_response())
}

/// `DELETE …/favorites/{favorite_id}`
pub async fn delete(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, user_id, favorite_id)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let f = one(&s, &caller, &company_id, &user_id, &favorite_id).await?;
    let mut next = f.state.clone();
    next.deleted = true;
    next.updated_at_ms = now_ms().max(f.state.updated_at_ms + 1);
    save(&s, next).await?;
    Ok(market("Favorite removed", json!({ "favorite_id": f.favorite_id })).into_response())
}
