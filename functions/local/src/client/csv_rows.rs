//! Reading a batch from a CSV file: one row per scene, a header row naming the columns.
//!
//! Columns (any order, names case-insensitive and trimmed): `scene_id`, `prompt` (required),
//! `variants`, `refs`, `ref_mode`, `aspect_ratio` (optional). `refs` holds several references
//! separated by `|`; a reference that is not a URL is a local file, resolved against the CSV file's
//! directory and sent as a `file://` URL (only the local server accepts those).
//!
//! Values are checked here only as far as the CSV itself goes (a variant count must be a number);
//! everything else — limits, scene ids, ref modes — is the server's to judge, so the rules live in
//! one place.

use assetgen_common::api::RowRequest;
use assetgen_common::domain::{AspectRatio, RefMode};
use std::fmt;
use std::path::{Path, PathBuf};

/// The columns a batch CSV may have, in the order the help text lists them.
const KNOWN_COLUMNS: [&str; 6] = ["scene_id", "prompt", "variants", "refs", "ref_mode", "aspect_ratio"];

/// Unknown columns named one by one in a message; the rest are counted. A header row of 10,000
/// columns must not make a message of 10,000 names.
const MAX_NAMED_COLUMNS: usize = 10;

/// Characters of a header name quoted in a message.
const MAX_QUOTED_CHARS: usize = 40;

const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";

/// Rows read from a CSV file, with the line each one started on (for messages about row `i`).
#[derive(Debug, Clone, PartialEq)]
pub struct CsvBatch {
    pub rows: Vec<RowRequest>,
    /// `lines[i]` is the 1-based line of the file where `rows[i]` starts.
    pub lines: Vec<u64>,
}

/// Why a CSV file could not be turned into rows; says where when it can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvError {
    pub source: String,
    pub line: Option<u64>,
    /// 1-based column number and its header name.
    pub column: Option<(usize, String)>,
    pub message: String,
}

