//! The client commands of `assetgen`: `submit`, `estimate`, `status`. They talk to any deployment —
//! `assetgen serve` on this machine or the functions on Cloud Run — over the HTTP contract.
//!
//! Exit codes: 0 done (and, for a followed batch, every row succeeded); 1 a followed batch ended
//! with failed or cancelled rows; 2 the input or the request was refused (CSV, problem document);
//! 3 the event stream was lost for good (the batch itself goes on: see `assetgen status`); 4 a live
//! submit was not confirmed (answered no, or no terminal to ask on and no `--yes`): nothing was
//! submitted.

mod confirm;
mod csv_rows;
mod follow;
mod http;
mod problem_text;
mod provenance;
mod table;

use anyhow::Context as _;
use assetgen_common::api::{
    BatchRequest, BatchView, ControlTokenResponse, EstimateResponse, ManagerTokenResponse, SubmitResponse,
};
use assetgen_common::domain::RunMode;
use confirm::Asker;
use follow::{FollowError, Mode, Retry};
use http::{Api, Refusal};
use indicatif::ProgressDrawTarget;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const EXIT_OK: u8 = 0;
const EXIT_REFUSED: u8 = 2;
const EXIT_STREAM_LOST: u8 = 3;
const EXIT_NOT_CONFIRMED: u8 = 4;

/// Where the client commands send their requests, and as whom.
#[derive(clap::Args)]
pub struct ClientOptions {
    /// Server base URL
    #[arg(long, env = "ASSETGEN_URL", default_value = "http://127.0.0.1:8080", global = true)]
    pub server: String,
    /// Dev identity sent as X-Assetgen-User (local `serve` only)
    #[arg(long, env = "ASSETGEN_USER", global = true)]
    pub user: Option<String>,
    /// Google OIDC ID token sent as `Authorization: Bearer` (cloud deployments, or `serve` with
    /// ASSETGEN_AUTH=oidc); also read from ASSETGEN_TOKEN; never printed
    #[arg(long, visible_alias = "token", env = "ASSETGEN_ID_TOKEN", hide_env_values = true, global = true)]
    pub id_token: Option<String>,
}

/// By hand, so that the ID token never reaches a log line or a panic message.
impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("server", &self.server)
            .field("user", &self.user)
            .field("id_token", &self.id_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum ClientCommand {
    /// Submit the rows of a CSV file as one batch (columns: scene_id,prompt,variants,refs,ref_mode[,aspect_ratio]).
    /// With --live it first shows the estimate and the budget left and asks (on a terminal) before
    /// spending; --yes submits without asking (scripts); without a terminal and without --yes it
    /// submits nothing and exits with 4
    Submit(SubmitArgs),
    /// Price the rows of a CSV file without submitting them
    Estimate(EstimateArgs),
    /// Show a batch's rows and images
    Status(StatusArgs),
    /// Cancel a batch's rows that have not started (their money is freed)
    Cancel(StatusArgs),
    /// Queue a batch's failed rows again (holds their price first; stored images are kept)
    Retry(StatusArgs),
    /// Print the batch's progress page link with a one-hour control token (its owner only): the
    /// page can then cancel and retry; forward the plain page link instead to let others watch
    Page(StatusArgs),
    /// Print the reference manager's link (the /refs page), signed in as you for an hour: upload
    /// and fetch references and set the global ones from a browser
    Refs(RefsArgs),
    /// Show how an image was made (prompt, references, model and response id, price, user, times)
    /// from the PNG's own provenance, and check that it is the image the batch recorded; exits 1 when
    /// it is not, 2 when it carries no provenance
    Provenance(provenance::ProvenanceArgs),
}

#[derive(clap::Args, Debug)]
pub struct RefsArgs {
    /// Print the JSON answer (token, expiry, page) instead of the link
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct SubmitArgs {
    /// CSV file, one row per scene; local reference paths are relative to its directory
    pub file: PathBuf,
    /// Follow progress until the batch ends; the exit code then says whether every row succeeded
    #[arg(long)]
    pub follow: bool,
    /// Print JSON (with --follow: one line per event) instead of text
    #[arg(long)]
    pub json: bool,
    /// Submit a live batch without asking first (scripts): its estimate is held from today's budget
    #[arg(long, short = 'y')]
    pub yes: bool,
    #[command(flatten)]
    pub batch: BatchOptions,
}

#[derive(clap::Args, Debug)]
pub struct EstimateArgs {
    /// CSV file, one row per scene
    pub file: PathBuf,
    /// Print the JSON answer instead of text
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub batch: BatchOptions,
}

#[derive(clap::Args, Debug)]
pub struct BatchOptions {
    /// Reference image added to every row, after the row's own (URL or local path); repeatable
    #[arg(long = "global-ref", value_name = "URL")]
    pub global_refs: Vec<String>,
    /// Also add the references tagged as the global set on the server's /refs page
    #[arg(long)]
    pub global_set: bool,
    /// Generate real images with the live model (costs money); a dry run otherwise
    #[arg(long)]
    pub live: bool,
    /// Generate real images through Gemini's Batch API: half the live price, results within a day
    #[arg(long, conflicts_with = "live")]
    pub bulk: bool,
    /// The run mode by name: dry_run, live or bulk (the same as no flag, --live, --bulk)
    #[arg(long, value_name = "MODE", conflicts_with_all = ["live", "bulk"])]
    pub run_mode: Option<String>,
    /// Image model (`estimate` lists the ones the server offers)
    #[arg(long)]
    pub model: Option<String>,
}

impl BatchOptions {
    /// The run mode asked for; a name the server does not know is sent as given, for its 422.
    pub fn run_mode(&self) -> String {
        match &self.run_mode {
            Some(mode) => RunMode::parse(mode).map_or_else(|_| mode.clone(), |m| m.as_str().to_owned()),
            None if self.bulk => RunMode::Bulk.as_str().to_owned(),
            None if self.live => RunMode::Live.as_str().to_owned(),
            None => RunMode::DryRun.as_str().to_owned(),
        }
    }

    /// Whether the batch will cost money (live or bulk): `submit` then asks first.
    pub fn costs_money(&self) -> bool {
        RunMode::parse(&self.run_mode()).is_ok_and(RunMode::costs_money)
    }
}

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// The batch id printed by `submit`
    pub batch_id: String,
    /// Print the JSON answer instead of the table
    #[arg(long)]
    pub json: bool,
}

/// Runs one client command against the server in `options`.
pub async fn run(options: ClientOptions, command: ClientCommand) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    let mut console = Console {
        out: &mut out,
        err: &mut err,
        progress: ProgressDrawTarget::stderr,
        data_dir: PathBuf::from(table::LOCAL_DATA_DIR),
        retry: Retry::default(),
        asker: Asker::detect(),
    };
    execute(&options, command, &mut console).await.map(ExitCode::from)
}

