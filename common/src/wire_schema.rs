//! What `/openapi.json` says a request may hold: every pattern, length, enum and item limit the
//! handlers enforce, so that a generated client, the Sheet and the server validate alike.
//!
//! The request types (`api.rs`) point their fields at the functions below (`schema_with`), which
//! build the schemas from the same constants the domain's parsers check. What depends on the
//! deployment (rows per batch, the prompt limit, the models priced, which reference URLs are
//! accepted) is written into the document when a function's router is built: [`state_deployment`].
//!
//! Two rules span several fields and JSON Schema cannot say them; they are in the descriptions:
//! scene ids are unique within a batch (ignoring case), and a row's references together with the
//! global ones name at most `max_refs` distinct URLs.

use crate::cost::PriceTable;
use crate::domain::{AspectRatio, Prompt, RefUrl, RefUrlPolicy, RunMode, SceneId};
use crate::limits::Limits;
use serde_json::{Value, json};
use utoipa::openapi::schema::{Array, ArrayBuilder, Object, ObjectBuilder, SchemaType, Type};
use utoipa::openapi::{OpenApi, Ref};

/// The component every batch reference points at (`RefUrl::pattern` of the deployment).
pub const REF_URL: &str = "RefUrl";
/// The component the reference library's set points at (no local files, whatever the deployment).
pub const LIBRARY_REF_URL: &str = "LibraryRefUrl";

fn nullable(ty: Type) -> SchemaType {
    SchemaType::from_iter([ty, Type::Null])
}

fn nullable_enum(values: impl IntoIterator<Item = String>, description: &str) -> Object {
    let mut listed: Vec<Value> = values.into_iter().map(Value::String).collect();
    listed.push(Value::Null);
    ObjectBuilder::new()
        .schema_type(nullable(Type::String))
        .enum_values(Some(listed))
        .description(Some(description))
        .build()
}

pub fn scene_id() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(SceneId::PATTERN))
        .min_length(Some(1))
        .max_length(Some(SceneId::MAX_LEN))
        .description(Some(
            "1 to 64 letters, digits, '-', '_' or '.', not starting with '.'. Unique within the batch, ignoring case.",
        ))
        .examples([json!("BATCH-001")])
        .build()
}

pub fn prompt() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(Prompt::pattern()))
        .min_length(Some(1))
        .max_length(Some(Limits::default().max_prompt_chars))
        .description(Some(
            "Not blank; no control characters but tab, line feed and carriage return. The limit counts what is sent.",
        ))
        .examples([json!("product on clean bg")])
        .build()
}

fn ref_urls(component: &str, description: &str) -> Array {
    ArrayBuilder::new()
        .items(Ref::from_schema_name(component))
        .max_items(Some(Limits::default().max_refs))
        .description(Some(description))
        .build()
}

pub fn row_refs() -> Array {
    ref_urls(
        REF_URL,
        "Reference images, sent before the global ones. With the global references, at most max_refs distinct URLs.",
    )
}

pub fn global_refs() -> Array {
    ref_urls(REF_URL, "References added to every row after the row's own.")
}

pub fn set_refs() -> Array {
    ref_urls(LIBRARY_REF_URL, "Reference URLs, in the order they are merged after a row's own.")
}

pub fn run_mode() -> Object {
    nullable_enum(
        [RunMode::DryRun, RunMode::Live, RunMode::Bulk].map(|m| m.as_str().to_owned()),
        "dry_run when absent. Live runs cost money; bulk runs go through Gemini's Batch API at half the live \
         price, with results within a day.",
    )
}

pub fn ref_mode() -> Object {
    nullable_enum(
        ["style_only".to_owned(), "style_and_composition".to_owned()],
        "style_only when absent: how the model uses the references.",
    )
}

pub fn aspect_ratio() -> Object {
    nullable_enum(AspectRatio::wire_values(), "1:1 when absent.")
}

pub fn model() -> Object {
    nullable_enum(models(&PriceTable::default()), "The deployment's default model when absent.")
}

fn models(prices: &PriceTable) -> Vec<String> {
    prices.list().into_iter().map(|m| m.model).collect()
}

fn ref_url_schema(pattern: String, description: &str) -> Value {
    json!({
        "type": "string",
        "maxLength": RefUrl::MAX_LEN,
        "pattern": pattern,
        "description": description,
    })
}

/// What a deployment accepts beyond the fixed rules.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub limits: Limits,
    pub ref_policy: RefUrlPolicy,
    pub prices: PriceTable,
}