impl fmt::Display for CsvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source)?;
        if let Some(line) = self.line {
            write!(f, ", line {line}")?;
        }
        if let Some((number, name)) = &self.column {
            if name.is_empty() {
                write!(f, ", column {number}")?;
            } else {
                write!(f, ", column {number} ({name})")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for CsvError {}

/// Reads `path`; local references are resolved against the file's directory.
pub fn read_file(path: &Path) -> Result<CsvBatch, CsvError> {
    let source = path.display().to_string();
    let text = std::fs::read(path).map_err(|e| CsvError {
        source: source.clone(),
        line: None,
        column: None,
        message: format!("cannot read the file: {e}"),
    })?;
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    parse(&text, &dir, &source)
}

/// Parses CSV text. `base_dir` resolves relative local references; `source` names the input in
/// messages.
pub fn parse(text: &[u8], base_dir: &Path, source: &str) -> Result<CsvBatch, CsvError> {
    let error = |line: Option<u64>, column: Option<(usize, String)>, message: String| CsvError {
        source: source.to_owned(),
        line,
        column,
        message,
    };
    if text.strip_prefix(UTF8_BOM).unwrap_or(text).iter().all(u8::is_ascii_whitespace) {
        return Err(error(
            None,
            None,
            format!("the file is empty; the first line must name the columns ({})", KNOWN_COLUMNS.join(",")),
        ));
    }
    // The reader drops a UTF-8 byte order mark (Excel writes one) before the first header name.
    let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(false).from_reader(text);
    let headers = reader.headers().map_err(|e| csv_error(text, source, &e, None))?.clone();
    let columns = Columns::from_headers(&headers).map_err(|message| error(Some(1), None, message))?;

    let mut batch = CsvBatch { rows: Vec::new(), lines: Vec::new() };
    for record in reader.records() {
        let record = record.map_err(|e| csv_error(text, source, &e, Some(&headers)))?;
        let line = record.position().map_or(0, |p| start_line(text, p));
        if record.iter().all(|cell| cell.trim().is_empty()) {
            continue; // Sheets exports trailing blank rows.
        }
        let at = |index: usize| Some((index + 1, headers.get(index).unwrap_or("").trim().to_owned()));
        for &index in &columns.unnamed {
            if record.get(index).is_some_and(|cell| !cell.trim().is_empty()) {
                return Err(error(Some(line), at(index), "this column has no name in the header row".into()));
            }
        }
        let cell = |index: Option<usize>| index.and_then(|i| record.get(i)).map(str::trim).unwrap_or("");
        let optional = |index: Option<usize>| Some(cell(index).to_owned()).filter(|s| !s.is_empty());

        let variants = match cell(columns.variants) {
            "" => None,
            raw => match raw.parse::<i64>() {
                Ok(n) => Some(n),
                Err(_) => {
                    return Err(error(
                        Some(line),
                        columns.variants.and_then(at),
                        format!("{raw:?} is not a whole number; write 1, 2 or 3, or leave it empty for 1"),
                    ));
                }
            },
        };
        let mut refs = Vec::new();
        for raw in split_refs(cell(columns.refs)) {
            let url =
                resolve_ref(raw, base_dir).map_err(|message| error(Some(line), columns.refs.and_then(at), message))?;
            refs.push(url);
        }
        batch.rows.push(RowRequest {
            scene_id: cell(columns.scene_id).to_owned(),
            prompt: cell(columns.prompt).to_owned(),
            variants,
            refs,
            // The wire takes the canonical spellings only; a person may write `Composition` or `16 : 9`.
            ref_mode: optional(columns.ref_mode).map(|m| RefMode::parse(&m).map_or(m, |r| r.as_wire().to_owned())),
            aspect_ratio: optional(columns.aspect_ratio).map(|a| AspectRatio::parse(&a).map_or(a, |r| r.to_string())),
        });
        batch.lines.push(line);
    }
    if batch.rows.is_empty() {
        return Err(error(None, None, "the file has a header row but no rows; add one row per scene".into()));
    }
    Ok(batch)
}

/// Splits a `refs` cell on `|`, trimming each part and skipping empty ones.
pub fn split_refs(cell: &str) -> impl Iterator<Item = &str> {
    cell.split('|').map(str::trim).filter(|s| !s.is_empty())
}

/// A reference as sent to the server: a URL unchanged, a local path as an absolute `file://` URL.
pub fn resolve_ref(raw: &str, base_dir: &Path) -> Result<String, String> {
    let raw = raw.trim();
    if has_url_scheme(raw) {
        return Ok(raw.to_owned());
    }
    let joined = base_dir.join(raw);
    let path = std::fs::canonicalize(&joined)
        .map_err(|e| format!("reference {raw:?} is not a URL, and no file {} can be read: {e}", joined.display()))?;
    if !path.is_file() {
        return Err(format!("reference {raw:?} is {}, which is not a file", path.display()));
    }
    url::Url::from_file_path(&path)
        .map(String::from)
        .map_err(|()| format!("reference {raw:?} ({}) cannot be written as a file:// URL", path.display()))
}

/// `scheme://…` with a scheme as RFC 3986 spells it.
fn has_url_scheme(s: &str) -> bool {
    let Some((scheme, _)) = s.split_once("://") else { return false };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// Where each known column is in the file.
#[derive(Debug, Default)]
struct Columns {
    scene_id: Option<usize>,
    prompt: Option<usize>,
    variants: Option<usize>,
    refs: Option<usize>,
    ref_mode: Option<usize>,
    aspect_ratio: Option<usize>,
    /// Columns with an empty header: allowed only while their cells are empty too.
    unnamed: Vec<usize>,
}

impl Columns {
    fn from_headers(headers: &csv::StringRecord) -> Result<Self, String> {
        let mut columns = Self::default();
        let mut unknown = Vec::new();
        let mut unknown_count = 0usize;
        for (index, raw) in headers.iter().enumerate() {
            let name = normalize_header(raw);
            let slot = match name.as_str() {
                "" => {
                    columns.unnamed.push(index);
                    continue;
                }
                "scene_id" => &mut columns.scene_id,
                "prompt" => &mut columns.prompt,
                "variants" => &mut columns.variants,
                "refs" => &mut columns.refs,
                "ref_mode" => &mut columns.ref_mode,
                "aspect_ratio" => &mut columns.aspect_ratio,
                _ => {
                    if unknown.len() < MAX_NAMED_COLUMNS {
                        unknown.push(format!("{:?} (column {})", quoted(raw.trim()), index + 1));
                    }
                    unknown_count += 1;
                    continue;
                }
            };
            if let Some(first) = slot.replace(index) {
                return Err(format!("column {name} appears twice (columns {} and {})", first + 1, index + 1));
            }
        }
        if unknown_count > 0 {
            let more = unknown_count - unknown.len();
            if more > 0 {
                unknown.push(format!("and {} more", thousands(more)));
            }
            return Err(format!(
                "unknown column{} {}; the columns are {}",
                if unknown_count == 1 { "" } else { "s" },
                unknown.join(", "),
                KNOWN_COLUMNS.join(", ")
            ));
        }
        let missing: Vec<&str> = [("scene_id", columns.scene_id), ("prompt", columns.prompt)]
            .into_iter()
            .filter_map(|(name, index)| index.is_none().then_some(name))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "the header row has no {} column; the first line must name the columns ({})",
                missing.join(" or "),
                KNOWN_COLUMNS.join(",")
            ));
        }
        Ok(columns)
    }
}

