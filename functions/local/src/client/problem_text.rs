//! Showing a refusal to a person: the problem's title, detail and advice, then every field error
//! as `row N (scene_id) field: detail` so a whole selection can be fixed at once.

use super::http::{Refusal, snippet};
use assetgen_common::problem::Problem;
use std::fmt::Write as _;

/// `csv_lines[i]` is the CSV line of request row `i`, when the request came from a file.
pub fn render_refusal(refusal: &Refusal, csv_lines: Option<&[u64]>) -> String {
    match &refusal.problem {
        Some(problem) => render_problem(problem, csv_lines),
        None => format!(
            "error: {} answered HTTP {} without a problem document: {}\n",
            refusal.url,
            refusal.status,
            snippet(&refusal.body)
        ),
    }
}

pub fn render_problem(problem: &Problem, csv_lines: Option<&[u64]>) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "error: {} ({}, HTTP {})", problem.title, problem.code, problem.status);
    if !problem.detail.is_empty() {
        let _ = writeln!(text, "  {}", problem.detail);
    }
    if !problem.advice.is_empty() {
        let _ = writeln!(text, "  what to do: {}", problem.advice);
    }
    for error in &problem.errors {
        let mut place = String::new();
        if let Some(row) = error.row {
            let _ = write!(place, "row {row} ");
            if let Some(scene) = &error.scene_id {
                let _ = write!(place, "({scene}) ");
            }
        }
        let line = error.row.and_then(|row| csv_lines.and_then(|lines| lines.get(row)));
        let line = line.map(|l| format!(" [CSV line {l}]")).unwrap_or_default();
        let _ = writeln!(text, "  - {place}{}: {}{line}", error.field, error.detail);
    }
    if let Some(instance) = &problem.instance {
        let _ = writeln!(text, "  (request {instance})");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use assetgen_common::problem::{ErrorCode, FieldError};

    fn field_error(row: Option<usize>, scene: Option<&str>, field: &str, detail: &str) -> FieldError {
        FieldError {
            code: ErrorCode::InvalidVariants,
            row,
            scene_id: scene.map(str::to_owned),
            field: field.into(),
            detail: detail.into(),
        }
    }

    #[test]
    fn every_field_error_gets_its_own_line() {
        let problem = Problem::from_field_errors(vec![
            field_error(Some(0), Some("A-1"), "rows[0].variants", "variants is 5; ask for 1 to 3"),
            field_error(Some(2), Some("C-3"), "rows[2].prompt", "prompt is empty"),
            field_error(None, None, "global_refs[0]", "not a URL"),
        ]);
        let text = render_problem(&problem, Some(&[2, 3, 5]));
        assert!(text.starts_with("error: A variant count is out of range (INVALID_VARIANTS, HTTP 422)\n"), "{text}");
        assert!(text.contains("  variants is 5; ask for 1 to 3 (and 2 more problems)\n"), "{text}");
        assert!(text.contains("  what to do: Ask for 1, 2 or 3 variants.\n"), "{text}");
        assert!(text.contains("row 0 (A-1) rows[0].variants: variants is 5; ask for 1 to 3 [CSV line 2]\n"), "{text}");
        assert!(text.contains("row 2 (C-3) rows[2].prompt: prompt is empty [CSV line 5]\n"), "{text}");
        assert!(text.contains("  - global_refs[0]: not a URL\n"), "{text}");
    }

    #[test]
    fn a_body_that_is_not_a_problem_is_shown_raw() {
        let refusal = Refusal {
            url: "http://x.test/v1/batches".into(),
            status: 502,
            problem: None,
            body: "<html>\nBad gateway</html>".into(),
        };
        assert_eq!(
            render_refusal(&refusal, None),
            "error: http://x.test/v1/batches answered HTTP 502 without a problem document: <html> Bad gateway</html>\n"
        );
    }
}
