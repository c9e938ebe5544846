//! A batch as accepted: the wire request, validated into domain types. Everything downstream
//! (manifest, generate, cost) works on [`BatchSpec`], never on the raw request.

use crate::api::{BatchRequest, RowRequest};
use crate::cost::PriceTable;
use crate::domain::{
    AspectRatio, ParseError, Prompt, RefMode, RefUrl, RefUrlError, RefUrlPolicy, RunMode, SceneId, Variants,
};
use crate::limits::Limits;
use crate::problem::{ErrorCode, FieldError, Problem};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowSpec {
    pub row: u32,
    pub scene_id: SceneId,
    pub prompt: Prompt,
    pub variants: Variants,
    pub refs: Vec<RefUrl>,
    pub ref_mode: RefMode,
    pub aspect_ratio: AspectRatio,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchSpec {
    pub rows: Vec<RowSpec>,
    pub global_refs: Vec<RefUrl>,
    pub run_mode: RunMode,
    pub model: String,
}

impl BatchSpec {
    pub fn images(&self) -> u64 {
        self.rows.iter().map(|r| u64::from(r.variants.get())).sum()
    }

    pub fn row(&self, row: u32) -> Option<&RowSpec> {
        self.rows.iter().find(|r| r.row == row)
    }
}

/// What a deployment accepts, beyond the fixed limits.
#[derive(Debug, Clone)]
pub struct Acceptance<'a> {
    pub limits: Limits,
    pub ref_policy: RefUrlPolicy,
    pub prices: &'a PriceTable,
    pub default_model: &'a str,
    /// Whether this deployment has a live image model configured.
    pub live_available: bool,
    /// Whether it can submit jobs to Gemini's Batch API (run mode `bulk`).
    pub bulk_available: bool,
}

/// Most errors to list in one answer: enough to fix a selection, bounded for a hostile request.
const MAX_LISTED_ERRORS: usize = 100;

/// Parses a request body, naming the JSON path of the first shape error (`rows[3].variants`).
pub fn parse_request(body: &[u8]) -> Result<BatchRequest, Problem> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.to_string();
        let code = if message.starts_with("unknown field") { ErrorCode::UnknownField } else { ErrorCode::InvalidJson };
        let row = row_index_of_path(&field);
        Problem::from_field_errors(vec![FieldError {
            code,
            row,
            scene_id: None,
            field: if field == "." { String::new() } else { field },
            detail: message,
        }])
    })
}

fn row_index_of_path(path: &str) -> Option<usize> {
    path.strip_prefix("rows[")?.split(']').next()?.parse().ok()
}

