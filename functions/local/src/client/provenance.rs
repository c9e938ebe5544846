//! `assetgen provenance FILE.png|gs://…|URL`: how an image was made, read from the image itself
//! (its `iTXt` chunks) and checked against what the pipeline recorded — the sidecar and the row
//! state's SHA-256 of the stored bytes. A file that was edited, re-encoded or swapped no longer
//! matches, and says so.
//!
//! Where the record is checked: a `gs://` image in the bucket itself (the caller's Google
//! credentials, or `STORAGE_EMULATOR_HOST`); an image link at the relay that served it, with the
//! link's own signature (`/v1/images/…?sig=` → `/v1/provenance/…?sig=`); a local file, or any
//! other URL, at `--server` as the signed-in user.

use super::http::{Api, Refusal};
use super::{Console, EXIT_OK, EXIT_REFUSED, print_json_line, refused};
use anyhow::Context as _;
use assetgen_common::domain::{BatchId, SceneId};
use assetgen_common::provenance::view::{self, ProvenanceView};
use assetgen_common::provenance::{Provenance, png_text};
use assetgen_common::store::{GcsStore, ObjectStore};
use serde::Serialize;
use sha2::{Digest, Sha256};
use url::Url;

/// The image's SHA-256 is not the one the row state records (or the embedded record is not the
/// sidecar's): the file is not the image the pipeline stored.
pub const EXIT_MISMATCH: u8 = 1;

#[derive(clap::Args, Debug)]
pub struct ProvenanceArgs {
    /// A PNG file, a gs://BUCKET/images/… object, or an image link (https://…/v1/images/…?sig=…)
    pub image: String,
    /// Print one JSON object instead of text
    #[arg(long)]
    pub json: bool,
}

/// What the command found, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Report {
    source: String,
    sha256: String,
    bytes: u64,
    provenance: Provenance,
    #[serde(skip_serializing_if = "Option::is_none")]
    recorded: Option<ProvenanceView>,
    check: Check,
}

#[derive(Debug, Serialize)]
struct Check {
    /// The image is the one the row state records, and carries the sidecar's record.
    matches: bool,
    detail: String,
}

pub async fn run(api: &Api, args: ProvenanceArgs, c: &mut Console<'_>) -> anyhow::Result<u8> {
    let source = args.image.trim().to_owned();
    let bytes = match read_image(api, &source).await? {
        Ok(bytes) => bytes,
        Err(refusal) => return refused(&refusal, None, c),
    };
    let provenance = match png_text::read(&bytes) {
        Ok(Some(p)) => p,
        Ok(None) => {
            writeln!(
                c.err,
                "error: {source} is a PNG without provenance: it was not made by assetgen, was made before images \
                 carried their provenance, or its text chunks were stripped (image editors and optimisers do that)"
            )?;
            return Ok(EXIT_REFUSED);
        }
        Err(e) => {
            writeln!(c.err, "error: {source} carries no provenance: {e}")?;
            return Ok(EXIT_REFUSED);
        }
    };
    let recorded = match recorded(api, &source, &provenance).await? {
        Ok(view) => view,
        Err(refusal) => return refused(&refusal, None, c),
    };
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let check = check(&sha256, &provenance, &recorded);
    let report = Report { source, sha256, bytes: bytes.len() as u64, provenance, recorded: Some(recorded), check };
    let code = if report.check.matches { EXIT_OK } else { EXIT_MISMATCH };
    if args.json {
        print_json_line(c.out, &report)?;
    } else {
        write!(c.out, "{}", render(&report))?;
    }
    if !report.check.matches {
        writeln!(c.err, "error: {}", report.check.detail)?;
    }
    Ok(code)
}

async fn read_image(api: &Api, source: &str) -> anyhow::Result<Result<Vec<u8>, Refusal>> {
    if let Some((bucket, name)) = gs_object(source) {
        let store = gcs(&bucket).await?;
        let object = store.get(&name).await.with_context(|| format!("cannot read {source}"))?;
        return Ok(Ok(object.body.to_vec()));
    }
    if let Some(url) = web_url(source) {
        return api.get_bytes(url).await;
    }
    let bytes = std::fs::read(source).with_context(|| format!("cannot read {source}"))?;
    Ok(Ok(bytes))
}

async fn recorded(api: &Api, source: &str, p: &Provenance) -> anyhow::Result<Result<ProvenanceView, Refusal>> {
    if let Some((bucket, _)) = gs_object(source) {
        let store = gcs(&bucket).await?;
        return match view::load(&store, &p.batch_id, &p.scene_id, p.variant).await {
            Ok(view) => Ok(Ok(view)),
            Err(problem) => Ok(Err(Refusal {
                url: source.to_owned(),
                status: problem.status,
                body: problem.detail.clone(),
                problem: Some(Box::new(problem)),
            })),
        };
    }
    api.get(provenance_url(api, source, &p.batch_id, &p.scene_id, p.variant)).await
}