/// Where a command writes, so that tests can read it.
struct Console<'a> {
    out: &'a mut (dyn Write + Send),
    err: &'a mut (dyn Write + Send),
    /// Where a progress bar is drawn (hidden in tests; indicatif hides it when stderr is no terminal).
    progress: fn() -> ProgressDrawTarget,
    /// The local server's object directory, for showing images as local files.
    data_dir: PathBuf,
    retry: Retry,
    /// Where a live submit asks for confirmation, if anywhere.
    asker: Asker,
}

async fn execute(options: &ClientOptions, command: ClientCommand, console: &mut Console<'_>) -> anyhow::Result<u8> {
    let api = Api::new(options)?;
    match command {
        ClientCommand::Submit(args) => submit(&api, args, console).await,
        ClientCommand::Estimate(args) => estimate(&api, args, console).await,
        ClientCommand::Status(args) => status(&api, args, console).await,
        ClientCommand::Cancel(args) => control(&api, "cancel", args, console).await,
        ClientCommand::Retry(args) => control(&api, "retry", args, console).await,
        ClientCommand::Page(args) => page(&api, args, console).await,
        ClientCommand::Refs(args) => refs_manager(&api, args, console).await,
        ClientCommand::Provenance(args) => provenance::run(&api, args, console).await,
    }
}

/// `refs`: a reference manager token for the signed-in user, as the `/refs` link that carries it.
async fn refs_manager(api: &Api, args: RefsArgs, c: &mut Console<'_>) -> anyhow::Result<u8> {
    let Some(issued) = accepted(manager_token(api).await?, None, c)? else { return Ok(EXIT_REFUSED) };
    let grants = "signs the reference manager in as you";
    print_token_link(c, args.json, &issued, &issued.page, grants, issued.expires_at)
}

/// `page`: a control token for the batch (its owner only), as the page link that carries it.
async fn page(api: &Api, args: StatusArgs, c: &mut Console<'_>) -> anyhow::Result<u8> {
    let Some(batch_id) = batch_id(&args, c)? else { return Ok(EXIT_REFUSED) };
    let url = api.url(&["v1", "batches", batch_id, "control-token"]);
    let answer: Result<ControlTokenResponse, Refusal> = api.post(url, &serde_json::json!({})).await?;
    let Some(issued) = accepted(answer, None, c)? else { return Ok(EXIT_REFUSED) };
    let grants = "can cancel and retry the batch";
    print_token_link(c, args.json, &issued, &issued.page, grants, issued.expires_at)
}

/// A link that carries a token: with `--json` the whole answer; else the link alone on stdout (for
/// scripts and `open`), and on stderr what it `grants` and until when, since whoever holds it can.
fn print_token_link<T: Serialize>(
    c: &mut Console<'_>,
    json: bool,
    issued: &T,
    link: &str,
    grants: &str,
    expires_at: time::OffsetDateTime,
) -> anyhow::Result<u8> {
    if json {
        print_json_line(c.out, issued)?;
        return Ok(EXIT_OK);
    }
    writeln!(c.out, "{link}")?;
    writeln!(c.err, "this link {grants} until {expires_at}; keep it to yourself")?;
    Ok(EXIT_OK)
}

/// A reference manager token for the caller (`POST /v1/refs/manager-token` on submit).
async fn manager_token(api: &Api) -> anyhow::Result<Result<ManagerTokenResponse, Refusal>> {
    api.post(api.url(&["v1", "refs", "manager-token"]), &serde_json::json!({})).await
}

async fn submit(api: &Api, args: SubmitArgs, c: &mut Console<'_>) -> anyhow::Result<u8> {
    let Some((mut request, lines)) = read_request(&args.file, &args.batch, c)? else { return Ok(EXIT_REFUSED) };
    if args.batch.costs_money() && !args.yes && !c.asker.can_ask() {
        // Before any request: a script that forgot --yes learns it at once, and spends nothing.
        let mode = args.batch.run_mode();
        writeln!(
            c.err,
            "error: a {mode} batch costs money, and `submit --{mode}` asks before it spends; there is no terminal \
             to ask on (standard input is not one), so nothing was submitted.\n\
             Add --yes to submit without asking (`assetgen estimate {} --{mode}` shows the price first).",
            args.file.display()
        )?;
        return Ok(EXIT_NOT_CONFIRMED);
    }
    if args.batch.global_set && accepted(add_global_set(api, &mut request).await?, None, c)?.is_none() {
        return Ok(EXIT_REFUSED);
    }
    if args.batch.costs_money() && !args.yes {
        let answer = confirm_live(api, &request, &lines, c).await?;
        if answer != EXIT_OK {
            return Ok(answer);
        }
    }
    let answer: Result<SubmitResponse, Refusal> = api.post(api.url(&["v1", "batches"]), &request).await?;
    let Some(response) = accepted(answer, Some(&lines), c)? else { return Ok(EXIT_REFUSED) };
    if args.json {
        print_json_line(c.out, &response)?;
    } else {
        let (e, b) = (&response.estimate, &response.budget);
        writeln!(
            c.out,
            "batch {} accepted: {} images, ${:.2} (${:.2} if live); budget left ${:.2} of ${:.2}",
            response.batch_id, e.images, e.usd, e.usd_if_live, b.remaining_usd, b.limit_usd
        )?;
        writeln!(c.out, "page:   {}", response.links.page)?;
        writeln!(c.out, "events: {}", response.links.events)?;
        c.out.flush()?;
    }
    if !args.follow {
        return Ok(EXIT_OK);
    }

    let events = api.resolve(&response.links.events)?;
    let mode = if args.json { Mode::Json } else { Mode::Progress((c.progress)()) };
    match follow::follow(api, &events, mode, c.retry, c.out, c.err).await {
        Ok(view) => {
            if !args.json {
                write!(c.out, "{}", table::render(&view, &c.data_dir))?;
            }
            Ok(table::exit_code(&view))
        }
        Err(FollowError::Refused(refusal)) => refused(&refusal, None, c),
        Err(FollowError::GaveUp { last_error, after }) => {
            writeln!(
                c.err,
                "error: lost the event stream for {:.0} s ({last_error}); the batch goes on — see `assetgen status {}`",
                after.as_secs_f64(),
                response.batch_id
            )?;
            Ok(EXIT_STREAM_LOST)
        }
        Err(FollowError::Failed(e)) => Err(e),
    }
}