impl Acceptance<'_> {
    /// Validates a whole request and lists every problem found, so the Sheet user can fix all rows
    /// in one go. Nothing is written by anyone until this returns `Ok`.
    pub fn validate(&self, request: &BatchRequest) -> Result<BatchSpec, Problem> {
        let mut errors = Errors::default();
        if request.rows.is_empty() {
            errors.batch(ErrorCode::BatchEmpty, "rows", "the batch has no rows".into());
            return Err(errors.into_problem());
        }
        if request.rows.len() > self.limits.max_rows {
            errors.batch(
                ErrorCode::TooManyRows,
                "rows",
                format!("the batch has {} rows; the limit is {}", request.rows.len(), self.limits.max_rows),
            );
            return Err(errors.into_problem());
        }
        let run_mode = match request.run_mode.as_deref().map(RunMode::from_wire).transpose() {
            Ok(mode) => mode.unwrap_or_default(),
            Err(e) => {
                errors.batch(ErrorCode::InvalidRunMode, "run_mode", e.0);
                RunMode::DryRun
            }
        };
        if run_mode == RunMode::Live && !self.live_available {
            errors.batch(ErrorCode::LiveNotConfigured, "run_mode", "live runs need a configured image model".into());
        }
        if run_mode == RunMode::Bulk && !self.bulk_available {
            errors.batch(
                ErrorCode::LiveNotConfigured,
                "run_mode",
                "bulk runs need Gemini's Batch API (the Developer API with GEMINI_API_KEY); use live instead".into(),
            );
        }
        let model = request.model.as_deref().unwrap_or(self.default_model);
        if !self.prices.knows(model) {
            errors.batch(
                ErrorCode::UnknownModel,
                "model",
                format!("model {model:?} is not one this deployment prices"),
            );
        }
        let global_refs = self.refs(&request.global_refs, "global_refs", None, &mut errors);
        if request.global_refs.len() > self.limits.max_refs {
            errors.batch(
                ErrorCode::TooManyRefs,
                "global_refs",
                format!("{} global references; the limit is {}", request.global_refs.len(), self.limits.max_refs),
            );
        }

        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut rows = Vec::with_capacity(request.rows.len());
        for (i, raw) in request.rows.iter().enumerate() {
            if let Some(row) = self.row(i, raw, &global_refs, &mut seen, &mut errors) {
                rows.push(row);
            }
        }
        if errors.is_empty() {
            Ok(BatchSpec { rows, global_refs, run_mode, model: model.to_owned() })
        } else {
            Err(errors.into_problem())
        }
    }

    fn row(
        &self,
        i: usize,
        raw: &RowRequest,
        global_refs: &[RefUrl],
        seen: &mut HashMap<String, usize>,
        errors: &mut Errors,
    ) -> Option<RowSpec> {
        let before = errors.len();
        let scene = Some(raw.scene_id.trim().to_owned()).filter(|s| !s.is_empty());
        let mut field_error = |code, field: &str, e: ParseError| {
            errors.row(code, i, scene.clone(), format!("rows[{i}].{field}"), e.0);
        };
        let scene_id =
            SceneId::parse(&raw.scene_id).map_err(|e| field_error(ErrorCode::InvalidSceneId, "scene_id", e)).ok();
        let prompt = Prompt::parse(&raw.prompt, self.limits.max_prompt_chars)
            .map_err(|e| field_error(ErrorCode::InvalidPrompt, "prompt", e))
            .ok();
        let variants = Variants::parse(raw.variants.unwrap_or(1))
            .map_err(|e| field_error(ErrorCode::InvalidVariants, "variants", e))
            .ok();
        // Exactly the spellings `/openapi.json` lists: a client (the Sheet, the CSV reader) says
        // what a person meant before sending, so the wire has one spelling for each value.
        let ref_mode = match raw.ref_mode.as_deref() {
            None => Some(RefMode::default()),
            Some(m) => RefMode::from_wire(m).map_err(|e| field_error(ErrorCode::InvalidRefMode, "ref_mode", e)).ok(),
        };
        let aspect_ratio = match raw.aspect_ratio.as_deref() {
            None => Some(AspectRatio::default()),
            Some(a) => AspectRatio::from_wire(a)
                .map_err(|e| field_error(ErrorCode::InvalidAspectRatio, "aspect_ratio", e))
                .ok(),
        };
        if raw.refs.len() > self.limits.max_refs {
            errors.row(
                ErrorCode::TooManyRefs,
                i,
                scene.clone(),
                format!("rows[{i}].refs"),
                format!("{} references; the limit is {}", raw.refs.len(), self.limits.max_refs),
            );
        }
        let refs = self.refs(&raw.refs, &format!("rows[{i}].refs"), Some((i, scene.clone())), errors);
        let merged: HashSet<&str> = refs.iter().chain(global_refs).map(RefUrl::as_str).collect();
        if merged.len() > self.limits.max_refs && raw.refs.len() <= self.limits.max_refs {
            errors.row(
                ErrorCode::TooManyRefs,
                i,
                scene.clone(),
                format!("rows[{i}].refs"),
                format!(
                    "{} distinct references with the global ones; the limit is {}",
                    merged.len(),
                    self.limits.max_refs
                ),
            );
        }
        if let Some(id) = &scene_id {
            // Case-insensitive: images/{batch}/{scene_id}-v1.png must not collide on a
            // case-insensitive disk (the local store on macOS).
            if let Some(first) = seen.insert(id.as_str().to_ascii_lowercase(), i) {
                errors.row(
                    ErrorCode::DuplicateSceneId,
                    i,
                    scene.clone(),
                    format!("rows[{i}].scene_id"),
                    format!("scene_id {:?} is already used by row {first}", id.as_str()),
                );
            }
        }
        if errors.len() != before {
            return None;
        }
        Some(RowSpec {
            row: u32::try_from(i).ok()?,
            scene_id: scene_id?,
            prompt: prompt?,
            variants: variants?,
            refs,
            ref_mode: ref_mode?,
            aspect_ratio: aspect_ratio?,
        })
    }

    fn refs(
        &self,
        raw: &[String],
        field: &str,
        row: Option<(usize, Option<String>)>,
        errors: &mut Errors,
    ) -> Vec<RefUrl> {
        let mut out: Vec<RefUrl> = Vec::new();
        for (j, url) in raw.iter().enumerate() {
            match RefUrl::check(url, self.ref_policy) {
                Ok(u) if out.contains(&u) => {} // the same URL twice is one reference
                Ok(u) => out.push(u),
                Err(e) => {
                    // The form is every deployment's rule (422); an internal host is this
                    // deployment's refusal (403), as when the reference is fetched.
                    let code = match e {
                        RefUrlError::Invalid(_) => ErrorCode::InvalidRefUrl,
                        RefUrlError::Forbidden(_) => ErrorCode::RefForbiddenAddress,
                    };
                    let field = format!("{field}[{j}]");
                    let detail = ParseError::from(e).0;
                    match &row {
                        Some((i, scene)) => errors.row(code, *i, scene.clone(), field, detail),
                        None => errors.batch(code, &field, detail),
                    }
                }
            }
        }
        out
    }
}

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn batch(&mut self, code: ErrorCode, field: &str, detail: String) {
        self.push(FieldError { code, row: None, scene_id: None, field: field.to_owned(), detail });
    }

    fn row(&mut self, code: ErrorCode, row: usize, scene_id: Option<String>, field: String, detail: String) {
        self.push(FieldError { code, row: Some(row), scene_id, field, detail });
    }

    fn push(&mut self, e: FieldError) {
        if self.0.len() < MAX_LISTED_ERRORS {
            self.0.push(e);
        }
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn into_problem(self) -> Problem {
        Problem::from_field_errors(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::DEFAULT_MODEL;

    fn acceptance(prices: &PriceTable) -> Acceptance<'_> {
        Acceptance {
            limits: Limits::default(),
            ref_policy: RefUrlPolicy::default(),
            prices,
            default_model: DEFAULT_MODEL,
            live_available: false,
            bulk_available: false,
        }
    }

    fn row(id: &str) -> RowRequest {
        RowRequest { scene_id: id.into(), prompt: "a cat".into(), variants: Some(2), ..Default::default() }
    }

    #[test]
    fn a_good_batch_becomes_a_spec_with_defaults() {
        let prices = PriceTable::default();
        let spec = acceptance(&prices)
            .validate(&BatchRequest { rows: vec![row("A"), row("B")], ..Default::default() })
            .expect("valid");
        assert_eq!(spec.images(), 4);
        assert_eq!(spec.run_mode, RunMode::DryRun);
        assert_eq!(spec.model, DEFAULT_MODEL);
        assert_eq!(spec.rows[1].row, 1);
    }

    #[test]
    fn every_bad_field_is_listed_with_its_row() {
        let prices = PriceTable::default();
        let mut bad = row("A");
        bad.variants = Some(4);
        bad.prompt = " ".into();
        bad.refs = vec!["http://example.com/a.png".into()];
        let p = acceptance(&prices)
            .validate(&BatchRequest { rows: vec![row("ok"), bad, row("ok")], ..Default::default() })
            .expect_err("invalid");
        let fields: Vec<_> = p.errors.iter().map(|e| (e.code, e.row, e.field.as_str())).collect();
        assert_eq!(
            fields,
            vec![
                (ErrorCode::InvalidPrompt, Some(1), "rows[1].prompt"),
                (ErrorCode::InvalidVariants, Some(1), "rows[1].variants"),
                (ErrorCode::InvalidRefUrl, Some(1), "rows[1].refs[0]"),
                (ErrorCode::DuplicateSceneId, Some(2), "rows[2].scene_id"),
            ]
        );
        assert_eq!(p.code, ErrorCode::InvalidPrompt);
    }

    #[test]
    fn row_and_global_refs_together_are_capped() {
        let prices = PriceTable::default();
        let mut r = row("A");
        r.refs = (0..4).map(|i| format!("https://example.com/{i}.png")).collect();
        let global = (2..6).map(|i| format!("https://example.com/{i}.png")).collect();
        // 0..4 and 2..6 share 2 and 3: six distinct URLs, which is the limit.
        let ok = BatchRequest { rows: vec![r.clone()], global_refs: global, ..Default::default() };
        assert!(acceptance(&prices).validate(&ok).is_ok());
        let over = BatchRequest { global_refs: vec!["https://example.com/9.png".into()], ..ok };
        let mut over = over;
        over.global_refs.extend((2..6).map(|i| format!("https://example.com/{i}.png")));
        let p = acceptance(&prices).validate(&over).expect_err("seven refs");
        assert_eq!(p.code, ErrorCode::TooManyRefs);
    }

    #[test]
    fn batch_level_limits() {
        let prices = PriceTable::default();
        let empty = acceptance(&prices).validate(&BatchRequest::default()).expect_err("empty");
        assert_eq!(empty.code, ErrorCode::BatchEmpty);
        let rows = (0..11).map(|i| row(&format!("R{i}"))).collect();
        let big = acceptance(&prices).validate(&BatchRequest { rows, ..Default::default() }).expect_err("11");
        assert_eq!((big.code, big.status), (ErrorCode::TooManyRows, 413));
        let live = BatchRequest {
            rows: vec![row("A")],
            run_mode: Some("live".into()),
            model: Some("dall-e".into()),
            ..Default::default()
        };
        let p = acceptance(&prices).validate(&live).expect_err("live without a model");
        let codes: Vec<_> = p.errors.iter().map(|e| e.code).collect();
        assert_eq!(codes, vec![ErrorCode::LiveNotConfigured, ErrorCode::UnknownModel]);
    }

    #[test]
    fn shape_errors_name_the_path_and_unknown_fields_are_refused() {
        let p =
            parse_request(br#"{"rows":[{"scene_id":"A","prompt":"p"},{"scene_id":"B","prompt":"p","colour":"red"}]}"#)
                .expect_err("unknown field");
        assert_eq!(p.code, ErrorCode::UnknownField);
        assert_eq!(p.errors[0].row, Some(1));
        let p = parse_request(br#"{"rows":[{"scene_id":"A","prompt":"p","variants":"two"}]}"#).expect_err("type");
        assert_eq!((p.code, p.errors[0].field.as_str()), (ErrorCode::InvalidJson, "rows[0].variants"));
        assert_eq!(parse_request(b"not json").expect_err("syntax").code, ErrorCode::InvalidJson);
    }
}