/// The route that holds the record: beside an image link at its own server and with its own
/// query (the signature, or a page link's token, opens both); else at `--server`.
fn provenance_url(api: &Api, source: &str, batch: &BatchId, scene: &SceneId, variant: u8) -> Url {
    let (b, s, v) = (batch.to_string(), scene.to_string(), variant.to_string());
    if let Some(mut url) = web_url(source) {
        let segments: Vec<String> = url.path_segments().map(|s| s.map(str::to_owned).collect()).unwrap_or_default();
        let n = segments.len();
        if n >= 5
            && segments[n - 5] == "v1"
            && segments[n - 4] == "images"
            && segments[n - 3..] == [b.clone(), s.clone(), v.clone()]
        {
            if let Ok(mut path) = url.path_segments_mut() {
                path.pop().pop().pop().pop().extend(["provenance", &b, &s, &v]);
            }
            return url;
        }
    }
    api.url(&["v1", "provenance", &b, &s, &v])
}

fn check(sha256: &str, embedded: &Provenance, view: &ProvenanceView) -> Check {
    if &view.sidecar.provenance != embedded {
        return Check {
            matches: false,
            detail: format!(
                "the record inside the image is not its sidecar's ({}): the image was not stored by this pipeline as is",
                view.sidecar.image.object
            ),
        };
    }
    match &view.recorded {
        Some(r) if r.sha256 == sha256 => Check {
            matches: true,
            detail: format!(
                "the image's SHA-256 is the one row {} of batch {} records",
                embedded.row, embedded.batch_id
            ),
        },
        Some(r) => Check {
            matches: false,
            detail: format!(
                "the image's SHA-256 {sha256} is not the row state's {} ({} bytes): this file was changed after it was \
                 stored (edited, re-encoded or swapped); the stored original is {}",
                r.sha256, r.bytes, embedded.object
            ),
        },
        None => Check {
            matches: false,
            detail: format!(
                "row {} of batch {} records no image for variant {}: the row was retried or is still running",
                embedded.row, embedded.batch_id, embedded.variant
            ),
        },
    }
}

fn gs_object(source: &str) -> Option<(String, String)> {
    let rest = source.strip_prefix("gs://")?;
    let (bucket, name) = rest.split_once('/')?;
    (!bucket.is_empty() && !name.is_empty()).then(|| (bucket.to_owned(), name.to_owned()))
}

fn web_url(source: &str) -> Option<Url> {
    Url::parse(source).ok().filter(|u| matches!(u.scheme(), "http" | "https"))
}

async fn gcs(bucket: &str) -> anyhow::Result<GcsStore> {
    let emulator = std::env::var("STORAGE_EMULATOR_HOST").ok().filter(|h| !h.trim().is_empty());
    GcsStore::connect(bucket, emulator.as_deref()).await.with_context(|| {
        format!("cannot open gs://{bucket} (Google credentials: `gcloud auth application-default login`)")
    })
}

fn render(r: &Report) -> String {
    let p = &r.provenance;
    let mut out = String::new();
    let mut line = |label: &str, value: String| out.push_str(&format!("{label:<12}{value}\n"));
    line("image", format!("{} ({} bytes, sha256 {})", r.source, r.bytes, r.sha256));
    line("batch", format!("{}, row {}, scene {}, variant {}", p.batch_id, p.row, p.scene_id, p.variant));
    line("user", p.user.to_string());
    let version = p.model_version.as_deref().map(|v| format!(", version {v}")).unwrap_or_default();
    line("model", format!("{}{version} ({})", p.model, serde_plain(&p.run_mode)));
    line("response", p.response_id.clone().unwrap_or_else(|| "(the model gave no id)".into()));
    line("aspect", format!("{}, refs {}", p.aspect_ratio, serde_plain(&p.ref_mode)));
    let ledger =
        p.ledger.as_ref().map(|l| format!(", spent by {}", l.object)).unwrap_or_else(|| ", nothing spent".into());
    line("price", format!("${:.3}{ledger}", p.price.usd));
    line("submitted", rfc3339(p.submitted_at));
    line("requested", rfc3339(p.requested_at));
    line("generated", rfc3339(p.generated_at));
    line("attempt", format!("{} (retry round {})", p.attempt, p.round));
    if let Some(id) = &p.request_id {
        line("request", id.clone());
    }
    line("software", p.software.clone());
    line("references", if p.refs.is_empty() { "none".into() } else { String::new() });
    for reference in &p.refs {
        let sha = reference.sha256.as_deref().unwrap_or("-");
        let dup = reference.duplicate_of.as_deref().map(|d| format!(" (same bytes as {d})")).unwrap_or_default();
        out.push_str(&format!("  {:<17}{} sha256 {sha}{dup}\n", serde_plain(&reference.outcome), reference.url));
    }
    out.push_str("prompt\n");
    for text in p.prompt.lines() {
        out.push_str(&format!("  {text}\n"));
    }
    let verdict = if r.check.matches { "OK" } else { "MISMATCH" };
    out.push_str(&format!("{:<12}{verdict}: {}\n", "check", r.check.detail));
    out
}

/// A unit enum as its JSON name (`style_only`, `used`…).
fn serde_plain<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

fn rfc3339(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}