/// `" Scene ID "` → `scene_id`.
fn normalize_header(raw: &str) -> String {
    raw.trim().to_lowercase().replace([' ', '-'], "_")
}

/// The 1-based line a record starts on. The reader's own line count is off after blank lines and
/// CRLF endings (the position is taken before the terminators it skips), so count from the byte.
fn start_line(text: &[u8], position: &csv::Position) -> u64 {
    let mut start = usize::try_from(position.byte()).unwrap_or(usize::MAX).min(text.len());
    while text.get(start).is_some_and(|b| matches!(b, b'\r' | b'\n')) {
        start += 1;
    }
    1 + text[..start].iter().filter(|&&b| b == b'\n').count() as u64
}

/// At most [`MAX_QUOTED_CHARS`] characters of a name from the file.
fn quoted(name: &str) -> String {
    if name.chars().count() <= MAX_QUOTED_CHARS {
        name.to_owned()
    } else {
        format!("{}…", name.chars().take(MAX_QUOTED_CHARS).collect::<String>())
    }
}

/// `9990` → `9,990`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// `headers` is `None` while the header row itself is read.
fn csv_error(text: &[u8], source: &str, e: &csv::Error, headers: Option<&csv::StringRecord>) -> CsvError {
    let line = e.position().map(|p| start_line(text, p));
    let mut column = None;
    let message = match e.kind() {
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
            format!(
                "this row has {len} fields but the header row has {expected_len}; check for a missing or extra comma"
            )
        }
        csv::ErrorKind::Utf8 { err, .. } => {
            let name = headers.and_then(|h| h.get(err.field())).map_or_else(String::new, |n| quoted(n.trim()));
            column = Some((err.field() + 1, name));
            "the text is not UTF-8; save or export the file as CSV (UTF-8)".to_owned()
        }
        csv::ErrorKind::Io(io) => format!("cannot read the file: {io}"),
        _ => e.to_string(),
    };
    CsvError { source: source.to_owned(), line, column, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<CsvBatch, CsvError> {
        parse(text.as_bytes(), Path::new("/nonexistent"), "batch.csv")
    }

    fn rows(text: &str) -> Vec<RowRequest> {
        match parse_str(text) {
            Ok(batch) => batch.rows,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn reads_the_documented_header() {
        let rows = rows(
            "scene_id,prompt,variants,refs,ref_mode\n\
             A-1,a red car,2,https://x.test/a.png,style_only\n\
             B-2,a blue boat,,,\n",
        );
        assert_eq!(
            rows,
            vec![
                RowRequest {
                    scene_id: "A-1".into(),
                    prompt: "a red car".into(),
                    variants: Some(2),
                    refs: vec!["https://x.test/a.png".into()],
                    ref_mode: Some("style_only".into()),
                    aspect_ratio: None,
                },
                RowRequest { scene_id: "B-2".into(), prompt: "a blue boat".into(), ..RowRequest::default() },
            ]
        );
    }

    #[test]
    fn header_names_are_case_insensitive_trimmed_and_in_any_order() {
        let rows = rows(
            " Aspect_Ratio ,REFS, Prompt,Ref Mode,Variants , SCENE_ID\n\
             16:9,gs://b/o.png,\"a cat, sitting\",style_and_composition, 3 ,C-3\n",
        );
        assert_eq!(
            rows,
            vec![RowRequest {
                scene_id: "C-3".into(),
                prompt: "a cat, sitting".into(),
                variants: Some(3),
                refs: vec!["gs://b/o.png".into()],
                ref_mode: Some("style_and_composition".into()),
                aspect_ratio: Some("16:9".into()),
            }]
        );
    }

    #[test]
    fn optional_columns_may_be_absent_and_blank_rows_are_skipped() {
        let batch = parse_str("prompt,scene_id\r\nhello,S1\r\n,\r\nworld,S2\r\n").map_err(|e| e.to_string());
        let batch = batch.as_ref().map(|b| (b.rows.iter().map(|r| r.scene_id.as_str()).collect::<Vec<_>>(), &b.lines));
        assert_eq!(batch, Ok((vec!["S1", "S2"], &vec![2, 4])));
    }

    #[test]
    fn lines_are_counted_across_blank_lines_crlf_and_quoted_newlines() {
        let batch = parse_str("scene_id,prompt\r\n\r\nA,\"two\r\nlines\"\r\n\r\n\r\nB,p\r\nC,q").map(|b| b.lines);
        assert_eq!(batch, Ok(vec![3, 7, 8]));
        let e = parse_str("scene_id,prompt\nA,\"x\ny\"\n\nB,p,extra\n").expect_err("ragged");
        assert_eq!(e.line, Some(5));
    }

    #[test]
    fn refs_split_on_pipes_trimmed_and_empties_skipped() {
        let rows = rows("scene_id,prompt,refs\nS,p, https://a.test/1.png || gs://b/2.png |  |\n");
        assert_eq!(rows[0].refs, vec!["https://a.test/1.png", "gs://b/2.png"]);
    }

    #[test]
    fn local_refs_become_file_urls_relative_to_the_csv() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("refs")).expect("mkdir");
        std::fs::write(dir.path().join("refs").join("style.png"), b"png").expect("write");
        std::fs::write(dir.path().join("other.jpg"), b"jpg").expect("write");
        let csv = dir.path().join("batch.csv");
        std::fs::write(&csv, "scene_id,prompt,refs\nS,p,refs/style.png | https://a.test/x.png|./other.jpg\n")
            .expect("write");

        let batch = read_file(&csv).map_err(|e| e.to_string());
        let canonical = std::fs::canonicalize(dir.path()).expect("canonicalize");
        let expected = |p: &str| url::Url::from_file_path(canonical.join(p)).map(String::from).expect("file url");
        assert_eq!(
            batch.map(|b| b.rows[0].refs.clone()),
            Ok(vec![expected("refs/style.png"), "https://a.test/x.png".to_owned(), expected("other.jpg")])
        );
        assert!(expected("other.jpg").starts_with("file:///"));
    }

    #[test]
    fn a_missing_local_ref_names_line_and_column() {
        let dir = tempfile::tempdir().expect("tempdir");
        let csv = dir.path().join("b.csv");
        std::fs::write(&csv, "scene_id,prompt,refs\nS,p,https://ok.test/a.png\nT,q,missing.png\n").expect("write");
        let message = read_file(&csv).map(|_| ()).map_err(|e| e.to_string());
        let message = message.expect_err("missing file must fail");
        assert!(message.contains("line 3, column 3 (refs)"), "{message}");
        assert!(message.contains("missing.png"), "{message}");
    }

    #[test]
    fn unknown_columns_are_named() {
        let e = parse_str("scene_id,prompt,colour,size\nS,p,red,big\n").expect_err("unknown columns");
        assert_eq!(e.line, Some(1));
        let message = e.to_string();
        assert!(message.contains("\"colour\" (column 3)") && message.contains("\"size\" (column 4)"), "{message}");
        assert!(message.contains("scene_id, prompt, variants, refs, ref_mode, aspect_ratio"), "{message}");
    }

    #[test]
    fn a_missing_required_column_is_named() {
        let message = parse_str("scene_id,variants\nS,1\n").expect_err("no prompt").to_string();
        assert!(message.contains("no prompt column"), "{message}");
        let message = parse_str("variants\n1\n").expect_err("neither").to_string();
        assert!(message.contains("no scene_id or prompt column"), "{message}");
    }

    #[test]
    fn a_duplicate_column_is_refused() {
        let message = parse_str("scene_id,prompt,Prompt\nS,p,q\n").expect_err("duplicate").to_string();
        assert!(message.contains("prompt appears twice"), "{message}");
    }

    #[test]
    fn words_in_variants_name_line_and_column() {
        let e = parse_str("scene_id,prompt,variants\nS,p,1\nT,q,two\n").expect_err("bad variants");
        assert_eq!((e.line, e.column.clone()), (Some(3), Some((3, "variants".to_owned()))));
        assert_eq!(
            e.to_string(),
            "batch.csv, line 3, column 3 (variants): \"two\" is not a whole number; write 1, 2 or 3, or leave it empty for 1"
        );
    }

    #[test]
    fn ragged_rows_and_empty_files_are_refused_with_a_line() {
        let e = parse_str("scene_id,prompt\nS,p\nT,q,extra\n").expect_err("ragged");
        assert_eq!(e.line, Some(3));
        assert!(e.message.contains("3 fields but the header row has 2"), "{}", e.message);
        assert!(parse_str("scene_id,prompt\n").expect_err("empty").message.contains("no rows"));
        assert!(parse_str("").is_err());
    }

    #[test]
    fn unnamed_columns_must_stay_empty() {
        assert_eq!(rows("scene_id,prompt,\nS,p,\n").len(), 1);
        let e = parse_str("scene_id,prompt,\nS,p,oops\n").expect_err("data under no header");
        assert_eq!((e.line, e.column.map(|c| c.0)), (Some(2), Some(3)));
    }

    #[test]
    fn a_byte_order_mark_crlf_and_quoted_newlines_simply_work() {
        // Excel's "CSV UTF-8": a BOM, CRLF line ends, and cells with line breaks inside quotes.
        let text = "\u{feff}\"Scene_ID\",prompt,variants\r\nA,\"first line\r\nsecond, line\",2\r\nB,\"x\ny\",\r\n";
        let batch = parse_str(text).map_err(|e| e.to_string());
        let batch = batch.map(|b| (b.rows, b.lines));
        assert_eq!(
            batch,
            Ok((
                vec![
                    RowRequest {
                        scene_id: "A".into(),
                        prompt: "first line\r\nsecond, line".into(),
                        variants: Some(2),
                        ..RowRequest::default()
                    },
                    RowRequest { scene_id: "B".into(), prompt: "x\ny".into(), ..RowRequest::default() },
                ],
                vec![2, 4]
            ))
        );
        // The mark is not part of the first header name, quoted or not.
        assert_eq!(rows("\u{feff}scene_id,prompt\nS,p\n")[0].scene_id, "S");
    }

    #[test]
    fn ten_thousand_columns_give_a_bounded_message() {
        let header: Vec<String> = ["scene_id".to_owned(), "prompt".to_owned()]
            .into_iter()
            .chain((3..=10_000).map(|i| format!("c{i}")))
            .collect();
        let text = format!("{}\nS,p{}\n", header.join(","), ",x".repeat(9_998));
        let e = parse_str(&text).expect_err("unknown columns");
        assert_eq!(e.line, Some(1));
        let named: Vec<String> = (3..=12).map(|i| format!("\"c{i}\" (column {i})")).collect();
        assert_eq!(
            e.message,
            format!(
                "unknown columns {}, and 9,988 more; the columns are scene_id, prompt, variants, refs, ref_mode, aspect_ratio",
                named.join(", ")
            )
        );

        // A long name is cut, and a single unknown column is named in the singular.
        let long = "n".repeat(5_000);
        let e = parse_str(&format!("scene_id,prompt,{long}\nS,p,x\n")).expect_err("unknown column");
        assert_eq!(
            e.message,
            format!(
                "unknown column \"{}…\" (column 3); the columns are scene_id, prompt, variants, refs, ref_mode, aspect_ratio",
                "n".repeat(40)
            )
        );

        // 10,000 fields under a two-column header: the row is ragged, and the message is short.
        let e = parse_str(&format!("scene_id,prompt\nS,p{}\n", ",x".repeat(9_998))).expect_err("ragged");
        assert_eq!(
            e.to_string(),
            "batch.csv, line 2: this row has 10000 fields but the header row has 2; check for a missing or extra comma"
        );

        // 10,000 columns the file may have (empty-named, empty cells) are read.
        let text = format!("scene_id,prompt{}\nS,p{}\n", ",".repeat(9_998), ",".repeat(9_998));
        assert_eq!(rows(&text).len(), 1);
    }

    #[test]
    fn invalid_utf8_names_line_and_column() {
        // Latin-1 "café" in row 3's prompt.
        let e = parse(b"scene_id,prompt\nA,ok\nB,caf\xe9\n", Path::new("/nonexistent"), "batch.csv")
            .expect_err("not UTF-8");
        assert_eq!(
            e.to_string(),
            "batch.csv, line 3, column 2 (prompt): the text is not UTF-8; save or export the file as CSV (UTF-8)"
        );
        // In the header row itself: no name to quote yet.
        let e = parse(b"scene_id,pr\xffompt\nA,p\n", Path::new("/nonexistent"), "batch.csv").expect_err("not UTF-8");
        assert_eq!(
            e.to_string(),
            "batch.csv, line 1, column 2: the text is not UTF-8; save or export the file as CSV (UTF-8)"
        );
    }

    #[test]
    fn empty_and_header_only_files_say_so() {
        let empty = "batch.csv: the file is empty; the first line must name the columns \
                     (scene_id,prompt,variants,refs,ref_mode,aspect_ratio)";
        for text in ["", "\u{feff}", "\r\n\r\n", " \n"] {
            assert_eq!(parse_str(text).map_err(|e| e.to_string()), Err(empty.to_owned()), "{text:?}");
        }
        let no_rows = "batch.csv: the file has a header row but no rows; add one row per scene";
        for text in ["scene_id,prompt", "\u{feff}scene_id,prompt\r\n", "scene_id,prompt\r\n\r\n,\r\n"] {
            assert_eq!(parse_str(text).map_err(|e| e.to_string()), Err(no_rows.to_owned()), "{text:?}");
        }
        // Too few fields is as ragged as too many.
        let e = parse_str("scene_id,prompt,variants\nS,p,1\nT,q\n").expect_err("ragged");
        assert_eq!(
            e.to_string(),
            "batch.csv, line 3: this row has 2 fields but the header row has 3; check for a missing or extra comma"
        );
    }

    #[test]
    fn url_detection() {
        for url in ["https://a.test/x.png", "gs://b/o", "file:///tmp/x.png", "s3+x.y-z://q"] {
            assert!(has_url_scheme(url), "{url}");
        }
        for path in ["x.png", "./a/b.png", "/abs/p.png", "C:\\x.png", "://x", "1a://x", "a b://x"] {
            assert!(!has_url_scheme(path), "{path}");
        }
    }
}