/// Writes the deployment's limits into the schemas present in `doc` (a function's router holds
/// only its own operations' schemas; absent ones are left alone).
pub fn state_deployment(doc: &mut OpenApi, deployment: &Deployment) {
    let mut value = serde_json::to_value(&*doc).expect("an OpenAPI document is JSON");
    idempotency_keys(&mut value);
    let Some(schemas) = value.pointer_mut("/components/schemas").and_then(Value::as_object_mut) else {
        *doc = serde_json::from_value(value).expect("the document reads back");
        return;
    };
    let limits = deployment.limits;
    let mut set = |schema: &str, path: &str, new: Value| {
        if let Some(slot) = schemas.get_mut(schema).and_then(|s| s.pointer_mut(path)) {
            *slot = new;
        }
    };
    set("BatchRequest", "/properties/rows/maxItems", json!(limits.max_rows));
    set("BatchRequest", "/properties/global_refs/maxItems", json!(limits.max_refs));
    let mut models: Vec<Value> = models(&deployment.prices).into_iter().map(Value::String).collect();
    models.push(Value::Null);
    set("BatchRequest", "/properties/model/enum", Value::Array(models));
    set("RowRequest", "/properties/prompt/maxLength", json!(limits.max_prompt_chars));
    set("RowRequest", "/properties/refs/maxItems", json!(limits.max_refs));
    let library_policy = RefUrlPolicy { allow_local_files: false, ..deployment.ref_policy };
    set(
        "FetchRefRequest",
        "/properties/url",
        ref_url_schema(RefUrl::http_pattern(library_policy), "An https:// URL of a public image."),
    );
    if schemas.contains_key("BatchRequest") {
        schemas.insert(
            REF_URL.to_owned(),
            ref_url_schema(
                RefUrl::pattern(deployment.ref_policy),
                "An https:// URL on a public host name, or gs://BUCKET/refs/{sha256} (the reference library) or \
                 gs://BUCKET/images/{batch}/{scene_id}-v{n}.png (an image of one of your own batches) in this \
                 deployment's bucket. Internal host names are refused with 403.",
            ),
        );
    }
    if schemas.contains_key("RefSetRequest") {
        schemas.insert(
            LIBRARY_REF_URL.to_owned(),
            ref_url_schema(RefUrl::pattern(library_policy), "A reference URL as a batch would accept it."),
        );
    }
    *doc = serde_json::from_value(value).expect("the document reads back");
}

/// Every `Idempotency-Key` header parameter: what `idempotent_control::check_key` accepts (422
/// otherwise). utoipa's `params(...)` takes a pattern only as a literal, so it is written here.
fn idempotency_keys(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else { return };
    let operations = paths.values_mut().filter_map(Value::as_object_mut).flat_map(|item| item.values_mut());
    let parameters = operations.filter_map(|op| op.get_mut("parameters")).filter_map(Value::as_array_mut).flatten();
    for parameter in parameters {
        if parameter["in"] == "header"
            && parameter["name"].as_str().is_some_and(|n| n.eq_ignore_ascii_case("idempotency-key"))
        {
            parameter["schema"] = json!({
                "type": "string",
                "minLength": 1,
                "maxLength": 255,
                "pattern": crate::idempotent_control::KEY_PATTERN,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deployment_is_written_into_its_schemas() {
        #[derive(utoipa::ToSchema)]
        #[allow(dead_code)]
        struct BatchRequest {
            #[schema(max_items = 10)]
            rows: Vec<String>,
        }
        let mut doc = utoipa::openapi::OpenApiBuilder::new()
            .components(Some(utoipa::openapi::ComponentsBuilder::new().schema_from::<BatchRequest>().build()))
            .build();
        let limits = Limits { max_rows: 3, ..Limits::default() };
        let policy = RefUrlPolicy { allow_private: false, allow_local_files: true };
        state_deployment(&mut doc, &Deployment { limits, ref_policy: policy, prices: PriceTable::default() });
        let json = serde_json::to_value(&doc).expect("json");
        assert_eq!(json.pointer("/components/schemas/BatchRequest/properties/rows/maxItems"), Some(&json!(3)));
        assert_eq!(
            json.pointer("/components/schemas/RefUrl/pattern").and_then(Value::as_str),
            Some(RefUrl::pattern(policy).as_str())
        );
        assert!(json.pointer("/components/schemas/LibraryRefUrl").is_none(), "no set schema in this router");
    }
}