/// Shows what a live batch will cost and the budget left, and asks before anything is spent.
/// `EXIT_OK` to go on; otherwise the exit code (nothing was submitted).
async fn confirm_live(api: &Api, request: &BatchRequest, lines: &[u64], c: &mut Console<'_>) -> anyhow::Result<u8> {
    let answer: Result<EstimateResponse, Refusal> = api.post(api.url(&["v1", "estimate"]), request).await?;
    let Some(response) = accepted(answer, Some(lines), c)? else { return Ok(EXIT_REFUSED) };
    let (e, after) = (&response.estimate, &response.budget_after);
    // The estimate is what a submit holds; the budget before it is what is left after plus that.
    let left_now = after.remaining_usd + e.usd;
    let per_image = if e.images > 0 { e.usd / e.images as f64 } else { 0.0 };
    // A bulk image costs half a live one: $0.0195 needs its fourth digit.
    let (mode, digits) = if request.run_mode.as_deref() == Some("bulk") {
        ("bulk batch (Gemini's Batch API)", 4)
    } else {
        ("live batch", 3)
    };
    writeln!(c.err, "{mode}: {} images at ${:.*} = ${:.2}", e.images, digits, per_image, e.usd)?;
    writeln!(
        c.err,
        "budget:     ${left_now:.2} left of ${:.2} today (spent ${:.2}, held ${:.2}); ${:.2} after this batch",
        after.limit_usd,
        after.spent_usd,
        after.reserved_usd,
        after.remaining_usd.max(0.0)
    )?;
    // Half a cent of slack for the float sums; the server's hold decides to the micro-dollar.
    if after.remaining_usd < -0.005 {
        writeln!(
            c.err,
            "error: this batch costs ${:.2}, more than the ${left_now:.2} left of today's budget; nothing was \
             submitted. Submit fewer rows or variants, or wait for tomorrow's budget.",
            e.usd
        )?;
        return Ok(EXIT_REFUSED);
    }
    let question = format!("Submit and spend up to ${:.2} of today's budget?", e.usd);
    if c.asker.confirm(question).await? {
        Ok(EXIT_OK)
    } else {
        writeln!(c.err, "not submitted: nothing was spent")?;
        Ok(EXIT_NOT_CONFIRMED)
    }
}

async fn estimate(api: &Api, args: EstimateArgs, c: &mut Console<'_>) -> anyhow::Result<u8> {
    let Some((mut request, lines)) = read_request(&args.file, &args.batch, c)? else { return Ok(EXIT_REFUSED) };
    if args.batch.global_set && accepted(add_global_set(api, &mut request).await?, None, c)?.is_none() {
        return Ok(EXIT_REFUSED);
    }
    let answer: Result<EstimateResponse, Refusal> = api.post(api.url(&["v1", "estimate"]), &request).await?;
    let Some(response) = accepted(answer, Some(&lines), c)? else { return Ok(EXIT_REFUSED) };
    if args.json {
        print_json_line(c.out, &response)?;
        return Ok(EXIT_OK);
    }
    let (e, b) = (&response.estimate, &response.budget_after);
    writeln!(c.out, "images:       {}", e.images)?;
    let mode = args.batch.run_mode();
    let label = match mode.as_str() {
        "live" => String::new(),
        "bulk" => " (bulk: Gemini's Batch API, half price, within a day)".to_owned(),
        "dry_run" => " (dry run)".to_owned(),
        other => format!(" ({other})"),
    };
    writeln!(c.out, "cost:         ${:.2}{label}", e.usd)?;
    writeln!(c.out, "if live:      ${:.2}", e.usd_if_live)?;
    if mode != "live" {
        writeln!(c.out, "if bulk:      ${:.2}", e.usd_if_bulk)?;
    }
    writeln!(
        c.out,
        "budget after: ${:.2} left of ${:.2} (spent ${:.2}, reserved ${:.2})",
        b.remaining_usd, b.limit_usd, b.spent_usd, b.reserved_usd
    )?;
    if !response.models.is_empty() {
        let models: Vec<String> = response
            .models
            .iter()
            .map(|m| format!("{} (${:.3}/image, ${:.4} bulk)", m.model, m.usd_per_image, m.usd_per_image_bulk))
            .collect();
        writeln!(c.out, "models:       {}", models.join(", "))?;
    }
    Ok(EXIT_OK)
}

async fn status(api: &Api, args: StatusArgs, c: &mut Console<'_>) -> anyhow::Result<u8> {
    let Some(batch_id) = batch_id(&args, c)? else { return Ok(EXIT_REFUSED) };
    let answer: Result<BatchView, Refusal> = api.get(api.url(&["v1", "batches", batch_id])).await?;
    let Some(view) = accepted(answer, None, c)? else { return Ok(EXIT_REFUSED) };
    if args.json {
        print_json_line(c.out, &view)?;
    } else {
        write!(c.out, "{}", table::render(&view, &c.data_dir))?;
    }
    Ok(EXIT_OK)
}

