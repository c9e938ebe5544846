//! A batch as a plain-text table: row, scene_id, status, images (a local file when this machine
//! holds it — the local server stores under `./.data` — else the image link).

use assetgen_common::api::{BatchView, RowStatus, RowView};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Component, Path};

/// Where the local server keeps its objects, relative to the current directory.
pub const LOCAL_DATA_DIR: &str = "./.data";

pub fn render(view: &BatchView, data_dir: &Path) -> String {
    let t = &view.totals;
    let mut text = format!(
        "batch {}: {} — {}/{} rows succeeded, {} failed, {} cancelled; {}/{} images; cost ${:.2} ({}, {})\n",
        view.batch_id,
        wire_name(&view.status),
        t.succeeded,
        t.rows,
        t.failed,
        t.cancelled,
        t.images_done,
        t.images_total,
        view.cost_usd,
        wire_name(&view.run_mode),
        view.model,
    );

    if let Some(bulk) = &view.bulk {
        let job = bulk.job.as_deref().unwrap_or("not submitted yet");
        let state = bulk.waiting_text().unwrap_or_else(|| format!("Google's batch {}", wire_name(&bulk.state)));
        text.push_str(&format!("bulk job {job}: {state}\n"));
    }

    let header = ["ROW", "SCENE_ID", "STATUS", "IMAGES"].map(str::to_owned);
    let body: Vec<[String; 4]> = view
        .rows
        .iter()
        .flat_map(|row| {
            let mut images = image_cells(row, data_dir).into_iter();
            let status = match &row.error {
                Some(error) => format!("{} ({})", wire_name(&row.status), error.code),
                None => wire_name(&row.status),
            };
            let first =
                [row.row.to_string(), row.scene_id.clone(), status, images.next().unwrap_or_else(|| "-".into())];
            // Further variants go on lines of their own, under the first.
            std::iter::once(first).chain(images.map(|image| [String::new(), String::new(), String::new(), image]))
        })
        .collect();
    let mut widths = [0; 4];
    for line in std::iter::once(&header).chain(&body) {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for line in std::iter::once(&header).chain(&body) {
        let mut out = String::new();
        for (i, cell) in line.iter().enumerate() {
            if i + 1 == line.len() {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{cell:<width$}  ", width = widths[i]);
            }
        }
        text.push_str(out.trim_end());
        text.push('\n');
    }

    let failed: Vec<&RowView> = view.rows.iter().filter(|r| r.error.is_some()).collect();
    if !failed.is_empty() {
        text.push_str("failures:\n");
        for row in failed {
            let _ = writeln!(text, "  {}", failure_line(row));
        }
    }
    text
}

/// `row 3 (scene) failed: CODE: detail — advice`: one line per failed row, above the progress bar
/// and under the table.
pub fn failure_line(row: &RowView) -> String {
    let mut line = format!("row {} ({}) {}", row.row, row.scene_id, wire_name(&row.status));
    if let Some(error) = &row.error {
        let _ = write!(line, ": {}: {}", error.code, error.detail);
        if !error.advice.is_empty() {
            let _ = write!(line, " — {}", error.advice);
        }
    }
    line
}

/// Exit status of a finished batch: 0 when every row succeeded, 1 otherwise.
pub fn exit_code(view: &BatchView) -> u8 {
    let all_succeeded = !view.rows.is_empty() && view.rows.iter().all(|r| r.status == RowStatus::Succeeded);
    if all_succeeded { 0 } else { 1 }
}

fn image_cells(row: &RowView, data_dir: &Path) -> Vec<String> {
    let count = row.images.len().max(row.objects.len());
    (0..count)
        .filter_map(|i| {
            let local =
                row.objects.get(i).filter(|object| is_plain_relative(object)).and_then(|object| {
                    data_dir.join(object).is_file().then(|| format!("{}/{object}", data_dir.display()))
                });
            local.or_else(|| row.images.get(i).cloned())
        })
        .collect()
}

/// An object name that stays inside the data directory when joined to it.
fn is_plain_relative(object: &str) -> bool {
    !object.is_empty() && Path::new(object).components().all(|c| matches!(c, Component::Normal(_)))
}

/// The snake_case name a value has on the wire (`completed_with_failures`, `dry_run`).
pub fn wire_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "?".to_owned(),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use assetgen_common::api::{BatchStatus, Estimate, RowErrorView, Totals};
    use assetgen_common::domain::RunMode;
    use assetgen_common::problem::ErrorCode;

    /// A row of batch `b1`: `done` of its `variants` images stored; failed rows carry an error.
    pub fn row(row: u32, scene: &str, status: RowStatus, variants: u8, done: u8) -> RowView {
        let batch = "b1";
        RowView {
            row,
            scene_id: scene.into(),
            status,
            attempts: 1,
            variants,
            error: (status == RowStatus::Failed).then(|| RowErrorView {
                code: ErrorCode::ContentBlocked,
                detail: "the model blocked the image".into(),
                advice: ErrorCode::ContentBlocked.advice().into(),
            }),
            images: (1..=done).map(|v| format!("http://x.test/v1/images/{batch}/{scene}/{v}")).collect(),
            objects: (1..=done).map(|v| format!("images/{batch}/{scene}-v{v}.png")).collect(),
            provenance: (1..=done).map(|v| format!("http://x.test/v1/provenance/{batch}/{scene}/{v}")).collect(),
            refs: Vec::new(),
            cost_usd: 0.0,
        }
    }

    /// Batch `b1` with totals counted from its rows.
    pub fn view(status: BatchStatus, rows: Vec<RowView>) -> BatchView {
        let mut totals = Totals { rows: u32::try_from(rows.len()).unwrap_or(0), ..Totals::default() };
        for r in &rows {
            match r.status {
                RowStatus::Queued => totals.queued += 1,
                RowStatus::Running => totals.running += 1,
                RowStatus::Succeeded => totals.succeeded += 1,
                RowStatus::Failed => totals.failed += 1,
                RowStatus::Cancelled => totals.cancelled += 1,
            }
            totals.images_done += u32::try_from(r.images.len()).unwrap_or(0);
            totals.images_total += u32::from(r.variants);
        }
        BatchView {
            batch_id: "b1".into(),
            status,
            created_at: time::OffsetDateTime::UNIX_EPOCH,
            ended_at: None,
            run_mode: RunMode::DryRun,
            model: "gemini-2.5-flash-image".into(),
            estimate: Estimate {
                images: u64::from(totals.images_total),
                usd: 0.0,
                usd_if_live: 0.12,
                usd_if_bulk: 0.06,
            },
            totals,
            cost_usd: 0.0,
            rows,
            bulk: None,
        }
    }

    #[test]
    fn local_files_win_over_links_and_variants_stack() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("images/b1"))?;
        std::fs::write(dir.path().join("images/b1/A-v1.png"), b"png")?;
        let v = view(
            BatchStatus::CompletedWithFailures,
            vec![row(0, "A", RowStatus::Succeeded, 2, 2), row(1, "Bee", RowStatus::Failed, 1, 0)],
        );
        let text = render(&v, dir.path());
        let d = dir.path().display();
        let expected = format!(
            "batch b1: completed_with_failures — 1/2 rows succeeded, 1 failed, 0 cancelled; 2/3 images; cost $0.00 (dry_run, gemini-2.5-flash-image)\n\
             ROW  SCENE_ID  STATUS                    IMAGES\n\
             0    A         succeeded                 {d}/images/b1/A-v1.png\n\
             {pad}http://x.test/v1/images/b1/A/2\n\
             1    Bee       failed (CONTENT_BLOCKED)  -\n\
             failures:\n\
             \x20 row 1 (Bee) failed: CONTENT_BLOCKED: the model blocked the image — {}\n",
            ErrorCode::ContentBlocked.advice(),
            pad = " ".repeat(3 + 2 + 8 + 2 + 24 + 2),
        );
        assert_eq!(text, expected);
        Ok(())
    }

    #[test]
    fn objects_that_escape_the_data_dir_are_not_looked_up() {
        assert!(is_plain_relative("images/b/s-v1.png"));
        for bad in ["", "/etc/passwd", "../x", "images/../../x", "./x"] {
            assert!(!is_plain_relative(bad), "{bad}");
        }
    }

    #[test]
    fn exit_code_is_zero_only_when_every_row_succeeded() {
        let ok = view(BatchStatus::Succeeded, vec![row(0, "A", RowStatus::Succeeded, 1, 1)]);
        assert_eq!(exit_code(&ok), 0);
        for bad in [RowStatus::Failed, RowStatus::Cancelled, RowStatus::Running] {
            let v = view(
                BatchStatus::CompletedWithFailures,
                vec![row(0, "A", RowStatus::Succeeded, 1, 1), row(1, "B", bad, 1, 0)],
            );
            assert_eq!(exit_code(&v), 1, "{bad:?}");
        }
        assert_eq!(exit_code(&view(BatchStatus::Succeeded, vec![])), 1);
    }
}
