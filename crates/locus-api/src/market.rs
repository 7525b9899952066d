//! The market between orgs: this node's offers and requests, the book it
//! holds, the rounds it checked, why a record traded or not, the
//! contracts it keeps, and the node-to-node proposal a customer sends a
//! provider.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use locus_agent::Node;
use locus_marketplace::{
    AccountView, Answer, ContractView, EntryView, Explained, MarketError, OfferAsk, RequestAsk,
    RoundView, SettleAction, SettleAnswer, SettleMsg,
};

use crate::error::{ApiError, ErrorBody, json_body};

fn market_error(e: MarketError) -> ApiError {
    let (status, code) = match &e {
        MarketError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid"),
        MarketError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        MarketError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
        MarketError::NoCertificate => (StatusCode::CONFLICT, "no_certificate"),
        MarketError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "store"),
    };
    ApiError::new(status, code, e.to_string())
}

/// The live offers and requests this node holds, its own included.
#[utoipa::path(
    get,
    path = "/api/v1/market/book",
    operation_id = "market_book",
    tag = "market",
    responses((status = 200, description = "The book", body = [EntryView]))
)]
pub(crate) async fn book(State(node): State<Arc<Node>>) -> Json<Vec<EntryView>> {
    Json(node.market().book())
}

/// Offer this node's spare resources (less the reserve its rules keep),
/// signed for its org, until it expires or a contract takes it.
#[utoipa::path(
    post,
    path = "/api/v1/market/offers",
    operation_id = "market_offer",
    tag = "market",
    request_body = OfferAsk,
    responses(
        (status = 201, description = "On the book", body = EntryView),
        (status = 400, description = "A field is not valid", body = ErrorBody),
        (status = 409, description = "Nothing to offer, or no certificate yet", body = ErrorBody),
    )
)]
pub(crate) async fn offer(
    State(node): State<Arc<Node>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let ask: OfferAsk = json_body(&body, "invalid")?;
    let view = node.market().offer(ask).await.map_err(market_error)?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// Ask for a unit that covers workloads and things of this node (their
/// needs measured), with constraints and a price limit.
#[utoipa::path(
    post,
    path = "/api/v1/market/requests",
    operation_id = "market_request",
    tag = "market",
    request_body = RequestAsk,
    responses(
        (status = 201, description = "On the book", body = EntryView),
        (status = 400, description = "A field is not valid, or a covered workload is unknown or not measured", body = ErrorBody),
        (status = 409, description = "Too many records, or no certificate yet", body = ErrorBody),
    )
)]
pub(crate) async fn request(
    State(node): State<Arc<Node>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let ask: RequestAsk = json_body(&body, "invalid")?;
    let view = node.market().request(ask).await.map_err(market_error)?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// Take one of this node's offers or requests off the book.
#[utoipa::path(
    delete,
    path = "/api/v1/market/book/{record}",
    operation_id = "market_withdraw",
    tag = "market",
    params(("record" = String, Path, description = "Record id (64 hex digits)", pattern = "^[0-9a-f]{64}$")),
    responses(
        (status = 204, description = "Withdrawn"),
        (status = 400, description = "Not a record id", body = ErrorBody),
        (status = 404, description = "Not one of this node's records", body = ErrorBody),
    )
)]
pub(crate) async fn withdraw(
    State(node): State<Arc<Node>>,
    Path(record): Path<String>,
) -> Result<StatusCode, ApiError> {
    node.market()
        .withdraw(&record)
        .await
        .map_err(market_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The clearing rounds this node received, newest first, with the reason
/// it refused any.
#[utoipa::path(
    get,
    path = "/api/v1/market/rounds",
    operation_id = "market_rounds",
    tag = "market",
    responses((status = 200, description = "Rounds", body = [RoundView]))
)]
pub(crate) async fn rounds(State(node): State<Arc<Node>>) -> Json<Vec<RoundView>> {
    Json(node.market().rounds())
}

/// Why a record traded or did not in the last round that had it, and
/// what this node did about it.
#[utoipa::path(
    get,
    path = "/api/v1/market/explain/{record}",
    operation_id = "market_explain",
    tag = "market",
    params(("record" = String, Path, description = "Record id (64 hex digits)", pattern = "^[0-9a-f]{64}$")),
    responses(
        (status = 200, description = "The explanation", body = Explained),
        (status = 400, description = "Not a record id", body = ErrorBody),
        (status = 404, description = "Unknown here", body = ErrorBody),
    )
)]
pub(crate) async fn explain(
    State(node): State<Arc<Node>>,
    Path(record): Path<String>,
) -> Result<Json<Explained>, ApiError> {
    node.market()
        .explain(&record)
        .map(Json)
        .map_err(market_error)
}