/// `cancel` or `retry`: POST to the batch's action and say which rows it changed.
async fn control(api: &Api, action: &str, args: StatusArgs, c: &mut Console<'_>) -> anyhow::Result<u8> {
    let Some(batch_id) = batch_id(&args, c)? else { return Ok(EXIT_REFUSED) };
    let url = api.url(&["v1", "batches", batch_id, action]);
    let answer: Result<serde_json::Value, Refusal> = api.post(url, &serde_json::json!({})).await?;
    let Some(outcome) = accepted(answer, None, c)? else { return Ok(EXIT_REFUSED) };
    if args.json {
        print_json_line(c.out, &outcome)?;
        return Ok(EXIT_OK);
    }
    let rows: Vec<String> =
        outcome["rows"].as_array().into_iter().flatten().filter_map(|r| r.as_u64()).map(|r| r.to_string()).collect();
    let verb = if action == "cancel" { "cancelled" } else { "queued again" };
    if rows.is_empty() {
        writeln!(c.out, "batch {batch_id}: no rows {verb}")?;
    } else {
        writeln!(c.out, "batch {batch_id}: rows {} {verb}", rows.join(", "))?;
    }
    if let Some(usd) = outcome["reserved_usd"].as_f64().filter(|u| *u > 0.0) {
        writeln!(c.out, "held ${usd:.3} from today's budget for the retried images")?;
    }
    writeln!(c.out, "follow it with: assetgen status {batch_id}")?;
    Ok(EXIT_OK)
}

/// The request body from a CSV file and the batch options, with the CSV line of each row; `None`
/// (after saying why on stderr) when the input cannot be used.
fn read_request(
    file: &Path,
    options: &BatchOptions,
    c: &mut Console<'_>,
) -> anyhow::Result<Option<(BatchRequest, Vec<u64>)>> {
    let batch = match csv_rows::read_file(file) {
        Ok(batch) => batch,
        Err(e) => {
            writeln!(c.err, "error: {e}")?;
            return Ok(None);
        }
    };
    let mut global_refs = Vec::new();
    for raw in options.global_refs.iter().flat_map(|r| csv_rows::split_refs(r)) {
        // Local paths in --global-ref are relative to the current directory.
        match csv_rows::resolve_ref(raw, Path::new(".")) {
            Ok(url) => global_refs.push(url),
            Err(message) => {
                writeln!(c.err, "error: --global-ref: {message}")?;
                return Ok(None);
            }
        }
    }
    let request = BatchRequest {
        rows: batch.rows,
        global_refs,
        run_mode: Some(options.run_mode()),
        model: options.model.as_deref().map(str::trim).filter(|m| !m.is_empty()).map(str::to_owned),
    };
    Ok(Some((request, batch.lines)))
}

/// Appends the server's tagged global reference set (`GET /v1/refs/sets/global`) to the batch's
/// global references, after those given with `--global-ref`.
async fn add_global_set(api: &Api, request: &mut BatchRequest) -> anyhow::Result<Result<(), Refusal>> {
    let set: serde_json::Value = match api.get(api.url(&["v1", "refs", "sets", "global"])).await? {
        Ok(set) => set,
        // In the cloud `--server` is submit, and the reference library is the relay's: submit
        // issues a manager token whose page link says where the library lives.
        Err(refusal) if refusal.status == 404 => match global_set_from_library(api).await? {
            Ok(set) => set,
            Err(library_refusal) => return Ok(Err(library_refusal)),
        },
        Err(refusal) => return Ok(Err(refusal)),
    };
    for url in set["refs"].as_array().into_iter().flatten().filter_map(|u| u.as_str()) {
        if !request.global_refs.iter().any(|r| r == url) {
            request.global_refs.push(url.to_owned());
        }
    }
    Ok(Ok(()))
}

/// The global set read from the reference library named by a manager token's page link
/// (`{relay}/refs#token=…`), with that token.
async fn global_set_from_library(api: &Api) -> anyhow::Result<Result<serde_json::Value, Refusal>> {
    let issued = match manager_token(api).await? {
        Ok(issued) => issued,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let mut library = api.resolve(&issued.page)?;
    library.set_fragment(None);
    library.set_query(None);
    if let Ok(mut path) = library.path_segments_mut() {
        path.pop_if_empty().pop();
    }
    let library = api.elsewhere_with_bearer(library, &issued.token)?;
    library.get(library.url(&["v1", "refs", "sets", "global"])).await
}

/// The batch id a command was given, or `None` once an empty one was reported.
fn batch_id<'a>(args: &'a StatusArgs, c: &mut Console<'_>) -> anyhow::Result<Option<&'a str>> {
    let batch_id = args.batch_id.trim();
    if batch_id.is_empty() {
        writeln!(c.err, "error: the batch id is empty; use the id `submit` printed")?;
        return Ok(None);
    }
    Ok(Some(batch_id))
}

/// What the server answered, or `None` once its refusal was printed (the command then exits with
/// `EXIT_REFUSED`); `csv_lines` names the CSV line of each row a problem names.
fn accepted<T>(
    answer: Result<T, Refusal>,
    csv_lines: Option<&[u64]>,
    c: &mut Console<'_>,
) -> anyhow::Result<Option<T>> {
    match answer {
        Ok(value) => Ok(Some(value)),
        Err(refusal) => {
            refused(&refusal, csv_lines, c)?;
            Ok(None)
        }
    }
}

fn refused(refusal: &Refusal, csv_lines: Option<&[u64]>, c: &mut Console<'_>) -> anyhow::Result<u8> {
    c.err.write_all(problem_text::render_refusal(refusal, csv_lines).as_bytes())?;
    c.err.flush()?;
    Ok(EXIT_REFUSED)
}

fn print_json_line<T: Serialize>(out: &mut (dyn Write + Send), value: &T) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *out, value).context("cannot write JSON")?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::follow::tests::{EVENTS_PATH, Seen, fast_retry, finished, resuming_relay, serve, status_response};
    use super::*;
    use assetgen_common::api::{BatchLinks, BudgetView, Estimate, ModelPrice};
    use assetgen_common::problem::{ErrorCode, FieldError, Problem};
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use clap::{CommandFactory, Parser};
    use std::sync::{Arc, Mutex, PoisonError};

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        options: ClientOptions,
        #[command(subcommand)]
        command: ClientCommand,
    }

    #[test]
    fn the_command_line_is_well_formed() -> anyhow::Result<()> {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "assetgen",
            "submit",
            "b.csv",
            "--follow",
            "--global-ref",
            "https://a.test/x.png",
            "--global-ref",
            "y.png",
            "--live",
            "--model",
            "m",
            "--server",
            "http://h.test:9",
            "--id-token",
            "tok-secret",
        ])?;
        assert_eq!(cli.options.server, "http://h.test:9");
        assert!(!format!("{:?}", cli.options).contains("tok-secret"), "the token must not be in debug output");
        let ClientCommand::Submit(args) = cli.command else { anyhow::bail!("not submit: {:?}", cli.command) };
        assert!(args.follow && !args.json && args.batch.live);
        assert_eq!(args.batch.global_refs, vec!["https://a.test/x.png", "y.png"]);
        assert_eq!(args.batch.model.as_deref(), Some("m"));
        Ok(())
    }

    /// Writes `contents` as a CSV file in `dir`; its path, as the command line names it.
    fn write_csv(dir: &tempfile::TempDir, contents: &str) -> anyhow::Result<String> {
        let csv = dir.path().join("b.csv");
        std::fs::write(&csv, contents)?;
        Ok(csv.to_string_lossy().into_owned())
    }

    struct Captured {
        code: u8,
        out: String,
        err: String,
    }

    /// Runs `assetgen <args>` against `base` as tester@example.com, capturing its output, with no
    /// terminal to ask on (as in a script or CI).
    async fn execute_captured(base: &str, args: &[&str], data_dir: &Path) -> anyhow::Result<Captured> {
        execute_asking(base, args, data_dir, Asker::NoTerminal).await
    }

    /// [`execute_captured`] with a person at a terminal who answers as `asker` says.
    async fn execute_asking(base: &str, args: &[&str], data_dir: &Path, asker: Asker) -> anyhow::Result<Captured> {
        let mut argv = vec!["assetgen", "--server", base, "--user", "tester@example.com", "--id-token", "secret-token"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv)?;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut console = Console {
            out: &mut out,
            err: &mut err,
            progress: ProgressDrawTarget::hidden,
            data_dir: data_dir.to_path_buf(),
            retry: fast_retry(),
            asker,
        };
        let code = execute(&cli.options, cli.command, &mut console).await?;
        Ok(Captured { code, out: String::from_utf8(out)?, err: String::from_utf8(err)? })
    }

    fn submit_response(base: &str) -> SubmitResponse {
        SubmitResponse {
            batch_id: "b1".into(),
            estimate: Estimate { images: 3, usd: 0.0, usd_if_live: 0.12, usd_if_bulk: 0.06 },
            budget: BudgetView { limit_usd: 10.0, spent_usd: 0.0, reserved_usd: 0.0, remaining_usd: 10.0 },
            links: BatchLinks {
                self_: format!("{base}/v1/batches/b1"),
                events: format!("{base}{EVENTS_PATH}"),
                page: format!("{base}/batches/b1"),
            },
        }
    }

    /// A fake submit function: what it received, and its own base URL for the links it answers.
    #[derive(Clone, Default)]
    struct Deployment {
        seen: Seen,
        bodies: Arc<Mutex<Vec<BatchRequest>>>,
        base: Arc<Mutex<String>>,
    }

    impl Deployment {
        fn bodies(&self) -> Vec<BatchRequest> {
            self.bodies.lock().unwrap_or_else(PoisonError::into_inner).clone()
        }
    }

    async fn accept(State(d): State<Deployment>, headers: HeaderMap, Json(body): Json<BatchRequest>) -> Response {
        d.seen.push(headers);
        d.bodies.lock().unwrap_or_else(PoisonError::into_inner).push(body);
        let base = d.base.lock().unwrap_or_else(PoisonError::into_inner).clone();
        (StatusCode::ACCEPTED, Json(submit_response(&base))).into_response()
    }

    async fn deployment(router: Router<Deployment>) -> anyhow::Result<(Deployment, String)> {
        let d = Deployment::default();
        let base = serve(router.with_state(d.clone())).await?;
        *d.base.lock().unwrap_or_else(PoisonError::into_inner) = base.clone();
        Ok((d, base))
    }

    #[tokio::test]
    async fn submit_follow_sends_the_csv_and_prints_the_table() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("style.png"), b"png")?;
        let csv_arg = write_csv(&dir, "scene_id,prompt,variants,refs\nA,a car,2,style.png\nB,a boat,,\n")?;
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("images/b1"))?;
        std::fs::write(data.join("images/b1/A-v2.png"), b"png")?;

        let relay_seen = Seen::default();
        let relay = {
            let seen = relay_seen.clone();
            move |headers: HeaderMap| resuming_relay(State(seen.clone()), headers)
        };
        let router = Router::new().route("/v1/batches", post(accept)).route(EVENTS_PATH, get(relay));
        let (d, base) = deployment(router).await?;
        let run = execute_captured(&base, &["submit", &csv_arg, "--follow", "--model", "m1"], &data).await?;

        assert_eq!(run.code, 1, "row B failed: {}", run.err);
        let bodies = d.bodies();
        let style = url::Url::from_file_path(std::fs::canonicalize(dir.path().join("style.png"))?)
            .map_err(|()| anyhow::anyhow!("file url"))?;
        assert_eq!(bodies.len(), 1);
        assert_eq!(bodies[0].rows.len(), 2);
        assert_eq!(bodies[0].rows[0].refs, vec![style.to_string()]);
        assert_eq!((bodies[0].rows[0].variants, bodies[0].rows[1].variants), (Some(2), None));
        assert_eq!((bodies[0].run_mode.as_deref(), bodies[0].model.as_deref()), (Some("dry_run"), Some("m1")));
        assert_eq!(d.seen.header("x-assetgen-user"), vec![Some("tester@example.com".into())]);
        assert_eq!(d.seen.header("authorization"), vec![Some("Bearer secret-token".into())]);
        assert_eq!(relay_seen.header("last-event-id"), vec![None, Some("7".into()), Some("9".into())]);

        let expected_start = "batch b1 accepted: 3 images, $0.00 ($0.12 if live); budget left $10.00 of $10.00\n";
        assert!(run.out.starts_with(expected_start), "{}", run.out);
        assert!(run.out.contains(&format!("events: {base}{EVENTS_PATH}\n")), "{}", run.out);
        assert!(run.out.contains("completed_with_failures — 1/2 rows succeeded, 1 failed"), "{}", run.out);
        // Variant 2 of A is on this machine, variant 1 only behind its link.
        assert!(run.out.contains("http://x.test/v1/images/b1/A/1"), "{}", run.out);
        assert!(run.out.contains(&format!("{}/images/b1/A-v2.png", data.display())), "{}", run.out);
        assert!(run.out.contains("failed (CONTENT_BLOCKED)"), "{}", run.out);
        assert!(run.err.contains("row 1 (B) failed: CONTENT_BLOCKED"), "{}", run.err);
        assert!(!run.out.contains("secret-token") && !run.err.contains("secret-token"));
        Ok(())
    }

    #[tokio::test]
    async fn submit_json_prints_the_answer_as_one_line() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let csv_arg = write_csv(&dir, "scene_id,prompt\nA,a car\n")?;
        let (d, base) = deployment(Router::new().route("/v1/batches", post(accept))).await?;
        let run = execute_captured(&base, &["submit", &csv_arg, "--json", "--live", "--yes"], dir.path()).await?;
        assert_eq!(run.code, 0, "{}", run.err);
        assert_eq!(run.out.lines().count(), 1);
        assert_eq!(serde_json::from_str::<SubmitResponse>(run.out.trim())?, submit_response(&base));
        assert_eq!(d.bodies()[0].run_mode.as_deref(), Some("live"));
        for (flags, mode) in [
            (&["--bulk"][..], "bulk"),
            (&["--run-mode", "bulk"][..], "bulk"),
            (&["--run-mode", "dry-run"][..], "dry_run"),
        ] {
            let args: Vec<&str> =
                ["submit", csv_arg.as_str(), "--json", "--yes"].into_iter().chain(flags.iter().copied()).collect();
            let run = execute_captured(&base, &args, dir.path()).await?;
            assert_eq!(run.code, 0, "{flags:?}: {}", run.err);
            assert_eq!(d.bodies().last().and_then(|b| b.run_mode.clone()).as_deref(), Some(mode), "{flags:?}");
        }
        // A bulk batch costs money too: without a terminal to ask on, it needs --yes.
        let sent = d.bodies().len();
        let run = execute_captured(&base, &["submit", &csv_arg, "--bulk"], dir.path()).await?;
        assert!(run.code != 0 && run.err.contains("a bulk batch costs money"), "{}", run.err);
        assert_eq!(d.bodies().len(), sent, "nothing was submitted");
        let run = execute_captured(&base, &["submit", &csv_arg, "--live", "--bulk"], dir.path()).await;
        assert!(run.is_err() || run.is_ok_and(|r| r.code != 0), "--live and --bulk are refused together");
        Ok(())
    }

    #[tokio::test]
    async fn a_refused_submit_prints_the_problem_with_csv_lines_and_exits_2() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let csv_arg = write_csv(&dir, "scene_id,prompt,variants\nA,a car,1\n\nB,a boat,5\n")?;
        let refuse = || async {
            Problem::from_field_errors(vec![FieldError {
                code: ErrorCode::InvalidVariants,
                row: Some(1),
                scene_id: Some("B".into()),
                field: "rows[1].variants".into(),
                detail: "variants is 5; ask for 1 to 3".into(),
            }])
            .into_response()
        };
        let base = serve(Router::new().route("/v1/batches", post(refuse))).await?;
        let run = execute_captured(&base, &["submit", &csv_arg, "--follow"], dir.path()).await?;
        assert_eq!(run.code, 2);
        assert!(run.out.is_empty(), "{}", run.out);
        assert!(run.err.contains("error: A variant count is out of range (INVALID_VARIANTS, HTTP 422)"), "{}", run.err);
        assert!(
            run.err.contains("row 1 (B) rows[1].variants: variants is 5; ask for 1 to 3 [CSV line 4]"),
            "{}",
            run.err
        );
        Ok(())
    }

    /// A deployment that prices every request as `images` live images at $0.039 with `remaining_usd`
    /// left today, and accepts submits.
    async fn priced_deployment(images: u32, remaining_usd: f64) -> anyhow::Result<(Deployment, String)> {
        let priced = move |State(d): State<Deployment>, headers: HeaderMap, Json(body): Json<BatchRequest>| async move {
            d.seen.push(headers);
            assert_eq!(body.run_mode.as_deref(), Some("live"), "the estimate is of the live batch");
            let usd = f64::from(images) * 0.039;
            Json(EstimateResponse {
                estimate: Estimate { images: images.into(), usd, usd_if_live: usd, usd_if_bulk: usd / 2.0 },
                budget_after: BudgetView {
                    limit_usd: 10.0,
                    spent_usd: 10.0 - remaining_usd - 0.5,
                    reserved_usd: 0.5,
                    remaining_usd: remaining_usd - usd,
                },
                models: vec![],
            })
        };
        deployment(Router::new().route("/v1/batches", post(accept)).route("/v1/estimate", post(priced))).await
    }

    #[tokio::test]
    async fn a_live_submit_without_a_terminal_or_yes_submits_nothing_and_exits_4() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let csv_arg = write_csv(&dir, "scene_id,prompt,variants\nA,a car,3\n")?;
        let (d, base) = priced_deployment(3, 9.5).await?;

        let run = execute_captured(&base, &["submit", &csv_arg, "--live", "--follow"], dir.path()).await?;
        assert_eq!(run.code, EXIT_NOT_CONFIRMED, "{}", run.err);
        assert!(run.out.is_empty(), "{}", run.out);
        assert!(run.err.contains("nothing was submitted") && run.err.contains("Add --yes"), "{}", run.err);
        assert!(d.bodies().is_empty(), "no submit was sent");
        assert!(d.seen.header("x-assetgen-user").is_empty(), "not even an estimate: no request at all");

        // --yes is the script's confirmation; a dry run needs none.
        let run = execute_captured(&base, &["submit", &csv_arg, "--live", "--yes"], dir.path()).await?;
        assert_eq!(run.code, 0, "{}", run.err);
        let run = execute_captured(&base, &["submit", &csv_arg], dir.path()).await?;
        assert_eq!(run.code, 0, "{}", run.err);
        let modes: Vec<_> = d.bodies().into_iter().map(|b| b.run_mode).collect();
        assert_eq!(modes, vec![Some("live".to_owned()), Some("dry_run".to_owned())]);
        Ok(())
    }

    #[tokio::test]
    async fn on_a_terminal_a_live_submit_shows_the_price_and_budget_and_goes_only_on_yes() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let csv_arg = write_csv(&dir, "scene_id,prompt,variants\nA,a car,3\nB,a boat,2\n")?;
        let (d, base) = priced_deployment(4, 9.5).await?;
        let args = ["submit", csv_arg.as_str(), "--live"];

        for declined in [Some(false), None] {
            let run = execute_asking(&base, &args, dir.path(), Asker::Scripted(declined)).await?;
            assert_eq!(run.code, EXIT_NOT_CONFIRMED, "{}", run.err);
            assert!(run.err.contains("live batch: 4 images at $0.039 = $0.16"), "{}", run.err);
            assert!(
                run.err.contains(
                    "budget:     $9.50 left of $10.00 today (spent $0.00, held $0.50); $9.34 after this batch"
                ),
                "{}",
                run.err
            );
            assert!(run.err.contains("not submitted: nothing was spent"), "{}", run.err);
            assert!(run.out.is_empty(), "{}", run.out);
        }
        assert!(d.bodies().is_empty(), "answered no (or quit): nothing submitted");

        let run = execute_asking(&base, &args, dir.path(), Asker::Scripted(Some(true))).await?;
        assert_eq!(run.code, 0, "{}", run.err);
        assert!(run.out.starts_with("batch b1 accepted"), "{}", run.out);
        assert_eq!(d.bodies().len(), 1);
        assert_eq!(d.bodies()[0].run_mode.as_deref(), Some("live"));
        Ok(())
    }

    #[tokio::test]
    async fn a_live_batch_over_the_budget_left_is_not_offered() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let csv_arg = write_csv(&dir, "scene_id,prompt,variants\nA,a car,3\n")?;
        let (d, base) = priced_deployment(3, 0.1).await?;
        let run =
            execute_asking(&base, &["submit", &csv_arg, "--live"], dir.path(), Asker::Scripted(Some(true))).await?;
        assert_eq!(run.code, EXIT_REFUSED, "{}", run.err);
        assert!(run.err.contains("costs $0.12, more than the $0.10 left of today's budget"), "{}", run.err);
        assert!(d.bodies().is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn a_bad_csv_is_reported_before_any_request() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let csv_arg = write_csv(&dir, "scene_id,prompt,variants\nA,a car,two\n")?;
        // Nothing listens on port 9: a request would end in an error, not in exit code 2.
        let run = execute_captured("http://127.0.0.1:9", &["estimate", &csv_arg], dir.path()).await?;
        assert_eq!(run.code, 2);
        assert!(run.err.contains("line 2, column 3 (variants): \"two\" is not a whole number"), "{}", run.err);
        let missing = dir.path().join("nope.csv").to_string_lossy().into_owned();
        let run = execute_captured("http://127.0.0.1:9", &["submit", &missing], dir.path()).await?;
        assert_eq!(run.code, 2);
        assert!(run.err.contains("nope.csv: cannot read the file"), "{}", run.err);
        Ok(())
    }

    #[tokio::test]
    async fn estimate_prints_the_price_and_the_budget_after() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let csv_arg = write_csv(&dir, "scene_id,prompt,variants\nA,a car,3\n")?;
        let answer = || async {
            Json(EstimateResponse {
                estimate: Estimate { images: 3, usd: 0.0, usd_if_live: 0.117, usd_if_bulk: 0.0585 },
                budget_after: BudgetView { limit_usd: 10.0, spent_usd: 1.5, reserved_usd: 0.25, remaining_usd: 8.25 },
                models: vec![ModelPrice {
                    model: "gemini-2.5-flash-image".into(),
                    usd_per_image: 0.039,
                    usd_per_image_bulk: 0.0195,
                }],
            })
        };
        let base = serve(Router::new().route("/v1/estimate", post(answer))).await?;
        let run = execute_captured(&base, &["estimate", &csv_arg], dir.path()).await?;
        assert_eq!(run.code, 0, "{}", run.err);
        assert_eq!(
            run.out,
            "images:       3\n\
             cost:         $0.00 (dry run)\n\
             if live:      $0.12\n\
             if bulk:      $0.06\n\
             budget after: $8.25 left of $10.00 (spent $1.50, reserved $0.25)\n\
             models:       gemini-2.5-flash-image ($0.039/image, $0.0195 bulk)\n"
        );
        let run = execute_captured(&base, &["estimate", &csv_arg, "--bulk"], dir.path()).await?;
        assert!(
            run.out.contains("cost:         $0.00 (bulk: Gemini's Batch API, half price, within a day)\n"),
            "{}",
            run.out
        );
        let run = execute_captured(&base, &["estimate", &csv_arg, "--json"], dir.path()).await?;
        assert_eq!(serde_json::from_str::<EstimateResponse>(run.out.trim())?.estimate.images, 3);
        Ok(())
    }

    #[tokio::test]
    async fn cancel_and_retry_post_to_the_batch_and_report_rows() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let answer = |axum::extract::Path((id, action)): axum::extract::Path<(String, String)>| async move {
            match (id.as_str(), action.as_str()) {
                ("b1", "retry") => {
                    Json(serde_json::json!({"batch_id": "b1", "rows": [2, 5], "reserved_usd": 0.117})).into_response()
                }
                ("b1", "cancel") => {
                    Json(serde_json::json!({"batch_id": "b1", "rows": [], "reserved_usd": 0.0})).into_response()
                }
                _ => Problem::new(ErrorCode::NothingToRetry, "no failed rows").into_response(),
            }
        };
        let base = serve(Router::new().route("/v1/batches/{id}/{action}", axum::routing::post(answer))).await?;
        let run = execute_captured(&base, &["retry", "b1"], dir.path()).await?;
        assert_eq!(run.code, 0, "{}", run.err);
        assert!(run.out.contains("rows 2, 5 queued again") && run.out.contains("$0.117"), "{}", run.out);
        let run = execute_captured(&base, &["cancel", "b1"], dir.path()).await?;
        assert!(run.out.contains("no rows cancelled"), "{}", run.out);
        let run = execute_captured(&base, &["retry", "b2"], dir.path()).await?;
        assert_eq!(run.code, 2);
        assert!(run.err.contains("NOTHING_TO_RETRY"), "{}", run.err);
        Ok(())
    }

    #[tokio::test]
    async fn global_set_adds_the_tagged_refs_after_the_explicit_ones() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = write_csv(&dir, "scene_id,prompt\nA,a cat\n")?;
        let seen: Arc<Mutex<Option<serde_json::Value>>> = Arc::default();
        let got = seen.clone();
        let set = || async {
            Json(
                serde_json::json!({"name": "global", "refs": ["https://a.test/1.png", "https://a.test/2.png"], "revision": 3}),
            )
        };
        let estimate = move |Json(body): Json<serde_json::Value>| {
            let got = got.clone();
            async move {
                *got.lock().expect("lock") = Some(body);
                Json(serde_json::json!({"estimate": {"images": 1, "usd": 0.0, "usd_if_live": 0.039},
                    "budget_after": {"limit_usd": 10.0, "spent_usd": 0.0, "reserved_usd": 0.0, "remaining_usd": 10.0}, "models": []}))
            }
        };
        let base = serve(
            Router::new().route("/v1/refs/sets/global", get(set)).route("/v1/estimate", axum::routing::post(estimate)),
        )
        .await?;
        let run = execute_captured(
            &base,
            &["estimate", &file, "--global-ref", "https://a.test/2.png", "--global-set"],
            dir.path(),
        )
        .await?;
        assert_eq!(run.code, 0, "{}", run.err);
        let body = seen.lock().expect("lock").clone().expect("the estimate request");
        assert_eq!(body["global_refs"], serde_json::json!(["https://a.test/2.png", "https://a.test/1.png"]));
        Ok(())
    }

    /// The cloud topology: submit (`--server`) has no reference library and answers 404; the
    /// client asks it for a manager token and reads the set where the token's page link points,
    /// with that token and nothing else.
    #[tokio::test]
    async fn global_set_is_read_from_the_library_a_manager_token_names() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = write_csv(&dir, "scene_id,prompt\nA,a cat\n")?;
        let headers_seen: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
        let seen = headers_seen.clone();
        let set = move |headers: HeaderMap| {
            let seen = seen.clone();
            async move {
                let signed_in = headers.get("authorization").is_some_and(|v| v == "Bearer mgr-token");
                seen.lock().expect("lock").push(headers);
                if !signed_in {
                    return axum::http::StatusCode::UNAUTHORIZED.into_response();
                }
                Json(serde_json::json!({"name": "global", "refs": ["https://a.test/lib.png"], "revision": 1}))
                    .into_response()
            }
        };
        let relay = serve(Router::new().route("/v1/refs/sets/global", get(set))).await?;
        let body: Arc<Mutex<Option<serde_json::Value>>> = Arc::default();
        let got = body.clone();
        let page = format!("{relay}/refs#token=mgr-token");
        let submit = serve(
            Router::new()
                .route(
                    "/v1/refs/manager-token",
                    axum::routing::post(move || {
                        let page = page.clone();
                        async move {
                            Json(serde_json::json!({"token": "mgr-token", "expires_at": "2026-11-28T15:00:00Z", "page": page}))
                        }
                    }),
                )
                .route(
                    "/v1/estimate",
                    axum::routing::post(move |Json(request): Json<serde_json::Value>| {
                        let got = got.clone();
                        async move {
                            *got.lock().expect("lock") = Some(request);
                            Json(serde_json::json!({"estimate": {"images": 1, "usd": 0.0, "usd_if_live": 0.039},
                                "budget_after": {"limit_usd": 10.0, "spent_usd": 0.0, "reserved_usd": 0.0, "remaining_usd": 10.0}, "models": []}))
                        }
                    }),
                ),
        )
        .await?;
        let run = execute_captured(&submit, &["estimate", &file, "--global-set"], dir.path()).await?;
        assert_eq!(run.code, 0, "{}", run.err);
        let request = body.lock().expect("lock").clone().expect("the estimate request");
        assert_eq!(request["global_refs"], serde_json::json!(["https://a.test/lib.png"]));
        let headers = headers_seen.lock().expect("lock");
        assert_eq!(headers.len(), 1);
        assert!(headers[0].get("x-assetgen-user").is_none(), "only the manager token goes to the library");
        Ok(())
    }

    #[tokio::test]
    async fn status_prints_the_table_or_json_and_refusals() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let answer = |axum::extract::Path(id): axum::extract::Path<String>| async move {
            if id == "b1" {
                Json(finished()).into_response()
            } else {
                Problem::new(ErrorCode::BatchNotFound, format!("batch {id} does not exist")).into_response()
            }
        };
        let base = serve(Router::new().route("/v1/batches/{id}", get(answer))).await?;

        let run = execute_captured(&base, &["status", "b1"], dir.path()).await?;
        assert_eq!(run.code, 0, "{}", run.err);
        assert!(run.out.contains("ROW  SCENE_ID  STATUS"), "{}", run.out);
        assert!(run.out.contains("1    B         failed (CONTENT_BLOCKED)  -"), "{}", run.out);

        let run = execute_captured(&base, &["status", "b1", "--json"], dir.path()).await?;
        assert_eq!(serde_json::from_str::<BatchView>(run.out.trim())?, finished());

        let run = execute_captured(&base, &["status", "zz 9"], dir.path()).await?;
        assert_eq!(run.code, 2);
        assert!(run.err.contains("No such batch (BATCH_NOT_FOUND, HTTP 404)"), "{}", run.err);
        assert!(run.err.contains("batch zz 9 does not exist"), "{}", run.err);

        let bad_gateway = || async { status_response(StatusCode::BAD_GATEWAY, "upstream down") };
        let plain = serve(Router::new().route("/v1/batches/{id}", get(bad_gateway))).await?;
        let run = execute_captured(&plain, &["status", "b1"], dir.path()).await?;
        assert_eq!(run.code, 2);
        assert!(run.err.contains("answered HTTP 502 without a problem document: upstream down"), "{}", run.err);
        Ok(())
    }

    #[tokio::test]
    async fn an_unreachable_server_is_an_error_with_a_hint() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let result = execute_captured("http://127.0.0.1:9", &["status", "b1"], dir.path()).await;
        let message = format!("{:#}", result.err().ok_or_else(|| anyhow::anyhow!("expected an error"))?);
        assert!(message.contains("cannot reach http://127.0.0.1:9/v1/batches/b1"), "{message}");
        assert!(message.contains("assetgen serve"), "{message}");
        Ok(())
    }
}