/// The contracts this node is a party or the arbitrator to.
#[utoipa::path(
    get,
    path = "/api/v1/market/contracts",
    operation_id = "list_contracts",
    tag = "market",
    responses((status = 200, description = "Contracts", body = [ContractView]))
)]
pub(crate) async fn contracts(State(node): State<Arc<Node>>) -> Json<Vec<ContractView>> {
    Json(node.market().contracts())
}

/// One contract, with its signed form.
#[utoipa::path(
    get,
    path = "/api/v1/market/contracts/{contract}",
    operation_id = "inspect_contract",
    tag = "market",
    params(("contract" = String, Path, description = "Contract id, or its first hex digits", pattern = "^[0-9a-f]{1,64}$")),
    responses(
        (status = 200, description = "The contract", body = ContractView),
        (status = 400, description = "The prefix names several", body = ErrorBody),
        (status = 404, description = "Not on this node", body = ErrorBody),
    )
)]
pub(crate) async fn contract(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
) -> Result<Json<ContractView>, ApiError> {
    node.market().contract(&id).map(Json).map_err(market_error)
}

/// Node to node: a customer proposes the terms of a match to its
/// provider, who answers with the countersigned contract (stored first)
/// or the reason it does not sign.
#[utoipa::path(
    post,
    path = "/api/v1/market/proposals",
    operation_id = "market_propose",
    tag = "market",
    request_body(content = Object, description = "A proposal signed by the customer (locus_market::Proposal)"),
    responses(
        (status = 200, description = "Signed or rejected", body = Answer),
        (status = 400, description = "Not a valid proposal to this node", body = ErrorBody),
    )
)]
pub(crate) async fn propose(
    State(node): State<Arc<Node>>,
    body: Bytes,
) -> Result<Json<Answer>, ApiError> {
    let proposal: locus_market::Proposal = json_body(&body, "invalid")?;
    node.market()
        .consider(proposal)
        .await
        .map(Json)
        .map_err(market_error)
}

/// Act on a contract's settlement: the provider settles it now
/// (`{"action":"settle"}`: it closes and the statement goes to the
/// customer); the customer countersigns (`{"action":"sign"}`) or disputes
/// (`{"action":"dispute","reason":"…"}`) a statement awaiting its answer.
#[utoipa::path(
    post,
    path = "/api/v1/market/contracts/{contract}/settlement",
    operation_id = "settle_contract",
    tag = "market",
    params(("contract" = String, Path, description = "Contract id, or its first hex digits", pattern = "^[0-9a-f]{1,64}$")),
    request_body(content = SettleAction, description = "What to do"),
    responses(
        (status = 200, description = "The contract, with its settlement", body = ContractView),
        (status = 400, description = "Not a valid action", body = ErrorBody),
        (status = 404, description = "Not on this node", body = ErrorBody),
        (status = 409, description = "Not this node's part, or nothing to answer", body = ErrorBody),
    )
)]
pub(crate) async fn settle(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<ContractView>, ApiError> {
    let action: SettleAction = json_body(&body, "invalid")?;
    node.market()
        .settle_action(&id, action)
        .await
        .map(Json)
        .map_err(market_error)
}

/// Node to node: a settlement message (a provider's statement, a
/// customer's reply, a stake to hold or release, a case to rule).
#[utoipa::path(
    post,
    path = "/api/v1/market/settlement",
    operation_id = "market_settlement",
    tag = "market",
    request_body(content = Object, description = "A settlement message (locus_marketplace::SettleMsg)"),
    responses(
        (status = 200, description = "The answer", body = SettleAnswer),
        (status = 400, description = "Not a valid message to this node", body = ErrorBody),
        (status = 404, description = "The contract is not here", body = ErrorBody),
        (status = 409, description = "Out of order (try again)", body = ErrorBody),
    )
)]
pub(crate) async fn settlement(
    State(node): State<Arc<Node>>,
    body: Bytes,
) -> Result<Json<SettleAnswer>, ApiError> {
    let msg: SettleMsg = json_body(&body, "invalid")?;
    node.market()
        .on_settlement(msg)
        .await
        .map(Json)
        .map_err(market_error)
}

/// This node's org's accounts: its balance, its position toward each org
/// it has receipts with, the stakes held, and the signed chains that
/// prove them (`locus verify account`).
#[utoipa::path(
    get,
    path = "/api/v1/market/account",
    operation_id = "market_account",
    tag = "market",
    responses(
        (status = 200, description = "The accounts", body = AccountView),
        (status = 409, description = "No certificate of its org yet", body = ErrorBody),
    )
)]
pub(crate) async fn account(State(node): State<Arc<Node>>) -> Result<Json<AccountView>, ApiError> {
    node.market().account().map(Json).map_err(market_error)
}
